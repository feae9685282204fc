"""Hostile run folders, names, config files and sweep/reproduce inputs (issue: reliability round three).

Each case asserts the exit code, one line on stderr, and that no file outside the case's own
output was created, changed or removed: a tree of victim files (symbolic-link targets included)
is checksummed before and after.
"""

import hashlib
import json
import pathlib

import numpy as np
import pytest

from conftest import TINY_SPLIT, TINY_SPLIT_FLAGS
from jxhash import checkpoint, data, methods
from jxhash.training import trainer
from jxhash.commands import reproduce, sweep
from jxhash.commands import train
from jxhash.errors import CheckpointError

TINY = [*TINY_SPLIT_FLAGS, "--epochs", "1", "--batch-size", "32", "--set", "image_hidden=8",
        "--set", "text_hidden=8", "--no-progress"]


def _checksums(folder: pathlib.Path) -> dict:
  """{path: sha256 or link target} of everything under `folder`, links not followed."""
  out = {}
  for p in sorted(folder.rglob("*")):
    if p.is_symlink():
      out[str(p)] = "link:" + str(p.readlink())
    elif p.is_file():
      out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
  return out


@pytest.fixture
def victims(tmp_path):
  """A folder of files no command may touch, and a function asserting they were not."""
  v = tmp_path / "victims"
  v.mkdir()
  (v / "precious.txt").write_text("do not truncate me\n")
  (v / "README.md").write_text("# a readme\n")
  before = _checksums(v)

  def unchanged():
    assert _checksums(v) == before
  return v, unchanged


def _one_line(capsys, code, expected_code, message):
  err = capsys.readouterr().err.strip()
  assert code == expected_code, err
  assert len(err.splitlines()) == 1 and "Traceback" not in err, err
  assert message in err, err
  return err


def _run_folder(tmp_path, name="r"):
  folder = tmp_path / "ck" / name
  folder.mkdir(parents=True)
  return folder


RUN_FOLDER_CASES = [
    # (case, how the run folder is prepared, extra flags, message)
    ("lock_is_a_link", lambda f, v: (f / ".lock").symlink_to(v / "precious.txt"), [], ".lock is a symbolic link"),
    ("run_json_is_a_link", lambda f, v: (f / "run.json").symlink_to(v / "precious.txt"), ["--overwrite"],
     "run.json is a symbolic link"),
    ("latest_is_a_link", lambda f, v: (f / "latest").symlink_to(v), [], "latest is a symbolic link"),
    ("run_json_is_a_folder", lambda f, v: (f / "run.json").mkdir(), [], "run.json is not a regular file"),
    ("checkpoints_without_run_json", lambda f, v: (f / "latest" / "3").mkdir(parents=True), [],
     "holds checkpoints but no run.json"),
]


@pytest.mark.parametrize("case, prepare, extra, message", RUN_FOLDER_CASES, ids=[c[0] for c in RUN_FOLDER_CASES])
def test_a_hostile_run_folder_is_refused_and_nothing_outside_is_touched(case, prepare, extra, message, tmp_path,
                                                                        victims, capsys):
  v, unchanged = victims
  folder = _run_folder(tmp_path)
  prepare(folder, v)
  before = _checksums(folder)
  code = train.main([*TINY, "--checkpoint-dir", str(tmp_path / "ck"), "--name", "r", "--out",
                       str(tmp_path / "out.json"), *extra])
  _one_line(capsys, code, 2, message)
  unchanged()
  # a refusal after the run folder was locked may leave only its (empty) lock file behind
  after = {k: v for k, v in _checksums(folder).items() if not (k.endswith("/.lock") and k not in before)}
  assert after == before and not (tmp_path / "out.json").exists()


def test_results_are_never_written_through_a_link(tmp_path, victims, capsys):
  v, unchanged = victims
  out = tmp_path / "out.json"
  out.symlink_to(v / "precious.txt")
  code = train.main([*TINY, "--no-checkpoint", "--out", str(out), "--overwrite"])
  _one_line(capsys, code, 2, "is a symbolic link")
  unchanged()


NAME_CASES = [
    ("name_trailing_newline", ["--name", "abc\n"], "--name 'abc\\n'"),
    ("name_too_long", ["--name", "a" * 300], "use 1 to 128 letters"),
    ("name_with_slash", ["--name", "../x"], "--name '../x'"),
    ("dataset_name_escapes", ["--config.output.workdir={t}"], None),  # placeholder, replaced below
]


@pytest.mark.parametrize("case, argv, message", NAME_CASES[:3], ids=[c[0] for c in NAME_CASES[:3]])
def test_names_that_would_become_paths_are_refused(case, argv, message, tmp_path, victims, capsys):
  _, unchanged = victims
  code = train.main([*TINY, "--workdir", str(tmp_path / "wd"), *argv])
  _one_line(capsys, code, 2, message)
  unchanged()
  assert not (tmp_path / "wd" / "results").exists() or not any((tmp_path / "wd" / "results").iterdir())


@pytest.mark.parametrize("name", ["../../../x", "/abs/x", "a" * 300, "evil\nname"])
def test_a_dataset_name_that_would_become_a_path_is_refused(name, tmp_path, victims, capsys):
  _, unchanged = victims
  rng = np.random.default_rng(0)
  np.save(tmp_path / "img.npy", rng.normal(size=(120, 8)).astype(np.float32))
  np.save(tmp_path / "txt.npy", rng.normal(size=(120, 6)).astype(np.float32))
  np.save(tmp_path / "lab.npy", (rng.random((120, 3)) < 0.5).astype(np.uint8) | np.eye(3, dtype=np.uint8)[
      rng.integers(0, 3, 120)])
  code = train.main(["--dataset", "features", "--data-dir", str(tmp_path), "--data-option", "image=img.npy",
                       "--data-option", "text=txt.npy", "--data-option", "labels=lab.npy",
                       "--data-option", "num_query=20", "--data-option", "num_train=60", "--data-option", f"name={name}",
                       "--epochs", "1", "--batch-size", "16", "--no-progress", "--workdir", str(tmp_path / "wd")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1, err
  unchanged()
  written = [p for p in tmp_path.rglob("*") if p.is_file() and "wd" in p.parts]
  assert not [p for p in written if p.suffix == ".json"], written
  assert not list((tmp_path.parent).glob("x"))


CONFIG_CASES = [
    ("seed_negative", "{'method': 'dcmh', 'seed': -5}", "train.seed: must be >= 0, got -5"),
    ("eval_every_negative", "{'method': 'dcmh', 'eval_every': -1}", "eval.eval_every: must be >= 0"),
    ("seeds_bool", "{'method': 'dcmh', 'seeds': True}", "train.seeds: expected an integer, got True"),
    ("set_a_list", "{'method': 'dcmh', 'set': ['lr', 3]}", "method.set: expected a mapping"),
    ("options_a_string", "{'method': 'dcmh', 'data_options': 'num_val=3'}", "data.options: expected a mapping"),
    ("name_a_list", "{'method': 'dcmh', 'name': ['a']}", "output.name: expected a string"),
    ("augment_a_mapping", "{'method': 'dcmh', 'augment': {'flip': 1}}", "train.augment: expected a string"),
    ("lr_a_word", "{'method': 'dcmh', 'set': {'lr': 'fast'}}", "lr"),
    ("lr_a_list", "{'method': 'dcmh', 'set': {'lr': [1, 2]}}", "lr"),
]


@pytest.mark.parametrize("case, values, message", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_config_file_value_is_checked_like_a_flag(case, values, message, tmp_path, victims, capsys):
  _, unchanged = victims
  path = tmp_path / "c.py"
  path.write_text(f"def get_config():\n  return {values}\n")
  code = train.main(["--config", str(path), "--workdir", str(tmp_path / "wd"), "--no-progress"])
  _one_line(capsys, code, 2, message)
  unchanged()
  assert not (tmp_path / "wd").exists() or not list((tmp_path / "wd").rglob("*.json"))


def test_a_diverging_run_is_one_line_with_its_own_exit_code(tmp_path, capsys):
  code = train.main([*TINY, "--set", "lr=1e30", "--set", "clip_norm=0", "--epochs", "3", "--no-checkpoint",
                       "--out", str(tmp_path / "r.json")])
  err = _one_line(capsys, code, 4, "diverged: non-finite")
  assert "epoch" in err and "smaller learning rate" in err
  assert not (tmp_path / "r.json").exists()


def test_a_forged_trainer_record_in_a_checkpoint_is_refused(tmp_path):
  ds = data.load("synthetic", **TINY_SPLIT)
  spec = methods.get_method("dcmh")
  config = spec.Config(bits=8, epochs=2, batch_size=32, image_hidden=(8,), text_hidden=(8,))
  options = trainer.TrainOptions(progress=False, eval_every=1)
  with checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options)) as store:
    trainer.fit(spec, config, ds, options, store=store)
  metas = sorted((tmp_path / "latest").glob("*/meta/metadata"))
  assert metas, list((tmp_path / "latest").rglob("*"))
  meta = json.loads(metas[-1].read_text())
  meta["trainer"]["history"][0]["val_map"] = 0.999  # a better-looking history
  metas[-1].write_text(json.dumps(meta))
  resumed = trainer.TrainOptions(progress=False, eval_every=1, resume=True)
  with checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, resumed),
                                       resume=True) as store:
    with pytest.raises(CheckpointError, match="trainer record does not match the checksum"):
      trainer.fit(spec, config, ds, resumed, store=store)


SWEEP = ["--method", "dcmh", "--preset", "smoke", "--no-test", "--seeds", "1", "--data-option", "num_items=300",
         "--data-option", "num_query=40", "--data-option", "num_train=96", "--data-option", "num_val=24"]


def test_a_field_named_twice_in_the_grid_is_refused(tmp_path, capsys):
  code = sweep.main([*SWEEP, "--grid", "lr=1,2", "--grid", "lr=3", "--out-dir", str(tmp_path / "sw")])
  _one_line(capsys, code, 2, "--grid lr is given twice")


def test_sweep_refuses_to_replace_what_it_did_not_write(tmp_path, victims, capsys):
  v, unchanged = victims
  code = sweep.main([*SWEEP, "--grid", "lr=1", "--out-dir", str(tmp_path / "sw"), "--write-config",
                     str(v / "README.md")])
  _one_line(capsys, code, 2, "exists; choose another path or pass --overwrite")
  unchanged()
  out = tmp_path / "sw"
  out.mkdir()
  (out / "sweep.json").write_text(json.dumps({"settings": {}, "grid": [{"lr": "9"}]}))
  (out / "summary.json").write_text("[]")
  before = _checksums(out)
  code = sweep.main([*SWEEP, "--grid", "lr=1", "--out-dir", str(out)])
  _one_line(capsys, code, 2, "holds another sweep")
  assert _checksums(out) == before


def test_a_resumed_sweep_does_not_trust_a_damaged_settings_file():
  ident = {"method": "dcmh", "augment": "none"}
  assert not sweep._valid_setting_file(["not", "a", "dict"], ident)
  for score in (7.5, -1.0, float("nan"), "0.5", True):
    assert not sweep._valid_setting_file({**ident, "val_score": score}, ident), score
  assert not sweep._valid_setting_file({**ident, "val_score": None}, ident)  # failed, without saying why
  assert sweep._valid_setting_file({**ident, "val_score": None, "diverged": "non-finite loss"}, ident)
  assert sweep._valid_setting_file({**ident, "val_score": 0.42}, ident)


@pytest.mark.parametrize("argv, message", [
    (["{t}/no-such-folder"], "no such folder of config files"),
    (["{t}/empty"], "no config files"),
    (["{t}/broken"], "cannot load it (ZeroDivisionError"),
    (["{t}/empty", "--bits", "abc"], "expected comma-separated integers"),
    (["{t}/empty", "--bits", "0,16"], "code lengths must be >= 1"),
])
def test_reproduce_bad_input_is_one_line(argv, message, tmp_path, capsys, victims):
  _, unchanged = victims
  (tmp_path / "empty").mkdir()
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "dcmh.py").write_text("def get_config():\n  return 1 / 0\n")
  code = reproduce.main([a.replace("{t}", str(tmp_path)) for a in argv] + ["--workdir", str(tmp_path / "wd")])
  _one_line(capsys, code, 2, message)
  unchanged()
  assert not (tmp_path / "wd").exists()

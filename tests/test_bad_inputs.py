"""Bad input to experiments/run.py and to the checkpoint/config API: one line, exit code 2 (or the
documented exception), nothing written.

Each CLI case runs `run.py` in process and asserts: exit code 2; exactly one line on stderr,
starting "error: " and naming the offending flag, option, file or value; no traceback; and no
file created, changed or removed in the test's folder or in the repository's results/ and
checkpoints/. Loader cases are in test_bad_inputs_data.py, report.py's in test_report.py, the
index's in test_index.py / test_index_cli.py.
"""

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from conftest import TINY_SPLIT, TINY_SPLIT_FLAGS
from jxhash import checkpoint, data
from jxhash.training import trainer
from jxhash.errors import CheckpointError, UserError
from jxhash.methods import dcmh, get_method

ROOT = pathlib.Path(__file__).resolve().parents[1]

from jxhash.commands import train  # noqa: E402

TINY_DATA = [*TINY_SPLIT_FLAGS]
TINY_TRAIN = ["--epochs", "1", "--batch-size", "32", "--set", "image_hidden=8", "--set", "text_hidden=8", "--no-progress"]
TINY = TINY_DATA + TINY_TRAIN


def _snapshot(*folders) -> dict:
  """{path: sha256} of every file under `folders` (what a failed command must leave alone)."""
  out = {}
  for folder in folders:
    folder = pathlib.Path(folder)
    if folder.exists():
      for p in folder.rglob("*"):
        if p.is_file():
          out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
  return out


def _files(tmp_path):
  """Files a case may point at, made fresh in the test's folder."""
  (tmp_path / "a_dir").mkdir()
  (tmp_path / "a_file").write_text("not a folder")
  (tmp_path / "not_results.json").write_text("[1, 2, 3]")
  (tmp_path / "bad_config.py").write_text("def get_config():\n  return {'method': 'dcmh', 'colour': 'red'}\n")
  (tmp_path / "broken_config.py").write_text("def get_config():\n  return 1 / 0\n")
  (tmp_path / "no_get_config.py").write_text("CONFIG = {}\n")
  (tmp_path / "other.json").write_text(json.dumps({"method": "mmach", "dataset": "synthetic", "bits": 16}))
  ck = tmp_path / "ck" / "mine"
  ck.mkdir(parents=True)
  (ck / "run.json").write_text(json.dumps({"method": "mmach", "dataset": "synthetic"}))
  bad = tmp_path / "ck" / "garbled"
  bad.mkdir()
  (bad / "run.json").write_text("{not json")


CASES = [
    # case id, argv (tmp path as {t}), text the one-line message must contain
    ("unknown_method", ["--method", "nope"], "unknown method 'nope'; choose from"),
    ("unknown_dataset", ["--dataset", "nope"], "unknown dataset 'nope'"),
    ("unknown_flag", ["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("bits_zero", ["--bits", "0"], "--bits: must be >= 1, got 0"),
    ("bits_word", ["--bits", "abc"], "--bits: expected an integer, got 'abc'"),
    ("epochs_negative", ["--epochs", "-5"], "--epochs: must be >= 1, got -5"),
    ("batch_size_zero", ["--batch-size", "0"], "--batch-size: must be >= 1"),
    ("seeds_zero", ["--seeds", "0"], "--seeds: must be >= 1"),
    ("seeds_negative", ["--seeds", "-2"], "--seeds: must be >= 1"),
    ("eval_every_negative", ["--eval-every", "-1"], "--eval-every: must be >= 0"),
    ("split_seed_negative", ["--split-seed", "-3"], "--split-seed: must be >= 0"),
    ("seed_float", ["--seed", "1.5"], "--seed: expected an integer, got '1.5'"),
    ("prefetch_zero", ["--prefetch", "0"], "--prefetch: must be >= 1"),
    ("split_rule", ["--split", "kfold"], "--split: invalid choice: 'kfold'"),
    ("normalize", ["--normalize", "whiten"], "--normalize: invalid choice: 'whiten'"),
    ("set_unknown_field", ["--set", "no_such_field=1"], "--set no_such_field: no such field"),
    ("set_not_a_float", ["--set", "gamma=abc"], "--set gamma='abc': expected a float"),
    ("set_no_equals", ["--set", "gamma"], "--set 'gamma' is not key=value"),
    ("set_nan_lr", ["--set", "lr=nan"], "lr=nan: expected a finite number"),
    ("set_inf_weight", ["--set", "eta=inf"], "eta=inf: expected a finite number"),
    ("set_negative_lr", ["--set", "lr=-0.1"], "lr=-0.1: must be >= 0"),
    ("set_negative_weight", ["--set", "gamma=-1"], "gamma=-1.0: must be >= 0"),
    ("set_bad_init", ["--set", "init=bogus"], "init='bogus': choose one of 'normal0.01', 'fan_in'"),
    ("set_bad_schedule", ["--set", "lr_schedule=cosine"], "lr_schedule='cosine': choose one of"),
    ("set_bad_buffer_init", ["--set", "buffer_init=ones"], "buffer_init='ones': choose one of"),
    ("set_phase_order_twice", ["--set", "phase_order=image,image"], "must name each of image, text exactly once"),
    ("set_phase_order_unknown", ["--set", "phase_order=image,audio"], "must name each of image, text exactly once"),
    ("set_zero_width", ["--set", "image_hidden=0"], "image_hidden=(0,): every item must be an integer >= 1"),
    ("set_tuple_word", ["--set", "image_hidden=64,x"], "comma-separated values, e.g. 4096"),
    ("set_bool_word", ["--method", "mdch", "--set", "mask=maybe"], "--set mask='maybe': expected true or false"),
    ("set_method_choice", ["--method", "uchm", "--set", "fusion=concat"], "fusion='concat': choose one of"),
    ("set_cross_field", ["--method", "uchm", "--set", "mie_hidden=30"], "mie_hidden=30 must be divisible"),
    ("preset_unknown", ["--preset", "fastest"], "--preset 'fastest': dcmh has the presets default"),
    ("augment_unreadable", ["--augment", "flop"], "augment 'flop'"),
    ("name_path", ["--name", "../escape"], "--name '../escape'"),
    ("data_option_not_int", ["--data-option", "num_items=abc"], "option num_items='abc' is not an integer"),
    ("data_option_suffix", ["--data-option", "num_val=50x"], "option num_val='50x' is not an integer"),
    ("data_option_unknown", ["--data-option", "name=x"], "unknown option 'name'; valid options:"),
    ("data_option_zero", ["--data-option", "max_labels=0"], "option max_labels=0 is out of range"),
    ("data_option_no_equals", ["--data-option", "num_items"], "is not key=value"),
    ("data_dir_missing", ["--dataset", "wikipedia", "--data-dir", "{t}/nowhere"], "--data-dir {t}/nowhere is not a directory"),
    ("data_dir_is_file", ["--dataset", "wikipedia", "--data-dir", "{t}/a_file"], "is not a directory"),
    ("config_missing", ["--config", "{t}/missing.py"], "--config {t}/missing.py does not exist"),
    ("config_unknown_key", ["--config", "{t}/bad_config.py"], "unknown key 'colour'"),
    ("config_raises", ["--config", "{t}/broken_config.py"], "cannot load it (ZeroDivisionError"),
    ("config_no_function", ["--config", "{t}/no_get_config.py"], "defines no get_config()"),
    ("out_is_directory", ["--out", "{t}/a_dir"], "--out {t}/a_dir is a directory"),
    ("out_under_a_file", ["--out", "{t}/a_file/r.json"], "lies under {t}/a_file, which is a file"),
    ("checkpoint_dir_is_file", ["--checkpoint-dir", "{t}/a_file"], "--checkpoint-dir {t}/a_file is a file"),
    ("coordinator_alone", ["--coordinator", "localhost:1234"], "need --coordinator host:port, --num-processes N"),
    ("coordinator_no_port", ["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator 'localhost': expected host:port"),
    ("coordinator_bad_port", ["--coordinator", "h:99999", "--num-processes", "2", "--process-id", "0"],
     "expected host:port with a port in 1..65535"),
    ("process_id_too_big", ["--coordinator", "h:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is outside 0..1"),
    ("num_processes_zero", ["--num-processes", "0"], "--num-processes: must be >= 1"),
    # these load the (tiny) data before they fail: the identity needs it
    ("batch_larger_than_train", ["--batch-size", "1000"], "batch_size 1000 is larger than the 96 training items"),
    ("augment_features", ["--augment", "flip"], "applies to pixel images"),
    ("stream_uchm", ["--method", "uchm", "--stream"], "uchm cannot stream images"),
    ("results_not_ours", ["--out", "{t}/not_results.json"], "is not a jxhash results file"),
    ("results_of_another_run", ["--out", "{t}/other.json"], "holds results of a different run (method: 'mmach' vs 'dcmh'"),
    ("checkpoint_of_another_run", ["--checkpoint-dir", "{t}/ck", "--name", "mine"],
     "belongs to a different run (method: 'mmach' vs 'dcmh'"),
    ("run_json_garbled", ["--checkpoint-dir", "{t}/ck", "--name", "garbled"], "run.json is unreadable"),
]


@pytest.mark.parametrize("case, argv, message", CASES, ids=[c[0] for c in CASES])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case, argv, message, tmp_path, capsys):
  _files(tmp_path)
  argv = [a.replace("{t}", str(tmp_path)) for a in argv]
  if "--out" not in argv:
    argv += ["--out", str(tmp_path / "results.json")]
  if "--checkpoint-dir" not in argv:
    argv += ["--no-checkpoint"]
  watched = (tmp_path, ROOT / "results", ROOT / "checkpoints")
  before = _snapshot(*watched)
  own_data = "--data-option" in argv or "--dataset" in argv
  code = train.main([*(TINY_TRAIN if own_data else TINY), *argv])
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
  assert message.replace("{t}", str(tmp_path)) in err, err
  after = _snapshot(*watched)
  # a refused run may leave only the lock file of the run directory it was refused in
  changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
  assert {pathlib.Path(p).name for p in changed} <= {".lock"}, sorted(changed)


@pytest.mark.slow  # a subprocess holds the lock
def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path, capsys):
  run_dir = tmp_path / "ck" / "busy"
  run_dir.mkdir(parents=True)
  holder = subprocess.Popen([sys.executable, "-c", (
      "import sys, time; from jxhash.runs.lock import RunLock; "
      "lock = RunLock(sys.argv[1]); print('held', flush=True); time.sleep(60)"), str(run_dir), str(ROOT)],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    code = train.main(["--checkpoint-dir", str(tmp_path / "ck"), "--name", "busy", "--out",
                         str(tmp_path / "r.json"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"run directory {run_dir} is in use by process {holder.pid}" in err
    assert not (tmp_path / "r.json").exists()
  finally:
    holder.kill()
    holder.wait()
    holder.stdout.close()
  # the holder died: its lock is taken over
  assert train.main(["--checkpoint-dir", str(tmp_path / "ck"), "--name", "busy", "--out",
                       str(tmp_path / "r.json"), *TINY]) == 0


# --------------------------------------------------------------------------- the library


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny finished run with checkpoints: (run directory, dataset)."""
  run_dir = tmp_path_factory.mktemp("run") / "dcmh-tiny"
  ds = data.load("synthetic", **TINY_SPLIT)
  spec = get_method("dcmh")
  config = spec.Config(bits=16, epochs=2, batch_size=32, image_hidden=(8,), text_hidden=(8,))
  options = trainer.TrainOptions(progress=False, eval_every=1)
  with checkpoint.CheckpointStore.open(run_dir, checkpoint.run_metadata(spec, config, ds, options)) as store:
    trainer.fit(spec, config, ds, options, store=store)
  return run_dir, ds


@pytest.mark.parametrize("bad, message", [
    (dict(init="x"), "init='x': choose one of"),
    (dict(lr=float("nan")), "lr=nan: expected a finite number"),
    (dict(eta=-1.0), "eta=-1.0: must be >= 0"),
    (dict(bits=0), "bits=0: must be >= 1"),
    (dict(epochs=True), "epochs=True: expected an integer"),
    (dict(image_hidden=(64, 0)), "every item must be an integer >= 1"),
    (dict(image_hidden=[64]), "expected a tuple"),
    (dict(phase_order=("text",)), "exactly once"),
    (dict(weight_decay="0"), "weight_decay='0': expected a finite number"),
])
def test_configs_refuse_bad_values_at_construction(bad, message):
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
    dcmh.Config(**bad)


def test_restore_refuses_what_it_cannot_restore(trained, tmp_path):
  run_dir, _ = trained
  (tmp_path / "empty").mkdir()
  (tmp_path / "f").write_text("x")
  for path, kwargs, message in [
      (tmp_path / "nowhere", {}, "does not exist"),
      (tmp_path / "f", {}, "is a file; give the run directory"),
      (tmp_path / "empty", {}, "no checkpoint found"),
      (run_dir, {"seed": 1}, "seed 1 out of range: the checkpoint holds 1 seed"),
      (run_dir, {"seed": -1}, "out of range"),
      (run_dir, {"which": "worst"}, "which must be 'best' or 'latest'"),
  ]:
    with pytest.raises(CheckpointError, match=message):
      checkpoint.restore(path, **kwargs)


def test_restore_takes_relative_home_and_symlinked_paths(trained, tmp_path, monkeypatch):
  run_dir, ds = trained
  codes = checkpoint.restore(run_dir).encode("text", ds.text[:5])
  link = tmp_path / "link"
  link.symlink_to(run_dir)
  monkeypatch.chdir(run_dir.parent)
  monkeypatch.setenv("HOME", str(run_dir.parent))
  for path in (run_dir.name, f"./{run_dir.name}", f"~/{run_dir.name}", link, f"{run_dir.name}/latest"):
    assert (checkpoint.restore(path).encode("text", ds.text[:5]) == codes).all(), path


def test_a_run_json_edited_after_the_fact_is_detected(trained, tmp_path):
  run_dir, _ = trained
  copy = tmp_path / "copy"
  shutil.copytree(run_dir, copy)
  meta = json.loads((copy / "run.json").read_text())
  meta["config"]["epochs"] = 40
  (copy / "run.json").write_text(json.dumps(meta))
  with pytest.raises(CheckpointError, match=r"run.json no longer matches its checkpoint .*config.epochs: 40 vs 2"):
    checkpoint.restore(copy)


def test_flipped_bytes_in_a_checkpoint_are_reported_as_damage(trained, tmp_path):
  run_dir, _ = trained
  for target in ("state", "inputs"):
    copy = tmp_path / target
    shutil.copytree(run_dir, copy)
    # the newest best step is the one restore reads (best/ keeps two)
    newest = max((p for p in (copy / "best").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    files = sorted((p for p in newest.rglob("*") if p.is_file() and f"/{target}/" in str(p)
                    and p.stat().st_size > 64), key=lambda p: -p.stat().st_size)
    assert files, f"no {target} data files"
    blob = bytearray(files[0].read_bytes())
    for i in range(len(blob) // 2, len(blob) // 2 + 8):
      blob[i] ^= 0xFF
    files[0].write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="damaged|unreadable or corrupt"):
      checkpoint.restore(copy)


def test_a_checkpoint_of_an_older_layout_names_the_version(trained, tmp_path):
  run_dir, _ = trained
  copy = tmp_path / "old"
  shutil.copytree(run_dir, copy)
  for meta in copy.rglob("meta/metadata"):
    values = json.loads(meta.read_text())
    values["checkpoint_format"] = 1
    values["jxhash_version"] = "0.1.0"
    meta.write_text(json.dumps(values))
  with pytest.raises(CheckpointError, match="written by jxhash 0.1.0 in checkpoint layout 1"):
    checkpoint.restore(copy)


@pytest.mark.slow  # a whole CLI run
def test_resume_with_nothing_to_resume_trains_from_the_start(tmp_path, capsys):
  # --resume is the default now (kept for older scripts): with no checkpoint it is a fresh run
  assert train.main(["--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "r.json"), "--resume",
                       *TINY]) == 0
  out = capsys.readouterr().out
  assert "resumed" not in out and json.loads((tmp_path / "r.json").read_text())["history"][0]["epoch"] == 1


@pytest.mark.slow  # a whole CLI run
def test_relative_and_home_paths_for_outputs(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert train.main(["--checkpoint-dir", "rel-ck", "--out", "~/out/r.json", *TINY]) == 0
  res = json.loads((tmp_path / "out" / "r.json").read_text())
  assert pathlib.Path(res["checkpoint"]).parent == tmp_path / "rel-ck"
  assert checkpoint.restore(pathlib.Path("rel-ck") / res["run_name"]).bits == 32

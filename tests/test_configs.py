"""Config files (configs/<dataset>/<name>.py): each builds valid settings, flags override it, they hold
config only, and the README table has the rows of each one's settings (results live in results files)."""

import argparse
import dataclasses
import pathlib

import pytest

from jxhash import data, settings
from jxhash.commands import flags
from jxhash.commands import reproduce
from jxhash.commands import train
from jxhash.methods import get_method

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*/*.py"))


def readme_rows(section: str) -> list[str]:
  text = (ROOT / "README.md").read_text()
  start, end = f"<!-- results:{section}:start -->", f"<!-- results:{section}:end -->"
  return [line.strip() for line in text.split(start, 1)[1].split(end, 1)[0].splitlines() if line.startswith("|")]


def test_there_are_config_files_for_every_method_on_wikipedia():
  names = {p.stem for p in CONFIGS if p.parent.name == "wikipedia"}
  from jxhash.methods import METHODS
  assert set(METHODS) <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_a_config_file_builds_a_valid_run(path):
  s = flags.config_file_settings(path)
  # configs/<dataset>/ holds a loader's configs; configs/<dataset>-<family>/ a prepared protocol's
  assert s.data.name == ("prepared" if prepared_protocol(path) else path.parent.name)
  spec = get_method(s.method.name)
  assert isinstance(settings.method_config(spec, s), spec.Config)
  data.schema(s.data.name).check({k: v for k, v in s.data.options.items() if not isinstance(v, str)})
  text = path.read_text()
  assert f"--config configs/{path.parent.name}/{path.name}" in text
  assert "<!-- expected" not in text and "| wikipedia |" not in text  # config only: no results in source


def test_flags_override_a_config_file(tmp_path):
  path = tmp_path / "c.py"
  path.write_text("def get_config():\n  return {'method': 'dcmh', 'dataset': 'synthetic', 'bits': 16, "
                  "'set': {'lr': 5.0, 'eta': 0.5}, 'data_options': {'num_items': 400, 'noise': 0.1}}\n")
  args = train.parse_args(["--config", str(path), "--set", "lr=7", "--data-option", "noise=0.2"])
  config = train.build_config(get_method("dcmh"), args)
  assert (config.bits, config.lr, config.eta) == (16, 7.0, 0.5)
  s = train.settings_of(args)
  assert s.data.options == {"num_items": 400, "noise": "0.2"}
  assert train.build_config(get_method("dcmh"), train.parse_args(["--config", str(path), "--bits", "64"])).bits == 64
  dotted = train.parse_args(["--config", str(path), "--config.method.lr=30", "--config.train.seeds", "2"])
  assert train.build_config(get_method("dcmh"), dotted).lr == 30.0
  assert train.settings_of(dotted).train.seeds == 2


@pytest.mark.parametrize("values, message", [
    ({"method": "dcmh", "seed": -5}, "train.seed: must be >= 0, got -5"),
    ({"method": "dcmh", "eval_every": -1}, "eval.eval_every: must be >= 0, got -1"),
    ({"method": "dcmh", "seeds": True}, "train.seeds: expected an integer, got True"),
    ({"method": "dcmh", "set": ["lr", 3]}, "method.set: expected a mapping"),
    ({"method": "dcmh", "data_options": "num_val=3"}, "data.options: expected a mapping"),
    ({"method": "dcmh", "name": 7}, "output.name: expected a string, got 7"),
    ({"method": "dcmh", "augment": {"flip": True}}, "train.augment: expected a string"),
    ({"train": {"colour": 1}}, "train.colour: no such setting"),
])
def test_a_config_file_value_goes_through_the_same_checks_as_a_flag(tmp_path, values, message):
  from jxhash.errors import UserError
  path = tmp_path / "c.py"
  path.write_text(f"def get_config():\n  return {values!r}\n")
  with pytest.raises(UserError, match=None) as e:
    flags.config_file_settings(path)
  assert message in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name == "wikipedia"], ids=lambda p: p.stem)
def test_the_readme_table_has_the_rows_of_each_wikipedia_config(path):
  s = flags.config_file_settings(path)
  rows = [r for r in readme_rows("wikipedia") if _row_config(r) == path.stem]
  assert sorted(int(r.strip("|").split("|")[2]) for r in rows) == [16, 32, 64], f"{path}: README rows {rows}"
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    written = dict(kv.split("=") for kv in cells[7].split()) if cells[7] != "defaults" else {}
    assert {k: float(v) for k, v in written.items()} == {k: float(v) for k, v in s.method.set.items()}, row


def prepared_protocol(path: pathlib.Path) -> bool:
  """Whether `path` is in a protocol folder for `jxhash prepare` output (configs/<dataset>-<family>/)."""
  return "-" in path.parent.name


def _row_config(row: str) -> str:
  """The config file a README row comes from: its method, plus -tuned for a tuned row. The run
  column is the method's name, followed by what tells runs of one method apart ("dcph (epochs=96)")."""
  cells = [c.strip() for c in row.strip("|").split("|")]
  return cells[1].split(" ", 1)[0] + ("" if cells[7] == "defaults" else "-tuned")


def _not_yet_run(section: str) -> str:
  text = (ROOT / "README.md").read_text()
  return text.split(f"<!-- results:{section}:end -->", 1)[1].split("\n\n", 2)[1]


def test_smoke_preset_shrinks_only_splits_that_are_options():
  assert reproduce.smoke_options("mirflickr25k", None) == [] and reproduce.smoke_options("mirflickr25k", "paper") == []
  flags = reproduce.smoke_options("mirflickr25k", "smoke")
  assert flags[::2] == ["--data-option"] * 4 and "num_train=300" in flags
  assert data.parse_options("mirflickr25k", flags[1::2])["num_retrieval"] == 1000
  assert reproduce.smoke_options("wikipedia", "smoke") == []  # the official split is not an option to shrink


def test_the_smoke_preset_wins_over_larger_epochs_and_set_other_presets_do_not():
  spec = get_method("mmach")
  tuned = ROOT / "configs" / "wikipedia" / "mmach-tuned.py"
  assert flags.config_file_settings(tuned).method.set["epochs"] == 200  # what the smoke preset must override
  smoke = train.build_config(spec, train.parse_args(["--config", str(tuned), "--epochs", "50", "--preset", "smoke"]))
  assert smoke == dataclasses.replace(spec.Config(), **spec.smoke)
  # ... but never makes a run larger: a smaller integer the run sets stays (a tiny split's batch)
  small = train.build_config(spec, train.parse_args(["--method", "mmach", "--preset", "smoke", "--epochs", "1",
                                                     "--batch-size", "8", "--set", "triplet_samples=3"]))
  assert (small.epochs, small.batch_size, small.triplet_samples) == (1, 8, 3)
  assert small.image_hidden == spec.smoke["image_hidden"] and small.eps == spec.smoke["eps"]
  # without the smoke preset, a flag beats the config file's value of the same field
  assert train.build_config(spec, train.parse_args(["--config", str(tuned), "--epochs", "50"])).epochs == 50
  assert train.build_config(spec, train.parse_args(["--config", str(tuned)])).epochs == 200
  dcmh = get_method("dcmh")
  paper = train.build_config(dcmh, train.parse_args(["--method", "dcmh", "--preset", "paper", "--epochs", "50"]))
  assert paper == dataclasses.replace(dcmh.Config(), **{**dcmh.presets["paper"], "epochs": 50})


def test_reproduce_runs_every_config_at_the_preset(tmp_path):
  folder = ROOT / "configs" / "mirflickr25k"
  configs = {path: flags.config_file_settings(path) for path in reproduce.config_files(folder)}
  args = argparse.Namespace(bits=[16], seeds=2, force=False, data_dir=None, only={"dcmh", "lsh"}, preset="smoke")
  todo = reproduce.jobs(args, folder, tmp_path, configs)
  assert [name for name, *_ in todo] == [p.stem for p in configs] + ["lsh"]
  shrink = reproduce.smoke_options("mirflickr25k", "smoke")
  for name, _, cmd, _ in todo:
    joined = " ".join(cmd)
    assert joined.endswith(" ".join(shrink)), name  # every run, baselines too, on the small split
    assert ("--preset smoke" in joined) == (name != "lsh"), name  # baselines have no method config
  args.preset = None
  assert all("--preset" not in cmd and "num_train=300" not in " ".join(cmd)
             for _, _, cmd, _ in reproduce.jobs(args, folder, tmp_path, configs))


def test_reproduce_refuses_a_preset_some_method_lacks_before_any_run(tmp_path, capsys):
  code = reproduce.main([str(ROOT / "configs" / "wikipedia"), "--preset", "lab", "--workdir", str(tmp_path / "wd")])
  err = capsys.readouterr().err
  assert code == 2 and err.count("\n") == 1, err
  assert "dcmh.py: --preset 'lab': dcmh has the presets default, paper, smoke" in err
  assert not (tmp_path / "wd").exists()

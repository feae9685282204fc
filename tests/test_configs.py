"""Config files (configs/<dataset>/<name>.py): each builds a valid run, flags override it, and the
results each states are exactly the README table's rows (both written by experiments/reproduce.py)."""

import pathlib
import re
import sys

import pytest

from jxhash import data
from jxhash.methods import get_method

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import reproduce  # noqa: E402
import run as run_cli  # noqa: E402

CONFIGS = sorted((ROOT / "configs").glob("*/*.py"))


def expected_rows(path: pathlib.Path) -> list[str]:
  text = path.read_text()
  block = text.split(reproduce.START, 1)[1].split(reproduce.END, 1)[0]
  return [line.strip() for line in block.splitlines() if line.strip().startswith("|")]


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
  values = run_cli.load_config_file(path)
  # configs/<dataset>/ holds a loader's configs; configs/<dataset>-<family>/ a prepared protocol's
  assert values["dataset"] == (prepared_protocol(path) and "prepared" or path.parent.name)
  args = run_cli.parse_args(["--config", str(path)])
  spec = get_method(args.method)
  config = run_cli.build_config(spec, args)
  assert isinstance(config, spec.Config)
  data.parse_options(args.dataset, args.data_option)
  text = path.read_text()
  assert f"python experiments/run.py --config configs/{path.parent.name}/{path.name}" in text


def test_flags_override_a_config_file(tmp_path):
  path = tmp_path / "c.py"
  path.write_text("def get_config():\n  return {'method': 'dcmh', 'dataset': 'synthetic', 'bits': 16, "
                  "'set': {'lr': 5.0, 'eta': 0.5}, 'data_options': {'num_items': 400, 'noise': 0.1}}\n")
  args = run_cli.parse_args(["--config", str(path), "--set", "lr=7", "--data-option", "noise=0.2"])
  config = run_cli.build_config(get_method(args.method), args)
  assert (config.bits, config.lr, config.eta) == (16, 7.0, 0.5)
  assert data.parse_options("synthetic", args.data_option) == {"num_items": 400, "noise": 0.2}
  assert run_cli.build_config(get_method("dcmh"), run_cli.parse_args(["--config", str(path), "--bits", "64"])).bits == 64


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_the_results_a_config_file_states_are_the_readme_table(path):
  rows = expected_rows(path)
  if prepared_protocol(path) and f"<!-- results:{path.parent.name}:start -->" not in (ROOT / "README.md").read_text():
    # a protocol with no results in the README yet: its own README lists the method as not yet run
    assert not rows, f"{path} states results the README does not show"
    assert f"`{path.stem}`" in (path.parent / "README.md").read_text().split("Not yet run:", 1)[1]
    return
  table = readme_rows(path.parent.name)
  if not rows:
    # not run yet: then the README may not show results for it either, and says which are missing
    assert not [r for r in table if _row_config(r) == path.stem], f"{path} states no results but the README does"
    assert f"`{path.stem}`" in _not_yet_run(path.parent.name), f"the README does not list {path.stem} as not yet run"
    return
  missing = [r for r in rows if r not in table]
  assert not missing, f"{path}: rows not in the README table: {missing}"
  assert not [r for r in table if _row_config(r) == path.stem and r not in rows], f"{path} misses README rows"
  assert re.search(r"Produced by: python experiments/reproduce.py configs/\w+", path.read_text())


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


def test_smoke_mode_shrinks_only_splits_that_are_options(monkeypatch):
  monkeypatch.delenv("JXHASH_SMOKE", raising=False)
  assert reproduce.smoke_options("mirflickr25k") == []
  monkeypatch.setenv("JXHASH_SMOKE", "1")
  flags = reproduce.smoke_options("mirflickr25k")
  assert flags[::2] == ["--data-option"] * 4 and "num_train=300" in flags
  assert data.parse_options("mirflickr25k", flags[1::2])["num_retrieval"] == 1000
  assert reproduce.smoke_options("wikipedia") == []  # the official split is not an option to shrink

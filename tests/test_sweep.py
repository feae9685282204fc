"""experiments/sweep.py chooses on val and never on the test queries; experiments/baselines.py;
the seed loop of the issue: five single-seed runs and a 3-seed run, nothing overwritten."""

import json
import pathlib
import sys

import numpy as np
import pytest

from conftest import TINY_SPLIT_FLAGS
from jxhash import data, metrics
from jxhash.methods import get_method

ROOT = pathlib.Path(__file__).resolve().parents[1]

from jxhash.commands import baselines  # noqa: E402
from jxhash.commands import flags  # noqa: E402
from jxhash.commands import train  # noqa: E402
from jxhash.commands import sweep  # noqa: E402

SMALL = TINY_SPLIT_FLAGS


@pytest.mark.slow
def test_sweep_scores_on_val_resumes_and_tests_the_best_once(tmp_path, monkeypatch, capsys):
  argv = ["--method", "dcmh", "--preset", "smoke", "--bits", "16", "--seeds", "2", "--eval-every", "1", "--grid", "lr=0.1,30",
          "--grid", "eta=0.1,1", *SMALL, "--out-dir", str(tmp_path / "sw")]
  calls = []
  from jxhash.training import trainer
  original = trainer.fit

  def counting_fit(spec, config, ds, options, **kw):
    calls.append((config.lr, config.eta, ds.val.size, options.num_seeds))
    return original(spec, config, ds, options, **kw)

  monkeypatch.setattr(trainer, "fit", counting_fit)
  assert sweep.main([*argv, "--write-config", str(tmp_path / "dcmh-tuned.py")]) == 0
  summary = json.loads((tmp_path / "sw" / "summary.json").read_text())
  assert len(summary) == 4 and len(calls) == 5  # 4 settings on val, then the best once on the test protocol
  assert all(c[2] == 24 for c in calls[:4])  # the search always ranks the val items
  scores = [s["val_score"] for s in summary]
  assert scores == sorted(scores, reverse=True)
  test = json.loads((tmp_path / "sw" / "test.json").read_text())
  best = summary[0]["setting"]
  assert test["sweep"]["chosen"] == best and test["config"]["lr"] == float(best["lr"])
  assert test["num_seeds"] == 2 and "map_std" in test
  # the written config file runs the chosen setting
  config = train.build_config(get_method("dcmh"),
                                train.parse_args(["--config", str(tmp_path / "dcmh-tuned.py")]))
  assert (config.lr, config.eta) == (float(best["lr"]), float(best["eta"]))
  # resumable: the finished settings are read back, only the test run trains again
  calls.clear()
  assert sweep.main(argv) == 0
  assert len(calls) == 1
  assert "chosen on val" in capsys.readouterr().out


def _written(tmp_path, *flags, setting, name="tuned.py"):
  """The config file text `--write-config` gives for a search that chose `setting`, and the
  config its file builds (None, None when it writes nothing)."""
  path = tmp_path / name
  args = sweep.parse_args(["--method", "dcmh", "--dataset", "wikipedia", "--data-dir", "../shared/data/wikipedia",
                           "--grid", "lr=30,60", "--grid", "eta=0.1,1", *flags, "--out-dir", str(tmp_path / "sw"),
                           "--write-config", str(path)])
  text = sweep.tuned_config(args, {"setting": setting, "val_score": 0.4321}, "| rank | lr |\n|---|---|")
  if text is None:
    return None, None
  path.write_text(text)
  return text, train.build_config(get_method("dcmh"), train.parse_args(["--config", str(path)]))


def test_write_config_states_only_what_the_sweep_changed(tmp_path):
  defaults = get_method("dcmh").Config()
  text, config = _written(tmp_path, setting={"lr": "30", "eta": str(defaults.eta)})
  assert config.lr == 30.0 and config.eta == defaults.eta and config.epochs == defaults.epochs
  assert "'set': {'lr': 30.0}" in text and "chose: lr=30.0 (defaults: lr=60.0)" in text
  assert "val score: 0.4321" in text and "--grid lr=30,60 --grid eta=0.1,1" in text
  assert "<!-- expected" not in text  # config files hold config only; results live in results files
  values = flags.load_config_file(tmp_path / "tuned.py")
  assert values["data_dir"] == "../shared/data/wikipedia" and values["dataset"] == "wikipedia"
  # the defaults chosen: nothing to write
  assert _written(tmp_path, setting={"lr": str(defaults.lr), "eta": str(defaults.eta)}) == (None, None)
  # fixed --set values and --epochs are part of the setting that was searched, so they are kept
  text, config = _written(tmp_path, "--set", "clip_norm=0.5", "--set", "image_hidden=64,32", "--epochs", "7",
                          "--data-option", "num_val=0", setting={"lr": str(defaults.lr), "eta": str(defaults.eta)})
  assert (config.clip_norm, config.epochs, config.lr, config.image_hidden) == (0.5, 7, defaults.lr, (64, 32))
  assert flags.load_config_file(tmp_path / "tuned.py")["data_options"] == {"num_val": "0"}


def test_write_config_is_checked_before_the_search(tmp_path, capsys):
  (tmp_path / "folder").mkdir()
  assert sweep.main(["--method", "dcmh", "--grid", "lr=30,60", "--out-dir", str(tmp_path / "sw"),
                     "--write-config", str(tmp_path / "folder")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "--write-config" in err, err
  assert not (tmp_path / "sw" / "settings").exists()


def test_sweep_refuses_bad_grids_before_training(tmp_path, capsys):
  for grid, message in ((["--grid", "lr"], "--grid expects field=v1,v2"),
                        (["--grid", "nope=1,2"], "no such field"),
                        (["--grid", "lr=-1,2"], "lr=-1.0: must be >= 0")):
    assert sweep.main(["--method", "dcmh", *grid, "--out-dir", str(tmp_path / "sw")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
  assert not (tmp_path / "sw" / "settings").exists()


def test_baselines_span_chance_to_supervised(tmp_path):
  ds = data.load("synthetic", num_items=600, num_query=100, num_train=300, num_val=0)
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  got = {}
  for name in baselines.BASELINES:
    out = tmp_path / f"{name}.json"
    assert baselines.main(["--baseline", name, "--bits", "16", "--seeds", "2", "--data-option", "num_items=600",
                           "--data-option", "num_query=100", "--data-option", "num_train=300",
                           "--data-option", "num_val=0", "--out", str(out)]) == 0
    got[name] = json.loads(out.read_text())
  # random hyperplanes per modality share no directions; the supervised linear hash clearly aligns them
  assert abs(np.mean(list(got["lsh"]["map"].values())) - chance) < 0.1
  assert min(got["ridge-itq"]["map"].values()) > chance + 0.2
  assert got["cca-sign"]["effective_bits"] == 16 and got["cca-sign"]["num_seeds"] == 1
  assert got["ridge-itq"]["effective_bits"] == 10 and got["ridge-itq"]["num_seeds"] == 2  # C = 10 labels


@pytest.mark.slow
def test_a_seed_loop_then_several_seeds_writes_six_results_and_overwrites_nothing(tmp_path, monkeypatch):
  base = ["--method", "dcmh", "--preset", "smoke", "--workdir", str(tmp_path), "--no-progress", *SMALL]  # results/, checkpoints/ there
  for s in range(5):
    assert train.main([*base, "--seed", str(s)]) == 0
  first = {p.name: p.read_bytes() for p in (tmp_path / "results").glob("*.json")}
  assert train.main([*base, "--seeds", "3"]) == 0
  files = sorted((tmp_path / "results").glob("*.json"))
  assert len(files) == 6 and len({p.name for p in files}) == 6
  assert all((tmp_path / "results" / name).read_bytes() == blob for name, blob in first.items())
  assert len([d for d in (tmp_path / "checkpoints").iterdir() if d.is_dir()]) == 6

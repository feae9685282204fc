"""experiments/run.py: a real run end to end, and one-line errors with exit code 2."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

from conftest import TINY_SPLIT_FLAGS
from jxhash.commands import train  # noqa: E402

TINY = [*TINY_SPLIT_FLAGS, "--epochs", "2", "--batch-size", "32", "--set", "image_hidden=32",
        "--set", "text_hidden=32", "--no-progress", "--eval-every", "1"]


@pytest.mark.slow
def test_run_writes_results_and_checkpoint(tmp_path, capsys):
  out = tmp_path / "r.json"
  code = train.main(["--method", "dcmh", "--bits", "16", "--out", str(out), "--checkpoint-dir",
                       str(tmp_path / "ck"), *TINY])
  assert code == 0
  res = json.loads(out.read_text())
  assert res["method"] == "dcmh" and res["dataset"] == "synthetic" and res["bits"] == 16
  for d in ("i2t", "t2i"):
    assert 0 <= res["map"][d] <= 1
    m = res["metrics"][d]
    assert set(m) >= {"map", "map@k", "p@n", "pr_radius", "num_no_relevant"}
  assert res["split_sizes"] == {"query": 40, "retrieval": 260, "train": 96, "val": 24}
  assert res["config"]["image_hidden"] == [32] and res["environment"]["jax"]
  run_dir = pathlib.Path(res["checkpoint"])
  assert run_dir.parent == tmp_path / "ck" and run_dir.name == res["run_name"]
  assert res["run_name"].startswith("dcmh-synthetic-16bits-seed0-") and (run_dir / "run.json").exists()
  assert res["effective_batch_sizes"] == {"train/image": 32, "train/text": 32}
  assert "mAP@all image->text" in capsys.readouterr().out


@pytest.mark.slow
def test_seeds_give_mean_std_min_max_of_every_scalar_metric(tmp_path):
  out = tmp_path / "r.json"
  assert train.main(["--bits", "16", "--seeds", "3", "--out", str(out), "--no-checkpoint", *TINY]) == 0
  res = json.loads(out.read_text())
  assert [r["seed"] for r in res["per_seed"]] == [0, 1, 2]
  for d in ("i2t", "t2i"):
    assert set(res["seed_stats"][d]) == {"map", "map@100", "map@1000"}
    for name, stats in res["seed_stats"][d].items():
      values = np.array([r[d][name] for r in res["per_seed"]])
      assert stats == pytest.approx({"mean": values.mean(), "std": values.std(), "min": values.min(),
                                     "max": values.max()})
    assert res["map"][d] == pytest.approx(res["seed_stats"][d]["map"]["mean"])
    assert res["map_std"][d] == pytest.approx(res["seed_stats"][d]["map"]["std"])
    assert res["seed_stats"][d]["map"]["max"] > res["seed_stats"][d]["map"]["min"]  # the seeds differ


@pytest.mark.slow
def test_dcmh_on_streamed_pixels_with_augmentation(tmp_path, capsys):
  out, ck = tmp_path / "r.json", tmp_path / "ck"
  argv = ["--bits", "16", "--out", str(out), "--checkpoint-dir", str(ck), "--data-option", "image_size=224",
          "--data-option", "num_labels=4", "--augment", "flip+shift:8", "--prefetch", "3",
          "--set", "cnn_channels=6,8,8,8,8", "--set", "cnn_fc_width=16", *TINY]
  assert train.main(argv) == 0
  res = json.loads(out.read_text())
  assert res["augment"] == "flip+shift:8" and res["split"]["image_size"] == 224
  run_json = json.loads((pathlib.Path(res["checkpoint"]) / "run.json").read_text())
  assert run_json["augment"] == "flip+shift:8" and run_json["dims"]["image_shape"] == [224, 224, 3]
  # the same run without augmentation is a different run: it gets its own directory, and
  # --resume has nothing of it to continue
  assert argv[10:12] == ["--augment", "flip+shift:8"]
  plain = [*argv[:10], *argv[12:]]
  plain[3] = str(tmp_path / "plain.json")
  assert train.main([*plain, "--resume", "--epochs", "1"]) == 0
  assert "resumed" not in capsys.readouterr().out
  assert json.loads((tmp_path / "plain.json").read_text())["checkpoint"] != res["checkpoint"]
  assert len([d for d in ck.iterdir() if d.is_dir()]) == 2


@pytest.mark.slow
def test_results_of_another_run_are_not_overwritten(tmp_path, capsys):
  out = tmp_path / "r.json"
  args = ["--out", str(out), "--no-checkpoint", *TINY]
  assert train.main(["--bits", "16", *args]) == 0
  before = out.read_text()
  assert train.main(["--bits", "16", "--set", "gamma=0.5", *args]) == 2
  assert "different run" in capsys.readouterr().err
  assert out.read_text() == before
  assert train.main(["--bits", "16", "--set", "gamma=0.5", "--overwrite", *args]) == 0


@pytest.mark.slow
def test_missing_data_file_from_the_shell_is_one_line(tmp_path):
  proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--dataset", "wikipedia",
                         "--data-dir", str(tmp_path), "--no-checkpoint"], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
  assert str(tmp_path) in proc.stderr


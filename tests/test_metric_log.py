"""jxhash.training.metric_log: TensorBoard event files that TensorBoard's own reader reads back, with one
scalar per epoch equal to the run's history; the disabled log writes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jxhash import data
from jxhash.training import metric_log
from jxhash.training import trainer
from jxhash.methods import get_method

SMALL = dict(num_items=300, num_query=50, num_train=120, num_val=30)


def _read(directory):
  """{tag: [(step, value)]} and the text summaries, through TensorBoard's EventAccumulator."""
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
  acc.Reload()
  scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
  return scalars, acc


def test_scalars_and_config_read_back(tmp_path):
  with metric_log.open(tmp_path / "run", config={"method": "dcmh", "config": {"lr": 0.5, "hidden": [8, 4]}}) as log:
    log.scalars(1, {"a/loss": 2.5, "b": 1})
    log.scalars(2, {"a/loss": 1.25})
    log.epoch({"epoch": 3, "stage": "train", "a/loss": 0.5, "per_seed": {"a/loss": [0.25, 0.75]}}, first_seed=4)
  scalars, acc = _read(tmp_path / "run")
  assert scalars["a/loss"] == [(1, 2.5), (2, 1.25), (3, 0.5)]
  assert scalars["b"] == [(1, 1.0)]
  assert scalars["seed4/a/loss"] == [(3, 0.25)] and scalars["seed5/a/loss"] == [(3, 0.75)]
  assert set(scalars) == {"a/loss", "b", "seed4/a/loss", "seed5/a/loss"}
  tags = acc.Tags()["tensors"]
  assert "config/text_summary" in tags and "_hparams_/session_start_info" in str(acc.summary_metadata)
  text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
  assert '"lr": 0.5' in text and '"method": "dcmh"' in text


def test_epoch_scalars_skip_what_is_not_a_number():
  entry = {"epoch": 7, "stage": "proxy", "x/loss": 1.5, "val_map": 0.25, "per_seed": {"val_map": [0.5, 0.0]}}
  assert metric_log.epoch_scalars(entry) == {"x/loss": 1.5, "val_map": 0.25, "seed0/val_map": 0.5, "seed1/val_map": 0.0}


def test_disabled_log_writes_nothing(tmp_path, monkeypatch):
  log = metric_log.open(None, config={"a": 1})
  assert isinstance(log, metric_log.NoMetricLog)
  with log:
    log.scalars(1, {"a": 1.0})
    log.epoch({"epoch": 1, "a": 1.0})
  monkeypatch.chdir(tmp_path)
  assert list(tmp_path.iterdir()) == []


def test_unwritable_folder_is_one_line_user_error(tmp_path):
  from jxhash.errors import UserError
  target = tmp_path / "file"
  target.write_text("x")
  with pytest.raises(UserError, match="TensorBoard log folder .* is a file, not a directory"):
    metric_log.open(target)


@pytest.mark.slow
def test_training_run_logs_every_epoch_equal_to_the_history(tmp_path):
  ds = data.load("synthetic", **SMALL)
  spec = get_method("dcmh")
  config = spec.Config(bits=8, epochs=3, batch_size=30, image_hidden=(16,), text_hidden=(16,))
  options = trainer.TrainOptions(progress=False, eval_every=2, num_seeds=2, seed=3)
  with metric_log.open(tmp_path / "tb", config={"method": "dcmh", "bits": 8}) as log:
    result = trainer.fit(spec, config, ds, options, metric_log=log)
  scalars, _ = _read(tmp_path / "tb")
  history = result.history
  assert [h["epoch"] for h in history] == [1, 2, 3]
  for name in ("image/loss", "text/loss"):
    steps, values = zip(*scalars[name])
    assert steps == (1, 2, 3)
    np.testing.assert_allclose(values, [h[name] for h in history], rtol=1e-6)
    for i, seed in enumerate((3, 4)):
      steps, values = zip(*scalars[f"seed{seed}/{name}"])
      assert steps == (1, 2, 3)
      np.testing.assert_allclose(values, [h["per_seed"][name][i] for h in history], rtol=1e-6)
    # the logged mean is the mean of the seeds' values
    np.testing.assert_allclose([h[name] for h in history], [np.mean(h["per_seed"][name]) for h in history],
                               rtol=1e-5)
  evaluated = [h for h in history if "val_map" in h]
  assert [h["epoch"] for h in evaluated] == [2, 3]
  assert [s for s, _ in scalars["val_map"]] == [2, 3]
  np.testing.assert_allclose([v for _, v in scalars["val_map"]], [h["val_map"] for h in evaluated], rtol=1e-6)
  for h in evaluated:
    assert math.isclose(h["val_map"], np.mean(h["per_seed"]["val_map"]), rel_tol=1e-9)
  np.testing.assert_allclose([v for _, v in scalars["seed4/val_map"]], [h["per_seed"]["val_map"][1] for h in evaluated],
                             rtol=1e-6)


@pytest.mark.slow
def test_every_run_logs_under_its_workdir_and_run_name(tmp_path, capsys):
  import json
  from jxhash.commands import train
  out = tmp_path / "r.json"
  code = train.main(["--method=dcmh", "--epochs", "2", "--eval-every", "1", "--bits", "8", "--batch-size", "60",
                       "--set", "image_hidden=16",
                       "--data-option", "num_items=300", "--data-option", "num_query=50", "--data-option", "num_train=120",
                       "--data-option", "num_val=30", "--no-checkpoint", "--no-progress", "--out", str(out),
                       "--workdir", str(tmp_path)])
  assert code == 0, capsys.readouterr().err
  res = json.loads(out.read_text())
  (folder,) = (tmp_path / "logs").iterdir()
  assert folder.name == res["run_name"]
  scalars, acc = _read(folder)
  assert [s for s, _ in scalars["image/loss"]] == [1, 2]
  np.testing.assert_allclose([v for _, v in scalars["val_map"]], [h["val_map"] for h in res["history"]], rtol=1e-6)
  text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
  assert res["data_fingerprint"] in text
  # --no-tensorboard writes none
  assert train.main(["--method=dcmh", "--epochs", "1", "--bits", "8", "--batch-size", "60", "--no-checkpoint", "--no-progress",
                       "--workdir", str(tmp_path / "quiet"), "--no-tensorboard", "--data-option", "num_items=300",
                       "--data-option", "num_query=50", "--data-option", "num_train=120"]) == 0
  assert not (tmp_path / "quiet" / "logs").exists()

"""The generic trainer: selection, resume, checkpoints, divergence.

Multi-device and multi-seed equality are tested for the registered methods in test_methods.py."""

import shutil

import numpy as np
import pytest

from jxhash import checkpoint, data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.errors import CheckpointError, TrainingInterrupted
from jxhash.methods import get_method

SMALL = dict(num_items=400, num_query=60, num_train=160, num_val=40)


def _small_config(**kw):
  spec = get_method("dcmh")
  return spec, spec.Config(bits=16, epochs=kw.pop("epochs", 6), batch_size=32, image_hidden=(64,),
                           text_hidden=(64,), **kw)


def _fit(tmp_path=None, *, resume=False, num_seeds=1, seed=0, epochs=6, eval_every=2):
  ds = data.load("synthetic", **SMALL)
  spec, config = _small_config(epochs=epochs)
  options = trainer.TrainOptions(progress=False, eval_every=eval_every, num_seeds=num_seeds, seed=seed,
                               resume=resume)
  store = None
  if tmp_path is not None:
    store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options),
                                            resume=resume)
  return ds, spec, trainer.fit(spec, config, ds, options, store=store)


@pytest.fixture(scope="module")
def six_epochs():
  """(ds, spec, FitResult) of the default 6-epoch run without checkpoints, trained once for the
  tests that only read it (they used to train the same deterministic run each)."""
  return _fit(epochs=6, eval_every=2)


@pytest.mark.slow
def test_same_seed_same_codes_and_restored_checkpoint_encodes_identically(tmp_path, six_epochs):
  ds, spec, a = _fit(tmp_path / "a")
  _, _, b = six_epochs
  model_a = runstate.seed_slice(a.state.model, 0)
  model_b = runstate.seed_slice(b.state.model, 0)
  for m in ("image", "text"):
    x = inputs.normalize(a.normalizer, m, getattr(ds, m))
    np.testing.assert_array_equal(evaluation.encode(spec, model_a, m, x), evaluation.encode(spec, model_b, m, x))
  enc = checkpoint.restore(tmp_path / "a")
  assert enc.bits == 16 and enc.method == "dcmh"
  for m in ("image", "text"):
    x = inputs.normalize(a.normalizer, m, getattr(ds, m))
    np.testing.assert_array_equal(enc.encode(m, getattr(ds, m)), evaluation.encode(spec, model_a, m, x))


@pytest.mark.slow  # a training run; test_methods.py's smoke runs check selection in the quick tier
def test_selection_uses_val_and_history_is_recorded(six_epochs):
  _, _, result = six_epochs
  vals = [h["val_map"] for h in result.history if "val_map" in h]
  assert len(vals) == 3
  best = int(np.argmax(vals))
  assert result.selected == f"best-val@{2 * (best + 1)}"


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, six_epochs):
  ds, _, full = six_epochs
  store_dir = tmp_path / "partial"
  spec2, config = _small_config(epochs=6)
  options = trainer.TrainOptions(progress=False, eval_every=2)
  meta = checkpoint.run_metadata(spec2, config, ds, options)

  class StopAt4(checkpoint.CheckpointStore):  # an interruption right after the epoch-4 save
    def save_latest(self, state, stats, epoch, extra=None):
      super().save_latest(state, stats, epoch, extra)
      if epoch == 4:
        raise KeyboardInterrupt

  with pytest.raises(TrainingInterrupted, match=r"after 4 of 6 epochs; the last checkpoint \(epoch 4\).*run the same command again to continue"):
    trainer.fit(spec2, config, ds, options, store=StopAt4(store_dir, meta))
  resumed = trainer.fit(spec2, config, ds, trainer.TrainOptions(progress=False, eval_every=2, resume=True),
                      store=checkpoint.CheckpointStore.open(store_dir, meta, resume=True))
  assert resumed.history[-1]["epoch"] == 6 and len(resumed.history) == 6
  for m in ("image", "text"):
    np.testing.assert_array_equal(np.asarray(resumed.state.model.outputs[m]), np.asarray(full.state.model.outputs[m]))
  assert resumed.final == full.final


class _Killed(BaseException):
  """Stands in for SIGKILL: nothing in the trainer catches it."""


@pytest.mark.slow
def test_resume_after_a_kill_between_the_best_and_the_latest_save(tmp_path):
  # an epoch that improves on val saves best/ then latest/; killed in between, the run has a best
  # checkpoint newer than its latest one, and resuming trains that epoch (and saves it) again
  ds, _, full = _fit(epochs=6, eval_every=1)
  spec, config = _small_config(epochs=6)
  options = trainer.TrainOptions(progress=False, eval_every=1)
  meta = checkpoint.run_metadata(spec, config, ds, options)
  store_dir = tmp_path / "killed"

  class KilledAfterBest(checkpoint.CheckpointStore):
    best_epoch = None

    def save_best(self, state, stats, epoch):
      super().save_best(state, stats, epoch)
      self.best_epoch = epoch

    def save_latest(self, state, stats, epoch, extra=None):
      if epoch >= 2 and epoch == self.best_epoch:
        raise _Killed(epoch)
      super().save_latest(state, stats, epoch, extra)

  with pytest.raises(_Killed) as killed:
    trainer.fit(spec, config, ds, options, store=KilledAfterBest(store_dir, meta))
  epoch = killed.value.args[0]
  assert checkpoint.CheckpointStore.open(store_dir, meta, resume=True).latest_epoch() == epoch - 1
  resumed = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=1, resume=True),
                      store=checkpoint.CheckpointStore.open(store_dir, meta, resume=True))
  assert resumed.selected == full.selected
  assert resumed.final == full.final
  best = checkpoint.restore(store_dir, which="best")
  assert f"best-val@{best.epoch}" == full.selected


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
  """The run directory of a 2-epoch run; tests change copies of it."""
  run_dir = tmp_path_factory.mktemp("two-epochs") / "run"
  _fit(run_dir, epochs=2)
  return run_dir


def test_checkpoint_of_another_run_is_refused(two_epoch_run, tmp_path):
  shutil.copytree(two_epoch_run, tmp_path, dirs_exist_ok=True)
  ds = data.load("synthetic", **SMALL)
  spec, config = _small_config(epochs=3)
  meta = checkpoint.run_metadata(spec, config, ds, trainer.TrainOptions())
  with pytest.raises(CheckpointError, match="different run"):
    checkpoint.CheckpointStore.open(tmp_path, meta, resume=True)


def test_corrupt_checkpoint_is_reported(two_epoch_run, tmp_path):
  shutil.copytree(two_epoch_run, tmp_path, dirs_exist_ok=True)
  assert checkpoint.restore(tmp_path).epoch in (1, 2)  # intact before the damage
  for f in (tmp_path / "best").rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "state" in str(f):
      f.write_bytes(b"garbage")
  for f in (tmp_path / "latest").rglob("*"):
    if f.is_file() and "state" in str(f):
      f.write_bytes(b"")
  with pytest.raises(CheckpointError, match="corrupt|unreadable"):
    checkpoint.restore(tmp_path)


def test_non_finite_loss_stops_with_a_message():
  ds = data.load("synthetic", **SMALL)
  spec, config = _small_config(epochs=3, lr=1e6, init="fan_in", lr_scaling="none", clip_norm=0.0)
  with pytest.raises(trainer.TrainingDiverged, match=r"phase '(image|text)', epoch \d+, step \d+"):
    trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))

"""jxhash.experiment.run: the experiment as a library call; runs that resume by themselves; a
finished run that is neither retrained nor rewritten; outputs only under the work directory."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_SPLIT, TINY_SPLIT_FLAGS
from jxhash import checkpoint, experiment, settings
from jxhash.errors import UserError

TINY = {"method": "dcmh", "bits": 16, "epochs": 2, "batch_size": 32, "seeds": 2, "eval_every": 1,
        "data_options": TINY_SPLIT,
        "set": {"image_hidden": (16,), "text_hidden": (16,)}}


def _settings(workdir, **output):
  return settings.from_mapping(TINY, base=settings.Settings(
      output=settings.OutputSettings(workdir=str(workdir), progress=False, **output)))


def _tree(folder: pathlib.Path) -> dict:
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_run_encodes_in_memory_as_its_checkpoint_does_and_a_finished_run_is_not_redone(tmp_path):
  s = _settings(tmp_path / "wd")
  result = experiment.run(s)
  assert not result.already_complete and result.path.parent == (tmp_path / "wd" / "results").resolve()
  assert result.checkpoint_dir.parent == (tmp_path / "wd" / "checkpoints").resolve()
  x = np.random.default_rng(0).normal(size=(7, 128)).astype(np.float32)
  for seed in (0, 1):
    in_memory = result.encoder(seed).encode("image", x)
    restored = checkpoint.restore(result.checkpoint_dir, seed=seed, which="latest").encode("image", x)
    assert in_memory.shape == (7, 16) and set(np.unique(in_memory)) <= {-1, 1}
    np.testing.assert_array_equal(in_memory, restored)
  before = _tree(tmp_path / "wd")
  again = experiment.run(s)
  assert again.already_complete and again.results == json.loads(result.path.read_text())
  assert _tree(tmp_path / "wd") == before  # nothing rewritten
  with pytest.raises(UserError, match="out of range"):
    result.encoder(2)


def test_overwrite_retrains_a_finished_run_and_restart_ignores_its_checkpoints(tmp_path):
  first = experiment.run(_settings(tmp_path))
  again = experiment.run(_settings(tmp_path, overwrite=True))
  assert not again.already_complete and again.fit.train_time > 0
  # same seeds, same data: a retrained run gives the same numbers
  np.testing.assert_allclose([again.map["i2t"], again.map["t2i"]], [first.map["i2t"], first.map["t2i"]], rtol=1e-6)


def test_settings_are_checked_before_any_work(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("x")
  with pytest.raises(UserError, match="--workdir"):
    experiment.run(_settings(blocker))
  with pytest.raises(UserError, match="lr"):
    experiment.run(settings.from_mapping({**TINY, "set": {"lr": "fast"}}))
  assert not (tmp_path / "results").exists()


@pytest.mark.slow  # subprocesses
def test_the_same_command_after_a_kill_continues_and_writes_only_under_its_workdir(tmp_path):
  """A run killed mid-way continues from its last checkpoint when the same command runs again
  (no --resume), and every file lands under --workdir (run from another directory)."""
  workdir, elsewhere = tmp_path / "wd", tmp_path / "cwd"
  elsewhere.mkdir()
  argv = [sys.executable, "-m", "jxhash", "train", "--workdir", str(workdir), "--method", "dcmh", "--bits", "16",
          "--epochs", "40", "--batch-size", "32", "--set", "image_hidden=16", "--set", "text_hidden=16",
          "--eval-every", "1", "--no-progress", *TINY_SPLIT_FLAGS]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(argv, cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    latest = None
    for _ in range(600):  # wait until a checkpoint past epoch 1 exists, then kill
      found = list(workdir.glob("checkpoints/*/latest/*"))
      steps = [int(p.name) for p in found if p.name.isdigit()]
      if steps and max(steps) >= 3:
        latest = max(steps)
        break
      if proc.poll() is not None:
        break
      import time
      time.sleep(0.2)
    proc.kill()
  finally:
    proc.wait()
    proc.stdout.close()
  assert latest is not None, "no checkpoint appeared"
  done = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr
  assert "resumed dcmh from epoch" in done.stdout
  assert list(elsewhere.iterdir()) == []  # nothing written where the command ran
  again = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "already complete" in again.stdout

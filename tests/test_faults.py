"""Faults: a run killed with SIGKILL resumes to the same codes; a kill during a checkpoint save
leaves a restorable checkpoint."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jxhash import checkpoint, data

pytestmark = pytest.mark.slow  # subprocesses killed mid-run

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "experiments" / "run.py"), "--method", "dcmh", "--bits", "16",
       "--epochs", "60", "--batch-size", "32", "--set", "image_hidden=16", "--set", "text_hidden=16",
       "--data-option", "num_items=300", "--data-option", "num_query=40", "--data-option", "num_train=96",
       "--data-option", "num_val=24", "--eval-every", "1", "--no-progress"]


def _latest_epoch(run_dir: pathlib.Path) -> int:
  steps = [int(p.name) for p in (run_dir / "latest").glob("*") if p.name.isdigit()]
  return max(steps, default=0)


def _final_codes(root):
  enc = checkpoint.restore(root / "dcmh" / "synthetic" / "16bits", which="latest")
  ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
  return enc.epoch, enc.encode("image", ds.image), enc.encode("text", ds.text)


def test_sigkill_mid_run_then_resume_ends_with_the_same_codes(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  full, cut = tmp_path / "full", tmp_path / "cut"
  subprocess.run(RUN + ["--checkpoint-dir", str(full), "--out", str(tmp_path / "full.json")], env=env,
                 check=True, capture_output=True, timeout=600)
  proc = subprocess.Popen(RUN + ["--checkpoint-dir", str(cut), "--out", str(tmp_path / "cut.json")], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  run_dir = cut / "dcmh" / "synthetic" / "16bits"
  deadline = time.time() + 300
  while _latest_epoch(run_dir) < 5 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = _latest_epoch(run_dir)
  assert proc.returncode == -signal.SIGKILL and 5 <= killed_at < 60, (proc.returncode, killed_at)
  subprocess.run(RUN + ["--checkpoint-dir", str(cut), "--out", str(tmp_path / "cut.json"), "--resume"],
                 env=env, check=True, capture_output=True, timeout=600)
  epoch_a, image_a, text_a = _final_codes(full)
  epoch_b, image_b, text_b = _final_codes(cut)
  assert epoch_a == epoch_b == 60
  np.testing.assert_array_equal(image_a, image_b)
  np.testing.assert_array_equal(text_a, text_b)


_SAVER = """
import sys
from jxhash import checkpoint, data, inputs, runstate, train
from jxhash.methods import get_method
from jxhash.spec import Dims
ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
spec = get_method("dcmh")
config = spec.Config(bits=16, epochs=2, image_hidden=(2048,), text_hidden=(2048,))
options = train.TrainOptions()
state = runstate.init_state(spec, config, Dims.of(ds), 96)
stats = inputs.fit_normalizer(ds, "standardize")
store = checkpoint.CheckpointStore.open(sys.argv[1], checkpoint.run_metadata(spec, config, ds, options))
epoch = 0
while True:
  epoch += 1
  print("saving", epoch, flush=True)
  store.save_latest(state.replace(epoch=state.epoch + epoch), stats, epoch)
"""


def test_kill_during_checkpoint_save_leaves_a_restorable_checkpoint(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  for line in proc.stdout:
    if line.strip() == "saving 3":
      break
  time.sleep(0.05)  # inside the third save
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  enc = checkpoint.restore(tmp_path, which="latest")
  assert enc.epoch in (2, 3)
  ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
  assert enc.encode("image", ds.image[:5]).shape == (5, 16)

"""Faults: repeated SIGKILLs (inside checkpoint saves too) then --resume end with the same codes;
a second process in the same run directory is refused and the first is unharmed; a full disk
while writing results or checkpoints leaves the previous files intact.

Every test here runs experiments/run.py in subprocesses, so the whole module is the slow tier.
"""

import json
import os
import pathlib
import random
import signal
import subprocess
import tempfile
import sys
import time

import numpy as np
import pytest

from conftest import TINY_SPLIT, TINY_SPLIT_FLAGS
from jxhash import checkpoint, data

pytestmark = pytest.mark.slow  # subprocesses killed mid-run

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the processes' working directory (their default --workdir): outside the checkout
WORK = pathlib.Path(tempfile.mkdtemp(prefix="jxhash-test-work-"))
RUN = [sys.executable, str(ROOT / "experiments" / "run.py"), "--method", "dcmh", "--bits", "16",
       "--epochs", "60", "--batch-size", "32", "--set", "image_hidden=16", "--set", "text_hidden=16",
       *TINY_SPLIT_FLAGS, "--eval-every", "1", "--no-progress", "--name", "fault"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu")
SMALL = TINY_SPLIT


def _latest_epoch(run_dir: pathlib.Path) -> int:
  steps = [int(p.name) for p in (run_dir / "latest").glob("*") if p.name.isdigit()]
  return max(steps, default=0)


def _run_ok(args):
  proc = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"


def _final_codes(run_dir):
  enc = checkpoint.restore(run_dir, which="latest")
  ds = data.load("synthetic", **SMALL)
  return enc.epoch, enc.encode("image", ds.image), enc.encode("text", ds.text)


def test_repeated_sigkills_then_resume_end_with_the_same_codes(tmp_path):
  full, cut = tmp_path / "full", tmp_path / "cut"
  _run_ok(RUN + ["--checkpoint-dir", str(full), "--out", str(tmp_path / "full.json")])
  run_dir = cut / "fault"
  rng = random.Random(0)
  kills = []
  for attempt in range(3):
    args = RUN + ["--checkpoint-dir", str(cut), "--out", str(tmp_path / "cut.json")] + (["--resume"] if attempt else [])
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # wait for a few new checkpoints, then kill at a random moment: often inside a save, since
    # a checkpoint is written after every epoch here
    target = _latest_epoch(run_dir) + 3
    deadline = time.time() + 300
    while _latest_epoch(run_dir) < target and proc.poll() is None and time.time() < deadline:
      time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    kills.append(_latest_epoch(run_dir))
  assert 0 < kills[0] < kills[-1] < 60, kills
  _run_ok(RUN + ["--checkpoint-dir", str(cut), "--out", str(tmp_path / "cut.json"), "--resume"])
  epoch_a, image_a, text_a = _final_codes(full / "fault")
  epoch_b, image_b, text_b = _final_codes(run_dir)
  assert epoch_a == epoch_b == 60
  np.testing.assert_array_equal(image_a, image_b)
  np.testing.assert_array_equal(text_a, text_b)
  assert json.loads((tmp_path / "cut.json").read_text())["map"] == json.loads((tmp_path / "full.json").read_text())["map"]


_SAVER = """
import sys
from jxhash import checkpoint, data
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.methods import get_method
from jxhash.spec import Dims
ds = data.load("synthetic", num_items=300, num_query=40, num_train=96, num_val=24)
spec = get_method("dcmh")
config = spec.Config(bits=16, epochs=2, image_hidden=(2048,), text_hidden=(2048,))
options = trainer.TrainOptions()
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
  proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(tmp_path)], env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, cwd=WORK)
  for line in proc.stdout:
    if line.strip() == "saving 3":
      break
  time.sleep(0.05)  # inside the third save
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stdout.close()
  enc = checkpoint.restore(tmp_path, which="latest")
  assert enc.epoch in (2, 3)
  ds = data.load("synthetic", **SMALL)
  assert enc.encode("image", ds.image[:5]).shape == (5, 16)


def test_a_second_process_in_the_same_run_directory_is_refused_and_the_first_is_unharmed(tmp_path):
  args = RUN + ["--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "first.json")]
  first = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  run_dir = tmp_path / "ck" / "fault"
  deadline = time.time() + 300
  while _latest_epoch(run_dir) < 2 and first.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  second = subprocess.run(RUN + ["--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "second.json")],
                          env=ENV, capture_output=True, text=True, timeout=300)
  assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
  assert f"run directory {run_dir} is in use by process {first.pid}" in second.stderr
  assert not (tmp_path / "second.json").exists()
  _, err = first.communicate(timeout=600)
  assert first.returncode == 0, err
  reference = subprocess.run(RUN + ["--checkpoint-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.json")],
                             env=ENV, capture_output=True, text=True, timeout=600)
  assert reference.returncode == 0
  assert json.loads((tmp_path / "first.json").read_text())["map"] == json.loads((tmp_path / "ref.json").read_text())["map"]


_FULL_DISK = """
import resource, runpy, signal, sys
# files may not grow past the limit: writes past it fail with EFBIG, as on a full disk
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
what, limit = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[3:]


def fill_disk():
  resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


# the disk fills up when the first checkpoint is saved, or after training, when the results are written
if what == "results":
  from jxhash.runs import results
  write = results.write
  results.write = lambda *a, **k: (fill_disk(), write(*a, **k))[1]
else:
  from jxhash.checkpoint import CheckpointStore
  save = CheckpointStore._save
  CheckpointStore._save = lambda *a, **k: (fill_disk(), save(*a, **k))[1]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("what", ["results", "checkpoint"])
def test_a_full_disk_leaves_the_previous_files_intact(what, tmp_path):
  out = tmp_path / "r.json"
  args = RUN[1:] + ["--epochs", "2", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(out)]
  _run_ok([sys.executable, *args])
  before_results = out.read_bytes()
  before_checkpoint = checkpoint.restore(tmp_path / "ck" / "fault", which="latest")
  # a results file is a few kB and so is a checkpoint's largest file: 600 bytes stops either
  proc = subprocess.run([sys.executable, "-c", _FULL_DISK, what, "600", *args, "--set", "gamma=0.5", "--overwrite"],
                        env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-2000:]
  # one line, and nothing else: orbax's writer threads' own echoes of the failure (native
  # tracebacks, absl records) are held back while jxhash reports it
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "File too large" in err[0], err
  assert out.read_bytes() == before_results
  after = checkpoint.restore(tmp_path / "ck" / "fault", which="latest") if what == "results" else None
  if what == "checkpoint":
    assert "cannot save the" in err[0] and "previous checkpoint is kept" in err[0]
    # the earlier finished attempt is kept (superseded/, never deleted before a replacement exists)
    kept = checkpoint.restore(tmp_path / "ck" / "fault" / "superseded", which="latest")
    assert kept.epoch == before_checkpoint.epoch == 2
  else:
    assert "run the same command again to evaluate it" in err[0] and after.epoch == 2
  assert not [p for p in tmp_path.rglob("*jxhash-tmp*")], "temporary files left behind"

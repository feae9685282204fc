"""Multi-process runs on localhost: N processes with simulated CPU devices each, through
experiments/run.py and experiments/launch_local.py (docs/multiprocess.md).

- the same final codes as one process with the same total device count (dcmh, mmach, uchm,
  streamed pixels; 2 x 2 and 4 x 1 devices against 1 x 4);
- checkpoints: SIGKILL of every process then --resume ends exactly like an uninterrupted run;
  SIGKILL of one process stops the others within seconds with one line, and the last checkpoint
  restores; only process 0 writes results, run.json and the lock;
- a process that never joins: a bounded wait, then one line naming it, exit code 2;
- processes given other data or flags are refused; streamed pixels: each process reads only
  its own rows of each batch; the launcher's prefixes and stop-the-rest; SLURM-style discovery
  (--distributed) with a faked environment;
- hostile starts and stops, one line each: an unresolvable coordinator host, --distributed
  without a cluster, bad --grace values, SIGTERM to the launcher, a SIGSTOPped process.

Every test that starts processes is in the slow tier; the quick tier checks the flags, the
launcher's commands and prefixes, and what only process 0 does, within one process.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import sys
import time

import numpy as np
import pytest

from jxhash import checkpoint, data
from jxhash import distributed
from jxhash.runs import results
from jxhash.errors import UserError

from conftest import load_script
from jxhash.commands import launch
from jxhash.commands import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the processes' working directory (their default --workdir): outside the checkout
WORK = pathlib.Path(tempfile.mkdtemp(prefix="jxhash-test-work-"))
RUN = ROOT / "experiments" / "run.py"
LAUNCH = ROOT / "experiments" / "launch_local.py"


_table = load_script(ROOT / "experiments" / "multiprocess_table.py")
CASE_DATA, SMALL, case_args = _table.CASE_DATA, _table.SMALL, _table.case_args

# Under pytest-xdist (--dist loadgroup) these tests run in one worker, one after another: each
# starts 2-4 processes with simulated devices, and two such runs at once would compete for the
# cores past the tests' timeouts (and for the free ports they pick).
pytestmark = pytest.mark.xdist_group("multiprocess")

DCMH = case_args("dcmh")
TIMEOUT = 900
# the tests that start processes share one pytest-xdist group (--dist loadgroup): run one at a
# time, they would otherwise compete for the same cores and their timings would mean little
MP = pytest.mark.xdist_group("multiprocess")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("", 0))
    return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
  return dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              PYTHONUNBUFFERED="1", **extra)


def _single(args, devices=4, **kw):
  """run.py as one process with `devices` simulated devices."""
  return subprocess.run([sys.executable, str(RUN), *args], env=_env(devices), cwd=WORK, capture_output=True,
                        text=True, timeout=TIMEOUT, **kw)


def _launch(n, devices, args):
  """experiments/launch_local.py: n processes with `devices` simulated devices each."""
  return subprocess.run([sys.executable, str(LAUNCH), "-n", str(n), "--cpu-devices", str(devices), "--", *args],
                        env=_env(1), cwd=WORK, capture_output=True, text=True, timeout=TIMEOUT)


def _start(n, devices, args, port=None, log_dir=None):
  """n run.py processes started by hand (for killing them): [(Popen, stdout file, stderr file)]."""
  port = port or _free_port()
  procs = []
  for i in range(n):
    out = open(log_dir / f"out{i}.txt", "w") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    err = open(log_dir / f"err{i}.txt", "w") if log_dir else subprocess.DEVNULL  # noqa: SIM115
    cmd = [sys.executable, str(RUN), *args, "--coordinator", f"localhost:{port}", "--num-processes", str(n),
           "--process-id", str(i)]
    procs.append(subprocess.Popen(cmd, env=_env(devices), cwd=WORK, stdout=out, stderr=err))
    if log_dir:  # the child has its own copies
      out.close()
      err.close()
  return procs


def _latest_epoch(run_dir: pathlib.Path) -> int:
  steps = [int(p.name) for p in (run_dir / "latest").glob("*") if p.name.isdigit()]
  return max(steps, default=0)


def _wait_for_epoch(run_dir, epoch, procs, limit=600):
  deadline = time.time() + limit
  while _latest_epoch(run_dir) < epoch and all(p.poll() is None for p in procs) and time.time() < deadline:
    time.sleep(0.01)
  assert _latest_epoch(run_dir) >= epoch, [p.poll() for p in procs]


def _codes(run_dir, ds, which="latest"):
  enc = checkpoint.restore(run_dir, which=which)
  query = ds.query
  return enc.epoch, enc.encode("image", ds.image[query]), enc.encode("text", ds.text[query])


def _only_run_dir(root: pathlib.Path) -> pathlib.Path:
  dirs = [d for d in root.iterdir() if d.is_dir()]
  assert len(dirs) == 1, dirs
  return dirs[0]


def _lines(text):
  return [line for line in text.splitlines() if not line.startswith(("[Gloo]", "[0] [Gloo]", "[1] [Gloo]"))]


# --------------------------------------------------------------------------- two processes like one


@pytest.mark.slow  # subprocesses
@MP
def test_two_processes_train_like_one_with_the_same_devices(tmp_path):
  args = [*DCMH, "--epochs", "3", "--eval-every", "1"]
  two = _launch(2, 2, [*args, "--out", str(tmp_path / "two.json"), "--checkpoint-dir", str(tmp_path / "ck2")])
  assert two.returncode == 0, two.stderr[-3000:]
  one = _single([*args, "--out", str(tmp_path / "one.json"), "--checkpoint-dir", str(tmp_path / "ck1")])
  assert one.returncode == 0, one.stderr[-3000:]
  # every line is prefixed with its process; process 1 says who writes the results
  out = _lines(two.stdout)
  assert all(line.startswith(("[0] ", "[1] ")) for line in out), out
  assert any(line.startswith("[1] ") and "(written by process 0)" in line for line in out)
  assert "4 device(s)" in out[0]
  assert two.stderr.strip().splitlines()[-1] == "launch_local: all 2 processes finished"
  res_two, res_one = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("two", "one"))
  assert res_two["environment"]["num_processes"] == 2 and res_two["environment"]["num_devices"] == 4
  assert res_two["run_name"] == res_one["run_name"] and res_two["selected"] == res_one["selected"]
  for d in ("i2t", "t2i"):
    assert abs(res_two["map"][d] - res_one["map"][d]) < 1e-6
  assert [h.get("val_map") for h in res_two["history"]] == pytest.approx([h.get("val_map") for h in res_one["history"]],
                                                                         abs=1e-6)
  ds = data.load("synthetic", **SMALL)
  run_two, run_one = _only_run_dir(tmp_path / "ck2"), _only_run_dir(tmp_path / "ck1")
  epoch_two, *codes_two = _codes(run_two, ds)
  epoch_one, *codes_one = _codes(run_one, ds)
  assert epoch_two == epoch_one == 3
  for a, b in zip(codes_two, codes_one):
    np.testing.assert_array_equal(a, b)
  assert (run_two / "run.json").is_file() and not list(tmp_path.glob("**/*jxhash-tmp*"))


# --------------------------------------------------------------------------- equality (slow)


@pytest.mark.slow
@MP
@pytest.mark.parametrize("name", ["dcmh", "mmach", "uchm", "pixels"])
def test_final_codes_equal_a_single_process_with_the_same_devices(name, tmp_path):
  args = [*case_args(name), "--epochs", "2", "--eval-every", "0"]
  # four processes on the 2-core CI machine cost a minute per case: the 4 x 1 layout runs for
  # DCMH only; what differs between the methods (stages, buffers, streaming) shows in 2 x 2
  layouts = {(1, 4): None, (2, 2): None, **({(4, 1): None} if name == "dcmh" else {})}
  ds = data.load("synthetic", **CASE_DATA[name])
  for n, k in layouts:
    tag = f"{n}x{k}"
    extra = ["--out", str(tmp_path / f"{tag}.json"), "--checkpoint-dir", str(tmp_path / tag)]
    proc = _single([*args, *extra], devices=k) if n == 1 else _launch(n, k, [*args, *extra])
    assert proc.returncode == 0, (tag, proc.stderr[-3000:])
    res = json.loads((tmp_path / f"{tag}.json").read_text())
    layouts[n, k] = (res["map"], _codes(_only_run_dir(tmp_path / tag), ds))
  base_map, (base_epoch, *base_codes) = layouts[1, 4]
  for layout, (maps, (epoch, *codes)) in layouts.items():
    assert epoch == base_epoch
    for d in ("i2t", "t2i"):
      assert abs(maps[d] - base_map[d]) < 1e-6, (layout, d, maps, base_map)
    for a, b in zip(codes, base_codes):
      # gradients summed over devices in another order differ in the last float bits; such a
      # difference may flip a code bit whose pre-sign value is ~0, but not the ranking metrics
      assert np.mean(a != b) < 1e-3, (layout, np.mean(a != b))


# --------------------------------------------------------------------------- faults (slow)

FAULT = [*DCMH, "--eval-every", "1", "--name", "mp"]


@pytest.mark.slow
@MP
def test_sigkill_of_every_process_then_resume_ends_like_an_uninterrupted_run(tmp_path):
  args = [*FAULT, "--epochs", "24"]
  full = _start(2, 2, [*args, "--checkpoint-dir", str(tmp_path / "full"), "--out", str(tmp_path / "full.json")])
  assert [p.wait(TIMEOUT) for p in full] == [0, 0]
  run_dir = tmp_path / "cut" / "mp"
  cut_args = [*args, "--checkpoint-dir", str(tmp_path / "cut"), "--out", str(tmp_path / "cut.json")]
  kills = []
  for attempt in range(2):
    procs = _start(2, 2, cut_args + (["--resume"] if attempt else []))
    _wait_for_epoch(run_dir, _latest_epoch(run_dir) + 3, procs)
    time.sleep(0.1 * attempt)
    for p in procs:
      p.send_signal(signal.SIGKILL)
    assert [p.wait() for p in procs] == [-signal.SIGKILL] * 2, "the run ended before it could be killed"
    kills.append(_latest_epoch(run_dir))
  assert 0 < kills[0] < kills[1] < 24, kills
  procs = _start(2, 2, cut_args + ["--resume"], log_dir=tmp_path)
  assert [p.wait(TIMEOUT) for p in procs] == [0, 0], (tmp_path / "err0.txt").read_text()[-2000:]
  assert "resumed dcmh from epoch" in (tmp_path / "out1.txt").read_text()
  ds = data.load("synthetic", **SMALL)
  epoch_a, *codes_a = _codes(tmp_path / "full" / "mp", ds)
  epoch_b, *codes_b = _codes(run_dir, ds)
  assert epoch_a == epoch_b == 24
  for a, b in zip(codes_a, codes_b):
    np.testing.assert_array_equal(a, b)
  full_res, cut_res = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("full", "cut"))
  assert full_res["map"] == cut_res["map"] and full_res["selected"] == cut_res["selected"]
  assert not (run_dir / "superseded").exists()


@pytest.mark.slow
@MP
@pytest.mark.parametrize("victim", [1, 0])
def test_sigkill_of_one_process_stops_the_other_with_one_line(victim, tmp_path):
  procs = _start(2, 2, [*FAULT, "--epochs", "500", "--checkpoint-dir", str(tmp_path / "ck"),
                        "--out", str(tmp_path / "r.json")], log_dir=tmp_path)
  run_dir = tmp_path / "ck" / "mp"
  _wait_for_epoch(run_dir, 2, procs)
  procs[victim].send_signal(signal.SIGKILL)
  killed = time.time()
  survivor = procs[1 - victim]
  code = survivor.wait(60)
  elapsed = time.time() - killed
  err = [line for line in (tmp_path / f"err{1 - victim}.txt").read_text().splitlines() if line.strip()]
  assert elapsed < 15, elapsed
  if code == -signal.SIGABRT and victim == 0:
    # process 0 also runs JAX's coordination service: JAX's client in the others notices its
    # end at the same instant as the process link and may abort the process first
    assert any("Terminating process because the JAX distributed service detected fatal errors" in line
               for line in err), err[-5:]
  else:
    assert code == distributed.PEER_EXIT, (code, err[-5:])
    dead = "process 1 stopped unexpectedly" if victim == 1 else "process 0 (the coordinator) stopped unexpectedly"
    line = next(line for line in err if line.startswith("error: "))
    assert line.startswith(f"error: process {1 - victim} stops: {dead}"), err[-5:]
    assert f"in {run_dir} is intact: start every process again to continue" in line
  procs[victim].wait()
  # the last checkpoint restores (its checksum verified), and nothing wrote results
  enc = checkpoint.restore(run_dir, which="latest")
  assert enc.epoch >= 2 and not (tmp_path / "r.json").exists()


@pytest.mark.slow
@MP
def test_a_process_that_never_joins_is_named_after_a_bounded_wait(tmp_path):
  port = _free_port()
  args = [*DCMH, "--no-checkpoint", "--init-timeout", "4", "--coordinator", f"localhost:{port}",
          "--num-processes", "3"]
  first = subprocess.Popen([sys.executable, str(RUN), *args, "--process-id", "0"], env=_env(1), cwd=WORK,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  second = subprocess.Popen([sys.executable, str(RUN), *args, "--process-id", "2"], env=_env(1), cwd=WORK,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  start = time.time()
  outs = [p.communicate(timeout=120) for p in (first, second)]
  assert time.time() - start < 60
  expected = (f"error: process(es) 1 of 3 did not join the coordinator localhost:{port} within 4 s (--init-timeout)")
  for p, (_, err) in zip((first, second), outs):
    assert p.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
  # a process whose coordinator never comes names process 0
  alone = _single([*args[:-1], "2", "--process-id", "1", "--init-timeout", "2"], devices=1)
  assert alone.returncode == 2
  lines = alone.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(f"error: process 0 (the coordinator at localhost:{port}) did not "
                                                 "answer within 2 s"), lines


@pytest.mark.slow
@MP
@pytest.mark.parametrize("case", ["data", "flags", "num_processes"])
def test_processes_started_differently_are_refused_together(case, tmp_path):
  port = _free_port()
  base = [*DCMH, "--no-checkpoint", "--epochs", "1", "--out", str(tmp_path / "r.json"), "--init-timeout", "60",
          "--coordinator", f"localhost:{port}"]
  other = {"data": ["--data-option", "data_seed=7"], "flags": ["--set", "gamma=0.5"], "num_processes": []}[case]
  counts = (2, 3) if case == "num_processes" else (2, 2)
  procs = [subprocess.Popen([sys.executable, str(RUN), *base, *(other if i else []), "--num-processes",
                             str(counts[i]), "--process-id", str(i)], env=_env(1), cwd=WORK,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  expected = {"data": "the synthetic data differ between processes: process(es) 1 loaded other files or options",
              "flags": "process(es) 1 were started with other settings than process 0",
              "num_processes": "process 1 was started with --num-processes 3, process 0 with 2"}[case]
  for p, (_, err) in zip(procs, outs):
    lines = err.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and expected in lines[0], lines
  assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------- data (slow)

_SHARDS = """
import json, sys, types
import numpy as np
from jax.experimental import multihost_utils
from jxhash import distributed
from jxhash.training.streaming import StreamedEpoch
port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
group = distributed.start(f"localhost:{port}", n, pid, timeout=120)
mesh = distributed.make_mesh()
pixels = np.random.default_rng(0).integers(0, 255, (40, 4, 4, 3), dtype=np.uint8)

class Rows:  # a row source that records what it reads
  shape, dtype, ndim, read = pixels.shape, pixels.dtype, 4, []
  def __len__(self): return len(pixels)
  def __getitem__(self, index):
    self.read.extend(np.asarray(index).reshape(-1).tolist()); return pixels[index]

rows = Rows()
epoch = types.SimpleNamespace(mesh=mesh, images=rows, transform=lambda x: x)
batches = np.stack([np.random.default_rng(s).permutation(40)[:32].reshape(4, 8) for s in range(2)])  # (S, steps, bs)
keys = np.zeros((2, 4, 2), np.uint32)
same = True
for t, (index, image, key) in enumerate(StreamedEpoch._batches(epoch, batches, keys)):
  whole = multihost_utils.process_allgather(image, tiled=True)
  same &= bool(np.array_equal(np.asarray(whole), pixels[batches[:, t]]))
print(json.dumps({"read": rows.read, "same": same}))
group.finish()
"""


@pytest.mark.slow
@MP
def test_streamed_batches_read_only_this_process_rows(tmp_path):
  port, n = _free_port(), 2
  procs = [subprocess.Popen([sys.executable, "-c", _SHARDS, str(port), str(i), str(n)], env=_env(2), cwd=WORK,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
  outs = [p.communicate(timeout=300) for p in procs]
  batches = np.stack([np.random.default_rng(s).permutation(40)[:32].reshape(4, 8) for s in range(2)])
  reads = []
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["same"]  # the global batch assembled from every process's rows is the whole batch
    reads.append(got["read"])
  # each process read its half of every batch (its 2 of the 4 devices' rows), together all of it
  assert [len(r) for r in reads] == [batches.size // n] * n
  assert sorted(reads[0] + reads[1]) == sorted(batches.reshape(-1).tolist())


# --------------------------------------------------------------------------- launcher and discovery


@pytest.mark.slow
@MP
def test_launcher_stops_the_rest_when_one_process_dies(tmp_path):
  args = [*FAULT, "--epochs", "500", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "r.json")]
  launcher = subprocess.Popen([sys.executable, str(LAUNCH), "-n", "2", "--cpu-devices", "2", "--", *args],
                              env=_env(1), cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_epoch(tmp_path / "ck" / "mp", 2, [launcher])
  victim = next(pid for pid in _children(launcher.pid) if "--process-id\x001" in _cmdline(pid))
  os.kill(victim, signal.SIGKILL)
  out, err = launcher.communicate(timeout=120)
  assert launcher.returncode == 128 + signal.SIGKILL, err[-2000:]
  lines = err.strip().splitlines()
  assert lines[-1] == "launch_local: process 1 was killed by SIGKILL; process(es) 0 stopped with it", lines[-3:]
  assert any(line.startswith("[0] error: process 0 stops: process 1 stopped unexpectedly") for line in lines)
  assert not [pid for pid in _all_pids() if str(tmp_path) in _cmdline(pid)], "a process outlived the launcher"


# --------------------------------------------------------------------------- hostile starts and stops

HOSTILE_STARTS = [
    # case id, run.py arguments, text the one line must contain; each ends within seconds
    ("host_unresolvable_process_0", ["--coordinator", "nosuchhost.invalid:4321", "--num-processes", "2",
                                     "--process-id", "0"],
     "--coordinator nosuchhost.invalid:4321: the host 'nosuchhost.invalid' cannot be resolved"),
    ("host_unresolvable_process_1", ["--coordinator", "nosuchhost.invalid:4321", "--num-processes", "2",
                                     "--process-id", "1"], "the host 'nosuchhost.invalid' cannot be resolved"),
    ("host_not_a_name", ["--coordinator", "bad..host:4321", "--num-processes", "2", "--process-id", "1"],
     "the host 'bad..host' cannot be resolved"),
    ("distributed_without_a_cluster", ["--distributed"],
     "--distributed: JAX found no cluster environment (SLURM, Open MPI, Cloud TPU) to supply --coordinator, "
     "--num-processes, --process-id"),
    ("heartbeat_timeout_zero", ["--heartbeat-timeout", "0"], "--heartbeat-timeout: must be >= 1"),
]


@pytest.mark.slow  # subprocesses (JAX's distributed runtime cannot start twice in one process)
@MP
@pytest.mark.parametrize("case, argv, message", HOSTILE_STARTS, ids=[c[0] for c in HOSTILE_STARTS])
def test_hostile_start_is_one_line_exit_2_within_seconds(case, argv, message, tmp_path):
  began = time.monotonic()
  proc = _single([*DCMH, "--no-checkpoint", "--out", str(tmp_path / "r.json"), "--init-timeout", "60", *argv],
                 devices=1)
  elapsed = time.monotonic() - began
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
  assert elapsed < 30, elapsed  # checked before any wait: not after --init-timeout's 60 s
  assert not (tmp_path / "r.json").exists()


BAD_GRACE = [("nan", "expected a finite number of seconds >= 0, got 'nan'"),
             ("inf", "expected a finite number of seconds >= 0, got 'inf'"),
             ("-1", "expected a finite number of seconds >= 0, got '-1'"),
             ("1e999", "expected a finite number of seconds >= 0, got '1e999'"),
             ("soon", "expected a number of seconds, got 'soon'")]


@pytest.mark.parametrize("value, message", BAD_GRACE, ids=[c[0] for c in BAD_GRACE])
def test_launcher_refuses_a_bad_grace_in_one_line(value, message, capsys):
  with pytest.raises(SystemExit) as stop:
    launch.launch(["-n", "2", f"--grace={value}", "--", "--method", "dcmh"])
  assert stop.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines == [f"error: argument --grace: {message} (see --help)"], lines


def _launch_until_epoch(tmp_path, extra=(), launcher=()):
  """The launcher with two 2-device processes on a long run, once its first checkpoint is written."""
  args = [*FAULT, "--epochs", "500", "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "r.json"),
          *extra]
  proc = subprocess.Popen([sys.executable, str(LAUNCH), "-n", "2", "--cpu-devices", "2", *launcher, "--", *args],
                          env=_env(1), cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  _wait_for_epoch(tmp_path / "ck" / "mp", 1, [proc])
  return proc


@pytest.mark.slow
@MP
def test_sigterm_to_the_launcher_stops_every_process_with_one_line(tmp_path):
  launcher = _launch_until_epoch(tmp_path)
  children = _children(launcher.pid)
  launcher.send_signal(signal.SIGTERM)
  began = time.monotonic()
  out, err = launcher.communicate(timeout=120)
  # JAX's preemption notifier no longer swallows it: the run stops at once, not after 500 epochs
  assert time.monotonic() - began < 30 and launcher.returncode == 128 + signal.SIGTERM, err[-2000:]
  lines = [line for line in err.strip().splitlines() if "Gloo" not in line]
  assert lines[-1] == ("launch_local: stopped by SIGTERM (passed on to every process): process 0 exited with code "
                       "130, process 1 exited with code 130"), lines[-3:]
  for i in range(2):  # each process stopped as on Ctrl-C, with one line
    assert [line for line in lines if line.startswith(f"[{i}] ")] == [
        line for line in lines if line.startswith(f"[{i}] interrupted: dcmh stopped after")], lines
  assert not [pid for pid in children if _cmdline(pid)], "a process outlived the launcher"
  assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
@MP
def test_a_stopped_process_is_named_by_the_launcher(tmp_path):
  launcher = _launch_until_epoch(tmp_path, extra=["--heartbeat-timeout", "5"], launcher=["--grace", "5"])
  children = _children(launcher.pid)
  victim = next(pid for pid in children if "--process-id\x001" in _cmdline(pid))
  os.kill(victim, signal.SIGSTOP)
  began = time.monotonic()
  out, err = launcher.communicate(timeout=180)
  elapsed = time.monotonic() - began
  lines = err.strip().splitlines()
  # JAX's heartbeats notice the silent process and end process 0 (with JAX's own abort); the
  # launcher blames the stopped process, not the one that ended first
  assert launcher.returncode == 128 + signal.SIGSTOP, lines[-3:]
  assert lines[-1].startswith("launch_local: process 1 was stopped (SIGSTOP or similar") and \
      lines[-1].endswith("stopped answering JAX's heartbeats (run.py --heartbeat-timeout); process(es) 0 ended "
                         "after it"), lines[-1]
  assert elapsed < 60, elapsed
  assert not [pid for pid in children if _cmdline(pid)], "a process outlived the launcher"


def _all_pids():
  return [int(d.name) for d in pathlib.Path("/proc").iterdir() if d.name.isdigit()]


def _children(pid):
  out = []
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid:
      out.append(int(stat.parent.name))
  return out


def _cmdline(pid):
  try:
    return (pathlib.Path("/proc") / str(pid) / "cmdline").read_text()
  except OSError:
    return ""


@pytest.mark.slow
@MP
def test_slurm_style_discovery_with_a_faked_environment(tmp_path):
  """--distributed: the coordinator, process count and id come from SLURM's variables (as JAX
  reads them); the run matches the same run started with explicit flags."""
  port = _free_port()
  args = [*DCMH, "--epochs", "2", "--eval-every", "1", "--no-checkpoint", "--distributed"]
  procs = []
  for i in range(2):
    env = _env(2, SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost", SLURM_NTASKS="2", SLURM_PROCID=str(i),
               SLURM_LOCALID=str(i), JAX_COORDINATOR_PORT=str(port))
    procs.append(subprocess.Popen([sys.executable, str(RUN), *args, "--out", str(tmp_path / "slurm.json")], env=env,
                                  cwd=WORK, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outs = [p.communicate(timeout=TIMEOUT) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:]
  assert "(written by process 0)" in outs[1][0]
  flags = _launch(2, 2, [*args[:-1], "--out", str(tmp_path / "flags.json")])
  assert flags.returncode == 0, flags.stderr[-3000:]
  slurm, explicit = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("slurm", "flags"))
  assert slurm["environment"]["num_processes"] == 2 and slurm["map"] == explicit["map"]


# --------------------------------------------------------------------------- plumbing (quick)


def _args(*argv):
  return train.parse_args(list(argv))


def test_process_flags_are_checked_before_any_work():
  assert train.check_processes(_args()) is None
  assert train.check_processes(_args("--coordinator", "h:1", "--num-processes", "2", "--process-id", "1")) == dict(
      coordinator="h:1", num_processes=2, process_id=1, detect=False, heartbeat_timeout=100)
  assert train.check_processes(_args("--distributed")) == dict(coordinator=None, num_processes=None,
                                                                   process_id=None, detect=True, heartbeat_timeout=100)
  assert train.check_processes(_args("--distributed", "--coordinator", "h:9"))["coordinator"] == "h:9"
  with pytest.raises(UserError, match="need --coordinator host:port, --num-processes N and --process-id i together"):
    train.check_processes(_args("--num-processes", "2"))
  with pytest.raises(UserError, match="expected host:port"):
    train.check_processes(_args("--distributed", "--coordinator", "h"))


def test_launcher_commands_and_environment():
  cmds = launch.commands("py", ["--method", "mmach"], 3, 1234)
  assert cmds[0][-6:] == ["--coordinator", "localhost:1234", "--num-processes", "3", "--process-id", "0"]
  assert cmds[2][:7] == ["py", "-u", "-m", "jxhash", "train", "--method", "mmach"] and cmds[2][-1] == "2"
  assert "--no-progress" not in cmds[0] and "--no-progress" in cmds[1]  # one progress bar
  env = launch.process_env({"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8"}, 2)
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=2"
  assert env["JAX_PLATFORMS"] == "cpu" and env["PYTHONUNBUFFERED"] == "1"
  assert "JAX_PLATFORMS" not in launch.process_env({}, None)


def test_launcher_refuses_flags_it_sets(capsys):
  assert launch.launch(["-n", "2", "--", "--process-id", "1"]) == 2
  assert "the launcher sets --coordinator, --num-processes, --process-id itself; remove --process-id" in \
      capsys.readouterr().err


def test_launcher_prefixes_every_line_and_progress_update(tmp_path):
  import io
  import threading
  source = io.BytesIO(b"first\nbar 1%\rbar 50%\rlast without newline")
  out = io.BytesIO()
  launch._pump(source, out, b"[3] ", threading.Lock())
  assert out.getvalue() == b"[3] first\n[3] bar 1%\r[3] bar 50%\r[3] last without newline\n"


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_launcher_sees_a_stopped_process():
  child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    assert not launch.is_stopped(child.pid)
    child.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not launch.is_stopped(child.pid) and time.monotonic() < deadline:
      time.sleep(0.01)
    assert launch.is_stopped(child.pid)
    child.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while launch.is_stopped(child.pid) and time.monotonic() < deadline:
      time.sleep(0.01)
    assert not launch.is_stopped(child.pid)
  finally:
    child.kill()
    child.wait()
  assert not launch.is_stopped(child.pid)  # gone: not stopped


def test_only_process_0_writes_results(tmp_path, monkeypatch):
  import jax
  path = tmp_path / "r.json"
  path.write_text("not results")
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  results.check_writable(path, {"method": "dcmh"})  # process 1 never reads or writes it
  results.write(tmp_path / "new.json", {"map": 1})
  assert not (tmp_path / "new.json").exists()


def test_only_process_0_locks_and_writes_run_metadata(tmp_path, monkeypatch):
  import jax
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  store = checkpoint.CheckpointStore.open(tmp_path / "run", {"method": "dcmh"})
  try:
    assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / ".lock").exists()
    assert not store.primary
  finally:
    store.close()


def test_local_copy_and_replicate_keep_single_process_values():
  tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int32(4)}
  mesh = distributed.make_mesh()
  placed = distributed.replicate(tree, mesh)
  back = distributed.local_copy(placed)
  np.testing.assert_array_equal(back["a"], tree["a"])
  assert int(back["b"]) == 4
  assert distributed.broadcast_float(0.1) == 0.1 and distributed.differing_processes("ab" * 16) == []
  distributed.agree_on_data(data.load("synthetic", **SMALL))  # one process agrees with itself

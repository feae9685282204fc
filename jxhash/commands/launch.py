"""Start one multi-process jxhash run as N processes on this machine.

    jxhash launch -n 2 -- --method dcmh --bits 16
    jxhash launch -n 4 --cpu-devices 2 -- --method mmach --epochs 20   # 4 x 2 simulated CPU devices

Every process runs `experiments/run.py <args> --coordinator localhost:<port> --num-processes N
--process-id i` (the port is a free one unless --port is given; processes other than 0 get
--no-progress, so that one progress bar is drawn). Each line a process prints is
shown with its id in front ("[1] ..."), stdout on stdout and stderr on stderr. When a process
fails, the others stop by themselves within a second (run.py's process links; they print why);
any still running after --grace seconds are terminated. The launcher then prints one line naming
the process that failed first and exits with its code (128 + N for a signal N); 0 when every
process finished. A process found stopped (SIGSTOP, state T) is named as the cause when JAX's
heartbeat timeout (run.py --heartbeat-timeout) then ends the others; the launcher exits with
128 + SIGSTOP. Ctrl-C (or SIGTERM) is passed on to every process once (each stops as on Ctrl-C),
those still running after --grace seconds are terminated, and the launcher exits with 128 + the
signal's number.

--cpu-devices K simulates K CPU devices per process (JAX_PLATFORMS=cpu and
XLA_FLAGS=--xla_force_host_platform_device_count=K), as the tests do; without it each process
sees the machine's devices as JAX finds them. Runs across several machines, SLURM and Cloud TPU
are started differently: docs/multiprocess.md.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

RUN = ("-m", "jxhash", "train")  # what every process runs
_OWN_FLAGS = ("--coordinator", "--num-processes", "--process-id", "--distributed")
PEER_EXIT = 3  # jxhash.distributed.PEER_EXIT: stopped because another process of the run failed


class _Parser(argparse.ArgumentParser):
  def error(self, message):
    self.exit(2, f"error: {message} (see --help)\n")


def _positive(text):
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def _seconds(text):
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
  if not math.isfinite(value) or value < 0:
    raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
  return value


def parser() -> _Parser:
  p = _Parser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
              usage="%(prog)s -n N [options] -- <experiments/run.py arguments>")
  p.add_argument("-n", "--num-processes", type=_positive, required=True, help="processes to start")
  p.add_argument("--cpu-devices", type=_positive, default=None,
                 help="simulate this many CPU devices per process (JAX_PLATFORMS=cpu)")
  p.add_argument("--port", type=int, default=None, help="coordinator port on localhost (default: a free one)")
  p.add_argument("--grace", type=_seconds, default=30.0,
                 help="seconds the other processes get to stop by themselves after one fails (default 30)")
  p.add_argument("--python", default=sys.executable, help="the Python that runs run.py (default: this one)")
  return p


def free_port() -> int:
  """A TCP port that was free a moment ago (bound to port 0 and released)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("", 0))
    return s.getsockname()[1]


def process_env(base: dict, cpu_devices: int | None) -> dict:
  """The environment of every process: unbuffered output, and simulated CPU devices if asked."""
  env = dict(base, PYTHONUNBUFFERED="1")
  if cpu_devices is not None:
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={cpu_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
  return env


def commands(python: str, run_args: list, num_processes: int, port: int) -> list[list[str]]:
  """The command line of each process (only process 0 draws a progress bar)."""
  quiet = [] if "--no-progress" in run_args else ["--no-progress"]
  return [[python, "-u", *RUN, *run_args, *(quiet if i else []), "--coordinator", f"localhost:{port}",
           "--num-processes", str(num_processes), "--process-id", str(i)] for i in range(num_processes)]


def _die_with_parent():
  """In the child: get SIGTERM when the launcher dies, even by SIGKILL (Linux only)."""
  try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except Exception:  # noqa: BLE001 - not Linux: the children simply outlive a killed launcher
    pass


def _pump(stream, out, prefix: bytes, lock: threading.Lock) -> None:
  """Copy `stream` to `out` with `prefix` before every line (a '\\r' of a progress bar too)."""
  pending = b""
  while True:
    chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
    if not chunk:
      break
    pending += chunk
    start = 0
    for i, byte in enumerate(pending):
      if byte in (10, 13):  # \n, \r
        with lock:
          out.write(prefix + pending[start:i + 1])
          out.flush()
        start = i + 1
    pending = pending[start:]
  if pending:
    with lock:
      out.write(prefix + pending + b"\n")
      out.flush()


def is_stopped(pid: int) -> bool:
  """Whether process `pid` is stopped by a signal (Linux: state T in /proc; elsewhere never)."""
  try:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return False
  return stat.rsplit(")", 1)[-1].split()[:1] == ["T"]


def _describe(code: int) -> str:
  if code < 0:
    try:
      return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"was killed by signal {-code}"
  return f"exited with code {code}"


def launch(argv=None) -> int:
  if argv is None:
    argv = sys.argv[1:]
  if "--" in argv:
    cut = argv.index("--")
    own, run_args = argv[:cut], argv[cut + 1:]
  else:
    own, run_args = argv, []
  args = parser().parse_args(own)
  taken = [f for f in run_args if f.split("=", 1)[0] in _OWN_FLAGS]
  if taken:
    print(f"error: the launcher sets {', '.join(_OWN_FLAGS[:3])} itself; remove {', '.join(taken)} from the "
          "run.py arguments", file=sys.stderr)
    return 2
  if args.port is not None and not 0 < args.port < 65536:
    print(f"error: --port {args.port}: expected 1..65535", file=sys.stderr)
    return 2
  port = args.port or free_port()
  env = process_env(os.environ, args.cpu_devices)
  n = args.num_processes
  procs = []
  try:
    for cmd in commands(args.python, run_args, n, port):
      procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent))
  except OSError as e:
    for p in procs:
      p.kill()
    print(f"error: cannot start {args.python}: {e.strerror or e}", file=sys.stderr)
    return 2
  lock = threading.Lock()
  pumps = []
  for i, p in enumerate(procs):
    prefix = f"[{i}] ".encode()
    for stream, out in ((p.stdout, sys.stdout.buffer), (p.stderr, sys.stderr.buffer)):
      t = threading.Thread(target=_pump, args=(stream, out, prefix, lock), daemon=True)
      t.start()
      pumps.append(t)

  signals = []

  def forward(signum, frame):
    signals.append(signum)
    for p in procs:  # the first signal is passed on; a second one ends the processes at once
      if p.poll() is None and len(signals) == 1:
        p.send_signal(signum)
      elif p.poll() is None:
        p.kill()

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  first = None  # (process id, exit code) of the first process that failed
  stopped = {}  # process id -> time (launcher clock) it was first seen stopped
  culprit = None  # a process found stopped when the first failure came: the cause
  begun = time.monotonic()
  stop_at = None
  try:
    while any([p.poll() is None for p in procs]):
      now = time.monotonic()
      for i, p in enumerate(procs):
        if i not in stopped and p.returncode is None and is_stopped(p.pid):
          stopped[i] = now
      failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
      if first is None and failed:
        # a process that its run stopped (exit code 3) is an echo: name the cause if it is there
        first = next((f for f in failed if f[1] != PEER_EXIT), failed[0])
        stop_at = now + args.grace
        still = [i for i in sorted(stopped, key=stopped.get) if procs[i].poll() is None and is_stopped(procs[i].pid)]
        culprit = still[0] if still else None
        for i in still:  # a stopped process cannot stop by itself
          procs[i].kill()
      if signals and stop_at is None:
        stop_at = now + args.grace
      if stop_at is not None and now > stop_at:
        _terminate(procs)
      time.sleep(0.05)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  for t in pumps:
    t.join(timeout=5)
  codes = [p.returncode for p in procs]
  if signals:
    name = signal.Signals(signals[0]).name
    ends = ", ".join(f"process {i} {_describe(c)}" for i, c in enumerate(codes))
    print(f"launch_local: stopped by {name} (passed on to every process): {ends}", file=sys.stderr)
    return 128 + signals[0]
  if first is None:
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    first = next((f for f in failed if f[1] != PEER_EXIT), failed[0] if failed else None)
  if first is None:
    print(f"launch_local: all {n} processes finished", file=sys.stderr)
    return 0
  if culprit is not None:
    # JAX's heartbeat timeout ends the processes that still run; the cause is the stopped one
    others = [j for j, c in enumerate(codes) if j != culprit and c != 0]
    tail = f"; process(es) {', '.join(map(str, others))} ended after it" if others else ""
    print(f"launch_local: process {culprit} was stopped (SIGSTOP or similar, found {stopped[culprit] - begun:.1f} s "
          f"after the start) and stopped answering JAX's heartbeats (run.py --heartbeat-timeout){tail}",
          file=sys.stderr)
    return 128 + signal.SIGSTOP
  i, code = first
  others = [j for j, c in enumerate(codes) if j != i and c != 0]
  tail = f"; process(es) {', '.join(map(str, others))} stopped with it" if others else ""
  print(f"launch_local: process {i} {_describe(code)}{tail}", file=sys.stderr)
  return 128 - code if code < 0 else code


def _terminate(procs) -> None:
  """SIGTERM (and SIGCONT, for a stopped one) to every process still running; SIGKILL 5 s later."""
  for p in procs:
    if p.poll() is None:
      p.terminate()
      p.send_signal(signal.SIGCONT)
  deadline = time.monotonic() + 5
  for p in procs:
    try:
      p.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      p.kill()


main = launch  # the entry point of `jxhash launch`


if __name__ == "__main__":
  sys.exit(launch())

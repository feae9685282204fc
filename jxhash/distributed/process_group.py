"""Joining a multi-process run: what jxhash adds to `jax.distributed.initialize`.

Interface (experiments/run.py uses exactly this; docs/multiprocess.md):
  group = start(coordinator, num_processes, process_id, timeout=..., heartbeat_timeout=...)
  current_group()          the group `start` made in this process (None in a single process)
  group.hint = callable    text appended to the line printed when the run stops (run.py: the last checkpoint)
  group.finish()           this process ends normally
  group.fail(reason)       this process stops on an error: every other process stops with one line
  group.peers_finished()   whether every other process has finished normally
  group.wait_for_peers(s)  give the watchdog `s` seconds to name a lost peer first

What JAX 0.10 gives and what it lacks (measured with two local CPU processes; the numbers and the
experiments are in docs/multiprocess.md):
- `initialization_timeout` bounds the wait for a missing process, but ends in `abort()`: exit code
  134, a C++ stack dump, "another task died", and no word of which process is missing. So every
  process first meets process 0 on the coordinator's port (`_gather`, `_join`): a missing
  process, mismatched --num-processes and a taken id are each one line (exit code 2), and
  `jax.distributed.initialize` starts only once everyone is there.
- An unresolvable coordinator host also ends in that abort: it is resolved here first.
- Its heartbeats (`heartbeat_timeout_seconds`) are the only detector of a process that is alive
  but stopped (SIGSTOP, a hung host), and they are used for that; they end every process with
  the same abort, so the launcher (experiments/launch_local.py) names the stopped process.
- A killed or failed process is noticed sooner and more clearly by the links kept from the
  meeting (`ProcessGroup`): the kernel closes a dead process's sockets at once, and a process
  that fails sends its reason, which the others print in one line.
- Its preemption notifier takes SIGTERM and ignores it (the run goes on): `start` turns it off
  (`jax_enable_preemption_service`, a public config option) and makes SIGTERM stop the run the
  way Ctrl-C does.
- With `detect` (SLURM, Open MPI, Cloud TPU) JAX's own cluster detection supplies what is left
  out; there the cluster manager starts and stops the processes, and only JAX's runtime watches
  them (no meeting, no links).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time

import jax

from jxhash.errors import UserError

logger = logging.getLogger(__name__)

# exit code of a process stopped because another process of its run died or failed
PEER_EXIT = 3
HEARTBEAT_TIMEOUT = 100  # JAX's default, seconds

_GROUP: "ProcessGroup | None" = None
_HELLO = "jxhash-join"
_POLL_S = 0.5
_ECHO_S = 1.0
# how long a failing process waits for its watchdog to name a peer whose link just closed: a
# collective or a checkpoint save fails at the same instant as the dead peer's link
_LOST_S = 1.0


def current_group() -> "ProcessGroup | None":
  """The `ProcessGroup` that `start` made in this process, if any."""
  return _GROUP


def start(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
          timeout: int = 300, heartbeat_timeout: int = HEARTBEAT_TIMEOUT, detect: bool = False) -> "ProcessGroup":
  """Join a multi-process run: meet every process, then start JAX's distributed runtime.

  Process 0 listens on the coordinator's port until all `num_processes` processes have joined;
  after `timeout` seconds it gives up with a UserError naming the process ids that never came
  (the others that did join get the same message); a process that cannot reach process 0 in
  that time names process 0. Then the port is handed to `jax.distributed.initialize` and the
  connections stay open as the run's links (`ProcessGroup`).

  Args:
    coordinator: "host:port" of process 0.
    num_processes, process_id: the run's size and this process's index.
    timeout: seconds to wait for the others (the meeting, then JAX's own start).
    heartbeat_timeout: seconds without a heartbeat after which JAX declares a process dead and
      ends every process (JAX's default is 100).
    detect: let `jax.distributed.initialize` take what the three arguments leave unset from the
      cluster environment (SLURM, Open MPI, Cloud TPU); no meeting and no links then.

  Raises:
    UserError: a process missing after `timeout`, mismatched --num-processes, two processes with
      one id, an unusable or unresolvable coordinator address, or no cluster found with `detect`.
  """
  global _GROUP
  if _GROUP is not None:
    raise RuntimeError("start was already called in this process")
  host, port = _split_address(coordinator) if coordinator is not None else (None, None)
  if host is not None:
    _resolve(host, port, coordinator)
  if detect:
    links, known = {}, (coordinator, num_processes, process_id)
  else:
    deadline = time.monotonic() + timeout
    if process_id == 0:
      links = _gather(port, num_processes, timeout, deadline, coordinator)
    else:
      links = {0: _join(host, port, num_processes, process_id, timeout, deadline, coordinator)}
    known = (coordinator, num_processes, process_id)
  group = ProcessGroup(process_id, num_processes, links)
  # JAX's preemption notifier would swallow SIGTERM (a launcher's or a scheduler's stop)
  jax.config.update("jax_enable_preemption_service", False)
  try:
    jax.distributed.initialize(*known, initialization_timeout=timeout, heartbeat_timeout_seconds=heartbeat_timeout)
  except Exception as e:  # noqa: BLE001 - the runtime raises several types for a failed start
    group.fail(f"JAX's distributed runtime did not start: {type(e).__name__}")
    first = " ".join(str(e).split())[:300]
    if detect and None in known:
      missing = [flag for flag, v in zip(("--coordinator", "--num-processes", "--process-id"), known) if v is None]
      raise UserError(f"--distributed: JAX found no cluster environment (SLURM, Open MPI, Cloud TPU) to supply "
                      f"{', '.join(missing)}, or could not read it ({type(e).__name__}: {first}); give them on the "
                      "command line") from e
    raise UserError(f"multi-process start failed at {coordinator} ({type(e).__name__}: {first})") from e
  if threading.current_thread() is threading.main_thread():
    # stop as on Ctrl-C (one line, exit code 130): SIGTERM is passed on as SIGINT, so that whatever
    # holds Ctrl-C back (a checkpoint save, jxhash.checkpoint) holds it back too
    signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
  _GROUP = group
  return group


def initialize_distributed(*, timeout: int = 300, heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
                           **kwargs) -> "ProcessGroup":
  """`start` under the keyword names of `jax.distributed.initialize` (coordinator_address,
  num_processes, process_id); the cluster environment supplies whatever is left out."""
  coordinator = kwargs.pop("coordinator_address", None)
  num_processes, process_id = kwargs.pop("num_processes", None), kwargs.pop("process_id", None)
  if kwargs:
    raise TypeError(f"unexpected arguments {sorted(kwargs)}")
  detect = None in (coordinator, num_processes, process_id)
  return start(coordinator, num_processes, process_id, timeout=timeout, heartbeat_timeout=heartbeat_timeout,
               detect=detect)


def _split_address(address: str) -> tuple[str, int]:
  host, sep, port = (address or "").rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f"coordinator {address!r}: expected host:port with a port in 1..65535")
  return host.strip("[]"), int(port)


def _resolve(host: str, port: int, address: str) -> None:
  """Refuse a coordinator host that does not resolve (JAX would abort on it after its timeout)."""
  try:
    socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
  except (socket.gaierror, UnicodeError) as e:
    reason = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
    raise UserError(f"--coordinator {address}: the host {host!r} cannot be resolved ({reason}); give process 0's "
                    "host name or IP address") from e


def _ids(ids) -> str:
  return ", ".join(str(i) for i in ids)


def _keepalive(sock: socket.socket) -> None:
  """TCP keepalive: a host that vanishes without closing its connections is noticed in ~25 s."""
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
  for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
    if hasattr(socket, name):
      sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _send(sock: socket.socket, line: str) -> None:
  try:
    sock.sendall((" ".join(line.split()) + "\n").encode("utf-8"))
  except OSError:
    pass  # the other side is gone; its own link reports that


def _read_line(sock: socket.socket, deadline: float) -> str | None:
  """One line from `sock` before `deadline` (None: timeout or closed)."""
  buf = b""
  while not buf.endswith(b"\n"):
    left = deadline - time.monotonic()
    if left <= 0:
      return None
    sock.settimeout(left)
    try:
      chunk = sock.recv(1)
    except (OSError, socket.timeout):
      return None
    if not chunk:
      return None
    buf += chunk
    if len(buf) > 4096:
      return None
  return buf.decode("utf-8", "replace").strip()


def _listen(port: int, address: str) -> socket.socket:
  try:
    if socket.has_dualstack_ipv6():
      return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=False)
    return socket.create_server(("", port))
  except OSError as e:
    raise UserError(f"--coordinator {address}: process 0 cannot listen on port {port} ({e.strerror or e}); "
                    "choose a free port") from e


def _gather(port: int, num_processes: int, timeout: int, deadline: float, address: str) -> dict:
  """Process 0: accept every other process's hello, or fail naming the ones that never came."""
  server = _listen(port, address)
  joined: dict[int, socket.socket] = {}
  told = False
  try:
    while len(joined) < num_processes - 1:
      left = deadline - time.monotonic()
      if left <= 0:
        missing = sorted(set(range(1, num_processes)) - set(joined))
        message = (f"process(es) {_ids(missing)} of {num_processes} did not join the coordinator {address} within "
                   f"{timeout} s (--init-timeout); start every process with the same --coordinator and "
                   f"--num-processes {num_processes}")
        for sock in joined.values():
          _send(sock, f"abort {message}")
        raise UserError(message)
      if not told and timeout - left >= 5:
        logger.info("waiting for process(es) %s of %d to join %s (up to %d s)",
                    _ids(sorted(set(range(1, num_processes)) - set(joined))), num_processes, address, timeout)
        told = True
      ready, _, _ = select.select([server], [], [], min(left, _POLL_S))
      if not ready:
        continue
      try:
        sock, _ = server.accept()
      except OSError:
        continue
      hello = _read_line(sock, min(deadline, time.monotonic() + 10))
      parts = (hello or "").split()
      if len(parts) != 3 or parts[0] != _HELLO or not parts[1].isdigit() or not parts[2].isdigit():
        sock.close()  # not one of ours (a port scanner, another program): keep waiting
        continue
      pid, count = int(parts[1]), int(parts[2])
      if count != num_processes:
        message = (f"process {pid} was started with --num-processes {count}, process 0 with {num_processes}; "
                   "start every process with the same --num-processes")
        for other in [sock, *joined.values()]:
          _send(other, f"abort {message}")
        raise UserError(message)
      if pid in joined or not 0 < pid < num_processes:
        _send(sock, f"abort process id {pid} " + ("is already taken by another process" if pid in joined else
                                                  f"is outside 1..{num_processes - 1}"))
        sock.close()
        continue
      _keepalive(sock)
      joined[pid] = sock
    for sock in joined.values():
      _send(sock, "go")
    return joined
  except BaseException:
    for sock in joined.values():
      sock.close()
    raise
  finally:
    server.close()  # the accepted links stay open; JAX's coordination service takes the port next


def _join(host: str, port: int, num_processes: int, process_id: int, timeout: int, deadline: float,
          address: str) -> socket.socket:
  """Any other process: reach process 0 (retrying until `deadline`) and wait for its go."""
  sock = None
  while sock is None:
    left = deadline - time.monotonic()
    if left <= 0:
      raise UserError(f"process 0 (the coordinator at {address}) did not answer within {timeout} s "
                      f"(--init-timeout): start process 0 with --coordinator {address} --num-processes "
                      f"{num_processes} --process-id 0, and check that this host can reach it")
    try:
      sock = socket.create_connection((host, port), timeout=min(left, 5))
    except OSError:
      time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
  _keepalive(sock)
  _send(sock, f"{_HELLO} {process_id} {num_processes}")
  # process 0 answers by the deadline: go, or the reason it gave up (allow for its own delay)
  reply = _read_line(sock, deadline + 30)
  if reply == "go":
    return sock
  sock.close()
  if reply and reply.startswith("abort "):
    raise UserError(reply[len("abort "):])
  raise UserError(f"the coordinator at {address} closed the connection without starting the run (it may be "
                  "another program, or process 0 stopped)")


class ProcessGroup:
  """The links between the processes of one run; a watchdog thread per link.

  Process 0 holds a link to every other process, the others one link to process 0. When a
  link closes before its process said goodbye (SIGKILL, a crash, a lost host: TCP keepalive
  notices those in about 25 s) or reports a failure, the watchdog prints one line naming the
  process and the cause on stderr and ends this process with exit code `PEER_EXIT` (3),
  without waiting in the collective the others will never join; process 0 first relays the
  cause to the others. `hint`, when set, returns text appended to that line (run.py names
  the last checkpoint there). Without links (`start(detect=True)`) every method but `hint`
  does nothing: JAX's heartbeats and the cluster manager watch the processes.

  The process's own end goes through `finish()` (a normal end) or `fail(reason)` (it stops
  with an error): from then on its watchdog stays silent.
  """

  def __init__(self, process_id: int | None, num_processes: int | None, links: dict):
    self.process_id, self.num_processes = process_id, num_processes
    self.hint = None
    self._links = links
    self._lock = threading.Lock()
    self._closing = False
    self._finished: set[int] = set()
    self._lost = threading.Event()  # a link closed without a goodbye: the watchdog is stopping the process
    for pid, sock in links.items():
      sock.settimeout(None)
      threading.Thread(target=self._watch, args=(pid, sock), daemon=True, name=f"jxhash-link-{pid}").start()

  def finish(self) -> None:
    """This process ends normally: tell the others, so that its exit is not a failure."""
    if self._close():
      for sock in self._links.values():
        _send(sock, "bye")

  def fail(self, reason: str) -> None:
    """This process stops with `reason`: the others stop too (process 0 tells them directly,
    another process through process 0).

    If a link closes unexpectedly within a second, `reason` is taken for its echo (a collective
    or a save that failed because that process died): the watchdog names the dead process and
    ends this one instead.
    """
    if self._links and not self._closing and self._lost.wait(_LOST_S):
      while True:  # the watchdog ends the process (os._exit)
        time.sleep(1)
    if self._close():
      for sock in self._links.values():
        _send(sock, f"stop process {self.process_id} failed: {reason}" if self.process_id == 0 else f"fail {reason}")

  def peers_finished(self) -> bool:
    """Whether every link's other end has said goodbye (process 0: every other process)."""
    with self._lock:
      return self._finished >= set(self._links)

  def wait_for_peers(self, seconds: float) -> None:
    """Give the watchdog `seconds` to report a lost peer (it then ends the process itself):
    for an error that may be the consequence of one, such as a failed collective."""
    if self._links:
      time.sleep(seconds)

  def _close(self) -> bool:
    with self._lock:
      if self._closing:
        return False
      self._closing = True
      return True

  def _watch(self, pid: int, sock: socket.socket) -> None:
    reader = sock.makefile("r", encoding="utf-8", errors="replace")
    reason = None
    try:
      for line in reader:
        kind, _, text = line.strip().partition(" ")
        if kind == "bye":
          with self._lock:
            self._finished.add(pid)
          return
        if kind == "fail":
          reason = f"process {pid} failed: {text}"
          break
        if kind == "stop":
          reason = text
          break
    except (OSError, ValueError):
      pass
    if reason is None:
      self._lost.set()
      reason = (f"process {pid} stopped unexpectedly (killed, crashed or its host lost)" if pid else
                "process 0 (the coordinator) stopped unexpectedly (killed, crashed or its host lost)")
    else:
      # a moment for this process to end on its own first: when every process meets the same
      # error (data that differ, say), each should report that error, not the others' echo
      time.sleep(_ECHO_S)
    self._stop(reason, origin=pid)

  def _stop(self, reason: str, origin: int) -> None:
    if not self._close():
      return  # this process is already ending on its own
    for pid, sock in self._links.items():
      if pid != origin:
        _send(sock, f"stop {reason}")
    hint = None
    if self.hint is not None:
      try:
        hint = self.hint()
      except Exception:  # noqa: BLE001 - a hint must never keep the process from stopping
        hint = None
    try:
      sys.stdout.flush()
    except Exception:  # noqa: BLE001
      pass
    sys.stderr.write(f"error: process {self.process_id} stops: {reason}" + (f"; {hint}" if hint else "") + "\n")
    sys.stderr.flush()
    os._exit(PEER_EXIT)

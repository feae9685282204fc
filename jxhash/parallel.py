"""Device mesh and sharding: one `data` axis over all devices, batches split on it.

Parameters, optimiser states and the training buffers are replicated; each step's batch
rows are sharded over the `data` axis, so the same jitted program runs on one CPU, several
GPUs or a TPU slice, and XLA inserts the gradient all-reduce. The mesh uses `AxisType.Auto`
(GSPMD propagation): `jax.make_mesh` now defaults to explicit axes, under which replicated
parameters times a sharded batch is an ambiguous contraction.

Multi-process runs (docs/multiprocess.md): every process calls `start(...)` before anything
else touches JAX. It waits (boundedly) for all processes to join, starts JAX's distributed
runtime, and keeps a link from process 0 to every other process that stops the whole run with
one line when a process dies or fails (`ProcessGroup`). `jax.devices()` then lists every
process's devices and the mesh spans them. Host values become global arrays without any
collective (`replicate`, `global_array`: each process places the pieces its own devices hold,
from a value every process computed identically); `local_copy` turns a replicated global array
back into this process's copy, for work that is not collective (evaluation, results).

Length (over 400 lines): the mesh, the single-process sharding helpers and the multi-process
group (rendezvous with a bounded wait, the watchdog, agreement checks) share the process and
device bookkeeping; splitting the group out would make both halves import each other.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jxhash.errors import UserError

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
# exit code of a process stopped because another process of its run died or failed
PEER_EXIT = 3


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicate(tree, mesh: jax.sharding.Mesh):
  """Place every leaf of `tree` on all devices of `mesh`.

  With several processes every process must pass the same values (they are not compared):
  each places its own devices' copies, so no collective runs (`jax.device_put` would compare
  the values across processes with one, per call).
  """
  sharding = NamedSharding(mesh, P())
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: global_array(x, sharding), tree)


def global_array(x, sharding: jax.sharding.Sharding) -> jax.Array:
  """A global array with `sharding` from a host value every process holds whole.

  Each process reads only the pieces its own devices hold; nothing is exchanged between
  processes. A global array already on the sharding's devices is resharded instead.
  """
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: np.asarray(host[index]))


def local_copy(tree):
  """`tree` with every replicated global array replaced by this process's copy of it.

  Single-process trees come back unchanged. Work on the result is local to this process (no
  collective), so processes may do it or skip it independently.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if not x.sharding.is_fully_replicated:
        raise ValueError(f"local_copy needs replicated arrays, got sharding {x.sharding}")
      return x.addressable_data(0)
    return x
  return jax.tree.map(one, tree)


def shard_rows(x: jax.Array, mesh: jax.sharding.Mesh) -> jax.Array:
  """Inside jit: constrain the leading (batch) axis of `x` to be split over the data axis.

  Left unconstrained when the batch does not divide evenly over the devices (XLA then
  chooses), so odd batch sizes still run, only less evenly.
  """
  size = mesh.shape[DATA_AXIS]
  if size == 1 or x.ndim == 0 or x.shape[0] % size:
    return x
  spec = P(DATA_AXIS, *([None] * (x.ndim - 1)))
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def devices() -> list:
  """Every device of every process (what the mesh spans)."""
  return jax.devices()


def is_primary() -> bool:
  """Whether this is process 0, the one that writes results, run metadata and locks."""
  return jax.process_index() == 0


# --------------------------------------------------------------------------- agreement


def barrier(name: str) -> None:
  """Wait until every process gets here (nothing to do with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def broadcast_float(value: float) -> float:
  """Process 0's `value` on every process, exactly (a float64 sent as its 8 bytes)."""
  if jax.process_count() == 1:
    return float(value)
  from jax.experimental import multihost_utils
  raw = np.frombuffer(np.float64(value).tobytes(), np.uint8)
  out = np.asarray(multihost_utils.broadcast_one_to_all(raw), np.uint8)
  return float(np.frombuffer(out.tobytes(), np.float64)[0])


def differing_processes(digest: str) -> list[int]:
  """Ids of the processes whose hex `digest` differs from process 0's (every process gets the
  same list, so all of them can refuse together)."""
  if jax.process_count() == 1:
    return []
  from jax.experimental import multihost_utils
  mine = np.frombuffer(bytes.fromhex(digest), np.uint8)
  everyone = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
  return [p for p in range(1, everyone.shape[0]) if not np.array_equal(everyone[p], everyone[0])]


def broadcast_text(text: str, length: int) -> str:
  """Process 0's ASCII `text` (exactly `length` characters) on every process."""
  if jax.process_count() == 1:
    return text
  from jax.experimental import multihost_utils
  raw = np.frombuffer(text.encode("ascii").ljust(length)[:length], np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(raw), np.uint8).tobytes().decode("ascii")


def data_digest(data) -> str:
  """Hex digest of what a dataset holds, independent of where its files lie.

  `CrossModalData.fingerprint` also covers a lazy image source's path and mtime, which differ
  between hosts holding copies of the same files; this covers the content only: text, labels,
  the split indices, the split details, and the image (every row in memory; a lazy source's
  shape, dtype and the fingerprint's sample rows).
  """
  from jxhash.data.core import SPLITS, hash_arrays, read_rows, sample_rows
  if isinstance(data.image, np.ndarray):
    named = [("image", data.image)]
  else:
    rows = sample_rows(len(data.image))
    named = [("image rows", rows), ("image sample", read_rows(data.image, rows))]
  named += [("text", data.text), ("labels", data.labels)] + [(s, getattr(data, s)) for s in SPLITS]
  split = {k: v for k, v in data.split_info.items() if k != "files"}
  extra = {"name": data.name, "image shape": list(data.image.shape), "image dtype": str(np.dtype(data.image.dtype)),
           "split": json.loads(json.dumps(split, default=str))}
  return hash_arrays(named, extra)


def agree_on_data(data) -> None:
  """Refuse (UserError, on every process) data that differ between processes; then name the
  run after process 0's files.

  Hosts may hold copies of the same files at other paths or with other modification times:
  those change `data.fingerprint()` (part of the run's identity and name) but not the data.
  Once the content is known to be equal, every process adopts process 0's fingerprint, so
  that all of them compute the same run name and checkpoint identity.
  """
  if jax.process_count() == 1:
    return
  differ = differing_processes(data_digest(data))
  if differ:
    raise UserError(f"the {data.name} data differ between processes: process(es) {_ids(differ)} loaded other "
                    "files or options than process 0; every process must read the same dataset (same files, "
                    "--data-option, --split and --split-seed; docs/multiprocess.md)")
  fingerprint = data.fingerprint()
  agreed = broadcast_text(fingerprint, len(fingerprint))
  if agreed != fingerprint:
    # the fingerprint is a cache the frozen dataclass sets once (jxhash.data.core); the content
    # was just compared, only the files' paths or mtimes differ
    object.__setattr__(data, "_fingerprint", agreed)


def _ids(ids) -> str:
  return ", ".join(str(i) for i in ids)


# --------------------------------------------------------------------------- starting processes

_GROUP: "ProcessGroup | None" = None
_HELLO = "jxhash-join"
_POLL_S = 0.5
_ECHO_S = 1.0


def current_group() -> "ProcessGroup | None":
  """The `ProcessGroup` that `start` made in this process, if any."""
  return _GROUP


def start(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
          timeout: int = 300, detect: bool = False) -> "ProcessGroup":
  """Join a multi-process run: wait for every process, start JAX's distributed runtime.

  Process 0 listens on the coordinator's port until all `num_processes` processes have
  joined; after `timeout` seconds it gives up with a UserError naming the process ids that
  never came (the others that did join get the same message); a process that cannot reach
  process 0 in that time names process 0. Then the port is handed to
  `jax.distributed.initialize` and the connections stay open as the run's liveness links
  (`ProcessGroup`).

  Args:
    coordinator: "host:port" of process 0.
    num_processes, process_id: the run's size and this process's index.
    timeout: seconds to wait for the others (the rendezvous, then JAX's own start).
    detect: take what the three arguments leave unset from the cluster environment (SLURM,
      Open MPI, Cloud TPU, Kubernetes, as `jax.distributed.initialize` detects it).

  Raises:
    UserError: a process missing after `timeout`, mismatched --num-processes, two processes
      with one id, an unusable coordinator address, or no cluster found with `detect`.
  """
  global _GROUP
  if _GROUP is not None:
    raise RuntimeError("parallel.start was already called in this process")
  local_device_ids = None
  if detect:
    coordinator, num_processes, process_id, local_device_ids = _detect(coordinator, num_processes, process_id, timeout)
  host, port = _split_address(coordinator)
  deadline = time.monotonic() + timeout
  if process_id == 0:
    links = _gather(port, num_processes, timeout, deadline, coordinator)
  else:
    links = {0: _join(host, port, num_processes, process_id, timeout, deadline, coordinator)}
  group = ProcessGroup(process_id, num_processes, links)
  try:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids, initialization_timeout=timeout)
  except Exception as e:  # noqa: BLE001 - the runtime raises several types for a failed start
    group.fail(f"JAX's distributed runtime did not start: {type(e).__name__}")
    first = " ".join(str(e).split())[:300]
    raise UserError(f"multi-process start failed after all {num_processes} processes joined {coordinator} "
                    f"({type(e).__name__}: {first})") from e
  _GROUP = group
  return group


def initialize_distributed(*, timeout: int = 300, **kwargs) -> "ProcessGroup":
  """`start` under the keyword names of `jax.distributed.initialize` (coordinator_address,
  num_processes, process_id); the cluster environment supplies whatever is left out."""
  coordinator = kwargs.pop("coordinator_address", None)
  num_processes, process_id = kwargs.pop("num_processes", None), kwargs.pop("process_id", None)
  if kwargs:
    raise TypeError(f"unexpected arguments {sorted(kwargs)}")
  detect = None in (coordinator, num_processes, process_id)
  return start(coordinator, num_processes, process_id, timeout=timeout, detect=detect)


def _detect(coordinator, num_processes, process_id, timeout):
  """The run's coordinator, size, index and local device ids from the cluster environment."""
  try:
    from jax._src import clusters
    found = clusters.ClusterEnv.auto_detect_unset_distributed_params(
        coordinator, num_processes, process_id, None, None, timeout)
  except (ImportError, AttributeError, TypeError) as e:  # a JAX whose private detection moved
    raise UserError(f"--distributed: this JAX ({jax.__version__}) does not expose its cluster detection "
                    f"({type(e).__name__}); give --coordinator, --num-processes and --process-id") from e
  except Exception as e:  # noqa: BLE001 - a detector that found its cluster but failed (e.g. TPU metadata)
    raise UserError(f"--distributed: the cluster environment could not be read ({type(e).__name__}: "
                    f"{' '.join(str(e).split())[:200]})") from e
  coordinator, num_processes, process_id, local_device_ids = found
  missing = [flag for flag, v in (("--coordinator", coordinator), ("--num-processes", num_processes),
                                  ("--process-id", process_id)) if v is None]
  if missing:
    raise UserError(f"--distributed: no cluster environment found (SLURM, Open MPI, Cloud TPU, Kubernetes) to "
                    f"supply {', '.join(missing)}; give them on the command line")
  if not 0 <= process_id < num_processes:
    raise UserError(f"--distributed: the cluster gives process id {process_id} outside 0..{num_processes - 1}")
  return coordinator, int(num_processes), int(process_id), local_device_ids


def _split_address(address: str) -> tuple[str, int]:
  host, sep, port = (address or "").rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise UserError(f"coordinator {address!r}: expected host:port with a port in 1..65535")
  return host.strip("[]"), int(port)


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
  the last checkpoint there).

  The process's own end goes through `finish()` (a normal end) or `fail(reason)` (it stops
  with an error): from then on its watchdog stays silent.
  """

  def __init__(self, process_id: int, num_processes: int, links: dict):
    self.process_id, self.num_processes = process_id, num_processes
    self.hint = None
    self._links = links
    self._lock = threading.Lock()
    self._closing = False
    self._finished: set[int] = set()
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
    another process through process 0)."""
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

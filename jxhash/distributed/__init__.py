"""Devices and processes: the mesh (one `data` axis over all devices, batches split on it),
sharding helpers, cross-process agreement, and the process group (`process_group`). May import:
jax, numpy, `jxhash.errors`; nothing else of jxhash.

Parameters, optimiser states and the training buffers are replicated; each step's batch
rows are sharded over the `data` axis, so the same jitted program runs on one CPU, several
GPUs or a TPU slice, and XLA inserts the gradient all-reduce. The mesh uses `AxisType.Auto`
(GSPMD propagation): `jax.make_mesh` now defaults to explicit axes, under which replicated
parameters times a sharded batch is an ambiguous contraction.

Multi-process runs (docs/multiprocess.md): every process calls `start(...)` (from
`jxhash.distributed.process_group`, re-exported here) before anything else touches JAX; `jax.devices()` then
lists every process's devices and the mesh spans them. Host values become global arrays without
any collective (`replicate`, `global_array`: each process places the pieces its own devices
hold, from a value every process computed identically); `local_copy` turns a replicated global
array back into this process's copy, for work that is not collective (evaluation, results). The
agreement checks (`agree_on_data`, `differing_processes`) compare digests with JAX's public
multi-host collectives (`jax.experimental.multihost_utils`).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jxhash.errors import UserError
from jxhash.distributed.process_group import PEER_EXIT, ProcessGroup, current_group, initialize_distributed, start  # noqa: F401

DATA_AXIS = "data"


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


def agree_on_data(data) -> None:
  """Refuse (UserError, on every process) a dataset whose fingerprint differs from process 0's.

  `data.fingerprint()` covers the content; for an image stack read lazily from disk it also
  covers the file's resolved path, size and modification time, so such a stack must lie at the
  same path with the same mtime on every host (a shared filesystem, or `rsync -a` copies).
  """
  differ = differing_processes(data.fingerprint())
  if differ:
    raise UserError(f"the {data.name} data differ between processes: process(es) {_ids(differ)} loaded other "
                    "files or options than process 0; every process must read the same dataset (same files, "
                    "--data-option, --split and --split-seed; an image stack read from disk at the same path "
                    "with the same modification time; docs/multiprocess.md)")


def _ids(ids) -> str:
  return ", ".join(str(i) for i in ids)

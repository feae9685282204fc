"""Device mesh and sharding: one `data` axis over all devices, batches split on it.

Parameters, optimiser states and the training buffers are replicated; each step's batch
rows are sharded over the `data` axis, so the same jitted program runs on one CPU, several
GPUs or a TPU slice, and XLA inserts the gradient all-reduce. The mesh uses `AxisType.Auto`
(GSPMD propagation): `jax.make_mesh` now defaults to explicit axes, under which replicated
parameters times a sharded batch is an ambiguous contraction.

Multi-host: call `initialize_distributed()` first on every host (it wraps
`jax.distributed.initialize()`, which reads the coordinator from the cluster environment or
from its arguments); `jax.devices()` then lists every host's devices and the mesh spans them.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh with axis "data" over `devices` (default: all devices of all hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicate(tree, mesh: jax.sharding.Mesh):
  """Place every leaf of `tree` on all devices of `mesh`."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


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


def initialize_distributed(*, timeout: int = 300, **kwargs) -> None:
  """Start a multi-process run (call once per process before anything else touches JAX).

  On SLURM, Open MPI or Cloud TPU, JAX finds the coordinator by itself; elsewhere pass
  coordinator_address="host0:1234", num_processes=N, process_id=i (experiments/run.py
  forwards its --coordinator, --num-processes and --process-id flags here). Processes that do
  not all join within `timeout` seconds give a UserError instead of a silent wait.
  """
  from jxhash.errors import UserError
  try:
    jax.distributed.initialize(initialization_timeout=timeout, **kwargs)
  except Exception as e:  # noqa: BLE001 - the runtime raises several types for a failed rendezvous
    first = " ".join(str(e).split())[:300]
    raise UserError(f"multi-process start failed within {timeout} s ({type(e).__name__}: {first}); check that "
                    f"all {kwargs.get('num_processes', '?')} processes were started with the same --coordinator") from e

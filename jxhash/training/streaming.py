"""Epochs with the images streamed from the host: pixel stacks that stay on disk.

`StreamedEpoch(stage, ...)(state, data)` equals `epochs.compile_epoch(stage, ...)(state, data)`
for `data` without "image": it draws the same batch order and step keys (`epochs.epoch_plan`),
reads each batch's image rows (S seeds × bs) on a prefetch thread, places them on the data
sharding and runs a jitted step per batch. Text, labels and the methods' buffers stay on the
device. A CNN step is long enough that per-step dispatch costs nothing, and XLA:CPU runs
convolutions inside a scanned loop about 7x slower than as separate steps (benchmarks/PIXELS.md).

Multi-process runs: every process computes the same plan, but reads only the rows of each global
batch that its own devices hold (the batch's data shards; a batch that does not divide over the
devices is replicated and read whole) and assembles them into the global batch without any
exchange (`jax.make_array_from_callback`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jxhash import distributed
from jxhash.data import augment as augment_lib
from jxhash.data.prefetch import prefetch
from jxhash.training.epochs import epoch_plan, make_batch, over_seeds
from jxhash.training.runstate import RunState
from jxhash.spec import Stage


class StreamedEpoch:
  """One epoch of a stage with streamed images (the module docstring).

  Args:
    stage: the stage.
    mesh: the data mesh.
    aug: on-device augmentation.
    images: the training split's image rows (array or row source), raw (unnormalised).
    transform: host function applied to each batch of rows (the input normalisation).
    prefetch: batches read ahead.
  """

  def __init__(self, stage: Stage, mesh, aug: augment_lib.Augment, images, transform, prefetch: int = 2):
    self.stage, self.mesh, self.images, self.transform, self.prefetch = stage, mesh, images, transform, prefetch
    num_train = images.shape[0]
    plan = functools.partial(epoch_plan, stage=stage, num_train=num_train)
    self._plan = jax.jit(over_seeds(plan, (0, None)))
    self._steps = [self._compile_step(phase, aug) for phase in stage.phases]
    self._end = None
    if stage.end_of_epoch is not None:
      self._end = jax.jit(over_seeds(stage.end_of_epoch, (0, None)), donate_argnums=0)

  def _compile_step(self, phase, aug):
    def one_seed(model, index, image, key, data):
      return phase.step(model, make_batch(data, index, key, self.mesh, aug, image=image), data, key)

    def run(model, index, image, key, data):
      return over_seeds(one_seed, (0, 0, 0, 0, None))(model, index, image, key, data)

    return jax.jit(run, donate_argnums=0)

  def _batches(self, batches: np.ndarray, keys: np.ndarray):
    """Device (index (S, bs), image (S, bs, ...), key (S, 2)) of every step, read on demand.

    Only the batch rows [lo, hi) that this process's devices hold are read from the images.
    """
    seeds, steps, bs = batches.shape
    sharded = NamedSharding(self.mesh, P(None, distributed.DATA_AXIS))
    if bs % self.mesh.shape[distributed.DATA_AXIS]:
      sharded = NamedSharding(self.mesh, P())
    replicated = NamedSharding(self.mesh, P())
    image_shape = (seeds, bs) + tuple(self.images.shape[1:])
    spans = [index[1].indices(bs)[:2] for index in sharded.addressable_devices_indices_map((seeds, bs)).values()]
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    for t in range(steps):
      index = batches[:, t]
      rows = self.transform(np.asarray(self.images[index[:, lo:hi].reshape(-1)]))
      rows = rows.reshape((seeds, hi - lo) + rows.shape[1:])

      def piece(where, rows=rows):
        start, stop, _ = where[1].indices(bs)
        return rows[(where[0], slice(start - lo, stop - lo)) + tuple(where[2:])]

      yield (distributed.global_array(index, sharded), jax.make_array_from_callback(image_shape, sharded, piece),
             distributed.global_array(keys[:, t], replicated))

  def __call__(self, state: RunState, data: dict) -> tuple[RunState, dict]:
    plan = jax.device_get(self._plan(state.rng, state.epoch))
    model, logs = state.model, {}
    for phase, step, (batches, keys) in zip(self.stage.phases, self._steps, plan):
      outs = []
      for index, image, key in prefetch(self._batches(batches, keys), self.prefetch):
        model, out = step(model, index, image, key, data)
        outs.append(out)
      logs.update({f"{phase.name}/{k}": jnp.stack([o[k] for o in outs], axis=1) for k in outs[0]})
    if self._end is not None:
      model = self._end(model, data)
    return state.replace(model=model, epoch=state.epoch + 1), logs

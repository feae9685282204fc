"""One epoch of a stage as one compiled program, and the batch order every path shares.

An epoch runs each phase of the stage over a fresh permutation of the training items (the
batch order and the per-step keys come from `epoch_plan`, a function of the seed's key and
the epoch), then the stage's `end_of_epoch`. `compile_epoch` jits the whole epoch as a
`lax.scan` over the batches (one dispatch per epoch, no per-batch host work), vmapped over
seeds, with the state donated. The streamed path (`jxhash.training.streaming`) follows the same plan
batch by batch.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from jxhash import distributed
from jxhash.data import augment as augment_lib
from jxhash.training.runstate import RunState
from jxhash.spec import Stage, steps_per_epoch

_AUGMENT_SALT = 0x617567  # folds a step's key into its augmentation key, apart from the method's use


def phase_plan(phase, key, num_train: int):
  """(batches (steps, bs) int32 row positions, step keys (steps, 2)) of one phase of one seed."""
  bs = min(phase.batch_size, num_train)
  steps = steps_per_epoch(num_train, phase.batch_size)
  perm_key, step_key = jax.random.split(key)
  batches = jax.random.permutation(perm_key, num_train)[:steps * bs].reshape(steps, bs)
  return batches, jax.random.split(step_key, steps)


def epoch_plan(rng, epoch, *, stage: Stage, num_train: int) -> list:
  """`phase_plan` of every phase of one seed's epoch: the batch order every path follows."""
  key = jax.random.fold_in(rng, epoch)
  return [phase_plan(phase, jax.random.fold_in(key, i), num_train) for i, phase in enumerate(stage.phases)]


def make_batch(data: dict, index, key, mesh, aug: augment_lib.Augment, image=None) -> dict:
  """A step's batch: rows `index` of the device arrays (plus streamed `image` rows), sharded."""
  index = distributed.shard_rows(index, mesh)
  batch = {name: distributed.shard_rows(x[index], mesh) for name, x in data.items()}
  if image is not None:
    batch["image"] = distributed.shard_rows(image, mesh)
  if aug.active:
    batch["image"] = augment_lib.augment_images(jax.random.fold_in(key, _AUGMENT_SALT), batch["image"], aug)
  batch["index"] = index
  return batch


def run_epoch(model, rng, epoch, data, *, stage: Stage, mesh, aug: augment_lib.Augment):
  """One epoch of one seed: every phase over shuffled batches, then end_of_epoch.

  Returns:
    (model, logs) with logs {"<phase>/<name>": (steps,) per-step values}.
  """
  num_train = jax.tree.leaves(data)[0].shape[0]
  logs = {}
  for phase, (batches, keys) in zip(stage.phases, epoch_plan(rng, epoch, stage=stage, num_train=num_train)):

    def body(model, inputs, phase=phase):
      index, k = inputs
      return phase.step(model, make_batch(data, index, k, mesh, aug), data, k)

    # per-step values come back (steps scalars, negligible) so a divergence can name its step
    model, phase_logs = jax.lax.scan(body, model, (batches, keys))
    logs.update({f"{phase.name}/{k}": v for k, v in phase_logs.items()})
  if stage.end_of_epoch is not None:
    model = stage.end_of_epoch(model, data)
  return model, logs


def over_seeds(fn, in_axes):
  """vmap over the leading seed axis, or for a single seed drop the axis and call fn directly.

  A vmap over a size-1 axis is not free on CPU: XLA then computes the large weight gradients
  transposed and transposes them back in every update (measured 2.3x slower for a DCMH epoch,
  benchmarks/TRAIN.md). The seed count is static, so this is a trace-time branch.
  """
  vmapped = jax.vmap(fn, in_axes=in_axes)

  def call(*args):
    first = next(a for a, axis in zip(args, in_axes) if axis == 0)
    if jax.tree.leaves(first)[0].shape[0] != 1:
      return vmapped(*args)
    squeezed = [jax.tree.map(lambda x: x[0], a) if axis == 0 else a for a, axis in zip(args, in_axes)]
    return jax.tree.map(lambda x: x[None], fn(*squeezed))

  return call


def compile_epoch(stage: Stage, mesh, aug: augment_lib.Augment = augment_lib.Augment()) -> Callable:
  """(RunState, data) -> (RunState, logs): one jitted epoch, vmapped over seeds, state donated."""
  one_seed = functools.partial(run_epoch, stage=stage, mesh=mesh, aug=aug)

  def run(state: RunState, data):
    model, logs = over_seeds(one_seed, (0, 0, None, None))(state.model, state.rng, state.epoch, data)
    return state.replace(model=model, epoch=state.epoch + 1), logs

  return jax.jit(run, donate_argnums=0)


def compile_finish(stage: Stage) -> Callable:
  """(RunState, data) -> RunState: the stage's `finish` for every seed, state donated."""

  def run(state: RunState, data):
    return state.replace(model=over_seeds(stage.finish, (0, None))(state.model, data))

  return jax.jit(run, donate_argnums=0)


def stage_bounds(stages) -> list[tuple[int, int]]:
  """[(first_epoch, end_epoch)] of each stage in the global epoch count."""
  bounds, start = [], 0
  for s in stages:
    bounds.append((start, start + s.epochs))
    start += s.epochs
  return bounds

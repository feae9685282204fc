"""`RunState`: everything that evolves during training, one pytree (what checkpoints hold)."""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jxhash.errors import UserError
from jxhash.spec import Dims, MethodSpec


@flax.struct.dataclass
class RunState:
  """The state of a run of S seeds.

  Attributes:
    model: the method's state with a leading seed axis on every leaf.
    rng: (S, 2) uint32 raw PRNG keys, one per seed.
    epoch: int32 scalar, epochs completed over all stages.
  """

  model: Any
  rng: jax.Array
  epoch: jax.Array


def init_state(spec: MethodSpec, config, dims: Dims, num_train: int, *, seed: int = 0,
               num_seeds: int = 1) -> RunState:
  """The initial RunState: `num_seeds` models from model seeds seed, seed+1, ..."""
  if num_seeds < 1:
    raise UserError(f"num_seeds must be >= 1, got {num_seeds}")
  keys = jnp.stack([jax.random.PRNGKey(seed + i) for i in range(num_seeds)])
  init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
  # one compiled program: op-by-op eager init of a few networks costs seconds of dispatch
  model = jax.jit(jax.vmap(lambda k: spec.init(k, config, dims, num_train)))(init_keys)
  return RunState(model=model, rng=keys, epoch=jnp.zeros((), jnp.int32))


def abstract_state(spec: MethodSpec, config, dims: Dims, num_train: int, num_seeds: int = 1):
  """Shapes and dtypes of the RunState, without allocating it (for checkpoint restore)."""
  return jax.eval_shape(functools.partial(init_state, spec, config, dims, num_train, num_seeds=num_seeds))


def seed_slice(tree, i: int):
  """The model of seed i from a state with a leading seed axis."""
  return jax.tree.map(lambda x: x[i], tree)

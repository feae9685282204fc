"""DCPH's proxy (label) network: one-hot categories -> relaxed proxy codes.

Two label networks of the first author's code, both Linear -> ReLU -> Linear -> tanh:
- the public DCPH port's `Label_net` (1034829217/paddle, DCPH/utils/label_hash_model.py):
  Linear(C -> 4096) -> ReLU -> BatchNorm -> Linear(4096 -> K) -> tanh (`hidden=4096, batchnorm=True`);
- PSLDH's `Label_net` (rongchengtu1/PSLDH, utils/label_hash_model.py):
  Linear(C -> 512) -> ReLU -> Linear(512 -> K) -> tanh (`hidden=512, batchnorm=False`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jxhash.nets.mlp import kernel_init


class ProxyNet(nn.Module):
  """The label network: e_k (C one-hots) -> Dense(hidden) -> ReLU [-> BatchNorm] -> Dense(K) -> tanh.

  BatchNorm uses PyTorch's conventions (momentum 0.1 there = 0.9 here, eps 1e-5). Without it
  the module has no "batch_stats" collection.
  """

  bits: int
  hidden: int = 4096
  batchnorm: bool = True
  init_scheme: str = "fan_in"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """x: (C, C) one-hots -> (C, K) relaxed proxies in (-1, 1)."""
    x = nn.Dense(self.hidden, kernel_init=kernel_init(self.init_scheme), name="hidden")(x)
    x = nn.relu(x)
    if self.batchnorm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
    x = nn.Dense(self.bits, kernel_init=kernel_init(self.init_scheme), name="hash")(x)
    return jnp.tanh(x)

"""Multi-layer perceptron encoders: DCMH's feature image net and its text net."""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def kernel_init(name: str):
  """Weight initialiser by name.

  "normal0.01": N(0, 0.01²), as in the DCMH code (weights and biases). It suits raw
    high-dimensional inputs (4096-d CNN features, 1386-d BoW) but leaves outputs near 0 on
    small standardised features, where the loss then sits at ln 2.
  "fan_in": LeCun normal (variance 1 / fan_in), keeps unit-scale activations on any width.
  """
  if name == "normal0.01":
    return nn.initializers.normal(0.01)
  if name == "fan_in":
    return nn.initializers.lecun_normal()
  raise ValueError(f"unknown init {name!r}; choose 'normal0.01' or 'fan_in'")


def bias_init(name: str):
  return nn.initializers.normal(0.01) if name == "normal0.01" else nn.initializers.zeros


class MLPEncoder(nn.Module):
  """x -> [Dense -> ReLU] * len(hidden) -> Dense(bits) [-> tanh].

  DCMH image net on precomputed features: hidden=(4096,), no tanh.
  DCMH text net: hidden=(8192,), no tanh (Jiang & Li, CVPR 2017, Sec. 3.2).

  Attributes:
    bits: output width K.
    hidden: hidden layer widths.
    init_scheme: "normal0.01" or "fan_in" (see `kernel_init`).
    tanh: squash outputs into (-1, 1).
    dtype: computation dtype (params stay float32).
    backbone: None, or a module run on x first (named "backbone"): an image backbone on pixels
      (`jxhash.nets.backbones.BackboneFeatures`), whose features the layers above then hash.
  """

  bits: int
  hidden: Sequence[int] = (4096,)
  init_scheme: str = "normal0.01"
  tanh: bool = False
  dtype: jnp.dtype = jnp.float32
  backbone: Optional[nn.Module] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (batch, D) features (pixels with a backbone) -> (batch, bits) real codes."""
    if self.backbone is not None:
      x = self.backbone(x)
    x = jnp.asarray(x, self.dtype)
    for i, width in enumerate(self.hidden):
      x = nn.Dense(width, kernel_init=kernel_init(self.init_scheme), bias_init=bias_init(self.init_scheme),
                   dtype=self.dtype, name=f"hidden{i}")(x)
      x = nn.relu(x)
    x = nn.Dense(self.bits, kernel_init=kernel_init(self.init_scheme), bias_init=bias_init(self.init_scheme),
                 dtype=self.dtype, name="hash")(x)
    x = x.astype(jnp.float32)
    return jnp.tanh(x) if self.tanh else x

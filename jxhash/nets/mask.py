"""Semantic mask: label predictions re-weight the feature channels (MDCH's image network).

MDCH (Mask Cross-Modal Hashing Networks, IEEE TMM 23:550-558, 2021) says only, in its
abstract, that a "semantic mask" improves the semantic information of the image feature. The
form here is jxhash's reconstruction: a classifier head predicts label probabilities
p = σ(V h + c) from the feature h, a gate turns them into a channel mask m = σ(W p + b), and
the feature becomes h' = h ⊙ (1 + m) (residual form: the mask can only amplify channels, so a
closed gate, m → 0, leaves h unchanged) or h' = h ⊙ m without the residual. The classifier's
logits are returned so that the method can train them with binary cross-entropy on the labels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jxhash.nets.mlp import bias_init, kernel_init


class SemanticMask(nn.Module):
  """h -> (h ⊙ (1 + m) or h ⊙ m, label logits), with m = σ(W σ(V h + c) + b).

  Attributes:
    num_labels: C, the classifier's outputs.
    residual: h ⊙ (1 + m) if True, h ⊙ m if False.
    detach_prediction: stop the mask's gradient into the classifier, so that p is shaped by
      the label loss alone.
    init_scheme: "normal0.01" or "fan_in" (see `jxhash.nets.mlp.kernel_init`).
    dtype: computation dtype.
  """

  num_labels: int
  residual: bool = True
  detach_prediction: bool = False
  init_scheme: str = "normal0.01"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """h: (batch, D) features -> ((batch, D) masked features, (batch, C) label logits)."""
    dense = dict(kernel_init=kernel_init(self.init_scheme), bias_init=bias_init(self.init_scheme),
                 dtype=self.dtype)
    logits = nn.Dense(self.num_labels, name="classifier", **dense)(h)
    p = jax.nn.sigmoid(logits)
    if self.detach_prediction:
      p = jax.lax.stop_gradient(p)
    m = jax.nn.sigmoid(nn.Dense(h.shape[-1], name="gate", **dense)(p))
    out = h * (1.0 + m) if self.residual else h * m
    return out, logits.astype(jnp.float32)


class MaskedMLPEncoder(nn.Module):
  """x -> [Dense -> ReLU] * len(hidden) -> SemanticMask -> Dense(bits), plus label logits.

  The `MLPEncoder` trunk with the mask between the last hidden layer and the hash layer
  (parameter names hidden0.., mask, hash).

  Attributes:
    bits: output width K.
    num_labels: C.
    hidden: hidden layer widths (the mask acts on the last one, or on x if empty).
    init_scheme: "normal0.01" or "fan_in".
    residual, detach_prediction: see `SemanticMask`.
    tanh: squash codes into (-1, 1).
    dtype: computation dtype (params stay float32).
    backbone: None, or a module run on x first (named "backbone", as `MLPEncoder`'s).
  """

  bits: int
  num_labels: int
  hidden: Sequence[int] = (4096,)
  init_scheme: str = "normal0.01"
  residual: bool = True
  detach_prediction: bool = False
  tanh: bool = False
  dtype: jnp.dtype = jnp.float32
  backbone: Optional[nn.Module] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x: (batch, D) features -> ((batch, bits) real codes, (batch, C) label logits)."""
    dense = dict(kernel_init=kernel_init(self.init_scheme), bias_init=bias_init(self.init_scheme),
                 dtype=self.dtype)
    if self.backbone is not None:
      x = self.backbone(x)
    x = jnp.asarray(x, self.dtype)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, name=f"hidden{i}", **dense)(x))
    x, logits = SemanticMask(self.num_labels, residual=self.residual, detach_prediction=self.detach_prediction,
                             init_scheme=self.init_scheme, dtype=self.dtype, name="mask")(x)
    x = nn.Dense(self.bits, name="hash", **dense)(x).astype(jnp.float32)
    return (jnp.tanh(x) if self.tanh else x), logits

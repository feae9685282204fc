"""MMACH's label network: multi-label input enhanced by attention over the item's image and text."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jxhash.nets.attention import ModalityEnhancedAttention
from jxhash.nets.mlp import bias_init, kernel_init


class LabelNet(nn.Module):
  """The label network: label input -> MLP -> modality enhanced attention -> tanh codes.

  Attributes:
    bits: K.
    hidden: MLP widths; the last is the attention width d.
    num_heads: attention heads (divides d).
    init_scheme: "fan_in" or "normal0.01".
  """

  bits: int
  hidden: tuple = (4096, 512)
  num_heads: int = 4
  init_scheme: str = "fan_in"

  @nn.compact
  def __call__(self, labels: jax.Array, image: jax.Array, text: jax.Array) -> jax.Array:
    """labels (B, C or E), image (B, D), text (B, T) of the same items -> (B, K) in (-1, 1)."""
    if not self.hidden:
      raise ValueError("the label net needs at least one hidden layer (the attention width)")
    x = jnp.asarray(labels, jnp.float32)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, kernel_init=kernel_init(self.init_scheme),
                           bias_init=bias_init(self.init_scheme), name=f"hidden{i}")(x))
    x = ModalityEnhancedAttention(num_heads=self.num_heads, init_scheme=self.init_scheme,
                                  name="enhance")(x, (image, text))
    x = nn.Dense(self.bits, kernel_init=kernel_init(self.init_scheme),
                 bias_init=bias_init(self.init_scheme), name="hash")(x)
    return jnp.tanh(x)

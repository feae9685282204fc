"""Cross-modal attention blocks.

`ModalityEnhancedAttention` is MMACH's "multi-label modality enhanced attention module"
(Zou, Wu, Zhang, Bakker, Knowledge-Based Systems 239, 2022), as reconstructed by jxhash
from the paper's abstract: the authors' module is not public. A query vector per item (the
label representation in MMACH) attends to a few context vectors of the *same* item (its
image and text features), each first projected to the query's width; the attended vector is
added back to the query and layer-normalised (a post-norm transformer sub-block):

    tokens = stack([Dense_m(context_m) for m]),              (B, M, d)
    out    = LayerNorm(query + MHA(query, tokens, tokens)).  (B, d)

So sparse multi-hot labels are completed with salient image/text features before the label
hash layer. The block is generic: any (B, d) query and any number of (B, D_m) contexts.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jxhash.nets.mlp import kernel_init


class ModalityEnhancedAttention(nn.Module):
  """query (B, d) attends to M per-item context vectors; residual + layer norm.

  Attributes:
    num_heads: attention heads; must divide the query width d.
    init_scheme: initialiser of the projections ("fan_in" or "normal0.01", see
      `jxhash.nets.mlp.kernel_init`).
    dtype: computation dtype (params stay float32; the output is float32).

  Submodules (parameter names): `context{m}` the Dense projecting context m to width d,
  `attention` the multi-head dot-product attention (its output projection `attention/out`),
  `norm` the layer norm.
  """

  num_heads: int = 4
  init_scheme: str = "fan_in"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query: jax.Array, context: Sequence[jax.Array]) -> jax.Array:
    """Enhance `query` with the item's own context vectors.

    Args:
      query: (B, d) one query vector per item (MMACH: the label features).
      context: M arrays (B, D_m), the same items' other features (MMACH: image and text
        features, M = 2); each gets its own Dense(D_m -> d) projection, so widths may differ.

    Returns:
      (B, d) float32 LayerNorm(query + attended). Applied with `mutable=["intermediates"]`,
      the attention weights (B, num_heads, 1, M) are also returned under
      intermediates/attention/attention_weights.
    """
    if not context:
      raise ValueError("ModalityEnhancedAttention needs at least one context array")
    width = query.shape[-1]
    if width % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide the query width {width}")
    for m, c in enumerate(context):
      if c.ndim != 2 or c.shape[0] != query.shape[0]:
        raise ValueError(f"context {m} must be (B, D) with B = {query.shape[0]}, got {c.shape}")
    query = jnp.asarray(query, self.dtype)
    init = kernel_init(self.init_scheme)
    tokens = jnp.stack([nn.Dense(width, kernel_init=init, dtype=self.dtype, name=f"context{m}")(
        jnp.asarray(c, self.dtype)) for m, c in enumerate(context)], axis=1)  # (B, M, d)
    attention = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=width, out_features=width, kernel_init=init,
        dtype=self.dtype, name="attention")
    # a length-1 query sequence: one attention distribution over the M context tokens per head
    attended = attention(query[:, None, :], tokens, sow_weights=True)[:, 0, :]
    return nn.LayerNorm(dtype=self.dtype, name="norm")(query + attended).astype(jnp.float32)

"""UCHM's networks that see both modalities at once (designed by jxhash; see docs/methods/uchm.md).

`MIEGenerator` embeds an (image, text) pair for the modality-interaction-enabled similarity;
`BitGate` chooses, per bit, how much of the unified code comes from each modality.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.nets.mlp import kernel_init


class MIEGenerator(nn.Module):
  """Modality-interaction-enabled embedding of an (image, text) item (designed by jxhash).

  cross_attention: a = ReLU(W_a x), b = ReLU(W_b y) (width `hidden`), each linearly split into
  `tokens` tokens of width hidden / tokens; A' = LN(A + MHA(q=A, kv=B)), B' = LN(B + MHA(q=B,
  kv=A)); z = [mean A', mean B']. bilinear: z = [a, b, P^T(U^T a * V^T b)].
  Then e = tanh(W_2 ReLU(W_1 z)).

  Attributes:
    dim: embedding width d.
    hidden, tokens, heads, rank: see above.
    fusion: "cross_attention" or "bilinear".
  """

  dim: int
  hidden: int = 512
  tokens: int = 4
  heads: int = 4
  rank: int = 256
  fusion: str = "cross_attention"

  @nn.compact
  def __call__(self, image: jax.Array, text: jax.Array) -> jax.Array:
    """image: (bs, D), text: (bs, T) -> (bs, dim) in (-1, 1)."""
    dense = lambda width, name: nn.Dense(width, kernel_init=kernel_init("fan_in"), name=name)  # noqa: E731
    a = nn.relu(dense(self.hidden, "image_proj")(jnp.asarray(image, jnp.float32)))
    b = nn.relu(dense(self.hidden, "text_proj")(jnp.asarray(text, jnp.float32)))
    if self.fusion == "cross_attention":
      width = self.hidden // self.tokens
      ta = dense(self.tokens * width, "image_tokens")(a).reshape(a.shape[0], self.tokens, width)
      tb = dense(self.tokens * width, "text_tokens")(b).reshape(b.shape[0], self.tokens, width)
      attend = lambda name: nn.MultiHeadDotProductAttention(  # noqa: E731
          num_heads=self.heads, qkv_features=width, name=name, deterministic=True)
      ta2 = nn.LayerNorm(name="image_norm")(ta + attend("image_from_text")(ta, tb))
      tb2 = nn.LayerNorm(name="text_norm")(tb + attend("text_from_image")(tb, ta))
      z = jnp.concatenate([ta2.mean(1), tb2.mean(1)], axis=-1)
    elif self.fusion == "bilinear":
      inter = dense(self.rank, "bilinear_u")(a) * dense(self.rank, "bilinear_v")(b)
      z = jnp.concatenate([a, b, dense(self.hidden, "bilinear_p")(inter)], axis=-1)
    else:
      raise ValueError(f"unknown fusion {self.fusion!r}; choose 'cross_attention' or 'bilinear'")
    h = nn.relu(dense(self.hidden, "fuse")(z))
    return jnp.tanh(dense(self.dim, "embed")(h))


class BitGate(nn.Module):
  """Learned bit selection: a_ik = sigmoid(s (|f_ik| - |g_ik|) + b_k), s = softplus(rho).

  At init (s = 5, b = 0) it is a soft version of the larger-|value| rule.
  """

  bits: int

  @nn.compact
  def __call__(self, image_codes: jax.Array, text_codes: jax.Array) -> jax.Array:
    """(n, K), (n, K) -> (n, K) weights of the image value (text gets 1 - a)."""
    rho = self.param("rho", lambda _: jnp.asarray(np.log(np.expm1(5.0)), jnp.float32))
    bias = self.param("bias", nn.initializers.zeros, (self.bits,))
    diff = jnp.abs(image_codes) - jnp.abs(text_codes)
    return jax.nn.sigmoid(jax.nn.softplus(rho) * diff + bias[None, :])

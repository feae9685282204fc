"""Binary codes: {-1, +1} arrays, made from real-valued network outputs.

"Codes" in jxhash always means ±1 values (N, K); real-valued network outputs are "outputs".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def binarize(outputs: jax.Array) -> jax.Array:
  """sign() mapping 0 to +1, so every code is strictly in {-1, +1}.

  Args:
    outputs: (..., K) real values.

  Returns:
    same shape, dtype of `outputs`, values in {-1, +1}.
  """
  return jnp.where(outputs >= 0, 1, -1).astype(outputs.dtype)

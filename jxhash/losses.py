"""Loss terms shared by the hashing methods: pure functions of arrays.

Notation: H (n, K) continuous codes, B (n, K) binary codes in {-1, +1}, S a similarity matrix,
theta = <h_i, g_j> / 2 the pairwise logits of DCMH. Every function returns a scalar and
takes its options as keyword arguments; method modules compose and weight them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jxhash.codes import binarize  # noqa: F401


def label_similarity(labels_a: jax.Array, labels_b: jax.Array) -> jax.Array:
  """Hard similarity S_ij = 1[l_i · l_j > 0] (share at least one label).

  Args:
    labels_a: (m, C) multi-hot labels.
    labels_b: (n, C) multi-hot labels.

  Returns:
    (m, n) float32 in {0, 1}.
  """
  shared = jnp.asarray(labels_a, jnp.float32) @ jnp.asarray(labels_b, jnp.float32).T
  return (shared > 0).astype(jnp.float32)


def cosine_similarity(a: jax.Array, b: jax.Array, *, eps: float = 1e-8) -> jax.Array:
  """Row-wise cosine similarity matrix.

  Args:
    a: (m, d); b: (n, d).
    eps: guards all-zero rows (their similarity is 0).

  Returns:
    (m, n) cos(a_i, b_j).
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  # sqrt(max(|x|², eps²)) = max(|x|, eps), but its gradient at an all-zero row is finite
  # (jnp.linalg.norm's is 0/0 = NaN there, even behind the maximum)
  a = a / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(a), axis=1, keepdims=True), eps * eps))
  b = b / jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(b), axis=1, keepdims=True), eps * eps))
  return a @ b.T


def pairwise_likelihood(theta: jax.Array, similarity: jax.Array) -> jax.Array:
  """Negative log-likelihood of pairwise similarities (DCMH, Jiang & Li, CVPR 2017, eq. 2).

  -sum_ij (S_ij theta_ij - log(1 + exp(theta_ij))), with log(1 + exp) computed as softplus so
  that |theta| in the thousands stays finite.

  Args:
    theta: (m, n) logits, theta_ij = <h_i, g_j> / 2.
    similarity: (m, n) targets in [0, 1].

  Returns:
    scalar sum over all pairs.
  """
  return -jnp.sum(similarity * theta - jax.nn.softplus(theta))


def quantization(binary: jax.Array, codes: jax.Array) -> jax.Array:
  """Squared distance to the binary codes, ||B - H||_F^2.

  Args:
    binary: (n, K) codes in {-1, +1}.
    codes: (n, K) continuous codes.

  Returns:
    scalar sum.
  """
  return jnp.sum(jnp.square(binary - codes))


def bit_balance(codes: jax.Array) -> jax.Array:
  """Bit-balance term ||H^T 1||^2: each bit should be +1 on half of the items (DCMH eta term).

  Args:
    codes: (n, K) continuous codes (the whole buffer, typically with only a batch of rows
      differentiable).

  Returns:
    scalar.
  """
  return jnp.sum(jnp.square(jnp.sum(codes, axis=0)))


def positive_kl(target: jax.Array, predicted: jax.Array, *, eps: float = 1e-5) -> jax.Array:
  """Positive-constrained KL between similarity matrices (MESDCH / MMACH self-supervision).

  sum_ij (T_ij - P_ij) * log((eps + T_ij) / (eps + P_ij)), a symmetric KL-like divergence of
  entries in [0, 1]; `predicted` is usually ReLU(cos(h_i, h_j)) so that dissimilar pairs
  are only pushed to orthogonal, not opposite, codes.

  Args:
    target: (m, n) label similarity in [0, 1].
    predicted: (m, n) code similarity in [0, 1].
    eps: smoothing, 1e-5 as in the MESDCH code.

  Returns:
    scalar sum (divide by the batch and buffer sizes in the method).
  """
  return jnp.sum((target - predicted) * (jnp.log(eps + target) - jnp.log(eps + predicted)))


def similarity_regression(code_similarity: jax.Array, target: jax.Array,
                          mask: jax.Array | None = None) -> jax.Array:
  """Squared error between a code similarity and a target similarity, optionally masked.

  Args:
    code_similarity: (m, n), e.g. cos(h_i, g_j) or (h_i·g_j / K + 1) / 2.
    target: (m, n) target similarity on the same scale.
    mask: optional (m, n) weights (e.g. 1 for "soft" pairs only).

  Returns:
    scalar sum.
  """
  err = jnp.square(code_similarity - target)
  return jnp.sum(err if mask is None else err * mask)

"""Shared loss terms against plain-numpy evaluations of their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import losses

pytestmark = pytest.mark.usefixtures("strict_promotion")


def _np_softplus(x):
  return np.logaddexp(0.0, x)


@pytest.fixture
def arrays():
  rng = np.random.default_rng(0)
  return {
      "h": rng.normal(size=(6, 8)).astype(np.float32),
      "g": rng.normal(size=(9, 8)).astype(np.float32),
      "la": (rng.random((6, 5)) < 0.3).astype(np.float32),
      "lb": (rng.random((9, 5)) < 0.3).astype(np.float32),
      "b": np.where(rng.normal(size=(6, 8)) >= 0, 1.0, -1.0).astype(np.float32),
  }


def test_label_similarity(arrays):
  la, lb = arrays["la"], arrays["lb"]
  expected = np.array([[float(any(la[i] * lb[j])) for j in range(9)] for i in range(6)])
  np.testing.assert_array_equal(losses.label_similarity(la, lb), expected)


def test_pairwise_likelihood_matches_formula(arrays):
  theta = 0.5 * arrays["h"] @ arrays["g"].T
  s = (arrays["la"] @ arrays["lb"].T > 0).astype(np.float32)
  expected = -np.sum(s * theta - np.log1p(np.exp(theta.astype(np.float64))))
  np.testing.assert_allclose(losses.pairwise_likelihood(theta, s), expected, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(losses.pairwise_likelihood)(theta, s), expected, rtol=1e-5)


def test_pairwise_likelihood_stable_for_large_logits():
  theta = jnp.array([[1e3, -1e3], [500.0, -2e3]])
  s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  value = losses.pairwise_likelihood(theta, s)
  # s=1, theta=1e3: softplus - theta = 0; s=0, theta=-1e3: ~0; s=0, 500: 500; s=1, -2e3: 2e3
  np.testing.assert_allclose(value, 2500.0, rtol=1e-6)
  grad = jax.grad(losses.pairwise_likelihood)(theta, s)
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad, jax.nn.sigmoid(theta) - s, atol=1e-6)


def test_quantization_and_balance(arrays):
  h, b = arrays["h"], arrays["b"]
  np.testing.assert_allclose(losses.quantization(b, h), ((b - h) ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(losses.bit_balance(h), (h.sum(0) ** 2).sum(), rtol=1e-5)


def test_cosine_similarity(arrays):
  h, g = arrays["h"], arrays["g"]
  expected = (h / np.linalg.norm(h, axis=1, keepdims=True)) @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
  np.testing.assert_allclose(losses.cosine_similarity(h, g), expected, atol=1e-6)
  zero = losses.cosine_similarity(np.zeros((1, 8), np.float32), g)
  np.testing.assert_array_equal(zero, np.zeros((1, 9)))


def test_positive_kl_matches_formula(arrays):
  rng = np.random.default_rng(1)
  t = rng.random((6, 9)).astype(np.float32)
  p = rng.random((6, 9)).astype(np.float32)
  expected = np.sum((t - p) * np.log((1e-5 + t) / (1e-5 + p)))
  np.testing.assert_allclose(losses.positive_kl(t, p), expected, rtol=1e-5)
  assert float(losses.positive_kl(t, t)) == 0.0
  grad = jax.grad(lambda q: losses.positive_kl(t, q))(jnp.zeros((6, 9)))
  assert np.all(np.isfinite(grad))


def test_similarity_regression_mask(arrays):
  rng = np.random.default_rng(2)
  a, b = rng.random((3, 4)), rng.random((3, 4))
  mask = (rng.random((3, 4)) < 0.5).astype(np.float32)
  np.testing.assert_allclose(losses.similarity_regression(a, b), ((a - b) ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(losses.similarity_regression(a, b, mask), (mask * (a - b) ** 2).sum(), rtol=1e-5)


def test_binarize_maps_zero_to_plus_one():
  np.testing.assert_array_equal(losses.binarize(jnp.array([-0.5, 0.0, 2.0])), [-1.0, 1.0, 1.0])

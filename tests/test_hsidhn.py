"""HSIDHN: multi-scale fusion, bidirectional bilinear interaction, dual-similarity loss, learning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import data, metrics, train
from jxhash.spec import Dims
from jxhash.methods import get_method, hsidhn
from jxhash.nets import multiscale

# rows: a = {0}, b = {0}, c = {0, 1}, d = {2}, e = {0, 1}, f = {} (unlabelled)
LABELS = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]], np.float32)
# by hand: hard pairs are disjoint or identical label sets, soft pairs partly overlap
HAND_HARD_MASK = np.array([
    [1, 1, 0, 1, 0, 1],
    [1, 1, 0, 1, 0, 1],
    [0, 0, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1],
    [0, 0, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1]], np.float32)
HAND_SOFT = np.array([
    [1, 1, 2 ** -0.5, 0, 2 ** -0.5, 0],
    [1, 1, 2 ** -0.5, 0, 2 ** -0.5, 0],
    [2 ** -0.5, 2 ** -0.5, 1, 0, 1, 0],
    [0, 0, 0, 1, 0, 0],
    [2 ** -0.5, 2 ** -0.5, 1, 0, 1, 0],
    [0, 0, 0, 0, 0, 0]], np.float32)


def _np_pool(x, k):
  d = x.shape[-1]
  out = np.empty_like(x)
  for start in range(0, d, k):
    out[..., start:start + k] = x[..., start:start + k].mean(-1, keepdims=True)
  return out


@pytest.mark.parametrize("kernel", [1, 2, 3, 6, 10, 40])
def test_pool_and_upsample_matches_numpy(kernel):
  x = np.random.default_rng(kernel).normal(size=(4, 23)).astype(np.float32)  # 23: no kernel divides it
  got = np.asarray(multiscale.pool_and_upsample(jnp.asarray(x), kernel))
  np.testing.assert_allclose(got, _np_pool(x, kernel), rtol=1e-6, atol=1e-6)


def test_multiscale_fusion_is_the_1x1_projection_of_the_views():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(5, 30)).astype(np.float32)
  scales = (1, 2, 3, 6, 10)
  module = multiscale.MultiScaleFusion(scales)
  params = module.init(jax.random.PRNGKey(0), x)
  # the initial block is the identity (weight 1 on the kernel-1 view)
  np.testing.assert_allclose(module.apply(params, x), x, rtol=1e-6)
  w = rng.normal(size=(len(scales), 1)).astype(np.float32)
  b = rng.normal(size=(1,)).astype(np.float32)
  params = {"params": {"fuse": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}}
  y = np.asarray(module.apply(params, x))
  assert y.shape == x.shape
  want = sum(w[s, 0] * _np_pool(x, k) for s, k in enumerate(scales)) + b[0]
  np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
  # kernel 1 alone: the plain scalar projection w x + b
  single = multiscale.MultiScaleFusion((1,))
  y1 = single.apply({"params": {"fuse": {"kernel": jnp.asarray([[1.7]]), "bias": jnp.asarray([-0.3])}}}, x)
  np.testing.assert_allclose(y1, 1.7 * x - 0.3, rtol=1e-5, atol=1e-6)


def test_bilinear_interaction_matches_numpy():
  rng = np.random.default_rng(1)
  a = rng.normal(size=(4, 7)).astype(np.float32)
  b = rng.normal(size=(4, 5)).astype(np.float32)
  module = multiscale.BilinearInteraction(rank=3, features=6)
  params = module.init(jax.random.PRNGKey(1), a, b)["params"]
  u, v, p = (np.asarray(params[n]["kernel"]) for n in ("U", "V", "P"))
  np.testing.assert_allclose(module.apply({"params": params}, a, b), ((a @ u) * (b @ v)) @ p, rtol=1e-5, atol=1e-5)


def _zero(params, prefix):
  return {k: (jax.tree.map(jnp.zeros_like, v) if k.startswith(prefix) else v) for k, v in params.items()}


def test_bbi_shape_and_both_directions_contribute():
  rng = np.random.default_rng(2)
  layers = [jnp.asarray(rng.normal(size=(3, w)), jnp.float32) for w in (12, 9, 6)]
  bbi = multiscale.BidirectionalBilinear(rank=4, features=5)
  params = bbi.init(jax.random.PRNGKey(2), layers)["params"]
  assert set(params) == {"up0", "up1", "down0", "down1"}
  z = np.asarray(bbi.apply({"params": params}, layers))
  assert z.shape == (3, 2 * 2 * 5)
  up, down = z[:, :10], z[:, 10:]
  assert np.abs(up).min() > 0 and np.abs(down).min() > 0
  # zeroing one direction removes exactly its half
  no_down = np.asarray(bbi.apply({"params": _zero(params, "down")}, layers))
  np.testing.assert_array_equal(no_down[:, :10], up)
  np.testing.assert_array_equal(no_down[:, 10:], 0.0)
  no_up = np.asarray(bbi.apply({"params": _zero(params, "up")}, layers))
  np.testing.assert_array_equal(no_up[:, 10:], down)
  # cascade: the second bottom-up pair reads the first pair's vector, not the raw layer
  up1_from_zero = np.asarray(bbi.apply({"params": _zero(params, "up0")}, layers))[:, 5:10]
  np.testing.assert_array_equal(up1_from_zero, 0.0)
  flat = multiscale.BidirectionalBilinear(rank=4, features=5, cascade=False)
  flat_params = flat.init(jax.random.PRNGKey(2), layers)["params"]
  up1_flat = np.asarray(flat.apply({"params": flat_params}, layers))[:, 5:10]
  np.testing.assert_array_equal(np.asarray(flat.apply({"params": _zero(flat_params, "up0")}, layers))[:, 5:10],
                                up1_flat)
  # a single hidden layer has no pair
  assert bbi.apply({"params": {}}, layers[:1]).shape == (3, 0)


def test_encoder_output_depends_on_both_directions_and_heads():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(6, 20)), jnp.float32)
  enc = multiscale.HierarchicalEncoder(bits=16, hidden=(24, 12), rank=4, interaction_features=8, layer_heads=True)
  params = jax.jit(lambda key: enc.init(key, x, heads=True))(jax.random.PRNGKey(3))["params"]
  codes, heads = jax.jit(lambda p: enc.apply({"params": p}, x, heads=True))(params)
  assert codes.shape == (6, 16) and heads.shape == (2, 6, 16)
  assert float(jnp.abs(codes).max()) < 1.0
  apply = jax.jit(lambda p: enc.apply({"params": p}, x))
  np.testing.assert_allclose(apply(params), codes, rtol=1e-5, atol=1e-6)
  bbi = params["bbi"]
  for prefix in ("up", "down"):
    changed = apply(dict(params, bbi=_zero(bbi, prefix)))
    assert float(jnp.abs(changed - codes).max()) > 1e-4, prefix
  with pytest.raises(ValueError, match="layer_heads"):
    multiscale.HierarchicalEncoder(bits=16, hidden=(8, 8)).init(jax.random.PRNGKey(0), x, heads=True)


def test_dual_similarity_masks_by_hand():
  hard, soft, hard_mask = (np.asarray(v) for v in hsidhn.dual_similarity(LABELS, LABELS))
  np.testing.assert_array_equal(hard_mask, HAND_HARD_MASK)
  np.testing.assert_allclose(soft, HAND_SOFT, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(hard, (LABELS @ LABELS.T > 0).astype(np.float32))
  # an identical pair of 3-label rows is hard even though float cos may round below 1
  three = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 0, 1]], np.float32)
  np.testing.assert_array_equal(np.asarray(hsidhn.dual_similarity(three, three)[2]),
                                [[1, 1, 0], [1, 1, 0], [0, 0, 1]])


def _np_dual(h, g, soft_weight, soft_term, soft_off, code_similarity):
  k = h.shape[1]
  h, g = h.astype(np.float64), g.astype(np.float64)
  theta = 0.5 * h @ g.T
  s = (LABELS @ LABELS.T > 0).astype(np.float64)
  mask = HAND_HARD_MASK if (soft_term or soft_off == "drop") else np.ones_like(HAND_HARD_MASK)
  nll = -np.sum(mask * (s * theta - np.logaddexp(0.0, theta)))
  reg = 0.0
  if soft_term:
    predicted = (h @ g.T / k + 1) / 2 if code_similarity == "affine" else h @ g.T / k
    reg = 0.5 * k * soft_weight * np.sum((1 - HAND_HARD_MASK) * (predicted - HAND_SOFT) ** 2)
  return nll + reg, nll, reg


@pytest.mark.parametrize("soft_term,soft_off,code_similarity",
                         [(True, "hard", "affine"), (True, "hard", "inner"), (False, "hard", "affine"),
                          (False, "drop", "affine")])
def test_dual_similarity_loss_matches_numpy(soft_term, soft_off, code_similarity):
  rng = np.random.default_rng(4)
  h = np.tanh(rng.normal(size=(6, 8)) * 2).astype(np.float32)
  g = np.tanh(rng.normal(size=(6, 8)) * 2).astype(np.float32)
  sims = hsidhn.dual_similarity(LABELS, LABELS)
  total, parts = hsidhn.dual_similarity_loss(h, g, hard=sims[0], soft=sims[1], hard_mask=sims[2], soft_weight=0.7,
                                             soft_term=soft_term, soft_off=soft_off,
                                             code_similarity=code_similarity)
  want = _np_dual(h, g, 0.7, soft_term, soft_off, code_similarity)
  np.testing.assert_allclose([total, parts["hard"], parts["soft"]], want, rtol=1e-5, atol=1e-5)
  assert (float(parts["soft"]) > 0) == soft_term


def test_objective_matches_numpy_with_heads():
  rng = np.random.default_rng(5)
  n, bs, k = 6, 3, 8
  index = np.array([4, 0, 2])
  h = np.tanh(rng.normal(size=(bs, k))).astype(np.float32)
  heads = np.tanh(rng.normal(size=(2, bs, k))).astype(np.float32)
  g = np.tanh(rng.normal(size=(n, k))).astype(np.float32)
  buffer = rng.normal(size=(n, k)).astype(np.float32)
  b = np.where(rng.normal(size=(bs, k)) >= 0, 1.0, -1.0).astype(np.float32)
  sims = hsidhn.dual_similarity(LABELS[index], LABELS)
  got, parts = hsidhn.objective(h, other=g, hard=sims[0], soft=sims[1], hard_mask=sims[2], codes=b, buffer=buffer,
                                index=index, gamma=0.6, eta=1.4, soft_weight=0.5, head_outputs=heads, head_weight=0.3)

  def np_pairs(x):
    x = x.astype(np.float64)
    theta = 0.5 * x @ g.T.astype(np.float64)
    s, m, soft = (LABELS[index] @ LABELS.T > 0), HAND_HARD_MASK[index], HAND_SOFT[index]
    nll = -np.sum(m * (s * theta - np.logaddexp(0.0, theta)))
    return nll + 0.5 * k * 0.5 * np.sum((1 - m) * ((x @ g.T / k + 1) / 2 - soft) ** 2)

  full = buffer.astype(np.float64).copy()
  full[index] = h
  want = (np_pairs(h) + 0.6 * np.sum((b - h) ** 2) + 1.4 * np.sum(full.sum(0) ** 2)
          + 0.3 * np.mean([np_pairs(x) for x in heads])) / (bs * n)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert set(parts) == {"hard", "soft", "quant", "balance", "heads"}


def test_gradients_finite_for_large_codes():
  rng = np.random.default_rng(6)
  n, bs, k = 6, 6, 32
  g = jnp.asarray(rng.normal(size=(n, k)) * 30, jnp.float32)
  h = jnp.asarray(rng.normal(size=(bs, k)) * 30, jnp.float32)  # |theta| in the thousands
  assert float(jnp.abs(0.5 * h @ g.T).max()) > 1000
  sims = hsidhn.dual_similarity(LABELS, LABELS)
  for soft_term in (True, False):
    fn = lambda h: hsidhn.objective(h, other=g, hard=sims[0], soft=sims[1], hard_mask=sims[2], codes=jnp.sign(h),
                                    buffer=jnp.zeros((n, k)), index=jnp.arange(bs), gamma=1.0, eta=1.0,
                                    soft_weight=1.0, soft_term=soft_term)[0]
    value, grad = jax.value_and_grad(fn)(h)
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and float(jnp.abs(grad).sum()) > 0


@pytest.mark.slow  # an optimiser step
def test_layer_heads_step_and_report():
  rng = np.random.default_rng(7)
  n = 12
  arrays = {"image": jnp.asarray(rng.normal(size=(n, 10)), jnp.float32),
            "text": jnp.asarray(rng.random((n, 6)), jnp.float32),
            "labels": jnp.asarray(np.tile(LABELS, (2, 1)))}
  config = hsidhn.Config(bits=16, batch_size=4, image_hidden=(16, 8), text_hidden=(16, 8), rank=4,
                         interaction_features=4, layer_heads=True)
  state = hsidhn.init(jax.random.PRNGKey(0), config, Dims(image_shape=(10,), text_dim=6, num_labels=3), n)
  index = jnp.arange(4)
  batch = dict({k: v[index] for k, v in arrays.items()}, index=index)
  step = jax.jit(hsidhn.stages(config, n)[0].phases[0].step)
  new, logs = step(state, batch, arrays, jax.random.PRNGKey(1))
  assert np.isfinite(logs["loss"]) and float(logs["heads"]) > 0
  np.testing.assert_array_equal(new.outputs["text"], state.outputs["text"])
  assert not np.allclose(new.outputs["image"][:4], state.outputs["image"][:4])
  facts = hsidhn.report(new)
  assert len(facts["image_scale_weights"]) == 2 and len(facts["image_scale_weights"][0]) == len(config.scales)


@pytest.mark.slow
def test_short_run_beats_chance_in_both_directions():
  ds = data.load("synthetic")
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])  # 0.363
  spec = get_method("hsidhn")
  # default widths, 40 of the default 100 epochs: measured 0.475 / 0.476 (chance + 0.11)
  config = spec.Config(bits=32, epochs=40)
  result = train.fit(spec, config, ds, train.TrainOptions(progress=False, eval_every=0))
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["map"] > chance + 0.08, (direction, result.final[direction]["map"], chance)

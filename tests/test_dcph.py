"""DCPH: losses against numpy, stability, the proxy stage, no pairwise similarity, learning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import checkpoint, data, losses, metrics
from jxhash.training import runstate
from jxhash.training import trainer

from jxhash.spec import Dims
from jxhash.errors import UserError
from jxhash.methods import dcmh, dcph, get_method


def _np_mds(z, y, s, m, z_den=None, quirk=False):
  """-sum_i log(pos_i / den_i) written out with exp, in float64."""
  z = z.astype(np.float64)
  z_den = z if z_den is None else z_den.astype(np.float64)
  total = 0.0
  for i in range(z.shape[0]):
    pos_mask = y[i] > 0
    n = pos_mask.sum()
    if n == 0:
      continue
    pos = np.exp(s * (z[i][pos_mask].mean() - m))
    den = np.exp(s * (z_den[i][pos_mask].mean() - m)) + np.exp(s * z_den[i][~pos_mask]).sum()
    if quirk:
      den += n
    total -= np.log(pos / den)
  return total


def _labels(rng, bs, c):
  y = np.zeros((bs, c), np.float32)
  for i in range(bs):
    y[i, rng.choice(c, size=1 + i % 3, replace=False)] = 1  # 1, 2 and 3 labels per row
  y[-1] = 0  # an unlabelled item contributes nothing
  return y


@pytest.mark.parametrize("quirk", [False, True])
def test_margin_dynamic_softmax_matches_numpy(quirk):
  rng = np.random.default_rng(0)
  bs, c, k = 7, 6, 16
  y = _labels(rng, bs, c)
  z = rng.normal(size=(bs, c)).astype(np.float32) * 6
  z_den = rng.normal(size=(bs, c)).astype(np.float32) * 6
  kw = dict(scale=0.3, margin=0.3 * k, positives_in_denominator=quirk)
  np.testing.assert_allclose(dcph.margin_dynamic_softmax(z, y, **kw), _np_mds(z, y, 0.3, 0.3 * k, quirk=quirk),
                             rtol=1e-5)
  np.testing.assert_allclose(dcph.margin_dynamic_softmax(z, y, denominator_logits=z_den, **kw),
                             _np_mds(z, y, 0.3, 0.3 * k, z_den=z_den, quirk=quirk), rtol=1e-5)
  # the quirk only ever adds to the denominator
  plain = dcph.margin_dynamic_softmax(z, y, scale=0.3, margin=0.3 * k)
  assert (float(dcph.margin_dynamic_softmax(z, y, **kw)) > float(plain)) == quirk


def test_objective_matches_numpy():
  rng = np.random.default_rng(1)
  bs, c, k = 6, 5, 32
  h = np.tanh(rng.normal(size=(bs, k))).astype(np.float32)
  proxies = np.where(rng.normal(size=(c, k)) >= 0, 1.0, -1.0).astype(np.float32)
  other = np.where(rng.normal(size=(bs, k)) >= 0, 1.0, -1.0).astype(np.float32)
  b = np.where(rng.normal(size=(bs, k)) >= 0, 1.0, -1.0).astype(np.float32)
  y = _labels(rng, bs, c)
  got, parts = dcph.objective(h, proxies=proxies, labels=y, other_codes=other, codes=b, scale=0.3, margin=9.6,
                              cross_weight=0.1, quant_weight=0.1)
  z, z_other = h @ proxies.T, other @ proxies.T
  want = (_np_mds(z, y, 0.3, 9.6) + 0.1 * _np_mds(z, y, 0.3, 9.6, z_den=z_other)
          + 0.1 * np.sum((b - h) ** 2)) / bs
  np.testing.assert_allclose(got, want, rtol=1e-5)
  np.testing.assert_allclose(parts["quant"], np.sum((b - h) ** 2) / bs, rtol=1e-5)


def test_cross_term_gradient_flows_only_through_the_numerator():
  # den' is built from the other modality's binary codes: d/dz of the cross term is -s y / n
  rng = np.random.default_rng(2)
  bs, c = 5, 6
  y = _labels(rng, bs, c)
  z = jnp.asarray(rng.normal(size=(bs, c)) * 5, jnp.float32)
  z_den = jnp.asarray(rng.normal(size=(bs, c)) * 5, jnp.float32)
  grad = jax.grad(lambda z: dcph.margin_dynamic_softmax(z, y, scale=0.3, margin=2.0, denominator_logits=z_den))(z)
  n = np.maximum(y.sum(1, keepdims=True), 1)
  np.testing.assert_allclose(grad, -0.3 * y / n, rtol=1e-6, atol=1e-7)


def test_large_logits_give_finite_loss_and_gradients():
  rng = np.random.default_rng(3)
  bs, c = 8, 10
  y = _labels(rng, bs, c)
  z = jnp.asarray(rng.normal(size=(bs, c)) * 3000, jnp.float32)
  for quirk in (False, True):
    f = lambda z: dcph.margin_dynamic_softmax(z, y, scale=1.0, margin=500.0, denominator_logits=-z,
                                              positives_in_denominator=quirk)
    value, grad = jax.value_and_grad(f)(z)
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
      assert not np.isfinite(_np_mds(np.asarray(z), y, 1.0, 500.0, z_den=-np.asarray(z), quirk=quirk))


def _np_psldh(p, alpha, beta):
  """PSLDH's proxy objective written out with loops, in float64."""
  c, k = p.shape
  gram_penalty = 0.0
  for a in range(c):
    for b in range(c):
      inner = float(np.dot(p[a], p[b])) - (k if a == b else 0)
      gram_penalty += max(inner, 0.0) ** 2
  balance = sum(p[:, j].sum() ** 2 for j in range(k))
  quant = np.sum((np.where(p >= 0, 1.0, -1.0) - p) ** 2)
  return gram_penalty / c ** 2 + alpha * balance / c + beta * quant / c


def _relaxed(rng, c, k, scale=2.0):
  return np.tanh(rng.normal(size=(c, k)) * scale)


def test_positive_gram_penalty_matches_numpy():
  rng = np.random.default_rng(6)
  c, k = 7, 12
  p = _relaxed(rng, c, k)
  gram = p @ p.T
  want = np.sum(np.maximum(gram - k * np.eye(c), 0) ** 2)
  np.testing.assert_allclose(dcph.positive_gram_penalty(jnp.asarray(p, jnp.float32)), want, rtol=1e-5)
  # only off-diagonal positive inner products count: the diagonal is below K inside (-1, 1)^K
  off = gram[~np.eye(c, dtype=bool)]
  np.testing.assert_allclose(want, np.sum(np.maximum(off, 0) ** 2))
  # codes whose pairwise inner products are all <= 0 cost nothing
  simplex_like = np.array([[1, 1, -1, -1], [-1, -1, 1, 1], [1, -1, 1, -1], [-1, 1, -1, 1]], np.float32) * 0.9
  np.testing.assert_allclose(float(dcph.positive_gram_penalty(jnp.asarray(simplex_like))), 0.0, atol=1e-6)


@pytest.mark.parametrize("kind", ["psldh", "pairwise", "softmax"])
def test_proxy_objective_matches_numpy(kind):
  rng = np.random.default_rng(4)
  c, k = 6, 16
  p = _relaxed(rng, c, k).astype(np.float64)
  gram = p @ p.T / k
  if kind == "psldh":
    want = _np_psldh(p, alpha=0.7, beta=0.3)
  else:
    if kind == "pairwise":
      disc = np.sum(gram[~np.eye(c, dtype=bool)] ** 2) / (c * (c - 1))
    else:
      a = 10.0 * gram
      disc = -np.mean(np.diag(a) - np.log(np.exp(a).sum(1)))
    quant = np.sum((np.where(p >= 0, 1, -1) - p) ** 2) / (c * k)
    bal = np.sum(p.sum(0) ** 2) / (c * c * k)
    want = disc + 0.3 * quant + 0.7 * bal
  got, _ = dcph.proxy_objective(jnp.asarray(p, jnp.float32), kind=kind, beta=0.3, balance=0.7, softmax_scale=10.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_psldh_proxy_objective_gradient_matches_finite_differences():
  rng = np.random.default_rng(7)
  c, k = 5, 8
  p = _relaxed(rng, c, k, scale=1.5)
  # keep clear of the kinks (ReLU at inner product 0, sign at 0) so central differences are exact
  p = np.where(np.abs(p) < 0.05, 0.3 * np.sign(p + 1e-12), p)
  off = (p @ p.T)[~np.eye(c, dtype=bool)]
  assert np.min(np.abs(off)) > 1e-3
  f = lambda x: dcph.proxy_objective(x, kind="psldh", beta=0.7, balance=0.3)[0]
  grad = np.asarray(jax.grad(f)(jnp.asarray(p, jnp.float32)), np.float64)
  eps = 1e-6
  numeric = np.zeros_like(p)
  for idx in np.ndindex(*p.shape):
    step = np.zeros_like(p)
    step[idx] = eps
    numeric[idx] = (_np_psldh(p + step, 0.3, 0.7) - _np_psldh(p - step, 0.3, 0.7)) / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-5)
  # the penalty alone, against its own differences
  g_pen = np.asarray(jax.grad(lambda x: dcph.positive_gram_penalty(x))(jnp.asarray(p, jnp.float32)), np.float64)
  pen = lambda x: np.sum(np.maximum(x @ x.T - k * np.eye(c), 0) ** 2)
  numeric = np.array([(pen(p + e) - pen(p - e)) / (2 * eps)
                      for e in (np.eye(c * k)[i].reshape(c, k) * eps for i in range(c * k))]).reshape(c, k)
  np.testing.assert_allclose(g_pen, numeric, rtol=1e-4, atol=1e-5)


def test_psldh_proxy_objective_is_finite_on_large_and_saturated_inputs():
  rng = np.random.default_rng(8)
  c, k = 200, 512
  p = jnp.asarray(_relaxed(rng, c, k, 1e4), jnp.float32)  # saturated: |P~| = 1 in float32
  value, grad = jax.value_and_grad(lambda x: dcph.proxy_objective(x, kind="psldh", beta=10.0, balance=1.0)[0])(p)
  assert np.isfinite(value) and np.all(np.isfinite(grad)) and float(value) > 0
  # all-equal codes: every pair has inner product K, the largest possible penalty
  same = jnp.full((4, 8), 0.999, jnp.float32)
  np.testing.assert_allclose(dcph.positive_gram_penalty(same), 12 * (8 * 0.999 ** 2) ** 2, rtol=1e-5)


def test_proxy_lr_follows_psldh_step_decay():
  # PSLDH steps StepLR(100, 0.1) before each update: updates 0..98 at 1e-3, 99..198 at 1e-4, 199 at 1e-5
  schedule = dcph.proxy_learning_rate(dcph.Config())
  got = [float(schedule(jnp.asarray(i))) for i in (0, 98, 99, 198, 199)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-5)
  assert dcph.proxy_learning_rate(dataclasses.replace(dcph.Config(), proxy_lr_decay_steps=0)) == 1e-3


# one small setting shared by the tests that build real states (eager ops compile once)
SMALL_CONFIG = dcph.Config(bits=32, image_hidden=(8,), text_hidden=(8,), proxy_hidden=512)
SMALL_DIMS = Dims(image_shape=(4,), text_dim=3, num_labels=10)


@pytest.mark.slow  # trains the proxies
@pytest.mark.parametrize("variant", ["psldh", "reconstruction"])
def test_proxy_stage_gives_distant_binary_proxies(variant):
  c, k = 10, 32
  config = SMALL_CONFIG
  if variant == "reconstruction":
    config = dataclasses.replace(config, **{**dcph.SPEC.presets["pairwise-proxy"], "proxy_hidden": 512})
  state = dcph.init(jax.random.PRNGKey(0), config, SMALL_DIMS, 20)
  before = dcph.proxy_distances(state.proxies)
  step = jax.jit(dcph._proxy_step(config))
  for _ in range(config.proxy_epochs):
    state, logs = step(state, None, None, None)
  state = dcph.set_proxies(state, None)
  p = np.asarray(state.proxies)
  assert p.shape == (c, k) and set(np.unique(p)) == {-1.0, 1.0}
  facts = dcph.SPEC.report(state)
  # random codes average K/2 = 16 with min ~10; balanced, spread proxies beat the mean
  assert facts["proxy_mean_hamming"] >= 17, facts
  if variant == "reconstruction":  # its pairwise term also lifts the closest pair
    assert facts["proxy_min_hamming"] >= 12, facts
  else:  # PSLDH's penalty pushes pairs to non-positive inner products: fewer positive pairs, balanced bits
    assert facts["proxy_min_hamming"] >= 8, facts
    assert facts["proxy_positive_pair_fraction"] < 0.35 and facts["proxy_mean_cosine"] < -0.04, facts
    assert facts["proxy_mean_abs_column_sum"] < 2.5, facts
  # the untrained label network's codes are correlated: training is what separates them
  assert before["proxy_mean_hamming"] < 14 and before["proxy_min_hamming"] < facts["proxy_min_hamming"], before
  assert np.isfinite(logs["loss"])
  # inference-mode BatchNorm (running statistics) gives the signs the objective trained
  assert config.proxy_batchnorm
  net = state.proxy_net
  relaxed, _ = net.apply_fn({"params": net.params, "batch_stats": net.batch_stats}, jnp.eye(c), train=True,
                            mutable=["batch_stats"])
  np.testing.assert_array_equal(losses.binarize(relaxed), p)


def _step_shapes(jaxpr):
  shapes = set()
  for eqn in jaxpr.eqns:
    shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          shapes |= _step_shapes(inner)
  return shapes


def test_hash_step_never_builds_a_datapoint_similarity():
  n, bs, k, c = 97, 8, 16, 5
  dims = Dims(image_shape=(12,), text_dim=7, num_labels=c)
  rng = np.random.default_rng(5)
  full = {"image": jnp.asarray(rng.normal(size=(n, 12)), jnp.float32),
          "text": jnp.asarray(rng.normal(size=(n, 7)), jnp.float32),
          "labels": jnp.asarray(rng.random((n, c)) < 0.3, jnp.float32)}
  index = jnp.arange(bs)
  batch = dict({name: x[index] for name, x in full.items()}, index=index)
  forbidden = {(bs, n), (n, bs), (n, n)}
  key = jax.random.PRNGKey(0)
  for modality in ("image", "text"):
    config = dcph.Config(bits=k, image_hidden=(11,), text_hidden=(11,), proxy_hidden=13)
    state = jax.eval_shape(lambda key: dcph.init(key, config, dims, n), key)
    step = {ph.name: ph.step for ph in dcph.stages(config, n)[1].phases}[modality]
    shapes = _step_shapes(jax.make_jaxpr(step)(state, batch, full, key).jaxpr)
    assert (bs, c) in shapes  # labels meet the codes only through the (bs, C) proxy logits
    assert not shapes & forbidden, shapes & forbidden
  # control: the detector does see DCMH's (bs, n) similarity
  config = dcmh.Config(bits=k, image_hidden=(11,), text_hidden=(11,))
  state = jax.eval_shape(lambda key: dcmh.init(key, config, dims, n), key)
  step = dcmh.stages(config, n)[0].phases[0].step
  shapes = _step_shapes(jax.make_jaxpr(step)(state, batch, full, key).jaxpr)
  assert (bs, n) in shapes


@pytest.mark.slow
def test_short_run_beats_chance_and_checkpoint_keeps_the_proxies(tmp_path):
  # one training run serves both checks (keeps the file's runtime down)
  ds = data.load("synthetic")
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  spec = get_method("dcph")
  # published lrs are for AlexNet fine-tuning; a feature MLP this small needs a larger image lr
  config = spec.Config(bits=16, epochs=6, image_lr=5e-3, image_hidden=(256,), text_hidden=(256,),
                       proxy_hidden=256, proxy_epochs=4)
  options = trainer.TrainOptions(progress=False, eval_every=0)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = trainer.fit(spec, config, ds, options, store=store)
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["map"] > chance + 0.2, (direction, result.final[direction]["map"], chance)

  trained = np.asarray(result.state.model.proxies[0])
  initial = np.asarray(runstate.init_state(spec, config, Dims.of(ds), ds.train.size).model.proxies[0])
  assert not np.array_equal(trained, initial)  # the proxy stage changed them
  restored = checkpoint.restore(tmp_path)
  np.testing.assert_array_equal(np.asarray(restored.model.proxies), trained)
  again = dcph.set_proxies(restored.model, None)  # and they are sign(P~) of the saved label net
  np.testing.assert_array_equal(np.asarray(again.proxies), trained)


def test_config_defaults_and_image_lr_table():
  c = dcph.Config()
  assert (c.batch_size, c.epochs, c.scale, c.margin_per_bit, c.cross_weight, c.quant_weight) == (
      40, 12, 0.3, 0.3, 0.1, 0.1)
  assert c.weight_decay == 1e-5 and c.text_lr == pytest.approx(10 ** -1.5) and c.text_lr_decay_steps == 200
  assert c.positives_in_denominator is False
  assert [dcph.image_learning_rate(dataclasses.replace(c, bits=b)) for b in (16, 32, 64)] == [8e-4, 6e-4, 3e-4]
  assert dcph.image_learning_rate(dataclasses.replace(c, bits=128, image_lr=1e-3)) == 1e-3
  with pytest.raises(UserError, match="image_lr"):
    dcph.image_learning_rate(dataclasses.replace(c, bits=128))
  # the table survives the JSON round trip of checkpoint metadata (lists instead of tuples)
  assert dcph.image_learning_rate(dataclasses.replace(c, image_lr_by_bits=([32, 6e-4],))) == 6e-4


def test_proxy_stage_defaults_are_psldhs_on_the_ports_label_net():
  c = dcph.Config()
  assert (c.proxy_loss, c.proxy_beta, c.proxy_balance) == ("psldh", 0.01, 0.05)
  assert (c.proxy_hidden, c.proxy_batchnorm) == (4096, True)
  assert (c.proxy_lr, c.proxy_lr_decay_steps, c.proxy_lr_decay, c.proxy_weight_decay, c.proxy_momentum) == (
      1e-3, 100, 0.1, 1e-5, 0.0)
  assert c.proxy_epochs * c.proxy_steps == 200  # PSLDH's 200 full-batch updates
  # the earlier default stays one preset away, and every field it sets is a Config field
  old = dataclasses.replace(c, **dcph.SPEC.presets["pairwise-proxy"])
  assert (old.proxy_loss, old.proxy_balance, old.proxy_lr, old.proxy_lr_decay_steps) == ("pairwise", 1.0, 0.01, 0)
  with pytest.raises(UserError, match="proxy_loss"):
    dcph.stages(dataclasses.replace(c, proxy_loss="gram"), 10)


def test_text_lr_zero_runs_the_text_net_at_the_image_lr():
  c = dcph.Config(bits=32)
  schedule = dcph.text_learning_rate(c)  # jxhash default: 10^-1.5 halved every 200 text updates
  np.testing.assert_allclose([float(schedule(jnp.asarray(i))) for i in (0, 199, 200, 400)],
                             np.array([1, 1, 0.5, 0.25]) * 10 ** -1.5, rtol=1e-6)
  port = dataclasses.replace(c, text_lr=0.0, text_lr_decay_steps=0)  # what the Paddle port runs
  assert dcph.text_learning_rate(port) == dcph.image_learning_rate(port) == 6e-4


@pytest.mark.slow
def test_psldh_label_net_has_no_batchnorm_and_trains():
  config = dataclasses.replace(SMALL_CONFIG, proxy_hidden=64, proxy_batchnorm=False, proxy_beta=0.01)
  state = dcph.init(jax.random.PRNGKey(2), config, SMALL_DIMS, 20)
  assert not state.proxy_net.batch_stats and set(state.proxy_net.params) == {"hidden", "hash"}
  proxies = dcph.train_proxies(jax.random.PRNGKey(2), config, SMALL_DIMS.num_labels)
  assert proxies.shape == (10, 32) and set(np.unique(np.asarray(proxies))) == {-1.0, 1.0}
  assert not np.array_equal(proxies, state.proxies)  # the 200 updates moved some signs


# Statistics of the proxy files shipped with the public DCPH port (MIRFlickr, C = 24, K = 16..64):
# mean |column sum| 1.7-2.4, positive pairs 0.29-0.39, mean cosine -0.035..-0.024.
SHIPPED_FINGERPRINT = {"proxy_mean_abs_column_sum": 2.0, "proxy_positive_pair_fraction": 0.34,
                       "proxy_mean_cosine": -0.03}


@pytest.mark.slow
def test_default_proxies_on_mirflickr_labels_resemble_the_shipped_ones(mirflickr_dir):
  import scipy.io
  labels = scipy.io.loadmat(mirflickr_dir / "mirflickr25k-lall.mat")["LAll"]
  num_labels = labels.shape[1]
  assert num_labels == 24
  config = dcph.Config(bits=32)
  seeds = range(3)
  trained = [dcph.proxy_fingerprint(dcph.train_proxies(jax.random.PRNGKey(s), config, num_labels)) for s in seeds]
  rng = np.random.default_rng(0)
  random = [dcph.proxy_fingerprint(np.where(rng.normal(size=(num_labels, 32)) >= 0, 1.0, -1.0)) for _ in range(500)]
  for name, target in SHIPPED_FINGERPRINT.items():
    ours = np.mean([f[name] for f in trained])
    chance = np.mean([f[name] for f in random])
    assert abs(ours - target) < abs(chance - target), (name, ours, chance, target)


def test_b_is_sign_of_image_plus_text_buffers():
  state = jax.jit(dcph.init, static_argnums=(1, 2, 3))(jax.random.PRNGKey(1), SMALL_CONFIG, SMALL_DIMS, 20)
  new = dcph.stages(SMALL_CONFIG, 20)[1].end_of_epoch(state, None)
  np.testing.assert_array_equal(new.codes, losses.binarize(state.outputs["image"] + state.outputs["text"]))
  assert not np.array_equal(state.codes, new.codes)  # B starts from an independent draw (port)

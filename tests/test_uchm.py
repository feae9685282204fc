"""UCHM (reconstruction): losses against numpy, on-the-fly similarity rows, bit selection, no labels."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import data, losses, metrics
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.spec import Dims
from jxhash.methods import get_method, uchm


def _np_cos(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return a @ b.T


def test_unimodal_similarity_and_target_match_numpy():
  rng = np.random.default_rng(0)
  xa, ya = rng.normal(size=(5, 7)), rng.random((5, 4))
  xb, yb = rng.normal(size=(9, 7)), rng.random((9, 4))
  for rescale in (False, True):
    got = uchm.unimodal_similarity(xa, ya, xb, yb, image_weight=0.3, rescale=rescale)
    ci, ct = _np_cos(xa, xb), _np_cos(ya, yb)
    if rescale:
      ci, ct = 2 * ci - 1, 2 * ct - 1
    np.testing.assert_allclose(got, 0.3 * ci + 0.7 * ct, atol=1e-5)
  mix = rng.uniform(-1, 1, size=(4, 6))
  np.testing.assert_allclose(uchm.similarity_target(mix, scale=1.5), np.clip(1.5 * mix, -1, 1), atol=1e-6)


def _np_mie_loss(c, t, lam, tau, margin):
  c, t = c.astype(np.float64), t.astype(np.float64)
  regression = np.mean((c - t) ** 2)
  clear = np.abs(t) >= tau
  direction = np.where(t >= 0, 1.0, -1.0)
  hinge = np.mean(clear * np.maximum(margin - direction * c, 0.0) ** 2)
  return regression + lam * hinge


def test_mie_loss_matches_numpy():
  rng = np.random.default_rng(1)
  c = rng.uniform(-1, 1, size=(12, 15)).astype(np.float32)
  t = rng.uniform(-1, 1, size=(12, 15)).astype(np.float32)
  got = uchm.mie_loss(c, t, saturation_weight=0.7, clear_threshold=0.4, margin=0.8)
  want = _np_mie_loss(c, t, 0.7, 0.4, 0.8)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # the hinge is active: without it the value differs
  assert abs(want - _np_mie_loss(c, t, 0.0, 0.4, 0.8)) > 1e-3


def _np_hashing_loss(f, g, fbuf, gbuf, s, u, index, intra, quant, w=None):
  full_f, full_g = fbuf.astype(np.float64).copy(), gbuf.astype(np.float64).copy()
  full_f[index], full_g[index] = f, g
  w = np.ones_like(s) if w is None else w
  pairs = (np.sum(w * (_np_cos(f, full_g) - s) ** 2) + np.sum(w * (_np_cos(g, full_f) - s) ** 2)
           + intra * (np.sum(w * (_np_cos(f, full_f) - s) ** 2) + np.sum(w * (_np_cos(g, full_g) - s) ** 2)))
  q = np.sum((u - f) ** 2) + np.sum((u - g) ** 2)
  bs, k = f.shape
  return pairs / (bs * fbuf.shape[0]) + quant * q / (bs * k)


def test_hashing_loss_matches_numpy():
  rng = np.random.default_rng(2)
  n, bs, k = 20, 6, 8
  index = rng.permutation(n)[:bs]
  f, g = np.tanh(rng.normal(size=(2, bs, k))).astype(np.float32)
  fbuf, gbuf = rng.uniform(-1, 1, size=(2, n, k)).astype(np.float32)
  s = rng.uniform(-1, 1, size=(bs, n)).astype(np.float32)
  u = np.where(rng.normal(size=(bs, k)) >= 0, 1.0, -1.0).astype(np.float32)
  got = uchm.hashing_loss(f, g, image_buffer=fbuf, text_buffer=gbuf, similarity=s, unified=u, index=index,
                          intra_weight=0.1, quant_weight=0.3)
  np.testing.assert_allclose(got, _np_hashing_loss(f, g, fbuf, gbuf, s, u, index, 0.1, 0.3), rtol=1e-5)
  # per-pair weights (the correction's down-weighting) scale each squared error
  w = rng.uniform(0, 1, size=(bs, n)).astype(np.float32)
  got = uchm.hashing_loss(f, g, image_buffer=fbuf, text_buffer=gbuf, similarity=s, unified=u, index=index,
                          intra_weight=0.1, quant_weight=0.3, weight=w)
  np.testing.assert_allclose(got, _np_hashing_loss(f, g, fbuf, gbuf, s, u, index, 0.1, 0.3, w), rtol=1e-5)


# --------------------------------------------------------------------------- UCHTIM correction


def _np_uchtim_correction(code_sim, s0, gamma, keep):
  """train_div.py's rule, transcribed: select_pos = |code_sim - S0| > gamma;
  S = (1 - select) S0 + select sign(code_sim - S0); weight = (1 - |S0|) select + 1 - select
  (entries in `keep` are left alone, as UCHTIM resets its diagonal)."""
  select = (np.abs(code_sim - s0) > gamma) & ~keep
  target = np.where(select, np.sign(code_sim - s0), s0)
  weight = np.where(select, 1.0 - np.abs(s0), 1.0)
  return target, weight


def test_corrected_similarity_matches_uchtim_rule():
  rng = np.random.default_rng(8)
  code_sim = rng.uniform(-1, 1, size=(6, 11)).astype(np.float32)
  s0 = rng.uniform(-1, 1, size=(6, 11)).astype(np.float32)
  keep = np.zeros((6, 11), bool)
  keep[np.arange(6), [2, 0, 7, 10, 4, 4]] = True
  keep[0, 2] = True
  s0[0, 2], code_sim[0, 2] = 1.0, -0.9  # disagree by 1.9 but kept
  target, weight = uchm.corrected_similarity(code_sim, s0, threshold=0.8, keep=jnp.asarray(keep))
  want_t, want_w = _np_uchtim_correction(code_sim, s0, 0.8, keep)
  np.testing.assert_allclose(target, want_t, atol=1e-6)
  np.testing.assert_allclose(weight, want_w, atol=1e-6)
  select = want_w != 1.0
  assert 0 < select.sum() < select.size  # some entries corrected, some not
  assert set(np.unique(np.asarray(target)[(np.abs(code_sim - s0) > 0.8) & ~keep])) <= {-1.0, 1.0}
  # hand-made: S = 0.5, codes say -0.5 (gap -1 > 0.8): target -1, weight 0.5; S = -0.2, codes
  # 0.5 (gap 0.7): unchanged
  t, w = uchm.corrected_similarity(jnp.array([[-0.5, 0.5]]), jnp.array([[0.5, -0.2]]), threshold=0.8)
  np.testing.assert_allclose(t, [[-1.0, -0.2]])
  np.testing.assert_allclose(w, [[0.5, 1.0]])


def test_code_similarity_matches_numpy():
  rng = np.random.default_rng(9)
  n, bs, k = 14, 5, 8
  index = rng.permutation(n)[:bs]
  f, g = np.tanh(rng.normal(size=(2, bs, k))).astype(np.float32)
  fbuf, gbuf = rng.uniform(-1, 1, size=(2, n, k)).astype(np.float32)
  full_f, full_g = fbuf.astype(np.float64).copy(), gbuf.astype(np.float64).copy()
  full_f[index], full_g[index] = f, g
  want = (_np_cos(f, full_g) + _np_cos(f, full_f) + _np_cos(g, full_g)) / 3
  got = uchm.code_similarity(f, g, image_buffer=fbuf, text_buffer=gbuf, index=index)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_corrected_loss_gradients_are_finite_and_the_target_is_constant():
  rng = np.random.default_rng(10)
  n, bs, k = 16, 4, 32
  index = jnp.arange(bs)
  s0 = jnp.asarray(rng.uniform(-1, 1, size=(bs, n)), jnp.float32)
  fbuf = jnp.asarray(rng.normal(size=(n, k)) * 1e3, jnp.float32)
  gbuf = jnp.asarray(rng.normal(size=(n, k)) * 1e3, jnp.float32)
  own = jnp.arange(n)[None, :] == index[:, None]

  def corrected_loss(f, g):
    target, weight = uchm.corrected_similarity(
        uchm.code_similarity(f, g, image_buffer=fbuf, text_buffer=gbuf, index=index), s0, threshold=0.8, keep=own)
    return uchm.hashing_loss(f, g, image_buffer=fbuf, text_buffer=gbuf, similarity=target,
                             unified=losses.binarize(f), index=index, intra_weight=0.1, quant_weight=0.1,
                             weight=weight)

  for scale in (1.0, 1e3):
    f = jnp.asarray(rng.normal(size=(bs, k)) * scale, jnp.float32)
    g = jnp.asarray(rng.normal(size=(bs, k)) * scale, jnp.float32).at[0].set(0.0)  # a zero row too
    for gr in jax.jit(jax.grad(corrected_loss, argnums=(0, 1)))(f, g):
      assert np.all(np.isfinite(gr)) and np.abs(gr).sum() > 0
  # the corrected target and its weights carry no gradient back into the code similarity
  c = jnp.asarray(rng.uniform(-1, 1, size=(bs, n)), jnp.float32)
  grad_c = jax.jit(jax.grad(lambda c: jnp.sum(sum(uchm.corrected_similarity(c, s0, threshold=0.3)))))(c)
  np.testing.assert_array_equal(grad_c, 0.0)
  # finite differences agree with the gradient of the weighted loss (target held fixed)
  f = jnp.asarray(np.tanh(rng.normal(size=(bs, k))), jnp.float32)
  g = jnp.asarray(np.tanh(rng.normal(size=(bs, k))), jnp.float32)
  target, weight = uchm.corrected_similarity(
      uchm.code_similarity(f, g, image_buffer=fbuf, text_buffer=gbuf, index=index), s0, threshold=0.8, keep=own)
  fixed = jax.jit(lambda f: uchm.hashing_loss(f, g, image_buffer=fbuf, text_buffer=gbuf, similarity=target,
                                              unified=losses.binarize(g), index=index, intra_weight=0.1,
                                              quant_weight=0.1, weight=weight))
  direction = jnp.asarray(rng.normal(size=f.shape), jnp.float32)
  eps = 1e-2
  numeric = (float(fixed(f + eps * direction)) - float(fixed(f - eps * direction))) / (2 * eps)
  analytic = float(jnp.sum(jax.jit(jax.grad(fixed))(f) * direction))
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=1e-5)


def test_correction_stage_follows_the_plain_one():
  config = uchm.Config(correction="codes", correction_epochs=7, epochs=30)
  stages = uchm.stages(config, 10)
  assert [(s.name, s.epochs) for s in stages] == [("mie", config.mie_epochs), ("hash", 23), ("correct", 7)]
  assert [s.phases[0].name for s in stages[1:]] == ["hash", "hash"]
  assert all(s.end_of_epoch is not None for s in stages[1:])
  plain = uchm.stages(uchm.Config(correction="none", epochs=30), 10)
  assert [(s.name, s.epochs) for s in plain] == [("mie", config.mie_epochs), ("hash", 30)]
  unimodal = uchm.stages(dataclasses.replace(config, similarity="unimodal"), 10)
  assert [(s.name, s.epochs) for s in unimodal] == [("hash", 23), ("correct", 7)]


@pytest.mark.slow  # optimiser steps
def test_correction_with_nothing_to_correct_is_the_plain_step(small_state):
  state, arrays, config = small_state
  index = jnp.arange(8)
  batch = dict({k: v[:8] for k, v in arrays.items()}, index=index)
  plain = uchm._hash_step(config)
  quiet = uchm._hash_step(dataclasses.replace(config, correction="codes", correction_threshold=3.0), correct=True)
  loud = uchm._hash_step(dataclasses.replace(config, correction="codes", correction_threshold=0.0), correct=True)
  key = jax.random.PRNGKey(0)
  a, logs_a = jax.jit(plain)(state, batch, arrays, key)
  b, logs_b = jax.jit(quiet)(state, batch, arrays, key)
  c, logs_c = jax.jit(loud)(state, batch, arrays, key)
  assert float(logs_b["corrected_fraction"]) == 0.0 and float(logs_c["corrected_fraction"]) > 0.5
  np.testing.assert_allclose(logs_a["loss"], logs_b["loss"], rtol=1e-6)
  for x, y in zip(jax.tree.leaves(a.nets), jax.tree.leaves(b.nets)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)
  assert abs(float(logs_c["loss"]) - float(logs_a["loss"])) > 1e-4


def test_gradients_finite_for_large_inputs_and_only_batch_rows_of_buffers():
  rng = np.random.default_rng(3)
  n, bs, k = 16, 4, 32
  index = jnp.arange(bs)
  f = jnp.asarray(rng.normal(size=(bs, k)) * 1e3, jnp.float32)
  g = jnp.asarray(rng.normal(size=(bs, k)) * 1e3, jnp.float32)
  s = jnp.asarray(rng.uniform(-1, 1, size=(bs, n)), jnp.float32)
  kw = dict(similarity=s, unified=losses.binarize(f), index=index, intra_weight=0.1, quant_weight=0.1)
  grads = jax.jit(jax.grad(lambda f, g, fb, gb: uchm.hashing_loss(f, g, image_buffer=fb, text_buffer=gb, **kw),
                           argnums=(0, 1, 2, 3)))(f, g, jnp.ones((n, k)), -jnp.ones((n, k)))
  for gr in grads[:2]:
    assert np.all(np.isfinite(gr)) and np.abs(gr).sum() > 0
  # the batch rows overwrite the buffers' rows: the stale buffer rows there get no gradient
  for gr in grads[2:]:
    assert np.all(np.isfinite(gr))
    np.testing.assert_array_equal(np.asarray(gr)[:bs], 0.0)
  c = jnp.asarray(rng.uniform(-1, 1, size=(bs, n)), jnp.float32)
  grad_c = jax.jit(jax.grad(lambda c: uchm.mie_loss(c, s, saturation_weight=1.0, clear_threshold=0.5, margin=0.8)))(c)
  assert np.all(np.isfinite(grad_c)) and np.abs(grad_c).sum() > 0
  # the generator: large raw features still give finite gradients
  gen = uchm.MIEGenerator(dim=k, hidden=32, tokens=2, heads=2, rank=8)
  x = jnp.asarray(rng.normal(size=(bs, 10)) * 1e4, jnp.float32)
  y = jnp.asarray(rng.random((bs, 6)) * 1e4, jnp.float32)
  params = jax.jit(gen.init)(jax.random.PRNGKey(0), x, y)["params"]

  def gen_loss(p):
    e = gen.apply({"params": p}, x, y)
    return uchm.mie_loss(losses.cosine_similarity(e, e), s[:, :bs], saturation_weight=1.0,
                         clear_threshold=0.5, margin=0.8)

  leaves = jax.tree.leaves(jax.jit(jax.grad(gen_loss))(params))
  assert all(np.all(np.isfinite(leaf)) for leaf in leaves)


def test_bit_selection_picks_the_more_confident_modality():
  f = jnp.asarray([[0.9, -0.1, 0.2, 0.5],
                   [-0.3, 0.5, -0.7, 0.1],
                   [0.2, -0.2, 0.1, 0.3]])
  g = jnp.asarray([[-0.2, -0.8, 0.6, -0.5],
                   [0.4, -0.5, 0.1, -0.9],
                   [-0.1, 0.9, -0.5, 0.2]])
  # per item and bit: the larger |value| (ties -> image)
  item = np.array([[0.9, -0.8, 0.6, 0.5],
                   [0.4, 0.5, -0.7, -0.9],
                   [0.2, 0.9, -0.5, 0.3]])
  np.testing.assert_allclose(uchm.select_bits(f, g, per="item"), item)
  # per bit: mean |f| per column = .467 .267 .333 .3; mean |g| = .233 .733 .4 .533
  # -> column 0 from image, columns 1..3 from text
  bit = np.concatenate([np.asarray(f)[:, :1], np.asarray(g)[:, 1:]], axis=1)
  np.testing.assert_allclose(uchm.select_bits(f, g, per="bit"), bit)
  state = uchm.State(generator=None, nets=None, gate=None, embedding=None,
                     outputs={"image": f, "text": g}, codes=None)
  np.testing.assert_array_equal(uchm.unify(state, uchm.Config(bits=4, bit_selection="bit")), np.sign(bit))
  np.testing.assert_array_equal(uchm.unify(state, uchm.Config(bits=4, bit_selection="item")), np.sign(item))
  # differs from sign(F + G) on this example (the point of the module)
  assert np.any(np.sign(bit) != np.sign(np.asarray(f) + np.asarray(g)))
  # the learned gate at init is a soft version of the per-item rule
  gate = uchm.BitGate(bits=4)
  params = gate.init(jax.random.PRNGKey(0), f, g)["params"]
  soft = uchm.gated_bits(gate.apply({"params": params}, f, g), f, g)
  clear = np.abs(np.asarray(f)) != np.abs(np.asarray(g))  # at exact ties the soft gate gives 0
  np.testing.assert_array_equal(np.sign(soft)[clear], np.sign(item)[clear])


@pytest.fixture(scope="module")
def small_state():
  """A state whose (untrained) generator has stored its embeddings of 37 random items."""
  rng = np.random.default_rng(4)
  n = 37
  arrays = {"image": jnp.asarray(rng.normal(size=(n, 12)), jnp.float32),
            "text": jnp.asarray(rng.normal(size=(n, 7)), jnp.float32)}
  config = uchm.Config(bits=16, **{k: v for k, v in uchm.SPEC.smoke.items() if k != "epochs"})
  # one compiled program: initialising op by op compiles every small op separately
  init = jax.jit(uchm.init, static_argnums=(1, 2, 3))
  state = init(jax.random.PRNGKey(1), config, Dims(image_shape=(12,), text_dim=7, num_labels=3), n)
  return jax.jit(uchm.store_embedding)(state, arrays), arrays, config


@pytest.mark.parametrize("similarity", ["mie", "unimodal"])
def test_similarity_rows_equal_chunked_matrix(small_state, similarity):
  state, arrays, config = small_state
  config = dataclasses.replace(config, similarity=similarity)
  full = uchm.similarity_matrix(state, arrays, config, chunk=10)  # 4 chunks, the last one short
  n = arrays["image"].shape[0]
  assert full.shape == (n, n)
  if similarity == "mie":
    e = np.asarray(jax.jit(uchm.embed)(state, arrays))
    want = _np_cos(e, e)
    assert np.std(want) > 0.05  # a real spread, not a constant matrix
  else:
    mix = 0.5 * _np_cos(arrays["image"], arrays["image"]) + 0.5 * _np_cos(arrays["text"], arrays["text"])
    want = np.clip(1.5 * mix, -1, 1)
  np.testing.assert_allclose(full, want, atol=1e-5)
  index = jnp.asarray([5, 0, 36, 17, 5])
  rows = jax.jit(lambda s, d, i: uchm.similarity_rows(s, d, i, config))(state, arrays, index)
  np.testing.assert_allclose(rows, full[np.asarray(index)], atol=1e-6)


def _recording(spec, seen):
  """The spec with every step and state function recording the keys it is handed."""

  def wrap_step(fn, name):
    def step(state, batch, data, key):
      seen.append((name, frozenset(batch), frozenset(data)))
      return fn(state, batch, data, key)
    return step

  def wrap_state_fn(fn, name):
    if fn is None:
      return None

    def run(state, data):
      seen.append((name, frozenset(), frozenset(data)))
      return fn(state, data)
    return run

  def stages(config, num_train):
    out = []
    for st in spec.stages(config, num_train):
      phases = tuple(dataclasses.replace(p, step=wrap_step(p.step, p.name)) for p in st.phases)
      out.append(dataclasses.replace(st, phases=phases, end_of_epoch=wrap_state_fn(st.end_of_epoch, "end"),
                                     finish=wrap_state_fn(st.finish, "finish")))
    return tuple(out)

  return dataclasses.replace(spec, stages=stages)


@pytest.fixture(scope="module")
def trained():
  ds = data.load("synthetic")
  seen = []
  spec = _recording(get_method("uchm"), seen)
  config = spec.Config(bits=16, mie_epochs=15, epochs=40, image_hidden=(512,), text_hidden=(512,))
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  return ds, seen, result


@pytest.mark.slow  # trains 55 epochs (the fixture it shares with the next test)
def test_training_never_sees_labels(trained):
  ds, seen, _ = trained
  assert uchm.SPEC.supervised is False and ds.labels is not None
  names = {name for name, _, _ in seen}
  assert {"mie", "hash", "end", "finish"} <= names, names
  for name, batch_keys, data_keys in seen:
    assert "labels" not in batch_keys and "labels" not in data_keys, (name, batch_keys, data_keys)
    assert {"image", "text"} <= data_keys
  assert all({"image", "text", "index"} <= b for name, b, _ in seen if name in ("mie", "hash"))


@pytest.mark.slow
def test_short_run_beats_chance_in_both_directions(trained):
  ds, _, result = trained
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["map"] > chance + 0.25, (direction, result.final[direction]["map"], chance)
  state = runstate.seed_slice(result.state.model, 0)
  # stage 1 stored unit embeddings; the last end_of_epoch left the (default: gated) selection
  np.testing.assert_allclose(np.linalg.norm(np.asarray(state.embedding), axis=1), 1.0, atol=1e-5)
  assert uchm.Config().bit_selection == "gate"
  np.testing.assert_array_equal(state.codes, uchm.unify(state, uchm.Config()))
  assert set(np.unique(np.asarray(state.codes))) == {-1.0, 1.0}


def test_config_validation():
  dims = Dims(image_shape=(8,), text_dim=4, num_labels=3)
  with pytest.raises(ValueError, match="similarity"):
    uchm.init(jax.random.PRNGKey(0), uchm.Config(similarity="labels"), dims, 10)
  with pytest.raises(ValueError, match="bit_selection"):
    uchm.stages(uchm.Config(bit_selection="sum"), 10)
  with pytest.raises(ValueError, match="mie_epochs"):
    uchm.stages(uchm.Config(mie_epochs=0), 10)
  assert len(uchm.stages(uchm.Config(similarity="unimodal", mie_epochs=0, correction="none"), 10)) == 1
  with pytest.raises(ValueError, match="correction='labels': choose one of 'none', 'codes'"):
    uchm.stages(uchm.Config(correction="labels"), 10)
  for epochs in (0, 100, 120):
    with pytest.raises(ValueError, match="correction_epochs"):
      uchm.init(jax.random.PRNGKey(0), uchm.Config(correction="codes", correction_epochs=epochs), dims, 10)

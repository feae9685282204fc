"""MMACH: attention module, KL and triplet losses against numpy, label embeddings, encode, learning."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import data, metrics
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.spec import Dims
from jxhash.errors import UserError
from jxhash.methods import get_method, mmach
from jxhash.nets.attention import ModalityEnhancedAttention

DIMS = Dims(image_shape=(12,), text_dim=7, num_labels=5)
TINY = dict(bits=8, epochs=2, batch_size=8, image_hidden=(16,), text_hidden=(16,), label_hidden=(8,),
            attention_heads=2, triplet_samples=6)


def _attention(seed=0, bs=4, width=8, dims=(6, 3)):
  rng = np.random.default_rng(seed)
  query = jnp.asarray(rng.normal(size=(bs, width)), jnp.float32)
  context = tuple(jnp.asarray(rng.normal(size=(bs, d)), jnp.float32) for d in dims)
  module = ModalityEnhancedAttention(num_heads=2)
  params = module.init(jax.random.PRNGKey(seed), query, context)
  return module, params, query, context


# --------------------------------------------------------------------------- attention


def test_attention_shape_weights_and_dependence_on_each_context():
  module, params, query, (image, text) = _attention()
  out, inter = module.apply(params, query, (image, text), mutable=["intermediates"])
  assert out.shape == query.shape and out.dtype == jnp.float32
  weights = inter["intermediates"]["attention"]["attention_weights"][0]
  assert weights.shape == (4, 2, 1, 2)  # (B, heads, 1 query token, image + text tokens)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  # changing only the image (or only the text) features of an item changes only its output
  for changed in ((image.at[1].add(3.0), text), (image, text.at[1].add(3.0))):
    other = module.apply(params, query, changed)
    assert float(jnp.abs(other[1] - out[1]).max()) > 1e-3
    np.testing.assert_allclose(np.delete(other, 1, 0), np.delete(out, 1, 0), rtol=1e-5, atol=1e-6)


def test_attention_is_a_residual_block():
  module, params, query, context = _attention(seed=1)
  # with the attention's output projection zeroed, the block is LayerNorm(query), whatever the context
  zeroed = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if "out" in jax.tree_util.keystr(path) else x, params)
  q = np.asarray(query, np.float64)
  norm = (q - q.mean(1, keepdims=True)) / np.sqrt(q.var(1, keepdims=True) + 1e-6)
  for ctx in (context, tuple(c * -5.0 + 1.0 for c in context)):
    np.testing.assert_allclose(module.apply(zeroed, query, ctx), norm, rtol=1e-4, atol=1e-5)
  # with it, the context is added before the norm: the output differs from LayerNorm(query)
  assert float(jnp.abs(module.apply(params, query, context) - norm).max()) > 1e-2


def test_attention_rejects_bad_shapes():
  module, params, query, context = _attention()
  with pytest.raises(ValueError, match="num_heads"):
    ModalityEnhancedAttention(num_heads=3).init(jax.random.PRNGKey(0), query, context)
  with pytest.raises(ValueError, match="context 1"):
    module.apply(params, query, (context[0], context[1][:2]))


# --------------------------------------------------------------------------- losses


def _np_kl(h, buf, labels_a, labels_b, eps):
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  s_lab = unit(labels_a) @ unit(labels_b).T
  s_h = np.maximum(unit(h) @ unit(buf).T, 0.0)
  return np.sum((s_lab - s_h) * np.log((eps + s_lab) / (eps + s_h))) / (h.shape[0] * buf.shape[0])


def _labels(rng, n, c):
  lab = (rng.random((n, c)) < 0.35).astype(np.float32)
  lab[np.arange(n), rng.integers(0, c, n)] = 1.0  # every item has a label
  return lab


def test_kl_term_matches_numpy():
  rng = np.random.default_rng(0)
  bs, n, k, c = 6, 15, 8, 5
  h, buf = rng.normal(size=(bs, k)), rng.normal(size=(n, k))
  la, lb = _labels(rng, bs, c), _labels(rng, n, c)
  from jxhash import losses
  got = mmach.kl_term(jnp.asarray(h, jnp.float32), jnp.asarray(buf, jnp.float32),
                      losses.cosine_similarity(la, lb), eps=1e-5)
  np.testing.assert_allclose(got, _np_kl(h, buf, la, lb, 1e-5), rtol=1e-4)


def _np_triplet(a, c, la, lc, mu):
  k, num_labels = a.shape[1], la.shape[1]
  total, count = 0.0, 0
  for i in range(a.shape[0]):
    for j, l in itertools.product(range(c.shape[0]), repeat=2):
      oj, ol = la[i] @ lc[j], la[i] @ lc[l]
      if oj > ol:
        dj, dl = (k - a[i] @ c[j]) / 2, (k - a[i] @ c[l]) / 2
        total += max(0.0, dj - dl + mu * (oj - ol) / num_labels)
        count += 1
  return total / max(count, 1)


def test_triplet_loss_matches_numpy():
  rng = np.random.default_rng(1)
  a, c = np.tanh(rng.normal(size=(5, 8))), np.tanh(rng.normal(size=(7, 8)))
  la, lc = _labels(rng, 5, 4), _labels(rng, 7, 4)
  got = mmach.triplet_loss(jnp.asarray(a, jnp.float32), jnp.asarray(c, jnp.float32), la, lc, mu=3.0)
  want = _np_triplet(a, c, la, lc, 3.0)
  assert want > 0
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_triplet_loss_hand_made_cases():
  anchor = jnp.ones((1, 4))
  labels_i = jnp.array([[1.0, 1.0, 0.0]])
  labels = jnp.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # shares 2 labels (positive), 0 (negative)
  # positive at distance 2, negative at distance 0: the one valid triplet costs 2 - 0 + 3 * 2 / 3 = 4
  codes = jnp.array([[1.0, 1.0, -1.0, -1.0], [1.0, 1.0, 1.0, 1.0]])
  assert float(mmach.triplet_loss(anchor, codes, labels_i, labels, mu=3.0)) == pytest.approx(4.0)
  # positive at 0, negative at 4: 0 - 4 + 2 < 0, the hinge is inactive
  codes = jnp.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
  assert float(mmach.triplet_loss(anchor, codes, labels_i, labels, mu=3.0)) == 0.0
  # ... until the margin exceeds the distance gap: 0 - 4 + 9 * 2 / 3 = 2
  assert float(mmach.triplet_loss(anchor, codes, labels_i, labels, mu=9.0)) == pytest.approx(2.0)
  # equal overlaps: no valid triplet, loss 0
  assert float(mmach.triplet_loss(anchor, codes, labels_i, labels[:1].repeat(2, 0), mu=9.0)) == 0.0


def _np_cos_dist(a, c):
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
  return np.maximum(1.0 - unit(a) @ unit(c).T, 0.0)


def _np_triplet_all(a, c, la, lc, margin):
  """SAALDH's TripletAllLoss (cos), transcribed with loops: the sum over (anchor, positive,
  negative) of the hinge, divided by the number of triplets with a positive loss."""
  d = _np_cos_dist(a, c)
  total, active = 0.0, 0
  for i in range(a.shape[0]):
    for j, k in itertools.product(range(c.shape[0]), repeat=2):
      if la[i] @ lc[j] > 0 and la[i] @ lc[k] == 0:
        loss = max(0.0, d[i, j] - d[i, k] + margin)
        total += loss
        active += loss > 1e-16
  return total / max(active, 1)


def _np_triplet_hard(a, c, la, lc, margin):
  """Batch-hard with cosine distance: farthest positive, nearest negative per anchor; mean over
  the anchors that have both."""
  d = _np_cos_dist(a, c)
  losses_ = []
  for i in range(a.shape[0]):
    pos = [d[i, j] for j in range(c.shape[0]) if la[i] @ lc[j] > 0]
    neg = [d[i, k] for k in range(c.shape[0]) if la[i] @ lc[k] == 0]
    if pos and neg:
      losses_.append(max(0.0, max(pos) - min(neg) + margin))
  return sum(losses_) / max(len(losses_), 1)


@pytest.mark.parametrize("form", ["all", "hard"])
def test_cosine_triplet_forms_match_numpy(form):
  fn, ref = ((mmach.triplet_all_loss, _np_triplet_all) if form == "all"
             else (mmach.triplet_hard_loss, _np_triplet_hard))
  rng = np.random.default_rng(5)
  for m, n, c in ((5, 7, 4), (16, 16, 6)):
    a, t = np.tanh(rng.normal(size=(m, 8))), np.tanh(rng.normal(size=(n, 8)))
    la, lc = _labels(rng, m, c), _labels(rng, n, c)
    la[0] = 0.0  # an anchor with no label: no positive, so it takes part in no triplet
    want = ref(a, t, la, lc, 0.3)
    assert want > 0
    got = fn(jnp.asarray(a, jnp.float32), jnp.asarray(t, jnp.float32), la, lc, margin=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_cosine_triplet_forms_hand_made_cases():
  anchor = jnp.array([[1.0, 0.0]])
  labels_a = jnp.array([[1.0, 0.0]])
  labels_t = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # target 0 positive, target 1 negative
  # positive orthogonal (d = 1), negative identical (d = 0): 1 - 0 + 0.3
  targets = jnp.array([[0.0, 2.0], [3.0, 0.0]])
  for fn in (mmach.triplet_all_loss, mmach.triplet_hard_loss):
    assert float(fn(anchor, targets, labels_a, labels_t, margin=0.3)) == pytest.approx(1.3)
    # positive identical, negative opposite (d clamps at 2): 0 - 2 + 0.3 < 0, inactive
    flipped = jnp.array([[5.0, 0.0], [-1.0, 0.0]])
    assert float(fn(anchor, flipped, labels_a, labels_t, margin=0.3)) == 0.0
    # no negative among the targets: no triplet, loss 0
    assert float(fn(anchor, targets, labels_a, jnp.ones((2, 2)), margin=0.3)) == 0.0
  # batch-hard takes the farthest positive and the nearest negative only
  labels_t = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
  targets = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]])  # d = 0, 1, 2, 1 - 1/√2
  want = 1.0 - (1.0 - 1.0 / np.sqrt(2.0)) + 0.3
  assert float(mmach.triplet_hard_loss(anchor, targets, labels_a, labels_t, margin=0.3)) == pytest.approx(want, rel=1e-5)


def test_loss_gradients_are_finite_for_large_and_zero_codes():
  from jxhash import losses
  rng = np.random.default_rng(2)
  h = jnp.asarray(rng.normal(size=(4, 16)) * 1e4, jnp.float32).at[0].set(0.0)  # a zero row too
  buf = jnp.asarray(rng.normal(size=(10, 16)) * 1e4, jnp.float32)
  la, lb = _labels(rng, 4, 3), _labels(rng, 10, 3)
  lb[0] = 0.0  # a target that is every anchor's negative
  sim = losses.cosine_similarity(la, lb)
  g_kl = jax.jit(jax.grad(lambda x: mmach.kl_term(x, buf, sim)))(h)
  g_tr = jax.jit(jax.grad(lambda x: mmach.triplet_loss(x, buf, la, lb, mu=16.0)))(h)
  g_all = jax.jit(jax.grad(lambda x: mmach.triplet_all_loss(x, buf, la, lb, margin=0.3)))(h)
  g_hard = jax.jit(jax.grad(lambda x: mmach.triplet_hard_loss(x, buf, la, lb, margin=0.3)))(h)
  for g in (g_kl, g_tr, g_all, g_hard):
    assert np.all(np.isfinite(g)) and float(jnp.abs(g).sum()) > 0
  # targets that are all zero or all equal: finite (zero or not) everywhere
  for targets in (jnp.zeros((10, 16)), jnp.ones((10, 16)) * 1e4):
    for fn in (mmach.triplet_all_loss, mmach.triplet_hard_loss):
      g = jax.jit(jax.grad(lambda x, fn=fn, t=targets: fn(x, t, la, lb, margin=0.3)))(h)
      assert np.all(np.isfinite(g))


def test_cosine_triplet_gradients_match_finite_differences():
  rng = np.random.default_rng(6)
  a = jnp.asarray(np.tanh(rng.normal(size=(6, 8))), jnp.float32)
  t = jnp.asarray(np.tanh(rng.normal(size=(9, 8))), jnp.float32)
  la, lt = _labels(rng, 6, 4), _labels(rng, 9, 4)
  for fn in (mmach.triplet_all_loss, mmach.triplet_hard_loss):
    f = jax.jit(lambda x, fn=fn: fn(x, t, la, lt, margin=0.3))
    grad = np.asarray(jax.jit(jax.grad(f))(a))
    direction = jnp.asarray(rng.normal(size=a.shape), jnp.float32)
    eps = 1e-3
    numeric = (float(f(a + eps * direction)) - float(f(a - eps * direction))) / (2 * eps)
    np.testing.assert_allclose(float(np.sum(grad * np.asarray(direction))), numeric, rtol=2e-2, atol=1e-4)


@pytest.mark.parametrize("field,value", [("triplet", "cosine"), ("triplet_targets", "buffer")])
def test_bad_triplet_choice_names_the_field(field, value):
  with pytest.raises(UserError, match=f"{field}={value!r}: choose one of .*('graded'|'random')"):
    mmach.Config(**{**TINY, field: value})


@pytest.mark.slow  # an optimiser step per form and modality
@pytest.mark.parametrize("form", ["graded", "all", "hard"])
def test_batch_targets_are_the_other_buffers_rows_of_the_batch(form):
  config = mmach.Config(**{**TINY, "triplet": form, "triplet_targets": "batch"})
  rng = np.random.default_rng(7)
  state = mmach.init(jax.random.PRNGKey(0), config, DIMS, 20)
  labels = _labels(rng, 20, DIMS.num_labels)
  arrays = {"image": rng.normal(size=(20, 12)).astype(np.float32),
            "text": rng.normal(size=(20, 7)).astype(np.float32), "labels": labels}
  index = jnp.asarray([3, 17, 0, 9, 12, 5, 1, 8])
  batch = dict({k: v[np.asarray(index)] for k, v in arrays.items()}, index=index)
  phases = {p.name: p for p in mmach.stages(config, 20)[0].phases}
  for modality, other in (("image", "text"), ("text", "image")):
    new, logs = jax.jit(phases[modality].step)(state, batch, arrays, jax.random.PRNGKey(1))
    out = new.outputs[modality][index]  # the batch outputs the loss saw
    want = mmach.cross_modal_triplet(config, out, state.outputs[other][index], batch["labels"], batch["labels"])
    np.testing.assert_allclose(logs["triplet"], want, rtol=1e-5)


# --------------------------------------------------------------------------- label input


def _embedding_file(tmp_path, rng):
  emb = rng.normal(size=(DIMS.num_labels, 6)).astype(np.float32)
  path = tmp_path / "emb.npy"
  np.save(path, emb)
  return emb, mmach.Config(label_embedding=str(path), **TINY)


def test_label_embedding_file_feeds_the_mean_embedding(tmp_path):
  rng = np.random.default_rng(3)
  emb, config = _embedding_file(tmp_path, rng)
  state = jax.eval_shape(lambda key: mmach.init(key, config, DIMS, 20), jax.random.PRNGKey(0))
  assert state.nets["label"].params["hidden0"]["kernel"].shape == (6, 8)  # E -> first label width
  labels = _labels(rng, 20, DIMS.num_labels)
  want = labels @ emb / labels.sum(1, keepdims=True)
  np.testing.assert_allclose(mmach.label_input(labels, jnp.asarray(emb)), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # an optimiser step
def test_a_label_phase_step_reads_the_embedding_file(tmp_path):
  rng = np.random.default_rng(3)
  _, config = _embedding_file(tmp_path, rng)
  state = mmach.init(jax.random.PRNGKey(0), config, DIMS, 20)
  labels = _labels(rng, 20, DIMS.num_labels)
  phase = mmach.stages(config, 20)[0].phases[0]
  assert phase.name == "label"
  arrays = {"image": rng.normal(size=(20, 12)).astype(np.float32),
            "text": rng.normal(size=(20, 7)).astype(np.float32), "labels": labels}
  index = jnp.arange(8)
  batch = dict({k: v[:8] for k, v in arrays.items()}, index=index)
  new, logs = jax.jit(phase.step)(state, batch, arrays, jax.random.PRNGKey(1))
  assert np.isfinite(logs["loss"])
  assert not np.allclose(new.outputs["label"][:8], state.outputs["label"][:8])
  np.testing.assert_array_equal(new.outputs["label"][8:], state.outputs["label"][8:])


@pytest.mark.parametrize("content", ["missing", "garbage", "rows", "ndim", "nan"])
def test_bad_label_embedding_file_names_the_file(tmp_path, content):
  path = tmp_path / f"{content}.npy"
  if content == "garbage":
    path.write_text("not an array")
  elif content == "rows":
    np.save(path, np.ones((DIMS.num_labels + 1, 4)))
  elif content == "ndim":
    np.save(path, np.ones(DIMS.num_labels))
  elif content == "nan":
    np.save(path, np.full((DIMS.num_labels, 4), np.nan))
  config = mmach.Config(label_embedding=str(path), **TINY)
  with pytest.raises(UserError, match=str(path)):
    mmach.init(jax.random.PRNGKey(0), config, DIMS, 20)


# --------------------------------------------------------------------------- encode


def test_encode_never_uses_the_label_net():
  config = mmach.Config(**TINY)
  state = jax.jit(mmach.init, static_argnums=(1, 2, 3))(jax.random.PRNGKey(0), config, DIMS, 20)
  broken = state.replace(nets=dict(state.nets, label=state.nets["label"].replace(
      params=jax.tree.map(lambda x: jnp.full_like(x, jnp.nan), state.nets["label"].params))))
  zeroed = state.replace(nets=dict(state.nets, label=state.nets["label"].replace(
      params=jax.tree.map(jnp.zeros_like, state.nets["label"].params))))
  rng = np.random.default_rng(4)
  for modality, width in (("image", 12), ("text", 7)):
    x = jnp.asarray(rng.normal(size=(9, width)), jnp.float32)
    codes = mmach.SPEC.encode(state, modality, x)
    assert codes.shape == (9, 8) and np.all(np.isfinite(codes))
    for other in (broken, zeroed):
      np.testing.assert_array_equal(mmach.SPEC.encode(other, modality, x), codes)
  with pytest.raises(ValueError, match="modality"):
    mmach.SPEC.encode(state, "label", jnp.zeros((1, 5)))


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_short_run_beats_chance_in_both_directions():
  ds = data.load("synthetic")
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])
  spec = get_method("mmach")
  config = spec.Config(bits=16, epochs=10, image_hidden=(256,), text_hidden=(256,), label_hidden=(128,),
                       lr_schedule="constant")
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  for direction in ("i2t", "t2i"):  # about chance + 0.3 measured; chance is about 0.36
    assert result.final[direction]["map"] > chance + 0.2, (direction, result.final[direction]["map"], chance)
  facts = spec.report(runstate.seed_slice(result.state.model, 0))
  assert facts["label_binary_bit_agreement"] > 0.6  # the label codes take part in B

"""MDCH: losses against numpy, the semantic mask, separate optimiser states, ablations, learning."""

import dataclasses

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jxhash import config as config_lib, data, losses, metrics
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.spec import Dims
from jxhash.methods import dcmh, get_method, mdch
from jxhash.nets.mask import MaskedMLPEncoder, SemanticMask


def _np_bce(z, l):
  z = z.astype(np.float64)
  return np.mean(l * np.logaddexp(0.0, -z) + (1 - l) * np.logaddexp(0.0, z))


def _np_likelihood(theta, s):
  return -np.sum(s * theta - np.logaddexp(0.0, theta))


def _np_dcmh(h, other, s, b, buffer, index, gamma, eta):
  full = buffer.astype(np.float64).copy()
  full[index] = h
  loss = (_np_likelihood(0.5 * h.astype(np.float64) @ other.T, s) + gamma * np.sum((b - h) ** 2)
          + eta * np.sum(full.sum(0) ** 2))
  return loss / (h.shape[0] * other.shape[0])


# --------------------------------------------------------------------------- losses


def test_label_loss_matches_numpy_and_is_finite_for_huge_logits():
  rng = np.random.default_rng(0)
  z = rng.normal(size=(6, 5)).astype(np.float32) * 3
  l = (rng.random((6, 5)) < 0.3).astype(np.float32)
  np.testing.assert_allclose(mdch.label_loss(z, l), _np_bce(z, l), rtol=1e-5)
  big = jnp.asarray([[5e3, -5e3], [-5e3, 5e3]], jnp.float32)
  lab = jnp.asarray([[1.0, 0.0], [1.0, 0.0]])
  value, grad = jax.value_and_grad(mdch.label_loss)(big, lab)
  np.testing.assert_allclose(value, 0.5 * 5e3, rtol=1e-5)  # two of four entries are wrong by 5e3
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_intra_objective_matches_numpy_and_buffer_is_constant():
  rng = np.random.default_rng(1)
  n, bs, k = 20, 5, 8
  h = rng.normal(size=(bs, k)).astype(np.float32)
  buffer = rng.normal(size=(n, k)).astype(np.float32)
  s = (rng.random((bs, n)) < 0.4).astype(np.float32)
  got = mdch.intra_objective(h, buffer=buffer, similarity=s, alpha=0.7)
  want = 0.7 * _np_likelihood(0.5 * h.astype(np.float64) @ buffer.T, s) / (bs * n)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # |theta| ~ 1e3: softplus keeps value and gradient finite; the buffer gets no gradient
  big_h, big_buf = jnp.asarray(h * 30), jnp.asarray(buffer * 30)
  assert float(jnp.abs(0.5 * big_h @ big_buf.T).max()) > 500
  grads = jax.grad(lambda a, b: mdch.intra_objective(a, buffer=b, similarity=s, alpha=1.0), argnums=(0, 1))(
      big_h, big_buf)
  assert np.all(np.isfinite(grads[0])) and np.abs(grads[0]).sum() > 0
  np.testing.assert_array_equal(grads[1], 0.0)


def test_inter_objective_is_dcmh_plus_weighted_label_loss():
  rng = np.random.default_rng(2)
  n, bs, k, c = 20, 5, 8, 4
  index = rng.permutation(n)[:bs]
  h = rng.normal(size=(bs, k)).astype(np.float32)
  other = rng.normal(size=(n, k)).astype(np.float32)
  buffer = rng.normal(size=(n, k)).astype(np.float32)
  s = (rng.random((bs, n)) < 0.4).astype(np.float32)
  b = np.where(rng.normal(size=(bs, k)) >= 0, 1.0, -1.0).astype(np.float32)
  z = rng.normal(size=(bs, c)).astype(np.float32)
  l = (rng.random((bs, c)) < 0.4).astype(np.float32)
  kw = dict(other=other, similarity=s, codes=b, buffer=buffer, index=index, gamma=0.7, eta=1.3)
  base_np = _np_dcmh(h, other, s, b, buffer, index, 0.7, 1.3)
  np.testing.assert_allclose(mdch.inter_objective(h, **kw), base_np, rtol=1e-5)
  np.testing.assert_allclose(mdch.inter_objective(h, label_logits=z, labels=l, beta=0.4, **kw),
                             base_np + 0.4 * _np_bce(z, l), rtol=1e-5)


# --------------------------------------------------------------------------- the mask


def _with(params, layer, **leaves):
  """A copy of `params` with some leaves of one layer replaced."""
  out = jax.tree.map(lambda x: x, flax.core.unfreeze(params))
  out[layer] = dict(out[layer], **leaves)
  return out


def _set_gate(params, bias):
  gate = params["gate"]
  return _with(params, "gate", kernel=jnp.zeros_like(gate["kernel"]), bias=jnp.full_like(gate["bias"], bias))


@pytest.mark.parametrize("residual", [True, False])
def test_mask_shapes_and_saturated_gates(residual):
  h = jax.random.normal(jax.random.PRNGKey(0), (4, 12))
  module = SemanticMask(num_labels=5, residual=residual, init_scheme="fan_in")
  params = module.init(jax.random.PRNGKey(1), h)["params"]
  out, logits = module.apply({"params": params}, h)
  assert out.shape == (4, 12) and logits.shape == (4, 5)
  # sigmoid(+100) == 1 and sigmoid(-100) == 0 in float32: m is exactly all ones / all zeros
  ones, _ = module.apply({"params": _set_gate(params, 100.0)}, h)
  zeros, _ = module.apply({"params": _set_gate(params, -100.0)}, h)
  np.testing.assert_allclose(ones, 2 * h if residual else h, rtol=1e-6)
  np.testing.assert_allclose(zeros, h if residual else 0 * h, rtol=1e-6, atol=1e-7)
  # a live gate really depends on the label predictions
  shifted = _with(params, "classifier", bias=params["classifier"]["bias"] + 3.0)
  assert np.abs(module.apply({"params": shifted}, h)[0] - out).max() > 1e-3


@pytest.mark.parametrize("detach", [False, True])
def test_classifier_head_gets_gradients(detach):
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)
  labels = jnp.asarray(rng.random((8, 3)) < 0.4, jnp.float32)
  net = MaskedMLPEncoder(bits=16, num_labels=3, hidden=(10,), init_scheme="fan_in", detach_prediction=detach)
  params = jax.jit(net.init)(jax.random.PRNGKey(0), x)["params"]
  codes, logits = jax.jit(net.apply)({"params": params}, x)
  assert codes.shape == (8, 16) and logits.shape == (8, 3)
  assert set(params) == {"hidden0", "mask", "hash"} and set(params["mask"]) == {"classifier", "gate"}

  def bce(p):
    return mdch.label_loss(net.apply({"params": p}, x)[1], labels)

  def hash_only(p):
    return jnp.sum(jnp.square(net.apply({"params": p}, x)[0]))

  g_bce = jax.jit(jax.grad(bce))(params)
  assert np.abs(g_bce["mask"]["classifier"]["kernel"]).sum() > 0
  assert np.abs(g_bce["hidden0"]["kernel"]).sum() > 0  # the label loss also shapes the shared feature
  np.testing.assert_array_equal(g_bce["hash"]["kernel"], 0.0)
  g_hash = jax.jit(jax.grad(hash_only))(params)["mask"]["classifier"]["kernel"]
  # the hash loss reaches the classifier through the mask unless the predictions are detached
  assert (np.abs(g_hash).sum() == 0) == detach


# --------------------------------------------------------------------------- optimiser states


def _toy(n=16, d=6, t=5, c=3, seed=0):
  rng = np.random.default_rng(seed)
  arrays = {"image": rng.normal(size=(n, d)), "text": rng.normal(size=(n, t)),
            "labels": (rng.random((n, c)) < 0.4) | (np.arange(c)[None] == rng.integers(0, c, (n, 1)))}
  arrays = {k: jnp.asarray(v, jnp.float32) for k, v in arrays.items()}
  dims = Dims(image_shape=(d,), text_dim=t, num_labels=c)
  index = jnp.arange(4)
  batch = {k: v[index] for k, v in arrays.items()}
  batch["index"] = index
  return arrays, batch, dims


def _trees_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow  # optimiser steps of both phases
def test_phases_share_params_but_keep_separate_optimiser_states():
  arrays, batch, dims = _toy()
  config = mdch.Config(bits=8, epochs=3, batch_size=4, image_hidden=(10,), text_hidden=(10,), init="fan_in",
                       momentum=0.9, lr_scaling="none", clip_norm=0.0)
  state0 = mdch.init(jax.random.PRNGKey(0), config, dims, 16)
  phases = {p.name: p.step for p in mdch.stages(config, 16)[0].phases}
  key = jax.random.PRNGKey(1)
  net0 = state0.nets["image"]
  assert set(net0.opt_states) == {"intra", "inter"}

  # intra phase: only the intra state moves; its momentum is the intra gradient
  state1, _ = phases["intra"](state0, batch, arrays, key)
  net1 = state1.nets["image"]
  sim = (batch["labels"] @ arrays["labels"].T > 0).astype(jnp.float32)
  g_intra = jax.grad(lambda p: mdch.intra_objective(net0.apply_fn({"params": p}, batch["image"])[0],
                                                    buffer=state0.outputs["image"], similarity=sim, alpha=1.0))(
                                                        net0.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
               optax.tree_utils.tree_get(net1.opt_states["intra"], "trace"), g_intra)
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(g_intra)) > 0
  assert _trees_equal(net1.opt_states["inter"], net0.opt_states["inter"])
  assert not _trees_equal(net1.params, net0.params)

  # inter phase on the same (shared) params: only the inter state moves, and its momentum holds
  # the inter gradient alone (a shared state would hold g_inter + 0.9 g_intra)
  state2, _ = phases["inter_image"](state1, batch, arrays, key)
  net2 = state2.nets["image"]

  def inter(p):
    out, logits = net1.apply_fn({"params": p}, batch["image"])
    return mdch.inter_objective(out, other=state1.outputs["text"], similarity=sim, codes=state1.codes[batch["index"]],
                                buffer=state1.outputs["image"], index=batch["index"], gamma=config.gamma, eta=config.eta,
                                label_logits=logits, labels=batch["labels"], beta=1.0)

  g_inter = jax.grad(inter)(net1.params)
  trace = optax.tree_utils.tree_get(net2.opt_states["inter"], "trace")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), trace, g_inter)
  assert _trees_equal(net2.opt_states["intra"], net1.opt_states["intra"])
  # first inter update: params_after_intra - lr * g_inter
  jax.tree.map(lambda new, old, g: np.testing.assert_allclose(new, old - config.lr * g, rtol=1e-4, atol=1e-6),
               net2.params, net1.params, g_inter)
  # the text network was not touched by the image phase
  assert _trees_equal(state2.nets["text"], state1.nets["text"])


# --------------------------------------------------------------------------- ablations


def test_ablation_flags_remove_their_component():
  _, _, dims = _toy()
  small = dict(bits=8, epochs=2, batch_size=4, image_hidden=(10,), text_hidden=(10,))

  def names(config):
    return tuple(p.name for p in mdch.stages(config, 16)[0].phases)

  full = mdch.Config(**small)
  no_intra = mdch.Config(intra=False, **small)
  no_mask = mdch.Config(mask=False, **small)
  assert names(full) == ("intra", "inter_image", "inter_text")
  assert names(no_intra) == ("inter_image", "inter_text")
  def shapes(config):  # the state's structure, without computing (or compiling) anything
    return jax.eval_shape(lambda key: mdch.init(key, config, dims, 16), jax.random.PRNGKey(0))

  assert set(shapes(no_intra).nets["image"].opt_states) == {"inter"}
  assert "mask" in shapes(full).nets["image"].params
  assert set(shapes(no_mask).nets["image"].params) == {"hidden0", "hash"}


@pytest.mark.slow  # an optimiser step
def test_without_the_mask_the_image_loss_is_dcmhs():
  arrays, batch, dims = _toy()
  no_mask = mdch.Config(mask=False, bits=8, epochs=2, batch_size=4, image_hidden=(10,), text_hidden=(10,))
  state = mdch.init(jax.random.PRNGKey(0), no_mask, dims, 16)
  # the image phase's loss is exactly DCMH's (no label term)
  _, logs = jax.jit(mdch.stages(no_mask, 16)[0].phases[1].step)(state, batch, arrays, jax.random.PRNGKey(1))
  out = mdch.encode(state, "image", batch["image"])
  want = losses.dcmh_objective(out, other=state.outputs["text"], similarity=(batch["labels"] @ arrays["labels"].T > 0).astype(jnp.float32),
                        codes=state.codes[batch["index"]], buffer=state.outputs["image"], index=batch["index"],
                        gamma=no_mask.gamma, eta=no_mask.eta)
  np.testing.assert_allclose(logs["loss"], want, rtol=1e-6)


def _two_epochs(spec, config, ds):
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  return runstate.seed_slice(result.state.model, 0)


@pytest.mark.slow
def test_both_ablations_off_is_dcmh():
  ds = data.load("synthetic", num_items=300, num_query=50, num_train=100, num_val=20)
  small = dict(bits=16, epochs=2, batch_size=32, image_hidden=(32,), text_hidden=(32,), init="fan_in", lr=0.01)
  a = _two_epochs(get_method("mdch"), mdch.Config(mask=False, intra=False, **small), ds)
  b = _two_epochs(get_method("dcmh"), dcmh.Config(**small), ds)
  for m in ("image", "text"):
    np.testing.assert_allclose(a.outputs[m], b.outputs[m], rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(a.outputs[m])).max() > 0
  # and the full method is not
  c = _two_epochs(get_method("mdch"), mdch.Config(**small), ds)
  assert np.abs(np.asarray(c.outputs["image"]) - np.asarray(b.outputs["image"])).max() > 1e-3


# --------------------------------------------------------------------------- learning


@pytest.mark.slow
def test_short_run_beats_chance_in_both_directions():
  ds = data.load("synthetic")
  chance = metrics.chance_map(ds.labels[ds.query], ds.labels[ds.retrieval])  # 0.363
  spec = get_method("mdch")
  # the defaults (fan-in init and lr scaling, clipping, eta 0.1) on 512-wide nets, 60 epochs
  config = spec.Config(bits=16, epochs=60, image_hidden=(512,), text_hidden=(512,))
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=20))
  for direction in ("i2t", "t2i"):
    assert result.final[direction]["map"] > chance + 0.2, (direction, result.final[direction]["map"], chance)


def test_config_defaults():
  c = config_lib.apply_preset(mdch.SPEC, "paper")
  assert (c.gamma, c.eta, c.batch_size, c.epochs, c.momentum) == (1.0, 1.0, 128, 500, 0.0)
  assert c.lr == pytest.approx(10 ** -1.5) and c.lr_end == 1e-6 and c.lr_schedule == "linear"
  assert (c.init, c.lr_scaling, c.clip_norm) == ("normal0.01", "none", 0.0)
  d = mdch.Config()
  assert {f.name for f in dataclasses.fields(d) if getattr(c, f.name) != getattr(d, f.name)} == {
      "init", "lr_scaling", "lr", "clip_norm", "eta"}
  assert c.mask and c.intra and c.mask_residual and not c.detach_prediction
  assert dataclasses.is_dataclass(c) and get_method("mdch") is mdch.SPEC

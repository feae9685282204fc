"""CLIP's text tower in place of a method's text MLP, on token ids (jxhash.nets.backbones, toolkit).

The tower's features read from a CLIP file equal open_clip's `encode_text` on the same random
weights; token ids pass the input normalisation untouched; the optimiser groups; smoke runs of
several methods on synthetic token ids whose checkpoints restore identical codes; the prepared
loader's text=clip-tokens; and the one-line refusals.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clip_reference

from jxhash import checkpoint, config as config_lib, data
from jxhash.errors import DataError, UserError
from jxhash.methods import get_method, toolkit
from jxhash.nets import backbones
from jxhash.spec import Dims
from jxhash.training import evaluation, inputs, runstate
from jxhash.training import trainer

TINY_TEXT = (32, 1, 2)  # width, layers, heads of the text transformer
TOKENS = dict(text_tokens=12, num_labels=4, num_items=80, num_query=16, num_train=32, num_val=8)
FEATURES = Dims((10,), 8, 4)
TOKEN_DIMS = Dims((10,), 12, 4, text_tokens=True)


def _config(name, **overrides):
  spec = get_method(name)
  values = {**spec.smoke, "bits": 16, "text_backbone_widths": TINY_TEXT, **overrides}
  return spec, dataclasses.replace(spec.Config(), **values)


def _with_seed_axis(state):
  return jax.tree.map(lambda a: a[None] if isinstance(a, jax.Array) else a, state)


def _first_seed(state):
  return jax.tree.map(lambda a: a[0] if isinstance(a, jax.Array) else a, state)


def _close(got, want):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("name", ["dcmh", "dcph"])
def test_text_features_from_a_clip_file_equal_open_clip(name, tmp_path):
  torch = pytest.importorskip("torch")
  pytest.importorskip("open_clip")
  from jxhash.nets.clip import tokenize
  model = clip_reference.tiny_clip(width=32, image_size=32, patch_size=16, vision_layers=1, text_layers=1)
  path = clip_reference.save(model, tmp_path / "tiny-clip.pt")
  # image features: the image net stays the MLP, and backbone_weights initialises the text tower
  spec, config = _config(name, backbone_weights=str(path))
  dims = Dims((10,), 77, 4, text_tokens=True)
  state = spec.warm_start(_with_seed_axis(spec.init(jax.random.PRNGKey(0), config, dims, 4)), config)
  state = _first_seed(state)
  params = state.nets["text"].params
  tokens = tokenize(["a photo of a dog", "two red cars on a street at night", ""])
  got = backbones.TextBackboneFeatures("clip-vit-b32", TINY_TEXT).apply({"params": params["backbone"]},
                                                                       jnp.asarray(tokens))
  with torch.no_grad():
    want = model.encode_text(torch.from_numpy(tokens.astype(np.int64))).numpy()
  _close(np.asarray(got), want)
  # the method's text code: the tower, then its hash layer (DCMH: linear; DCPH: tanh)
  codes = np.asarray(spec.encode(state, "text", jnp.asarray(tokens)))
  head = params["hash"]
  linear = np.asarray(got) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  _close(codes, linear if name == "dcmh" else np.tanh(linear))
  # the image net on features is untouched by the file
  assert "backbone" not in state.nets["image"].params


def test_a_text_tower_of_other_widths_names_the_entry(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("open_clip")
  path = clip_reference.save(clip_reference.tiny_clip(width=32, image_size=32, patch_size=16, vision_layers=1,
                                                      text_layers=2, quick_gelu=False, seed=None),
                             tmp_path / "two-layers.pt")
  spec, config = _config("dcmh", backbone_weights=str(path))
  state = _with_seed_axis(spec.init(jax.random.PRNGKey(0), config, TOKEN_DIMS, 4))
  with pytest.raises(UserError, match=r"two-layers.pt: unexpected key 'transformer.resblocks.1.*text tower"):
    spec.warm_start(state, config)


# --------------------------------------------------------------------------- inputs and optimiser


def test_token_ids_pass_the_normalisation_untouched():
  ds = data.load("synthetic", **TOKENS)
  assert ds.text_tokens and ds.text.dtype == np.int32 and ds.text.shape == (80, 12)
  assert Dims.of(ds).text_tokens and Dims.from_json(Dims.of(ds).to_json()) == Dims.of(ds)
  # start, word ids of the strongest dimensions, end
  assert np.all(ds.text[:, 0] == 49406) and np.all(ds.text[:, -1] == 49407)
  stats = inputs.fit_normalizer(ds, "standardize")
  np.testing.assert_array_equal(stats["text"]["mean"], np.zeros(12, np.float32))
  np.testing.assert_array_equal(stats["text"]["scale"], np.ones(12, np.float32))
  arrays = inputs.training_arrays(ds, stats, supervised=True)
  assert arrays["text"].dtype == np.int32
  np.testing.assert_array_equal(arrays["text"], ds.text[ds.train])
  assert arrays["image"].dtype == np.float32 and abs(float(arrays["image"].mean())) < 1e-5  # still standardised
  with pytest.raises(UserError, match=r"text inputs must be integer token ids of shape \(N, 12\), got float32"):
    inputs.normalize(stats, "text", ds.text.astype(np.float32), tokens=True)
  # features runs keep their identity: no text_tokens entry
  assert "text_tokens" not in Dims.of(data.load("synthetic", num_items=80, num_query=16, num_train=32, num_val=8)).to_json()


def test_the_text_tower_moves_at_the_backbone_scale():
  spec, config = _config("dcmh", backbone_lr_scale=0.25)
  tx = toolkit.text_backbone_tx(optax.sgd(0.1), config, TOKEN_DIMS)
  params = spec.init(jax.random.PRNGKey(0), config, TOKEN_DIMS, 4).nets["text"].params
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  keys = []
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    key = jax.tree_util.keystr(path)
    keys.append(key)
    np.testing.assert_allclose(np.asarray(u), -0.025 if "backbone" in key else -0.1, rtol=1e-6, err_msg=key)
  assert any("token_embedding" in k for k in keys) and any("['hash']" in k for k in keys)
  plain = optax.sgd(0.1)
  assert toolkit.text_backbone_tx(plain, config, FEATURES) is plain


# --------------------------------------------------------------------------- training


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcmh", "dcph", "mdch", "mmach", "hsidhn"])
def test_token_smoke_run_fine_tunes_the_tower_and_restores_identical_codes(name, tmp_path):
  spec, config = _config(name)
  ds = data.load("synthetic", **TOKENS)
  options = trainer.TrainOptions(progress=False, eval_every=1)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = trainer.fit(spec, config, ds, options, store=store)
  logged = [v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]
  assert logged and np.all(np.isfinite(logged))
  model = runstate.seed_slice(result.state.model, 0)
  tower = model.nets["text"].params["backbone"]["net"]["params"]
  fresh = runstate.init_state(spec, config, Dims.of(ds), int(ds.train.size)).model
  start = runstate.seed_slice(fresh, 0).nets["text"].params["backbone"]["net"]["params"]
  # fine-tuned end to end: the tower's embedding and its projection moved from their initialisation
  for key in ("token_embedding", "text_projection"):
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), tower[key], start[key])
    assert max(jax.tree.leaves(moved)) > 0, key
  enc = checkpoint.restore(tmp_path)
  for m in ("image", "text"):
    x = getattr(ds, m)
    expected = evaluation.encode(spec, model, m, inputs.normalize(result.normalizer, m, x, tokens=m == "text"))
    assert expected.shape == (ds.num_items, 16) and set(np.unique(expected)) == {-1, 1}
    np.testing.assert_array_equal(enc.encode(m, x), expected)


@pytest.mark.slow
def test_bfloat16_text_tower_trains_finite_and_computes_in_bfloat16():
  spec, config = _config("dcmh", backbone_dtype="bfloat16")
  tower = toolkit.text_backbone(config, TOKEN_DIMS)
  assert tower.dtype == jnp.bfloat16
  result = trainer.fit(spec, config, data.load("synthetic", **TOKENS), trainer.TrainOptions(progress=False, eval_every=0))
  logged = [v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]
  assert logged and np.all(np.isfinite(logged))
  # params stay float32
  tower_params = result.state.model.nets["text"].params["backbone"]
  assert {a.dtype for a in jax.tree.leaves(tower_params)} == {jnp.dtype(jnp.float32)}


@pytest.mark.slow
def test_prepared_folder_gives_clip_tokens_of_its_captions(tmp_path):
  pytest.importorskip("ftfy")
  import json
  from prepare_trees import make_mirflickr
  from jxhash.data.prepare import cli as prepare_cli
  from jxhash.nets.clip import tokenize
  raw = make_mirflickr(tmp_path / "raw", n=30)
  out = tmp_path / "prepared"
  assert prepare_cli.main(["mirflickr25k", "--raw", str(raw), "--out", str(out), "--rule", "num_query=5",
                           "--rule", "num_train=10", "--rule", "num_val=2", "--no-progress"]) == 0
  ds = data.load("prepared", out, image="tags", text="clip-tokens")
  captions = [" ".join(json.loads(line)) for line in (out / "captions.jsonl").read_text().splitlines()]
  assert ds.text_tokens and ds.text.shape == (len(captions), 77)
  np.testing.assert_array_equal(ds.text, tokenize(captions))
  assert ds.fingerprint() != data.load("prepared", out, image="tags").fingerprint()
  (out / "captions.jsonl").write_text("\n".join(['["a"]'] * 3) + "\n")
  with pytest.raises(DataError, match=r"captions.jsonl: 3 lines for the \d+ items of ids.txt"):
    data.load("prepared", out, image="tags", text="clip-tokens")


# --------------------------------------------------------------------------- refusals


def test_a_text_tower_on_bag_of_words_and_an_mlp_on_tokens_are_refused():
  spec, config = _config("dcmh", text_backbone="clip-vit-b32")
  with pytest.raises(UserError) as bow:
    spec.init(jax.random.PRNGKey(0), config, FEATURES, 4)
  assert str(bow.value).count("\n") == 0
  assert str(bow.value).startswith("text_backbone='clip-vit-b32' reads token ids, and this dataset's text is 8-d "
                                   "features (e.g. a bag-of-words): load its raw text as tokens (prepared: text=clip-tokens)")
  for name in ("dcph", "mdch", "mmach", "hsidhn"):  # every method that can take a text tower refuses alike
    other, cfg = _config(name, text_backbone="clip-vit-b32")
    with pytest.raises(UserError, match=r"^text_backbone='clip-vit-b32' reads token ids"):
      other.init(jax.random.PRNGKey(0), cfg, FEATURES, 4)
  with pytest.raises(UserError, match=r"text_backbone='mlp' takes text features, and this dataset's text is 12 CLIP"):
    spec.init(jax.random.PRNGKey(0), dataclasses.replace(config, text_backbone="mlp"), TOKEN_DIMS, 4)
  with pytest.raises(UserError, match=r"text_backbone_widths=\(32, 1\): clip-vit-b32 takes 3 positive widths"):
    spec.init(jax.random.PRNGKey(0), dataclasses.replace(config, text_backbone_widths=(32, 1)), TOKEN_DIMS, 4)
  with pytest.raises(UserError, match=r"text_backbone=.*choose one of"):
    spec.Config(text_backbone="bert")
  uchm, cfg = _config("uchm")
  with pytest.raises(UserError, match=r"UCHM reads text features .* CLIP token ids"):
    uchm.init(jax.random.PRNGKey(0), cfg, TOKEN_DIMS, 4)
  with pytest.raises(UserError, match=r"alexnet image backbone, and the CLIP text tower reads a CLIP file: give "
                                      r"that as text_backbone_weights"):
    dcph, cfg = _config("dcph", backbone_weights="alexnet.pth", backbone_widths=(4, 4, 4, 4, 4, 8))
    dims = Dims((64, 64, 3), 12, 4, text_tokens=True)
    dcph.warm_start(_with_seed_axis(dcph.init(jax.random.PRNGKey(0), cfg, dims, 4)), cfg)


def test_text_widths_from_the_command_line_and_token_data_checks():
  config = config_lib.apply_overrides(get_method("dcmh").Config(), ["text_backbone_widths=32,1,2"])
  assert config.text_backbone_widths == (32, 1, 2)
  with pytest.raises(DataError, match=r"CLIP token ids must be int32"):
    data.CrossModalData(image=np.zeros((4, 2), np.float32), text=np.zeros((4, 5), np.int64),
                        labels=np.eye(4, dtype=np.uint8), query=np.arange(2), retrieval=np.arange(2, 4),
                        train=np.arange(2, 4), val=np.arange(0), text_kind="clip-tokens")
  with pytest.raises(DataError, match=r"text_tokens=2 leaves no room"):
    data.load("synthetic", text_tokens=2)

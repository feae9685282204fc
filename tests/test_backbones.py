"""Every method on pixels through the shared image backbones (jxhash.nets.backbones).

Smoke runs with tiny backbones for every method that trains on pixels (finite, and a checkpoint
restores identical codes); the backbone's weights read from torchvision files (the features equal
torchvision's on the same pixels); the optimiser groups (constants frozen, the backbone's lr
scaled); the config's refusals; and a learning test on synthetic pixels.
"""

import dataclasses
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import clip_reference

from jxhash import checkpoint, config as config_lib, data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash.training import runstate
from jxhash.training import trainer
from jxhash.errors import UserError
from jxhash.methods import get_method, toolkit
from jxhash.nets import backbones
from jxhash.spec import Dims

# tiny widths of the published wirings (jxhash.nets.backbones: "Widths")
TINY = {"cnn-f": (4, 4, 4, 4, 4, 8), "alexnet": (4, 4, 4, 4, 4, 8), "resnet18": (4, 8, 8, 8),
        "resnet34": (4, 8, 8, 8), "clip-vit-b32": (32, 2, 2, 16)}
# the smallest image each backbone takes: CNN-F's fc6 needs 224, AlexNet's pool5 63
SIZE = {"cnn-f": 224, "alexnet": 64, "resnet18": 32, "resnet34": 32, "clip-vit-b32": 32}
PIXELS = dict(num_labels=4, num_items=80, num_query=16, num_train=32, num_val=8)


def _pixels(size):
  return data.load("synthetic", image_size=size, **PIXELS)


def _source(name):
  """The backbone of a method's sources (what backbone="auto" runs on pixels)."""
  return importlib.import_module(f"jxhash.methods.{name}").SOURCE_BACKBONE


def _config(name, backbone, **overrides):
  spec = get_method(name)
  kind = _source(name) if backbone == "auto" else backbone
  values = {**spec.smoke, "bits": 16, "backbone": backbone, "backbone_widths": TINY[kind], **overrides}
  return spec, dataclasses.replace(spec.Config(), **values)


# (method, backbone): each method's own ("auto": its sources'), DCMH through the shared path, and CLIP
CASES = [("dcph", "auto"), ("mmach", "auto"), ("mdch", "auto"), ("hsidhn", "auto"), ("uchm", "auto"),
         ("dcmh", "resnet18"), ("dcph", "clip-vit-b32")]


def test_sources_backbones_are_the_documented_ones():
  assert {m: _source(m) for m in ("dcmh", "dcph", "mmach", "mdch", "hsidhn", "uchm")} == {
      "dcmh": "cnn-f", "dcph": "alexnet", "mmach": "alexnet", "mdch": "cnn-f", "hsidhn": "resnet34", "uchm": "cnn-f"}


@pytest.mark.slow
@pytest.mark.parametrize("name,backbone", CASES)
def test_pixel_smoke_run_stays_finite_and_restores_identical_codes(name, backbone, tmp_path):
  spec, config = _config(name, backbone)
  ds = _pixels(SIZE[backbone if backbone != "auto" else _source(name)])
  # streamed, as pixels are by default, unless the config reads the whole image matrix
  stream = not spec.image_matrix_need(config, Dims.of(ds))
  options = trainer.TrainOptions(progress=False, eval_every=1, stream=stream)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = trainer.fit(spec, config, ds, options, store=store)
  logged = [v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]
  assert logged and np.all(np.isfinite(logged))
  model = runstate.seed_slice(result.state.model, 0)
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(model.nets["image"].params)]
  assert any("['backbone']['net']" in p for p in paths)
  enc = checkpoint.restore(tmp_path)
  for m in ("image", "text"):
    x = getattr(ds, m)
    x = x[np.arange(ds.num_items)] if m == "image" else x
    expected = evaluation.encode(spec, model, m, inputs.normalize(result.normalizer, m, x))
    assert expected.shape == (ds.num_items, 16) and set(np.unique(expected)) == {-1, 1}
    np.testing.assert_array_equal(enc.encode(m, x), expected)


def test_hsidhn_hashes_each_resnet34_stage():
  spec, config = _config("hsidhn", "auto")
  state = spec.init(jax.random.PRNGKey(0), config, Dims((32, 32, 3), 8, 4), 4)
  params = state.nets["image"].params
  blocks = {k.split("_")[0]: int(k.split("_")[1]) + 1 for k in params["backbone"]["net"]["params"] if "_" in k}
  assert blocks == {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}  # ResNet-34's
  assert sorted(k for k in params if k.startswith("head")) == ["head0", "head1", "head2", "head3"]
  pixels = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
  final = spec.encode(state, "image", pixels)
  assert final.shape == (5, 16) and np.all(np.abs(np.asarray(final)) < 1)
  # the text net follows `network` (the default's multi-scale MLP), not the image's template
  assert "backbone" not in state.nets["text"].params


def test_whether_the_image_matrix_is_needed_depends_on_the_config():
  hsidhn = get_method("hsidhn")
  assert hsidhn.image_matrix_need(hsidhn.Config()) == ""  # objective='dcmh' reads only the batch rows
  assert "second batch" in hsidhn.image_matrix_need(hsidhn.Config(objective="scahn"))
  uchm = get_method("uchm")  # on features for every config; on pixels its generator reads fixed features
  assert "every training image" in uchm.image_matrix_need(uchm.Config())
  assert "every training image" in uchm.image_matrix_need(uchm.Config(), Dims((10,), 8, 4))
  assert uchm.image_matrix_need(uchm.Config(), Dims((32, 32, 3), 8, 4)) == ""
  assert get_method("dcph").image_matrix_need(get_method("dcph").Config()) == ""


@pytest.mark.slow
def test_hsidhn_streams_pixels_unless_its_objective_reads_the_image_matrix():
  spec, config = _config("hsidhn", "auto", epochs=1)
  ds = _pixels(SIZE["resnet34"])
  assert not ds.image_in_memory  # synthetic pixels are made on demand: the trainer streams them
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  assert np.all(np.isfinite([v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]))
  scahn = dataclasses.replace(config, objective="scahn")
  with pytest.raises(UserError, match=r"hsidhn cannot stream images: .*objective='scahn' draws a second batch"):
    trainer.fit(spec, scahn, ds, trainer.TrainOptions(progress=False, eval_every=0))


@pytest.mark.slow
def test_bfloat16_backbone_trains_finite():
  spec, config = _config("dcph", "resnet18", backbone_dtype="bfloat16")
  result = trainer.fit(spec, config, _pixels(32), trainer.TrainOptions(progress=False, eval_every=0))
  logged = [v for h in result.history for k, v in h.items() if k not in ("epoch", "stage")]
  assert logged and np.all(np.isfinite(logged))


# --------------------------------------------------------------------------- weights


def _fresh_state(spec, config, dims, num_train=4):
  state = spec.init(jax.random.PRNGKey(0), config, dims, num_train)
  return jax.tree.map(lambda a: a[None] if isinstance(a, jax.Array) else a, state)


def _torch_features(model, pixels):
  """torchvision's features of uint8 NHWC pixels, preprocessed as torchvision's ImageNet models expect."""
  import torch
  from jxhash.nets.transforms import IMAGENET_MEAN, IMAGENET_STD
  x = (pixels.astype(np.float32) / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  with torch.no_grad():
    return model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()


def _close(got, want):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_resnet18_weights_file_is_placed_in_the_method_backbone(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  model = torchvision.models.resnet18(weights=None).eval()
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():  # statistics away from (0, 1), so that a frozen BatchNorm that ignored them would show
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
  path = tmp_path / "my-resnet18.pth"
  torch.save(model.state_dict(), path)
  model.fc = torch.nn.Identity()
  spec = get_method("dcph")
  config = dataclasses.replace(spec.Config(), **{**spec.smoke, "bits": 16, "backbone": "resnet18",
                                                 "backbone_weights": str(path)})
  state = spec.warm_start(_fresh_state(spec, config, Dims((32, 32, 3), 8, 4)), config)
  params = jax.tree.map(lambda a: a[0], state.nets["image"].params)
  pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  got = backbones.BackboneFeatures("resnet18").apply({"params": params["backbone"]}, jnp.asarray(pixels))
  _close(np.asarray(got), _torch_features(model, pixels))
  # the hash head keeps its initialisation; the encoder runs backbone then head
  codes = spec.encode(jax.tree.map(lambda a: a[0] if isinstance(a, jax.Array) else a, state), "image",
                      jnp.asarray(pixels))
  head = params["hash"]
  _close(np.tanh(np.asarray(got) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])), np.asarray(codes))


@pytest.mark.slow
def test_alexnet_weights_file_is_placed_in_the_method_backbone(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  model = torchvision.models.alexnet(weights=None).eval()
  path = tmp_path / "alexnet.pth"
  torch.save(model.state_dict(), path)
  model.classifier = model.classifier[:6]  # up to fc7's ReLU
  spec = get_method("mmach")
  config = dataclasses.replace(spec.Config(), **{**spec.smoke, "bits": 16, "backbone_weights": str(path)})
  state = spec.warm_start(_fresh_state(spec, config, Dims((64, 64, 3), 8, 4)), config)
  params = jax.tree.map(lambda a: a[0], state.nets["image"].params)
  pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
  got = backbones.BackboneFeatures("alexnet").apply({"params": params["backbone"]}, jnp.asarray(pixels))
  _close(np.asarray(got), _torch_features(model, pixels))


def test_clip_weights_file_is_placed_in_the_method_backbone(tmp_path):
  torch = pytest.importorskip("torch")
  pytest.importorskip("open_clip")
  model = clip_reference.tiny_clip(width=32, image_size=32, patch_size=16, vision_layers=2, text_layers=1)
  path = clip_reference.save(model, tmp_path / "tiny-clip.pt")
  spec, config = _config("mdch", "clip-vit-b32", backbone_weights=str(path))
  state = spec.warm_start(_fresh_state(spec, config, Dims((32, 32, 3), 8, 4)), config)
  params = jax.tree.map(lambda a: a[0], state.nets["image"].params)
  pixels = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
  got = backbones.BackboneFeatures("clip-vit-b32", TINY["clip-vit-b32"]).apply({"params": params["backbone"]},
                                                                              jnp.asarray(pixels))
  from jxhash.nets.clip import CLIP_MEAN, CLIP_STD
  x = (pixels.astype(np.float32) / 255 - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
  with torch.no_grad():
    want = model.encode_image(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
  _close(np.asarray(got), want)


def test_weights_of_another_shape_are_refused_with_the_entry(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  path = tmp_path / "my-resnet18.pth"
  torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
  spec, config = _config("dcph", "resnet18", backbone_weights=str(path))  # tiny widths
  state = _fresh_state(spec, config, Dims((32, 32, 3), 8, 4))
  with pytest.raises(UserError,
                     match=r"my-resnet18.pth: .* has shape \(64,\), the backbone's is \(4,\) \(backbone_widths"):
    spec.warm_start(state, config)


# --------------------------------------------------------------------------- optimiser groups


def test_constants_stay_and_the_backbone_moves_at_its_scale():
  spec, config = _config("dcph", "resnet18", backbone_lr_scale=0.25)
  dims = Dims((32, 32, 3), 8, 4)
  tx = toolkit.backbone_tx(optax.sgd(0.1), config, dims, "alexnet")
  params = spec.init(jax.random.PRNGKey(0), config, dims, 4).nets["image"].params
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  for path, u in jax.tree_util.tree_leaves_with_path(updates):
    key = jax.tree_util.keystr(path)
    want = 0.0 if "batch_stats" in key else (-0.025 if "backbone" in key else -0.1)
    np.testing.assert_allclose(np.asarray(u), want, rtol=1e-6, err_msg=key)
  # on features the optimiser is the one given, untouched
  plain = optax.sgd(0.1)
  assert toolkit.backbone_tx(plain, config.__class__(), Dims((10,), 8, 4), "alexnet") is plain


# --------------------------------------------------------------------------- refusals


def test_backbone_on_features_and_mlp_on_pixels_are_refused():
  spec = get_method("dcph")
  with pytest.raises(UserError, match=r"backbone='resnet18' trains on pixels, and this dataset has 10-d"):
    spec.init(jax.random.PRNGKey(0), spec.Config(backbone="resnet18"), Dims((10,), 8, 4), 4)
  with pytest.raises(UserError, match=r"backbone='mlp' takes image features.*32x32x3 pixels"):
    spec.init(jax.random.PRNGKey(0), spec.Config(backbone="mlp"), Dims((32, 32, 3), 8, 4), 4)
  with pytest.raises(UserError, match=r"backbone_widths=\(4, 8\): resnet18 takes 4 positive widths"):
    spec.init(jax.random.PRNGKey(0), spec.Config(backbone="resnet18", backbone_widths=(4, 8)),
              Dims((32, 32, 3), 8, 4), 4)
  with pytest.raises(UserError, match=r"backbone_weights=.* has none \(the dataset has image features\)"):
    config = spec.Config(backbone_weights="w.pth", **spec.smoke)
    spec.warm_start(_fresh_state(spec, config, Dims((10,), 8, 4)), config)
  with pytest.raises(UserError, match=r"alexnet needs images of at least 63"):
    spec.init(jax.random.PRNGKey(0), spec.Config(**spec.smoke), Dims((32, 32, 3), 8, 4), 4)
  with pytest.raises(UserError, match=r"backbone=.*choose one of"):
    spec.Config(backbone="vgg16")
  with pytest.raises(UserError, match=r"dcmh: backbone_weights applies to the shared backbones; .* vgg_f"):
    dcmh = get_method("dcmh")
    dcmh.init(jax.random.PRNGKey(0), dcmh.Config(backbone_weights="x.pth"), Dims((224, 224, 3), 8, 4), 4)


def test_widths_from_the_command_line_are_integers():
  config = config_lib.apply_overrides(get_method("hsidhn").Config(), ["backbone_widths=4,8,8,8"])
  assert config.backbone_widths == (4, 8, 8, 8)
  with pytest.raises(UserError, match="backbone_widths"):
    config_lib.apply_overrides(get_method("hsidhn").Config(), ["backbone_widths=4,x"])


# --------------------------------------------------------------------------- learning


def _chance_map(ds) -> float:
  """The expected mAP of a random ranking: the mean share of relevant retrieval items per query."""
  relevant = (ds.labels[ds.query] @ ds.labels[ds.retrieval].T) > 0
  return float(relevant.mean())


@pytest.mark.slow
def test_dcmh_learns_on_pixels_with_a_resnet18_shaped_backbone():
  """ResNet-18's wiring (2, 2, 2, 2 blocks) at small widths, from random weights, fine-tuned end to end
  on 32×32 synthetic pixels whose label squares carry the class: both directions beat chance.

  The optimiser settings are those of test_pixels' CNN-F learning test (DCMH's paper init and
  one plain-SGD lr, 0.1 here); synthetic pixels are a hard task for so small a net, and that
  test's margin over chance is the same.
  """
  ds = data.load("synthetic", image_size=32, num_labels=4, max_labels=1, num_items=400, num_query=60,
                 num_train=160, num_val=40, noise=0.2)
  chance = _chance_map(ds)
  assert 0.2 < chance < 0.3  # four single labels
  spec = get_method("dcmh")
  config = dataclasses.replace(spec.Config(), bits=16, epochs=15, batch_size=32, text_hidden=(32,), lr=0.1,
                               init="fan_in", lr_scaling="none", clip_norm=0.0, eta=1.0, backbone="resnet18",
                               backbone_widths=(8, 16, 16, 32))
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0))
  # measured (2-core CPU, the last epoch): i2t 0.358, t2i 0.342 against chance 0.253
  for d in ("i2t", "t2i"):
    assert result.final[d]["map"] > chance + 0.06, (d, result.final[d]["map"], chance)

"""UCHM on pixels: the hashing net fine-tunes a backbone, the similarity generator reads the
frozen pretrained backbone's features of every training image, computed once before training.

The smoke run that restores identical codes from its checkpoint is tests/test_backbones.py's
(`CASES`); here: the fixed features are the initial backbone's forward pass (per seed, from
the weights file when one is given) and do not move while the hashing backbone trains; the
generator and the unimodal target read them, standardised; the refusals.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import checkpoint, data
from jxhash.errors import TrainingInterrupted, UserError
from jxhash.methods import get_method, uchm
from jxhash.nets import backbones
from jxhash.spec import Dims
from jxhash.training import inputs, runstate, trainer

TINY_RESNET = (4, 8, 8, 8)
PIXELS = dict(num_labels=4, num_items=80, num_query=16, num_train=32, num_val=8)


def _config(**overrides):
  spec = get_method("uchm")
  values = {**spec.smoke, "bits": 16, "backbone": "resnet18", "backbone_widths": TINY_RESNET, **overrides}
  return spec, dataclasses.replace(spec.Config(), **values)


def _rows(images):
  """A `MethodSpec.prepare` row reader over an in-memory (n, H, W, 3) stack."""
  def rows(modality, chunk):
    assert modality == "image"
    for a in range(0, len(images), chunk):
      yield images[a:a + chunk]
  return rows


def _standardised(x):
  """Per-column standardisation over the rows in float64 (constant columns keep scale 1)."""
  x = np.asarray(x, np.float64)
  scale = x.std(0)
  return (x - x.mean(0)) / np.where(scale > 1e-8, scale, 1.0)


def _cosine(a, b):
  a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
  b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
  return a @ b.T


def _backbone_forward(backbone_params, pixels, widths=TINY_RESNET):
  return np.asarray(backbones.BackboneFeatures("resnet18", widths).apply({"params": backbone_params},
                                                                         jnp.asarray(pixels)))


@pytest.mark.slow
def test_fixed_features_are_the_initial_backbones_and_stay_while_the_hashing_backbone_trains():
  ds = data.load("synthetic", image_size=32, **PIXELS)
  spec, config = _config()
  dims = Dims.of(ds)
  assert spec.image_matrix_need(config, dims) == ""  # the pixels stream
  result = trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, eval_every=0, num_seeds=2))
  assert [h["stage"] for h in result.history] == ["mie", "mie", "hash", "hash"]
  assert np.all(np.isfinite([v for h in result.history for k, v in h.items() if "/" in k]))
  start = runstate.init_state(spec, config, dims, int(ds.train.size), seed=0, num_seeds=2).model
  pixels = np.asarray(ds.image[ds.train])
  text = inputs.normalize(result.normalizer, "text", ds.text[ds.train])
  for i in range(2):
    before = runstate.seed_slice(start, i)
    after = runstate.seed_slice(result.state.model, i)
    want = _backbone_forward(before.nets["image"].params["backbone"], pixels)
    got = np.asarray(after.fixed_image)
    assert got.shape == (32, 8) and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), before.nets["image"].params["backbone"],
                         after.nets["image"].params["backbone"])
    assert max(jax.tree.leaves(moved)) > 1e-4  # the hashing net's backbone was fine-tuned
    # the stored S_MIE embeddings are the generator's on the standardised fixed features
    gen = after.generator
    e = np.asarray(gen.apply_fn({"params": gen.params}, jnp.asarray(_standardised(want), jnp.float32),
                                jnp.asarray(text)), np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(after.embedding), e, atol=2e-4)
  # the seeds' backbones start apart, and so do their fixed features
  assert np.abs(np.asarray(result.state.model.fixed_image[0] - result.state.model.fixed_image[1])).max() > 1e-3


def test_unimodal_target_on_pixels_reads_the_standardised_fixed_features():
  spec, config = _config(similarity="unimodal", mie_epochs=0, image_weight=0.7, target_scale=1.2)
  n, dims = 12, Dims((32, 32, 3), 6, 4)
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  text = rng.normal(size=(n, 6)).astype(np.float32)
  model = runstate.init_state(spec, config, dims, n).model
  assert model.fixed_image.shape == (1, n, 8) and not np.any(np.asarray(model.fixed_image))
  model = spec.prepare(model, config, dims, _rows(pixels))
  state = runstate.seed_slice(model, 0)
  features = _backbone_forward(state.nets["image"].params["backbone"], pixels)
  np.testing.assert_allclose(np.asarray(state.fixed_image), features, rtol=1e-5,
                             atol=1e-5 * np.abs(features).max())
  index = jnp.asarray([3, 0, 7])
  rows = uchm.similarity_rows(state, {"text": jnp.asarray(text)}, index, config)
  x = _standardised(features)
  mix = 0.7 * _cosine(x[[3, 0, 7]], x) + 0.3 * _cosine(text[[3, 0, 7]], text)
  np.testing.assert_allclose(np.asarray(rows), np.clip(1.2 * mix, -1, 1), atol=1e-4)
  # with cos_rescale the raw (non-negative) features, as DJSRH's
  raw = dataclasses.replace(config, cos_rescale=True)
  rows = uchm.similarity_rows(state, {"text": jnp.asarray(text)}, index, raw)
  mix = 0.7 * (2 * _cosine(features[[3, 0, 7]], features) - 1) + 0.3 * (2 * _cosine(text[[3, 0, 7]], text) - 1)
  np.testing.assert_allclose(np.asarray(rows), np.clip(1.2 * mix, -1, 1), atol=1e-4)


@pytest.mark.slow
def test_fixed_features_come_from_the_weights_file(tmp_path):
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  torch.manual_seed(0)
  model = torchvision.models.resnet18(weights=None).eval()
  path = tmp_path / "resnet18.pth"
  torch.save(model.state_dict(), path)
  model.fc = torch.nn.Identity()
  spec, config = _config(backbone_widths=(), backbone_weights=str(path))
  dims = Dims((32, 32, 3), 6, 4)
  pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  state = runstate.init_state(spec, config, dims, 5).model
  state = spec.prepare(spec.warm_start(state, config), config, dims, _rows(pixels))
  from jxhash.nets.transforms import IMAGENET_MEAN, IMAGENET_STD
  x = (pixels.astype(np.float32) / 255 - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
  with torch.no_grad():
    want = model(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))).numpy()
  np.testing.assert_allclose(np.asarray(state.fixed_image[0]), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_on_features_nothing_changes_and_pixel_choices_are_refused():
  spec, config = _config(backbone="auto", backbone_widths=())
  features = Dims((10,), 6, 4)
  state = spec.init(jax.random.PRNGKey(0), config, features, 4)
  assert state.fixed_image is None  # no leaf: the checkpoints of runs on features stay as they were
  assert "backbone" not in state.nets["image"].params
  assert spec.prepare(state, config, features, None) is state
  with pytest.raises(UserError, match=r"backbone='resnet18' trains on pixels, and this dataset has 10-d"):
    spec.init(jax.random.PRNGKey(0), dataclasses.replace(config, backbone="resnet18"), features, 4)
  with pytest.raises(UserError, match=r"backbone='mlp' takes image features.*32x32x3 pixels.*auto \(cnn-f\)"):
    spec.init(jax.random.PRNGKey(0), dataclasses.replace(config, backbone="mlp"), Dims((32, 32, 3), 6, 4), 4)
  with pytest.raises(UserError, match=r"UCHM reads text features .* CLIP token ids"):
    spec.init(jax.random.PRNGKey(0), _config()[1], Dims((32, 32, 3), 12, 4, text_tokens=True), 4)


@pytest.mark.slow
def test_a_resumed_pixel_run_reads_its_fixed_features_from_the_checkpoint(tmp_path):
  ds = data.load("synthetic", image_size=32, **PIXELS)
  spec, config = _config()
  calls = []

  def counted(model, *args):
    calls.append(1)
    return uchm.prepare_fixed_features(model, *args)

  spec = dataclasses.replace(spec, prepare=counted)
  options = trainer.TrainOptions(progress=False, eval_every=1)
  full = trainer.fit(spec, config, ds, options)
  assert len(calls) == 1
  meta = checkpoint.run_metadata(spec, config, ds, options)

  class StopAt3(checkpoint.CheckpointStore):  # interrupted after the first hashing epoch's save
    def save_latest(self, state, stats, epoch, extra=None):
      super().save_latest(state, stats, epoch, extra)
      if epoch == 3:
        raise KeyboardInterrupt

  with pytest.raises(TrainingInterrupted):
    trainer.fit(spec, config, ds, options, store=StopAt3(tmp_path, meta))
  calls.clear()
  resumed = trainer.fit(spec, config, ds, dataclasses.replace(options, resume=True),
                        store=checkpoint.CheckpointStore.open(tmp_path, meta, resume=True))
  assert not calls  # the checkpoint holds them: no second pass, and none from the fine-tuned backbone
  np.testing.assert_array_equal(np.asarray(resumed.state.model.fixed_image), np.asarray(full.state.model.fixed_image))
  for m in ("image", "text"):
    np.testing.assert_array_equal(np.asarray(resumed.state.model.outputs[m]), np.asarray(full.state.model.outputs[m]))

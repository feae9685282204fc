"""Pixel images: lazy stacks, the streamed trainer, DCMH with CNN-F, augmentation, prefetch."""

import dataclasses
import threading

import jax
import numpy as np
import pytest

from jxhash import checkpoint, data
from jxhash.training import evaluation
from jxhash.training import inputs
from jxhash import distributed
from jxhash.training import runstate
from jxhash.training import trainer

from jxhash.spec import Dims
from jxhash.data import augment as augment_lib
from jxhash.data import io
from jxhash.data.core import RowSubset
from jxhash.data.prefetch import prefetch
from jxhash.errors import UserError
from jxhash.methods import get_method
from test_cnnf import vgg_f_layers, write_vgg_f
from test_data import pixels, save_v73, write_lineage

TINY_CNN = {"cnn_channels": (6, 8, 8, 8, 8), "cnn_fc_width": 16}
SMALL = dict(num_items=300, num_query=40, num_train=96, num_val=24)


# --------------------------------------------------------------------------- lazy stacks


def test_loader_leaves_the_pixel_stack_on_disk(tmp_path):
  rng = np.random.default_rng(0)
  write_lineage(tmp_path, "nus-wide-tc10", rng, 60, 10, empty_rows=(3, 41))
  pix = pixels(rng, 60)
  save_v73(tmp_path / "nus-wide-tc10-iall.mat", {"IAll": pix.transpose(1, 2, 3, 0)})
  opts = dict(tc=10, num_query=10, num_train=20, num_val=5)
  eager = data.load("nuswide", tmp_path, image="pixels", **opts)
  lazy = data.load("nuswide", tmp_path, image="pixels", stream_pixels=True, **opts)
  assert eager.image_in_memory and not lazy.image_in_memory
  assert lazy.split_info["streamed"] and lazy.split_info["dropped_unlabeled"] == 2
  # items 3 and 41 were dropped: the lazy view maps rows past them without reading anything
  assert isinstance(lazy.image, RowSubset) and lazy.image.shape == eager.image.shape == (58, 5, 4, 3)
  idx = np.array([57, 3, 3, 40, 0])
  np.testing.assert_array_equal(lazy.image[idx], eager.image[idx])
  np.testing.assert_array_equal(lazy.image[idx], np.delete(pix, [3, 41], axis=0)[idx])
  for split in ("query", "train"):
    np.testing.assert_array_equal(lazy.subset(split)[0], eager.subset(split)[0])


def test_synthetic_pixels_are_deterministic_and_label_driven():
  ds = data.load("synthetic", image_size=32, num_labels=4, max_labels=1, **SMALL)
  assert ds.is_pixels and not ds.image_in_memory and ds.image.shape == (300, 32, 32, 3)
  np.testing.assert_array_equal(ds.image[[5, 9]], ds.image[[5, 9]])
  np.testing.assert_array_equal(ds.image[7], ds.image[[7]][0])
  # images sharing a label share its square: their mean colours agree more than across labels
  label = ds.labels.argmax(1)
  top_left = ds.image[np.arange(300)][:, :16, :16].reshape(300, -1).mean(1)
  within = np.ptp(top_left[label == 0])
  assert abs(top_left[label == 0].mean() - top_left[label != 0].mean()) > within / 4


# --------------------------------------------------------------------------- streamed trainer


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcmh", "mmach"])
def test_streamed_training_equals_resident_training(name):
  ds = data.load("synthetic", **SMALL)
  spec = get_method(name)
  config = dataclasses.replace(spec.Config(), **{**spec.smoke, "bits": 16})
  runs = {}
  for stream in (False, True):
    options = trainer.TrainOptions(progress=False, eval_every=1, num_seeds=2, stream=stream, prefetch=3)
    runs[stream] = trainer.fit(spec, config, ds, options)
  for i in range(2):
    for m in ("image", "text"):
      x = inputs.normalize(runs[False].normalizer, m, getattr(ds, m))
      codes = [evaluation.encode(spec, runstate.seed_slice(runs[s].state.model, i), m, x) for s in (False, True)]
      np.testing.assert_array_equal(codes[0], codes[1])
  assert [h["image/loss"] for h in runs[False].history] == [h["image/loss"] for h in runs[True].history]


def test_methods_that_need_the_image_matrix_refuse_to_stream():
  ds = data.load("synthetic", **SMALL)
  spec = get_method("uchm")
  config = dataclasses.replace(spec.Config(), **spec.smoke)
  with pytest.raises(UserError, match="uchm cannot stream images.*unimodal similarity"):
    trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False, stream=True))


def test_augmenting_features_is_refused():
  ds = data.load("synthetic", **SMALL)
  spec = get_method("dcmh")
  with pytest.raises(UserError, match="applies to pixel images"):
    trainer.fit(spec, spec.Config(**spec.smoke), ds, trainer.TrainOptions(progress=False, augment="flip"))


# --------------------------------------------------------------------------- DCMH + CNN-F on pixels


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
  rng = np.random.default_rng(1)
  layers = vgg_f_layers(rng, channels=TINY_CNN["cnn_channels"], fc_width=TINY_CNN["cnn_fc_width"])
  mean = rng.uniform(90, 130, size=(224, 224, 3)).astype(np.float32)
  path = tmp_path_factory.mktemp("vgg") / "imagenet-vgg-f.mat"
  write_vgg_f(path, layers, mean)
  return path, layers, mean


@pytest.mark.slow
def test_dcmh_learns_from_streamed_pixels_and_restores_exactly(tmp_path):
  ds = data.load("synthetic", image_size=224, num_items=400, num_query=60, num_train=160, num_val=40,
                 num_labels=4, max_labels=1)
  chance = 0.25  # four equally likely single labels
  spec = get_method("dcmh")
  config = dataclasses.replace(spec.Config(), bits=16, epochs=15, batch_size=32, text_hidden=(32,), lr=0.03,
                               init="fan_in", lr_scaling="none", clip_norm=0.0, eta=1.0, **TINY_CNN)
  options = trainer.TrainOptions(progress=False, eval_every=5)
  store = checkpoint.CheckpointStore.open(tmp_path, checkpoint.run_metadata(spec, config, ds, options))
  result = trainer.fit(spec, config, ds, options, store=store)
  # measured 0.333 / 0.354 on a 2-core CPU
  for d in ("i2t", "t2i"):
    assert result.final[d]["map"] > chance + 0.05, (d, result.final[d]["map"])
  model = runstate.seed_slice(result.state.model, 0)
  mean = model.nets["image"].params["mean_image"]
  np.testing.assert_array_equal(mean, np.broadcast_to(np.float32((123.68, 116.779, 103.939)), (224, 224, 3)))
  enc = checkpoint.restore(tmp_path)
  raw = ds.image[ds.query[:24]]
  np.testing.assert_array_equal(enc.encode("image", raw), evaluation.encode(spec, model, "image", raw))


@pytest.mark.slow
def test_vgg_f_weights_start_every_seed_and_the_mean_image_never_trains(vgg_file):
  path, layers, mean = vgg_file
  ds = data.load("synthetic", image_size=224, num_labels=4, num_items=80, num_query=16, num_train=32, num_val=8)
  spec = get_method("dcmh")
  config = dataclasses.replace(spec.Config(), bits=16, epochs=1, batch_size=16, text_hidden=(32,),
                               vgg_f=str(path), weight_decay=5e-4, **TINY_CNN)
  state = runstate.init_state(spec, config, Dims.of(ds), ds.train.size, num_seeds=2)
  started = spec.warm_start(state.model, config).nets["image"].params
  for i in range(2):
    np.testing.assert_array_equal(started["conv3"]["kernel"][i], layers["conv3"]["filters"])
    np.testing.assert_array_equal(started["mean_image"][i], mean)
  assert not np.array_equal(started["fc8"]["kernel"][0], started["fc8"]["kernel"][1])  # fresh per seed

  state = state.replace(model=spec.warm_start(state.model, config))
  arrays = inputs.training_arrays(ds, inputs.fit_normalizer(ds, "standardize"), supervised=spec.supervised, image=False)
  mesh = distributed.make_mesh()
  epoch = trainer.StreamedEpoch(spec.stages(config, ds.train.size)[0], mesh, augment_lib.Augment(),
                              ds.image, lambda x: x)
  trained = epoch(distributed.replicate(state, mesh), arrays)[0].model.nets["image"].params
  np.testing.assert_array_equal(trained["mean_image"], started["mean_image"])  # not even weight decay
  assert not np.allclose(trained["conv1"]["kernel"], started["conv1"]["kernel"])


def test_vgg_f_on_image_features_is_refused(vgg_file):
  ds = data.load("synthetic", **SMALL)
  spec = get_method("dcmh")
  config = dataclasses.replace(spec.Config(), **spec.smoke, vgg_f=str(vgg_file[0]))
  with pytest.raises(UserError, match="vgg_f=.*image features"):
    trainer.fit(spec, config, ds, trainer.TrainOptions(progress=False))


# --------------------------------------------------------------------------- augmentation


def test_augment_parse():
  assert augment_lib.parse("none") == augment_lib.Augment()
  assert augment_lib.parse("flip+shift:16") == augment_lib.Augment(flip=True, shift=16)
  for bad in ("flop", "shift", "shift:-2", "flip:3", "shift:x"):
    with pytest.raises(UserError, match="cannot read"):
      augment_lib.parse(bad)


def _shifted(image, dy, dx, p):
  padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="edge")
  return padded[p + dy:p + dy + image.shape[0], p + dx:p + dx + image.shape[1]]


def test_flips_and_shifts_are_per_image_draws_of_the_right_transforms():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(64, 9, 7, 3), dtype=np.uint8)
  key = jax.random.PRNGKey(3)
  flipped = np.asarray(augment_lib.augment_images(key, images, augment_lib.parse("flip")))
  mirrored = np.array([np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped, images)])
  kept = np.array([np.array_equal(f, x) for f, x in zip(flipped, images)])
  assert (mirrored | kept).all() and 16 < mirrored.sum() < 48
  assert flipped.dtype == np.uint8

  p = 2
  moved = np.asarray(augment_lib.augment_images(key, images, augment_lib.parse(f"flip+shift:{p}")))
  offsets = set()
  for out, x in zip(moved, images):
    matches = [(f, dy, dx) for f in (False, True) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
               if np.array_equal(out, _shifted(x[:, ::-1] if f else x, dy, dx, p))]
    assert matches, "an output is no flip/shift of its input"
    offsets.add(matches[0][1:])
  assert len(offsets) > 10  # the 25 offsets are drawn per image, not once per batch
  same = augment_lib.augment_images(key, images, augment_lib.parse("flip+shift:2"))
  np.testing.assert_array_equal(moved, same)


# --------------------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_and_reraises_where_the_producer_failed():
  assert list(prefetch(range(50), 3)) == list(range(50))

  def failing():
    yield 1
    yield 2
    raise OSError("disk gone")

  got = []
  with pytest.raises(OSError, match="disk gone"):
    for item in prefetch(failing(), 2):
      got.append(item)
  assert got == [1, 2]


def test_prefetch_stops_its_thread_when_the_consumer_stops():
  before = threading.active_count()
  for item in prefetch(iter(range(10 ** 9)), 2):
    if item == 5:
      break
  assert threading.active_count() == before
  with pytest.raises(ValueError):
    next(prefetch([], 0))

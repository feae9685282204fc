"""CNN-F: MatConvNet LRN and pooling against numpy, the imagenet-vgg-f.mat importer, preprocessing.

Kept cheap: the full-width network is only traced (jax.eval_shape); numbers go through a network of
the same wiring with tiny widths, on one 224×224 batch of two images.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.io
from jax.test_util import check_grads
from numpy.lib.stride_tricks import sliding_window_view

from jxhash.errors import DataError, UserError
from jxhash.nets import vgg_f
from jxhash.nets.cnnf import CNNF, VGG_F_CHANNELS, VGG_F_LRN, local_response_norm
from jxhash.nets.vgg_f import load_vgg_f, preprocess

pytestmark = pytest.mark.usefixtures("strict_promotion")

TINY = {"channels": (6, 8, 8, 8, 8), "fc_width": 16}

# VGG-F as imagenet-vgg-f.mat holds it (Chatfield et al. 2014, Table 1), in MatConvNet's H×W×in×out.
VGG_F_SHAPES = {"conv1": (11, 11, 3, 64), "conv2": (5, 5, 64, 256), "conv3": (3, 3, 256, 256),
                "conv4": (3, 3, 256, 256), "conv5": (3, 3, 256, 256), "fc6": (6, 6, 256, 4096),
                "fc7": (1, 1, 4096, 4096)}


# ---------------------------------------------------------------------------------------------
# numpy references, written from MatConvNet's documentation and kernels.


def np_lrn(x, size, kappa, alpha, beta):
  """vl_nnnormalize: y_k = x_k / (kappa + alpha sum_{q in Q(k)} x_q²)^beta, channel by channel."""
  x = x.astype(np.float64)
  depth = x.shape[-1]
  out = np.empty_like(x)
  for k in range(depth):
    lo = max(0, k - math.floor((size - 1) / 2))
    hi = min(depth - 1, k + math.ceil((size - 1) / 2))
    out[..., k] = x[..., k] / (kappa + alpha * np.sum(x[..., lo:hi + 1] ** 2, axis=-1)) ** beta
  return out


def np_conv(x, filters, biases, stride, pad):
  """vl_nnconv (a correlation); pad = [top bottom left right] of zeros."""
  x = np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]), (0, 0)))
  kh, kw = filters.shape[:2]
  windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
  out = np.einsum("nhwcij,ijck->nhwk", windows, filters.astype(np.float64), optimize=True)
  return out + biases.reshape(-1)


def np_maxpool(x, pad):
  """vl_nnpool max 3×3 stride 2: padded cells never win (pooling_cpu.cpp starts at -inf)."""
  x = np.pad(x, ((0, 0), (pad[0], pad[1]), (pad[2], pad[3]), (0, 0)), constant_values=-np.inf)
  return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def np_cnnf(x, layers, pool1_pad=(0, 1, 0, 1)):
  """The SimpleNN chain of imagenet-vgg-f.mat up to fc7, on (N, H, W, 3) input."""
  relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
  w = {name: (layer["filters"], layer["biases"]) for name, layer in layers.items() if "filters" in layer}
  h = x.astype(np.float64)
  h = np_maxpool(np_lrn(relu(np_conv(h, *w["conv1"], 4, (0, 0, 0, 0))), *VGG_F_LRN), pool1_pad)
  h = np_maxpool(np_lrn(relu(np_conv(h, *w["conv2"], 1, (2, 2, 2, 2))), *VGG_F_LRN), (0, 0, 0, 0))
  for name in ("conv3", "conv4", "conv5"):
    h = relu(np_conv(h, *w[name], 1, (1, 1, 1, 1)))
  h = np_maxpool(h, (0, 0, 0, 0))
  h = relu(np_conv(h, *w["fc6"], 1, (0, 0, 0, 0)))
  h = relu(np_conv(h, *w["fc7"], 1, (0, 0, 0, 0)))
  return h.reshape(h.shape[0], -1)


# ---------------------------------------------------------------------------------------------
# A MatConvNet SimpleNN file of imagenet-vgg-f.mat's structure, with random weights.


def vgg_f_layers(rng, channels=TINY["channels"], fc_width=TINY["fc_width"]):
  """name -> layer fields, in imagenet-vgg-f.mat's order; filters scaled to keep LRN active."""
  c1, c2, c3, c4, c5 = channels
  shapes = {"conv1": (11, 11, 3, c1), "conv2": (5, 5, c1, c2), "conv3": (3, 3, c2, c3),
            "conv4": (3, 3, c3, c4), "conv5": (3, 3, c4, c5), "fc6": (6, 6, c5, fc_width),
            "fc7": (1, 1, fc_width, fc_width), "fc8": (1, 1, fc_width, 10)}
  conv = {"conv1": (4, [0, 0, 0, 0]), "conv2": (1, [2, 2, 2, 2]), "conv3": (1, [1, 1, 1, 1]),
          "conv4": (1, [1, 1, 1, 1]), "conv5": (1, [1, 1, 1, 1]), "fc6": (1, [0, 0, 0, 0]),
          "fc7": (1, [0, 0, 0, 0]), "fc8": (1, [0, 0, 0, 0])}
  order = ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2", "conv3", "relu3",
           "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8", "prob"]
  layers = {}
  for name in order:
    if name in shapes:
      shape = shapes[name]
      fan_in = shape[0] * shape[1] * shape[2]
      # Pixels are ~±100; a 1/sqrt(fan_in) scale keeps activations there, where kappa + alpha·Σx²
      # is well above kappa and the LRN changes the values a lot.
      filters = (rng.normal(size=shape) / math.sqrt(fan_in)).astype(np.float32)
      biases = rng.normal(scale=0.1, size=(1, shape[-1])).astype(np.float32)
      stride, pad = conv[name]
      layers[name] = {"name": name, "type": "conv", "filters": filters, "biases": biases,
                      "stride": [stride, stride], "pad": pad}
    elif name.startswith("norm"):
      layers[name] = {"name": name, "type": "normalize", "param": list(VGG_F_LRN)}
    elif name.startswith("pool"):
      layers[name] = {"name": name, "type": "pool", "method": "max", "pool": [3, 3], "stride": [2, 2],
                      "pad": [0, 1, 0, 1] if name == "pool1" else [0, 0, 0, 0]}
    elif name.startswith("relu"):
      layers[name] = {"name": name, "type": "relu"}
    else:
      layers[name] = {"name": name, "type": "softmax"}
  return layers


def write_vgg_f(path, layers, mean, layout="new"):
  """Save as MatConvNet does: `layers` a 1×L cell of structs.

  layout "new": weights = {filters, biases} and meta.normalization.averageImage (vl_simplenn_tidy);
  "old": filters/biases fields and a top-level normalization (pre-beta-8, what DCMH's TF port read);
  "net": "new" wrapped in a `net` struct (DCMH's vgg_net.mat).
  """
  cells = np.empty((1, len(layers)), dtype=object)
  for i, layer in enumerate(layers.values()):
    layer = dict(layer)
    if "filters" in layer and layout != "old":
      weights = np.empty((1, 2), dtype=object)
      weights[0, 0], weights[0, 1] = layer.pop("filters"), layer.pop("biases")
      layer["weights"] = weights
    cells[0, i] = layer
  normalization = {"averageImage": mean, "imageSize": [224.0, 224.0, 3.0], "interpolation": "bilinear"}
  if layout == "old":
    variables = {"layers": cells, "normalization": normalization}
  else:
    variables = {"layers": cells, "meta": {"normalization": normalization, "inputs": "data"}}
  if layout == "net":
    variables = {"net": variables}
  scipy.io.savemat(path, variables)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
  rng = np.random.default_rng(0)
  layers = vgg_f_layers(rng)
  mean = rng.uniform(90, 130, size=(224, 224, 3)).astype(np.float32)
  path = tmp_path_factory.mktemp("vgg") / "imagenet-vgg-f.mat"
  write_vgg_f(path, layers, mean)
  return path, layers, mean


# ---------------------------------------------------------------------------------------------
# LRN


@pytest.mark.parametrize("param", [VGG_F_LRN, (2, 2.0, 1e-4, 0.75), (3, 1.0, 1e-3, 0.5),
                                   (16, 0.5, 1e-2, 1.0)])
def test_lrn_matches_matconvnet_formula(param):
  x = np.random.default_rng(1).normal(scale=60.0, size=(2, 3, 4, 7)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(local_response_norm(jnp.asarray(x), *param)), np_lrn(x, *param),
                             rtol=2e-6, atol=1e-6)


def test_lrn_even_window_leans_forward():
  # MatConvNet's window for N=2 is [k, k+1]: a big channel 3 damps channel 2, not channel 4.
  x = np.ones((1, 1, 1, 6), np.float32)
  x[..., 3] = 300.0
  y = np.asarray(local_response_norm(jnp.asarray(x), 2, 2.0, 1e-4, 0.75))[0, 0, 0]
  assert y[2] < 0.5 * y[4]
  np.testing.assert_allclose(y[4], 1.0 / (2.0 + 2e-4) ** 0.75, rtol=1e-6)


def test_lrn_gradient_and_bfloat16():
  x = jnp.asarray(np.random.default_rng(2).normal(scale=30.0, size=(1, 2, 2, 6)))
  # float32 finite differences: a step of 0.05 on values of ~30 keeps rounding out of the check.
  check_grads(lambda v: local_response_norm(v, *VGG_F_LRN), (x,), order=1, modes=("rev",), eps=0.05,
              atol=1e-2, rtol=1e-2)
  low = local_response_norm(x.astype(jnp.bfloat16), *VGG_F_LRN)
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), np_lrn(np.asarray(x), *VGG_F_LRN), rtol=2e-2)


# ---------------------------------------------------------------------------------------------
# The network


def test_full_width_network_shapes():
  """Traced only: VGG-F's parameter shapes, (batch, bits) codes and (batch, 4096) fc7 features."""
  x = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(CNNF(bits=32).init, jax.random.PRNGKey(0), x)
  params = variables["params"]
  assert {name: params[name]["kernel"].shape for name in VGG_F_SHAPES} == VGG_F_SHAPES
  assert {name: params[name]["bias"].shape for name in VGG_F_SHAPES} == {
    name: (shape[-1],) for name, shape in VGG_F_SHAPES.items()}
  assert params["fc8"]["kernel"].shape == (4096, 32) and params["fc8"]["bias"].shape == (32,)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
  # The importer checks the file against the same shapes.
  table = vgg_f._expected_layers(VGG_F_CHANNELS, 4096)
  assert {name: shape for name, (shape, _, _) in table.items()} == VGG_F_SHAPES

  out = jax.eval_shape(CNNF(bits=32).apply, variables, x)
  assert (out.shape, out.dtype) == ((2, 32), jnp.float32)
  features_model = CNNF(bits=32, features_only=True)
  feature_vars = jax.eval_shape(features_model.init, jax.random.PRNGKey(0), x)
  assert "fc8" not in feature_vars["params"]
  features = jax.eval_shape(features_model.apply, feature_vars, x)
  assert (features.shape, features.dtype) == ((2, 4096), jnp.float32)


def test_wrong_input_size_is_refused():
  with pytest.raises(UserError, match="224×224"):
    jax.eval_shape(CNNF(bits=8).init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32))
  with pytest.raises(UserError, match=r"\(batch, height, width, 3\)"):
    jax.eval_shape(CNNF(bits=8).init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 224, 224), jnp.float32))


def test_imported_network_matches_numpy_matconvnet(vgg_file):
  """One 224×224 batch: fc7 features against the numpy MatConvNet chain, codes against fc8."""
  path, layers, mean = vgg_file
  params, mean_image = load_vgg_f(path, bits=8, key=jax.random.PRNGKey(3), **TINY)
  images = np.random.default_rng(4).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
  x = preprocess(images, mean_image)

  features = np.asarray(CNNF(bits=8, features_only=True, **TINY).apply({"params": params}, x))
  expected = np_cnnf(x, layers)
  assert features.shape == (2, TINY["fc_width"])
  scale = np.abs(expected).max()
  assert scale > 1.0  # the random weights keep the chain alive, so the comparison means something
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5 * scale)

  codes = np.asarray(CNNF(bits=8, **TINY).apply({"params": params}, x))
  assert codes.shape == (2, 8) and codes.dtype == np.float32
  np.testing.assert_allclose(codes, expected @ params["fc8"]["kernel"] + params["fc8"]["bias"],
                             rtol=1e-4, atol=1e-5 * np.abs(codes).max())

  # The comparison sees the padding: DCMH's asymmetric pool1 pad differs from a symmetric one.
  symmetric = np_cnnf(x, layers, pool1_pad=(1, 1, 1, 1))
  assert not np.allclose(features, symmetric, rtol=1e-3, atol=1e-3 * scale)


def test_bfloat16_compute_keeps_float32_params(vgg_file):
  path, _, _ = vgg_file
  params, mean_image = load_vgg_f(path, bits=8, **TINY)
  x = preprocess(np.random.default_rng(5).integers(0, 256, size=(1, 224, 224, 3), dtype=np.uint8), mean_image)
  model = CNNF(bits=8, dtype=jnp.bfloat16, **TINY)
  initial = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(initial))
  # Jitted: op-by-op bfloat16 convolutions are slow on CPU.
  low = np.asarray(jax.jit(model.apply)({"params": params}, x))
  full = np.asarray(CNNF(bits=8, **TINY).apply({"params": params}, x))
  assert low.dtype == np.float32
  np.testing.assert_allclose(low, full, atol=0.05 * np.abs(full).max())


# ---------------------------------------------------------------------------------------------
# Importer


@pytest.mark.parametrize("layout", ["new", "old", "net"])
def test_import_copies_the_file_weights(tmp_path, layout):
  rng = np.random.default_rng(6)
  layers = vgg_f_layers(rng)
  mean = rng.uniform(0, 255, size=(224, 224, 3)).astype(np.float32)
  write_vgg_f(tmp_path / "vgg.mat", layers, mean, layout)
  params, mean_image = load_vgg_f(tmp_path / "vgg.mat", **TINY)

  assert set(params) == set(VGG_F_SHAPES)
  for name in VGG_F_SHAPES:
    np.testing.assert_array_equal(params[name]["kernel"], layers[name]["filters"])
    np.testing.assert_array_equal(params[name]["bias"], layers[name]["biases"].reshape(-1))
    assert params[name]["kernel"].dtype == np.float32
  np.testing.assert_array_equal(mean_image, mean)
  # Same tree as the module's own (features_only) initialisation, so apply() takes it as is.
  init = jax.eval_shape(CNNF(bits=8, features_only=True, **TINY).init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["params"]
  assert jax.tree_util.tree_structure(init) == jax.tree_util.tree_structure(params)
  assert jax.tree_util.tree_map(lambda a: a.shape, init) == jax.tree_util.tree_map(np.shape, params)


def test_import_adds_a_fresh_fc8(vgg_file):
  path, _, _ = vgg_file
  params, _ = load_vgg_f(path, bits=16, key=jax.random.PRNGKey(7), **TINY)
  init = jax.eval_shape(CNNF(bits=16, **TINY).init, jax.random.PRNGKey(0),
                        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))["params"]
  assert jax.tree_util.tree_map(lambda a: a.shape, init) == jax.tree_util.tree_map(np.shape, params)
  fc8 = np.concatenate([params["fc8"]["kernel"].ravel(), params["fc8"]["bias"]])
  assert 0.006 < fc8.std() < 0.014  # N(0, 0.01²), as DCMH initialises fc8
  again, _ = load_vgg_f(path, bits=16, key=jax.random.PRNGKey(7), **TINY)
  np.testing.assert_array_equal(again["fc8"]["kernel"], params["fc8"]["kernel"])


def _drop(name):
  return lambda layers, variables: layers.pop(name)


def _set(name, field, value):
  return lambda layers, variables: layers[name].__setitem__(field, value)


BREAKAGES = {
  "missing layer": (_drop("fc7"), r"no layer named 'fc7'"),
  "filters shape": (_set("conv3", "filters", np.zeros((3, 3, 8, 9), np.float32)),
                    r"\[layer conv3\]: filters have shape \(3, 3, 8, 9\), CNNF expects \(3, 3, 8, 8\)"),
  "biases size": (_set("fc6", "biases", np.zeros((1, 5), np.float32)),
                  r"\[layer fc6\]: biases have 5 values"),
  "LRN param": (_set("norm1", "param", [5, 1, 2e-5, 0.75]), r"\[layer norm1\]: LRN PARAM"),
  "pool pad": (_set("pool1", "pad", [1, 1, 1, 1]), r"\[layer pool1\]: pad is \[1\.0, 1\.0, 1\.0, 1\.0\]"),
  "conv stride": (_set("conv1", "stride", [2, 2]), r"\[layer conv1\]: stride"),
  "text filters": (_set("conv2", "filters", "oops"), r"\[layer conv2\]: filters hold"),
  "no weights": (lambda layers, v: [layers["conv4"].pop(k) for k in ("filters", "biases")],
                 r"\[layer conv4\]: no weights"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_import_errors_name_file_and_layer(tmp_path, breakage):
  edit, message = BREAKAGES[breakage]
  layers = vgg_f_layers(np.random.default_rng(8))
  edit(layers, None)
  path = tmp_path / "broken-vgg-f.mat"
  write_vgg_f(path, layers, np.zeros((224, 224, 3), np.float32))
  with pytest.raises(DataError, match=message) as info:
    load_vgg_f(path, **TINY)
  assert "broken-vgg-f.mat" in str(info.value)


def test_import_file_level_errors(tmp_path, vgg_file):
  with pytest.raises(DataError, match=r"absent\.mat: file not found.*pretrained"):
    load_vgg_f(tmp_path / "absent.mat")
  (tmp_path / "garbage.mat").write_bytes(b"not a mat file at all" * 20)
  with pytest.raises(DataError, match=r"garbage\.mat: not a MATLAB v5 file"):
    load_vgg_f(tmp_path / "garbage.mat")
  scipy.io.savemat(tmp_path / "other.mat", {"XAll": np.zeros((2, 2))})
  with pytest.raises(DataError, match=r"other\.mat: no 'layers' variable.*\['XAll'\]"):
    load_vgg_f(tmp_path / "other.mat")
  layers = vgg_f_layers(np.random.default_rng(9))
  cells = np.empty((1, len(layers)), dtype=object)
  for i, layer in enumerate(layers.values()):
    cells[0, i] = layer
  scipy.io.savemat(tmp_path / "nomean.mat", {"layers": cells})
  with pytest.raises(DataError, match=r"nomean\.mat: no average image"):
    load_vgg_f(tmp_path / "nomean.mat", **TINY)
  # A tiny file read as the full VGG-F: the first layer's shape gives it away.
  path, _, _ = vgg_file
  expected = r"\[layer conv1\]: filters have shape \(11, 11, 3, 6\), CNNF expects \(11, 11, 3, 64\)"
  with pytest.raises(DataError, match=expected):
    load_vgg_f(path)


# ---------------------------------------------------------------------------------------------
# Preprocessing


def test_preprocess_subtracts_the_mean_image():
  rng = np.random.default_rng(10)
  images = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
  mean = rng.uniform(0, 255, size=(224, 224, 3)).astype(np.float32)
  out = preprocess(images, mean)
  assert out.dtype == np.float32 and out.shape == (3, 224, 224, 3)
  np.testing.assert_array_equal(out, images.astype(np.float32) - mean)
  np.testing.assert_array_equal(preprocess(images[0], mean), out[0])
  rgb = np.array([123.68, 116.779, 103.939], np.float32)
  np.testing.assert_allclose(preprocess(images, rgb), images - rgb, rtol=1e-6)


def test_preprocess_resizes_and_crops():
  rng = np.random.default_rng(11)
  images = rng.integers(0, 256, size=(2, 240, 250, 3), dtype=np.uint8)
  mean = np.full((224, 224, 3), 100.0, np.float32)
  cropped = preprocess(images, mean, fit="crop")
  np.testing.assert_array_equal(cropped, images[:, 8:232, 13:237].astype(np.float32) - 100.0)
  resized = preprocess(images, mean)
  assert resized.shape == (2, 224, 224, 3) and resized.dtype == np.float32
  # A flat image stays flat through the (normalised) resampling kernel; so does a small mean image.
  flat = np.full((1, 300, 200, 3), 77, np.uint8)
  np.testing.assert_allclose(preprocess(flat, np.full((7, 9, 3), 50.0, np.float32)), 27.0, atol=1e-3)
  with pytest.raises(UserError, match="cannot crop 100×100"):
    preprocess(np.zeros((1, 100, 100, 3), np.uint8), mean, fit="crop")
  with pytest.raises(UserError, match=r"\(N, H, W, 3\)"):
    preprocess(np.zeros((1, 224, 224), np.uint8), mean)
  with pytest.raises(UserError, match="mean_image"):
    preprocess(np.zeros((1, 224, 224, 3), np.uint8), np.zeros((224, 224)))

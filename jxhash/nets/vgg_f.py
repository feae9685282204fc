"""MatConvNet's imagenet-vgg-f.mat -> `jxhash.nets.CNNF` parameters, and CNN-F's image preprocessing.

References: Chatfield et al., BMVC 2014 (CNN-F); MatConvNet's `utils/import-caffe.py` (how the file
was converted from VGG's Caffe model). The network and its MatConvNet conventions (LRN, padding) are
described in `jxhash.nets.cnnf`.

Weights layout. MatConvNet filters are H×W×in×out, Flax's convolution kernels are HWIO: the arrays
copy over unchanged (scipy.io.loadmat keeps MATLAB's index order). The image is RGB, 0..255, minus
the file's average image (`normalization.averageImage`, already resized to 224×224×3 by the
importer).
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io

from jxhash.data import bounds
from jxhash.errors import DataError, UserError
from jxhash.nets.cnnf import IMAGE_SIZE, VGG_F_CHANNELS, VGG_F_FC_WIDTH, VGG_F_LRN, fc8_layer

DOWNLOAD_HINT = ("Download imagenet-vgg-f.mat from MatConvNet's pretrained models, "
                 "https://www.vlfeat.org/matconvnet/pretrained/ (DCMH's data.zip holds it as vgg_net.mat, "
                 "which is read too).")



_CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def _expected_layers(channels, fc_width):
  """name -> (filters shape, stride, pad [top bottom left right]) for the conv layers."""
  c1, c2, c3, c4, c5 = channels
  return {
    "conv1": ((11, 11, 3, c1), 4, (0, 0, 0, 0)),
    "conv2": ((5, 5, c1, c2), 1, (2, 2, 2, 2)),
    "conv3": ((3, 3, c2, c3), 1, (1, 1, 1, 1)),
    "conv4": ((3, 3, c3, c4), 1, (1, 1, 1, 1)),
    "conv5": ((3, 3, c4, c5), 1, (1, 1, 1, 1)),
    "fc6": ((6, 6, c5, fc_width), 1, (0, 0, 0, 0)),
    "fc7": ((1, 1, fc_width, fc_width), 1, (0, 0, 0, 0)),
  }


_POOLS = {"pool1": (0, 1, 0, 1), "pool2": (0, 0, 0, 0), "pool5": (0, 0, 0, 0)}


def load_vgg_f(path, bits: int | None = None, *, key: jax.Array | None = None,
               channels: Sequence[int] = VGG_F_CHANNELS, fc_width: int = VGG_F_FC_WIDTH,
               lrn: Sequence[float] = VGG_F_LRN) -> tuple[dict, np.ndarray]:
  """Read MatConvNet's imagenet-vgg-f.mat into CNNF params.

  Accepts the SimpleNN layouts MatConvNet has shipped: variables `layers` (a cell array of structs
  with `name`, `type` and `weights` = {filters, biases}, or the older separate `filters` and
  `biases` fields) and `meta.normalization.averageImage` (or the older top-level
  `normalization.averageImage`), optionally wrapped in a `net` struct as DCMH's vgg_net.mat.
  Layers are found by name; the conv layers' strides and pads, the pools' pads and the norm layers'
  PARAM are checked where the file records them, since CNNF hard-codes them.

  Args:
    path: the .mat file (MATLAB v5/v7; a v7.3 re-save is refused, save it with -v7).
    bits: add an fc8 for this many bits, initialised N(0, 0.01²) from `key` as CNNF does, so the
      result feeds CNNF(bits) directly. None: conv1..fc7 only (for features_only).
    key: PRNG key for fc8 (default PRNGKey(0)).
    channels, fc_width, lrn: the CNNF attributes the file must match (the defaults are VGG-F's).

  Returns:
    (params, mean_image): params {"conv1": {"kernel": (11, 11, 3, 64), "bias": (64,)}, ..., "fc7",
    ["fc8"]} as float32 numpy arrays (CNNF.init(...)["params"] layout); mean_image (H, W, 3)
    float32, usually 224×224×3.

  Raises:
    DataError naming the file (and layer): missing file, unreadable file, missing layer or mean
    image, a shape or a hyper-parameter that disagrees with CNNF.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: file not found. {DOWNLOAD_HINT}")
  with open(path, "rb") as f:
    head = f.read(128)
  if b"MATLAB 7.3" in head or head[:8] == b"\x89HDF\r\n\x1a\n":
    raise DataError(f"{path}: a MATLAB v7.3 (HDF5) file; load it in MATLAB and save it with "
                    "save(..., '-struct', 'net', '-v7'), or download the original")
  # what scipy will inflate, from the variables' headers (a forged or compressed-bomb file is
  # refused here); scipy holds an inflated variable and the objects built from it, so twice that
  declared = sum(v.payload for v in bounds.mat5_variables(path))
  bounds.check_budget(2 * declared, str(path), "reading its variables")
  try:
    variables = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=False)
  except Exception as e:  # scipy raises many types on damaged files; all mean "cannot read".
    raise DataError(f"{path}: cannot read the file as a MATLAB .mat ({type(e).__name__}: {e}); it "
                    "may be truncated or damaged, download it again") from e
  root = _net_root(variables, path)
  layers = _layers_by_name(root, path)
  expected = _expected_layers(tuple(channels), fc_width)

  params = {}
  for name in _CONV_LAYERS:
    layer = _require(layers, name, path)
    shape, stride, pad = expected[name]
    filters, biases = _weights(layer, name, path)
    if filters.shape != shape:
      raise DataError(f"{path} [layer {name}]: filters have shape {filters.shape}, CNNF expects {shape} "
                      "(H×W×in×out)")
    if biases.size != shape[-1]:
      raise DataError(f"{path} [layer {name}]: biases have {biases.size} values, CNNF expects {shape[-1]}")
    _check_field(layer, "stride", (stride, stride), name, path)
    _check_field(layer, "pad", pad, name, path)
    params[name] = {"kernel": np.ascontiguousarray(filters, np.float32),
                    "bias": biases.reshape(-1).astype(np.float32)}

  for name in ("norm1", "norm2"):
    if name in layers:
      _check_field(layers[name], "param", tuple(lrn), name, path, what="LRN PARAM [N kappa alpha beta]")
  for name, pad in _POOLS.items():
    if name in layers:
      _check_field(layers[name], "pad", pad, name, path)

  if bits is not None:
    key = jax.random.PRNGKey(0) if key is None else key
    fc8 = fc8_layer(bits, jnp.float32).init(key, jnp.zeros((1, fc_width), jnp.float32))["params"]
    params["fc8"] = jax.tree_util.tree_map(np.asarray, fc8)
  return params, _average_image(variables, root, path)


def _struct(value):
  """The mat_struct inside a loadmat value (a 1×1 struct array or the struct itself), else None."""
  if isinstance(value, scipy.io.matlab.mat_struct):
    return value
  if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
    return _struct(value.reshape(-1)[0])
  return None


def _field(struct, name):
  return getattr(struct, name) if struct is not None and name in struct._fieldnames else None


def _text(value) -> str:
  if isinstance(value, str):
    return value
  flat = np.asarray(value).reshape(-1)
  return "".join(str(v) for v in flat)


def _net_root(variables, path):
  """Whatever holds `layers`: the file's variables, or DCMH's `net` struct."""
  if "layers" in variables:
    return variables
  net = _struct(variables.get("net"))
  if net is not None and "layers" in net._fieldnames:
    return {name: getattr(net, name) for name in net._fieldnames}
  if "params" in variables or (net is not None and "params" in net._fieldnames):
    raise DataError(f"{path}: a MatConvNet DagNN network; load_vgg_f reads the SimpleNN "
                    "imagenet-vgg-f.mat")
  present = sorted(k for k in variables if not k.startswith("__"))
  raise DataError(f"{path}: no 'layers' variable, not a MatConvNet SimpleNN network (the file holds "
                  f"{present}). {DOWNLOAD_HINT}")


def _layers_by_name(root, path) -> dict:
  cells = root["layers"]
  if isinstance(cells, np.ndarray) and cells.dtype == object:
    items = list(cells.reshape(-1))
  else:
    raise DataError(f"{path}: 'layers' is not a cell array of layer structs")
  layers = {}
  for index, item in enumerate(items):
    layer = _struct(item)
    if layer is None:
      raise DataError(f"{path}: layers{{{index + 1}}} is not a struct")
    name = _field(layer, "name")
    layers[_text(name) if name is not None else f"layer{index + 1}"] = layer
  return layers


def _require(layers, name, path):
  if name not in layers:
    raise DataError(f"{path}: no layer named {name!r}; the file's layers are {list(layers)}. "
                    f"Is it imagenet-vgg-f.mat? {DOWNLOAD_HINT}")
  return layers[name]


def _weights(layer, name, path):
  """(filters, biases) of a conv layer, from `weights` = {filters, biases} or `filters`/`biases`."""
  weights = _field(layer, "weights")
  if weights is not None:
    cells = np.asarray(weights, dtype=object).reshape(-1) if isinstance(weights, np.ndarray) else []
    if len(cells) != 2:
      raise DataError(f"{path} [layer {name}]: 'weights' should be a cell {{filters, biases}}, got "
                      f"{len(cells)} entries")
    filters, biases = cells
  else:
    filters, biases = _field(layer, "filters"), _field(layer, "biases")
    if filters is None or biases is None:
      raise DataError(f"{path} [layer {name}]: no weights (neither 'weights' nor 'filters'/'biases' "
                      f"fields; it has {list(layer._fieldnames)})")
  filters, biases = np.asarray(filters), np.asarray(biases)
  for what, array in (("filters", filters), ("biases", biases)):
    if array.dtype.kind not in "fiu":
      raise DataError(f"{path} [layer {name}]: {what} hold {array.dtype} values, not numbers")
  # MATLAB drops trailing singleton dimensions; a filter bank with one output is H×W×in.
  if filters.ndim == 3:
    filters = filters[..., None]
  return filters, biases


def _check_field(layer, field, expected, name, path, what=None):
  """A recorded hyper-parameter (scalar or vector) must equal `expected` (broadcast), if present."""
  value = _field(layer, field)
  if value is None:
    return
  value = np.asarray(value, dtype=np.float64).reshape(-1)
  want = np.asarray(expected, dtype=np.float64)
  if value.size == 1:
    value = np.broadcast_to(value, want.shape)
  if value.shape != want.shape or not np.allclose(value, want, rtol=1e-6, atol=0):
    got = [float(v) for v in value]
    hint = (" (to run the file's LRN, pass lrn= to both load_vgg_f and CNNF)" if field == "param"
            else "")
    raise DataError(f"{path} [layer {name}]: {what or field} is {got}, CNNF implements "
                    f"{[float(v) for v in want]}; this is not the VGG-F network CNNF reproduces{hint}")


def _average_image(variables, root, path) -> np.ndarray:
  meta = _struct(root.get("meta"))
  normalization = _struct(_field(meta, "normalization")) if meta is not None else None
  if normalization is None:
    normalization = _struct(root.get("normalization", variables.get("normalization")))
  mean = _field(normalization, "averageImage")
  if mean is None:
    raise DataError(f"{path}: no average image (looked for meta.normalization.averageImage and "
                    "normalization.averageImage)")
  mean = np.asarray(mean)
  if mean.dtype.kind not in "fiu":
    raise DataError(f"{path} [averageImage]: holds {mean.dtype} values, not numbers")
  if mean.size == 3:
    mean = mean.reshape(1, 1, 3)
  if mean.ndim != 3 or mean.shape[-1] != 3:
    raise DataError(f"{path} [averageImage]: shape {mean.shape}, expected H×W×3 (or 3 values)")
  return mean.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Input preprocessing.


def mean_image_for(mean_image, height: int, width: int) -> np.ndarray:
  """A mean image (h, w, 3) or 3 channel values as a (height, width, 3) float32 array.

  A mean image of another size is resized bilinearly, as MatConvNet's importer did to the VGG mean.
  """
  mean = np.asarray(mean_image, np.float32)
  if mean.size == 3:
    return np.broadcast_to(mean.reshape(1, 1, 3), (height, width, 3)).copy()
  if mean.ndim != 3 or mean.shape[-1] != 3:
    raise UserError(f"mean_image must be H×W×3 or 3 values, got shape {mean.shape}")
  if mean.shape[:2] != (height, width):
    mean = np.asarray(jax.image.resize(mean, (height, width, 3), "linear", antialias=False))
  return mean


def preprocess(images, mean_image, *, size: int = IMAGE_SIZE, fit: str = "resize") -> np.ndarray:
  """RGB images -> CNNF input: brought to size×size, minus the mean image.

  DCMH (process_DCMH.m) subtracts `averageImage` from 224×224 images as they are, and resizes
  images of another size with MATLAB's imresize (bicubic, antialiased when shrinking) first.

  Args:
    images: (N, H, W, 3) or (H, W, 3), uint8 0..255 (any real dtype on that scale is accepted).
    mean_image: (h, w, 3) average image, or 3 per-channel values; one not size×size is resized
      bilinearly (as MatConvNet's importer did to the VGG mean).
    size: output height and width.
    fit: "resize" (bicubic, antialiased) or "crop" (centre size×size crop; images must be at
      least that large) for images not already size×size.

  Returns:
    (N, size, size, 3) float32 (no batch axis if `images` had none).
  """
  images = np.asarray(images)
  single = images.ndim == 3
  if single:
    images = images[None]
  if images.ndim != 4 or images.shape[-1] != 3:
    raise UserError(f"preprocess expects (N, H, W, 3) RGB images, got shape {images.shape}")
  if images.dtype.kind not in "fiu":
    raise UserError(f"preprocess expects numeric images, got {images.dtype}")
  if fit not in ("resize", "crop"):
    raise UserError(f"fit must be 'resize' or 'crop', got {fit!r}")
  out = images.astype(np.float32)
  height, width = out.shape[1:3]
  if (height, width) != (size, size):
    if fit == "crop":
      if height < size or width < size:
        raise UserError(f"cannot crop {height}×{width} images to {size}×{size}; use fit='resize'")
      top, left = (height - size) // 2, (width - size) // 2
      out = out[:, top:top + size, left:left + size]
    else:
      out = np.asarray(jax.image.resize(out, (out.shape[0], size, size, 3), "cubic", antialias=True))
  out = out - mean_image_for(mean_image, size, size)
  return out[0] if single else out


__all__ = ["DOWNLOAD_HINT", "load_vgg_f", "mean_image_for", "preprocess"]

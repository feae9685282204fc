"""torchvision's AlexNet in Flax (NHWC), and the importer for torchvision's weights file.

References:
  Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks", NIPS 2012; the single-tower variant of Krizhevsky, "One weird trick for
    parallelizing convolutional neural networks", arXiv:1404.5997 (2014), which torchvision ships.
  torchvision `models/alexnet.py` (layer layout and the state dict names) and its ImageNet weights
    `alexnet-owt-7be5be79.pth` (AlexNet_Weights.IMAGENET1K_V1).

The network, for a 224×224×3 input:
  conv1  64@11×11 stride 4 pad 2, ReLU, max 3×3 stride 2   -> 27×27×64
  conv2  192@5×5 pad 2, ReLU, max 3×3 stride 2             -> 13×13×192
  conv3  384@3×3 pad 1, ReLU; conv4 256@3×3 pad 1, ReLU; conv5 256@3×3 pad 1, ReLU,
         max 3×3 stride 2                                  -> 6×6×256
  adaptive average pool to 6×6 (torch's bins: any input size of at least 63×63 works)
  dropout 0.5, fc6 9216 -> 4096, ReLU; dropout 0.5, fc7 4096 -> 4096, ReLU (the features)
  fc8 4096 -> 1000 ImageNet logits.
Pooling is floor mode without padding, as torch's MaxPool2d defaults. Dropout runs only when
`deterministic=False` is passed (training); evaluation and feature extraction are deterministic.

torchvision flattens the pooled map channel-first (C×6×6) into fc6; this module flattens NHWC
(6×6×C), so the importer permutes fc6's input rows to match.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError
from jxhash.nets.imagenet import (adaptive_avg_pool, check_state_dict, conv_kernel, dense_kernel,
                                  state_dict_from)

POOL_SIZE = (6, 6)
FC_WIDTH = 4096
NUM_CLASSES = 1000
# name -> (features, kernel, stride, pad) of torchvision's `features` convolutions, in order.
_CONVS = (("conv1", 64, 11, 4, 2), ("conv2", 192, 5, 1, 2), ("conv3", 384, 3, 1, 1), ("conv4", 256, 3, 1, 1),
          ("conv5", 256, 3, 1, 1))
# torchvision's module indices of those convolutions and of the classifier's Linear layers.
_TORCH_CONV = {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
               "conv5": "features.10"}
_TORCH_FC = {"fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"}


class AlexNet(nn.Module):
  """torchvision's AlexNet: (N, H, W, 3) normalised RGB -> (N, 1000) logits or (N, 4096) fc7.

  Attributes:
    features_only: return fc7 after its ReLU, (N, 4096), and create no fc8.
    num_classes: fc8 width.
    dropout_rate: torchvision's 0.5, active only with deterministic=False.
    dtype: computation dtype (params stay float32; outputs are float32).
    channels: conv1..conv5 widths (torchvision's by default; smaller ones give a cheap network of
      the same wiring, for tests).
    fc_width: fc6/fc7 width.
  """

  features_only: bool = False
  num_classes: int = NUM_CLASSES
  dropout_rate: float = 0.5
  dtype: jnp.dtype = jnp.float32
  channels: tuple = tuple(c[1] for c in _CONVS)
  fc_width: int = FC_WIDTH

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise UserError(f"AlexNet expects (batch, height, width, 3) images, got shape {x.shape}")
    h = jnp.asarray(x, self.dtype)
    for i, ((name, _, kernel, stride, pad), features) in enumerate(zip(_CONVS, self.channels)):
      h = nn.relu(nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                          dtype=self.dtype, param_dtype=jnp.float32, name=name)(h))
      if i in (0, 1, 4):
        h = nn.max_pool(h, (3, 3), strides=(2, 2), padding="VALID")
    h = adaptive_avg_pool(h, POOL_SIZE)
    h = h.reshape(h.shape[0], -1)
    for name in ("fc6", "fc7"):
      h = nn.Dropout(self.dropout_rate, deterministic=deterministic)(h)
      h = nn.relu(nn.Dense(self.fc_width, dtype=self.dtype, param_dtype=jnp.float32, name=name)(h))
    if self.features_only:
      return h.astype(jnp.float32)
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc8")(h).astype(jnp.float32)


def expected_shapes(num_classes: int = NUM_CLASSES) -> dict[str, tuple]:
  """torchvision AlexNet's state dict names and shapes."""
  shapes, channels = {}, 3
  for name, features, kernel, _, _ in _CONVS:
    shapes[f"{_TORCH_CONV[name]}.weight"] = (features, channels, kernel, kernel)
    shapes[f"{_TORCH_CONV[name]}.bias"] = (features,)
    channels = features
  widths = {"fc6": (channels * POOL_SIZE[0] * POOL_SIZE[1], FC_WIDTH), "fc7": (FC_WIDTH, FC_WIDTH),
            "fc8": (FC_WIDTH, num_classes)}
  for name, (fan_in, fan_out) in widths.items():
    shapes[f"{_TORCH_FC[name]}.weight"] = (fan_out, fan_in)
    shapes[f"{_TORCH_FC[name]}.bias"] = (fan_out,)
  return shapes


def load_alexnet(path_or_state_dict, *, num_classes: int = NUM_CLASSES, check_hash: bool = True) -> dict:
  """torchvision's AlexNet weights -> `AlexNet` params (float32 numpy arrays).

  Args:
    path_or_state_dict: `alexnet-owt-7be5be79.pth` (any file `torch_io.read_state_dict` reads) or
      a {name: array} state dict.
    num_classes: fc8 width in the file (1000 for ImageNet).
    check_hash: when the file is named as torchvision's download, `alexnet-owt-<hex>.pth`, check
      its content against the sha256 prefix <hex>.

  Returns:
    {"conv1": {"kernel" (11, 11, 3, 64), "bias"}, ..., "fc6", "fc7", "fc8"}: AlexNet().init's
    "params" layout; use `{"params": params}` with AlexNet(features_only=True) too (fc8 unused).

  Raises:
    UserError naming the file and the first missing, unexpected or misshapen entry.
  """
  state, where = state_dict_from(path_or_state_dict, check_hash=check_hash, stems=("alexnet-owt",))
  check_state_dict(state, expected_shapes(num_classes), where, model="AlexNet")
  params = {}
  for name in _TORCH_CONV:
    params[name] = {"kernel": conv_kernel(state[f"{_TORCH_CONV[name]}.weight"]),
                    "bias": np.asarray(state[f"{_TORCH_CONV[name]}.bias"], np.float32)}
  for name in _TORCH_FC:
    kernel = dense_kernel(state[f"{_TORCH_FC[name]}.weight"])
    if name == "fc6":
      # rows are torch's (c, h, w) flattening; make them (h, w, c) for the NHWC flatten
      channels = kernel.shape[0] // (POOL_SIZE[0] * POOL_SIZE[1])
      kernel = kernel.reshape(channels, *POOL_SIZE, -1).transpose(1, 2, 0, 3).reshape(kernel.shape)
      kernel = np.ascontiguousarray(kernel)
    params[name] = {"kernel": kernel, "bias": np.asarray(state[f"{_TORCH_FC[name]}.bias"], np.float32)}
  return params


__all__ = ["AlexNet", "FC_WIDTH", "expected_shapes", "load_alexnet"]

"""torchvision's ResNet-18/34 in Flax (NHWC), and the importer for torchvision's weights files.

References:
  He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (Table 1).
  torchvision `models/resnet.py` (BasicBlock, the stride on the first 3×3 convolution of a stage,
  the 1×1 convolution + BatchNorm shortcut, the state dict names) and its ImageNet weights
  `resnet34-b627a593.pth`, `resnet18-f37072fd.pth` (IMAGENET1K_V1).

The network: conv1 64@7×7 stride 2 pad 3 (no bias), BatchNorm, ReLU, max 3×3 stride 2 pad 1;
four stages of BasicBlocks (two 3×3 convolutions with BatchNorm, identity or projected shortcut)
of widths 64, 128, 256, 512, the first block of stages 2-4 striding by 2; global average pool
(the 512-d features); fc 512 -> 1000. Blocks per stage: ResNet-18 [2, 2, 2, 2], ResNet-34
[3, 4, 6, 3].

BatchNorm. Flax keeps the running statistics in the "batch_stats" collection: with `train=False`
(the default) they normalise, as torch's eval mode; with `train=True` the batch's statistics do
and the running ones are updated (pass mutable=["batch_stats"]), for fine-tuning. torch's
momentum 0.1 is Flax's 0.9; eps is 1e-5 in both.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError
from jxhash.nets.imagenet import check_state_dict, conv_kernel, dense_kernel, state_dict_from

STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
WIDTHS = (64, 128, 256, 512)
NUM_CLASSES = 1000
BN_EPS = 1e-5


def _stages(depth: int) -> tuple[int, ...]:
  if depth not in STAGES:
    raise UserError(f"ResNet depth must be one of {sorted(STAGES)} (BasicBlock networks), got {depth}")
  return STAGES[depth]


class BasicBlock(nn.Module):
  """Two 3×3 convolutions with BatchNorm and a shortcut (a 1×1 projection when the shape changes)."""

  features: int
  stride: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = lambda f, k, s, p, name: nn.Conv(f, (k, k), strides=(s, s), padding=((p, p), (p, p)),  # noqa: E731
                                             use_bias=False, dtype=self.dtype, param_dtype=jnp.float32, name=name)
    norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPS,  # noqa: E731
                                     dtype=self.dtype, param_dtype=jnp.float32, name=name)
    h = nn.relu(norm("bn1")(conv(self.features, 3, self.stride, 1, "conv1")(x)))
    h = norm("bn2")(conv(self.features, 3, 1, 1, "conv2")(h))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = norm("downsample_bn")(conv(self.features, 1, self.stride, 0, "downsample_conv")(x))
    return nn.relu(h + shortcut)


class ResNet(nn.Module):
  """torchvision's ResNet-18/34: (N, H, W, 3) normalised RGB -> (N, 512) pooled features or logits.

  Attributes:
    depth: 18 or 34.
    features_only: return the global-average-pooled 512-d vector and create no fc.
    num_classes: fc width.
    dtype: computation dtype (params and statistics stay float32; outputs are float32).
    widths: the four stages' widths (torchvision's by default; the stem has the first one).
      Smaller ones give a cheap network of the same wiring, for tests.

  Call with `train=True` for batch statistics (module docstring) and `return_stages=True` for
  (output, [the four stages' global-average-pooled outputs, (N, 64), (N, 128), (N, 256), (N, 512)]).
  """

  depth: int = 34
  features_only: bool = False
  num_classes: int = NUM_CLASSES
  dtype: jnp.dtype = jnp.float32
  widths: tuple = WIDTHS

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, return_stages: bool = False):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise UserError(f"ResNet expects (batch, height, width, 3) images, got shape {x.shape}")
    h = jnp.asarray(x, self.dtype)
    h = nn.Conv(self.widths[0], (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)), use_bias=False, dtype=self.dtype,
                param_dtype=jnp.float32, name="conv1")(h)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPS, dtype=self.dtype,
                     param_dtype=jnp.float32, name="bn1")(h)
    # torch pads max pooling with -inf, as Flax does
    h = nn.max_pool(nn.relu(h), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    stages = []
    for stage, (blocks, width) in enumerate(zip(_stages(self.depth), self.widths)):
      for block in range(blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        h = BasicBlock(width, stride, dtype=self.dtype, name=f"layer{stage + 1}_{block}")(h, train)
      stages.append(jnp.mean(h.astype(jnp.float32), axis=(1, 2)))
    out = stages[-1]
    if not self.features_only:
      out = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(out)
      out = out.astype(jnp.float32)
    return (out, stages) if return_stages else out


def _torch_layers(depth: int):
  """(flax path, torch prefix, kind, shape args) for every conv / bn of the network."""
  yield ("conv1",), "conv1", "conv", (64, 3, 7)
  yield ("bn1",), "bn1", "bn", 64
  channels = 64
  for stage, (blocks, width) in enumerate(zip(_stages(depth), WIDTHS)):
    for block in range(blocks):
      flax_block, torch_block = f"layer{stage + 1}_{block}", f"layer{stage + 1}.{block}"
      yield (flax_block, "conv1"), f"{torch_block}.conv1", "conv", (width, channels, 3)
      yield (flax_block, "bn1"), f"{torch_block}.bn1", "bn", width
      yield (flax_block, "conv2"), f"{torch_block}.conv2", "conv", (width, width, 3)
      yield (flax_block, "bn2"), f"{torch_block}.bn2", "bn", width
      if stage > 0 and block == 0:
        yield (flax_block, "downsample_conv"), f"{torch_block}.downsample.0", "conv", (width, channels, 1)
        yield (flax_block, "downsample_bn"), f"{torch_block}.downsample.1", "bn", width
      channels = width


def expected_shapes(depth: int = 34, num_classes: int = NUM_CLASSES) -> dict[str, tuple]:
  """torchvision ResNet-`depth`'s state dict names and shapes (num_batches_tracked aside)."""
  shapes = {}
  for _, prefix, kind, args in _torch_layers(depth):
    if kind == "conv":
      out, fan_in, k = args
      shapes[f"{prefix}.weight"] = (out, fan_in, k, k)
    else:
      for field in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{field}"] = (args,)
  shapes["fc.weight"] = (num_classes, WIDTHS[-1])
  shapes["fc.bias"] = (num_classes,)
  return shapes


def load_resnet(path_or_state_dict, depth: int = 34, *, num_classes: int = NUM_CLASSES,
                check_hash: bool = True) -> dict:
  """torchvision's ResNet-18/34 weights -> `ResNet` variables {"params", "batch_stats"}.

  Args:
    path_or_state_dict: `resnet34-b627a593.pth` (any file `torch_io.read_state_dict` reads) or a
      {name: array} state dict.
    depth: 18 or 34.
    num_classes: fc width in the file.
    check_hash: when the file is named as torchvision's download, `resnet34-<hex>.pth`, check its
      content against the sha256 prefix <hex>.

  Returns:
    {"params": ..., "batch_stats": ...} of float32 numpy arrays, ResNet(depth).init's layout
    ("layer2_0" / "downsample_conv" for torch's "layer2.0" / "downsample.0"); pass it straight
    to `ResNet(depth).apply` (fc is unused with features_only). `num_batches_tracked` is ignored.

  Raises:
    UserError naming the file and the first missing, unexpected or misshapen entry.
  """
  state, where = state_dict_from(path_or_state_dict, check_hash=check_hash, stems=(f"resnet{depth}",))
  check_state_dict(state, expected_shapes(depth, num_classes), where, ignore=(".num_batches_tracked",),
                   model=f"ResNet-{depth}")
  params: dict = {}
  stats: dict = {}

  def put(tree, path, value):
    for part in path[:-1]:
      tree = tree.setdefault(part, {})
    tree[path[-1]] = value

  f32 = lambda name: np.asarray(state[name], np.float32)  # noqa: E731
  for path, prefix, kind, _ in _torch_layers(depth):
    if kind == "conv":
      put(params, path, {"kernel": conv_kernel(state[f"{prefix}.weight"])})
    else:
      put(params, path, {"scale": f32(f"{prefix}.weight"), "bias": f32(f"{prefix}.bias")})
      put(stats, path, {"mean": f32(f"{prefix}.running_mean"), "var": f32(f"{prefix}.running_var")})
  params["fc"] = {"kernel": dense_kernel(state["fc.weight"]), "bias": f32("fc.bias")}
  return {"params": params, "batch_stats": stats}


def stage_widths() -> Sequence[int]:
  """Widths of the pooled stage outputs `return_stages=True` gives."""
  return WIDTHS


__all__ = ["BasicBlock", "ResNet", "STAGES", "expected_shapes", "load_resnet", "stage_widths"]

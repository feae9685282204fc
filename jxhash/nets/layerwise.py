"""Layer-wise hashing networks on the SCAHN / SAALDH template, for HSIDHN.

HSIDHN's authors (Chen, Wu & Wang) released no HSIDHN code, but the same three authors' SAALDH
(Comput. Electr. Eng. 93:107262, 2021; github.com/SWU-CS-MediaLab/SAALDH @ ade426b0) reuses the
network of their lab's SCAHN (Neurocomputing 2020; github.com/SWU-CS-MediaLab/SCAHN @ 6f20ac8c,
`torchcmh/models/SCAHN/MSText.py`, `resnet.py`, `weight_attention.py`). HSIDHN's "multi-scale and
fusion operations on each layer" very probably follow it; that link is an inference (medium
confidence), not read in the HSIDHN paper. What each block takes from that code:

- `multiscale_text_views` / `MultiScaleText` (SCAHN `MS_Block`): the text vector is
  average-pooled along its length with kernel = stride = 5 x level for levels 10, 6, 3, 2, 1
  (kernels 50, 30, 15, 10, 5, non-overlapping, a trailing partial window dropped), each pooled
  vector goes through a 1x1 convolution (one weight and bias) and ReLU and is brought back to
  the input length by nearest-neighbour interpolation; the five maps and the raw input are
  stacked as six columns. jxhash's rule for a kernel wider than the input (Wikipedia's 10-d
  LDA text): the kernel is clipped to the input width, so the level gives the row mean
  everywhere (SCAHN's AvgPool2d would fail there).
- `ResidualBlock` (SCAHN `Release_Block`): conv (1 x 3, same padding) -> norm -> ReLU -> conv
  (given kernel, valid) -> norm, plus a conv (same kernel) -> norm shortcut, then ReLU. Four of
  them take the (length x 6) map to 1 x 6 x 64, 1 x 4 x 128, 1 x 2 x 256, 1 x 1 x 512.
- `TextHead` (SCAHN `linear_conv_l`, `LRN`, `hash_conv_l`): conv over the whole layer map to
  256 channels -> ReLU -> local response norm (PyTorch's, size 2) -> 1x1 conv to K -> tanh.
- `ImageHead` (SCAHN `resnet.py`): global average pool (a no-op on vectors) -> norm ->
  Linear(K) -> tanh on each ResNet stage.
- `ResidualDense` stages (designed by jxhash): jxhash trains on image feature vectors, not
  pixels, so the ResNet-34 trunk becomes "the same hierarchy over an MLP trunk": four stages of
  residual Dense blocks (BasicBlock with Dense in place of the 3x3 convolutions), widths 64,
  128, 256, 512 (ResNet-34's stage widths), one block per stage by default.
- `BitFusion` (SCAHN `WeightAttention`): a learned (layers x K) weight matrix drawn from
  N(0.25, (1/K)^2); the final code is tanh(sum_l w_l * h_l) (SCAHN's trainer applies the tanh
  to the weighted sum).
- BBI between adjacent layers (designed by jxhash; low confidence that it is HSIDHN's):
  `jxhash.nets.multiscale.BidirectionalBilinear` (z = P^T (U^T a * V^T b), the factorised
  bilinear form of Hierarchical Bilinear Pooling, Yu et al., ECCV 2018) over the four layer
  features; each layer's hash head also reads the interaction vectors that arrive at it (the
  bottom-up vector of the pair below it, the top-down vector of the pair above it).

Normalisation: SCAHN uses BatchNorm (PyTorch's momentum 0.1 = flax 0.9, eps 1e-5); `norm="layer"`
swaps in LayerNorm, which needs no running statistics. Initialisation follows SCAHN's
`_init_params`: Kaiming normal (fan-out, ReLU gain) for every convolution, N(0, 0.01^2) for the
image heads' Linear layers, zero biases, norm scales 1.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.nets.multiscale import BidirectionalBilinear

SCAHN_LEVELS = (10, 6, 3, 2, 1)
SCAHN_POOL_UNIT = 5  # kernel = stride = 5 x level

# Kaiming normal, fan-out mode, ReLU gain (torch.nn.init.kaiming_normal_(mode="fan_out")); jax's fan-out
# of a conv kernel (kh, kw, in, out) is out * kh * kw, as torch's
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def multiscale_text_views(x: jax.Array, kernel: int) -> jax.Array:
  """Average-pool the last axis with kernel = stride = `kernel`, then nearest-interpolate back.

  As SCAHN's MS_Block without its 1x1 convolution: P = L // k windows (a trailing partial
  window is dropped, as PyTorch's AvgPool2d does), output position i takes window
  floor(i P / L) (PyTorch's "nearest" interpolation). A kernel wider than L is clipped to L,
  so every position gets the row mean.

  Args:
    x: (..., L).
    kernel: window width, >= 1.

  Returns:
    (..., L).
  """
  if kernel < 1:
    raise ValueError(f"pooling kernel must be >= 1, got {kernel}")
  length = x.shape[-1]
  kernel = min(int(kernel), length)
  windows = length // kernel
  means = x[..., :windows * kernel].reshape(x.shape[:-1] + (windows, kernel)).mean(-1)
  source = (np.arange(length) * windows) // length  # static: a gather with constant indices
  return means[..., source]


def torch_local_response_norm(x: jax.Array, size: int = 2, alpha: float = 1e-4, beta: float = 0.75,
                              k: float = 1.0) -> jax.Array:
  """PyTorch's LocalResponseNorm over the last (channel) axis.

  b_c = a_c / (k + alpha / size * sum_{c' in [c - floor(size/2), c + ceil(size/2) - 1]} a_c'^2)^beta,
  zero-padded at the ends (size 2: the window is [c - 1, c]). MatConvNet's form
  (`jxhash.nets.local_response_norm`) leans the other way and does not divide alpha by size.
  """
  before = size // 2
  after = size - 1 - before
  channels = x.shape[-1]
  squares = jnp.pad(jnp.square(x), [(0, 0)] * (x.ndim - 1) + [(before, after)])
  window = sum(squares[..., s:s + channels] for s in range(size))
  return x * jnp.power(k + alpha / size * window, -beta)


def _norm(kind: str, train: bool, name: str):
  if kind == "batch":
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
  if kind == "layer":
    return nn.LayerNorm(epsilon=1e-5, name=name)
  raise ValueError(f"unknown norm {kind!r}; choose 'batch' or 'layer'")


class MultiScaleText(nn.Module):
  """(batch, L) text -> (batch, L, 1 + len(levels), 1): the raw input and one map per level.

  Level v: ReLU(w_v * pool(x, unit * v) + b_v) interpolated back to length L
  (`multiscale_text_views`); w_v, b_v are the 1x1 convolution (1 -> 1 channel) of SCAHN's MS_Block.
  """

  levels: Sequence[int] = SCAHN_LEVELS
  unit: int = SCAHN_POOL_UNIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    views = [x]
    for i, level in enumerate(self.levels):
      # a 1x1 conv from 1 to 1 channel: torch's fan-out is 1, so the weight is N(0, 2)
      w = self.param(f"level{i}_kernel", kaiming_fan_out, (1, 1, 1, 1))[0, 0, 0, 0]
      b = self.param(f"level{i}_bias", nn.initializers.zeros, (1,))[0]
      views.append(nn.relu(w * multiscale_text_views(x, self.unit * int(level)) + b))
    return jnp.stack(views, axis=-1)[..., None]


class ResidualBlock(nn.Module):
  """SCAHN's Release_Block on an NHWC map (batch, H, W, C) -> (batch, H', W', features).

  relu(norm(conv_k(relu(norm(conv_1x3(x))))) + norm(conv_k(x))), convolutions without bias,
  conv_1x3 with same padding along W, conv_k (`kernel`) valid.
  """

  features: int
  kernel: tuple
  norm: str = "batch"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = MapConv(self.features, (1, 3), pad=1, name="conv1")(x)
    y = nn.relu(_norm(self.norm, train, "norm1")(y))
    y = _norm(self.norm, train, "norm2")(MapConv(self.features, tuple(self.kernel), name="conv2")(y))
    shortcut = _norm(self.norm, train, "norm_down")(MapConv(self.features, tuple(self.kernel), name="down")(x))
    return nn.relu(y + shortcut)


class MapConv(nn.Module):
  """A bias-free convolution of an NHWC map whose kernel spans 1 row or all H rows.

  The function and parameters of `nn.Conv(features, (kh, kw), padding=((0, 0), (pad, pad)),
  use_bias=False)` (kernel (kh, kw, C, features), Kaiming fan-out init) for kh in {1, H},
  computed as matrix products over the kw shifted column slices: XLA's CPU convolution took
  ~0.9 s for the gradient of SCAHN's first text block on a 128 x 64 x 6 map, the products a
  few tens of milliseconds.
  """

  features: int
  kernel: tuple
  pad: int = 0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (batch, H, W, C) -> (batch, H or 1, W + 2 pad - kw + 1, features)."""
    kh, kw = self.kernel
    rows = x.shape[1]
    if kh not in (1, rows):
      raise ValueError(f"MapConv kernels span 1 or all {rows} rows, got {self.kernel}")
    kernel = self.param("kernel", kaiming_fan_out, (kh, kw, x.shape[3], self.features))
    x = jnp.pad(x, ((0, 0), (0, 0), (self.pad, self.pad), (0, 0)))
    width = x.shape[2] - kw + 1
    shifted = jnp.stack([x[:, :, s:s + width] for s in range(kw)], axis=3)  # (batch, H, W', kw, C)
    if kh == 1:
      return jnp.einsum("bhwsc,sco->bhwo", shifted, kernel[0])
    return jnp.einsum("bhwsc,hsco->bwo", shifted, kernel)[:, None]


class ResidualDense(nn.Module):
  """A ResNet BasicBlock with Dense layers: relu(norm(W2 relu(norm(W1 x))) + shortcut(x)).

  The shortcut is the identity when the width is unchanged, else norm(W_s x). No biases (a
  norm follows every Dense), Kaiming fan-out init as SCAHN's ResNet.
  """

  features: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = lambda name: nn.Dense(self.features, use_bias=False, kernel_init=kaiming_fan_out, name=name)
    y = nn.relu(_norm(self.norm, train, "norm1")(dense("dense1")(x)))
    y = _norm(self.norm, train, "norm2")(dense("dense2")(y))
    shortcut = x if x.shape[-1] == self.features else _norm(self.norm, train, "norm_down")(dense("down")(x))
    return nn.relu(y + shortcut)


class TextHead(nn.Module):
  """SCAHN's text hash head on a flattened layer map (+ optional extra inputs) -> (batch, K).

  Dense(width) -> ReLU -> LRN -> Dense(K) -> tanh. The first Dense is SCAHN's conv over the
  whole (1 x W) map, so its init std is sqrt(2 / (width * W)), the Kaiming fan-out of that conv.
  """

  bits: int
  width: int = 256
  map_width: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.normal(float(np.sqrt(2.0 / (self.width * self.map_width))))
    h = nn.relu(nn.Dense(self.width, kernel_init=init, bias_init=nn.initializers.zeros, name="dense")(x))
    h = torch_local_response_norm(h)
    return jnp.tanh(nn.Dense(self.bits, kernel_init=kaiming_fan_out, bias_init=nn.initializers.zeros, name="hash")(h))


class ImageHead(nn.Module):
  """SCAHN's image hash head: norm -> Linear(K) (N(0, 0.01^2), zero bias) -> tanh."""

  bits: int
  norm: str = "batch"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    h = _norm(self.norm, train, "norm")(x)
    return jnp.tanh(nn.Dense(self.bits, kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.zeros,
                             name="hash")(h))


class BitFusion(nn.Module):
  """tanh(sum_l w_l * h_l) with a learned (L, K) weight matrix drawn from N(0.25, (1/K)^2)."""

  @nn.compact
  def __call__(self, layer_codes: jax.Array) -> jax.Array:
    """layer_codes: (L, batch, K) -> (batch, K)."""
    num_layers, _, bits = layer_codes.shape
    weight = self.param("weight", lambda key, shape: 0.25 + jax.random.normal(key, shape) / bits, (num_layers, bits))
    return jnp.tanh(jnp.sum(weight[:, None, :] * layer_codes, axis=0))


def _bbi_inputs(features: Sequence[jax.Array], vectors: jax.Array, width: int) -> list:
  """Each layer's features with the interaction vectors that arrive at it.

  `vectors` is BidirectionalBilinear's [up_1 .. up_{L-1}, down_1 .. down_{L-1}] (pair p joins
  layers p and p+1): up_p arrives at layer p+1, down_p at layer p.
  """
  pairs = len(features) - 1
  up = [vectors[:, p * width:(p + 1) * width] for p in range(pairs)]
  down = [vectors[:, (pairs + p) * width:(pairs + p + 1) * width] for p in range(pairs)]
  out = []
  for l, f in enumerate(features):
    extra = ([up[l - 1]] if l > 0 else []) + ([down[l]] if l < pairs else [])
    out.append(jnp.concatenate([f] + extra, axis=-1))
  return out


class LayerwiseEncoder(nn.Module):
  """One modality's layer-wise hashing network: four layer codes and their fused code.

      features_1..4 = trunk(x)      text: MultiScaleText + 4 ResidualBlocks; image: 4 ResidualDense stages
      [BBI]   head inputs_l = [features_l, interaction vectors arriving at layer l]
      h_l     = head_l(inputs_l)    (batch, K) in (-1, 1)
      final   = BitFusion(h_1..h_4) (batch, K) in (-1, 1)

  Attributes:
    bits: K.
    modality: "image" (Dense trunk, ImageHead) or "text" (multi-scale conv trunk, TextHead).
    widths: the four layers' widths (text: channels of the residual blocks; image: stage widths).
    blocks: residual Dense blocks per image stage (ignored for text).
    text_levels: multi-scale pooling levels (text; at least 4, so that the map is >= 5 wide).
    text_head_width: hidden width of the text heads.
    bbi: bidirectional bilinear interaction between adjacent layers.
    rank, interaction_features, cascade: of `BidirectionalBilinear`.
    norm: "batch" (SCAHN) or "layer".
    backbone: image only: None (the residual Dense trunk on feature vectors), or a module on
      pixels that returns the layer features (`BackboneFeatures(..., stages=True)`: SCAHN's
      ResNet-34 stages, each with its own hash head), or on token ids (`TextBackboneFeatures(...,
      stages=True)`, one feature vector: then `widths` has one entry).
  """

  bits: int
  modality: str = "image"
  widths: Sequence[int] = (64, 128, 256, 512)
  blocks: Sequence[int] = (1, 1, 1, 1)
  text_levels: Sequence[int] = SCAHN_LEVELS
  text_head_width: int = 256
  bbi: bool = True
  rank: int = 128
  interaction_features: int = 128
  cascade: bool = True
  norm: str = "batch"
  backbone: Optional[nn.Module] = None

  def _text_features(self, x: jax.Array, train: bool) -> tuple[list, list]:
    if len(self.widths) != 4 or len(self.text_levels) < 4:
      raise ValueError("the text net has 4 residual blocks over 1 + >= 4 multi-scale columns")
    maps = MultiScaleText(tuple(self.text_levels), name="multiscale")(x)  # (batch, L, V, 1)
    columns = maps.shape[2]
    # SCAHN (V = 6): (L, 1) collapses the text axis, then (1, 3), (1, 3), (1, 2) take 6 -> 4 -> 2 -> 1
    kernels = [(maps.shape[1], 1), (1, 3), (1, 3), (1, columns - 4)]
    features, map_widths = [], []
    h = maps
    for i, (width, kernel) in enumerate(zip(self.widths, kernels)):
      h = ResidualBlock(int(width), kernel, self.norm, name=f"block{i}")(h, train)
      features.append(h.reshape(h.shape[0], -1))
      map_widths.append(h.shape[2])
    return features, map_widths

  def _image_features(self, x: jax.Array, train: bool) -> list:
    if self.backbone is not None:
      return list(self.backbone(x))
    if len(self.blocks) != len(self.widths):
      raise ValueError(f"blocks {tuple(self.blocks)} and widths {tuple(self.widths)} differ in length")
    features = []
    h = x
    for i, (width, count) in enumerate(zip(self.widths, self.blocks)):
      for j in range(int(count)):
        h = ResidualDense(int(width), self.norm, name=f"stage{i}_block{j}")(h, train)
      features.append(h)
    return features

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """x: (batch, D) -> (final (batch, K), layer codes (L, batch, K)), all in (-1, 1)."""
    if self.backbone is None:  # a backbone takes its own inputs (uint8 pixels, int32 token ids)
      x = jnp.asarray(x, jnp.float32)
    if self.modality == "text":
      features, map_widths = self._text_features(x, train)
    elif self.modality == "image":
      features = self._image_features(x, train)
      map_widths = [1] * len(features)
    else:
      raise ValueError(f"modality must be 'image' or 'text', got {self.modality!r}")
    inputs = features
    if self.bbi and len(features) > 1:
      vectors = BidirectionalBilinear(self.rank, self.interaction_features, self.cascade, name="bbi")(features)
      inputs = _bbi_inputs(features, vectors, self.interaction_features)
    if self.modality == "text":
      codes = [TextHead(self.bits, self.text_head_width, w, name=f"head{i}")(h)
               for i, (h, w) in enumerate(zip(inputs, map_widths))]
    else:
      codes = [ImageHead(self.bits, self.norm, name=f"head{i}")(h, train) for i, h in enumerate(inputs)]
    layer_codes = jnp.stack(codes)
    return BitFusion(name="fusion")(layer_codes), layer_codes

"""CNN-F (VGG-F), DCMH's image network (the weights importer is `jxhash.nets.vgg_f`).

References:
  Chatfield, Simonyan, Vedaldi & Zisserman, "Return of the Devil in the Details: Delving Deep into
    Convolutional Nets", BMVC 2014 (CNN-F).
  Jiang & Li, "Deep Cross-Modal Hashing", CVPR 2017: CNN-F pretrained on ImageNet with fc8 swapped
    for a `bits`-wide linear layer; code jiangqy/DCMH-CVPR2017 (`net_structure_img.m`,
    `DCMH_tensorflow/net_structure_img.py`, `process_DCMH.m`).
  MatConvNet (vlfeat/matconvnet): `vl_nnnormalize` (LRN), `pooling_cpu.cpp` (max pooling skips the
    padding), `utils/import-caffe.py` (how imagenet-vgg-f.mat was converted from VGG's Caffe model).

The network, NHWC, sizes for a 224×224×3 input and the default widths:
  conv1  64@11×11 stride 4, no padding            -> 54×54×64, ReLU, LRN
  pool1  max 3×3 stride 2, pad bottom 1 / right 1  -> 27×27×64
  conv2  256@5×5 stride 1, pad 2                  -> 27×27×256, ReLU, LRN
  pool2  max 3×3 stride 2                         -> 13×13×256
  conv3, conv4, conv5  256@3×3 pad 1, ReLU each   -> 13×13×256
  pool5  max 3×3 stride 2                         -> 6×6×256
  fc6    4096@6×6 (a convolution over the whole map), ReLU -> 1×1×4096
  fc7    4096@1×1, ReLU                           -> 4096 (the `features_only` output)
  fc8    Linear(4096 -> bits), weights and bias N(0, 0.01²), no tanh (DCMH).
No dropout: DCMH trains without it.

LRN. MatConvNet's vl_nnnormalize with PARAM = [N, kappa, alpha, beta]:
  y_k = x_k / (kappa + alpha * sum_{q in Q(k)} x_q²)^beta,
  Q(k) = [k - floor((N-1)/2), k + ceil((N-1)/2)] clipped to the channels.
The sum is not divided by N (Caffe's alpha is N times MatConvNet's; import-caffe.py writes
alpha/local_size). For imagenet-vgg-f.mat's norm1 and norm2 this module uses [5, 2, 1e-4, 0.75]:
DCMH's TensorFlow port, which builds the network from this very file, hard-codes that LRN
(`tf.nn.local_response_normalization(depth_radius=2, bias=2, alpha=1e-4, beta=0.75)`; TF does not
divide alpha by N either), and they are Krizhevsky et al.'s values (NIPS 2012, Sec. 3.3: n=5, k=2,
alpha=1e-4, beta=0.75), which CNN-F follows. The file itself was not at hand, so `load_vgg_f` checks
the norm layers' recorded PARAM against these constants and fails loudly if they differ. Note the
WendellGul/DCMH PyTorch port's `nn.LocalResponseNorm(size=2, k=2)` is a different function
(window [c-1, c], alpha/2): not what the pretrained weights were trained with. MatConvNet's CPU
kernel evaluates the power with a fast polynomial approximation; its GPU kernel (which DCMH ran on)
and this module use the exact power.

Padding. MatConvNet pads [top, bottom, left, right]. The importer emulated Caffe's ceil-mode pooling
by padding pool1 at the bottom and right only: [0 1 0 1] (54 -> 27); pool2 and pool5 need none.
MatConvNet's max pooling skips padded cells (the accumulator starts at -inf), and so does Flax's
`max_pool` (it pads with -inf). DCMH's ports pad with zeros, which is the same here since pool1's
input is non-negative (ReLU then LRN).

MatConvNet's imagenet-vgg-f.mat weights are read by `jxhash.nets.vgg_f.load_vgg_f`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jxhash.errors import UserError

# [N, kappa, alpha, beta] of imagenet-vgg-f.mat's norm1 and norm2 (see the module docstring).
VGG_F_LRN = (5, 2.0, 1e-4, 0.75)
VGG_F_CHANNELS = (64, 256, 256, 256, 256)
VGG_F_FC_WIDTH = 4096
IMAGE_SIZE = 224
# RGB means of the ImageNet training images (VGG's published values): the stand-in mean image of
# a CNNF(subtract_mean=True) that has not been given imagenet-vgg-f.mat's averageImage.
IMAGENET_RGB_MEAN = (123.68, 116.779, 103.939)

# Padding as Flax wants it, ((top, bottom), (left, right)); MatConvNet writes [top bottom left right].
POOL1_PAD = ((0, 1), (0, 1))
NO_PAD = ((0, 0), (0, 0))



def local_response_norm(x: jax.Array, size: int = VGG_F_LRN[0], kappa: float = VGG_F_LRN[1],
                        alpha: float = VGG_F_LRN[2], beta: float = VGG_F_LRN[3]) -> jax.Array:
  """MatConvNet's vl_nnnormalize over the last (channel) axis.

  Args:
    x: (..., C) activations.
    size, kappa, alpha, beta: PARAM = [N, kappa, alpha, beta]; the window of channel k is
      [k - floor((N-1)/2), k + ceil((N-1)/2)], so an even N leans forward (N=2: [k, k+1]).

  Returns:
    (..., C) x / (kappa + alpha * windowed sum of x²)^beta, in x's dtype.
  """
  dtype = x.dtype
  # A power of a sum is evaluated in float32: in bfloat16 the sum keeps ~3 significant digits.
  x = x.astype(jnp.float64 if dtype == jnp.float64 else jnp.float32)
  before = (size - 1) // 2
  after = size - 1 - before
  channels = x.shape[-1]
  squares = jnp.pad(jnp.square(x), [(0, 0)] * (x.ndim - 1) + [(before, after)])
  # N shifted slices summed: exact (no running-sum cancellation) and fused into one kernel by XLA.
  window = squares[..., 0:channels]
  for shift in range(1, size):
    window = window + squares[..., shift:shift + channels]
  return (x * jnp.power(kappa + alpha * window, -beta)).astype(dtype)


def fc8_layer(bits: int, dtype) -> nn.Dense:
  # DCMH (net_structure_img.m): 0.01 * randn for both the weights and the bias.
  return nn.Dense(bits, kernel_init=nn.initializers.normal(0.01), bias_init=nn.initializers.normal(0.01),
                  dtype=dtype, param_dtype=jnp.float32, name="fc8")


class CNNF(nn.Module):
  """CNN-F image network of DCMH: (batch, 224, 224, 3) mean-subtracted RGB -> (batch, bits).

  Load the ImageNet weights with `load_vgg_f` and preprocess images with `preprocess`; a random
  initialisation (LeCun normal kernels, zero biases, fc8 N(0, 0.01²)) only serves shapes and tests.
  With `subtract_mean=True` the network takes raw 0..255 pixels (uint8 is fine) and subtracts
  its own "mean_image" parameter (H, W, 3), initialised to `IMAGENET_RGB_MEAN` and meant to be
  overwritten with load_vgg_f's mean image and kept out of training (`methods.toolkit.freeze`): the
  checkpoint then carries the preprocessing, and no float copy of the pixels is made on the host.

  Attributes:
    bits: output width K (fc8); unused with features_only.
    dtype: computation dtype, e.g. jnp.bfloat16 on GPUs; params stay float32, LRN runs in
      float32, outputs are float32.
    features_only: return the fc7 features (batch, fc_width) and create no fc8, for extracting
      features once and training on them (DCMH's precomputed-feature path).
    channels: conv1..conv5 widths; smaller ones give a cheap network of the same wiring (tests).
    fc_width: fc6/fc7 width.
    lrn: MatConvNet LRN PARAM [N, kappa, alpha, beta] of norm1 and norm2.
    subtract_mean: take raw pixels and subtract the "mean_image" parameter (see above).
  """

  bits: int
  dtype: jnp.dtype = jnp.float32
  features_only: bool = False
  channels: Sequence[int] = VGG_F_CHANNELS
  fc_width: int = VGG_F_FC_WIDTH
  lrn: Sequence[float] = VGG_F_LRN
  subtract_mean: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (batch, 224, 224, 3) float -> (batch, bits), or (batch, fc_width) with features_only."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise UserError(f"CNNF expects (batch, height, width, 3) images, got shape {x.shape}")
    size, kappa, alpha, beta = self.lrn
    c1, c2, c3, c4, c5 = self.channels

    def conv(h, features, kernel, stride, pad, name):
      return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, dtype=self.dtype,
                     param_dtype=jnp.float32, kernel_init=nn.initializers.lecun_normal(),
                     bias_init=nn.initializers.zeros, name=name)(h)

    def norm(h):
      return local_response_norm(h, int(size), kappa, alpha, beta)

    def pool(h, pad):
      return nn.max_pool(h, (3, 3), strides=(2, 2), padding=pad)

    if self.subtract_mean:
      mean = self.param("mean_image", _constant_mean, x.shape[1:])
      # in float32 before any cast: 0..255 minus the mean loses ~2 digits in bfloat16 otherwise
      x = jnp.asarray(x, jnp.float32) - jax.lax.stop_gradient(mean)[None]
    h = jnp.asarray(x, self.dtype)
    h = pool(norm(nn.relu(conv(h, c1, 11, 4, NO_PAD, "conv1"))), POOL1_PAD)
    h = pool(norm(nn.relu(conv(h, c2, 5, 1, ((2, 2), (2, 2)), "conv2"))), NO_PAD)
    h = nn.relu(conv(h, c3, 3, 1, ((1, 1), (1, 1)), "conv3"))
    h = nn.relu(conv(h, c4, 3, 1, ((1, 1), (1, 1)), "conv4"))
    h = nn.relu(conv(h, c5, 3, 1, ((1, 1), (1, 1)), "conv5"))
    h = pool(h, NO_PAD)
    h = nn.relu(conv(h, self.fc_width, 6, 1, NO_PAD, "fc6"))
    h = nn.relu(conv(h, self.fc_width, 1, 1, NO_PAD, "fc7"))
    if h.shape[1:3] != (1, 1):
      # fc6 is a 6×6 convolution: only inputs near 224×224 reduce to a single feature vector.
      raise UserError(f"CNNF expects {IMAGE_SIZE}×{IMAGE_SIZE} images, got {x.shape[1]}×{x.shape[2]} "
                      f"(fc7 map {h.shape[1]}×{h.shape[2]}); resize them with preprocess()")
    h = h.reshape(h.shape[0], self.fc_width)
    if self.features_only:
      return h.astype(jnp.float32)
    return fc8_layer(self.bits, self.dtype)(h).astype(jnp.float32)


def _constant_mean(key, shape):
  del key
  return jnp.broadcast_to(jnp.asarray(IMAGENET_RGB_MEAN, jnp.float32), shape)


__all__ = ["CNNF", "IMAGE_SIZE", "IMAGENET_RGB_MEAN", "VGG_F_CHANNELS", "VGG_F_FC_WIDTH", "VGG_F_LRN",
           "local_response_norm"]

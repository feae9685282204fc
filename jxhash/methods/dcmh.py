"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017).

Networks, no tanh on the K outputs:
- image, pixels (N, 224, 224, 3): CNN-F (`jxhash.nets.CNNF`), fc8 -> K, mean image subtracted
  inside the net; conv1..fc7 from imagenet-vgg-f.mat when `vgg_f` names it. Other backbones
  go through `toolkit.image_backbone`.
- image, features (N, D): MLP D -> 4096 -> ReLU -> K.
- text (N, T): BoW T -> 8192 -> ReLU -> K.

Objective of one phase, theta_ij = <f_i, g_j> / 2, S_ij = 1[l_i . l_j > 0], divided by bs * n:
    J = -sum_ij (S_ij theta_ij - log(1 + e^theta_ij)) + gamma ||B - F||² + eta ||F^T 1||²
(`losses.dcmh_objective`; the balance runs over the whole buffer F, only the batch rows live).

Schedule: per epoch an image phase (batches of F rows against the whole buffer G), then a
text phase with the roles swapped (`phase_order`), then B = sign(F + G). SGD, lr linear or
log-spaced from `lr` to `lr_end` over the epochs, each layer's step divided by its fan-in and
the gradient's norm clipped (`lr_scaling`, `clip_norm`); `--preset paper` restores the published values.

State (`toolkit.BufferedState`): image and text TrainStates, buffers F, G (n, K), codes B (n, K).

Provenance, fidelity and ablations: docs/methods/dcmh.md
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jxhash import losses
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets import CNNF
from jxhash.nets.cnnf import VGG_F_CHANNELS, VGG_F_FC_WIDTH
from jxhash.nets.vgg_f import load_vgg_f, mean_image_for
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage

State = toolkit.BufferedState  # nets: image/text TrainStates; outputs: F, G; codes: B


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """DCMH hyper-parameters (docs/methods/dcmh.md lists each one's source)."""

  gamma: float = 1.0  # quantization weight
  eta: float = 0.1  # bit-balance weight
  lr: float = 60.0  # first epoch's SGD lr, per unit fan-in when lr_scaling="fan_in"
  lr_end: float = 1e-6  # last epoch's lr
  lr_schedule: str = "linear"  # lr -> lr_end over the epochs: "linear" or "logspace"
  weight_decay: float = 0.0  # SGD weight decay
  lr_scaling: str = "fan_in"  # "fan_in": each layer's step / its fan-in (toolkit.scale_by_fan_in); "none"
  clip_norm: float = 1.0  # clip the gradient's global norm at this; 0: no clipping
  image_hidden: tuple = (4096,)  # image feature MLP hidden widths
  vgg_f: str = ""  # pixels: imagenet-vgg-f.mat to start CNN-F from ("": random init, plumbing only)
  cnn_dtype: str = "float32"  # pixels: CNN-F computation dtype ("bfloat16" on GPUs/TPUs)
  cnn_channels: tuple = VGG_F_CHANNELS  # pixels: conv1..conv5 widths (VGG-F's; smaller for tests)
  cnn_fc_width: int = VGG_F_FC_WIDTH  # pixels: fc6/fc7 width
  text_hidden: tuple = (8192,)  # text net hidden widths
  init: str = "fan_in"  # "fan_in" (LeCun normal, zero biases) or "normal0.01" (weights and biases N(0, 0.01²))
  buffer_init: str = "normal"  # F, G start N(0, 1) ("normal") or 0 ("zeros")
  phase_order: tuple = ("image", "text")  # order of the phases within an epoch


# on pixels: the authors' CNN-F. backbone="auto" or "cnn-f" is DCMH's own CNN-F path below (fields
# vgg_f, cnn_*); any other backbone goes through the shared one (toolkit.image_backbone)
SOURCE_BACKBONE = "cnn-f"


def _own_cnn_f(config: Config, dims: Dims) -> bool:
  """Whether the image net is DCMH's CNN-F (pixels with backbone "auto" or "cnn-f")."""
  if not (dims.is_pixels and config.backbone in ("auto", SOURCE_BACKBONE)):
    return False
  for field, instead in (("backbone_weights", "vgg_f"), ("backbone_widths", "cnn_channels and cnn_fc_width"),
                         ("backbone_dtype", "cnn_dtype")):
    if getattr(config, field) != Config.__dataclass_fields__[field].default:
      raise UserError(f"dcmh: {field} applies to the shared backbones; DCMH's CNN-F takes {instead}")
  return True


def _modules(config: Config, dims: Dims) -> dict:
  if _own_cnn_f(config, dims):
    if config.cnn_dtype not in ("float32", "bfloat16"):
      raise UserError(f"cnn_dtype must be 'float32' or 'bfloat16', got {config.cnn_dtype!r}")
    image = CNNF(bits=config.bits, dtype=jnp.dtype(config.cnn_dtype), channels=tuple(config.cnn_channels),
                 fc_width=config.cnn_fc_width, subtract_mean=True)
    return {**toolkit.feature_mlps(config, tanh=False, dims=dims, source=SOURCE_BACKBONE), "image": image}
  return toolkit.feature_mlps(config, tanh=False, dims=dims, source=SOURCE_BACKBONE)


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  # the CNN's mean image is a constant kept in params (toolkit.freeze), not a weight
  tx = toolkit.freeze(toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                                  lr_scaling=config.lr_scaling, clip_norm=config.clip_norm))
  text_tx = toolkit.text_backbone_tx(tx, config, dims)  # tx itself on text features
  if _own_cnn_f(config, dims) or not dims.is_pixels:
    nets = toolkit.network_states(keys, _modules(config, dims), dims, txs={"image": tx, "text": text_tx})
  else:
    image_tx = toolkit.backbone_tx(toolkit.sgd(toolkit.config_schedule(config, num_train),
                                               weight_decay=config.weight_decay, lr_scaling=config.lr_scaling,
                                               clip_norm=config.clip_norm), config, dims, SOURCE_BACKBONE)
    nets = toolkit.network_states(keys, _modules(config, dims), dims, txs={"image": image_tx, "text": text_tx})
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind=config.buffer_init)
  return State(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


def warm_start(state: State, config: Config) -> State:
  """CNN-F's conv1..fc7 and mean image from `config.vgg_f` (fc8 keeps its N(0, 0.01²) init).

  `state` has a leading seed axis; every seed starts from the same pretrained weights.
  """
  state = toolkit.backbone_warm_start(state, config, source=SOURCE_BACKBONE)
  if not config.vgg_f:
    return state
  net = state.nets["image"]
  if "conv1" not in net.params:
    raise UserError(f"vgg_f={config.vgg_f!r} initialises CNN-F, which DCMH uses on pixel images; "
                    "this dataset has image features")
  weights, mean = load_vgg_f(config.vgg_f, channels=tuple(config.cnn_channels), fc_width=config.cnn_fc_width)
  seeds = net.params["conv1"]["kernel"].shape[0]
  weights["mean_image"] = mean_image_for(mean, *net.params["mean_image"].shape[1:3])
  params = dict(net.params, **jax.tree.map(lambda w: jnp.broadcast_to(jnp.asarray(w), (seeds,) + w.shape),
                                           weights))
  return state.replace(nets=dict(state.nets, image=net.replace(params=params)))


def _objective(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def objective(out, extras, state: State, batch: dict, similarity):
    del extras
    index = batch["index"]
    loss = losses.dcmh_objective(out, other=state.outputs[other], similarity=similarity, codes=state.codes[index],
                                 buffer=state.outputs[modality], index=index, gamma=config.gamma, eta=config.eta)
    return loss, {}

  return objective


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train
  for m in config.phase_order:
    toolkit.check_modality(m)
  phases = tuple(Phase(m, toolkit.network_step(m, _objective(config, m), context=toolkit.label_context),
                       config.batch_size) for m in config.phase_order)
  # B = sign(gamma (F + G)); gamma > 0 does not change the sign
  return (Stage("train", config.epochs, phases, end_of_epoch=toolkit.refresh_codes()),)


SPEC = MethodSpec(
    name="dcmh", Config=Config, init=init, stages=stages, encode=toolkit.encode,
    fidelity="full: networks, objective, alternation and schedule of the authors' code; docs/methods/dcmh.md",
    reference="Q.-Y. Jiang and W.-J. Li, Deep Cross-Modal Hashing, CVPR 2017", warm_start=warm_start,
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)},
    # paper: the published settings where the defaults above differ (docs/methods/dcmh.md)
    presets={"paper": {"init": "normal0.01", "lr_scaling": "none", "lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0}})

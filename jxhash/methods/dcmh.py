"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017). Fidelity: full (`--preset paper`).

Follows the authors' MATLAB and TensorFlow releases (jiangqy/DCMH-CVPR2017); `--preset paper`
(`PAPER`) gives their settings exactly, and the defaults differ from them in four values:

- Defaults that train on any input width (docs/defaults.md). The paper's N(0, 0.01²) init and
  one lr of 10^-1.5 for every layer were tuned for 4096-d CNN features and 1386-d tags: on
  small standardised features (Wikipedia's 10-d LDA texts) the outputs start near 0 and the
  loss sits at ln 2, and with a fan-in init the same lr diverges. The defaults use a fan-in
  init (`init="fan_in"`), divide each layer's SGD step by its fan-in
  (`lr_scaling="fan_in"`, `toolkit.scale_by_fan_in`: the change of every layer's outputs per
  step then no longer grows with its width), clip the gradient's global norm at 1
  (`clip_norm`: no step can blow up), and weigh the balance term by eta = 0.1; the base
  lr = 60 and eta were chosen on validation splits (Wikipedia's, carved from its training
  items, and synthetic data of widths 10 to 4096, dense and bag-of-words). The fan-in scaling
  covers the input width; the lr was chosen for the default hidden widths (4096 / 8192), and
  much narrower nets need a lower one (512-wide: lr = 20 trains, lr = 60 stays at chance).

Paper (`--preset paper`):
- Networks: an image net and a text net, each ending in a linear hash layer with no tanh.
  On pixels (N, 224, 224, 3) the image net is CNN-F (`jxhash.nets.CNNF`) with fc8 -> K,
  initialised from MatConvNet's imagenet-vgg-f.mat when `vgg_f` names it (the paper's
  protocol; its mean image is subtracted inside the network and never trained). On
  precomputed image features it is an MLP feature -> 4096 -> K (CNN-F's fc7 width); the text
  net is BoW -> 8192 -> ReLU -> K. Weights and biases N(0, 0.01²).
- Objective, with theta_ij = <f_i, g_j> / 2 and S_ij = 1[l_i · l_j > 0]:
      J = -sum_ij (S_ij theta_ij - log(1 + e^theta_ij)) + gamma (||B - F||² + ||B - G||²)
          + eta (||F^T 1||² + ||G^T 1||²),   gamma = eta = 1.
- Alternation per epoch: an image phase (batches of image rows against the whole text buffer
  G; quantization against B's rows; balance over the whole buffer F with only the batch rows
  differentiable; loss / (bs * n); the batch outputs written into F), a text phase with roles
  swapped, then B = sign(F + G).
- SGD, batch 128, 500 epochs; lr linear 10^-1.5 -> 1e-6 (TF code, the preset) or
  `lr_schedule="logspace", lr_end=1e-3, weight_decay=5e-4` (MATLAB code).

Differences, all config fields: the MATLAB code updates text before image (`phase_order`);
sign(0) is +1 here (`codes.binarize`), 0 in the original; buffers start N(0, 1) as in the TF
code (`buffer_init="zeros"` for MATLAB). docs/methods/dcmh.md lists every component.
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
  """DCMH hyper-parameters; defaults from the authors' TF code (Jiang & Li, 2017)."""

  gamma: float = 1.0  # quantization weight (paper, all released code)
  eta: float = 0.1  # bit-balance weight; paper 1 (all released code); 0.1 chosen on val (docs/defaults.md)
  lr: float = 60.0  # first epoch's lr, per unit fan-in (lr_scaling); chosen on val; paper 10^-1.5 unscaled
  lr_end: float = 1e-6  # last epoch's lr (TF code; MATLAB 1e-3)
  lr_schedule: str = "linear"  # "linear" (TF) or "logspace" (MATLAB)
  weight_decay: float = 0.0  # TF code; MATLAB 5e-4
  lr_scaling: str = "fan_in"  # each layer's step / its fan-in (toolkit.scale_by_fan_in); paper "none"
  clip_norm: float = 1.0  # clip the gradient's global norm (bounds every step); paper 0 (none)
  image_hidden: tuple = (4096,)  # feature MLP width (CNN-F fc7)
  vgg_f: str = ""  # pixels: imagenet-vgg-f.mat to start CNN-F from ("": random init, plumbing only)
  cnn_dtype: str = "float32"  # pixels: CNN-F computation dtype ("bfloat16" on GPUs/TPUs)
  cnn_channels: tuple = VGG_F_CHANNELS  # pixels: conv1..conv5 widths (VGG-F's; smaller for tests)
  cnn_fc_width: int = VGG_F_FC_WIDTH  # pixels: fc6/fc7 width
  text_hidden: tuple = (8192,)  # text net width (paper)
  init: str = "fan_in"  # LeCun normal, unit-scale activations at any width; paper "normal0.01"
  buffer_init: str = "normal"  # F, G start N(0,1) (TF) or "zeros" (MATLAB)
  phase_order: tuple = ("image", "text")  # TF order; MATLAB runs text first


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
    return {**toolkit.feature_mlps(config, tanh=False), "image": image}
  return toolkit.feature_mlps(config, tanh=False, dims=dims, source=SOURCE_BACKBONE)


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  # the CNN's mean image is a constant kept in params (toolkit.freeze), not a weight
  tx = toolkit.freeze(toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                                  lr_scaling=config.lr_scaling, clip_norm=config.clip_norm))
  if _own_cnn_f(config, dims) or not dims.is_pixels:
    nets = toolkit.network_states(keys, _modules(config, dims), dims, tx)
  else:
    image_tx = toolkit.backbone_tx(toolkit.sgd(toolkit.config_schedule(config, num_train),
                                               weight_decay=config.weight_decay, lr_scaling=config.lr_scaling,
                                               clip_norm=config.clip_norm), config, dims, SOURCE_BACKBONE)
    nets = toolkit.network_states(keys, _modules(config, dims), dims, txs={"image": image_tx, "text": tx})
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


# the published settings (jiangqy/DCMH-CVPR2017, TF code), where the defaults above differ
PAPER = {"init": "normal0.01", "lr_scaling": "none", "lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0}

SPEC = MethodSpec(
    name="dcmh", Config=Config, init=init, stages=stages, encode=toolkit.encode,
    fidelity="full: networks, objective, alternation and schedule of the authors' code",
    reference="Q.-Y. Jiang and W.-J. Li, Deep Cross-Modal Hashing, CVPR 2017", warm_start=warm_start,
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)},
    presets={"paper": PAPER})

"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017). Fidelity: full.

Follows the authors' MATLAB and TensorFlow releases (jiangqy/DCMH-CVPR2017):

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
- SGD, batch 128, 500 epochs; lr linear 10^-1.5 -> 1e-6 (TF code, the default) or
  `lr_schedule="logspace", lr_end=1e-3, weight_decay=5e-4` (MATLAB code).

Differences, all config fields: the MATLAB code updates text before image (`phase_order`);
sign(0) is +1 here (`losses.binarize`), 0 in the original; buffers start N(0, 1) as in the TF
code (`buffer_init="zeros"` for MATLAB). On small standardised features (Wikipedia) use
`init="fan_in"` and a smaller lr (METHODS.md, "DCMH").
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from jxhash import losses
from jxhash.errors import UserError
from jxhash.methods import base
from jxhash.nets import CNNF, MLPEncoder
from jxhash.nets.cnnf import VGG_F_CHANNELS, VGG_F_FC_WIDTH, load_vgg_f, mean_image_for

MODALITIES = ("image", "text")


@dataclasses.dataclass(frozen=True)
class Config(base.BaseConfig):
  """DCMH hyper-parameters; defaults from the authors' TF code (Jiang & Li, 2017)."""

  gamma: float = 1.0  # quantization weight (paper, all released code)
  eta: float = 1.0  # bit-balance weight (paper, all released code)
  lr: float = 10 ** -1.5  # first epoch's lr (TF and MATLAB code)
  lr_end: float = 1e-6  # last epoch's lr (TF code; MATLAB 1e-3)
  lr_schedule: str = "linear"  # "linear" (TF) or "logspace" (MATLAB)
  weight_decay: float = 0.0  # TF code; MATLAB 5e-4
  image_hidden: tuple = (4096,)  # feature MLP width (CNN-F fc7)
  vgg_f: str = ""  # pixels: imagenet-vgg-f.mat to start CNN-F from ("": random init, plumbing only)
  cnn_dtype: str = "float32"  # pixels: CNN-F computation dtype ("bfloat16" on GPUs/TPUs)
  cnn_channels: tuple = VGG_F_CHANNELS  # pixels: conv1..conv5 widths (VGG-F's; smaller for tests)
  cnn_fc_width: int = VGG_F_FC_WIDTH  # pixels: fc6/fc7 width
  text_hidden: tuple = (8192,)  # text net width (paper)
  init: str = "normal0.01"  # "normal0.01" (paper) or "fan_in" (small standardised features)
  buffer_init: str = "normal"  # F, G start N(0,1) (TF) or "zeros" (MATLAB)
  phase_order: tuple = ("image", "text")  # TF order; MATLAB runs text first


@flax.struct.dataclass
class State:
  nets: dict  # modality -> TrainState
  codes: dict  # modality -> (n, K) buffer of the latest outputs (F, G)
  binary: jax.Array  # (n, K) B in {-1, +1}


def _modules(config: Config, dims: dict) -> dict:
  if len(dims["image_shape"]) == 3:
    if config.cnn_dtype not in ("float32", "bfloat16"):
      raise UserError(f"cnn_dtype must be 'float32' or 'bfloat16', got {config.cnn_dtype!r}")
    image = CNNF(bits=config.bits, dtype=jnp.dtype(config.cnn_dtype), channels=tuple(config.cnn_channels),
                 fc_width=config.cnn_fc_width, subtract_mean=True)
  else:
    image = MLPEncoder(bits=config.bits, hidden=tuple(config.image_hidden), init_scheme=config.init)
  return {"image": image,
          "text": MLPEncoder(bits=config.bits, hidden=tuple(config.text_hidden), init_scheme=config.init)}


def init(key: jax.Array, config: Config, dims: dict, num_train: int) -> State:
  modules = _modules(config, dims)
  shapes = {"image": tuple(dims["image_shape"]), "text": (dims["text_dim"],)}
  steps = base.steps_per_epoch(num_train, config.batch_size)
  schedule = base.epoch_schedule(config.lr_schedule, start=config.lr, end=config.lr_end,
                                 epochs=config.epochs, steps=steps)
  # the CNN's mean image is a constant kept in params (base.freeze), not a weight
  tx = base.freeze(base.sgd(schedule, weight_decay=config.weight_decay))
  keys = dict(zip(MODALITIES + ("buffers",), jax.random.split(key, 3)))
  nets = {}
  for m in MODALITIES:
    params = modules[m].init(keys[m], jnp.zeros((1,) + shapes[m], jnp.float32))["params"]
    nets[m] = base.make_state(modules[m], params, tx)
  codes, binary = init_buffers(keys["buffers"], buffer_init=config.buffer_init, bits=config.bits,
                               num_train=num_train)
  return State(nets=nets, codes=codes, binary=binary)


def warm_start(state: State, config: Config) -> State:
  """CNN-F's conv1..fc7 and mean image from `config.vgg_f` (fc8 keeps its N(0, 0.01²) init).

  `state` has a leading seed axis; every seed starts from the same pretrained weights.
  """
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


def init_buffers(key: jax.Array, *, buffer_init: str, bits: int, num_train: int) -> tuple[dict, jax.Array]:
  """F, G (each (n, K)) drawn N(0, 1) ("normal", TF code) or zero ("zeros", MATLAB), and B = sign(F + G)."""
  if buffer_init == "normal":
    buf = jax.random.normal(key, (2, num_train, bits))
  elif buffer_init == "zeros":
    buf = jnp.zeros((2, num_train, bits))
  else:
    raise ValueError(f"unknown buffer_init {buffer_init!r}; choose 'normal' or 'zeros'")
  return {"image": buf[0], "text": buf[1]}, losses.binarize(buf[0] + buf[1])


def objective(codes: jax.Array, *, other: jax.Array, similarity: jax.Array, binary: jax.Array,
              buffer: jax.Array, index: jax.Array, gamma: float, eta: float) -> jax.Array:
  """DCMH loss of one modality's batch, normalised by bs * n as in the released code.

  Args:
    codes: (bs, K) the batch outputs of the network being trained.
    other: (n, K) the other modality's buffer (constant).
    similarity: (bs, n) S between the batch and every training item.
    binary: (bs, K) the batch rows of B.
    buffer: (n, K) this modality's buffer; the batch rows are replaced by `codes` so that the
      balance term covers the whole buffer but only the batch is differentiable.
    index: (bs,) the batch rows' positions.
    gamma, eta: quantization and balance weights.
  """
  theta = 0.5 * codes @ other.T
  full = jnp.asarray(buffer).at[index].set(codes)
  loss = (losses.pairwise_likelihood(theta, similarity) + gamma * losses.quantization(binary, codes)
          + eta * losses.bit_balance(full))
  return loss / (codes.shape[0] * other.shape[0])


def _phase_step(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    del key
    index = batch["index"]
    similarity = losses.label_similarity(batch["labels"], data["labels"])
    net = state.nets[modality]

    def loss_fn(params):
      out = net.apply_fn({"params": params}, batch[modality])
      loss = objective(out, other=state.codes[other], similarity=similarity,
                       binary=state.binary[index], buffer=state.codes[modality], index=index,
                       gamma=config.gamma, eta=config.eta)
      return loss, out

    net, loss, out = base.apply_gradients(net, loss_fn)
    codes = dict(state.codes, **{modality: state.codes[modality].at[index].set(out)})
    nets = dict(state.nets, **{modality: net})
    return state.replace(nets=nets, codes=codes), {"loss": loss}

  return step


def update_binary(state: State, data: dict) -> State:
  """B = sign(gamma (F + G)); gamma > 0 does not change the sign."""
  del data
  return state.replace(binary=losses.binarize(state.codes["image"] + state.codes["text"]))


def stages(config: Config, num_train: int) -> tuple[base.Stage, ...]:
  del num_train
  for m in config.phase_order:
    base.check_modality(m)
  phases = tuple(base.Phase(m, _phase_step(config, m), config.batch_size) for m in config.phase_order)
  return (base.Stage("train", config.epochs, phases, end_of_epoch=update_binary),)


def encode(state: State, modality: str, x: jax.Array) -> jax.Array:
  base.check_modality(modality)
  net = state.nets[modality]
  return net.apply_fn({"params": net.params}, x)


SPEC = base.MethodSpec(
    name="dcmh", Config=Config, init=init, stages=stages, encode=encode,
    fidelity="full: networks, objective, alternation and schedule of the authors' code",
    reference="Q.-Y. Jiang and W.-J. Li, Deep Cross-Modal Hashing, CVPR 2017", warm_start=warm_start,
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)})

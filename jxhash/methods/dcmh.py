"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017). Fidelity: full.

Follows the authors' MATLAB and TensorFlow releases (jiangqy/DCMH-CVPR2017):

- Networks: an image net and a text net, each ending in a linear hash layer with no tanh.
  On precomputed image features the image net is an MLP feature -> 4096 -> K (CNN-F's fc7
  width); the text net is BoW -> 8192 -> ReLU -> K. Weights and biases N(0, 0.01²).
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
from jxhash.methods import base
from jxhash.nets import MLPEncoder

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
  if len(dims["image_shape"]) != 1:
    raise ValueError("DCMH on pixels needs the CNN-F image net; this build takes (N, D) image features")
  return {
      "image": MLPEncoder(bits=config.bits, hidden=tuple(config.image_hidden), init_scheme=config.init),
      "text": MLPEncoder(bits=config.bits, hidden=tuple(config.text_hidden), init_scheme=config.init),
  }


def init(key: jax.Array, config: Config, dims: dict, num_train: int) -> State:
  modules = _modules(config, dims)
  widths = {"image": dims["image_shape"][0], "text": dims["text_dim"]}
  steps = base.steps_per_epoch(num_train, config.batch_size)
  schedule = base.epoch_schedule(config.lr_schedule, start=config.lr, end=config.lr_end,
                                 epochs=config.epochs, steps=steps)
  keys = dict(zip(MODALITIES + ("buffers",), jax.random.split(key, 3)))
  nets = {}
  for m in MODALITIES:
    params = modules[m].init(keys[m], jnp.zeros((1, widths[m]), jnp.float32))["params"]
    nets[m] = base.make_state(modules[m], params, base.sgd(schedule, weight_decay=config.weight_decay))
  codes, binary = init_buffers(keys["buffers"], buffer_init=config.buffer_init, bits=config.bits,
                               num_train=num_train)
  return State(nets=nets, codes=codes, binary=binary)


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
    reference="Q.-Y. Jiang and W.-J. Li, Deep Cross-Modal Hashing, CVPR 2017",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)})

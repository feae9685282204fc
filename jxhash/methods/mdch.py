"""MDCH: Mask Cross-Modal Hashing Networks (IEEE TMM 23:550-558, 2021). Fidelity: a
reconstruction from the abstract.

Neither code nor formulas of MDCH are public; its abstract names three components: a
"semantic mask" that improves the semantic information of the image feature, intra-modal
networks that keep each modality's similarity structure, and inter-modal networks, trained
alternately. jxhash realises each of them as follows; every design is jxhash's, not the
authors', and the free choices are `Config` fields:

- Semantic mask (component designed by jxhash; `jxhash.nets.mask`): the image net (DCMH's
  feature MLP x -> 4096 -> K; on pixels CNN-F, h its fc7 features: toolkit.BackboneConfig)
  gets a classifier head on its hidden feature h, label logits
  z = V h + c trained with binary cross-entropy on the training labels (weight `beta`), and a
  mask m = σ(W σ(z) + b) over h's channels; the hash layer sees h ⊙ (1 + m). The text net is
  DCMH's (BoW -> 8192 -> ReLU -> K).
- Intra-modal updates (designed by jxhash): DCMH's pairwise likelihood within a modality,
  theta_ij = <f_i, F_j> / 2 for a batch of image outputs against the image buffer F (and
  <g_i, G_j> / 2 for text), S_ij = 1[l_i · l_j > 0], weight `alpha`, normalised by bs * n.
- Inter-modal updates: DCMH's objective unchanged (`losses.dcmh_objective`: cross-modal pairwise
  likelihood, quantization gamma ||B - H||², balance eta ||H^T 1||²), image phase then text
  phase, plus the label loss in the image phase.
- Alternation (designed by jxhash): each epoch runs an intra phase (both networks, one batch
  each step) and then the inter phases; then B = sign(F + G). Each network's parameters are
  updated by two optimisers with separate optax states, one per phase (`PhasedNet`), so
  stateful optimisers (momentum) keep separate intra and inter moments.
- Optimiser, schedule, batch size, epochs, init and buffers: DCMH's (the abstract gives none).

Ablations: `mask=False` (image net = DCMH's MLP, no classifier, no label loss) and
`intra=False` (no intra phase, no intra optimiser state); both off is DCMH exactly
(`experiments/mdch_ablation.py`, results in docs/mdch_ablation.md). Measured there: the mask
helped in matched comparisons on the synthetic data (about +0.01 to +0.05 mAP); the intra
phase's gain on the synthetic data disappears against training without it for twice the epochs
(the same number of updates), while on Wikipedia (one seed) some of it remained.

Defaults (docs/defaults.md): the mechanism of DCMH's defaults, for the same reason: a fan-in
init, each layer's SGD step divided by its fan-in (`lr_scaling="fan_in"`), the gradient's
global norm clipped at 1 and eta = 0.1, with the base lr = 20 chosen on Wikipedia's val split.
DCMH's balance term over the mostly stale buffer oscillated or diverged with eta = 1 at lr
10^-1.5 once the init was fan-in scaled (MDCH's extra intra updates and the mask's up-to-2x
amplification made it worse than for DCMH); the clipping and eta = 0.1 keep it stable.
`--preset paper` gives DCMH's published settings for the shared parts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jxhash import losses
from jxhash.methods import toolkit
from jxhash.nets.mask import MaskedMLPEncoder
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """MDCH hyper-parameters. The paper's values are not public: the shared ones are DCMH's
  (Jiang & Li, 2017, TF code), the rest are jxhash reconstruction choices.

  The default 500 epochs with 4096/8192-wide nets is DCMH's budget; on the synthetic data it
  took 2 min of CPU time (5.5 min wall on the shared 2-core machine). The init, lr scaling,
  clipping, lr and eta defaults are jxhash's (module docstring, "Defaults"); `--preset paper`.
  """

  gamma: float = 1.0  # quantization weight (DCMH)
  eta: float = 0.1  # bit-balance weight; DCMH 1; 0.1 chosen on val as for DCMH (docs/defaults.md)
  alpha: float = 1.0  # intra-modal weight; reconstruction: as much weight as the inter-modal likelihood
  beta: float = 1.0  # label BCE weight; reconstruction: per-entry mean BCE is on the scale of the per-pair loss
  mask: bool = True  # ablation: False drops the semantic mask and its classifier
  intra: bool = True  # ablation: False drops the intra-modal phase
  mask_residual: bool = True  # reconstruction: h ⊙ (1 + m) cannot switch channels off, only amplify them
  detach_prediction: bool = False  # reconstruction: the hash loss may also shape the label predictions
  lr: float = 20.0  # first epoch's lr per unit fan-in (lr_scaling), both phases; chosen on val; DCMH 10^-1.5
  lr_end: float = 1e-6  # last epoch's lr (DCMH TF code)
  lr_schedule: str = "linear"  # DCMH TF code; "logspace" for the MATLAB one
  weight_decay: float = 0.0  # DCMH TF code
  lr_scaling: str = "fan_in"  # each layer's step / its fan-in (toolkit.scale_by_fan_in); DCMH "none"
  clip_norm: float = 1.0  # clip the gradient's global norm (bounds every step); DCMH 0 (none)
  momentum: float = 0.0  # 0: plain SGD as in DCMH; > 0 gives each phase its own momentum
  image_hidden: tuple = (4096,)  # DCMH feature MLP width (CNN-F fc7); the mask acts on it
  text_hidden: tuple = (8192,)  # DCMH text net width
  init: str = "fan_in"  # LeCun normal, unit-scale activations at any width; DCMH "normal0.01"
  buffer_init: str = "normal"  # F, G start N(0, 1) (DCMH TF code) or "zeros"


@flax.struct.dataclass
class PhasedNet:
  """A network whose one set of parameters is moved by one optimiser per phase.

  Like flax's TrainState, except that `opt_states` holds a separate optax state for each
  phase ("intra", "inter"): the phases share `params` but not their moments or step counts.
  """

  params: Any
  opt_states: dict  # phase -> optax state
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  txs: tuple = flax.struct.field(pytree_node=False)  # ((phase, optax.GradientTransformation), ...)

  @classmethod
  def create(cls, apply_fn: Callable, params, txs: dict) -> "PhasedNet":
    return cls(params=params, opt_states={p: tx.init(params) for p, tx in txs.items()}, apply_fn=apply_fn,
               txs=tuple(txs.items()))

  def apply_gradients(self, phase: str, grads) -> "PhasedNet":
    """One update of `phase`'s optimiser; the other phases' states are untouched."""
    updates, opt_state = dict(self.txs)[phase].update(grads, self.opt_states[phase], self.params)
    return self.replace(params=optax.apply_updates(self.params, updates),
                        opt_states=dict(self.opt_states, **{phase: opt_state}))


State = toolkit.BufferedState  # nets: image/text PhasedNets; outputs: F, G; codes: B


def phases(config: Config) -> tuple[str, ...]:
  """The optimiser phases the config trains."""
  return ("intra", "inter") if config.intra else ("inter",)


# on pixels: MDCH builds on DCMH, whose image net is CNN-F (the paper's backbone is not known to jxhash)
SOURCE_BACKBONE = "cnn-f"


def _modules(config: Config, dims: Dims) -> dict:
  mlps = toolkit.feature_mlps(config, tanh=False, dims=dims, source=SOURCE_BACKBONE)
  if config.mask:
    # on pixels the mask acts on the backbone's features, right before the hash layer
    backbone = toolkit.image_backbone(config, dims, SOURCE_BACKBONE)
    mlps["image"] = MaskedMLPEncoder(bits=config.bits, num_labels=dims.num_labels,
                                     hidden=() if backbone else tuple(config.image_hidden),
                                     init_scheme=config.init, residual=config.mask_residual,
                                     detach_prediction=config.detach_prediction, backbone=backbone)
  return mlps


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  # every phase's optimiser steps once per batch per epoch, so the same epoch schedule fits each
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                   momentum=config.momentum or None, lr_scaling=config.lr_scaling, clip_norm=config.clip_norm)
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  image_tx = toolkit.backbone_tx(tx, config, dims, SOURCE_BACKBONE)
  nets = toolkit.network_states(keys, _modules(config, dims), dims,
                                txs={"image": {p: image_tx for p in phases(config)},
                                     "text": {p: tx for p in phases(config)}},
                                create=lambda module, params, txs: PhasedNet.create(module.apply, params, txs))
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind=config.buffer_init)
  return State(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


def label_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of multi-label predictions (the mask's classifier).

  -mean_ic (l_ic log σ(z_ic) + (1 - l_ic) log σ(-z_ic)), via log-sigmoid so that logits in
  the thousands stay finite.

  Args:
    logits: (bs, C) label logits z.
    labels: (bs, C) multi-hot labels l in {0, 1}.

  Returns:
    scalar mean over the batch and the labels.
  """
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.asarray(labels, logits.dtype)))


def intra_objective(outputs: jax.Array, *, buffer: jax.Array, similarity: jax.Array, alpha: float) -> jax.Array:
  """Intra-modal pairwise likelihood of one modality's batch, normalised by bs * n.

  alpha * -sum_ij (S_ij theta_ij - log(1 + e^theta_ij)) / (bs n), theta_ij = <h_i, H_j> / 2,
  with H this modality's own buffer (constant, like DCMH's other-modality buffer).

  Args:
    outputs: (bs, K) the batch outputs h of the network being trained.
    buffer: (n, K) the same modality's buffer H (no gradient flows into it).
    similarity: (bs, n) S between the batch and every training item.
    alpha: weight.
  """
  theta = 0.5 * outputs @ jax.lax.stop_gradient(buffer).T
  return alpha * losses.pairwise_likelihood(theta, similarity) / (outputs.shape[0] * buffer.shape[0])


def inter_objective(outputs: jax.Array, *, other: jax.Array, similarity: jax.Array, codes: jax.Array,
                    buffer: jax.Array, index: jax.Array, gamma: float, eta: float,
                    label_logits: jax.Array | None = None, labels: jax.Array | None = None,
                    beta: float = 1.0) -> jax.Array:
  """Inter-modal loss: DCMH's objective, plus beta * `label_loss` when label logits are given.

  Args:
    outputs, other, similarity, codes, buffer, index, gamma, eta: as in `losses.dcmh_objective`
      (outputs (bs, K) against the other modality's (n, K) buffer; result / (bs n)).
    label_logits: (bs, C) the mask classifier's logits (image phase with the mask), or None.
    labels: (bs, C) the batch labels (needed with label_logits).
    beta: label-loss weight.
  """
  loss = losses.dcmh_objective(outputs, other=other, similarity=similarity, codes=codes, buffer=buffer,
                               index=index, gamma=gamma, eta=eta)
  if label_logits is not None:
    loss = loss + beta * label_loss(label_logits, labels)
  return loss


def _forward(net: PhasedNet, params, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
  """(outputs, label logits or None): the masked image net also returns its classifier's logits."""
  out = net.apply_fn({"params": params}, x)
  return out if isinstance(out, tuple) else (out, None)


def _intra_step(config: Config):

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    del key
    index = batch["index"]
    similarity = losses.label_similarity(batch["labels"], data["labels"])
    nets, outputs, logs = dict(state.nets), dict(state.outputs), {}
    for m in MODALITIES:
      net = state.nets[m]

      def loss_fn(params, net=net, m=m):
        out, _ = _forward(net, params, batch[m])
        return intra_objective(out, buffer=state.outputs[m], similarity=similarity, alpha=config.alpha), out

      (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
      nets[m] = net.apply_gradients("intra", grads)
      outputs[m] = outputs[m].at[index].set(out)
      logs[f"{m}_loss"] = loss
    return state.replace(nets=nets, outputs=outputs), logs

  return step


def _inter_objective(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def loss(out, logits, state: State, batch: dict, similarity):
    index = batch["index"]
    return inter_objective(out, other=state.outputs[other], similarity=similarity, codes=state.codes[index],
                           buffer=state.outputs[modality], index=index, gamma=config.gamma, eta=config.eta,
                           label_logits=logits, labels=batch["labels"], beta=config.beta), {}

  return loss


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train
  steps = [Phase("intra", _intra_step(config), config.batch_size)] if config.intra else []
  steps += [Phase(f"inter_{m}", toolkit.network_step(m, _inter_objective(config, m), context=toolkit.label_context,
                                                      forward=_forward,
                                                      update=lambda net, grads: net.apply_gradients("inter", grads)),
                   config.batch_size) for m in MODALITIES]
  return (Stage("train", config.epochs, tuple(steps), end_of_epoch=toolkit.refresh_codes()),)


def encode(state: State, modality: str, x: jax.Array) -> jax.Array:
  toolkit.check_modality(modality)
  net = state.nets[modality]
  return _forward(net, net.params, x)[0]


# DCMH's published settings for the parts MDCH shares with it (the paper gives none of its own)
PAPER = {"init": "normal0.01", "lr_scaling": "none", "lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0}

SPEC = MethodSpec(
    name="mdch", Config=Config, init=init, stages=stages, encode=encode,
    fidelity=("reconstruction from the abstract: semantic mask (label classifier -> channel mask), "
              "intra-modal likelihood and the intra/inter alternation with separate optimiser states "
              "designed by jxhash; the inter-modal term, quantization, balance and schedule are DCMH's"),
    reference="Mask Cross-Modal Hashing Networks, IEEE Transactions on Multimedia 23:550-558, 2021",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)},
    presets={"paper": PAPER}, warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE))

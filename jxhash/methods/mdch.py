"""MDCH: Mask Cross-Modal Hashing Networks (IEEE TMM 23:550-558, 2021), reconstructed from the
abstract on top of DCMH.

Networks, no tanh on the K outputs:
- image (`jxhash.nets.mask.MaskedMLPEncoder`): h = the hidden feature (MLP D -> 4096 -> ReLU on
  features; a backbone's features on pixels, CNN-F by default); a classifier head gives label
  logits z = V h + c, a mask m = sigmoid(W sigmoid(z) + b) over h's channels, and the hash
  layer sees h * (1 + m) (`mask_residual`; else h * m).
- text: BoW T -> 8192 -> ReLU -> K.

Loss terms, S_ij = 1[l_i . l_j > 0]:
- intra phase (both nets on the same batch): DCMH's pairwise likelihood within a modality,
  theta_ij = <f_i, F_j> / 2 against the own buffer F (<g_i, G_j> / 2 against G), weight
  `alpha`, / (bs n).
- inter phases: DCMH's objective (`losses.dcmh_objective`): cross-modal likelihood,
  gamma ||B - H||^2 and eta ||H^T 1||^2, / (bs n); the image phase adds
  beta * mean BCE(z, l) over the batch and the C labels.

Schedule: per epoch an intra phase, an inter image phase and an inter text phase, then
B = sign(F + G). SGD with lr linear (or log-spaced) from `lr` to `lr_end`, each layer's step
divided by its fan-in, the gradient's norm clipped; each net has one optimiser state per phase
(`PhasedNet`), so momentum keeps separate intra and inter moments. `mask=False` and
`intra=False` drop the mask (and its label loss) and the intra phase; both off is DCMH.

State (`toolkit.BufferedState`): image and text PhasedNets, buffers F, G (n, K), codes B (n, K).

Provenance, fidelity and ablations: docs/methods/mdch.md
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
  """MDCH hyper-parameters (docs/methods/mdch.md lists each one's source)."""

  gamma: float = 1.0  # quantization weight
  eta: float = 0.1  # bit-balance weight
  alpha: float = 1.0  # intra-modal likelihood weight
  beta: float = 1.0  # label BCE weight
  mask: bool = True  # False drops the semantic mask and its classifier
  intra: bool = True  # False drops the intra-modal phase
  mask_residual: bool = True  # h ⊙ (1 + m), which can only amplify channels; False: h ⊙ m
  detach_prediction: bool = False  # True: no mask gradient into the classifier (only the label loss shapes p)
  lr: float = 20.0  # first epoch's SGD lr, both phases, per unit fan-in when lr_scaling="fan_in"
  lr_end: float = 1e-6  # last epoch's lr
  lr_schedule: str = "linear"  # lr -> lr_end over the epochs: "linear" or "logspace"
  weight_decay: float = 0.0  # SGD weight decay
  lr_scaling: str = "fan_in"  # "fan_in": each layer's step / its fan-in (toolkit.scale_by_fan_in); "none"
  clip_norm: float = 1.0  # clip the gradient's global norm at this; 0: no clipping
  momentum: float = 0.0  # SGD momentum, kept per phase; 0: plain SGD
  image_hidden: tuple = (4096,)  # image feature MLP hidden widths; the mask acts on the last
  text_hidden: tuple = (8192,)  # text net hidden widths
  init: str = "fan_in"  # "fan_in" (LeCun normal, zero biases) or "normal0.01" (weights and biases N(0, 0.01²))
  buffer_init: str = "normal"  # F, G start N(0, 1) ("normal") or 0 ("zeros")


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


# on pixels: CNN-F, DCMH's image net
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
  text_tx = toolkit.text_backbone_tx(tx, config, dims)
  nets = toolkit.network_states(keys, _modules(config, dims), dims,
                                txs={"image": {p: image_tx for p in phases(config)},
                                     "text": {p: text_tx for p in phases(config)}},
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


SPEC = MethodSpec(
    name="mdch", Config=Config, init=init, stages=stages, encode=encode,
    fidelity=("reconstruction from the abstract on top of DCMH: semantic mask, intra-modal loss and alternation "
              "designed by jxhash; docs/methods/mdch.md"),
    reference="Mask Cross-Modal Hashing Networks, IEEE Transactions on Multimedia 23:550-558, 2021",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,)},
    warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE),
    # paper: DCMH's published settings for the parts MDCH shares with it (the paper gives none of its own)
    presets={"paper": {"init": "normal0.01", "lr_scaling": "none", "lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0}})

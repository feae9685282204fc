"""MMACH: Multi-label Modality enhanced Attention based self-supervised deep Cross-modal Hashing
(Zou, Wu, Zhang, Bakker, Knowledge-Based Systems 239:107927, 2022).

Networks, each ending in K -> tanh:
- image: on features (N, D) an MLP D -> 4096 -> 512 -> K; on pixels a fine-tuned backbone
  (AlexNet by default, fc7 -> K; toolkit.BackboneConfig).
- text (N, T): MLP T -> 4096 -> 512 -> K.
- label (`jxhash.nets.label.LabelNet`): multi-hot labels (C), or the mean of the item's rows of
  a C x E `label_embedding`, -> 4096 -> 512, then modality enhanced attention
  (`jxhash.nets.attention.ModalityEnhancedAttention`: the label features are the query, the
  item's image and text input features, each projected to 512, a 2-token key/value sequence;
  residual + layer norm), then -> K. On pixels the attention reads the image net's buffer rows
  in place of image features. Its gradient never reaches the image and text nets.

Loss terms, batch against the whole buffer (whose batch rows hold the batch's detached
outputs). KL = `losses.positive_kl` between S_lab = cos(l_i, l_j) and S_h = ReLU(cos(h_i, h_j)),
/ (bs * n); Q = ||B - h||² / (bs K):
    label net: beta KL(lc, Lc) + KL(lc, F) + alpha KL(lc, G) + gamma Q
    image net: beta KL(f, F) + KL(f, Lc) + gamma Q + triplet_weight T(f, G)
    text net:  beta KL(g, G) + KL(g, Lc) + gamma Q + triplet_weight T(g, F)
T (`triplet`): "graded" (`triplet_loss`): anchor h_i, positive j and negative k of the other
modality's buffer with |L_i ∩ L_j| > |L_i ∩ L_k|,
    max(0, d(h_i, g_j) - d(h_i, g_k) + mu (|L_i ∩ L_j| - |L_i ∩ L_k|) / C), d = (K - h.g) / 2,
mu = `triplet_margin` K, averaged over the valid triplets, mined between the batch and
`triplet_samples` random buffer rows (memory bs * M²); "all" / "hard": cosine triplet losses
with margin `triplet_cos_margin` (`triplet_all_loss`, `triplet_hard_loss`).

Schedule: per epoch a label phase, an image phase and a text phase (shuffled batches, each
writing its outputs into its buffer Lc, F or G), then B = sign(F + G + Lc). SGD, lr linear
from `lr` to `lr_end` over the epochs.

State (`toolkit.BufferedState`): label, image and text TrainStates, buffers Lc, F, G (n, K),
codes B (n, K). Only the image and text nets encode: the label net needs an item's labels and
both its modalities.

Provenance, fidelity and ablations: docs/methods/mmach.md
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import losses
from jxhash.codes import binarize
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets.label import LabelNet
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage

NETS = ("label",) + MODALITIES


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """MMACH hyper-parameters (docs/methods/mmach.md lists each one's source)."""

  CHOICES = {"triplet": ("graded", "all", "hard"), "triplet_targets": ("random", "batch")}

  epochs: int = 100  # epochs of label+image+text phases; the lr schedule stretches with it
  alpha: float = 0.3  # KL(lc, G) weight
  beta: float = 1.9  # intra-modal KL weight
  gamma: float = 0.9  # quantization weight
  eps: float = 1e-5  # KL smoothing; see SPEC.smoke on its gradient kink
  lr: float = 10 ** -1.5  # first epoch's SGD lr
  lr_end: float = 1e-6  # last epoch's lr
  lr_schedule: str = "linear"  # lr -> lr_end over the epochs: "linear" or "logspace"
  weight_decay: float = 0.0  # SGD weight decay
  image_hidden: tuple = (4096, 512)  # image feature MLP hidden widths
  text_hidden: tuple = (4096, 512)  # text MLP hidden widths
  label_hidden: tuple = (4096, 512)  # label net hidden widths; the last is the attention width
  attention_heads: int = 4  # heads of the modality enhanced attention
  init: str = "fan_in"  # weight init of every net: "fan_in" (LeCun normal) or "normal0.01"
  # path to a C x E .npy of label embeddings ("" = multi-hot labels); its width E sizes the
  # label net, so restoring such a checkpoint needs the file too
  label_embedding: str = ""
  triplet_weight: float = 1.0  # weight of the triplet term in the image and text phases
  # "graded" (margin grows with the gap in shared labels), "all" or "hard" (all-triplets /
  # batch-hard cosine triplet losses)
  triplet: str = "graded"
  # whose rows are the positives/negatives: "random" (`triplet_samples` random rows of the other
  # modality's buffer) or "batch" (the other modality's buffer rows of the batch items)
  triplet_targets: str = "random"
  triplet_margin: float = 0.5  # "graded" only: mu = triplet_margin * K, so the margin in bits scales with K
  triplet_cos_margin: float = 0.3  # "all"/"hard" only: margin on the cosine distance
  triplet_samples: int = 64  # "random" only: buffer rows M mined per step (memory bs * M²)


State = toolkit.BufferedState  # nets and outputs: "label" / "image" / "text" (Lc, F, G); codes: B


def load_label_embedding(path: str, num_labels: int | None = None) -> np.ndarray:
  """Read and check a C x E label-embedding matrix.

  Args:
    path: a .npy file holding a 2-D finite numeric array, one row per label.
    num_labels: C of the dataset, checked against the row count when given.

  Returns:
    (C, E) float32.

  Raises:
    UserError: naming the file, when it is missing, unreadable, not 2-D numeric, has the
      wrong number of rows, or holds NaN/inf.
  """
  where = f"label_embedding file {path}"
  p = pathlib.Path(path)
  if not p.is_file():
    raise UserError(f"{where} does not exist")
  from jxhash.data import io
  io.declare(p)  # its header against the file size and the memory budget, before reading it
  try:
    emb = np.load(p, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserError(f"{where} is not a readable .npy array ({e})") from e
  if not isinstance(emb, np.ndarray) or emb.ndim != 2 or not np.issubdtype(emb.dtype, np.number):
    raise UserError(f"{where} must hold a 2-D numeric (labels x dims) array, got "
                    f"{getattr(emb, 'shape', type(emb).__name__)} {getattr(emb, 'dtype', '')}")
  if num_labels is not None and emb.shape[0] != num_labels:
    raise UserError(f"{where} has {emb.shape[0]} rows but the dataset has {num_labels} labels")
  if not np.all(np.isfinite(emb)):
    raise UserError(f"{where} holds NaN or inf")
  return emb.astype(np.float32)


def label_input(labels: jax.Array, embedding: jax.Array | None) -> jax.Array:
  """The label net's input: multi-hot labels, or the mean of the item's label embeddings.

  Args:
    labels: (B, C) multi-hot.
    embedding: None, or (C, E) label embeddings.

  Returns:
    (B, C) or (B, E) float32.
  """
  labels = jnp.asarray(labels, jnp.float32)
  if embedding is None:
    return labels
  count = jnp.maximum(jnp.sum(labels, axis=1, keepdims=True), 1.0)
  return (labels @ embedding) / count


# on pixels: AlexNet with a tanh hash layer, one SGD lr for every layer
SOURCE_BACKBONE = "alexnet"


def _modules(config: Config, dims: Dims) -> dict:
  return {
      **toolkit.feature_mlps(config, tanh=True, dims=dims, source=SOURCE_BACKBONE),
      "label": LabelNet(bits=config.bits, hidden=tuple(config.label_hidden),
                        num_heads=config.attention_heads, init_scheme=config.init),
  }


def _embedding(config: Config, num_labels: int | None = None):
  return load_label_embedding(config.label_embedding, num_labels) if config.label_embedding else None


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  modules = _modules(config, dims)
  emb = _embedding(config, dims.num_labels)
  label_width = dims.num_labels if emb is None else emb.shape[1]
  keys = toolkit.split_keys(key, NETS + ("buffers",))
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay)
  nets = toolkit.network_states(keys, {m: modules[m] for m in MODALITIES}, dims,
                                txs={"image": toolkit.backbone_tx(tx, config, dims, SOURCE_BACKBONE),
                                     "text": toolkit.text_backbone_tx(tx, config, dims)})
  # the label net reads the item's labels and both of its input features (on pixels, the image
  # net's latest outputs for the item stand in for its image features: `_label_phase`)
  image_key = jnp.zeros((1, config.bits)) if dims.is_pixels else toolkit.zero_batch(dims, "image")
  text_key = jnp.zeros((1, config.bits)) if dims.text_tokens else toolkit.zero_batch(dims, "text")
  label_params = modules["label"].init(keys["label"], jnp.zeros((1, label_width)), image_key, text_key)["params"]
  nets = {"label": toolkit.make_state(modules["label"], label_params, tx), **nets}
  # MESDCH: F, G, L = randn(n, K); B = sign(F + G + L)
  outputs = toolkit.random_buffers(keys["buffers"], NETS, num_train=num_train, bits=config.bits)
  return State(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


# --------------------------------------------------------------------------- losses


def kl_term(outputs: jax.Array, buffer: jax.Array, label_sim: jax.Array, *, eps: float = 1e-5) -> jax.Array:
  """MESDCH's positive-constrained KL of a batch against a whole buffer, / (bs * n).

  Args:
    outputs: (bs, K) batch outputs (differentiable).
    buffer: (n, K) outputs of every training item (constant).
    label_sim: (bs, n) S_lab = cos(l_i, l_j) in [0, 1].
    eps: smoothing of the logs.

  Returns:
    scalar sum_ij (S_lab - S_h) log((eps + S_lab) / (eps + S_h)) / (bs n),
    S_h = ReLU(cos(outputs_i, buffer_j)).
  """
  output_sim = jax.nn.relu(losses.cosine_similarity(outputs, buffer))
  return losses.positive_kl(label_sim, output_sim, eps=eps) / (outputs.shape[0] * buffer.shape[0])


def triplet_loss(anchors: jax.Array, candidates: jax.Array, anchor_labels: jax.Array,
                 candidate_labels: jax.Array, *, mu: float) -> jax.Array:
  """Multi-label cross-modal triplet loss (MMACH; formula reconstructed by jxhash).

  For every anchor i and every ordered pair (j, k) of candidates with more shared labels
  |L_i ∩ L_j| > |L_i ∩ L_k| (j the positive, k the negative):
      max(0, d_ij - d_ik + mu (|L_i ∩ L_j| - |L_i ∩ L_k|) / C),  d_ij = (K - a_i · c_j) / 2,
  the relaxed Hamming distance. The margin grows with the gap in shared labels, so items
  sharing more categories are pulled closer than items sharing fewer.

  Args:
    anchors: (m, K) relaxed codes of one modality.
    candidates: (M, K) relaxed codes of the other modality.
    anchor_labels: (m, C) multi-hot.
    candidate_labels: (M, C) multi-hot.
    mu: margin scale, in bits per fraction of the C labels.

  Returns:
    scalar mean over valid triplets (0 when there are none). Memory O(m M²).
  """
  num_bits = anchors.shape[1]
  num_labels = anchor_labels.shape[1]
  shared = jnp.asarray(anchor_labels, jnp.float32) @ jnp.asarray(candidate_labels, jnp.float32).T  # (m, M)
  dist = 0.5 * (num_bits - anchors @ candidates.T)  # (m, M)
  gap = shared[:, :, None] - shared[:, None, :]  # (m, j, k)
  valid = (gap > 0).astype(jnp.float32)
  hinge = jax.nn.relu(dist[:, :, None] - dist[:, None, :] + mu * gap / num_labels)
  return jnp.sum(hinge * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def cosine_distance(anchors: jax.Array, targets: jax.Array) -> jax.Array:
  """max(0, 1 - cos(a_i, t_j)), (m, M) in [0, 2] (SAALDH's `_cos_distance`)."""
  return jax.nn.relu(1.0 - losses.cosine_similarity(anchors, targets))


def _share_a_label(anchor_labels: jax.Array, target_labels: jax.Array) -> jax.Array:
  """(m, M) bool: the anchor and the target share at least one label."""
  return (jnp.asarray(anchor_labels, jnp.float32) @ jnp.asarray(target_labels, jnp.float32).T) > 0


def triplet_all_loss(anchors: jax.Array, targets: jax.Array, anchor_labels: jax.Array,
                     target_labels: jax.Array, *, margin: float) -> jax.Array:
  """All-triplets cross-modal loss with cosine distance (the lab's SAALDH `TripletAllLoss`).

  Every (anchor i, positive j, negative k) with j sharing a label with i and k sharing none:
      max(0, d_ij - d_ik + margin),  d = max(0, 1 - cos),
  summed and divided by the number of triplets whose loss is > 0 (as SAALDH; 0 if none).

  Args:
    anchors: (m, K) relaxed codes of one modality.
    targets: (M, K) relaxed codes of the other modality.
    anchor_labels: (m, C) multi-hot.
    target_labels: (M, C) multi-hot.
    margin: in cosine-distance units (SAALDH: 0.3).

  Returns:
    scalar. Memory O(m M²).
  """
  dist = cosine_distance(anchors, targets)
  pos = _share_a_label(anchor_labels, target_labels).astype(jnp.float32)
  mask = pos[:, :, None] * (1.0 - pos[:, None, :])  # (i, j positive, k negative)
  hinge = mask * jax.nn.relu(dist[:, :, None] - dist[:, None, :] + margin)
  active = jnp.sum((hinge > 1e-16).astype(jnp.float32))
  return jnp.sum(hinge) / jnp.maximum(active, 1.0)


def triplet_hard_loss(anchors: jax.Array, targets: jax.Array, anchor_labels: jax.Array,
                      target_labels: jax.Array, *, margin: float) -> jax.Array:
  """Batch-hard cross-modal loss with cosine distance (after the lab's SAALDH `TripletHardLoss`).

  For each anchor i, its farthest positive and nearest negative among the targets:
      max(0, max_{j: shares a label} d_ij - min_{k: shares none} d_ik + margin),  d = max(0, 1 - cos),
  averaged over the anchors that have at least one positive and one negative (jxhash: SAALDH
  sums over all anchors, giving an anchor without positives or negatives a spurious value;
  the mean matches the scale of MMACH's other terms, which are all per-pair means).
  Arguments as `triplet_all_loss`; returns a scalar, memory O(m M).
  """
  dist = cosine_distance(anchors, targets)
  pos = _share_a_label(anchor_labels, target_labels)
  # d is in [0, 2]: -1 and 3 stand for "no positive" / "no negative" (those anchors are dropped)
  hardest_pos = jnp.max(jnp.where(pos, dist, -1.0), axis=1)
  hardest_neg = jnp.min(jnp.where(pos, 3.0, dist), axis=1)
  valid = jnp.any(pos, axis=1) & jnp.any(~pos, axis=1)
  hinge = jnp.where(valid, jax.nn.relu(hardest_pos - hardest_neg + margin), 0.0)
  return jnp.sum(hinge) / jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)


def cross_modal_triplet(config: Config, anchors: jax.Array, targets: jax.Array, anchor_labels: jax.Array,
                        target_labels: jax.Array) -> jax.Array:
  """The triplet term `config.triplet` selects, with its margin."""
  if config.triplet == "graded":
    return triplet_loss(anchors, targets, anchor_labels, target_labels, mu=config.triplet_margin * config.bits)
  loss = triplet_all_loss if config.triplet == "all" else triplet_hard_loss
  return loss(anchors, targets, anchor_labels, target_labels, margin=config.triplet_cos_margin)


# --------------------------------------------------------------------------- steps


def _with_batch(buffer: jax.Array, index: jax.Array, out: jax.Array) -> jax.Array:
  # MESDCH writes the batch's detached outputs into the buffer before the loss
  return buffer.at[index].set(jax.lax.stop_gradient(out))


def _label_phase(config: Config):
  embedding = _embedding(config)

  def context(state: State, batch: dict, data: dict, key: jax.Array):
    del key
    if embedding is not None and embedding.shape[0] != batch["labels"].shape[1]:
      raise UserError(f"label_embedding file {config.label_embedding} has {embedding.shape[0]} rows "
                      f"but the dataset has {batch['labels'].shape[1]} labels")
    # pixels (a static shape): the attention reads the image net's buffer rows (K-d) instead of
    # (H, W, 3) arrays, which no Dense key/value projection should take
    image = state.outputs["image"][batch["index"]] if batch["image"].ndim == 4 else batch["image"]
    # token ids likewise: the text net's buffer rows stand in for text features
    tokens = jnp.issubdtype(batch["text"].dtype, jnp.integer)
    text = state.outputs["text"][batch["index"]] if tokens else batch["text"]
    return losses.cosine_similarity(batch["labels"], data["labels"]), image, text

  def inputs(batch: dict, ctx):
    x = label_input(batch["labels"], None if embedding is None else jnp.asarray(embedding))
    return x, ctx[1], ctx[2]

  def loss(out, extras, state: State, batch: dict, ctx):
    del extras
    label_sim = ctx[0]
    index = batch["index"]
    own = _with_batch(state.outputs["label"], index, out)
    kl = lambda buf: kl_term(out, buf, label_sim, eps=config.eps)
    quant = losses.quantization(state.codes[index], out) / out.size
    return (config.beta * kl(own) + kl(state.outputs["image"]) + config.alpha * kl(state.outputs["text"])
            + config.gamma * quant), {}

  return toolkit.network_step("label", loss, context=context, inputs=inputs)


def _modality_phase(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def context(state: State, batch: dict, data: dict, key: jax.Array):
    label_sim = losses.cosine_similarity(batch["labels"], data["labels"])
    if config.triplet_targets == "batch":  # the other modality's rows of the batch items
      return label_sim, state.outputs[other][batch["index"]], batch["labels"]
    num_train = data["labels"].shape[0]
    rows = jax.random.choice(key, num_train, (min(config.triplet_samples, num_train),), replace=False)
    return label_sim, state.outputs[other][rows], data["labels"][rows]

  def loss(out, extras, state: State, batch: dict, ctx):
    del extras
    label_sim, candidates, candidate_labels = ctx
    own = _with_batch(state.outputs[modality], batch["index"], out)
    kl = lambda buf: kl_term(out, buf, label_sim, eps=config.eps)
    quant = losses.quantization(state.codes[batch["index"]], out) / out.size
    trip = cross_modal_triplet(config, out, candidates, batch["labels"], candidate_labels)
    total = (config.beta * kl(own) + kl(state.outputs["label"]) + config.gamma * quant
             + config.triplet_weight * trip)
    return total, {"triplet": trip}

  return toolkit.network_step(modality, loss, context=context)


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train
  phases = (Phase("label", _label_phase(config), config.batch_size),
            Phase("image", _modality_phase(config, "image"), config.batch_size),
            Phase("text", _modality_phase(config, "text"), config.batch_size))
  # B = sign(F + G + Lc) (MESDCH)
  return (Stage("train", config.epochs, phases, end_of_epoch=toolkit.refresh_codes(MODALITIES + ("label",))),)


def report(state: State) -> dict:
  """How often the label codes agree in sign with the image / text codes and with B."""
  sign = {k: binarize(v) for k, v in state.outputs.items()}
  agree = lambda a, b: float(jnp.mean(a == b))
  return {"label_image_bit_agreement": agree(sign["label"], sign["image"]),
          "label_text_bit_agreement": agree(sign["label"], sign["text"]),
          "label_binary_bit_agreement": agree(sign["label"], state.codes)}


SPEC = MethodSpec(
    name="mmach", Config=Config, init=init, stages=stages, encode=toolkit.encode, report=report,
    fidelity=("skeleton from the same authors' MESDCH code; attention module and triplet loss designed by "
              "jxhash from the abstract; docs/methods/mmach.md"),
    reference=("X. Zou, S. Wu, N. Zhang, E. M. Bakker, Multi-label modality enhanced attention based "
               "self-supervised deep cross-modal hashing, Knowledge-Based Systems 239, 2022"),
    # eps 1e-2 in the smoke config only: with MESDCH's 1e-5 the KL's gradient in S_h jumps
    # from 0 (S_h = ReLU(cos) = 0) to about -S_lab / eps (cos just above 0), so float
    # rounding (a batch summed over 4 devices instead of 1) flips pairs across the kink and
    # two runs drift apart by ~0.1 within an epoch; 1e-2 keeps them equal to ~1e-6
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,),
           "label_hidden": (16,), "attention_heads": 2, "triplet_samples": 8, "eps": 1e-2},
    warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE))

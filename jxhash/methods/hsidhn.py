"""HSIDHN: Hierarchical Semantic Interaction-based Deep Hashing Network (Chen, Wu & Wang,
PeerJ Computer Science 7:e552, 2021), as two selectable reconstructions.

Networks (tanh codes, K bits), chosen by `network`:
- "multiscale_mlp" (default; `jxhash.nets.multiscale.HierarchicalEncoder`): MLP with hidden
  widths `image_hidden` / `text_hidden`; each hidden ReLU output is average-pooled along the
  feature axis with kernels `scales` (stride = kernel), repeated back to full width and fused
  by a learned 1x1 projection that starts as the identity. Optional hash heads on every hidden
  layer (`layer_heads`).
- "scahn" (`jxhash.nets.layerwise.LayerwiseEncoder`): text: multi-scale average pooling with
  kernel = stride = 5 x level (`text_levels`, clipped to the text width), each level a 1x1
  conv, ReLU and interpolation back, stacked with the input as channels, then four residual
  blocks (`text_channels`), each with a hash head (conv, ReLU, LRN, 1x1 conv to K, tanh).
  Image: four residual Dense stages (`image_stages`, `image_blocks`) each with a head (norm,
  Linear, tanh). Final code tanh(sum_l w_l * h_l), learned (4 x K) weights from N(0.25, 1/K^2).
- On pixels the image net is a fine-tuned backbone (ResNet-34 by default) with one head per
  stage, whatever `network` is.
- BBI (`bbi`): z = P^T (U^T a * V^T b) between adjacent layers, bottom-up and top-down, each
  direction with its own U, V, P (rank `rank`), cascaded (`cascade`); the interaction vectors
  feed the hash layer (multiscale_mlp) or each layer's head (scahn).

Dual similarity, inside every likelihood term below: pairs whose label sets are disjoint or
identical are hard and get the pairwise likelihood with S = 1[l_i . l_j > 0]; partly
overlapping pairs are soft and get (K/2) soft_weight (c_ij - S~_ij)^2, S~ = cos(l_i, l_j) or
2 |l_i & l_j| / |l_i | l_j| (`soft_target`), c = (h.o/K + 1)/2, h.o/K or cos(h, o)
(`code_similarity`). `soft_term=False` gives partial pairs S = 1 ("hard") or no loss ("drop").

Loss, chosen by `objective`, theta = <h, o> / `theta_divisor`:
- "dcmh" (default): the dual-similarity likelihood against the other modality's buffer,
  gamma ||B - F||^2 + eta ||F^T 1||^2 over the whole buffer, / (bs n); layer heads add
  `head_weight` times their mean pair loss.
- "scahn": every layer code and the fused code get the likelihood, averaged over the codes:
  inter-modal against the other buffer, intra-modal against the own buffer (batch rows
  detached; `intra_weight`) and between the batch and a second batch of the same modality
  drawn from the other training items (`pair_weight`), each a mean over its pairs; plus
  (`quant_weight`/K) mean_i ||b_i - f_i||^2 on the fused code; no balance term.

Schedule: per epoch an image phase against G, a text phase against F (each writing its fused
codes into its buffer), then B = sign(F + G). SGD, lr from `lr` to `lr_end` (linear or
geometric), the gradient's global norm clipped at `clip_norm`; `--preset lab` (the SCAHN/SAALDH
lab template with the lab's optimiser) and `--preset dcmh` switch network, loss and optimiser.

State (`toolkit.BufferedState`): image and text network states (with BatchNorm statistics
for "scahn"), buffers F, G (n, K) of fused codes, codes B (n, K).

Provenance, fidelity and ablations: docs/methods/hsidhn.md
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import losses
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets.layerwise import SCAHN_LEVELS, LayerwiseEncoder
from jxhash.nets.multiscale import HierarchicalEncoder
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """HSIDHN hyper-parameters (docs/methods/hsidhn.md lists each one's source and the CPU budget
  behind the widths and epochs)."""

  CHOICES = {
      "network": ("scahn", "multiscale_mlp"),
      "objective": ("scahn", "dcmh"),
      "theta_divisor": ("K/32", "2"),
      "soft_target": ("cosine", "jaccard2"),
      "code_similarity": ("affine", "inner", "cosine"),
      "soft_off": ("hard", "drop"),
      "norm": ("batch", "layer"),
  }

  epochs: int = 100  # epochs of image+text phases
  network: str = "multiscale_mlp"  # "multiscale_mlp" or "scahn" (layer-wise heads; module docstring)
  objective: str = "dcmh"  # "dcmh" or "scahn" (per-layer inter + intra + pair likelihood)
  bbi: bool = True  # bidirectional bilinear interaction between adjacent layers
  theta_divisor: str = "2"  # theta = <h, o> / divisor: "K/32" or "2"
  intra_weight: float = 1.0  # objective=scahn: intra-modal likelihood weight
  pair_weight: float = 0.01  # objective=scahn: two-batch pairwise likelihood weight
  quant_weight: float = 2.0  # objective=scahn: (quant_weight/K) mean ||b - f||^2
  gamma: float = 1.0  # objective=dcmh: quantization weight
  eta: float = 0.1  # objective=dcmh: bit-balance weight
  soft_weight: float = 1.0  # soft term weight x K/2: a soft pair's gradient comparable with a hard pair's
  soft_term: bool = True  # the regression on partial-overlap pairs
  soft_off: str = "hard"  # with soft_term=False, partial pairs get the likelihood with S=1 ("hard") or nothing ("drop")
  # soft pairs' target: label cosine or "jaccard2" = 2|l_i & l_j| / |l_i | l_j|
  soft_target: str = "cosine"
  # the soft term compares (h.o/K + 1)/2 ("affine"), h.o/K ("inner") or cos(h, o) ("cosine")
  code_similarity: str = "affine"
  lr: float = 0.3  # first epoch's SGD lr
  lr_end: float = 1e-6  # last epoch's lr
  lr_schedule: str = "linear"  # lr -> lr_end over the epochs: "linear" or "logspace" (geometric per epoch)
  weight_decay: float = 0.0  # SGD weight decay
  clip_norm: float = 1.0  # clip the gradient's global norm at this; 0: no clipping
  norm: str = "batch"  # network=scahn: BatchNorm or "layer" (LayerNorm, no running statistics)
  text_levels: tuple = SCAHN_LEVELS  # network=scahn: text pooling kernel = stride = 5 x level
  text_channels: tuple = (32, 64, 128, 256)  # network=scahn: widths of the 4 residual text blocks
  text_head_width: int = 128  # network=scahn: text hash heads' hidden width
  image_stages: tuple = (64, 128, 256, 512)  # network=scahn: residual Dense stage widths
  image_blocks: tuple = (1, 1, 1, 1)  # network=scahn: residual Dense blocks per stage
  image_hidden: tuple = (1024, 512)  # network=multiscale_mlp: hidden widths (two layers: one BBI pair)
  text_hidden: tuple = (1024, 512)  # network=multiscale_mlp: as image_hidden
  scales: tuple = (1, 2, 3, 6, 10)  # network=multiscale_mlp: pooling kernels, stride = kernel
  rank: int = 128  # BBI bilinear rank r
  interaction_features: int = 128  # BBI interaction vector width
  cascade: bool = True  # BBI: chain interactions along each direction
  layer_heads: bool = False  # network=multiscale_mlp: hash heads on every hidden layer
  head_weight: float = 0.5  # objective=dcmh: weight of the mean layer-code loss
  init: str = "fan_in"  # network=multiscale_mlp: Dense init; network=scahn has its own
  buffer_init: str = "normal"  # F, G start N(0, 1) ("normal") or 0 ("zeros")


State = toolkit.BufferedState  # nets: image/text network states; outputs: F, G (fused codes); codes: B


# --------------------------------------------------------------------------- networks


# on pixels: the lab template (SCAHN resnet.py) hashes each stage of an ImageNet ResNet-34
SOURCE_BACKBONE = "resnet34"


def _module(config: Config, modality: str, dims: Dims):
  if modality == "text" and dims.text_tokens:
    # on token ids CLIP's text tower gives one feature vector: one layer, one (image-style) head
    return LayerwiseEncoder(bits=config.bits, modality="image", widths=(1,), blocks=(1,), bbi=False,
                            norm=config.norm, backbone=toolkit.text_backbone(config, dims, stages=True))
  toolkit.text_backbone_name(config, dims)  # refuses a text tower on text features
  backbone = toolkit.image_backbone(config, dims, SOURCE_BACKBONE, stages=True) if modality == "image" else None
  if config.network == "scahn" or backbone is not None:
    # on pixels the image net is the lab template's whatever `network` is: one head per stage
    image = modality == "image"
    return LayerwiseEncoder(bits=config.bits, modality=modality,
                            widths=tuple(config.image_stages if image else config.text_channels),
                            blocks=tuple(config.image_blocks), text_levels=tuple(config.text_levels),
                            text_head_width=config.text_head_width, bbi=config.bbi, rank=config.rank,
                            interaction_features=config.interaction_features, cascade=config.cascade,
                            norm=config.norm, backbone=backbone)
  hidden = config.image_hidden if modality == "image" else config.text_hidden
  return HierarchicalEncoder(bits=config.bits, hidden=tuple(hidden), scales=tuple(config.scales),
                             rank=config.rank, interaction_features=config.interaction_features,
                             cascade=config.cascade, bbi=config.bbi, layer_heads=config.layer_heads,
                             init_scheme=config.init)


def _check(config: Config, dims: Dims) -> None:
  if any(int(k) < 1 for k in config.scales) or not config.scales:
    raise UserError(f"scales must be positive pooling kernels, got {config.scales!r}")
  if len(config.text_levels) < 4 or any(int(v) < 1 for v in config.text_levels):
    raise UserError(f"text_levels must be at least 4 positive levels (the text map needs 5+ columns), "
                    f"got {config.text_levels!r}")
  if len(config.text_channels) != 4:
    raise UserError(f"text_channels must give the 4 residual text blocks' widths, got {config.text_channels!r}")
  if not config.image_stages or len(config.image_blocks) != len(config.image_stages):
    raise UserError(f"image_blocks {config.image_blocks!r} must give one count per image stage "
                    f"{config.image_stages!r}")


def theta_scale(config: Config) -> float:
  """The factor of theta = scale * <h, o>: 1/2 (DCMH) or 32/K (SCAHN's 1 / (K/32))."""
  return 0.5 if config.theta_divisor == "2" else 32.0 / config.bits


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  _check(config, dims)
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                   clip_norm=config.clip_norm)
  modules = {m: _module(config, m, dims) for m in MODALITIES}
  txs = {"image": toolkit.backbone_tx(tx, config, dims, SOURCE_BACKBONE),
         "text": toolkit.text_backbone_tx(tx, config, dims)}
  nets = {}
  for m, module in modules.items():
    if isinstance(module, LayerwiseEncoder):
      nets[m] = toolkit.norm_state(module, module.init(keys[m], toolkit.zero_batch(dims, m)), txs[m])
    else:
      nets.update(toolkit.network_states({m: keys[m]}, {m: module}, dims, txs[m], heads=config.layer_heads))
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind=config.buffer_init)
  return State(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


def encode(state: State, modality: str, x: jax.Array) -> jax.Array:
  """The fused code (tanh of the weighted layer codes; BatchNorm on running statistics)."""
  net = state.nets[modality]
  if isinstance(net, toolkit.NormState):
    return toolkit.apply_norm(net, net.params, net.batch_stats, x, train=False)[0][0]
  return toolkit.encode(state, modality, x)


# --------------------------------------------------------------------------- losses


def dual_similarity(labels_a: jax.Array, labels_b: jax.Array, *,
                    soft_target: str = "cosine") -> tuple[jax.Array, jax.Array, jax.Array]:
  """Hard and soft label similarities and which pairs are "hard".

  A pair is hard when its label sets are disjoint or identical, soft when they partly
  overlap. Identity is decided on exact label counts (shared == |l_i| == |l_j|), not on
  cos == 1, which float rounding would miss. Two unlabelled items are disjoint (S = 0).

  Args:
    labels_a: (m, C) multi-hot labels.
    labels_b: (n, C) multi-hot labels.
    soft_target: "cosine", S~ = cos(l_i, l_j) in [0, 1], or "jaccard2", S~ = 2 |l_i & l_j| /
      |l_i | l_j| in [0, 2] (MLSPH's; 0 for two unlabelled items).

  Returns:
    hard: (m, n) S_ij = 1[l_i · l_j > 0].
    soft: (m, n) S~_ij.
    hard_mask: (m, n) 1.0 on hard pairs, 0.0 on soft pairs.
  """
  a = jnp.asarray(labels_a, jnp.float32)
  b = jnp.asarray(labels_b, jnp.float32)
  shared = a @ b.T
  count_a = jnp.sum(a, axis=1, keepdims=True)
  count_b = jnp.sum(b, axis=1, keepdims=True).T
  identical = (shared == count_a) & (shared == count_b)
  hard_mask = ((shared == 0) | identical).astype(jnp.float32)
  if soft_target == "cosine":
    soft = losses.cosine_similarity(a, b)
  elif soft_target == "jaccard2":
    union = count_a + count_b - shared
    soft = 2.0 * shared / jnp.maximum(union, 1.0)
  else:
    raise UserError(f"unknown soft_target {soft_target!r}; choose 'cosine' or 'jaccard2'")
  return losses.label_similarity(a, b), soft, hard_mask


def dual_similarity_loss(outputs: jax.Array, other: jax.Array, *, hard: jax.Array, soft: jax.Array,
                         hard_mask: jax.Array, soft_weight: float, soft_term: bool = True,
                         soft_off: str = "hard", code_similarity: str = "affine",
                         theta_scale: float = 0.5) -> tuple[jax.Array, dict]:
  """Pairwise likelihood on hard pairs + squared error of the code similarity on soft pairs.

      L = -sum_{hard} (S_ij theta_ij - softplus(theta_ij)) + soft_weight (K/2) sum_{soft} (c_ij - S~_ij)^2,
      theta_ij = theta_scale * f_i · g_j (the first sum is `losses.pairwise_likelihood` masked to the hard pairs).

  With soft_term=False the second sum is dropped and the soft pairs join the likelihood
  (soft_off="hard", S_ij = 1 for them: the plain DCMH term) or get no loss ("drop").

  Args:
    outputs: (m, K) codes f being trained.
    other: (n, K) the codes g they are compared with (a buffer or another batch).
    hard, soft, hard_mask: (m, n) from `dual_similarity`.
    soft_weight: weight of the soft term (times K/2).
    soft_term: include the soft term.
    soft_off: "hard" or "drop" (only read when soft_term=False).
    code_similarity: c_ij = (f_i · g_j / K + 1) / 2 ("affine": a pair with target S~ is aimed at
      Hamming distance (1 - S~) K), f_i · g_j / K ("inner": at (1 - S~) K / 2) or cos(f_i, g_j)
      ("cosine", MLSPH's).
    theta_scale: 1/2 (DCMH) or 32/K (SCAHN).

  Returns:
    (scalar sum, {"hard": .., "soft": ..} its two parts).
  """
  bits = outputs.shape[-1]
  theta = theta_scale * outputs @ other.T
  if soft_term or soft_off == "drop":
    mask = hard_mask
  elif soft_off == "hard":
    mask = jnp.ones_like(hard_mask)
  else:
    raise UserError(f"unknown soft_off {soft_off!r}; choose 'hard' or 'drop'")
  hard_term = losses.pairwise_likelihood(theta, hard, mask)
  if soft_term:
    if code_similarity == "affine":
      predicted = 0.5 * (outputs @ other.T / bits + 1.0)
    elif code_similarity == "inner":
      predicted = outputs @ other.T / bits
    elif code_similarity == "cosine":
      predicted = losses.cosine_similarity(outputs, other)
    else:
      raise UserError(f"unknown code_similarity {code_similarity!r}; choose 'affine', 'inner' or 'cosine'")
    soft_part = 0.5 * bits * soft_weight * losses.similarity_regression(predicted, soft, 1.0 - hard_mask)
  else:
    soft_part = jnp.zeros((), theta.dtype)
  return hard_term + soft_part, {"hard": hard_term, "soft": soft_part}


def objective(outputs: jax.Array, *, other: jax.Array, hard: jax.Array, soft: jax.Array, hard_mask: jax.Array,
              codes: jax.Array, buffer: jax.Array, index: jax.Array, gamma: float, eta: float,
              soft_weight: float, soft_term: bool = True, soft_off: str = "hard", code_similarity: str = "affine",
              theta_scale: float = 0.5, head_outputs: jax.Array | None = None,
              head_weight: float = 0.0) -> tuple[jax.Array, dict]:
  """The `objective="dcmh"` loss of one modality's batch, / (bs * n) as DCMH's.

  Args:
    outputs: (bs, K) the batch outputs of the network being trained.
    other: (n, K) the other modality's buffer (constant).
    hard, soft, hard_mask: (bs, n) the batch's dual similarities to every training item.
    codes: (bs, K) the batch rows of B.
    buffer: (n, K) this modality's buffer; the batch rows are replaced by `outputs` so that the
      balance term covers the whole buffer but only the batch is differentiable.
    index: (bs,) the batch rows' positions.
    gamma, eta: quantization and balance weights.
    soft_weight, soft_term, soft_off, code_similarity, theta_scale: see `dual_similarity_loss`.
    head_outputs: optional (L, bs, K) per-layer codes; each gets the dual-similarity loss
      against `other`, averaged over the L layers and weighted by `head_weight`.

  Returns:
    (scalar loss, {"hard", "soft", "quant", "balance"[, "heads"]} the unweighted parts, each / (bs * n)).
  """
  pair = dict(hard=hard, soft=soft, hard_mask=hard_mask, soft_weight=soft_weight, soft_term=soft_term,
              soft_off=soft_off, code_similarity=code_similarity, theta_scale=theta_scale)
  similarity, parts = dual_similarity_loss(outputs, other, **pair)
  full = jnp.asarray(buffer).at[index].set(outputs)
  parts = dict(parts, quant=losses.quantization(codes, outputs), balance=losses.bit_balance(full))
  loss = similarity + gamma * parts["quant"] + eta * parts["balance"]
  if head_outputs is not None:
    per_head = jax.vmap(lambda h: dual_similarity_loss(h, other, **pair)[0])(head_outputs)
    parts["heads"] = jnp.mean(per_head)
    loss = loss + head_weight * parts["heads"]
  scale = outputs.shape[0] * other.shape[0]
  return loss / scale, {k: v / scale for k, v in parts.items()}


def layerwise_objective(codes: jax.Array, *, other: jax.Array, own: jax.Array, similarities: tuple,
                        pair_similarity: tuple, binary: jax.Array, intra_weight: float, pair_weight: float,
                        quant_weight: float, **dual) -> tuple[jax.Array, dict]:
  """SCAHN's loss (`objective="scahn"`) of one modality's two batches a and b.

      L = inter + intra_weight intra + pair_weight pair + quant,
      inter = mean_{x in a, b} mean_c mean_pairs l(h_{x,c}, other)      (x's rows against all n items)
      intra = mean_{x in a, b} mean_c mean_pairs l(h_{x,c}, own)
      pair  = mean_c mean_pairs l(h_{a,c}, h_{b,c})                     (bs x bs pairs, both sides live)
      quant = quant_weight / K * mean_{x in a, b} mean_i ||b_{x,i} - h_{x,C,i}||^2

  with l the dual-similarity loss per pair (`dual_similarity_loss`: the likelihood with
  theta = theta_scale <h, o> on hard pairs, the soft regression on soft pairs) and c over the
  C codes of each item: the layer codes, then the fused code last (quantization reads only it).
  SCAHN averages with torch.mean over each (rows x n) matrix, then over the codes; its trainer
  halves the sum of the two batches' inter terms, as here.

  Args:
    codes: (2, C, bs, K) batch a's and batch b's codes.
    other: (n, K) the other modality's buffer of fused codes (constant).
    own: (n, K) this modality's buffer with both batches' fused codes written in (constant).
    similarities: (batch a's, batch b's) `dual_similarity` triples against all n training items.
    pair_similarity: the `dual_similarity` triple of batch a against batch b, (bs, bs) each.
    binary: (2, bs, K) the rows of B of the two batches.
    intra_weight, pair_weight, quant_weight: SCAHN's lambda, gamma and beta.
    **dual: `dual_similarity_loss` options (soft_weight, soft_term, soft_off, code_similarity, theta_scale).

  Returns:
    (scalar loss, {"inter", "intra", "pair", "quant"} the unweighted parts).
  """

  def mean_pair_loss(h, o, sims):
    hard, soft, hard_mask = sims
    total, _ = dual_similarity_loss(h, o, hard=hard, soft=soft, hard_mask=hard_mask, **dual)
    return total / (h.shape[0] * o.shape[0])

  def against(buffer):
    return jnp.mean(jnp.stack([mean_pair_loss(h, buffer, sims) for x, sims in enumerate(similarities)
                               for h in codes[x]]))

  parts = {"inter": against(other), "intra": against(own),
           "pair": jnp.mean(jnp.stack([mean_pair_loss(ha, hb, pair_similarity) for ha, hb in zip(codes[0], codes[1])])),
           "quant": jnp.mean(jnp.sum(jnp.square(binary - codes[:, -1]), axis=-1))}
  bits = codes.shape[-1]
  loss = (parts["inter"] + intra_weight * parts["intra"] + pair_weight * parts["pair"]
          + quant_weight / bits * parts["quant"])
  return loss, parts


# --------------------------------------------------------------------------- steps


def _dual_options(config: Config) -> dict:
  return dict(soft_weight=config.soft_weight, soft_term=config.soft_term, soft_off=config.soft_off,
              code_similarity=config.code_similarity, theta_scale=theta_scale(config))


def _objective(config: Config, modality: str):
  """The step objective of objective="dcmh" (the default's loss), on either network."""
  other = "text" if modality == "image" else "image"

  def loss(out, heads, state: State, batch: dict, similarities):
    hard, soft, hard_mask = similarities
    index = batch["index"]
    return objective(out, other=state.outputs[other], hard=hard, soft=soft, hard_mask=hard_mask,
                     codes=state.codes[index], buffer=state.outputs[modality], index=index, gamma=config.gamma,
                     eta=config.eta, head_outputs=heads, head_weight=config.head_weight, **_dual_options(config))

  return loss


def _forward(config: Config, net, params, stats, x):
  """Training-mode forward: (final (bs, K), layer codes (L, bs, K) or None, new batch stats)."""
  if isinstance(net, toolkit.NormState):
    (final, layers), stats = toolkit.apply_norm(net, params, stats, x, train=True)
    return final, layers, stats
  out = net.apply_fn({"params": params}, x, heads=config.layer_heads)
  final, layers = out if config.layer_heads else (out, None)
  return final, layers, stats


def second_batch(key: jax.Array, index: jax.Array, num_train: int) -> jax.Array:
  """(bs,) training rows drawn uniformly without replacement from those outside `index`.

  SCAHN's pair sampler takes two disjoint slices of one permutation; here the second batch is
  the bs rows with the largest uniform scores after the batch's own rows are scored -1 (when
  fewer than bs rows lie outside the batch, the rest come from the batch).
  """
  scores = jax.random.uniform(key, (num_train,)).at[index].set(-1.0)
  return jax.lax.top_k(scores, index.shape[0])[1]


def _layerwise_step(config: Config, modality: str):
  """One update of `modality`'s network for every variant but network=multiscale_mlp with objective=dcmh."""
  other = "text" if modality == "image" else "image"
  target = dict(soft_target=config.soft_target)
  dcmh_loss = _objective(config, modality)

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    net = state.nets[modality]
    stats = getattr(net, "batch_stats", None)
    index = batch["index"]
    labels = data["labels"]
    sims = dual_similarity(batch["labels"], labels, **target)
    if config.objective == "scahn":
      index_b = second_batch(key, index, labels.shape[0])
      sims_b = dual_similarity(labels[index_b], labels, **target)
      pair_sims = dual_similarity(batch["labels"], labels[index_b], **target)

    def loss_fn(params):
      out, layers, new_stats = _forward(config, net, params, stats, batch[modality])
      if config.objective == "dcmh":
        loss, parts = dcmh_loss(out, layers, state, batch, sims)
        return loss, (out, None, new_stats, parts)
      out_b, layers_b, new_stats = _forward(config, net, params, new_stats, data[modality][index_b])
      codes = [out[None] if layers is None else jnp.concatenate([layers, out[None]]),
               out_b[None] if layers_b is None else jnp.concatenate([layers_b, out_b[None]])]
      own = state.outputs[modality].at[index].set(jax.lax.stop_gradient(out))
      own = own.at[index_b].set(jax.lax.stop_gradient(out_b))
      loss, parts = layerwise_objective(jnp.stack(codes), other=state.outputs[other], own=own,
                                        similarities=(sims, sims_b), pair_similarity=pair_sims,
                                        binary=jnp.stack([state.codes[index], state.codes[index_b]]),
                                        intra_weight=config.intra_weight, pair_weight=config.pair_weight,
                                        quant_weight=config.quant_weight, **_dual_options(config))
      return loss, (out, out_b, new_stats, parts)

    net, loss, (out, out_b, new_stats, parts) = toolkit.apply_gradients(net, loss_fn)
    if stats is not None:
      net = net.replace(batch_stats=new_stats)
    buffer = state.outputs[modality].at[index].set(out)
    if out_b is not None:
      buffer = buffer.at[index_b].set(out_b)
    state = state.replace(nets=dict(state.nets, **{modality: net}),
                          outputs=dict(state.outputs, **{modality: buffer}))
    return state, {"loss": loss, **parts}

  return step


def _similarities(config: Config):
  def context(state: State, batch: dict, data: dict, key: jax.Array):
    del state, key
    return dual_similarity(batch["labels"], data["labels"], soft_target=config.soft_target)

  return context


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train
  if config.network == "multiscale_mlp" and config.objective == "dcmh":  # the default: DCMH's step
    def forward(net, params, x):  # (final outputs, per-layer head outputs or None)
      return _forward(config, net, params, None, x)[:2]

    steps = {m: toolkit.network_step(m, _objective(config, m), context=_similarities(config), forward=forward)
             for m in MODALITIES}
  else:
    steps = {m: _layerwise_step(config, m) for m in MODALITIES}
  phases = tuple(Phase(m, steps[m], config.batch_size) for m in MODALITIES)
  return (Stage("train", config.epochs, phases, end_of_epoch=toolkit.refresh_codes()),)


def report(state: State) -> dict:
  """Learned fusion weights per modality: the per-layer means of the (layers x K) bit weights
  (network=scahn), or each hidden layer's multi-scale weights, one per scale (multiscale_mlp)."""
  out = {}
  for m in MODALITIES:
    params = state.nets[m].params
    if "fusion" in params:
      out[f"{m}_layer_weights"] = [round(float(w), 4) for w in np.asarray(params["fusion"]["weight"]).mean(axis=1)]
      continue
    layers = sorted((k for k in params if k.startswith("multiscale")), key=lambda k: int(k[len("multiscale"):]))
    out[f"{m}_scale_weights"] = [[round(float(w), 4) for w in np.asarray(params[k]["fuse"]["kernel"])[:, 0]]
                                 for k in layers]
  return out


SPEC = MethodSpec(
    name="hsidhn", Config=Config, init=init, stages=stages, encode=encode,
    fidelity=("reconstruction from the abstract, designed by jxhash on DCMH's alternation; `--preset lab`: the same "
              "authors' SCAHN/SAALDH template (inferred); docs/methods/hsidhn.md"),
    reference="S. Chen, S. Wu and L. Wang, Hierarchical semantic interaction-based deep hashing network "
              "for cross-modal retrieval, PeerJ Computer Science 7:e552, 2021",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32, 16), "text_hidden": (32, 16), "rank": 8,
           "interaction_features": 8, "text_channels": (8, 8, 8, 8), "text_head_width": 8,
           "image_stages": (8, 8, 8, 8)},
    report=report, warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE),
    # dcmh: DCMH's optimiser; lab: the SCAHN/SAALDH lab template with the lab's own optimiser
    presets={"dcmh": {"lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0},
             "lab": {"network": "scahn", "objective": "scahn", "theta_divisor": "K/32", "lr": 10 ** -1.1,
                     "lr_end": 10 ** -5.6, "lr_schedule": "logspace", "clip_norm": 0.0}},
    needs_image_matrix=lambda config, dims: ("objective='scahn' draws a second batch of each modality from the "
                                             "whole training set") if config.objective == "scahn" else "")

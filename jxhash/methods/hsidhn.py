"""HSIDHN: Hierarchical Semantic Interaction-based Deep Hashing Network (Chen, Wu & Wang,
PeerJ Computer Science 7:e552, 2021). Fidelity: reconstruction from the abstract.

No code of the authors is known, and only the paper's abstract was read. The abstract names
three components; jxhash realises each of them with its own design (every free choice is a
`Config` field):

- Multi-scale and fusion on every layer (component designed by jxhash): each hidden layer's
  ReLU output is average-pooled along the feature axis with kernels 1, 2, 3, 6, 10 (the
  kernels of MESDCH's text net, public code of the same SWU group), repeated back to full
  width, and fused by a learned 1x1 projection (`jxhash.nets.multiscale.MultiScaleFusion`).
  The fusion starts as the identity (weight 1 on the kernel-1 view).
- Bidirectional Bi-linear Interaction, BBI (component designed by jxhash): between
  consecutive hidden layers a low-rank bilinear interaction z = P^T (U^T a * V^T b) is
  computed bottom-up (a = lower, b = upper) and top-down (the reverse), each with its own
  U, V, P and cascaded along its direction; the last hidden layer and all interaction
  vectors feed the tanh hash layer (`jxhash.nets.multiscale.HierarchicalEncoder`). With the
  default two hidden layers there is one pair, so the cascade is idle and the two
  directions together are one bilinear form of rank 2r; the direction only matters with
  three or more layers. Optional per-layer hash heads give hierarchical codes
  (`layer_heads`), trained with the same pair losses against the other modality's final
  codes (the buffers hold final codes only).
- Dual similarity (component designed by jxhash; the hard/soft split follows IDHN, Zhang et
  al., arXiv 1803.02987, an inference, not read from HSIDHN): hard S_ij = 1[l_i · l_j > 0],
  soft S~_ij = cos(l_i, l_j). Hard pairs (labels disjoint or identical) get DCMH's pairwise
  likelihood with theta_ij = <f_i, g_j> / 2; soft pairs (partial overlap) get
  (K/2) soft_weight ((f_i·g_j / K + 1) / 2 - S~_ij)^2 (`code_similarity="inner"` regresses
  f_i·g_j / K instead).
- Quantization gamma ||B - F||^2, balance eta ||F^T 1||^2 and the alternation are DCMH's
  (Jiang & Li, CVPR 2017): per epoch an image phase against the text buffer G, a text phase
  against the image buffer F, then B = sign(F + G); loss / (bs * n).

Networks: tanh codes (not DCMH's linear outputs), fan-in init (DCMH's N(0, 0.01²) leaves
this deeper net's outputs near 0), hidden widths (1024, 512) for both modalities.

Ablation switch: `soft_term=False` drops the regression; the partial-overlap pairs then get
the hard likelihood with S = 1 (`soft_off="hard"`, which is the DCMH objective on this
network) or no loss at all (`soft_off="drop"`). docs/hsidhn_soft_term.md measures them: on
multi-label synthetic data the default ("affine") soft term beats dropping the partial pairs
but loses to the plain likelihood, because it aims pairs with label cosine below 1/2 at
codes farther apart than K/2; `code_similarity="inner"` beats both by about 0.1 mAP.

Defaults (designed by jxhash, chosen on validation splits: docs/defaults.md): lr 0.3 (linear
decay to 1e-6, DCMH's schedule), the gradient's global norm clipped at 1, eta = 0.1. DCMH's
values (lr 10^-1.5, no clipping, eta = 1; `--preset dcmh`) trained near chance on narrow
(10-d) synthetic features, and on Wikipedia the whole-buffer balance term at eta = 1 drove
the codes to 0 (pair loss ln 2, mAP .16 / .15). Measured on Wikipedia with a 400-item val
split carved from the training items (32 bits, seed 0, mean of the two directions' val
mAP): DCMH's values with eta = 0.1: .220; lr 0.1 + clipping: .365; lr 0.3 + clipping: .489.
On synthetic data (60 epochs) lr 0.3 beat chance by .16 / .15 (10-d features) and .38 / .28
(1024-d ×1000 image, 512-d bag-of-words text), lr 1 stayed at chance. DCMH's fan-in lr
scaling (`lr_scaling`) did not help this net (tanh outputs, pooled multi-scale layers): at
chance for lr 20 and 60.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import losses
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets.multiscale import HierarchicalEncoder
from jxhash.spec import MODALITIES, BaseConfig, Dims, MethodSpec, Phase, Stage

@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
  """HSIDHN hyper-parameters. The paper's values are unknown (abstract only): every default
  below is DCMH's where DCMH has the knob, otherwise a reconstruction choice with its reason.

  Budget: 100 epochs (DCMH: 500) and a first hidden layer of 1024 (CNN-F's fc7 width, 4096,
  would be the DCMH-like choice), so that the default CLI run on the synthetic data takes a
  couple of minutes on a 2-core CPU: there an epoch of (4096, 512) cost 3.5 s against 0.8 s
  for (1024, 512), mostly the multi-scale pooling of the wide layer. Use
  `--set image_hidden=4096,512 --epochs=500` on a GPU for a DCMH-sized run.
  """

  CHOICES = {"soft_off": ("hard", "drop"), "code_similarity": ("affine", "inner")}

  epochs: int = 100  # see the class docstring
  gamma: float = 1.0  # quantization weight (DCMH)
  eta: float = 0.1  # bit-balance weight; chosen on val (module docstring, "Defaults"); DCMH 1
  soft_weight: float = 1.0  # soft term weight x K/2; K/2 makes a soft pair's gradient comparable with a hard pair's
  soft_term: bool = True  # the dual-similarity regression on partial-overlap pairs (ablation switch)
  soft_off: str = "hard"  # with soft_term=False, partial pairs get the likelihood with S=1 ("hard") or nothing ("drop")
  code_similarity: str = "affine"  # soft term compares (f.g/K + 1)/2 ("affine") or f.g/K ("inner")
  lr: float = 0.3  # first epoch's lr; chosen on val (module docstring); DCMH 10^-1.5
  lr_end: float = 1e-6  # last epoch's lr (DCMH TF code)
  lr_schedule: str = "linear"  # "linear" (DCMH TF) or "logspace" (DCMH MATLAB)
  weight_decay: float = 0.0  # DCMH TF code
  clip_norm: float = 1.0  # clip the gradient's global norm (bounds every step); DCMH 0 (none)
  image_hidden: tuple = (1024, 512)  # two layers, one BBI pair; widths: see the class docstring
  text_hidden: tuple = (1024, 512)  # as image_hidden (MESDCH's text net: 4096 -> 512)
  scales: tuple = (1, 2, 3, 6, 10)  # MESDCH text-net pooling kernels
  rank: int = 128  # bilinear rank r: a quarter of the 512-wide top layer (not tuned)
  interaction_features: int = 128  # width of each interaction vector, the same as r
  cascade: bool = True  # chain interactions along each direction (only matters with >= 3 hidden layers)
  layer_heads: bool = False  # hierarchical hash heads on every hidden layer
  head_weight: float = 0.5  # weight of the mean head loss: below the main code's weight 1 (not tuned)
  init: str = "fan_in"  # DCMH's N(0, 0.01²) gives this net outputs ~0.007 (item spread 0.003) at init
  buffer_init: str = "normal"  # F, G start N(0, 1) (DCMH TF) or "zeros"


State = toolkit.BufferedState  # nets: image/text TrainStates; outputs: F, G; codes: B


def _module(config: Config, modality: str) -> HierarchicalEncoder:
  hidden = config.image_hidden if modality == "image" else config.text_hidden
  return HierarchicalEncoder(bits=config.bits, hidden=tuple(hidden), scales=tuple(config.scales),
                             rank=config.rank, interaction_features=config.interaction_features,
                             cascade=config.cascade, layer_heads=config.layer_heads, init_scheme=config.init)


def _check(config: Config, dims: Dims) -> None:
  toolkit.require_features("HSIDHN", dims, "no pixel network is built for it")
  if any(int(k) < 1 for k in config.scales) or not config.scales:
    raise UserError(f"scales must be positive pooling kernels, got {config.scales!r}")


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  _check(config, dims)
  keys = toolkit.split_keys(key, MODALITIES + ("buffers",))
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                   clip_norm=config.clip_norm)
  nets = toolkit.network_states(keys, {m: _module(config, m) for m in MODALITIES}, dims, tx,
                                heads=config.layer_heads)
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind=config.buffer_init)
  return State(nets=nets, outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()))


def dual_similarity(labels_a: jax.Array, labels_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Hard and soft label similarities and which pairs are "hard".

  A pair is hard when its label sets are disjoint or identical, soft when they partly
  overlap. Identity is decided on exact label counts (shared == |l_i| == |l_j|), not on
  cos == 1, which float rounding would miss. Two unlabelled items are disjoint (S = 0).

  Args:
    labels_a: (m, C) multi-hot labels.
    labels_b: (n, C) multi-hot labels.

  Returns:
    hard: (m, n) S_ij = 1[l_i · l_j > 0].
    soft: (m, n) S~_ij = cos(l_i, l_j), in [0, 1].
    hard_mask: (m, n) 1.0 on hard pairs, 0.0 on soft pairs.
  """
  a = jnp.asarray(labels_a, jnp.float32)
  b = jnp.asarray(labels_b, jnp.float32)
  shared = a @ b.T
  count_a = jnp.sum(a, axis=1, keepdims=True)
  count_b = jnp.sum(b, axis=1, keepdims=True).T
  identical = (shared == count_a) & (shared == count_b)
  hard_mask = ((shared == 0) | identical).astype(jnp.float32)
  return losses.label_similarity(a, b), losses.cosine_similarity(a, b), hard_mask


def dual_similarity_loss(outputs: jax.Array, other: jax.Array, *, hard: jax.Array, soft: jax.Array,
                         hard_mask: jax.Array, soft_weight: float, soft_term: bool = True,
                         soft_off: str = "hard", code_similarity: str = "affine") -> tuple[jax.Array, dict]:
  """Pairwise likelihood on hard pairs + squared error of the output similarity on soft pairs.

      L = -sum_{hard} (S_ij theta_ij - softplus(theta_ij))
          + soft_weight (K/2) sum_{soft} ((f_i · g_j / K + 1) / 2 - S~_ij)^2,
      theta_ij = f_i · g_j / 2 (the first sum is `losses.pairwise_likelihood` masked to the hard pairs).

  With soft_term=False the second sum is dropped and the soft pairs join the likelihood
  (soft_off="hard", S_ij = 1 for them: the plain DCMH term) or get no loss ("drop").

  Args:
    outputs: (bs, K) this modality's batch outputs f.
    other: (n, K) the other modality's buffer g.
    hard, soft, hard_mask: (bs, n) from `dual_similarity`.
    soft_weight: weight of the soft term (times K/2).
    soft_term: include the soft term.
    soft_off: "hard" or "drop" (only read when soft_term=False).
    code_similarity: "affine", (f_i · g_j / K + 1) / 2 as above (a soft pair with cos S~ is
      aimed at Hamming distance (1 - S~) K, farther than K/2 when S~ < 1/2), or "inner",
      f_i · g_j / K (aimed at (1 - S~) K / 2: every partial pair nearer than K/2).

  Returns:
    (scalar sum, {"hard": .., "soft": ..} its two parts).
  """
  bits = outputs.shape[-1]
  theta = 0.5 * outputs @ other.T
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
    else:
      raise UserError(f"unknown code_similarity {code_similarity!r}; choose 'affine' or 'inner'")
    soft_part = 0.5 * bits * soft_weight * losses.similarity_regression(predicted, soft, 1.0 - hard_mask)
  else:
    soft_part = jnp.zeros((), theta.dtype)
  return hard_term + soft_part, {"hard": hard_term, "soft": soft_part}


def objective(outputs: jax.Array, *, other: jax.Array, hard: jax.Array, soft: jax.Array, hard_mask: jax.Array,
              codes: jax.Array, buffer: jax.Array, index: jax.Array, gamma: float, eta: float,
              soft_weight: float, soft_term: bool = True, soft_off: str = "hard", code_similarity: str = "affine",
              head_outputs: jax.Array | None = None, head_weight: float = 0.0) -> tuple[jax.Array, dict]:
  """HSIDHN loss of one modality's batch, normalised by bs * n as DCMH's.

  Args:
    outputs: (bs, K) the batch outputs of the network being trained.
    other: (n, K) the other modality's buffer (constant).
    hard, soft, hard_mask: (bs, n) the batch's dual similarities to every training item.
    codes: (bs, K) the batch rows of B.
    buffer: (n, K) this modality's buffer; the batch rows are replaced by `outputs` so that the
      balance term covers the whole buffer but only the batch is differentiable.
    index: (bs,) the batch rows' positions.
    gamma, eta: quantization and balance weights.
    soft_weight, soft_term, soft_off, code_similarity: see `dual_similarity_loss`.
    head_outputs: optional (L, bs, K) per-layer head outputs; each gets the dual-similarity loss
      against `other`, averaged over the L heads and weighted by `head_weight`.

  Returns:
    (scalar loss, {"hard", "soft", "quant", "balance"[, "heads"]} the unweighted parts, each / (bs * n)).
  """
  pair = dict(hard=hard, soft=soft, hard_mask=hard_mask, soft_weight=soft_weight, soft_term=soft_term,
              soft_off=soft_off, code_similarity=code_similarity)
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


def _objective(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def loss(out, heads, state: State, batch: dict, similarities):
    hard, soft, hard_mask = similarities
    index = batch["index"]
    return objective(out, other=state.outputs[other], hard=hard, soft=soft, hard_mask=hard_mask,
                     codes=state.codes[index], buffer=state.outputs[modality], index=index, gamma=config.gamma,
                     eta=config.eta, soft_weight=config.soft_weight, soft_term=config.soft_term,
                     soft_off=config.soft_off, code_similarity=config.code_similarity, head_outputs=heads,
                     head_weight=config.head_weight)

  return loss


def _similarities(state: State, batch: dict, data: dict, key: jax.Array):
  del state, key
  return dual_similarity(batch["labels"], data["labels"])


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train
  def forward(net, params, x):  # (final outputs, per-layer head outputs or None)
    out = net.apply_fn({"params": params}, x, heads=config.layer_heads)
    return out if config.layer_heads else (out, None)

  phases = tuple(Phase(m, toolkit.network_step(m, _objective(config, m), context=_similarities, forward=forward),
                       config.batch_size) for m in MODALITIES)
  return (Stage("train", config.epochs, phases, end_of_epoch=toolkit.refresh_codes()),)


def report(state: State) -> dict:
  """The learned multi-scale fusion weights, per modality and hidden layer (one per scale)."""
  out = {}
  for m in MODALITIES:
    params = state.nets[m].params
    layers = sorted((k for k in params if k.startswith("multiscale")), key=lambda k: int(k[len("multiscale"):]))
    out[f"{m}_scale_weights"] = [[round(float(w), 4) for w in np.asarray(params[k]["fuse"]["kernel"])[:, 0]]
                                 for k in layers]
  return out


SPEC = MethodSpec(
    name="hsidhn", Config=Config, init=init, stages=stages, encode=toolkit.encode,
    fidelity=("reconstruction from the abstract (no code, paper body not read): multi-scale fusion, "
              "bidirectional bilinear interaction and the hard/soft dual-similarity loss designed by jxhash "
              "(soft/hard split after IDHN); quantization, balance and alternation from DCMH"),
    reference="S. Chen, S. Wu and L. Wang, Hierarchical semantic interaction-based deep hashing network "
              "for cross-modal retrieval, PeerJ Computer Science 7:e552, 2021",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32, 16), "text_hidden": (32, 16), "rank": 8,
           "interaction_features": 8},
    report=report,
    presets={"dcmh": {"lr": 10 ** -1.5, "clip_norm": 0.0, "eta": 1.0}})

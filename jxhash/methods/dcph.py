"""DCPH: Deep Cross-Modal Proxy Hashing (Tu et al., IEEE TKDE 2023; arXiv 2011.03451).

Fidelity, component by component:

- Hash-stage loss (margin-dynamic-softmax), cross-modal term, quantization, B update,
  buffers, constants and image lrs: read in the authors' PyTorch script as republished in
  the public repo 1034829217/paddle (`DCPH/utils/DFPH_NN.py`, author paths). The round
  structure (6 x 2) and the text lr schedule are those of that repo's Paddle port
  (`DCPH/CCMH_BS.py`) (docs/methods/dcph.md).
- Proxy network architecture (one-hot -> 4096 -> ReLU -> BatchNorm -> K -> tanh): the same
  repo's `Label_net` (`DCPH/utils/label_hash_model.py`); the script loads trained
  proxies from files, the code that trained them is not public.
- Proxy-training objective: NOT public. Reconstruction; component designed by jxhash:
  discriminative term + beta * quantization + bit balance (below).
- Networks on precomputed features: the port fine-tunes AlexNet; here the image net is an
  MLP feature -> 4096 -> K -> tanh (AlexNet fc7 width) and the text net is DCMH's
  BoW -> 8192 -> ReLU -> K, with tanh as in the port.

Stage 1, proxies. A label network maps each of the C one-hot categories e_k to
P~_k = tanh(W2 BN(ReLU(W1 e_k))) in (-1, 1)^K; every update sees all C one-hots at once (a
full batch, so the BatchNorm statistics are those of the whole category set). Objective
(reconstruction):
    J = D(P~) + beta * ||sign(P~) - P~||^2 / (C K) + balance * ||P~^T 1||^2 / (C^2 K),
with D either "pairwise", mean over k != l of (P~_k^T P~_l / K)^2 (proxies pushed towards
orthogonality, Hamming distance K/2), or "softmax", the cross-entropy of a softmax over the
proxies' scaled inner products with each proxy as its own class. After the stage the
proxies P = sign(P~) (BatchNorm in inference mode) are fixed and kept in the state, so
checkpoints hold them.

Stage 2, hashing. Per training item i with multi-hot y_i, n_i = |y_i|, tanh code h_i and
z_ik = h_i^T P_k (s = 0.3, m = 0.3 K):
    pos_i = exp(s (sum_k y_ik z_ik / n_i - m)),
    den_i = pos_i + sum_{k: y_ik = 0} exp(s z_ik),
    L_cls = -sum_i log(pos_i / den_i)                       (computed with logsumexp).
Cross-modal term, exactly as the port computes it: the numerator is this modality's pos_i
(differentiable); the denominator den'_i is built entirely from the other modality's binary
codes b'_i = sign(buffer row i of the other modality), z'_ik = b'_i^T P_k:
    den'_i = exp(s (sum_k y_ik z'_ik / n_i - m)) + sum_{k: y_ik = 0} exp(s z'_ik),
    L_cross = -sum_i log(pos_i / den'_i);
den' is a constant, so the term rewards this modality's mean positive logit relative to how
well the other modality's current binary code already separates item i. Total loss of a
batch: (L_cls + 0.1 L_cross) / bs + 0.1 ||B_i - h_i||^2 / bs. The port's denominators also
contain exp(0) = 1 per positive class (exp(s z (1 - y)) summed over all k); that is the flag
`positives_in_denominator`, default off. Items with no label contribute nothing (the port
would divide by n_i = 0).

Alternation: each round (epoch) runs an image epoch, a text epoch (batch rows of each
network's outputs written into its buffer), then B = sign(B_img + B_txt). The port runs
6 outer x 2 inner rounds (evaluating after each outer one) = 12 epochs; its B also adds a
third, never-updated random buffer B_z (from an unused feature branch), dropped here.
SGD with weight decay 1e-5, batch 40; image lr per code length (COCO table of the port),
constant; text lr 10^-1.5 halved every 200 text optimizer steps (the Paddle port's
StepDecay(200, 0.5); if that scheduler was stepped once per epoch, as the PyTorch script
steps its schedulers, it never fires within 12 rounds: `text_lr_decay_steps=0`). The PyTorch
script instead uses per-bit text lrs with cosine restarts and an extra feature branch; not
followed here.

No similarity between datapoints is built anywhere: labels meet codes only through the
(bs, C) logits h P^T.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from jxhash import losses
from jxhash.codes import binarize
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets.proxy import ProxyNet
from jxhash.spec import MODALITIES, BaseConfig, Dims, MethodSpec, Phase, Stage


@dataclasses.dataclass(frozen=True)
class Config(BaseConfig):
  """DCPH hyper-parameters; hash-stage defaults from the public port (docs/methods/dcph.md).

  The image and text learning rates were tuned by the authors for AlexNet fine-tuning; they
  are kept as defaults (on 1000-item synthetic data and Wikipedia they already train the
  feature MLPs; a larger image lr learns faster but memorises the training images). `epochs`
  counts image+text rounds of the hash stage. The proxy-stage fields are reconstruction
  choices: with beta = 1 (the value whose proxy files the port's script loads) our
  quantization term saturates tanh within a few steps and freezes the proxies at their
  correlated initial signs (min distance 9 of 32 bits for C = 10), beta = 0.01 (another of
  the port's shipped values) gives min 14 / mean 17.6.
  """

  CHOICES = {"proxy_loss": ("pairwise", "softmax")}
  RANGES = {"text_lr_decay_steps": (0, "0 disables the decay")}

  bits: int = 32
  epochs: int = 12  # 6 outer x 2 inner rounds (port)
  batch_size: int = 40  # port
  scale: float = 0.3  # s, the port's gamma
  margin_per_bit: float = 0.3  # m = 0.3 K, the port's sigma
  cross_weight: float = 0.1  # port's cro
  quant_weight: float = 0.1  # lambda (port)
  positives_in_denominator: bool = False  # port quirk: exp(0) per positive class in den
  weight_decay: float = 1e-5  # port, both networks
  image_lr: float = 0.0  # > 0 overrides the per-bit table below
  image_lr_by_bits: tuple = ((16, 8e-4), (32, 6e-4), (48, 5e-4), (64, 3e-4))  # port (COCO)
  text_lr: float = 10 ** -1.5  # port
  text_lr_decay_steps: int = 200  # port: StepDecay(200, 0.5); 0 disables
  text_lr_decay: float = 0.5  # port
  image_hidden: tuple = (4096,)  # feature MLP width (AlexNet fc7)
  text_hidden: tuple = (8192,)  # DCMH text net (port's TxtNet)
  init: str = "fan_in"  # the scripts use the framework default (fan-scaled) init, not N(0, 0.01²)
  buffer_init: str = "normal"  # B_x, B_y start N(0, 1) and B = sign of an independent draw (port)
  phase_order: tuple = ("image", "text")  # port
  # Stage 1 (proxy network); the objective is a jxhash reconstruction.
  proxy_hidden: int = 4096  # port's Label_net
  proxy_loss: str = "pairwise"  # "pairwise" (mean (P_k.P_l/K)^2, k != l) or "softmax"
  proxy_softmax_scale: float = 10.0  # softmax variant: logits scale * P_k.P_l / K (reconstruction)
  proxy_beta: float = 0.01  # quantization weight; a beta of the port's proxy files (see above)
  proxy_balance: float = 1.0  # bit-balance weight (reconstruction: equal weight)
  proxy_lr: float = 0.01  # plain SGD, the port's (commented-out) label optimizer
  proxy_momentum: float = 0.0  # port: none
  proxy_weight_decay: float = 1e-5  # port's label optimizer
  proxy_epochs: int = 10  # trainer epochs of the proxy stage (reconstruction)
  proxy_steps: int = 50  # full-batch updates per proxy epoch (500 in all; converged by ~250 at C=10)


class ProxyTrainState(train_state.TrainState):
  """TrainState of the proxy network plus its BatchNorm running statistics."""

  batch_stats: Any


@flax.struct.dataclass
class State:
  proxy_net: ProxyTrainState
  proxies: jax.Array  # (C, K) P in {-1, +1}, fixed after the proxy stage
  nets: dict  # modality -> TrainState
  outputs: dict  # modality -> (n, K) buffer of the latest tanh outputs (B_img, B_txt)
  codes: jax.Array  # (n, K) B = sign(B_img + B_txt)


# --------------------------------------------------------------------------- losses


def margin_dynamic_softmax(logits: jax.Array, labels: jax.Array, *, scale: float, margin: float,
                           denominator_logits: jax.Array | None = None,
                           positives_in_denominator: bool = False) -> jax.Array:
  """Margin-dynamic-softmax loss summed over items (DCPH, Tu et al. 2023; public port).

  With n_i = |y_i| and the mean positive logit zbar_i(z) = sum_k y_ik z_ik / n_i:
      pos_i = exp(scale (zbar_i(z) - margin)),
      den_i = exp(scale (zbar_i(z') - margin)) + sum_{k: y_ik = 0} exp(scale z'_ik)
              [+ n_i if positives_in_denominator],
      loss  = -sum_i log(pos_i / den_i),
  where z' = `denominator_logits` (default z itself, which gives the classification term).

  Args:
    logits: (bs, C) z_ik = h_i^T P_k of the codes being trained.
    labels: (bs, C) multi-hot labels (entries > 0 are positives).
    scale: s (0.3 in the paper's code).
    margin: m (0.3 K in the paper's code).
    denominator_logits: (bs, C) logits the denominator is built from; the cross-modal term
      passes the other modality's binary codes times P^T here.
    positives_in_denominator: the port's quirk: its denominator sums exp(s z_ik (1 - y_ik))
      over all k, i.e. adds exp(0) = 1 for each positive class.

  Returns:
    scalar sum over items with at least one label (items without labels add 0).
  """
  y = jnp.asarray(labels, jnp.float32)
  positive = y > 0
  count = jnp.sum(y, axis=1)
  has_label = count > 0
  safe_count = jnp.where(has_label, count, 1.0)

  def positive_logit(z):
    return scale * (jnp.sum(z * y, axis=1) / safe_count - margin)

  z_den = logits if denominator_logits is None else denominator_logits
  columns = [positive_logit(z_den)[:, None], jnp.where(positive, -jnp.inf, scale * z_den)]
  if positives_in_denominator:
    columns.append(jnp.log(jnp.sum(positive, axis=1, dtype=jnp.float32))[:, None])
  log_den = jax.nn.logsumexp(jnp.concatenate(columns, axis=1), axis=1)
  return jnp.sum(jnp.where(has_label, log_den - positive_logit(logits), 0.0))


def objective(outputs: jax.Array, *, proxies: jax.Array, labels: jax.Array, other_codes: jax.Array,
              codes: jax.Array, scale: float, margin: float, cross_weight: float, quant_weight: float,
              positives_in_denominator: bool = False) -> tuple[jax.Array, dict]:
  """DCPH hash-stage loss of one modality's batch, normalised by bs as in the port.

  Args:
    outputs: (bs, K) tanh outputs h of the network being trained.
    proxies: (C, K) proxy codes P in {-1, +1}.
    labels: (bs, C) multi-hot labels of the batch.
    other_codes: (bs, K) sign of the other modality's buffer rows of the batch (constant).
    codes: (bs, K) the batch rows of B.
    scale, margin, cross_weight, quant_weight, positives_in_denominator: see `Config`.

  Returns:
    (loss, {"cls", "cross", "quant"}) with the parts already divided by bs.
  """
  bs = outputs.shape[0]
  logits = outputs @ proxies.T
  kwargs = dict(scale=scale, margin=margin, positives_in_denominator=positives_in_denominator)
  cls = margin_dynamic_softmax(logits, labels, **kwargs) / bs
  cross = margin_dynamic_softmax(logits, labels, denominator_logits=other_codes @ proxies.T, **kwargs) / bs
  quant = losses.quantization(codes, outputs) / bs
  return cls + cross_weight * cross + quant_weight * quant, {"cls": cls, "cross": cross, "quant": quant}


def proxy_objective(relaxed: jax.Array, *, kind: str = "pairwise", beta: float = 1.0, balance: float = 1.0,
                    softmax_scale: float = 10.0) -> tuple[jax.Array, dict]:
  """Reconstructed proxy-training objective (the paper's is not public; designed by jxhash).

  J = D + beta ||sign(P~) - P~||^2 / (C K) + balance ||P~^T 1||^2 / (C^2 K), with
  D = mean_{k != l} (P~_k^T P~_l / K)^2 ("pairwise") or
  D = mean_k -log softmax_l(softmax_scale P~_k^T P~_l / K)[k] ("softmax").

  Args:
    relaxed: (C, K) tanh outputs P~ of the label network, one row per category.
    kind: "pairwise" or "softmax".
    beta: quantization weight.
    balance: bit-balance weight.
    softmax_scale: logit scale of the "softmax" variant.

  Returns:
    (loss, {"disc", "quant", "balance"}).
  """
  c, k = relaxed.shape
  gram = relaxed @ relaxed.T / k
  if kind == "pairwise":
    off_diagonal = 1.0 - jnp.eye(c)
    disc = jnp.sum(jnp.square(gram) * off_diagonal) / max(c * (c - 1), 1)
  elif kind == "softmax":
    log_p = jax.nn.log_softmax(softmax_scale * gram, axis=1)
    disc = -jnp.mean(jnp.diagonal(log_p))
  else:
    raise ValueError(f"unknown proxy_loss {kind!r}; choose 'pairwise' or 'softmax'")
  quant = losses.quantization(losses.binarize(relaxed), relaxed) / (c * k)
  bal = losses.bit_balance(relaxed) / (c * c * k)
  return disc + beta * quant + balance * bal, {"disc": disc, "quant": quant, "balance": bal}


# --------------------------------------------------------------------------- state


def image_learning_rate(config: Config) -> float:
  """config.image_lr if set, else the port's per-bit table; other lengths need image_lr."""
  if config.image_lr > 0:
    return float(config.image_lr)
  table = {int(b): float(lr) for b, lr in config.image_lr_by_bits}
  if config.bits not in table:
    raise UserError(f"DCPH has no published image lr for {config.bits} bits (table: {sorted(table)}); "
                    f"set image_lr, e.g. --set image_lr=5e-4")
  return table[config.bits]


def _proxy_module(config: Config) -> ProxyNet:
  return ProxyNet(bits=config.bits, hidden=config.proxy_hidden, init_scheme=config.init)


def _proxy_codes(net: ProxyTrainState, num_labels: int) -> jax.Array:
  """sign(P~) with BatchNorm in inference mode (running statistics)."""
  relaxed = net.apply_fn({"params": net.params, "batch_stats": net.batch_stats}, jnp.eye(num_labels), train=False)
  return binarize(relaxed)


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("proxy", "buffers", "codes"))
  if config.text_lr_decay_steps > 0:
    text_lr = optax.exponential_decay(config.text_lr, config.text_lr_decay_steps, config.text_lr_decay,
                                      staircase=True)
  else:
    text_lr = config.text_lr
  lrs = {"image": image_learning_rate(config), "text": text_lr}
  toolkit.require_features("DCPH", dims, "the paper's AlexNet is not built here")
  nets = toolkit.network_states(keys, toolkit.feature_mlps(config, tanh=True), dims,
                                txs={m: toolkit.sgd(lrs[m], weight_decay=config.weight_decay) for m in MODALITIES})
  proxy_module = _proxy_module(config)
  variables = proxy_module.init(keys["proxy"], jnp.eye(dims.num_labels), train=False)
  proxy_net = ProxyTrainState.create(
      apply_fn=proxy_module.apply, params=variables["params"], batch_stats=variables["batch_stats"],
      tx=toolkit.sgd(config.proxy_lr, weight_decay=config.proxy_weight_decay,
                     momentum=config.proxy_momentum or None))
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind=config.buffer_init)
  # the port draws B independently of the buffers
  if config.buffer_init == "normal":
    codes = binarize(jax.random.normal(keys["codes"], (num_train, config.bits)))
  else:
    codes = jnp.ones((num_train, config.bits))
  return State(proxy_net=proxy_net, proxies=_proxy_codes(proxy_net, dims.num_labels), nets=nets,
               outputs=outputs, codes=codes)


# --------------------------------------------------------------------------- steps


def _proxy_step(config: Config):
  def update(net: ProxyTrainState, num_labels: int):
    def loss_fn(params):
      relaxed, updates = net.apply_fn({"params": params, "batch_stats": net.batch_stats}, jnp.eye(num_labels),
                                      train=True, mutable=["batch_stats"])
      loss, parts = proxy_objective(relaxed, kind=config.proxy_loss, beta=config.proxy_beta,
                                    balance=config.proxy_balance, softmax_scale=config.proxy_softmax_scale)
      return loss, (parts, updates["batch_stats"])

    net, loss, (parts, stats) = toolkit.apply_gradients(net, loss_fn)
    return net.replace(batch_stats=stats), {"loss": loss, **parts}

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    # every update sees all C one-hots; the trainer's batch of items is not needed
    del batch, data, key
    num_labels = state.proxies.shape[0]
    net, logs = jax.lax.scan(lambda net, _: update(net, num_labels), state.proxy_net, None,
                             length=config.proxy_steps)
    return state.replace(proxy_net=net), jax.tree.map(lambda v: v[-1], logs)

  return step


def set_proxies(state: State, data: dict) -> State:
  """End of the proxy stage: P = sign(P~), fixed from now on."""
  del data
  return state.replace(proxies=_proxy_codes(state.proxy_net, state.proxies.shape[0]))


def _hash_objective(config: Config, modality: str):
  other = "text" if modality == "image" else "image"

  def hash_loss(out, extras, state: State, batch: dict, ctx):
    del extras, ctx
    index = batch["index"]
    return objective(out, proxies=state.proxies, labels=batch["labels"],
                     other_codes=binarize(state.outputs[other][index]), codes=state.codes[index],
                     scale=config.scale, margin=config.margin_per_bit * config.bits,
                     cross_weight=config.cross_weight, quant_weight=config.quant_weight,
                     positives_in_denominator=config.positives_in_denominator)

  return hash_loss


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  for m in config.phase_order:
    toolkit.check_modality(m)
  if config.proxy_epochs < 1 or config.proxy_steps < 1:
    raise UserError("DCPH needs a proxy stage: proxy_epochs and proxy_steps must be >= 1")
  # batch_size = num_train: one step per proxy epoch; the step ignores the item batch
  proxy = Stage("proxy", config.proxy_epochs, (Phase("proxy", _proxy_step(config), num_train),),
                finish=set_proxies, evaluate=False)
  phases = tuple(Phase(m, toolkit.network_step(m, _hash_objective(config, m)), config.batch_size)
                 for m in config.phase_order)
  # B = sign(B_img + B_txt) after each image+text round
  return proxy, Stage("hash", config.epochs, phases, end_of_epoch=toolkit.refresh_codes())


def proxy_distances(proxies) -> dict:
  """Minimum and mean Hamming distance between distinct proxies (C >= 2), and the code length."""
  p = np.asarray(proxies, np.float64)
  c, k = p.shape
  dist = 0.5 * (k - p @ p.T)
  off = dist[~np.eye(c, dtype=bool)]
  return {"proxy_min_hamming": float(off.min()), "proxy_mean_hamming": float(off.mean()), "bits": int(k)}


def report(state: State) -> dict:
  return proxy_distances(state.proxies)


SPEC = MethodSpec(
    name="dcph", Config=Config, init=init, stages=stages, encode=toolkit.encode,
    fidelity=("hash stage (margin-dynamic-softmax, cross-modal term, quantization, B update, constants, "
              "schedule) from the authors' script and its Paddle port (1034829217/paddle DCPH); proxy network "
              "architecture from the port; proxy-training objective a reconstruction (discriminative + "
              "quantization + balance designed by jxhash); feature MLPs instead of AlexNet"),
    reference="R.-C. Tu et al., Deep Cross-Modal Proxy Hashing, IEEE TKDE 2023 (arXiv 2011.03451)",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,), "proxy_hidden": 32,
           "proxy_epochs": 2, "proxy_steps": 5},
    report=report)

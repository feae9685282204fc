"""DCPH: Deep Cross-Modal Proxy Hashing (Tu et al., IEEE TKDE 2023; arXiv 2011.03451).

Networks, all ending in K -> tanh:
- image: on pixels a fine-tuned backbone (AlexNet by default, fc7 -> K; toolkit.BackboneConfig);
  on features (N, D) an MLP D -> 4096 -> ReLU -> K.
- text (N, T): T -> 8192 -> ReLU -> K.
- label net (stage 1): one-hot e_k (C) -> `proxy_hidden` -> ReLU [-> BatchNorm] -> K.

Stage 1, proxies (`proxy_epochs` x `proxy_steps` full-batch SGD updates on all C one-hots at
once, lr x `proxy_lr_decay` every `proxy_lr_decay_steps` updates). The label net maps each
category to a relaxed code P~_k in (-1, 1)^K; `proxy_loss="psldh"` minimises
    J = ||ReLU(P~ P~^T - K I)||_F^2 / C^2 + alpha ||1^T P~||^2 / C + beta ||sign(P~) - P~||_F^2 / C,
alpha = `proxy_balance`, beta = `proxy_beta`; as |P~| < 1 the first term counts only positive
inner products between two categories' codes. "pairwise" / "softmax" swap in another first
term and normalisation (`proxy_objective`; `--preset pairwise-proxy` sets up jxhash's earlier
"pairwise" stage). Then P = sign(P~) (BatchNorm in inference mode)
is fixed and kept in the state; `report` gives its fingerprint.

Stage 2, hashing. Per item i with multi-hot y_i, n_i = |y_i|, tanh code h_i and
z_ik = h_i^T P_k (s = `scale`, m = `margin_per_bit` K):
    pos_i = exp(s (sum_k y_ik z_ik / n_i - m)),
    den_i = pos_i + sum_{k: y_ik = 0} exp(s z_ik)   [+ n_i with `positives_in_denominator`],
    L_cls = -sum_i log(pos_i / den_i)                       (computed with logsumexp).
L_cross has the same numerator and a constant denominator den'_i built the same way from
z'_ik = b'_i^T P_k, b'_i = sign(the other modality's buffer row i). Loss of a batch:
    (L_cls + `cross_weight` L_cross) / bs + `quant_weight` ||B_i - h_i||^2 / bs.
Items with no label contribute nothing. Labels meet codes only through the (bs, C) logits
h P^T; no item-to-item similarity is built.

Schedule: `epochs` rounds, each an image epoch, a text epoch (each step writes its batch
outputs into its modality's buffer), then B = sign(B_img + B_txt). SGD with weight decay;
image lr per code length (`image_lr_by_bits`), constant; text lr `text_lr` x `text_lr_decay`
every `text_lr_decay_steps` text updates.

State: the (C, K) proxies P, image and text TrainStates, buffers B_img, B_txt (n, K), codes B.

Provenance, fidelity and ablations: docs/methods/dcph.md
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jxhash import losses
from jxhash.codes import binarize
from jxhash.errors import UserError
from jxhash.methods import toolkit
from jxhash.nets.proxy import ProxyNet
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage


PROXY_LOSSES = ("psldh", "pairwise", "softmax")


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """DCPH hyper-parameters (docs/methods/dcph.md lists each one's source).

  `epochs` counts image+text rounds of the hash stage. `proxy_beta` and `proxy_balance`
  multiply the quantization and bit-balance terms of whichever `proxy_loss` is chosen, each
  with that objective's own normalisation (`proxy_objective`).
  """

  CHOICES = {"proxy_loss": ("psldh", "pairwise", "softmax")}
  RANGES = {"text_lr_decay_steps": (0, "0 disables the decay"), "proxy_lr_decay_steps": (0, "0 disables the decay")}

  bits: int = 32
  epochs: int = 12  # image+text rounds of the hash stage
  batch_size: int = 40  # items per hash-stage step
  scale: float = 0.3  # s, the logit scale
  margin_per_bit: float = 0.3  # margin m = margin_per_bit * K
  cross_weight: float = 0.1  # weight of L_cross
  quant_weight: float = 0.1  # weight of the quantization term ||B - h||^2
  # adds exp(0) = 1 per positive class to the softmax denominators
  positives_in_denominator: bool = False
  weight_decay: float = 1e-5  # SGD weight decay, image and text nets
  image_lr: float = 0.0  # > 0 overrides the per-bit table below
  image_lr_by_bits: tuple = ((16, 8e-4), (32, 6e-4), (48, 5e-4), (64, 3e-4))  # (bits, image SGD lr)
  # text SGD lr; <= 0: the image lr
  text_lr: float = 10 ** -1.5
  text_lr_decay_steps: int = 200  # multiply the text lr by text_lr_decay every this many text updates; 0 disables
  text_lr_decay: float = 0.5  # factor of each text lr decay
  image_hidden: tuple = (4096,)  # image feature MLP hidden widths
  text_hidden: tuple = (8192,)  # text net hidden widths
  init: str = "fan_in"  # weight init of every net: "fan_in" (LeCun normal) or "normal0.01"
  buffer_init: str = "normal"  # B_img, B_txt start N(0, 1); B = sign of an independent draw
  phase_order: tuple = ("image", "text")  # order of the phases within a round
  # Stage 1 (label network -> proxies).
  proxy_hidden: int = 4096  # label net hidden width
  proxy_batchnorm: bool = True  # BatchNorm after the label net's hidden ReLU
  proxy_loss: str = "psldh"  # proxy objective: "psldh", "pairwise" or "softmax" (proxy_objective)
  proxy_softmax_scale: float = 10.0  # "softmax" objective: logits scale * P_k.P_l / K
  # quantization weight beta of the proxy objective
  proxy_beta: float = 0.01
  proxy_balance: float = 0.05  # bit-balance weight alpha of the proxy objective
  proxy_lr: float = 1e-3  # label net SGD lr
  proxy_lr_decay_steps: int = 100  # multiply the proxy lr by proxy_lr_decay every this many updates; 0 disables
  proxy_lr_decay: float = 0.1  # factor of each proxy lr decay
  proxy_momentum: float = 0.0  # label net SGD momentum
  proxy_weight_decay: float = 1e-5  # label net SGD weight decay
  proxy_epochs: int = 4  # trainer epochs of the proxy stage
  proxy_steps: int = 50  # full-batch updates per proxy epoch


@flax.struct.dataclass
class State:
  proxy_net: toolkit.NormState
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
    positives_in_denominator: sum exp(s z_ik (1 - y_ik)) over all k in the denominator,
      i.e. add exp(0) = 1 for each positive class.

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


def positive_gram_penalty(relaxed: jax.Array) -> jax.Array:
  """||ReLU(P P^T - K I)||_F^2: squared positive inner products between different rows (PSLDH).

  For rows in (-1, 1)^K the diagonal P_k^T P_k < K, so only the off-diagonal positive inner
  products count; codes with a negative (or zero) inner product cost nothing.

  Args:
    relaxed: (C, K) relaxed codes, one row per category.

  Returns:
    scalar sum (PSLDH divides it by C^2).
  """
  c, k = relaxed.shape
  gram = relaxed @ relaxed.T
  return jnp.sum(jnp.square(jax.nn.relu(gram - k * jnp.eye(c, dtype=gram.dtype))))


def proxy_objective(relaxed: jax.Array, *, kind: str = "psldh", beta: float = 0.01, balance: float = 0.05,
                    softmax_scale: float = 10.0) -> tuple[jax.Array, dict]:
  """Proxy-training objective: PSLDH's (same-author code) or a jxhash reconstruction.

  "psldh" (rongchengtu1/PSLDH):
      J = ||ReLU(P~ P~^T - K I)||_F^2 / C^2 + balance ||P~^T 1||^2 / C + beta ||sign(P~) - P~||_F^2 / C.
  "pairwise" / "softmax" (designed by jxhash):
      J = D + beta ||sign(P~) - P~||^2 / (C K) + balance ||P~^T 1||^2 / (C^2 K), with
      D = mean_{k != l} (P~_k^T P~_l / K)^2 ("pairwise") or
      D = mean_k -log softmax_l(softmax_scale P~_k^T P~_l / K)[k] ("softmax").

  Args:
    relaxed: (C, K) tanh outputs P~ of the label network, one row per category.
    kind: one of PROXY_LOSSES.
    beta: quantization weight (PSLDH's beta).
    balance: bit-balance weight (PSLDH's alpha).
    softmax_scale: logit scale of the "softmax" variant.

  Returns:
    (loss, {"disc", "quant", "balance"}), each part already normalised, before its weight.
  """
  c, k = relaxed.shape
  quant = losses.quantization(losses.binarize(relaxed), relaxed)
  bal = losses.bit_balance(relaxed)
  if kind == "psldh":
    disc = positive_gram_penalty(relaxed) / (c * c)
    quant, bal = quant / c, bal / c
  elif kind in ("pairwise", "softmax"):
    gram = relaxed @ relaxed.T / k
    if kind == "pairwise":
      off_diagonal = 1.0 - jnp.eye(c)
      disc = jnp.sum(jnp.square(gram) * off_diagonal) / max(c * (c - 1), 1)
    else:
      log_p = jax.nn.log_softmax(softmax_scale * gram, axis=1)
      disc = -jnp.mean(jnp.diagonal(log_p))
    quant, bal = quant / (c * k), bal / (c * c * k)
  else:
    raise UserError(f"unknown proxy_loss {kind!r}; choose one of {', '.join(PROXY_LOSSES)}")
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


def text_learning_rate(config: Config):
  """config.text_lr (<= 0: the image lr), times `text_lr_decay` every `text_lr_decay_steps`
  text updates when that is > 0."""
  text_lr = config.text_lr if config.text_lr > 0 else image_learning_rate(config)
  if config.text_lr_decay_steps > 0:
    return optax.exponential_decay(text_lr, config.text_lr_decay_steps, config.text_lr_decay, staircase=True)
  return text_lr


def _proxy_module(config: Config) -> ProxyNet:
  return ProxyNet(bits=config.bits, hidden=config.proxy_hidden, batchnorm=config.proxy_batchnorm,
                  init_scheme=config.init)


def proxy_learning_rate(config: Config):
  """The proxy optimiser's rate: constant, or PSLDH's step decay over proxy updates.

  PSLDH calls StepLR.step() before each update, so update i (counting from 0) runs at
  lr * decay^floor((i + 1) / decay_steps): with (1e-3, 100, 0.1), updates 0-98 at 1e-3,
  99-198 at 1e-4 and the last one, 199, at 1e-5.
  """
  if config.proxy_lr_decay_steps <= 0:
    return config.proxy_lr
  decay = optax.exponential_decay(config.proxy_lr, config.proxy_lr_decay_steps, config.proxy_lr_decay,
                                  staircase=True)
  return lambda count: decay(count + 1)


def _relaxed_proxies(net: toolkit.NormState, params, num_labels: int, *, train: bool):
  """P~ = label_net(I_C), and in training mode the updated BatchNorm statistics ({} without BN)."""
  return toolkit.apply_norm(net, params, net.batch_stats, jnp.eye(num_labels), train=train)


def _proxy_codes(net: toolkit.NormState, num_labels: int) -> jax.Array:
  """sign(P~) with BatchNorm (if any) in inference mode (running statistics)."""
  return binarize(_relaxed_proxies(net, net.params, num_labels, train=False)[0])


# on pixels: AlexNet, one SGD lr for all its layers
SOURCE_BACKBONE = "alexnet"


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("proxy", "buffers", "codes"))
  lrs = {"image": image_learning_rate(config), "text": text_learning_rate(config)}
  txs = {m: toolkit.sgd(lrs[m], weight_decay=config.weight_decay) for m in MODALITIES}
  txs["image"] = toolkit.backbone_tx(txs["image"], config, dims, SOURCE_BACKBONE)
  txs["text"] = toolkit.text_backbone_tx(txs["text"], config, dims)
  nets = toolkit.network_states(keys, toolkit.feature_mlps(config, tanh=True, dims=dims, source=SOURCE_BACKBONE),
                                dims, txs=txs)
  proxy_module = _proxy_module(config)
  variables = proxy_module.init(keys["proxy"], jnp.eye(dims.num_labels), train=False)
  proxy_net = toolkit.norm_state(proxy_module, variables,
                                 toolkit.sgd(proxy_learning_rate(config), weight_decay=config.proxy_weight_decay,
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
  def update(net: toolkit.NormState, num_labels: int):
    def loss_fn(params):
      relaxed, stats = _relaxed_proxies(net, params, num_labels, train=True)
      loss, parts = proxy_objective(relaxed, kind=config.proxy_loss, beta=config.proxy_beta,
                                    balance=config.proxy_balance, softmax_scale=config.proxy_softmax_scale)
      return loss, (parts, stats)

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
  if config.proxy_loss not in PROXY_LOSSES:
    raise UserError(f"proxy_loss must be one of {', '.join(PROXY_LOSSES)}, got {config.proxy_loss!r}")
  # batch_size = num_train: one step per proxy epoch; the step ignores the item batch
  proxy = Stage("proxy", config.proxy_epochs, (Phase("proxy", _proxy_step(config), num_train),),
                finish=set_proxies, evaluate=False)
  phases = tuple(Phase(m, toolkit.network_step(m, _hash_objective(config, m)), config.batch_size)
                 for m in config.phase_order)
  # B = sign(B_img + B_txt) after each image+text round
  return proxy, Stage("hash", config.epochs, phases, end_of_epoch=toolkit.refresh_codes())


def train_proxies(key: jax.Array, config: Config, num_labels: int) -> jax.Array:
  """The proxy stage alone: (C, K) ±1 proxies of `num_labels` categories.

  The stage sees only the C one-hots, so no data is needed: this runs `init` on tiny feature
  dims and then the proxy stage's own step and finish, with the same key use as a full run.
  """
  dims = Dims(image_shape=(1,), text_dim=1, num_labels=num_labels)
  state = init(key, dataclasses.replace(config, image_hidden=(1,), text_hidden=(1,), backbone="auto",
                                        backbone_weights=""), dims, 1)
  stage = stages(config, 1)[0]
  step = jax.jit(stage.phases[0].step)
  for _ in range(stage.epochs):
    state, _ = step(state, None, None, None)
  return stage.finish(state, None).proxies


def proxy_distances(proxies) -> dict:
  """Minimum and mean Hamming distance between distinct proxies (C >= 2), and the code length."""
  p = np.asarray(proxies, np.float64)
  c, k = p.shape
  dist = 0.5 * (k - p @ p.T)
  off = dist[~np.eye(c, dtype=bool)]
  return {"proxy_min_hamming": float(off.min()), "proxy_mean_hamming": float(off.mean()), "bits": int(k)}


def proxy_fingerprint(proxies) -> dict:
  """Statistics of (C, K) ±1 proxies that the DCPH port's shipped proxy files can be compared on.

  Returns:
    {"proxy_mean_abs_column_sum": mean over bits of |sum_k P_kb| (bit balance; random ±1 codes
       about sqrt(2C / pi)),
     "proxy_positive_pair_fraction": fraction of category pairs k != l with P_k . P_l > 0,
     "proxy_mean_cosine": mean over k != l of P_k . P_l / K (the simplex bound is -1 / (C - 1))}.
  """
  p = np.asarray(proxies, np.float64)
  c, k = p.shape
  off = (p @ p.T)[~np.eye(c, dtype=bool)]
  return {"proxy_mean_abs_column_sum": float(np.abs(p.sum(axis=0)).mean()),
          "proxy_positive_pair_fraction": float(np.mean(off > 0)),
          "proxy_mean_cosine": float(np.mean(off) / k)}


def report(state: State) -> dict:
  return {**proxy_distances(state.proxies), **proxy_fingerprint(state.proxies)}


SPEC = MethodSpec(
    name="dcph", Config=Config, init=init, stages=stages, encode=toolkit.encode,
    fidelity=("hash stage from a public port of the authors' script; proxy objective from the same author's "
              "PSLDH code; docs/methods/dcph.md"),
    reference="R.-C. Tu et al., Deep Cross-Modal Proxy Hashing, IEEE TKDE 2023 (arXiv 2011.03451)",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,), "proxy_hidden": 32,
           "proxy_epochs": 2, "proxy_steps": 5},
    report=report, warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE),
    # pairwise-proxy: jxhash's earlier "pairwise" proxy stage (docs/dcph_proxy.md)
    presets={"pairwise-proxy": {"proxy_loss": "pairwise", "proxy_beta": 0.01, "proxy_balance": 1.0,
                                "proxy_hidden": 4096, "proxy_batchnorm": True, "proxy_lr": 0.01,
                                "proxy_lr_decay_steps": 0, "proxy_epochs": 10, "proxy_steps": 50}})

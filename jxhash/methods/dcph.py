"""DCPH: Deep Cross-Modal Proxy Hashing (Tu et al., IEEE TKDE 2023; arXiv 2011.03451).

Fidelity, component by component (docs/methods/dcph.md has the table with config fields):

- Hash-stage loss (margin-dynamic-softmax), cross-modal term, quantization, B update,
  buffers, constants and image lrs: read in the authors' PyTorch script as republished in
  the public repo 1034829217/paddle (`DCPH/utils/DFPH_NN.py`, author paths). The cross-modal
  term follows that PyTorch script; the repo's Paddle port (`DCPH/CCMH_BS.py`) has two bugs
  in its text branch (it takes the sign of the text buffer itself where the image buffer
  belongs, and reuses the image phase's denominator), not copied.
- Round structure: 6 outer x 2 inner = 12 image+text rounds, the Paddle port's. The stored
  PyTorch script runs 4 x 20 = 80 rounds and halves the image lr every 50 rounds.
- Text learning rate: 10^-1.5 halved every 200 text updates, a jxhash reading (see below);
  neither public script runs it.
- Proxy stage: the objective, optimiser and step count of the first author's PSLDH code
  (rongchengtu1/PSLDH, `PSLDH.py`; inferred from the same author's PSLDH code: the DCPH
  script defines PSLDH's alpha = 0.05, picks its proxy file by PSLDH's beta, and the shipped
  proxy files follow PSLDH's naming and format). The label network is the DCPH port's
  `Label_net` (`DCPH/utils/label_hash_model.py`); PSLDH's own smaller one is selectable.
  The earlier jxhash reconstructions ("pairwise", "softmax") stay selectable
  (`RECONSTRUCTED_PROXY_STAGE`).
- Networks: on pixels the image net is the script's AlexNet, fc7 -> K -> tanh, fine-tuned end
  to end (`backbone`, `backbone_weights`: toolkit.BackboneConfig); on precomputed features it
  is an MLP feature -> 4096 -> K -> tanh (AlexNet fc7 width). The text net is DCMH's
  BoW -> 8192 -> ReLU -> K, with tanh as in the port.

Stage 1, proxies. A label network maps each of the C one-hot categories e_k to a relaxed
code P~_k in (-1, 1)^K: the port's Linear(C, 4096) -> ReLU -> BatchNorm -> Linear(4096, K)
-> tanh by default, PSLDH's Linear(C, 512) -> ReLU -> Linear(512, K) -> tanh with
`proxy_hidden=512, proxy_batchnorm=False`. Every update sees all C one-hots at once (a full
batch, so BatchNorm's statistics are those of the whole category set). PSLDH's objective:
    J = ||ReLU(P~ P~^T - K I)||_F^2 / C^2 + alpha ||1^T P~||^2 / C + beta ||sign(P~) - P~||_F^2 / C,
alpha = `proxy_balance` = 0.05 and beta = `proxy_beta` = 0.01 as in PSLDH (the DCPH script
loads the files trained with beta = 1; `proxy_beta=1` selects that; docs/dcph_proxy.md
measures both). Because |P~| < 1 the diagonal of P~ P~^T stays below K, so the first term
penalises only positive inner products between the codes of two different categories;
negative ones cost nothing. SGD lr 1e-3, weight decay 1e-5, no
momentum, 200 updates, lr x 0.1 every 100 (PSLDH steps its StepLR(100, 0.1) before each
update, so updates 1-99 run at 1e-3, 100-199 at 1e-4 and the 200th at 1e-5). The earlier
reconstructions, with their own normalisation (J = D + beta ||sign(P~) - P~||^2 / (C K) +
balance ||P~^T 1||^2 / (C^2 K), D "pairwise" = mean over k != l of (P~_k^T P~_l / K)^2 or
"softmax" = cross-entropy of each proxy against all), are `proxy_loss="pairwise"/"softmax"`.
After the stage the proxies P = sign(P~) (BatchNorm in inference mode) are fixed and kept in
the state, so checkpoints hold them; each results file reports their fingerprint
(`proxy_fingerprint`).

Stage 2, hashing. Per training item i with multi-hot y_i, n_i = |y_i|, tanh code h_i and
z_ik = h_i^T P_k (s = 0.3, m = 0.3 K):
    pos_i = exp(s (sum_k y_ik z_ik / n_i - m)),
    den_i = pos_i + sum_{k: y_ik = 0} exp(s z_ik),
    L_cls = -sum_i log(pos_i / den_i)                       (computed with logsumexp).
Cross-modal term, as the PyTorch script `DFPH_NN.py` computes it: the numerator is this
modality's pos_i (differentiable); the denominator den'_i is built entirely from the other
modality's binary codes b'_i = sign(buffer row i of the other modality), z'_ik = b'_i^T P_k:
    den'_i = exp(s (sum_k y_ik z'_ik / n_i - m)) + sum_{k: y_ik = 0} exp(s z'_ik),
    L_cross = -sum_i log(pos_i / den'_i);
den' is a constant, so the term rewards this modality's mean positive logit relative to how
well the other modality's current binary code already separates item i. Total loss of a
batch: (L_cls + 0.1 L_cross) / bs + 0.1 ||B_i - h_i||^2 / bs. Both DCPH scripts' denominators
also contain exp(0) = 1 per positive class (exp(s z (1 - y)) summed over all k); that is the
flag `positives_in_denominator`, default off: the same author removed exactly this from
PSLDH's partial softmax (rongchengtu1/PSLDH commit f904a81f, Nov 2022: "exp over the
(1 - y)-masked logits" became "negatives only"), and his later DAPH code uses negatives only
too. Items with no label contribute nothing (the scripts would divide by n_i = 0).

Alternation: each round (epoch) runs an image epoch, a text epoch (batch rows of each
network's outputs written into its buffer), then B = sign(B_img + B_txt). The port's B also
adds a third, never-updated random buffer B_z (from an unused feature branch), dropped here.
SGD with weight decay 1e-5, batch 40; image lr per code length (the scripts' COCO table),
constant.

Text learning rate. The Paddle port assigns the text SGD a rate of 10^-1.5, but then attaches
to it the image optimiser's StepDecay(200, 0.5) (`optimizer_txt.set_lr_scheduler(scheduler)`),
which was built from the image lr; its own LambdaDecay is stepped but attached to nothing. So
the port trains the text net at the image lr, and as that StepDecay is stepped once per
image epoch (12 times) it never fires: a constant image lr (`text_lr=0`,
`text_lr_decay_steps=0` here). The PyTorch script instead uses per-bit text lrs (COCO 2e-3,
1.7e-3, 1e-3, 1e-3) with cosine warm restarts every 20 rounds and an extra feature branch,
not followed. jxhash's default, 10^-1.5 halved every 200 text updates (`text_lr_decay_steps`),
is a jxhash reading that takes the port's 10^-1.5 and counts its StepDecay in updates. It is
kept: every earlier jxhash DCPH number used it, and the rate the port really runs measured
about 0.02-0.03 mAP lower on Wikipedia at 32 bits (docs/dcph_proxy.md).

No similarity between datapoints is built anywhere: labels meet codes only through the
(bs, C) logits h P^T.

Length (over 400 lines): DCPH keeps its earlier proxy objectives selectable beside PSLDH's
(an ablation, not a loss), and each objective's formula and source are documented here.
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

# The proxy stage jxhash used before the PSLDH objective became the default (its
# reconstruction, designed by jxhash): pass these as config overrides to reproduce it.
RECONSTRUCTED_PROXY_STAGE = {
    "proxy_loss": "pairwise", "proxy_beta": 0.01, "proxy_balance": 1.0, "proxy_hidden": 4096,
    "proxy_batchnorm": True, "proxy_lr": 0.01, "proxy_lr_decay_steps": 0, "proxy_epochs": 10,
    "proxy_steps": 50,
}


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """DCPH hyper-parameters; defaults and their sources in docs/methods/dcph.md.

  The image and text learning rates were tuned by the authors for AlexNet fine-tuning; they
  are kept as defaults (on 1000-item synthetic data and Wikipedia they already train the
  feature MLPs; a larger image lr learns faster but memorises the training images). `epochs`
  counts image+text rounds of the hash stage. The proxy stage is PSLDH's (same-author code)
  on the DCPH port's label network; `RECONSTRUCTED_PROXY_STAGE` gives the earlier jxhash
  reconstruction. The weights `proxy_beta` and `proxy_balance` multiply the quantization and
  bit-balance terms of whichever `proxy_loss` is chosen, each with that objective's own
  normalisation (module docstring).
  """

  CHOICES = {"proxy_loss": ("psldh", "pairwise", "softmax")}
  RANGES = {"text_lr_decay_steps": (0, "0 disables the decay"), "proxy_lr_decay_steps": (0, "0 disables the decay")}

  bits: int = 32
  epochs: int = 12  # 6 outer x 2 inner rounds (Paddle port; the PyTorch script runs 4 x 20)
  batch_size: int = 40  # port
  scale: float = 0.3  # s, the port's gamma
  margin_per_bit: float = 0.3  # m = 0.3 K, the port's sigma
  cross_weight: float = 0.1  # port's cro
  quant_weight: float = 0.1  # lambda (port)
  # Both DCPH scripts add exp(0) per positive class to the denominator; off by default because
  # the same author removed it from PSLDH (commit f904a81f) and DAPH has negatives only (same-author code).
  positives_in_denominator: bool = False
  weight_decay: float = 1e-5  # port, both networks
  image_lr: float = 0.0  # > 0 overrides the per-bit table below
  image_lr_by_bits: tuple = ((16, 8e-4), (32, 6e-4), (48, 5e-4), (64, 3e-4))  # port (COCO)
  # The port's text SGD is created with 10^-1.5 but runs at the image lr (the image StepDecay is
  # attached to it); 0 selects that (the image lr). 10^-1.5 is a jxhash reading, kept as default.
  text_lr: float = 10 ** -1.5
  text_lr_decay_steps: int = 200  # jxhash reading of the port's StepDecay(200, 0.5), in text updates; 0 disables
  text_lr_decay: float = 0.5  # port
  image_hidden: tuple = (4096,)  # feature MLP width (AlexNet fc7)
  text_hidden: tuple = (8192,)  # DCMH text net (port's TxtNet)
  init: str = "fan_in"  # the scripts use the framework default (fan-scaled) init, not N(0, 0.01²)
  buffer_init: str = "normal"  # B_x, B_y start N(0, 1) and B = sign of an independent draw (port)
  phase_order: tuple = ("image", "text")  # port
  # Stage 1 (label network -> proxies).
  proxy_hidden: int = 4096  # DCPH port's Label_net (PSLDH's: 512)
  proxy_batchnorm: bool = True  # DCPH port's Label_net (PSLDH's has none)
  proxy_loss: str = "psldh"  # same-author code (PSLDH); "pairwise", "softmax": jxhash reconstructions
  proxy_softmax_scale: float = 10.0  # softmax variant: logits scale * P_k.P_l / K (designed by jxhash)
  # quantization weight: PSLDH's 0.01 (same-author code; also one of the port's proxy files); the DCPH
  # script loads the beta = 1 files, selectable; chosen on Wikipedia mAP (docs/dcph_proxy.md)
  proxy_beta: float = 0.01
  proxy_balance: float = 0.05  # bit-balance weight alpha (same-author code: PSLDH, and unused in the DCPH script)
  proxy_lr: float = 1e-3  # same-author code (PSLDH)
  proxy_lr_decay_steps: int = 100  # PSLDH's StepLR(100, 0.1) over proxy updates; 0 disables (same-author code)
  proxy_lr_decay: float = 0.1  # same-author code (PSLDH)
  proxy_momentum: float = 0.0  # PSLDH and the port: none
  proxy_weight_decay: float = 1e-5  # PSLDH and the port's label optimizer
  proxy_epochs: int = 4  # trainer epochs of the proxy stage: 4 x 50 = PSLDH's 200 updates
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
  """config.text_lr (<= 0: the image lr, which is what the Paddle port runs), halved every
  `text_lr_decay_steps` text updates when that is > 0."""
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


# on pixels: the script fine-tunes torchvision's AlexNet (DFPH_NN.py: HASH_Net("alexnet", K), one SGD lr
# for all its layers)
SOURCE_BACKBONE = "alexnet"


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("proxy", "buffers", "codes"))
  lrs = {"image": image_learning_rate(config), "text": text_learning_rate(config)}
  txs = {m: toolkit.sgd(lrs[m], weight_decay=config.weight_decay) for m in MODALITIES}
  txs["image"] = toolkit.backbone_tx(txs["image"], config, dims, SOURCE_BACKBONE)
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
    fidelity=("hash stage (margin-dynamic-softmax, cross-modal term, quantization, B update, constants, image lrs) "
              "from the authors' PyTorch script (1034829217/paddle DCPH/utils/DFPH_NN.py), 6 x 2 rounds from its "
              "Paddle port, text lr a jxhash reading of the port; proxy stage (objective, optimiser, 200 updates) "
              "inferred from the same author's PSLDH code (rongchengtu1/PSLDH), on the port's label network; "
              "a feature MLP on features, AlexNet fine-tuned on pixels"),
    reference="R.-C. Tu et al., Deep Cross-Modal Proxy Hashing, IEEE TKDE 2023 (arXiv 2011.03451)",
    smoke={"epochs": 2, "batch_size": 32, "image_hidden": (32,), "text_hidden": (32,), "proxy_hidden": 32,
           "proxy_epochs": 2, "proxy_steps": 5},
    report=report, warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE))

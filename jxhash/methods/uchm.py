"""UCHM: Unsupervised Cross-Modal Hashing with Modality-Interaction (Tu et al., IEEE TCSVT 2023).

Networks (on features; pixels below):
- MIE generator (`jxhash.nets.interaction.MIEGenerator`): each modality -> Dense(`mie_hidden`)
  -> ReLU, split into `mie_tokens` tokens; image tokens attend to text tokens and text tokens
  to image tokens (one cross-attention block each way, residual + layer norm); the pooled
  tokens are fused by an MLP into e_i = tanh(.) of width `mie_dim` (0: K).
  `fusion="bilinear"` swaps the attention for P^T(U^T a * V^T b) of rank `mie_rank`.
- hashing nets: image D -> 4096 -> ReLU -> K -> tanh, text T -> 4096 -> ReLU -> K -> tanh.
- bit gate (`jxhash.nets.interaction.BitGate`): a_ik = sigmoid(s (|f_ik| - |g_ik|) + b_k),
  s = 5 and b = 0 at init.

Stage 1, generator (`mie_epochs`, Adam at `mie_lr`, batch x batch pairs). Target
    t_ij = clip(mu (w cos(x_i, x_j) + (1 - w) cos(y_i, y_j)), -1, 1)
(mu = `target_scale`, w = `image_weight`; `cos_rescale` maps each cosine c to 2c - 1); loss
(`mie_loss`), c_ij = cos(e_i, e_j):
    mean_ij (c_ij - t_ij)^2 + lambda mean_ij 1[|t_ij| >= tau] ReLU(margin - sign(t_ij) c_ij)^2
(lambda = `saturation_weight`, tau = `clear_threshold`). Then S_MIE_ij = cos(e_i, e_j): the
unit-norm embeddings (n, d) stay in the state and each batch's rows S_MIE[batch, :] are
computed on the fly (`similarity_rows`: n x d floats, never n x n). `similarity="unimodal"`
skips the stage and uses t itself.

Stage 2, hashing (`epochs`; SGD with momentum). One joint step per batch updates both nets
(`hashing_loss`), F~ and G~ the buffers with the batch rows live:
    [||cos(f, G~) - S||^2 + ||cos(g, F~) - S||^2
     + intra_weight (||cos(f, F~) - S||^2 + ||cos(g, G~) - S||^2)] / (bs n)
    + quant_weight (||U - f||^2 + ||U - g||^2) / (bs K),
and, with bit_selection="gate", Adam steps on (s, b_k) so that the gated codes' cosines match
S_MIE within the batch. `correction="codes"`: in the last `correction_epochs` epochs, where
the codes' own similarity and S differ by more than `correction_threshold`, the target
becomes the codes' side with weight 1 - |S| (`corrected_similarity`).

Unified codes U = sign(selection(F, G)) (`select_bits`), refreshed at the end of each epoch:
"gate" sign(a f + (1 - a) g); "item" the larger-|value| modality per item and bit (equal to
sign(F + G) wherever |f| != |g|); "bit" per bit the modality with the larger mean |value|.

No labels in training (`SPEC.supervised = False`): the trainer never hands them to a step.

Pixels (a reconstruction choice): the image hashing net is the shared backbone (`SOURCE_BACKBONE`,
CNN-F, or `backbone=...`) -> K -> tanh, fine-tuned end to end; the generator and t read fixed
features x_i of every training image instead, the same backbone and weights frozen, computed once
before the first epoch (`prepare_fixed_features`, the spec's `prepare`) and kept in the state,
standardised over the training set (`generator_images`). The sources' generator reads fc7
features computed once; recomputing them from the fine-tuned backbone would move the targets.

State: generator, hashing-net and gate TrainStates, MIE embeddings (n, d), buffers F, G
(n, K), unified codes U (n, K); on pixels the fixed image features (n, F).

Provenance, fidelity and ablations: docs/methods/uchm.md
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
from jxhash.nets import backbones
from jxhash.nets.interaction import BitGate, MIEGenerator
from jxhash.spec import MODALITIES, Dims, MethodSpec, Phase, Stage


@dataclasses.dataclass(frozen=True)
class Config(toolkit.BackboneConfig):
  """UCHM hyper-parameters (docs/methods/uchm.md lists each one's source). `epochs` counts
  hashing epochs only."""

  CHOICES = {"similarity": ("mie", "unimodal"), "fusion": ("cross_attention", "bilinear"),
             "bit_selection": ("gate", "item", "bit"), "correction": ("none", "codes")}
  RANGES = {"mie_epochs": (0, "similarity='unimodal' trains no generator")}

  epochs: int = 100  # hashing epochs
  batch_size: int = 128  # hashing batch size
  # --- similarity
  similarity: str = "mie"  # "mie" (S_MIE) or "unimodal" (the plain target t)
  image_weight: float = 0.5  # w in t, weight of the image cosine
  target_scale: float = 1.5  # mu in t
  cos_rescale: bool = False  # 2 cos - 1 on each cosine (for raw non-negative features)
  # --- MIE generator (stage 1)
  mie_epochs: int = 30  # generator epochs
  mie_batch_size: int = 256  # generator batch size (batch x batch pairs per step)
  mie_dim: int = 0  # embedding width; 0 = K, so S_MIE is a similarity K-dim codes can realise
  mie_hidden: int = 512  # projection width of each modality
  mie_tokens: int = 4  # tokens per modality for cross-attention
  mie_heads: int = 4  # attention heads
  mie_rank: int = 256  # rank of the bilinear interaction (fusion="bilinear")
  fusion: str = "cross_attention"  # "cross_attention" or "bilinear"
  mie_lr: float = 1e-3  # generator Adam lr
  saturation_weight: float = 1.0  # weight of the hinge pushing clear pairs to +-margin
  clear_threshold: float = 0.5  # |t| >= this makes a pair "clear"
  margin: float = 0.8  # hinge target
  # --- hashing nets (stage 2)
  image_hidden: tuple = (4096,)  # image MLP hidden widths
  text_hidden: tuple = (4096,)  # text MLP hidden widths
  init: str = "fan_in"  # hashing nets' weight init: "fan_in" (LeCun normal) or "normal0.01"
  intra_weight: float = 0.1  # weight of the cos(f, F~), cos(g, G~) terms
  quant_weight: float = 0.1  # weight of the quantization against the unified codes
  lr: float = 0.01  # hashing nets' first-epoch SGD lr
  lr_end: float = 0.01  # last epoch's lr
  lr_schedule: str = "constant"
  momentum: float = 0.9  # SGD momentum
  weight_decay: float = 5e-4  # SGD weight decay
  # --- hash-similarity correction of the target
  correction: str = "none"  # "none" or "codes": code similarity overrides the target where they disagree
  correction_epochs: int = 5  # last hashing epochs that use it
  correction_threshold: float = 0.8  # |code sim - S| above this is a disagreement
  # --- bit selection
  bit_selection: str = "gate"  # learned; "item" = larger |value| (equals sign(F + G)); "bit" per column
  gate_lr: float = 1e-2  # Adam on the 1 + K gate parameters (s, b_k)

  def check(self) -> None:
    if self.similarity == "mie" and self.mie_epochs < 1:
      raise UserError("uchm config: similarity='mie' needs mie_epochs >= 1 (the generator must be trained)")
    if self.fusion == "cross_attention" and self.mie_hidden % (self.mie_tokens * self.mie_heads):
      raise UserError(f"uchm config: mie_hidden={self.mie_hidden} must be divisible by mie_tokens * mie_heads "
                      f"= {self.mie_tokens * self.mie_heads}")
    if self.correction == "codes" and not 0 < self.correction_epochs < self.epochs:
      raise UserError(f"uchm config: correction='codes' needs 0 < correction_epochs < epochs (got "
                      f"correction_epochs={self.correction_epochs}, epochs={self.epochs}): the codes must be "
                      "trained before they can correct the target")


@flax.struct.dataclass
class State:
  generator: object  # TrainState of the MIE generator
  nets: dict  # modality -> TrainState of the hashing nets
  gate: object  # TrainState of the bit-selection gate (trained only if bit_selection="gate")
  embedding: jax.Array  # (n, d) unit-norm MIE embeddings e_i / ||e_i|| (set when stage 1 ends)
  outputs: dict  # modality -> (n, K) buffer of the latest tanh outputs (F, G)
  codes: jax.Array  # (n, K) unified codes in {-1, +1} from bit selection
  # pixels only (None on features): (n, F) the frozen pretrained backbone's features of every
  # training image, computed once before training (`prepare_fixed_features`); the similarity
  # generator's image input
  fixed_image: jax.Array | None = None


SOURCE_BACKBONE = "cnn-f"  # on pixels; the sources' VGG-19 is not among the shared backbones


# --------------------------------------------------------------------------- networks


# --------------------------------------------------------------------------- pure losses


def unimodal_similarity(image_a: jax.Array, text_a: jax.Array, image_b: jax.Array, text_b: jax.Array, *,
                        image_weight: float, rescale: bool = False) -> jax.Array:
  """DJSRH's first-order joint similarity w cos(x_i, x_j) + (1 - w) cos(y_i, y_j).

  Args:
    image_a, text_a: (m, D), (m, T) features of the row items.
    image_b, text_b: (n, D), (n, T) features of the column items.
    image_weight: w.
    rescale: map each cosine c to 2c - 1 (DJSRH, whose raw features are non-negative).

  Returns:
    (m, n) similarities.
  """
  ci = losses.cosine_similarity(image_a, image_b)
  ct = losses.cosine_similarity(text_a, text_b)
  if rescale:
    ci, ct = 2.0 * ci - 1.0, 2.0 * ct - 1.0
  return image_weight * ci + (1.0 - image_weight) * ct


def similarity_target(mix: jax.Array, *, scale: float) -> jax.Array:
  """t = clip(scale * mix, -1, 1): DJSRH's mu-scaling, clipped to what a cosine can reach."""
  return jnp.clip(scale * mix, -1.0, 1.0)


def mie_loss(embedding_similarity: jax.Array, target: jax.Array, *, saturation_weight: float,
             clear_threshold: float, margin: float) -> jax.Array:
  """Hash-similarity-friendly loss of the MIE generator (designed by jxhash).

  mean_ij (c_ij - t_ij)^2 + lambda mean_ij 1[|t_ij| >= tau] relu(margin - sign(t_ij) c_ij)^2:
  the regression keeps the ranking of the unimodal target, the hinge drives clear pairs to a
  saturated similarity (near-identical or near-opposite codes), the regime binary codes
  realise; sign(0) counts as +1.

  Args:
    embedding_similarity: (m, n) c_ij = cos(e_i, e_j).
    target: (m, n) t_ij in [-1, 1].
    saturation_weight: lambda.
    clear_threshold: tau.
    margin: the hinge's target level.

  Returns:
    scalar.
  """
  regression = jnp.mean(jnp.square(embedding_similarity - target))
  clear = (jnp.abs(target) >= clear_threshold).astype(jnp.float32)
  direction = jnp.where(target >= 0, 1.0, -1.0)
  hinge = jnp.mean(clear * jnp.square(jax.nn.relu(margin - direction * embedding_similarity)))
  return regression + saturation_weight * hinge


def hashing_loss(image_codes: jax.Array, text_codes: jax.Array, *, image_buffer: jax.Array,
                 text_buffer: jax.Array, similarity: jax.Array, unified: jax.Array, index: jax.Array,
                 intra_weight: float, quant_weight: float, weight: jax.Array | None = None) -> jax.Array:
  """Joint loss of both hashing nets on one batch (designed by jxhash after DJSRH).

  With F~, G~ the buffers whose batch rows are the live outputs f, g, S the batch rows and W
  the optional per-pair weights (all ones when absent):
      [ ||W * (cos(f, G~) - S)^2||_1 + ||W * (cos(g, F~) - S)^2||_1
        + intra (||W * (cos(f, F~) - S)^2||_1 + ||W * (cos(g, G~) - S)^2||_1) ] / (bs n)
      + quant (||U - f||^2 + ||U - g||^2) / (bs K).

  Args:
    image_codes, text_codes: (bs, K) tanh outputs f, g of the batch.
    image_buffer, text_buffer: (n, K) F, G (constants but for the batch rows).
    similarity: (bs, n) S[batch, :].
    unified: (bs, K) unified codes U of the batch in {-1, +1}.
    index: (bs,) the batch rows' positions.
    intra_weight, quant_weight: weights.
    weight: optional (bs, n) W >= 0 (`corrected_similarity`'s down-weighting).

  Returns:
    scalar.
  """
  bs, bits = image_codes.shape
  full_f = jnp.asarray(image_buffer).at[index].set(image_codes)
  full_g = jnp.asarray(text_buffer).at[index].set(text_codes)
  reg = lambda a, b: losses.similarity_regression(losses.cosine_similarity(a, b), similarity, weight)  # noqa: E731
  pairs = (reg(image_codes, full_g) + reg(text_codes, full_f)
           + intra_weight * (reg(image_codes, full_f) + reg(text_codes, full_g)))
  quant = losses.quantization(unified, image_codes) + losses.quantization(unified, text_codes)
  return pairs / (bs * image_buffer.shape[0]) + quant_weight * quant / (bs * bits)


def code_similarity(image_codes: jax.Array, text_codes: jax.Array, *, image_buffer: jax.Array,
                    text_buffer: jax.Array, index: jax.Array) -> jax.Array:
  """The codes' own similarity of the batch rows to every item, as UCHTIM's correction reads it.

  (cos(f, G~) + cos(f, F~) + cos(g, G~)) / 3 with F~, G~ the buffers holding the batch rows
  f, g: UCHTIM's (B_I B_T^T + B_I B_I^T + B_T B_T^T) / 3 of L2-normalised codes, taken here
  over the batch rows against the whole training set instead of the batch against itself.

  Args:
    image_codes, text_codes: (bs, K) f, g.
    image_buffer, text_buffer: (n, K) F, G.
    index: (bs,) the batch rows' positions.

  Returns:
    (bs, n) in [-1, 1].
  """
  full_f = jnp.asarray(image_buffer).at[index].set(image_codes)
  full_g = jnp.asarray(text_buffer).at[index].set(text_codes)
  cos = losses.cosine_similarity
  return (cos(image_codes, full_g) + cos(image_codes, full_f) + cos(text_codes, full_g)) / 3.0


def corrected_similarity(code_sim: jax.Array, similarity: jax.Array, *, threshold: float,
                         keep: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """UCHTIM's "denoise" rule: the codes' similarity corrects the generated one.

  Where |c_ij - S_ij| > threshold the target becomes sign(c_ij - S_ij) (+-1, the side the codes
  pull towards) with weight 1 - |S_ij| (a confident generated value keeps most of its say by
  muting the overridden pair); elsewhere the target stays S_ij with weight 1. Exactly
  `train_div.py`'s select_pos / S / weight_s.

  Args:
    code_sim: (m, n) c, the codes' similarity (treated as a constant).
    similarity: (m, n) S, the generated similarity in [-1, 1].
    threshold: UCHTIM's gamma (0.8).
    keep: optional (m, n) bool of entries never corrected (an item against itself: UCHTIM
      resets its diagonal to 1).

  Returns:
    (target, weight), each (m, n).
  """
  code_sim = jax.lax.stop_gradient(code_sim)
  gap = code_sim - similarity
  select = jnp.abs(gap) > threshold
  if keep is not None:
    select = select & ~keep
  target = jnp.where(select, jnp.sign(gap), similarity)
  weight = jnp.where(select, 1.0 - jnp.abs(similarity), 1.0)
  return target, weight


def select_bits(image_codes: jax.Array, text_codes: jax.Array, *, per: str = "item") -> jax.Array:
  """Bit selection by confidence (larger |value|); ties go to the image side.

  per="item": for each item and bit, the larger-|value| modality. Its sign equals sign(f + g)
    wherever |f| != |g| (a sum takes the sign of its larger term).
  per="bit": for each bit k, the whole column of the modality with the larger mean |value|
    over the items, so every bit of the unified code is one modality's decision.

  Args:
    image_codes, text_codes: (n, K) continuous codes (whole buffers for per="bit").
    per: "bit" or "item".

  Returns:
    (n, K) selected continuous values (sign them for the unified codes).
  """
  if per == "bit":
    take_image = jnp.mean(jnp.abs(image_codes), axis=0) >= jnp.mean(jnp.abs(text_codes), axis=0)
    return jnp.where(take_image[None, :], image_codes, text_codes)
  if per == "item":
    return jnp.where(jnp.abs(image_codes) >= jnp.abs(text_codes), image_codes, text_codes)
  raise UserError(f"unknown selection {per!r}; choose 'bit' or 'item'")


def gated_bits(gate_weight: jax.Array, image_codes: jax.Array, text_codes: jax.Array) -> jax.Array:
  """a f + (1 - a) g, the learned gate's soft selection. All (n, K)."""
  return gate_weight * image_codes + (1.0 - gate_weight) * text_codes


# --------------------------------------------------------------------------- similarity


def generator_images(state: State, data: dict, config: Config | None) -> jax.Array:
  """(n, D) the image features the similarity generator reads: the trainer's `data["image"]`
  on features; on pixels the fixed backbone features in the state, standardised over the
  training set as the trainer standardises extracted features (left raw with `cos_rescale`,
  the choice for raw non-negative features)."""
  if state.fixed_image is None:
    return data["image"]
  x = state.fixed_image
  if config.cos_rescale:
    return x
  mean = jnp.mean(x, axis=0, keepdims=True)
  scale = jnp.std(x, axis=0, keepdims=True)
  # a column constant over the training set (a dead ReLU unit) keeps scale 1, as the trainer's
  return (x - mean) / jnp.where(scale > 1e-8, scale, 1.0)


def similarity_rows(state: State, data: dict, index: jax.Array, config: Config) -> jax.Array:
  """Rows S[index, :] of the training similarity, computed from what the state holds.

  "mie": cos(e_i, e_j) from the stored unit embeddings; "unimodal": the target t from the
  features. Both cost O(rows * n), never O(n^2) memory.

  Args:
    state: one seed's State (embedding set by stage 1 for "mie").
    data: the training arrays {"image": (n, D), "text": (n, T)} as the trainer normalises them
      (on pixels "image" is not read: `generator_images`).
    index: (m,) row positions.
    config: the Config.

  Returns:
    (m, n) float32.
  """
  if config.similarity == "mie":
    return state.embedding[index] @ state.embedding.T
  if config.similarity == "unimodal":
    images = generator_images(state, data, config)
    mix = unimodal_similarity(images[index], data["text"][index], images, data["text"],
                              image_weight=config.image_weight, rescale=config.cos_rescale)
    return similarity_target(mix, scale=config.target_scale)
  raise UserError(f"unknown similarity {config.similarity!r}; choose 'mie' or 'unimodal'")


def similarity_matrix(state: State, data: dict, config: Config, *, chunk: int = 1024) -> np.ndarray:
  """The whole n x n training similarity, materialised chunk by chunk (for inspection only).

  Args:
    state: one seed's State, e.g. `runstate.seed_slice(result.state.model, 0)`.
    data: the training arrays, e.g. `inputs.training_arrays(ds, result.normalizer, supervised=False)`.
    config: the Config it was trained with.
    chunk: rows per call.

  Returns:
    (n, n) float32 numpy array.
  """
  n = int(state.outputs["image"].shape[0])
  rows = jax.jit(lambda s, d, i: similarity_rows(s, d, i, config))
  return np.concatenate([np.asarray(rows(state, data, jnp.arange(a, min(a + chunk, n))))
                         for a in range(0, n, chunk)])


# --------------------------------------------------------------------------- state and steps


def init(key: jax.Array, config: Config, dims: Dims, num_train: int) -> State:
  keys = toolkit.split_keys(key, MODALITIES + ("generator", "gate", "buffers"))
  tx = toolkit.sgd(toolkit.config_schedule(config, num_train), weight_decay=config.weight_decay,
                   momentum=config.momentum)
  toolkit.require_text_features("UCHM", dims, "for its similarity generator")
  fixed_image, generator_image = None, toolkit.zero_batch(dims, "image")
  if toolkit.pixel_backbone(config, dims, SOURCE_BACKBONE):  # refuses a pixel backbone on features
    # the hashing net fine-tunes a backbone; the generator reads the frozen pretrained one's
    # features of every training image, filled in once before training (`prepare_fixed_features`)
    nets = toolkit.network_states(keys, toolkit.feature_mlps(config, tanh=True, dims=dims, source=SOURCE_BACKBONE),
                                  dims, txs={"image": toolkit.backbone_tx(tx, config, dims, SOURCE_BACKBONE),
                                             "text": tx})
    width = _fixed_width(config, dims)
    fixed_image, generator_image = jnp.zeros((num_train, width)), jnp.zeros((1, width))
  else:
    nets = toolkit.network_states(keys, toolkit.feature_mlps(config, tanh=True), dims, tx)
  generator_net = MIEGenerator(dim=config.mie_dim or config.bits, hidden=config.mie_hidden, tokens=config.mie_tokens,
                               heads=config.mie_heads, rank=config.mie_rank, fusion=config.fusion)
  gen_params = generator_net.init(keys["generator"], generator_image, toolkit.zero_batch(dims, "text"))["params"]
  generator = toolkit.make_state(generator_net, gen_params, optax.adam(config.mie_lr))
  gate_net = BitGate(bits=config.bits)
  zeros = jnp.zeros((1, config.bits))
  gate = toolkit.make_state(gate_net, gate_net.init(keys["gate"], zeros, zeros)["params"], optax.adam(config.gate_lr))
  # tanh-range random buffers: the first epoch's stale rows, as DCMH's random F, G
  outputs = toolkit.random_buffers(keys["buffers"], MODALITIES, num_train=num_train, bits=config.bits,
                                   kind="uniform")
  dim = config.mie_dim or config.bits
  return State(generator=generator, nets=nets, gate=gate, embedding=jnp.zeros((num_train, dim)),
               outputs=outputs, codes=toolkit.sign_of_sum(*outputs.values()), fixed_image=fixed_image)


def _fixed_backbone(config: Config) -> backbones.BackboneFeatures:
  """The backbone whose frozen features feed the generator: the image net's, unstaged."""
  name = SOURCE_BACKBONE if config.backbone == "auto" else config.backbone
  return backbones.BackboneFeatures(name, tuple(config.backbone_widths), toolkit.backbone_dtype(config))


def _fixed_width(config: Config, dims: Dims) -> int:
  """F, the width of the backbone's features (from shapes alone: nothing is computed)."""
  zeros = jax.ShapeDtypeStruct((1,) + tuple(dims.image_shape), jnp.uint8)
  out, _ = jax.eval_shape(_fixed_backbone(config).init_with_output, jax.random.PRNGKey(0), zeros)
  return int(out.shape[-1])


def fixed_features(backbone_params, config: Config, pixels: jax.Array) -> jax.Array:
  """(N, F) float32 features of (N, H, W, 3) pixels under one seed's backbone params
  (`state.nets["image"].params["backbone"]`)."""
  return _fixed_backbone(config).apply({"params": backbone_params}, pixels)


def prepare_fixed_features(model, config: Config, dims: Dims, rows, *, chunk: int = 64):
  """`SPEC.prepare`: on pixels, `fixed_image` := the image backbone's features of every training
  image, computed chunk by chunk before any step, so from the warm-started (pretrained) weights
  the hashing net then fine-tunes; every seed from its own backbone. A no-op on features.

  Args:
    model: the State with a leading seed axis, freshly initialised and warm-started.
    config: the Config.
    dims: the input sizes.
    rows: `rows("image", chunk)` yields the training images in order (`spec.PrepareFn`).
    chunk: images per forward pass (bounds the memory of the pass).
  """
  if model.fixed_image is None or not dims.is_pixels:
    return model
  params = model.nets["image"].params["backbone"]
  forward = jax.jit(jax.vmap(lambda p, x: fixed_features(p, config, x), in_axes=(0, None)))
  parts = [np.asarray(forward(params, jnp.asarray(x))) for x in rows("image", chunk)]
  features = np.concatenate(parts, axis=1)  # (seeds, n, F)
  if features.shape != model.fixed_image.shape:
    raise UserError(f"uchm: the backbone's features of the training images have shape {features.shape[1:]}, the "
                    f"state expects {model.fixed_image.shape[1:]}")
  return model.replace(fixed_image=jnp.asarray(features, model.fixed_image.dtype))


def _mie_step(config: Config):

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    del key
    # on pixels the batch's fixed features, not its pixels
    image = batch["image"] if state.fixed_image is None else generator_images(state, data, config)[batch["index"]]
    mix = unimodal_similarity(image, batch["text"], image, batch["text"],
                              image_weight=config.image_weight, rescale=config.cos_rescale)
    target = similarity_target(mix, scale=config.target_scale)
    gen = state.generator

    def loss_fn(params):
      e = gen.apply_fn({"params": params}, image, batch["text"])
      loss = mie_loss(losses.cosine_similarity(e, e), target, saturation_weight=config.saturation_weight,
                      clear_threshold=config.clear_threshold, margin=config.margin)
      return loss, None

    gen, loss, _ = toolkit.apply_gradients(gen, loss_fn)
    return state.replace(generator=gen), {"loss": loss}

  return step


def embed(state: State, data: dict, config: Config | None = None) -> jax.Array:
  """(n, d) unit-norm MIE embeddings of the training items (`config` needed on pixels only)."""
  gen = state.generator
  e = gen.apply_fn({"params": gen.params}, generator_images(state, data, config), data["text"])
  return e / jnp.maximum(jnp.linalg.norm(e, axis=1, keepdims=True), 1e-8)


def store_embedding(state: State, data: dict, config: Config | None = None) -> State:
  """End of stage 1: keep the embeddings that define S_MIE."""
  return state.replace(embedding=embed(state, data, config))



def _hash_step(config: Config, *, correct: bool = False):
  """One joint step of the hashing nets (and the gate); `correct`: UCHTIM's correction of S."""

  def step(state: State, batch: dict, data: dict, key: jax.Array):
    del key
    index = batch["index"]
    generated = similarity_rows(state, data, index, config)
    nets = state.nets
    buffers = dict(image_buffer=state.outputs["image"], text_buffer=state.outputs["text"])

    def loss_fn(params):
      f = nets["image"].apply_fn({"params": params["image"]}, batch["image"])
      g = nets["text"].apply_fn({"params": params["text"]}, batch["text"])
      similarity, weight = generated, None
      if correct:  # from this step's own codes, as UCHTIM: refreshed every step, never stored
        own = jnp.arange(generated.shape[1])[None, :] == index[:, None]
        similarity, weight = corrected_similarity(code_similarity(f, g, index=index, **buffers), generated,
                                                  threshold=config.correction_threshold, keep=own)
      loss = hashing_loss(f, g, **buffers, similarity=similarity, unified=state.codes[index], index=index,
                          intra_weight=config.intra_weight, quant_weight=config.quant_weight, weight=weight)
      return loss, (f, g, similarity, weight)

    (loss, (f, g, similarity, weight)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        {m: nets[m].params for m in MODALITIES})
    new_nets = {m: nets[m].apply_gradients(grads=grads[m]) for m in MODALITIES}
    outputs = {"image": state.outputs["image"].at[index].set(f), "text": state.outputs["text"].at[index].set(g)}
    metrics = {"loss": loss}
    if correct:
      metrics["corrected_fraction"] = jnp.mean((weight != 1.0) | (similarity != generated))
    gate = state.gate
    if config.bit_selection == "gate":
      f, g = jax.lax.stop_gradient(f), jax.lax.stop_gradient(g)
      block = similarity[:, index]  # (bs, bs) pairs inside the batch (the corrected target if correcting)
      block_weight = None if weight is None else weight[:, index]

      def gate_loss(params):
        u = gated_bits(gate.apply_fn({"params": params}, f, g), f, g)
        err = jnp.square(losses.cosine_similarity(u, u) - block)
        return jnp.mean(err if block_weight is None else block_weight * err), None

      gate, metrics["gate_loss"], _ = toolkit.apply_gradients(gate, gate_loss)
    return state.replace(nets=new_nets, outputs=outputs, gate=gate), metrics

  return step


def unify(state: State, config: Config) -> jax.Array:
  """The unified codes sign(selection(F, G)) of the bit-selection module, (n, K)."""
  f, g = state.outputs["image"], state.outputs["text"]
  if config.bit_selection == "gate":
    return binarize(gated_bits(state.gate.apply_fn({"params": state.gate.params}, f, g), f, g))
  return binarize(select_bits(f, g, per=config.bit_selection))


def stages(config: Config, num_train: int) -> tuple[Stage, ...]:
  del num_train

  def refresh_codes(state: State, data: dict) -> State:
    del data
    return state.replace(codes=unify(state, config))

  plain = config.epochs - (config.correction_epochs if config.correction == "codes" else 0)
  hashing = (Stage("hash", plain, (Phase("hash", _hash_step(config), config.batch_size),),
                   end_of_epoch=refresh_codes),)
  if config.correction == "codes":  # UCHTIM: a short corrected stage after the plain one
    hashing += (Stage("correct", config.correction_epochs,
                      (Phase("hash", _hash_step(config, correct=True), config.batch_size),),
                      end_of_epoch=refresh_codes),)
  if config.similarity == "unimodal":
    return hashing
  generator = Stage("mie", config.mie_epochs, (Phase("mie", _mie_step(config), config.mie_batch_size),),
                    finish=functools.partial(store_embedding, config=config), evaluate=False)
  return (generator,) + hashing


def report(state: State) -> dict:
  """Facts for the results file: how confident each modality is per bit, S_MIE's spread."""
  f, g = np.abs(np.asarray(state.outputs["image"])), np.abs(np.asarray(state.outputs["text"]))
  e = np.asarray(state.embedding)
  out = {"bit_columns_image_more_confident": int(np.sum(f.mean(0) >= g.mean(0))),
         "entries_image_more_confident": float(np.mean(f >= g)),
         "image_text_sign_agreement": float(np.mean(np.sign(np.asarray(state.outputs["image"]))
                                                    == np.sign(np.asarray(state.outputs["text"]))))}
  if np.any(e):
    sample = e[:min(len(e), 2000)] @ e[:min(len(e), 2000)].T
    out["mie_similarity_mean"] = float(sample.mean())
    out["mie_similarity_abs_mean"] = float(np.abs(sample).mean())
  return out


def _image_matrix_need(config: Config, dims: Dims | None) -> str:
  del config
  if dims is not None and dims.is_pixels:
    return ""  # the steps read the batch's pixels and the fixed features in the state
  return "UCHM's unimodal similarity and MIE embeddings use every training image feature"


SPEC = MethodSpec(
    name="uchm", Config=Config, init=init, stages=stages, encode=toolkit.encode, report=report,
    supervised=False, warm_start=functools.partial(toolkit.backbone_warm_start, source=SOURCE_BACKBONE),
    prepare=prepare_fixed_features, needs_image_matrix=_image_matrix_need,
    reference=("R.-C. Tu, X. Jiang, Q. Lin, X. Cai, M. Tian, H. Wang, W. Liu, Unsupervised Cross-Modal "
               "Hashing with Modality-Interaction, IEEE TCSVT 2023 (doi 10.1109/TCSVT.2023.3251395)"),
    fidelity=("reconstruction from the abstract: generator, hashing loss and bit selection designed by jxhash; "
              "UCHTIM's correction (same author) as an option; no labels in training; docs/methods/uchm.md"),
    smoke={"epochs": 2, "mie_epochs": 2, "batch_size": 32, "mie_batch_size": 32, "image_hidden": (32,),
           "text_hidden": (32,), "mie_hidden": 32, "mie_tokens": 2, "mie_heads": 2, "mie_rank": 16})

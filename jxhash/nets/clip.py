"""CLIP ViT image and text towers (Flax linen), the weights importer, and CLIP's image preprocessing.

References:
  Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
    2021 (CLIP; Sec. 2.4 and Appendix: the ViT image encoder with an extra LayerNorm before the
    transformer, the text transformer with masked self-attention whose [EOS] features are
    projected; both projected linearly into the joint embedding space).
  Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021 (ViT).
  openai/CLIP `clip/model.py` (`VisionTransformer`, `build_model`: how the sizes follow from a
    state dict's shapes) and mlfoundations/open_clip `transformer.py`, `model.py`, `transform.py`
    (the same networks under the same parameter names; the eval transform).

Image tower, for an S×S×3 image, patch P, width W, grid G = S / P:
  conv1 P×P stride P, no bias     -> G×G×W, flattened row-major to G² tokens
  [class_embedding; tokens] + positional_embedding   (G²+1)×W
  ln_pre, `vision_layers` residual blocks, ln_post on the class token, @ proj (W×embed_dim).
Text tower, for L ≤ context_length token ids:
  token_embedding + positional_embedding[:L], `text_layers` causal residual blocks, ln_final,
  the features at argmax(token ids) (the <end_of_text> id, 49407, is the largest), @ text_projection.
A residual block: x + attn(ln_1(x)), then x + c_proj(act(c_fc(ln_2(x)))), with multi-head
self-attention (in_proj packs q, k, v; scores scaled by head_dim^-1/2), MLP width 4W, and
act = QuickGELU x·sigmoid(1.702x) (what OpenAI trained) or the exact GELU (`quick_gelu=False`,
open_clip's models without "-quickgelu", e.g. the LAION-2B ViT-B-32 weights). LayerNorms have
epsilon 1e-5 and are computed in float32 with the two-pass variance (torch's).

Because the text mask is causal, the features at position t depend on tokens 0..t only, so token
arrays shorter than the context (trailing padding cut off) give the same embeddings.

Weights: `load_clip` takes OpenAI's released TorchScript files (ViT-B-32.pt ...), open_clip
`state_dict` files (.bin/.pt, torch.save) and .safetensors, read without torch by
`jxhash.nets.torch_io.read_state_dict`, or a dict of arrays. Half-precision weights (OpenAI's
files are float16) are widened to float32.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError

# open_clip's OPENAI_DATASET_MEAN / _STD: per-channel RGB statistics of CLIP's training images.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPSILON = 1e-5
# OpenAI's build_model (and open_clip's default head_width) give every head 64 channels.
HEAD_WIDTH = 64
MLP_RATIO = 4
# Entries of OpenAI's TorchScript state dicts that are not weights (build_model deletes them). The
# text tower's causal mask ("attn_mask"), a buffer in traced models, is dropped as well.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  """Sizes of a CLIP ViT model; the defaults are ViT-B/32 (OpenAI's released model).

  Attributes:
    embed_dim: width of the joint embedding (the projections' output).
    image_size, patch_size: input side S and patch side P (S divisible by P).
    vision_width, vision_layers, vision_heads: the image transformer.
    context_length, vocab_size: text positions and token ids (CLIP's tokenizer: 77, 49408).
    text_width, text_layers, text_heads: the text transformer.
    quick_gelu: QuickGELU x·sigmoid(1.702x) (OpenAI) instead of the exact GELU.
  """
  embed_dim: int = 512
  image_size: int = 224
  patch_size: int = 32
  vision_width: int = 768
  vision_layers: int = 12
  vision_heads: int = 12
  context_length: int = 77
  vocab_size: int = 49408
  text_width: int = 512
  text_layers: int = 12
  text_heads: int = 8
  quick_gelu: bool = True

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.type in ("int", int) and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
        raise UserError(f"ClipConfig.{field.name} must be a positive int, got {value!r}")
    if self.image_size % self.patch_size:
      raise UserError(f"ClipConfig: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
    for tower in ("vision", "text"):
      width, heads = getattr(self, f"{tower}_width"), getattr(self, f"{tower}_heads")
      if width % heads:
        raise UserError(f"ClipConfig: {tower}_width {width} is not a multiple of {tower}_heads {heads}")

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size


VIT_B_32 = ClipConfig()
VIT_B_16 = ClipConfig(patch_size=16)
VIT_L_14 = ClipConfig(embed_dim=768, patch_size=14, vision_width=1024, vision_layers=24, vision_heads=16,
                      text_width=768, text_heads=12)
CONFIGS = {"ViT-B/32": VIT_B_32, "ViT-B/16": VIT_B_16, "ViT-L/14": VIT_L_14}


# ---------------------------------------------------------------------------------------------
# Networks.


def quick_gelu(x: jax.Array) -> jax.Array:
  """x·sigmoid(1.702x), the GELU approximation OpenAI's CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(name: str) -> nn.LayerNorm:
  # Two-pass variance as in torch: E[x²] - E[x]² loses digits on the residual stream's large means.
  return nn.LayerNorm(epsilon=LN_EPSILON, use_fast_variance=False, dtype=jnp.float32,
                      param_dtype=jnp.float32, name=name)


class SelfAttention(nn.Module):
  """Multi-head self-attention as torch's nn.MultiheadAttention: packed q/k/v, then out_proj."""
  width: int
  heads: int
  causal: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, length, _ = x.shape
    head_dim = self.width // self.heads
    qkv = nn.Dense(3 * self.width, dtype=self.dtype, param_dtype=jnp.float32, name="in_proj")(x)
    qkv = qkv.reshape(batch, length, 3, self.heads, head_dim)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q * jnp.asarray(head_dim ** -0.5, q.dtype), k)
    scores = scores.astype(jnp.float32)
    if self.causal:
      # Every query sees itself, so no row is all -inf.
      allowed = jnp.tril(jnp.ones((length, length), bool))
      scores = jnp.where(allowed[None, None], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, length, self.width)
    return nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32, name="out_proj")(out)


class MLP(nn.Module):
  width: int
  quick_gelu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Dense(MLP_RATIO * self.width, dtype=self.dtype, param_dtype=jnp.float32, name="c_fc")(x)
    x = quick_gelu(x) if self.quick_gelu else jax.nn.gelu(x, approximate=False)
    return nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float32, name="c_proj")(x)


class ResidualAttentionBlock(nn.Module):
  """x + attn(ln_1(x)), then x + mlp(ln_2(x)); the residual stream stays float32."""
  width: int
  heads: int
  quick_gelu: bool = True
  causal: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _layer_norm("ln_1")(x).astype(self.dtype)
    x = x + SelfAttention(self.width, self.heads, self.causal, self.dtype, name="attn")(h).astype(x.dtype)
    h = _layer_norm("ln_2")(x).astype(self.dtype)
    return x + MLP(self.width, self.quick_gelu, self.dtype, name="mlp")(h).astype(x.dtype)


def _transformer(x: jax.Array, width: int, layers: int, heads: int, quick: bool, causal: bool, dtype) -> jax.Array:
  for i in range(layers):
    x = ResidualAttentionBlock(width, heads, quick, causal, dtype, name=f"resblocks_{i}")(x)
  return x


class CLIPImageTower(nn.Module):
  """CLIP's ViT image encoder: (N, S, S, 3) preprocessed pixels -> (N, embed_dim) projected features.

  Attributes:
    cfg: the model's sizes; S = cfg.image_size.
    dtype: computation dtype of the dense layers and attention (e.g. jnp.bfloat16 on GPUs);
      parameters, LayerNorms, softmax and the residual stream stay float32, outputs are float32.
  """
  cfg: ClipConfig = VIT_B_32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg = self.cfg
    if pixels.ndim != 4 or pixels.shape[1:] != (cfg.image_size, cfg.image_size, 3):
      raise UserError(f"CLIP image tower: expected pixels of shape (N, {cfg.image_size}, {cfg.image_size}, 3), "
                      f"got {tuple(pixels.shape)}")
    width = cfg.vision_width
    scale = width ** -0.5
    x = nn.Conv(width, (cfg.patch_size, cfg.patch_size), strides=(cfg.patch_size, cfg.patch_size),
                padding="VALID", use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                name="conv1")(pixels.astype(self.dtype))
    x = x.astype(jnp.float32).reshape(x.shape[0], cfg.grid_size ** 2, width)
    cls = self.param("class_embedding", nn.initializers.normal(scale), (width,), jnp.float32)
    pos = self.param("positional_embedding", nn.initializers.normal(scale), (cfg.grid_size ** 2 + 1, width),
                     jnp.float32)
    x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, width)), x], axis=1) + pos[None]
    x = _layer_norm("ln_pre")(x)
    x = _transformer(x, width, cfg.vision_layers, cfg.vision_heads, cfg.quick_gelu, False, self.dtype)
    x = _layer_norm("ln_post")(x[:, 0])
    proj = self.param("proj", nn.initializers.normal(scale), (width, cfg.embed_dim), jnp.float32)
    return x @ proj


class CLIPTextTower(nn.Module):
  """CLIP's text encoder: (N, L) token ids, L ≤ context_length -> (N, embed_dim) projected features.

  Attributes:
    cfg: the model's sizes.
    dtype: as in CLIPImageTower.
  """
  cfg: ClipConfig = VIT_B_32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    cfg = self.cfg
    if tokens.ndim != 2 or tokens.shape[1] > cfg.context_length:
      raise UserError(f"CLIP text tower: expected token ids of shape (N, L) with L <= {cfg.context_length}, "
                      f"got {tuple(tokens.shape)}")
    width = cfg.text_width
    length = tokens.shape[1]
    x = nn.Embed(cfg.vocab_size, width, embedding_init=nn.initializers.normal(0.02), param_dtype=jnp.float32,
                 name="token_embedding")(tokens)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01), (cfg.context_length, width),
                     jnp.float32)
    x = x + pos[None, :length]
    x = _transformer(x, width, cfg.text_layers, cfg.text_heads, cfg.quick_gelu, True, self.dtype)
    x = _layer_norm("ln_final")(x)
    # The <end_of_text> id is the vocabulary's largest, so argmax finds it (the first on ties, as torch).
    eot = jnp.argmax(tokens, axis=-1)
    x = jnp.take_along_axis(x, eot[:, None, None], axis=1)[:, 0]
    proj = self.param("text_projection", nn.initializers.normal(width ** -0.5), (width, cfg.embed_dim),
                      jnp.float32)
    return x @ proj


def init_clip(rng: jax.Array, cfg: ClipConfig = VIT_B_32) -> dict:
  """Randomly initialised parameters {"visual": ..., "text": ..., "logit_scale": ()} (for shapes, tests)."""
  rv, rt = jax.random.split(rng)
  pixels = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
  tokens = jnp.zeros((1, cfg.context_length), jnp.int32)
  return {"visual": CLIPImageTower(cfg).init(rv, pixels)["params"],
          "text": CLIPTextTower(cfg).init(rt, tokens)["params"],
          "logit_scale": jnp.asarray(np.log(1 / 0.07), jnp.float32)}


@functools.lru_cache(maxsize=16)
def _image_fn(cfg: ClipConfig, dtype):
  return jax.jit(lambda params, pixels: CLIPImageTower(cfg, dtype).apply({"params": params}, pixels))


@functools.lru_cache(maxsize=16)
def _text_fn(cfg: ClipConfig, dtype):
  return jax.jit(lambda params, tokens: CLIPTextTower(cfg, dtype).apply({"params": params}, tokens))


def encode_image(params: Mapping, cfg: ClipConfig, pixels, dtype=jnp.float32) -> jax.Array:
  """Projected image embeddings (N, embed_dim), float32, not normalised.

  Args:
    params: load_clip's parameters (its "visual" sub-tree is used).
    cfg: load_clip's config.
    pixels: (N, S, S, 3) float32, preprocessed (`preprocess_image`), S = cfg.image_size.
    dtype: computation dtype (jnp.bfloat16 on GPUs; float32 is exact to open_clip's outputs).
  """
  shape = tuple(np.shape(pixels))
  if len(shape) != 4 or shape[1:] != (cfg.image_size, cfg.image_size, 3):
    raise UserError(f"encode_image: expected preprocessed pixels of shape (N, {cfg.image_size}, "
                    f"{cfg.image_size}, 3), got {shape}")
  return _image_fn(cfg, jnp.dtype(dtype))(params["visual"], jnp.asarray(pixels, jnp.float32))


def encode_text(params: Mapping, cfg: ClipConfig, tokens, dtype=jnp.float32) -> jax.Array:
  """Projected text embeddings (N, embed_dim), float32, not normalised.

  Args:
    params, cfg: from load_clip (its "text" sub-tree is used).
    tokens: (N, L) int token ids from `tokenize`, L ≤ cfg.context_length (shorter arrays with
      the trailing padding cut off give the same result, the mask being causal).
  """
  tokens = np.asarray(tokens)
  if tokens.ndim != 2 or tokens.shape[1] > cfg.context_length or not np.issubdtype(tokens.dtype, np.integer):
    raise UserError(f"encode_text: expected integer token ids of shape (N, L), L <= {cfg.context_length}, "
                    f"got {tokens.dtype} {tokens.shape}")
  if tokens.size and (tokens.min() < 0 or tokens.max() >= cfg.vocab_size):
    raise UserError(f"encode_text: token ids must lie in [0, {cfg.vocab_size}), found "
                    f"{tokens.min() if tokens.min() < 0 else tokens.max()}")
  return _text_fn(cfg, jnp.dtype(dtype))(params["text"], jnp.asarray(tokens, jnp.int32))


def tokenize(texts, context_length: int = 77, vocab=None) -> np.ndarray:
  """CLIP's tokenizer: (N, context_length) int32 ids (see jxhash.nets.clip_tokenizer)."""
  from jxhash.nets.clip_tokenizer import tokenize as _tokenize
  return _tokenize(texts, context_length, vocab)


def preprocess_image(img, image_size: int = 224, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
  """CLIP's eval transform (open_clip `image_transform(size, is_train=False)`): (S, S, 3) float32.

  In open_clip's order: the shorter side resized to S with PIL's bicubic filter (which always
  antialiases; the longer side becomes int(S·long/short), and an image already of that size is not
  resampled), a centre crop S×S (offset round((side - S)/2), Python's half-to-even rounding, as
  torchvision), conversion to RGB (after the resize, so palette images resize by nearest
  neighbour and RGBA ones with premultiplied alpha, as PIL does), /255, then (x - mean)/std per
  channel, all in float32.
  """
  from PIL import Image
  if not isinstance(img, Image.Image):
    raise UserError(f"preprocess_image: expected a PIL image, got {type(img).__name__}")
  width, height = img.size
  if width < 1 or height < 1:
    raise UserError(f"preprocess_image: empty image of size {width}x{height}")
  if width <= height:
    size = (image_size, int(image_size * height / width))
  else:
    size = (int(image_size * width / height), image_size)
  if size != (width, height):
    img = img.resize(size, Image.Resampling.BICUBIC)
  top = int(round((size[1] - image_size) / 2.0))
  left = int(round((size[0] - image_size) / 2.0))
  img = img.crop((left, top, left + image_size, top + image_size)).convert("RGB")
  x = np.asarray(img, np.float32) / np.float32(255)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


# ---------------------------------------------------------------------------------------------
# Importer.


def _linear(w: np.ndarray) -> np.ndarray:
  return w.T  # torch Linear (out, in) -> Flax Dense kernel (in, out)


def _block_keys(prefix: str, flax_path: tuple, width: int) -> list:
  hidden = MLP_RATIO * width
  keys = []
  for ln in ("ln_1", "ln_2"):
    keys += [(f"{prefix}{ln}.weight", flax_path + (ln, "scale"), (width,), None),
             (f"{prefix}{ln}.bias", flax_path + (ln, "bias"), (width,), None)]
  keys += [(f"{prefix}attn.in_proj_weight", flax_path + ("attn", "in_proj", "kernel"), (3 * width, width), _linear),
           (f"{prefix}attn.in_proj_bias", flax_path + ("attn", "in_proj", "bias"), (3 * width,), None),
           (f"{prefix}attn.out_proj.weight", flax_path + ("attn", "out_proj", "kernel"), (width, width), _linear),
           (f"{prefix}attn.out_proj.bias", flax_path + ("attn", "out_proj", "bias"), (width,), None),
           (f"{prefix}mlp.c_fc.weight", flax_path + ("mlp", "c_fc", "kernel"), (hidden, width), _linear),
           (f"{prefix}mlp.c_fc.bias", flax_path + ("mlp", "c_fc", "bias"), (hidden,), None),
           (f"{prefix}mlp.c_proj.weight", flax_path + ("mlp", "c_proj", "kernel"), (width, hidden), _linear),
           (f"{prefix}mlp.c_proj.bias", flax_path + ("mlp", "c_proj", "bias"), (width,), None)]
  return keys


def _ln_keys(key: str, flax_path: tuple, width: int) -> list:
  return [(f"{key}.weight", flax_path + ("scale",), (width,), None),
          (f"{key}.bias", flax_path + ("bias",), (width,), None)]


def weight_table(cfg: ClipConfig) -> list[tuple[str, tuple, tuple, Any]]:
  """(state-dict key, Flax parameter path, torch shape, transform) for every weight of `cfg`."""
  vw, tw, p = cfg.vision_width, cfg.text_width, cfg.patch_size
  v = ("visual",)
  table = [("visual.class_embedding", v + ("class_embedding",), (vw,), None),
           ("visual.positional_embedding", v + ("positional_embedding",), (cfg.grid_size ** 2 + 1, vw), None),
           # torch OIHW -> Flax HWIO
           ("visual.conv1.weight", v + ("conv1", "kernel"), (vw, 3, p, p), lambda w: w.transpose(2, 3, 1, 0))]
  table += _ln_keys("visual.ln_pre", v + ("ln_pre",), vw)
  for i in range(cfg.vision_layers):
    table += _block_keys(f"visual.transformer.resblocks.{i}.", v + (f"resblocks_{i}",), vw)
  table += _ln_keys("visual.ln_post", v + ("ln_post",), vw)
  table += [("visual.proj", v + ("proj",), (vw, cfg.embed_dim), None)]
  t = ("text",)
  table += [("token_embedding.weight", t + ("token_embedding", "embedding"), (cfg.vocab_size, tw), None),
            ("positional_embedding", t + ("positional_embedding",), (cfg.context_length, tw), None)]
  for i in range(cfg.text_layers):
    table += _block_keys(f"transformer.resblocks.{i}.", t + (f"resblocks_{i}",), tw)
  table += _ln_keys("ln_final", t + ("ln_final",), tw)
  table += [("text_projection", t + ("text_projection",), (tw, cfg.embed_dim), None),
            ("logit_scale", ("logit_scale",), (), None)]
  return table


def _count_blocks(sd: Mapping, prefix: str) -> int:
  pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
  found = {int(m.group(1)) for k in sd for m in [pattern.match(k)] if m}
  return max(found) + 1 if found else 0


def config_from_state_dict(sd: Mapping[str, Any], quick_gelu: bool = True) -> ClipConfig:
  """The ClipConfig a CLIP ViT state dict was built with, from its shapes (OpenAI's build_model).

  Heads are width / 64 (OpenAI's and open_clip's rule; shapes cannot tell). The activation cannot be
  read from the weights either: `quick_gelu` says it.
  """
  if "visual.proj" not in sd and any(k.startswith("visual.layer1.") for k in sd):
    raise UserError("CLIP state dict holds a ResNet image tower (visual.layer1...): only ViT models are supported")
  needed = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
            "positional_embedding", "ln_final.weight", "text_projection")
  for key in needed:
    if key not in sd:
      raise UserError(f"CLIP state dict has no key {key!r}: not an OpenAI/open_clip CLIP ViT state dict")
  shape = lambda k: tuple(np.shape(sd[k]))  # noqa: E731
  conv = shape("visual.conv1.weight")
  if len(conv) != 4 or conv[2] != conv[3]:
    raise UserError(f"CLIP state dict: visual.conv1.weight has shape {conv}, expected (width, 3, P, P)")
  vision_width, patch = conv[0], conv[3]
  grid = round((shape("visual.positional_embedding")[0] - 1) ** 0.5)
  text_width = shape("ln_final.weight")[0]
  return ClipConfig(embed_dim=shape("text_projection")[-1], image_size=patch * grid, patch_size=patch,
                    vision_width=vision_width, vision_layers=_count_blocks(sd, "visual.transformer.resblocks."),
                    vision_heads=max(1, vision_width // HEAD_WIDTH), context_length=shape("positional_embedding")[0],
                    vocab_size=shape("token_embedding.weight")[0], text_width=text_width,
                    text_layers=_count_blocks(sd, "transformer.resblocks."),
                    text_heads=max(1, text_width // HEAD_WIDTH), quick_gelu=quick_gelu)


def _as_numpy(value) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def read_clip_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> tuple[dict[str, np.ndarray], str]:
  """The state dict of `source` (a file or a dict) as numpy arrays, and a name for messages.

  Drops OpenAI's non-weight entries and the causal-mask buffer, and the "module." prefix of
  checkpoints saved from DistributedDataParallel.
  """
  if isinstance(source, Mapping):
    where, raw = "CLIP state dict", dict(source)
  else:
    where = os.fspath(source)
    if not os.path.isfile(where):
      raise UserError(f"CLIP weights file {where} does not exist")
    try:
      from jxhash.nets.torch_io import read_state_dict
    except ImportError:
      raise UserError(f"reading {where} needs jxhash.nets.torch_io, which this installation lacks; "
                      f"pass a dict of arrays instead") from None
    raw = read_state_dict(where)
  if raw and all(isinstance(k, str) and k.startswith("module.") for k in raw):
    raw = {k[len("module."):]: v for k, v in raw.items()}
  sd = {}
  for key, value in raw.items():
    if not isinstance(key, str):
      raise UserError(f"{where}: state dict key {key!r} is not a string")
    if key in NON_WEIGHT_KEYS or key == "attn_mask" or key.endswith(".attn_mask"):
      continue
    sd[key] = _as_numpy(value)
  return sd, where


def load_clip(source: str | os.PathLike | Mapping[str, Any], cfg: ClipConfig | None = None,
              quick_gelu: bool = True) -> tuple[dict, ClipConfig]:
  """CLIP ViT weights -> (params, cfg) for encode_image / encode_text.

  Args:
    source: OpenAI's TorchScript file (ViT-B-32.pt), an open_clip state dict (torch.save'd .bin/.pt or
      .safetensors), or a dict of arrays under the same names.
    cfg: the expected sizes; None infers them from the shapes (config_from_state_dict), with heads
      = width / 64.
    quick_gelu: the activation when cfg is None: True for OpenAI's weights and open_clip's
      "-quickgelu" models, False for e.g. open_clip's ViT-B-32 laion2b weights.

  Returns:
    params {"visual": CLIPImageTower params, "text": CLIPTextTower params, "logit_scale": ()} as
    float32 numpy arrays, and the config.

  Raises:
    UserError naming the first missing or unexpected key, or mismatched shape.
  """
  sd, where = read_clip_state_dict(source)
  if cfg is None:
    try:
      cfg = config_from_state_dict(sd, quick_gelu)
    except UserError as e:
      raise UserError(f"{where}: {e}") from None
  table = weight_table(cfg)
  params: dict = {}
  for key, path, shape, transform in table:
    if key not in sd:
      raise UserError(f"{where}: missing key {key!r} (expected for {cfg})")
    value = sd[key]
    if tuple(value.shape) != shape:
      raise UserError(f"{where}: {key} has shape {tuple(value.shape)}, expected {shape} for {cfg}")
    # ml_dtypes' bfloat16 (how torch_io returns bfloat16 tensors) is not an np.floating subtype.
    if not (np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16"):
      raise UserError(f"{where}: {key} has dtype {value.dtype}, expected floating point")
    value = value.astype(np.float32)
    node = params
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = np.require(transform(value) if transform else value, requirements="C")
  expected = {key for key, *_ in table}
  for key in sd:
    if key not in expected:
      raise UserError(f"{where}: unexpected key {key!r} (not a weight of {cfg})")
  return params, cfg

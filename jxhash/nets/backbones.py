"""Image backbones on pixels, one factory for every method: CNN-F, AlexNet, ResNet-18/34, CLIP ViT-B/32.

A method that trains on pixels puts `BackboneFeatures` in front of its own hash layers (as the
`trunk` of its feature MLP, masked MLP or layer-wise encoder): the backbone turns a uint8 pixel
batch (N, H, W, 3) into feature vectors, the method's head turns those into codes, and the
whole network is fine-tuned end to end. Which backbone each method's sources used is written in
its docs/methods page; `jxhash.methods.toolkit.BackboneConfig` holds the config fields.

Every backbone takes raw 0..255 pixels and does its own input preprocessing inside the network,
so the streamed pixel batches go to the device as uint8 and the checkpoint carries the
preprocessing:
  cnn-f        CNN-F (`CNNF(features_only=True, subtract_mean=True)`): minus its mean image
               (imagenet-vgg-f.mat's, frozen), 224×224 inputs; fc7 features (4096).
  alexnet      torchvision's AlexNet: /255, ImageNet mean/std; fc7 features after ReLU (4096).
  resnet18/34  torchvision's ResNet: /255, ImageNet mean/std; the global-average-pooled stage
               outputs (the last, 512, or all four with `stages=True`).
  clip-vit-b32 CLIP's ViT image tower: /255, CLIP's mean/std, resized (bicubic) to the tower's
               input size when it differs; the projected embedding (512).

Constants in params. BatchNorm running statistics (ResNet) and CNN-F's mean image live in the
params tree, under keys named "batch_stats" and "mean_image" (`FIXED`), and never train
(`jxhash.methods.toolkit.backbone_tx` freezes them): BatchNorm runs in inference mode, as an
affine map from the pretrained statistics ("frozen BatchNorm", the usual way to fine-tune a
pretrained ResNet with small batches). So every method keeps calling its image net as
`apply_fn({"params": params}, x)`, and no method threads mutable statistics through its steps.
Dropout (AlexNet's fc6/fc7) is off: the methods' steps draw no dropout keys.

Parameter layout: the backbone's own variables ({"params": ...} plus "batch_stats" for ResNet)
are one parameter named "net" of the `BackboneFeatures` module (conventionally named
"backbone"), so `load_backbone` can hand a weights file's variables over whole.

Text. `TextBackboneFeatures` is the same for token ids: CLIP's text tower (`TEXT_BACKBONES`)
turns (N, L) int32 ids (`jxhash.nets.clip_tokenizer`, L <= 77) into its projected embedding
(512), in front of a method's text hash layers; `load_text_backbone` reads it from the same CLIP
file as the image tower. Its `text_widths` are (width, layers, heads) of the text transformer,
which then projects to `width` features (vocabulary and context stay CLIP's, 49408 and 77).

Widths. `widths=()` gives the published network. Tests and quick runs pass smaller ones:
  cnn-f, alexnet: (conv1, conv2, conv3, conv4, conv5, fc) channel widths;
  resnet18/34: the four stage widths (the stem has the first);
  clip-vit-b32: (width, layers, heads, patch) of the ViT, which then takes the dataset's image
    size directly and projects to `width` features.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jxhash.errors import UserError
from jxhash.nets.alexnet import AlexNet, load_alexnet
from jxhash.nets.clip import CLIP_MEAN, CLIP_STD, VIT_B_32, CLIPImageTower, CLIPTextTower, ClipConfig
from jxhash.nets.cnnf import CNNF
from jxhash.nets.resnet import ResNet, load_resnet
from jxhash.nets.transforms import IMAGENET_MEAN, IMAGENET_STD

BACKBONES = ("cnn-f", "alexnet", "resnet18", "resnet34", "clip-vit-b32")
# keys of params that are constants, never trained
FIXED = ("batch_stats", "mean_image")
ALEXNET_MIN_SIZE = 63
# how many widths each backbone takes, and what they are (for the error message)
_WIDTHS = {"cnn-f": (6, "conv1..conv5 and fc widths"), "alexnet": (6, "conv1..conv5 and fc widths"),
           "resnet18": (4, "the four stage widths"), "resnet34": (4, "the four stage widths"),
           "clip-vit-b32": (4, "ViT width, layers, heads and patch size")}


TEXT_BACKBONES = ("clip-vit-b32",)
_TEXT_WIDTHS = (3, "text transformer width, layers and heads")


def check_text_backbone(name: str, widths: Sequence[int] = ()) -> None:
  """A UserError (one line) for an unknown text backbone or widths of the wrong count."""
  if name not in TEXT_BACKBONES:
    raise UserError(f"text_backbone={name!r}: choose one of {', '.join(TEXT_BACKBONES)}")
  count, what = _TEXT_WIDTHS
  if widths and (len(widths) != count or any(int(w) < 1 for w in widths)):
    raise UserError(f"text_backbone_widths={tuple(widths)!r}: {name} takes {count} positive widths ({what}), "
                    "or none for the published network")
  if widths and int(widths[0]) % int(widths[2]):
    raise UserError(f"text_backbone_widths={tuple(widths)!r}: the width {widths[0]} is not a multiple of the "
                    f"{widths[2]} heads")


def clip_text_config(widths: Sequence[int]) -> ClipConfig:
  """ViT-B/32's text tower, or a small one (width, layers, heads) projecting to `width` features."""
  if not widths:
    return VIT_B_32
  width, layers, heads = (int(w) for w in widths)
  return ClipConfig(embed_dim=width, text_width=width, text_layers=layers, text_heads=heads)


def check_backbone(name: str, widths: Sequence[int] = ()) -> None:
  """A UserError (one line) for an unknown backbone or widths of the wrong count."""
  if name not in BACKBONES:
    raise UserError(f"backbone={name!r}: choose one of {', '.join(BACKBONES)}")
  count, what = _WIDTHS[name]
  if widths and (len(widths) != count or any(int(w) < 1 for w in widths)):
    raise UserError(f"backbone_widths={tuple(widths)!r}: {name} takes {count} positive widths ({what}), "
                    "or none for the published network")


def clip_config(widths: Sequence[int], image_size: int) -> ClipConfig:
  """ViT-B/32's sizes, or a small ViT (width, layers, heads, patch) on `image_size` inputs."""
  if not widths:
    return VIT_B_32
  width, layers, heads, patch = (int(w) for w in widths)
  return ClipConfig(embed_dim=width, image_size=image_size, patch_size=patch, vision_width=width,
                    vision_layers=layers, vision_heads=heads)


def network(name: str, widths: Sequence[int] = (), dtype=jnp.float32, image_size: int = 224) -> nn.Module:
  """The backbone's Flax module, in features mode (see the module docstring for `widths`)."""
  check_backbone(name, widths)
  if name == "cnn-f":
    extra = dict(channels=tuple(int(w) for w in widths[:5]), fc_width=int(widths[5])) if widths else {}
    return CNNF(bits=1, dtype=dtype, features_only=True, subtract_mean=True, **extra)
  if name == "alexnet":
    extra = dict(channels=tuple(int(w) for w in widths[:5]), fc_width=int(widths[5])) if widths else {}
    return AlexNet(features_only=True, dtype=dtype, **extra)
  if name in ("resnet18", "resnet34"):
    extra = dict(widths=tuple(int(w) for w in widths)) if widths else {}
    return ResNet(depth=int(name[len("resnet"):]), features_only=True, dtype=dtype, **extra)
  return CLIPImageTower(clip_config(widths, image_size), dtype=dtype)


def _standardise(x: jax.Array, mean, std) -> jax.Array:
  x = jnp.asarray(x, jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32).reshape(1, 1, 1, 3)) / jnp.asarray(std, jnp.float32).reshape(1, 1, 1, 3)


class BackboneFeatures(nn.Module):
  """A pretrained image network on raw pixels: (N, H, W, 3) 0..255 -> (N, F) features.

  Attributes:
    kind: one of `BACKBONES`.
    widths: () for the published network, else smaller widths (module docstring).
    dtype: computation dtype (jnp.bfloat16 on GPUs/TPUs); params stay float32, outputs float32.
    stages: return a list of feature vectors, one per stage (ResNet: its four pooled stage
      outputs; the other backbones: their one feature vector), for layer-wise hash heads.
  """

  kind: str
  widths: Sequence[int] = ()
  dtype: Any = jnp.float32
  stages: bool = False

  @nn.compact
  def __call__(self, x: jax.Array):
    if x.ndim != 4 or x.shape[-1] != 3:
      raise UserError(f"backbone {self.kind}: expected (N, H, W, 3) pixels, got shape {tuple(x.shape)}")
    if self.kind == "alexnet" and min(x.shape[1:3]) < ALEXNET_MIN_SIZE:
      # below 63 pixels pool5's map is empty and torch's adaptive pooling has no bins
      raise UserError(f"backbone alexnet needs images of at least {ALEXNET_MIN_SIZE}×{ALEXNET_MIN_SIZE} pixels, "
                      f"got {x.shape[1]}×{x.shape[2]}")
    net = network(self.kind, tuple(self.widths), self.dtype, image_size=int(x.shape[1]))
    if self.kind == "cnn-f":
      h = x  # CNN-F subtracts its own mean image from raw pixels
    elif self.kind == "clip-vit-b32":
      h = _standardise(x, CLIP_MEAN, CLIP_STD)
      size = net.cfg.image_size
      if h.shape[1:3] != (size, size):
        h = jax.image.resize(h, (h.shape[0], size, size, 3), "cubic")
    else:
      h = _standardise(x, IMAGENET_MEAN, IMAGENET_STD)
    resnet = self.kind.startswith("resnet")
    shape = (1,) + tuple(h.shape[1:])
    variables = self.param("net", lambda key: _initial(net, resnet, key, shape))
    if resnet:
      out, stages = net.apply(variables, h, train=False, return_stages=True)
      return list(stages) if self.stages else out
    out = net.apply(variables, h).astype(jnp.float32)
    return [out] if self.stages else out


class TextBackboneFeatures(nn.Module):
  """A pretrained text network on token ids: (N, L) int32 -> (N, F) features (CLIP's projected
  text embedding; F = 512, or the width of `widths`).

  Attributes:
    kind: one of `TEXT_BACKBONES`.
    widths: () for the published tower, else (width, layers, heads) (module docstring).
    dtype: computation dtype; params, LayerNorms and outputs stay float32.
    stages: return [features] (one "stage"), for layer-wise hash heads.
  """

  kind: str = "clip-vit-b32"
  widths: Sequence[int] = ()
  dtype: Any = jnp.float32
  stages: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array):
    cfg = clip_text_config(tuple(self.widths))
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer) or tokens.shape[1] > cfg.context_length:
      raise UserError(f"text backbone {self.kind}: expected (N, L) integer token ids, L <= {cfg.context_length}, "
                      f"got {tokens.dtype} {tuple(tokens.shape)}")
    net = CLIPTextTower(cfg, dtype=self.dtype)
    variables = self.param("net", lambda key: net.init(key, jnp.zeros((1, tokens.shape[1]), jnp.int32)))
    out = net.apply(variables, tokens.astype(jnp.int32)).astype(jnp.float32)
    return [out] if self.stages else out


def _initial(net: nn.Module, resnet: bool, key: jax.Array, shape: tuple) -> dict:
  """Random variables of `net`. A ResNet's blocks start as identities (the last BatchNorm scale of
  each residual branch zero: torchvision's `zero_init_residual`, Goyal et al., arXiv:1706.02677):
  its BatchNorm is frozen here, so from a random start nothing else would keep the activations
  from growing block by block. Loaded weights replace all of it (`load_backbone`)."""
  variables = net.init(key, jnp.zeros(shape, jnp.float32))
  if not resnet:
    return variables

  def zero_last_scale(path, value):
    names = [getattr(k, "key", None) for k in path]
    return jnp.zeros_like(value) if names[-2:] == ["bn2", "scale"] else value

  return dict(variables, params=jax.tree_util.tree_map_with_path(zero_last_scale, variables["params"]))


def is_fixed(path) -> bool:
  """Whether a params path (jax key path) leads to a constant (`FIXED`)."""
  return any(getattr(k, "key", None) in FIXED for k in path)


def in_backbone(path) -> bool:
  """Whether a params path lies inside a `BackboneFeatures` (a module named "backbone")."""
  return any(getattr(k, "key", None) == "backbone" for k in path)


def load_backbone(name: str, path: str, *, widths: Sequence[int] = (), image_size: int = 224) -> dict:
  """A weights file -> the "net" variables of `BackboneFeatures(name, widths)` (float32 numpy).

  Args:
    name: one of `BACKBONES`.
    path: cnn-f: MatConvNet's imagenet-vgg-f.mat; alexnet: torchvision's alexnet-owt-*.pth;
      resnet18/34: torchvision's resnet18-*.pth / resnet34-*.pth; clip-vit-b32: OpenAI's
      ViT-B-32.pt or an open_clip state dict (any file the importers read).
    widths, image_size: the network's (its CNN-F mean image is resized to image_size).

  Returns:
    {"params": ...} (and "batch_stats" for ResNet) without the classifier (fc8 / fc).
  """
  check_backbone(name, widths)
  if name == "cnn-f":
    from jxhash.nets.vgg_f import load_vgg_f, mean_image_for
    extra = dict(channels=tuple(int(w) for w in widths[:5]), fc_width=int(widths[5])) if widths else {}
    params, mean = load_vgg_f(path, **extra)
    params = {k: v for k, v in params.items() if k != "fc8"}
    return {"params": {**params, "mean_image": mean_image_for(mean, image_size, image_size)}}
  if name == "alexnet":
    return {"params": {k: v for k, v in load_alexnet(path).items() if k != "fc8"}}
  if name in ("resnet18", "resnet34"):
    variables = load_resnet(path, int(name[len("resnet"):]))
    return {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
            "batch_stats": variables["batch_stats"]}
  return {"params": _clip_tower(path, clip_config(widths, image_size), "visual")}


def load_text_backbone(name: str, path: str, *, widths: Sequence[int] = ()) -> dict:
  """A CLIP weights file -> the "net" variables of `TextBackboneFeatures(name, widths)` (float32
  numpy): {"params": the text tower's}. The image tower in the file is not read."""
  check_text_backbone(name, widths)
  return {"params": _clip_tower(path, clip_text_config(widths), "text")}


# the state-dict keys of CLIP's text tower start with one of these (OpenAI's names, open_clip's too)
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def _clip_tower(path: str, cfg: ClipConfig, tower: str) -> dict:
  """One tower's params ("visual" or "text") from a CLIP weights file; the other tower is not
  read (a small test tower's file need not carry a full-size other one). One-line errors as
  `load_clip`'s."""
  from jxhash.nets.clip import read_clip_state_dict, weight_table
  state, where = read_clip_state_dict(path)
  table = [row for row in weight_table(cfg) if row[1][0] == tower]
  what = "image tower" if tower == "visual" else "text tower"
  field = "backbone_widths" if tower == "visual" else "text_backbone_widths"
  params: dict = {}
  for key, at, shape, transform in table:
    if key not in state:
      raise UserError(f"{where}: missing key {key!r} (expected for the {what} of {cfg})")
    value = np.asarray(state[key]).astype(np.float32)
    if tuple(value.shape) != shape:
      raise UserError(f"{where}: {key} has shape {tuple(value.shape)}, the backbone's is {shape} "
                      f"({field} must be the published network's to load its weights)")
    node = params
    for name in at[1:-1]:
      node = node.setdefault(name, {})
    node[at[-1]] = np.ascontiguousarray(transform(value) if transform else value)
  expected = {row[0] for row in table}
  mine = (lambda k: k.startswith("visual.")) if tower == "visual" else (lambda k: k.startswith(_TEXT_KEYS))
  for key in state:
    if mine(key) and key not in expected:
      raise UserError(f"{where}: unexpected key {key!r} (not a weight of the {what} of {cfg})")
  return params


def place(current, loaded, where: str):
  """`loaded` in the structure of `current` (a "net" subtree, maybe with a leading seed axis).

  Raises a UserError naming the first entry that is missing, unexpected or of another shape.
  """
  flat_now = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(current)}
  flat_new = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  for key in flat_now:
    if key not in flat_new:
      raise UserError(f"{where}: the weights have no entry {key} that the backbone needs")
  for key in flat_new:
    if key not in flat_now:
      raise UserError(f"{where}: the weights have an entry {key} that the backbone lacks")
  out = {}
  for key, now in flat_now.items():
    new = np.asarray(flat_new[key], np.float32)
    lead = now.shape[:now.ndim - new.ndim]
    if now.shape[len(lead):] != new.shape:
      raise UserError(f"{where}: {key} has shape {new.shape}, the backbone's is {now.shape[len(lead):]} "
                      "(backbone_widths must be the published network's to load its weights)")
    out[key] = jnp.broadcast_to(jnp.asarray(new, now.dtype), now.shape)
  leaves = [out[jax.tree_util.keystr(p)] for p, _ in jax.tree_util.tree_leaves_with_path(current)]
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(current), leaves)


__all__ = ["BACKBONES", "BackboneFeatures", "FIXED", "TEXT_BACKBONES", "TextBackboneFeatures", "check_backbone",
           "check_text_backbone", "clip_config", "clip_text_config", "in_backbone", "is_fixed", "load_backbone",
           "load_text_backbone", "network", "place"]

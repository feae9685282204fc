"""A small randomly initialised open_clip CLIP: the reference the ported CLIP towers, the extract
command and the methods' CLIP backbones are checked against (torch and open_clip come from the
test extra; callers skip without them)."""

from __future__ import annotations


def tiny_clip(*, width: int, image_size: int, patch_size: int, vision_layers: int, text_layers: int,
              heads: int = 2, embed_dim: int = 32, quick_gelu: bool = True, seed: int | None = 0):
  """An open_clip `CLIP` in eval mode with two towers of `width` and `heads` heads, 77-token
  context and CLIP's 49,408-token vocabulary; `seed` None draws from torch's current RNG state."""
  import open_clip
  import torch
  if seed is not None:
    torch.manual_seed(seed)
  vision = open_clip.model.CLIPVisionCfg(layers=vision_layers, width=width, head_width=width // heads,
                                         patch_size=patch_size, image_size=image_size)
  text = open_clip.model.CLIPTextCfg(context_length=77, vocab_size=49408, width=width, heads=heads, layers=text_layers)
  return open_clip.model.CLIP(embed_dim=embed_dim, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).eval()


def save(model, path):
  """`path`, holding `model`'s state_dict as `torch.save` writes it (the format users download)."""
  import torch
  torch.save(model.state_dict(), path)
  return path

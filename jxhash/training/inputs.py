"""Input normalisation: statistics fitted on the training split, applied to any raw input.

The statistics travel with checkpoints, so a restored encoder takes raw features.
"""

from __future__ import annotations

import numpy as np

from jxhash.data import CrossModalData
from jxhash.data.core import read_rows
from jxhash.errors import UserError

NORMALIZE_MODES = ("standardize", "center", "none")


def fit_normalizer(data: CrossModalData, mode: str) -> dict:
  """Per-modality (mean, scale) from the training split; identity for pixels, token ids or mode "none".

  Returns:
    {"image": {"mean": (D,), "scale": (D,)}, "text": {...}} float32 numpy arrays.
  """
  if mode not in NORMALIZE_MODES:
    raise UserError(f"normalize must be 'standardize', 'center' or 'none', got {mode!r}")
  stats = {}
  for m in ("image", "text"):
    source = getattr(data, m)
    width = tuple(source.shape[1:])
    if mode == "none" or len(width) != 1 or (m == "text" and data.text_tokens):
      mean, scale = np.zeros(width, np.float32), np.ones(width, np.float32)
    else:
      x = read_rows(source, data.train).astype(np.float64)
      mean = x.mean(0)
      # constant columns (a tag never used in training) keep scale 1 instead of dividing by 0
      scale = x.std(0) if mode == "standardize" else np.ones(width)
      scale = np.where(scale > 1e-8, scale, 1.0)
    stats[m] = {"mean": np.asarray(mean, np.float32), "scale": np.asarray(scale, np.float32)}
  return stats


def normalize(stats: dict, modality: str, x, *, tokens: bool = False) -> np.ndarray:
  """Apply `fit_normalizer` statistics to raw inputs (N, D) of one modality; pixels pass through,
  and so do token ids (`tokens`: int32, checked for their length), which are ids, not values."""
  x = np.asarray(x)
  if tokens:
    width = stats[modality]["mean"].shape
    if x.ndim != 2 or x.dtype.kind not in "iu" or x.shape[1:] != width:
      raise UserError(f"{modality} inputs must be integer token ids of shape (N, {width[0]}), got {x.dtype} "
                      f"{x.shape}")
    return x.astype(np.int32, copy=False)
  if x.ndim != 2:
    return x
  s = stats[modality]
  if x.shape[1] != s["mean"].shape[0]:
    raise UserError(f"{modality} inputs have width {x.shape[1]}, the model expects {s['mean'].shape[0]}")
  return ((x - s["mean"]) / s["scale"]).astype(np.float32)


def training_arrays(data: CrossModalData, stats: dict, *, supervised: bool, image: bool = True) -> dict:
  """The training split as the dict handed to every step: "image", "text" and, for supervised
  methods only, "labels" (float32). image=False leaves the image out (streamed batch by batch)."""
  arrays = {m: normalize(stats, m, getattr(data, m)[data.train], tokens=tokens(data, m))
            for m in (("image", "text") if image else ("text",))}
  if supervised:
    arrays["labels"] = data.labels[data.train].astype(np.float32)
  return arrays


def tokens(data, modality: str) -> bool:
  """Whether `modality`'s inputs in `data` (a CrossModalData or `Dims`) are token ids."""
  return modality == "text" and bool(getattr(data, "text_tokens", False))

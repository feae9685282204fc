"""Cross-modal retrieval evaluation of a trained model: encode, rank, score.

Directions: "i2t" ranks the text database for image queries, "t2i" the image database for text
queries. On the test protocol the queries are the `query` split and the database the
`retrieval` split; for model selection (`queries="val"`) the queries are the val items and the
database is the retrieval set without them, so a val item is never ranked against itself.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import metrics
from jxhash.codes import binarize
from jxhash.data import CrossModalData
from jxhash.data.core import take_rows
from jxhash.training.inputs import normalize, tokens
from jxhash.spec import MethodSpec

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


def encode(spec: MethodSpec, model, modality: str, x, *, chunk: int | None = None,
           transform: Callable | None = None, on_device: bool = False):
  """Codes (N, K) int8 in {-1, +1} of inputs `x`, for one seed's model.

  A numpy array, or with `on_device` a device array that never visits the host (for the
  metrics' jax backend).

  Args:
    x: (N, ...) already-normalised inputs, or a row source / raw array with `transform`.
    chunk: rows per encoder call (default 4096, 256 for images); the last chunk is padded so
      the encoder compiles once.
    transform: applied to each chunk of rows read from `x` (e.g. the input normalisation).
  """
  if isinstance(x, np.ndarray) or not hasattr(x, "shape"):
    x = np.asarray(x)
  chunk = chunk or (256 if len(x.shape) == 4 else 4096)
  fn = _encoder(spec, modality)
  out = []
  for start in range(0, x.shape[0], chunk):
    part = np.asarray(x[start:start + chunk])
    if transform is not None:
      part = transform(part)
    pad = chunk - part.shape[0] if x.shape[0] > chunk else 0
    if pad:
      part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
    codes = fn(model, part) if on_device else np.asarray(fn(model, part))
    out.append(codes[:codes.shape[0] - pad])
  if on_device:
    return jnp.concatenate(out).astype(jnp.int8)
  return np.concatenate(out).astype(np.int8)


@functools.lru_cache(maxsize=None)
def _encoder(spec: MethodSpec, modality: str):
  return jax.jit(lambda model, x: binarize(spec.encode(model, modality, x)))


def evaluate(spec: MethodSpec, model, data: CrossModalData, stats: dict, *, queries: str = "query",
             full: bool = True, top_k=(), pn=(), nwmap: bool = False, ties: str = "index",
             backend: str | None = None) -> dict:
  """Cross-modal retrieval metrics of one seed's model.

  Args:
    queries: "query" (the test protocol: query vs retrieval) or "val" (model selection:
      val items vs the retrieval set without them).
    full: all metrics (`metrics.evaluate`) or only mAP@all.
    top_k, pn, nwmap, ties: as in `metrics.evaluate` (with full=True).
    backend: the metrics backend (None: `metrics.default_backend()`, "jax" on accelerators).
      With "jax" the codes stay on the device from the encoder to the metrics; only the
      per-query numbers come back.

  Returns:
    {"i2t": {...}, "t2i": {...}}: image queries against the text database and the reverse.
  """
  q_idx = getattr(data, queries)
  db_idx = np.setdiff1d(data.retrieval, q_idx) if queries == "val" else data.retrieval
  on_device = (backend or metrics.default_backend()) == "jax"
  codes = {}
  for m in ("image", "text"):
    for split, idx in (("q", q_idx), ("db", db_idx)):
      # chunk by chunk: an image stack on disk is read (and normalised) a chunk at a time
      codes[m, split] = encode(spec, model, m, take_rows(getattr(data, m), idx),
                               transform=functools.partial(normalize, stats, m, tokens=tokens(data, m)),
                               on_device=on_device)
  out = {}
  for name, (qm, dbm) in DIRECTIONS.items():
    args = (codes[qm, "q"], codes[dbm, "db"], data.labels[q_idx], data.labels[db_idx])
    if full:
      out[name] = metrics.evaluate(*args, top_k=top_k, pn=pn, nwmap=nwmap, ties=ties, backend=backend)
    else:
      out[name] = {"map": float(metrics.mean_average_precision(*args, ties=ties, backend=backend))}
  return out


def mean_map(result: dict) -> float:
  """The model-selection score: mAP@all averaged over the two directions."""
  return 0.5 * (result["i2t"]["map"] + result["t2i"]["map"])


def average_over_seeds(per_seed: list) -> dict:
  """Mean of every scalar metric over seeds, plus "map_std" per direction."""
  out = {}
  for direction in DIRECTIONS:
    rows = [r[direction] for r in per_seed]
    mean = jax.tree.map(lambda *v: float(np.mean(v)), *rows)
    mean["map_std"] = float(np.std([r["map"] for r in rows]))
    out[direction] = mean
  return out

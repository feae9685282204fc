"""The scans behind `jxhash.metrics`: per-query bucket counts and (distance, index) ranks.

Hamming distances between K-bit codes take only K + 1 values, so a ranking by ascending
distance with ties broken by database index needs no comparison sort: the rank of item j is

    rank(j) = #{i : d_i < d_j} + #{i : d_i = d_j, i <= j},

so one pass over the database in index order, counting per distance, gives every item's
position inside its distance group and every group's size, hence every rank. Everything
`jxhash.metrics` reports is a function of, per query,

  - the bucket counts: items, relevant items and summed gain at each distance d = 0..K;
  - for the index tie rule, also Σ_{relevant j} cum(rank(j)) / rank(j) for the binary and the
    weighted cumulative gain, and the gains of the first L ranks (for cut-offs <= L).

Three interchangeable implementations produce exactly these numbers (`Scan`):

  "numba"  compiled counting kernel, queries in parallel (`numba.prange`), codes and labels
           bit-packed into uint64 words (`jxhash.codes.pack`) and compared with popcount. Pass 1 (index order)
           counts each distance group and notes, for every relevant item, its position and
           hit count inside its group; pass 2 adds the closer groups' totals to those notes.
           No (Q, N) array is ever formed: memory is O(N) per thread. The kernels live in
           `jxhash.metrics.numba_kernels`, imported on first use. The CPU default when numba is
           installed.
  "numpy"  packed popcount distances for a chunk of queries, then `np.argsort(kind="stable")`
           (a radix sort on 8/16-bit keys). The CPU fallback without numba.
  "jax"    ±1 matmul distances under `jax.jit`, on the device that holds the codes. Index
           ties: a one-operand sort of the int32 key distance·N + index, and the per-query
           metrics reduced on the device (`device_index_metrics`; only per-query numbers come
           back); average ties: bucket counts by scatter-add, no sort; with gains (nwmAP,
           index ties) the full `Scan` comes back. XLA's sort is fast on GPU/TPU (and slow on
           CPU, where this backend is never chosen by default).

The gain of a (query, item) pair is the number of labels they share; an item is relevant when
its gain is positive.
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import codes as codes_lib

# Distances and gains are stored as uint16 in the per-query buffers and the top-L array.
MAX_VALUE = np.iinfo(np.uint16).max


class Scan(NamedTuple):
  """Per-query results of one scan of a chunk of Qc queries against N database items.

  Attributes:
    size: (Qc, K + 1) int64, number of items at Hamming distance d.
    rel: (Qc, K + 1) int64, number of relevant items (gain > 0) at distance d.
    gain: (Qc, K + 1) int64, summed gain (shared labels) of the items at distance d; None
      unless weighted.
    ap_sum: (Qc,) float64, Σ over relevant j of hits(rank_j) / rank_j, where hits(r) counts
      relevant items at ranks <= r, under the (distance, index) ranking; None for bucket-only
      scans.
    wap_sum: (Qc,) float64, the same with hits replaced by the summed gain of ranks <= r;
      None unless weighted.
    top: (Qc, L) uint16, gain of the item at rank 1..L (index ranking), or any positive value
      for a relevant item unless weighted; None for bucket-only scans.
    gain_hist: (Qc, C + 1) int64, number of items with gain g = 0..C; None unless weighted.
  """

  size: np.ndarray
  rel: np.ndarray
  gain: np.ndarray
  ap_sum: np.ndarray | None
  wap_sum: np.ndarray | None
  top: np.ndarray | None
  gain_hist: np.ndarray | None


# ------------------------------------------------------------------------------------ numba

@functools.cache
def numba_kernels():
  """The compiled kernels (`jxhash.metrics.numba_kernels`), or None without a working numba.

  Imported on first use: numba alone takes ~0.4 s to import, which every `import jxhash` would
  otherwise pay."""
  try:
    return importlib.import_module("jxhash.metrics.numba_kernels")
  except ImportError:  # numba is optional: the numpy scan computes the same numbers.
    return None


def have_numba() -> bool:
  return numba_kernels() is not None


def _numba_scan(q, db, *, num_buckets, num_classes, top_len, index_ties, weighted):
  (q_codes, q_labels), (db_codes, db_labels) = q, db
  num_q = q_codes.shape[0]
  if db_codes.shape[0] >= 2**31:
    raise ValueError("the numba scan counts in 32-bit fields: at most 2**31 - 1 database items")
  size = np.zeros((num_q, num_buckets), np.int64)
  rel = np.zeros_like(size)
  gain = np.zeros_like(size)
  gain_hist = np.zeros((num_q, num_classes + 1) if weighted else (1, 1), np.int64)
  kernels = numba_kernels()
  num_blocks = max(1, min(kernels.num_threads(), num_q))
  buckets_kernel, index_kernel = kernels.KERNELS[bool(weighted)]
  if not index_ties:
    buckets_kernel(q_codes, db_codes, q_labels, db_labels, size, rel, gain, gain_hist, num_blocks)
    return Scan(size, rel, gain if weighted else None, None, None, None,
                gain_hist if weighted else None)
  ap_sum = np.zeros(num_q, np.float64)
  wap_sum = np.zeros(num_q, np.float64)
  top = np.zeros((num_q, top_len + 1), np.uint16)
  index_kernel(q_codes, db_codes, q_labels, db_labels, size, rel, gain, gain_hist, ap_sum, wap_sum,
               top, num_blocks)
  return Scan(size, rel, gain if weighted else None, ap_sum, wap_sum if weighted else None,
              top[:, :top_len], gain_hist if weighted else None)


# ------------------------------------------------------------------------------------ numpy

def pair_popcount(a: np.ndarray, b: np.ndarray, op, bound: int) -> np.ndarray:
  """(Qc, W), (N, W) uint64 -> (Qc, N): popcount of op(a_i, b_j) summed over words, as uint8
  when `bound` (the largest possible value) allows (one radix pass to sort), else uint16."""
  if a.shape[1] == 1:
    out = np.bitwise_count(op(a[:, 0, None], b[None, :, 0]))
    return out if bound <= 255 else out.astype(np.uint16)
  out = np.zeros((a.shape[0], b.shape[0]), np.uint8 if bound <= 255 else np.uint16)
  for w in range(a.shape[1]):
    out += np.bitwise_count(op(a[:, w, None], b[None, :, w]))
  return out


def _row_bincount(values: np.ndarray, width: int, weights=None) -> np.ndarray:
  """Per-row histogram of (Qc, N) integers in [0, width) -> (Qc, width) int64."""
  rows = values.shape[0]
  flat = (np.arange(rows, dtype=np.int64)[:, None] * width + values).ravel()
  counts = np.bincount(flat, weights=None if weights is None else weights.ravel(), minlength=rows * width)
  return counts.reshape(rows, width).astype(np.int64)


def _numpy_scan(q, db, *, num_buckets, num_classes, top_len, index_ties, weighted):
  (q_codes, q_labels), (db_codes, db_labels) = q, db
  dist = pair_popcount(q_codes, db_codes, np.bitwise_xor, num_buckets - 1)
  gains = pair_popcount(q_labels, db_labels, np.bitwise_and, num_classes)
  relevant = gains > 0
  # One unweighted histogram of (distance, relevant) pairs gives both counts; bincount with
  # float weights is several times slower.
  pairs = _row_bincount(2 * dist.astype(np.int64) + relevant, 2 * num_buckets).reshape(-1, num_buckets, 2)
  size, rel = pairs.sum(axis=2), pairs[:, :, 1]
  gain = _row_bincount(dist, num_buckets, gains) if weighted else None
  gain_hist = _row_bincount(gains, num_classes + 1) if weighted else None
  if not index_ties:
    return Scan(size, rel, gain, None, None, None, gain_hist)
  del relevant
  # A stable sort on 8/16-bit keys is a radix sort in numpy: O(N) and the (distance, index) order.
  order = np.argsort(dist, axis=1, kind="stable")
  del dist
  ranked = np.take_along_axis(gains, order, axis=1)
  del order, gains
  ranked_rel = ranked > 0
  inv_rank = 1.0 / np.arange(1, ranked.shape[1] + 1, dtype=np.float64)
  # int32 cumulative sums are much faster than int64 here; the totals stay below N * C < 2**31.
  hits = np.cumsum(ranked_rel, axis=1, dtype=np.int32)
  ap_sum = np.einsum("qn,qn,n->q", ranked_rel, hits, inv_rank, dtype=np.float64)
  del hits
  wap_sum = None
  if weighted:
    cum = np.cumsum(ranked, axis=1, dtype=np.int32 if ranked.shape[1] * num_classes < 2**31 else np.int64)
    wap_sum = np.einsum("qn,qn,n->q", ranked_rel, cum, inv_rank, dtype=np.float64)
  return Scan(size, rel, gain, ap_sum, wap_sum, ranked[:, :top_len].astype(np.uint16), gain_hist)


# -------------------------------------------------------------------------------------- jax

def _blocked_row_sum(x: jax.Array, block: int = 512) -> jax.Array:
  """Row sums of a (Qc, N) float32 array in two levels (blocks, then block sums), so rounding
  error grows like sqrt(block) + sqrt(N / block) rather than with N on backends whose reduction
  accumulates sequentially."""
  pad = -x.shape[1] % block
  x = jnp.pad(x, ((0, 0), (0, pad)))
  return x.reshape(x.shape[0], -1, block).sum(-1).sum(-1)


@functools.partial(jax.jit, static_argnames=("num_buckets", "num_classes", "top_len"))
def _jax_scan_jit(q_codes, q_labels, db_codes, db_labels, *, num_buckets, num_classes, top_len):
  # Computes every output of `Scan`: one compilation per shape serves all tie rules and
  # metrics, and the extra terms cost little next to the sort.
  n_db = db_codes.shape[0]
  dist, gains = _distances_and_gains(q_codes, q_labels, db_codes, db_labels)
  order = jnp.argsort(dist, axis=1, stable=True)
  dist_sorted = jnp.take_along_axis(dist, order, axis=1)
  ranked = jnp.take_along_axis(gains, order, axis=1)
  ranked_rel = (ranked > 0).astype(jnp.int32)
  hits = jnp.cumsum(ranked_rel, axis=1)
  cum = jnp.cumsum(ranked, axis=1)
  # Bucket d occupies sorted positions [edges[d], edges[d + 1]).
  edges = jax.vmap(lambda row: jnp.searchsorted(row, jnp.arange(num_buckets + 1), side="left"))(dist_sorted)
  edges = edges.astype(jnp.int32)

  def bucket_totals(prefix):
    padded = jnp.pad(prefix, ((0, 0), (1, 0)))
    return jnp.diff(jnp.take_along_axis(padded, edges, axis=1), axis=1)

  rows = jnp.arange(gains.shape[0])[:, None]
  inv_rank = 1.0 / jnp.arange(1, n_db + 1, dtype=jnp.float32)[None, :]
  relf = ranked_rel.astype(jnp.float32)
  return {
      "size": jnp.diff(edges, axis=1),
      "rel": bucket_totals(hits),
      "gain": bucket_totals(cum),
      "gain_hist": jnp.zeros((gains.shape[0], num_classes + 1), jnp.int32).at[rows, gains].add(1),
      "ap_sum": _blocked_row_sum(relf * hits.astype(jnp.float32) * inv_rank),
      "wap_sum": _blocked_row_sum(relf * cum.astype(jnp.float32) * inv_rank),
      "top": ranked[:, :top_len],
  }


def _distances_and_gains(q_codes, q_labels, db_codes, db_labels):
  """(Qc, N) int32 Hamming distances and shared-label counts by ±1 / 0-1 matmuls."""
  bits = q_codes.shape[1]
  hp = jax.lax.Precision.HIGHEST
  # ±1 and 0/1 products are small integers, exact in float32 accumulation for K, C < 2**24.
  dot = jnp.matmul(q_codes.astype(jnp.float32), db_codes.astype(jnp.float32).T, precision=hp)
  dist = jnp.round(0.5 * (bits - dot)).astype(jnp.int32)
  gains = jnp.round(jnp.matmul(q_labels.astype(jnp.float32), db_labels.astype(jnp.float32).T,
                               precision=hp)).astype(jnp.int32)
  return dist, gains


def _rank_order(dist, num_buckets):
  """(Qc, N) database indices in (distance, index) order, per query row.

  One int32 key d·N + j per item sorts into exactly that order; a one-operand sort of it is
  cheaper than the stable argsort (a sort of (d, iota) pairs), which remains the fallback when
  (K + 1)·N does not fit in int32."""
  n_db = dist.shape[1]
  if num_buckets * n_db < 2**31:
    key = dist * n_db + jnp.arange(n_db, dtype=jnp.int32)[None, :]
    return jnp.sort(key, axis=1) % n_db
  return jnp.argsort(dist, axis=1, stable=True)


@functools.partial(jax.jit, static_argnames=("num_buckets", "ks", "ns"))
def _jax_index_metrics(q_codes, q_labels, db_codes, db_labels, valid, *, num_buckets, ks, ns):
  """Per-query metrics under the (distance, index) ranking, reduced on the device.

  The device twin of `_jax_scan_jit` followed by `tie_average.reduce_scan` for index ties
  without gains: only per-query numbers and the pooled (K + 1) radius counts leave it.
  `valid` (traced) is the number of real rows; padding rows are left out of the pooled counts.
  ks, ns: cut-offs, already clamped to N.
  """
  n_db = db_codes.shape[0]
  dist, gains = _distances_and_gains(q_codes, q_labels, db_codes, db_labels)
  relevant = gains > 0
  ranked_rel = jnp.take_along_axis(relevant, _rank_order(dist, num_buckets), axis=1)
  hits = jnp.cumsum(ranked_rel, axis=1, dtype=jnp.int32)
  inv_rank = 1.0 / jnp.arange(1, n_db + 1, dtype=jnp.float32)[None, :]
  terms = jnp.where(ranked_rel, hits.astype(jnp.float32) * inv_rank, 0.0)
  num_relevant = hits[:, -1]

  def ratio(a, b):
    return jnp.where(b > 0, a / jnp.maximum(b, 1).astype(jnp.float32), 0.0)

  ap = ratio(_blocked_row_sum(terms), num_relevant)
  ap_at = [ratio(_blocked_row_sum(terms[:, :k]), hits[:, k - 1]) for k in ks]
  precision_at = [hits[:, n - 1].astype(jnp.float32) / n for n in ns]
  rows = q_codes.shape[0]
  mask = (jnp.arange(rows) < valid)[:, None]
  pooled = jnp.zeros((2, num_buckets), jnp.int32).at[relevant.astype(jnp.int32), dist].add(
      mask.astype(jnp.int32))
  return {"ap": ap, "ap_at": jnp.stack(ap_at, axis=1) if ks else jnp.zeros((rows, 0), jnp.float32),
          "precision_at": jnp.stack(precision_at, axis=1) if ns else jnp.zeros((rows, 0), jnp.float32),
          "num_relevant": num_relevant, "retrieved": pooled.sum(axis=0), "good": pooled[1]}


@functools.partial(jax.jit, static_argnames=("num_buckets", "num_classes", "weighted"))
def _jax_bucket_counts(q_codes, q_labels, db_codes, db_labels, *, num_buckets, num_classes, weighted):
  """Per-query bucket counts (items, relevant items, gain at each distance; the gain
  histogram), all the tie-averaged metrics need: scatter-adds, no sort."""
  dist, gains = _distances_and_gains(q_codes, q_labels, db_codes, db_labels)
  rows = jnp.arange(dist.shape[0])[:, None]
  zeros = jnp.zeros((dist.shape[0], num_buckets), jnp.int32)
  out = {"size": zeros.at[rows, dist].add(1), "rel": zeros.at[rows, dist].add((gains > 0).astype(jnp.int32))}
  if weighted:
    out["gain"] = zeros.at[rows, dist].add(gains)
    out["gain_hist"] = jnp.zeros((dist.shape[0], num_classes + 1), jnp.int32).at[rows, gains].add(1)
  return out


def _round_up_pow2(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def _pad_rows(q):
  """Chunk rows padded (with copies of the first) to a power of two, so that varying chunk
  sizes cost a handful of compilations, not one each; returns (padded, real row count)."""
  rows = q[0].shape[0]
  pad = _round_up_pow2(rows) - rows
  if pad:
    q = tuple(jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) for x in q)
  return q, rows


def device_index_metrics(q, db, *, num_buckets: int, ks: tuple, ns: tuple) -> dict:
  """AP@all, AP@k, P@n per query of a prepared jax chunk under index ties, as device arrays.

  Keys: ap, ap_at (Qc, len(ks)), precision_at (Qc, len(ns)) float32; num_relevant (Qc,),
  retrieved / good (K + 1,) int32 pair counts pooled over the chunk's queries. Nothing is
  copied to the host: a caller gathers the chunks and reads them back once.
  """
  q, rows = _pad_rows(q)
  out = _jax_index_metrics(*q, *db, rows, num_buckets=num_buckets, ks=tuple(int(k) for k in ks),
                           ns=tuple(int(n) for n in ns))
  return {name: v if name in ("retrieved", "good") else v[:rows] for name, v in out.items()}


def _jax_scan(q, db, *, num_buckets, num_classes, top_len, index_ties, weighted):
  q, rows = _pad_rows(q)
  if not index_ties:  # the tie-averaged metrics need only bucket counts: no sort
    out = jax.device_get(_jax_bucket_counts(*q, *db, num_buckets=num_buckets, num_classes=num_classes,
                                            weighted=weighted))
    get = lambda name: np.asarray(out[name][:rows], np.int64) if name in out else None  # noqa: E731
    return Scan(get("size"), get("rel"), get("gain"), None, None, None, get("gain_hist"))
  # The top length is padded to a power of two (at least 1024) for the same reason.
  top_pad = min(db[0].shape[0], max(1024, _round_up_pow2(top_len)))
  out = jax.device_get(_jax_scan_jit(*q, *db, num_buckets=num_buckets, num_classes=num_classes,
                                     top_len=top_pad))

  def get(name, dtype, wanted=True):
    return np.asarray(out[name][:rows], dtype) if wanted else None

  return Scan(get("size", np.int64), get("rel", np.int64), get("gain", np.int64, weighted),
              get("ap_sum", np.float64, index_ties), get("wap_sum", np.float64, index_ties and weighted),
              get("top", np.uint16, index_ties)[:, :top_len] if index_ties else None,
              get("gain_hist", np.int64, weighted))


# ---------------------------------------------------------------------------------- dispatch

BACKENDS = ("numba", "numpy", "jax")


def prepare(backend: str, codes: np.ndarray, labels: np.ndarray):
  """Put validated ±1 codes (M, K) and 0/1 labels (M, C) in the form `backend`'s scan reads:
  packed uint64 words on the host for numba/numpy (for numba, one-word rows as a 1-D array),
  int8/uint8 device arrays for jax."""
  if backend == "jax":
    return jnp.asarray(codes, jnp.int8), jnp.asarray(labels, jnp.uint8)
  packed = codes_lib.pack(codes), codes_lib.pack(labels)
  if backend == "numba" and packed[0].shape[1] == 1 and packed[1].shape[1] == 1:
    packed = tuple(np.ascontiguousarray(x[:, 0]) for x in packed)
  return packed


def scan(backend: str, queries, database, *, num_buckets: int, num_classes: int, top_len: int,
         index_ties: bool, weighted: bool) -> Scan:
  """Scan prepared queries against a prepared database (see `prepare`) with `backend`.

  Args:
    num_buckets: K + 1 (distances 0..K).
    num_classes: C, the label width (bounds the gain).
    top_len: L, how many leading ranks' gains to return (index ties only; <= N).
    index_ties: also rank by (distance, index) and return ap_sum / wap_sum / top.
    weighted: also return wap_sum and gain_hist.
  """
  fn = {"numba": _numba_scan, "numpy": _numpy_scan, "jax": _jax_scan}[backend]
  return fn(queries, database, num_buckets=num_buckets, num_classes=num_classes, top_len=top_len,
            index_ties=index_ties, weighted=weighted)

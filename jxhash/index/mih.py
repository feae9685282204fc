"""Multi-index hashing: exact Hamming top-k and radius search that is sublinear where the near
neighbours are close (Norouzi, Punjani, Fleet, "Fast Search in Hamming Space with Multi-Index
Hashing", CVPR 2012; "Fast Exact Search in Hamming Space with Multi-Index Hashing", TPAMI 2014).

Each K-bit code is cut into m disjoint substrings of s or s + 1 bits, and each substring gets a
hash table: the positions of all items sorted by their substring value (stable, so positions
ascend inside a bucket), bucket offsets (2^s + 1), and a copy of the codes in that same order, so
that a bucket's candidates are verified by a sequential, vectorised scan (as in the flat engine)
instead of one cache miss each (one run, 10M x 64 clustered codes, k = 10: 319 -> 4,656
queries/s), for 8 bytes per word per item per table. Memory per item: m * (4 + 8 ceil(K / 64)) bytes (positions take 8 past 2^32 items), plus
8 * (2^s + 1) bytes per table.

Pigeonhole: if an item is at Hamming distance D from the query, some substring is within
floor(D / m) of the query's substring. So probing, for r = 0, 1, ..., every bucket at distance
exactly r from the query's substring in table 0, then table 1, ..., finds every item with
D <= m r + i once table i is done at radius r (an unfound item differs by >= r + 1 bits in
tables 0..i and >= r in the others). Each candidate is checked with its full distance; an item
seen in several tables is counted only where it is first reached (its smallest substring
distance, first table among equals), which needs no "seen" set. Top-k keeps candidates up to a
threshold T, the smallest distance with k candidates at or below it, and stops as soon as
T <= m r + i: every item at distance <= T has then been found, so the first k candidates in
(distance, position) order are exactly the flat scan's answer, ties included. Radius-R search
probes r = 0..floor(R / m) and keeps D <= R.

Choice of s: about log2(N) bits per substring (the paper's rule, which keeps buckets small),
clamped to [4, 20] so a table's offsets stay at most 8 MB; m = ceil(K / s).

Queries whose near neighbours are far (uniform random codes, k close to N) would probe more
buckets than a scan reads items; past a work budget they are handed to the flat scan (the
`fallback` given by HashIndex), so the "mih" engine is never much slower than "flat".
"""

from __future__ import annotations

import math

import numba
import numpy as np

from jxhash.metrics.numba_kernels import popcount
from jxhash.index._scan import _block_distances, _block_min

MAX_SUB_BITS = 20
MIN_SUB_BITS = 4
PARALLEL_QUERIES = 16  # fewer queries run on the calling thread
# A query whose probes cost more than WORK_LIMIT * N work units is answered by the flat scan
# instead. Units: a candidate checked = 1, a bucket probed = BUCKET_COST. Measured on 1M x 64
# uniform codes (2-core AMD EPYC), one unit costs about 13 scanned items, so probing loses to
# the scan past ~0.08 N units; stopping at 0.04 N wastes at most about half a scan.
WORK_LIMIT = 0.04
BUCKET_COST = 64  # a probe reads the bucket offsets (a likely cache miss) and starts a block
_BLOCK = 256  # candidates per distance block inside a bucket


def substring_plan(bits: int, n: int, m: int | None = None) -> np.ndarray:
  """(m,) substring lengths summing to `bits`, longer ones first (m chosen from n if None)."""
  if m is None:
    target = min(MAX_SUB_BITS, max(MIN_SUB_BITS, round(math.log2(max(n, 2)))))
    m = -(-bits // target)
  m = max(1, min(m, bits))
  lengths = np.full(m, bits // m, np.int64)
  lengths[:bits % m] += 1
  if lengths.max() > MAX_SUB_BITS:
    raise ValueError(f"{m} substrings of a {bits}-bit code are longer than {MAX_SUB_BITS} bits")
  return lengths


class MultiIndex:
  """Multi-index hash tables over the first n items of a word-major (W, capacity) code store."""

  def __init__(self, packed: np.ndarray, n: int, bits: int, m: int | None = None, *, fallback=None,
               fallback_radius=None):
    """Builds the tables; `fallback(queries, kk)` / `fallback_radius(queries, r)` answer the
    queries that probing would make slower than a scan (the flat engine)."""
    self.packed, self.n, self.bits = packed, n, bits
    self.fallback, self.fallback_radius = fallback, fallback_radius
    self.gave_up = 0  # queries of the last top-k search answered by the fallback
    self.lengths = substring_plan(bits, n, m)
    self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
    words = packed.shape[0]
    self.masks = np.zeros((len(self.lengths), words), np.uint64)
    for i, (start, length) in enumerate(zip(self.starts, self.lengths)):
      for b in range(start, start + length):  # at most K iterations in all
        self.masks[i, b // 64] |= np.uint64(1) << np.uint64(b % 64)
    self.tables = np.empty((len(self.lengths), n), np.uint32 if n < 2**32 else np.int64)
    self.offsets = np.zeros((len(self.lengths), (1 << int(self.lengths.max())) + 1), np.int64)
    self.codes = np.empty((len(self.lengths), words, n), np.uint64)
    _build(packed, n, self.starts, self.lengths, self.tables, self.offsets, self.codes)
    self.dist_like = np.empty(0, np.uint8 if bits <= 255 else np.uint16)

  @property
  def m(self) -> int:
    return len(self.lengths)

  @property
  def nbytes(self) -> int:
    """Bytes of the tables (positions, bucket offsets, codes in bucket order), on top of the
    index's own codes."""
    return self.tables.nbytes + self.offsets.nbytes + self.codes.nbytes

  def _query_keys(self, queries: np.ndarray) -> np.ndarray:
    keys = np.empty((queries.shape[0], self.m), np.int64)
    _keys_of_rows(queries, self.starts, self.lengths, keys)
    return keys

  def search(self, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable top-kk positions (Q, kk) int64 and distances (Q, kk) int32 for (Q, W) queries."""
    q_count = queries.shape[0]
    out_pos = np.empty((q_count, kk), np.int64)
    out_dist = np.empty((q_count, kk), np.int32)
    ok = np.zeros(q_count, np.bool_)
    keys = self._query_keys(queries)
    args = (kk, self.bits, self.lengths, self.masks, self.tables, self.offsets, int(WORK_LIMIT * self.n),
            self.dist_like)
    if q_count < PARALLEL_QUERIES or numba.get_num_threads() == 1:
      # Waking the thread pool can cost more than a few sublinear queries.
      for q in range(q_count):
        ok[q] = _top_k_one(self.codes, queries[q], keys[q], *args, out_pos[q], out_dist[q])
    else:
      _top_k(self.codes, queries, keys, *args, out_pos, out_dist, ok)
    self.gave_up = int(q_count - ok.sum())
    if self.gave_up:
      # Far queries (or k near N): probing would visit more than the items, so scan instead.
      pos, dist = self.fallback(queries[~ok], kk)
      out_pos[~ok], out_dist[~ok] = pos, dist
    return out_pos, out_dist

  def search_radius(self, queries: np.ndarray, r: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query, positions and distances of the items within r, in (distance, position) order."""
    probes = sum(sum(math.comb(int(s), j) for j in range(min(r // self.m, int(s)) + 1)) for s in self.lengths)
    if BUCKET_COST * probes > WORK_LIMIT * self.n:
      return self.fallback_radius(queries, r)
    keys = self._query_keys(queries)
    out = []
    for q in range(queries.shape[0]):
      pos, dist = _radius_one(self.codes, queries[q], keys[q], r, self.bits, self.lengths, self.masks, self.tables,
                              self.offsets, self.dist_like)
      out.append((pos, dist.astype(np.int32)))
    return out


# ------------------------------------------------------------------ kernels


@numba.njit(inline="always")
def _substring(row_word, next_word, start, length):
  """Bits [start, start + length) of a code whose words w = start // 64 and w + 1 are given."""
  off = np.uint64(start & 63)
  value = row_word >> off
  if (start & 63) + length > 64:
    value |= next_word << (np.uint64(64) - off)
  return np.int64(value & ((np.uint64(1) << np.uint64(length)) - np.uint64(1)))


@numba.njit(cache=True)
def _keys_of_rows(rows, starts, lengths, keys):
  """keys[q, i] = substring i of row q, for (Q, W) rows."""
  last = rows.shape[1] - 1
  for q in range(rows.shape[0]):
    for i in range(lengths.shape[0]):
      w = starts[i] >> 6
      keys[q, i] = _substring(rows[q, w], rows[q, min(w + 1, last)], starts[i], lengths[i])


@numba.njit(parallel=True, cache=True)
def _build(packed, n, starts, lengths, tables, offsets, codes):
  """Counting sort of positions (and codes) by substring value, one table per thread; stable."""
  last = packed.shape[0] - 1
  for i in numba.prange(lengths.shape[0]):
    w = starts[i] >> 6
    nxt = min(w + 1, last)
    cursor = np.zeros(offsets.shape[1], np.int64)
    for pos in range(n):
      cursor[_substring(packed[w, pos], packed[nxt, pos], starts[i], lengths[i]) + 1] += 1
    for b in range(1, offsets.shape[1]):
      cursor[b] += cursor[b - 1]
    offsets[i] = cursor
    for pos in range(n):
      key = _substring(packed[w, pos], packed[nxt, pos], starts[i], lengths[i])
      tables[i, cursor[key]] = pos
      for word in range(packed.shape[0]):
        codes[i, word, cursor[key]] = packed[word, pos]
      cursor[key] += 1


@numba.njit(inline="always")
def _next_combination(v):
  """The next larger integer with the same number of set bits (Gosper's hack)."""
  low = v & -v
  ripple = v + low
  return (((ripple ^ v) >> 2) // low) | ripple


@numba.njit
def _probe(codes, query, keys, r, i, lengths, masks, tables, offsets, xor, buf, state, hist, cand, k):
  """Checks every bucket of table i at distance exactly r from the query's substring.

  codes: (W, N) the codes in table i's bucket order. state = [T, number of candidates at
  distance <= T, candidates kept, work]; candidates at distance <= T are appended to cand
  (2, capacity) [position, distance]; T shrinks to the smallest distance with k candidates at
  or below it; work counts bucket probes (BUCKET_COST each) and candidates. Returns `cand`,
  reallocated when it grew.
  """
  m = lengths.shape[0]
  words = codes.shape[0]
  length = lengths[i]
  if r > length:
    return cand
  v = (1 << r) - 1
  while v < (1 << length):
    key = keys[i] ^ v
    lo = offsets[i, key]
    hi = offsets[i, key + 1]
    state[3] += BUCKET_COST + hi - lo
    # A bucket's codes are contiguous: distances as in the flat scan, block by block.
    for start in range(lo, hi, buf.shape[0]):
      count = min(buf.shape[0], hi - start)
      _block_distances(codes, query, start, count, buf)
      if _block_min(buf, count) > state[0]:
        continue
      for j in range(count):
        dist = np.int64(buf[j])
        if dist > state[0]:
          continue
        t = start + j
        for w in range(words):
          xor[w] = codes[w, t] ^ query[w]
        # Count the item only where the probe order first reaches it: its smallest substring
        # distance, and among tables at that distance, the first.
        first = True
        for other in range(m):
          if other != i:
            sub = 0
            for w in range(words):
              sub += popcount(xor[w] & masks[other, w])
            if sub < r or (sub == r and other < i):
              first = False
              break
        if not first:
          continue
        kept = state[2]
        if kept == cand.shape[1]:
          live = 0  # drop candidates beyond T, then grow if still more than half full
          for c in range(kept):
            if cand[1, c] <= state[0]:
              cand[0, live] = cand[0, c]
              cand[1, live] = cand[1, c]
              live += 1
          kept = live
          if 2 * kept > cand.shape[1]:
            grown = np.empty((2, 2 * cand.shape[1]), np.int64)
            grown[:, :kept] = cand[:, :kept]
            cand = grown
        cand[0, kept] = tables[i, t]
        cand[1, kept] = dist
        state[2] = kept + 1
        hist[dist] += 1
        state[1] += 1
        while state[0] > 0 and state[1] - hist[state[0]] >= k:
          state[1] -= hist[state[0]]
          state[0] -= 1
    if r == 0:
      break
    v = _next_combination(v)
  return cand


@numba.njit
def _sorted_candidates(cand, kept, bound, n):
  """Candidates at distance <= bound in (distance, position) order: (positions, distances)."""
  keys = np.empty(kept, np.int64)
  count = 0
  for c in range(kept):
    if cand[1, c] <= bound:
      keys[count] = cand[1, c] * n + cand[0, c]
      count += 1
  keys = np.sort(keys[:count])
  return keys % n, keys // n


@numba.njit(cache=True)
def _top_k_one(codes, query, keys, k, bits, lengths, masks, tables, offsets, work_limit, dist_like, out_pos, out_dist):
  """Top-k of one query into out_pos/out_dist; False (nothing written) past `work_limit`."""
  m = lengths.shape[0]
  n = tables.shape[1]
  xor = np.empty(codes.shape[1], np.uint64)
  buf = np.empty(_BLOCK, dist_like.dtype)
  hist = np.zeros(bits + 2, np.int64)
  state = np.array([bits, 0, 0, 0], np.int64)
  cand = np.empty((2, 4 * k + 64), np.int64)
  done = False
  for r in range(lengths.max() + 1):
    for i in range(m):
      cand = _probe(codes[i], query, keys, r, i, lengths, masks, tables, offsets, xor, buf, state, hist, cand, k)
      if state[1] >= k and state[0] <= m * r + i:  # every item at distance <= T is found
        done = True
        break
      if state[3] > work_limit:
        return False
    if done:
      break
  pos, dist = _sorted_candidates(cand, state[2], state[0], n)
  out_pos[:] = pos[:k]
  out_dist[:] = dist[:k]
  return True


@numba.njit(parallel=True, cache=True)
def _top_k(codes, queries, keys, k, bits, lengths, masks, tables, offsets, work_limit, dist_like, out_pos, out_dist,
           ok):
  for q in numba.prange(queries.shape[0]):
    ok[q] = _top_k_one(codes, queries[q], keys[q], k, bits, lengths, masks, tables, offsets, work_limit, dist_like,
                       out_pos[q], out_dist[q])


@numba.njit(cache=True)
def _radius_one(codes, query, keys, radius, bits, lengths, masks, tables, offsets, dist_like):
  m = lengths.shape[0]
  xor = np.empty(codes.shape[1], np.uint64)
  buf = np.empty(_BLOCK, dist_like.dtype)
  hist = np.zeros(bits + 2, np.int64)
  state = np.array([radius, 0, 0, 0], np.int64)
  cand = np.empty((2, 256), np.int64)
  # k larger than any count: T stays at the radius.
  for r in range(min(radius // m, lengths.max()) + 1):
    for i in range(m):
      cand = _probe(codes[i], query, keys, r, i, lengths, masks, tables, offsets, xor, buf, state, hist, cand,
                    tables.shape[1] + 1)
  return _sorted_candidates(cand, state[2], radius, tables.shape[1])

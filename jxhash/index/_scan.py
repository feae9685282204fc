"""Compiled exhaustive scans of the flat engine (numba; imported on the first search).

The database is word-major: `packed` (W, capacity) uint64, row w holding word w of every item
(`jxhash.codes` bit order), items [0, n) in insertion order. Queries are (Q, W) uint64.

Distances of a block of items are computed one word row at a time into a small uint8/uint16
buffer, a loop LLVM vectorises (AVX2: 4 popcounts per instruction via a nibble lookup), so the
inner loop has no branch. Then one vectorised min over the block decides whether any item of the
block can enter the top-k; if none can -- the usual case once the threshold has settled -- the
block costs nothing more. (Fusing the threshold test into the popcount loop, or indexing the
rows as `packed[w, start + j]`, which numba guards for negative indices, both measured 2-3x
slower on the project's 2-core AMD EPYC.)

Top-k with the stable (distance, insertion index) order needs no heap. Scanning in index order,
keep every item whose distance is below a threshold T, where T is the smallest distance t with at
least k kept items at distance <= t (T = K + 1 while there is none). An item at distance >= T can
never be in the answer: the k items already kept at distance <= T all come earlier, and ties go
to the earlier item. At the end the answer is every kept item below T plus the first k - #below
kept items at T, in index order; a counting sort by distance then gives (distance, index) order.
At most k kept items have distance <= T at any time, so a candidate buffer of 2k + block slots,
compacted when full, is enough.
"""

from __future__ import annotations

import numba
import numpy as np

from jxhash.metrics.numba_kernels import popcount


@numba.njit(inline="always")
def _block_distances(packed, query, start, m, buf):
  """buf[:m] = Hamming distances of items [start, start + m) to `query` (W,)."""
  # Slicing first: indexing packed[w, start + j] made numba keep a negative-index guard that
  # stopped the loops from vectorising. Words go in pairs, one pass over `buf` per pair: for
  # 128-bit codes that measured 1.8x faster than one pass per word.
  words = packed.shape[0]
  w = words % 2
  if w:
    row = packed[0, start:start + m]
    q = query[0]
    for j in range(m):
      buf[j] = popcount(row[j] ^ q)
  else:
    row, row2 = packed[0, start:start + m], packed[1, start:start + m]
    q, q2 = query[0], query[1]
    for j in range(m):
      buf[j] = popcount(row[j] ^ q) + popcount(row2[j] ^ q2)
    w = 2
  while w < words:
    row, row2 = packed[w, start:start + m], packed[w + 1, start:start + m]
    q, q2 = query[w], query[w + 1]
    for j in range(m):
      buf[j] += popcount(row[j] ^ q) + popcount(row2[j] ^ q2)
    w += 2


@numba.njit(inline="always")
def _block_min(buf, m):
  low = buf[0]
  for j in range(1, m):
    low = min(low, buf[j])
  return np.int64(low)


@numba.njit(cache=True)
def top_k_range(packed, query, lo, hi, k, bits, block, buf, out_pos, out_dist):
  """Stable top-k of items [lo, hi) for one query into out_pos/out_dist; returns how many (<= k).

  The serial kernel: `top_k` runs it per (query, slice) in parallel.
  """
  cap = 2 * k + block
  cand_pos = np.empty(cap, np.int64)
  cand_dist = np.empty(cap, np.int64)
  hist = np.zeros(bits + 2, np.int64)
  threshold = bits + 1  # T: accept d < T
  below = 0  # kept items with d < T
  kept = 0
  for start in range(lo, hi, block):
    m = min(block, hi - start)
    _block_distances(packed, query, start, m, buf)
    if _block_min(buf, m) >= threshold:
      continue
    for j in range(m):
      d = np.int64(buf[j])
      if d >= threshold:
        continue
      if kept == cap:
        # Items at distance > T are dead; order is kept, so index order survives compaction.
        w = 0
        for t in range(kept):
          if cand_dist[t] <= threshold:
            cand_pos[w] = cand_pos[t]
            cand_dist[w] = cand_dist[t]
            w += 1
        kept = w
      cand_pos[kept] = start + j
      cand_dist[kept] = d
      kept += 1
      hist[d] += 1
      below += 1
      while below >= k:  # some t < T already has k items at distance <= t
        threshold -= 1
        below -= hist[threshold]
  return _select(cand_pos, cand_dist, kept, threshold, k - below, bits, out_pos, out_dist)


@numba.njit
def _select(cand_pos, cand_dist, kept, threshold, take_at, bits, out_pos, out_dist):
  """Kept items below `threshold` and the first `take_at` at it, counting-sorted by distance."""
  offset = np.zeros(bits + 2, np.int64)
  at = 0
  for t in range(kept):
    d = cand_dist[t]
    if d < threshold or (d == threshold and at < take_at):
      at += d == threshold
      offset[d + 1] += 1
  for d in range(1, bits + 2):
    offset[d] += offset[d - 1]
  total = offset[bits + 1]
  at = 0
  for t in range(kept):
    d = cand_dist[t]
    if d < threshold or (d == threshold and at < take_at):
      at += d == threshold
      out_pos[offset[d]] = cand_pos[t]
      out_dist[offset[d]] = d
      offset[d] += 1
  return total


@numba.njit(parallel=True, cache=True)
def top_k(packed, n, queries, k, bits, parts, block, dist_like, out_pos, out_dist, out_count):
  """Stable top-k of every query over `parts` contiguous slices of [0, n), in parallel.

  Args:
    packed: (W, capacity) uint64; n: items in use; queries: (Q, W) uint64; k >= 1.
    parts: slices per query (> 1 splits one query's scan over threads).
    dist_like: empty array of the distance buffer's dtype (uint8 for K <= 255, else wider).
    out_pos, out_dist: (Q, parts, k) int64; out_count: (Q, parts) int64, filled per slice, each
      slice's results in (distance, index) order.
  """
  num_q = queries.shape[0]
  for task in numba.prange(num_q * parts):
    qi = task // parts
    p = task % parts
    lo = n * p // parts
    hi = n * (p + 1) // parts
    buf = np.empty(block, dist_like.dtype)
    out_count[qi, p] = top_k_range(packed, queries[qi], lo, hi, k, bits, block, buf, out_pos[qi, p],
                                    out_dist[qi, p])


@numba.njit(cache=True)
def radius_one(packed, n, query, r, block, buf, counts, cursor, out_pos):
  """Items within distance r of one query, in two passes over [0, n).

  With `out_pos` empty: counts[d] += number of items at distance d <= r. Otherwise: writes the
  position of each item at distance d to out_pos[cursor[d]] and advances cursor[d]; items are
  visited in index order, so each distance group comes out in index order.
  """
  fill = out_pos.shape[0] > 0
  for start in range(0, n, block):
    m = min(block, n - start)
    _block_distances(packed, query, start, m, buf)
    if _block_min(buf, m) > r:
      continue
    for j in range(m):
      d = np.int64(buf[j])
      if d <= r:
        if fill:
          out_pos[cursor[d]] = start + j
          cursor[d] += 1
        else:
          counts[d] += 1


@numba.njit(parallel=True, cache=True)
def radius(packed, n, queries, r, block, dist_like, counts, offsets, out_pos):
  """`radius_one` for every query in parallel (query q writes from offsets[q, d] on)."""
  for qi in numba.prange(queries.shape[0]):
    buf = np.empty(block, dist_like.dtype)
    radius_one(packed, n, queries[qi], r, block, buf, counts[qi], offsets[qi].copy(), out_pos)

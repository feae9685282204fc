"""numba kernels of the "numba" scan in `jxhash.metrics.ranking` (imported only when used).

Codes and labels arrive bit-packed into uint64 words (`jxhash.codes.pack`); rows of one
word arrive as 1-D arrays. Each kernel fills per-query outputs for a chunk of queries, the
queries split into `num_blocks` blocks that run in parallel.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir as _llvm_ir
from numba.extending import intrinsic as _intrinsic


def num_threads() -> int:
  return numba.get_num_threads()


@_intrinsic
def popcount(typingctx, x):
  """LLVM ctpop on a uint64, typed int64 so sums stay integer (numba widens
  int64 + uint64 to float64)."""
  del typingctx
  if not isinstance(x, numba.types.Integer) or x.bitwidth != 64:
    return None

  def codegen(context, builder, signature, args):
    del context, signature
    fn = builder.module.declare_intrinsic("llvm.ctpop", [_llvm_ir.IntType(64)])
    return builder.call(fn, args)

  return numba.types.int64(x), codegen


def _xor_count(row, table, j):
  """popcount(row ^ table[j]) over the words of a packed row (numba only)."""


def _and_count(row, table, j):
  """popcount(row & table[j]) over the words of a packed row (numba only)."""


def _word_count(op):
  # Rows of one word come as uint64 scalars taken from 1-D arrays: the kernels then compile
  # with no loop over words and the query word in a register, which for 64-bit codes and
  # <= 64 labels makes the scan several times faster than the general path below.
  def typer(row, table, j):
    del j
    if isinstance(row, numba.types.Integer):
      return lambda row, table, j: popcount(op(row, table[j]))

    def words(row, table, j):
      total = 0
      for w in range(row.shape[0]):
        total += popcount(op(row[w], table[j, w]))
      return total

    return words

  return typer


_xor = numba.njit(inline="always")(lambda x, y: x ^ y)
_and = numba.njit(inline="always")(lambda x, y: x & y)
numba.extending.overload(_xor_count, inline="always")(_word_count(_xor))
numba.extending.overload(_and_count, inline="always")(_word_count(_and))


# Per distance the kernels keep one int64 word `count | relevant << 32` (counts < 2**32), so
# one read-modify-write updates both and prefix sums of words add both at once.
_LOW = (1 << 32) - 1


# `weighted` is a constant of each kernel (closure variable), so the unweighted kernels have
# no gain code in their loops: with a run-time flag LLVM kept it, and the possible aliasing of
# its stores with the other arrays made the loop 2-4x slower. numba caches both variants.
def _buckets_kernel(weighted):
  """Bucket counts only (tie-averaged metrics): size, rel (and gain, gain_hist) per query."""

  @numba.njit(parallel=True, cache=True)
  def kernel(q_codes, db_codes, q_labels, db_labels, size, rel, gain, gain_hist, num_blocks):
    n_db = db_codes.shape[0]
    n_buckets = size.shape[1]
    num_q = q_codes.shape[0]
    for block in numba.prange(num_blocks):
      hist = np.empty(n_buckets, np.int64)
      for i in range(block, num_q, num_blocks):
        hist[:] = 0
        code, label = q_codes[i], q_labels[i]
        for j in range(n_db):
          d = _xor_count(code, db_codes, j)
          g = _and_count(label, db_labels, j)
          hist[d] += 1 + (min(g, 1) << 32)
          if weighted:
            gain[i, d] += g
            gain_hist[i, g] += 1
        for d in range(n_buckets):
          size[i, d] = hist[d] & _LOW
          rel[i, d] = hist[d] >> 32

  return kernel


def _index_kernel(weighted):
  """Bucket counts plus the (distance, index) ranking sums: ap_sum, wap_sum and top."""

  @numba.njit(parallel=True, cache=True)
  def kernel(q_codes, db_codes, q_labels, db_labels, size, rel, gain, gain_hist, ap_sum, wap_sum,
             top, num_blocks):
    n_db = db_codes.shape[0]
    n_buckets = size.shape[1]
    num_q = q_codes.shape[0]
    # The last column of `top` is a sink for ranks beyond L, keeping the store branch-free.
    sink = top.shape[1]
    for block in numba.prange(num_blocks):
      # Per-thread buffers, allocated once per block of queries rather than once per query.
      seen = np.empty(n_buckets, np.int64)
      seen_gain = np.zeros(n_buckets, np.int64)
      offset = np.empty(n_buckets, np.int64)
      gain_offset = np.zeros(n_buckets, np.int64)
      rec_dist = np.empty(n_db, np.uint16)
      rec_word = np.empty(n_db, np.int64)
      rec_cum = np.empty(n_db if weighted else 0, np.int64)
      rec_gain = np.empty(n_db if weighted else 0, np.uint16)
      for i in range(block, num_q, num_blocks):
        # Pass 1, in index order. After item j, seen[d] holds j's (position | hits << 32)
        # inside its distance group: all its rank and hit count need except the totals of
        # the closer groups. Relevant items are recorded compactly; the record is always
        # written and the cursor advances by r, so there is no data-dependent branch.
        seen[:] = 0
        count = 0
        code, label = q_codes[i], q_labels[i]
        for j in range(n_db):
          d = _xor_count(code, db_codes, j)
          g = _and_count(label, db_labels, j)
          r = min(g, 1)
          word = seen[d] + 1 + (r << 32)
          seen[d] = word
          rec_dist[count] = d
          rec_word[count] = word
          if weighted:
            cum = seen_gain[d] + g
            seen_gain[d] = cum
            rec_cum[count] = cum
            rec_gain[count] = g
            gain_hist[i, g] += 1
          count += r
        # Pass 2, over the relevant items only: add the closer groups' totals.
        a = 0
        for d in range(n_buckets):
          offset[d] = a
          a += seen[d]
          size[i, d] = seen[d] & _LOW
          rel[i, d] = seen[d] >> 32
        if weighted:
          c = 0
          for d in range(n_buckets):
            gain_offset[d] = c
            c += seen_gain[d]
            gain[i, d] = seen_gain[d]
          seen_gain[:] = 0
        s_ap = 0.0
        s_wap = 0.0
        for t in range(count):
          d = rec_dist[t]
          word = offset[d] + rec_word[t]
          rank = word & _LOW
          s_ap += (word >> 32) / rank
          if weighted:
            s_wap += (gain_offset[d] + rec_cum[t]) / rank
            top[i, min(rank, sink) - 1] = rec_gain[t]
          else:
            top[i, min(rank, sink) - 1] = 1
        ap_sum[i] = s_ap
        wap_sum[i] = s_wap

  return kernel


# weighted -> (buckets kernel, index kernel); compiled on first call, then loaded from cache.
KERNELS = {w: (_buckets_kernel(w), _index_kernel(w)) for w in (False, True)}

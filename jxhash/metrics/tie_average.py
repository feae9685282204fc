"""Per-query metrics from a ranking scan: the index-tie reduction and the tie-aware closed forms.

Private to `jxhash.metrics`. A Hamming distance takes only K + 1 values, so a scan
(`jxhash.metrics.ranking`) returns per-query bucket counts, and every metric follows from them.
With ties broken by index (`index_ties`) the scan also returns the first L gains in ranking
order. With ties averaged, each metric is its expectation over all orders within each bucket,
in closed form (McSherry & Najork, ECIR 2008), computed here.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from jxhash.metrics import ranking


def reduce_scan(scan: ranking.Scan, ks: np.ndarray, ns: np.ndarray, *, index_ties: bool,
            weighted: bool) -> dict:
  """Per-query metrics of one chunk from its `Scan` (see `_compute` for the keys)."""
  num_q = scan.size.shape[0]
  size = scan.size.astype(np.float64)
  rel = scan.rel.astype(np.float64)
  num_relevant = rel.sum(axis=1)
  out = {"num_relevant": scan.rel.sum(axis=1), "retrieved": scan.size.sum(axis=0),
         "good": scan.rel.sum(axis=0)}
  if index_ties:
    # Cut-offs are <= L, so the gains of the first L ranks decide every AP@k and P@n; the
    # precision sums are only needed up to the largest k.
    top_rel = scan.top > 0
    hits = np.cumsum(top_rel, axis=1, dtype=np.int32)
    width = int(ks.max(initial=0))
    inv_rank = 1.0 / np.arange(1, width + 1, dtype=np.float64)
    prec_sum = np.cumsum(top_rel[:, :width] * (hits[:, :width] * inv_rank), axis=1)
    out["ap"] = safe_div(scan.ap_sum, num_relevant)
    out["ap_at"] = columns([safe_div(prec_sum[:, k - 1], hits[:, k - 1]) for k in ks], num_q)
    out["precision_at"] = columns([hits[:, n - 1] / n for n in ns], num_q)
    if weighted:
      cum = np.cumsum(scan.top[:, :width], axis=1, dtype=np.int64)
      wap_sum = np.cumsum(top_rel[:, :width] * (cum * inv_rank), axis=1)
      wap = scan.wap_sum
      wap_at = [wap_sum[:, k - 1] for k in ks]
  else:
    before_n = _exclusive_cumsum(size)
    before_rel = _exclusive_cumsum(rel)
    ap_terms = _expected_prefix_sum(size, rel, rel, before_rel, before_n, size)
    out["ap"] = safe_div(ap_terms.sum(axis=1), num_relevant)
    cuts = [_locate_cut(size, k) for k in ks]
    out["ap_at"] = columns([_expected_ap_at(size, rel, before_n, before_rel, ap_terms, b, m)
                             for b, m in cuts], num_q)
    expected_hits = []
    for n in ns:
      b, m = _locate_cut(size, n)
      # m of the bucket's positions are inside the cut, each relevant with probability r/size.
      expected_hits.append(_take(before_rel, b) + m * safe_div(_take(rel, b), _take(size, b)))
    out["precision_at"] = columns([h / n for h, n in zip(expected_hits, ns)], num_q)
    if weighted:
      gain = scan.gain.astype(np.float64)
      before_gain = _exclusive_cumsum(gain)
      terms = _expected_prefix_sum(size, rel, gain, before_gain, before_n, size)
      wap = terms.sum(axis=1)
      before_terms = _exclusive_cumsum(terms)
      wap_at = [_take(before_terms, b) + _expected_prefix_sum(
          *(_take(x, b) for x in (size, rel, gain, before_gain, before_n)), m) for b, m in cuts]
  if weighted:
    hist = scan.gain_hist.astype(np.float64)
    out["nwap"] = safe_div(wap, _ideal_weighted_sum(hist, num_relevant))
    out["nwap_at"] = columns([safe_div(w, _ideal_weighted_sum(hist, np.minimum(num_relevant, k)))
                               for w, k in zip(wap_at, ks)], num_q)
  return out


def _harmonic_gap(start, length):
  """H(start + length) - H(start) = Σ_{t=1..length} 1 / (start + t), elementwise (float64).

  Via digamma (H(n) = ψ(n + 1) + γ), which stays accurate for start ~ 1e6 where a cumulative
  sum of 1/t would have drifted."""
  start = np.asarray(start, np.float64)
  return special.digamma(start + length + 1.0) - special.digamma(start + 1.0)


def _expected_prefix_sum(n, r, w, before_w, before_n, m):
  """E[Σ_{t=1..m} rel_t · C_t / (before_n + t)] over a uniformly random order of one tie group.

  The group holds n items at ranks before_n + 1 .. before_n + n, r of them relevant, with total
  gain w (irrelevant items have gain 0); C_t = before_w + (gain of the group's positions 1..t),
  before_w being the gain of all closer items. With binary gains (w = r, before_w = hits before
  the group) the sum with m = n is the group's expected contribution to Σ hits(rank)/rank of AP.

  Derivation: position t holds each item with probability 1/n, and positions u != t hold an
  ordered pair of distinct items with probability 1/(n(n-1)). Hence
    E[rel_t] = r/n,   E[rel_t · s_t] = w/n,
    E[rel_t · s_u] = Σ_{a relevant} Σ_{b != a} s_b / (n(n-1)) = (r - 1)·w / (n(n-1))   (u != t),
  so E[rel_t · C_t] = (r·before_w + w)/n + (t - 1)·(r - 1)·w/(n(n-1)), and with
  Σ_{t<=m} 1/(o+t) = ΔH and Σ_{t<=m} (t-1)/(o+t) = m - (o+1)·ΔH (o = before_n):
    E = (r·before_w + w)/n · ΔH + (r - 1)·w/(n(n-1)) · (m - (o+1)·ΔH).
  Empty groups give 0, singletons only the first term (their r·w term is 0 anyway).
  All arguments broadcast; returns float64.
  """
  n, r, w, before_w, before_n, m = (np.asarray(x, np.float64) for x in (n, r, w, before_w, before_n, m))
  gap = _harmonic_gap(before_n, m)
  first = safe_div(r * before_w + w, n) * gap
  pairs = safe_div((r - 1.0) * w, n * (n - 1.0))
  return first + pairs * (m - (before_n + 1.0) * gap)


def _locate_cut(size, k):
  """The group a cut at rank k (1 <= k <= N) falls in: (bucket b, m = ranks of b inside the cut),
  per query; b is the first distance whose cumulative size reaches k."""
  cum = np.cumsum(size, axis=1)
  b = (cum < k).sum(axis=1)
  before = _take(cum, b) - _take(size, b)
  return b, k - before


def _expected_ap_at(size, rel, before_n, before_rel, ap_terms, b, m):
  """E[AP@k] under random tie orders, for cuts (b, m) from `_locate_cut`.

  Groups before b are wholly inside the cut; their contribution A is fixed. Of group b only the
  first m positions are inside, holding X relevant items with X ~ Hypergeometric(n, r, m), and
  given X = x the relevant positions are a uniform x-subset of 1..m, so (by the same algebra as
  `_expected_prefix_sum` with n = m, r = x, w = x)
    E[numerator | x] = A + x/m·(h+1)·ΔH + x(x-1)/(m(m-1))·(m - (o+1)·ΔH),
  and E[AP@k] = Σ_x P(X = x) · E[numerator | x] / (h + x), with h the relevant items before b
  and 0 where h + x = 0. The sum runs over the support of X, in blocks of queries so the
  (queries, support) array stays small.
  """
  n, r, o, h = (_take(x, b) for x in (size, rel, before_n, before_rel))
  fixed = _take(_exclusive_cumsum(ap_terms), b)
  m = m.astype(np.float64)
  lo = np.maximum(0.0, m - (n - r))
  hi = np.minimum(r, m)
  gap = _harmonic_gap(o, m)
  first = (h + 1.0) * gap / m
  second = safe_div(m - (o + 1.0) * gap, m * (m - 1.0))
  log_norm = _log_choose(n, m)
  out = np.empty(n.shape[0])
  width = (hi - lo).astype(np.int64) + 1
  # Queries sorted by support width, processed in blocks of at most ~4M (query, x) cells.
  order = np.argsort(width, kind="stable")
  start = 0
  while start < order.size:
    stop = start + 1
    while stop < order.size and (stop - start + 1) * width[order[stop]] <= 2**22:
      stop += 1
    rows = order[start:stop]
    x = lo[rows, None] + np.arange(width[rows].max())[None, :]
    valid = x <= hi[rows, None]
    x = np.where(valid, x, lo[rows, None])
    log_p = (_log_choose(r[rows, None], x) + _log_choose((n - r)[rows, None], m[rows, None] - x)
             - log_norm[rows, None])
    p = np.where(valid, np.exp(log_p), 0.0)
    p /= p.sum(axis=1, keepdims=True)  # removes the rounding of the log-gamma terms
    numer = fixed[rows, None] + x * first[rows, None] + x * (x - 1.0) * second[rows, None]
    out[rows] = (p * safe_div(numer, h[rows, None] + x)).sum(axis=1)
    start = stop
  return out


def _ideal_weighted_sum(gain_hist, m):
  """Σ_{l=1..m} S*(l) / l, with S*(l) the summed gain of the l best items (gains sorted
  descending), from per-query gain histograms (Q, C + 1); m (Q,) <= number of relevant items.

  The sorted gains form runs of equal gain g; a run of c items after l0 items of total gain S0
  adds Σ_{t=1..c} (S0 + g·t) / (l0 + t) = (S0 - g·l0)·(H(l0 + c) - H(l0)) + g·c.
  """
  counts = gain_hist[:, :0:-1]
  values = np.arange(gain_hist.shape[1] - 1, 0, -1, dtype=np.float64)
  before_n = _exclusive_cumsum(counts)
  before_s = _exclusive_cumsum(counts * values)
  take = np.clip(np.asarray(m, np.float64)[:, None] - before_n, 0.0, counts)
  return ((before_s - values * before_n) * _harmonic_gap(before_n, take) + values * take).sum(axis=1)


def columns(cols, num_rows):
  """Stack (rows,) arrays as columns; (rows, 0) when there are none."""
  return np.stack(cols, axis=1) if cols else np.zeros((num_rows, 0))


def _log_choose(a, b):
  return special.gammaln(a + 1.0) - special.gammaln(b + 1.0) - special.gammaln(a - b + 1.0)


def safe_div(a, b):
  """a / b with 0 where b == 0 (empty groups, queries without relevant items)."""
  a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
  out = np.zeros(a.shape)
  np.divide(a, b, out=out, where=b != 0)
  return out


def _exclusive_cumsum(x):
  x = np.asarray(x, np.float64)
  return np.cumsum(x, axis=-1) - x


def _take(x, b):
  """x[i, b[i]] for each row i."""
  return np.take_along_axis(np.asarray(x), np.asarray(b)[:, None], axis=1)[:, 0]

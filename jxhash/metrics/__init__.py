"""Hamming-ranking retrieval metrics: mAP@all, mAP@k, P@N, precision/recall by radius, nwmAP.

Synopsis:

  from jxhash import metrics
  m = metrics.mean_average_precision(query_codes, db_codes, query_labels, db_labels)
  report = metrics.evaluate(query_codes, db_codes, query_labels, db_labels,
                            top_k=(100, 1000), pn=(10, 100, 1000))

Conventions shared by every function here:

  - Codes are {-1, +1} arrays, (Q, K) for the queries and (N, K) for the database; the Hamming
    distance is d = (K - q·r) / 2. Labels are multi-hot {0, 1}, (Q, C) and (N, C).
  - A database item is relevant to a query when they share at least one label. Its gain (used
    only by `normalized_weighted_map`) is the number of labels they share.
  - The ranking is by ascending Hamming distance. Ties are resolved by `ties`:
      "index"    ties broken by database index, as a stable sort does (MATLAB `sort`, numpy
                 `argsort(kind="stable")`). Deterministic; the default.
      "average"  the expectation of the metric when every order inside each group of equal
                 distance is equally likely (tie-aware measures, McSherry & Najork, ECIR 2008).
                 It does not depend on the database order. Computed in closed form from the
                 number of items / relevant items / gain at each distance (derivation at
                 `_expected_prefix_sum`), with no sampling.
  - Rank r is 1-based; hits(r) is the number of relevant items at ranks 1..r; R is the number
    of relevant items in the whole database.
  - A query with no relevant item (R = 0) has AP 0 and counts in every mean, as in the DCMH
    reference `calc_map`; `evaluate` reports how many there are.
  - Cut-offs larger than N are clamped to N (the ranking simply ends).

How it is computed: distances take only K + 1 values, so the (distance, index) rank of every
item follows from per-query bucket counts and one pass in index order, and the tie-averaged
metrics from the bucket counts alone; no comparison sort is needed. Queries are processed in
chunks; no (Q, N) array is formed by the compiled CPU kernel, and at most (chunk, N) by the
others, so memory stays bounded for million-item databases. Backend (`backend=None`):
"jax" when `jax.default_backend()` is not "cpu" (XLA's sort is fast on GPU/TPU), else "numba"
when numba is installed (compiled counting kernel, queries in parallel over the cores), else
"numpy" (packed popcount + numpy's radix sort); on CPU, problems under 1e5 query×item pairs
always use "numpy" (starting the numba thread pool would cost more than the work). All three
give the same numbers up to float rounding (the jax backend accumulates in float32, ~1e-7
relative). The jax backend takes device arrays where they are (codes straight from an
encoder are never copied to the host; their ±1 check runs on the device) and sizes its query
chunks from the device's free memory (`_device_budget`); with ties="index" and no gains it
reduces every chunk to per-query numbers on the device and reads them back once, otherwise
the per-query bucket counts come back and the closed forms run in float64 on the host
(digamma differences at ranks ~1e5 lose their digits in float32). The numba kernel runs on numba's threading layer (OpenMP by default); on an
oversubscribed machine OMP_WAIT_POLICY=passive (or NUMBA_THREADING_LAYER=workqueue) avoids
spinning worker threads.

All functions accept numpy or jax arrays and return numpy values / Python floats. Bad inputs
raise `jxhash.errors.UserError` (a `ValueError`) naming the argument and its shape.

The public functions live here; their parts are submodules, one job each:
  inputs         checks of the arrays given to the public functions (one `UserError` each)
  ranking        the scans: per-query bucket counts and (distance, index) ranks, per backend
  numba_kernels  the compiled CPU kernels of the "numba" scan (imported on first use); its
                 `popcount` is also used by `jxhash.index`
  tie_average    per-query metrics from a scan: index-tie reduction, tie-aware closed forms

May import: numpy, scipy, jax, numba (optional, on first use), `jxhash.codes`,
`jxhash.errors`; never the trainer, a method, the data loaders or a command.

Length (over 400 lines): every metric's formula, tie rule and reference is written in its
docstring.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jxhash import codes as codes_lib
from jxhash.errors import UserError
from jxhash.metrics import inputs, ranking, tie_average

TIES = ("index", "average")
BACKENDS = ranking.BACKENDS

# Below this many query×item pairs `backend=None` uses the numpy scan on CPU: waking the numba
# thread pool costs more than the work there (up to milliseconds on a busy machine).
_SMALL_PROBLEM = 100_000

# Memory a chunk of queries may use for its work arrays: host memory for the numba / numpy
# scans, device memory for jax. None for jax: a quarter of the device's free memory, between
# 256 MiB and 8 GiB (`_device_budget`; 2 GiB where the device does not report its memory),
# so that an accelerator sorts enough rows per call. Tests set small values to force many chunks.
_CHUNK_BYTES = {"numba": 256 * 2**20, "numpy": 256 * 2**20, "jax": None}

# Device bytes per (query, database item) of the jax programs: their (chunk, N) work arrays
# (distances, gains, sort keys, ranked relevance, hits, precision terms). XLA's memory analysis
# of the compiled programs on the CPU gives 51-59 bytes for chunks of 1-8 queries and 24-32
# from 32 on, rounded up here; tests/test_metrics_device.py checks the bound on the CPU and
# benchmarks/device.py records the figure on a GPU at NUS-WIDE scale.
_JAX_BYTES_PER_PAIR = 64


# ----------------------------------------------------------------------------- public API

def hamming_distance(query_codes, db_codes) -> np.ndarray:
  """Hamming distances between every query code and every database code.

  Args:
    query_codes: (Q, K) array of ±1.
    db_codes: (N, K) array of ±1.

  Returns:
    (Q, N) int32 array, entry [i, j] = #{bits where query i and item j differ} = (K - q_i·r_j) / 2.
  """
  q = inputs.check_codes(query_codes, "query_codes")
  db = inputs.check_codes(db_codes, "db_codes")
  inputs.check_same_width(q, db, "query_codes", "db_codes", "bits")
  # XOR + popcount on packed words beat the float32 ±1 matmul here (2-core CPU, 64 bits) and
  # are exact for any K. Rows go in chunks so the uint64 XOR temporary stays small.
  q_words, db_words = codes_lib.pack(q), codes_lib.pack(db)
  out = np.empty((q.shape[0], db.shape[0]), np.int32)
  rows = max(1, _CHUNK_BYTES["numpy"] // (8 * db.shape[0]))
  for start in range(0, q.shape[0], rows):
    out[start:start + rows] = ranking.pair_popcount(q_words[start:start + rows], db_words,
                                                    np.bitwise_xor, q.shape[1])
  return out


def average_precision(query_codes, db_codes, query_labels, db_labels, *, top_k=None,
                      ties: str = "index", backend: str | None = None,
                      chunk_size: int | None = None) -> np.ndarray:
  """Average precision of each query's Hamming ranking of the database.

  With the ranking of the module docstring (ascending distance, `ties`), rank r, hits(r) and R:

    AP@all = (1 / R) · Σ_{relevant j} hits(rank_j) / rank_j        (0 if R = 0)

  i.e. the mean of precision@rank over the ranks of all relevant items (DCMH `calc_map`).
  With `top_k=k` the ranking is truly cut at rank k:

    AP@k = (1 / R_k) · Σ_{relevant j, rank_j <= k} hits(rank_j) / rank_j,   R_k = hits(k)
    (0 if R_k = 0)

  the mean of precision@rank over the relevant items inside the top k, divided by the number of
  relevant items inside the top k. This is the convention of the MATLAB
  `calcMapTopkMapTopkPreTopkRecLabel.m` (topkMap). It is not the PyTorch `calc_map_k` of
  several public ports, which takes the first min(k, R) relevant items wherever they are in the
  full ranking. For k >= N, AP@k = AP@all.

  With ties="average" the result is E[AP] (E[AP@k]) over uniformly random orders within each
  group of equal distance; for AP@k the denominator R_k is itself random when k falls inside a
  group, and the expectation of the ratio is taken exactly (hypergeometric over the number of
  relevant items of that group that make the cut).

  Args:
    query_codes: (Q, K) ±1 codes.
    db_codes: (N, K) ±1 codes.
    query_labels: (Q, C) multi-hot 0/1 labels.
    db_labels: (N, C) multi-hot 0/1 labels.
    top_k: None (whole ranking) or a positive int k.
    ties: "index" or "average" (module docstring).
    backend: None (choose automatically), "numba", "numpy" or "jax".
    chunk_size: queries per chunk (None: from a 256 MiB working-memory budget).

  Returns:
    (Q,) float64 array of AP values in [0, 1].
  """
  ks = None if top_k is None else (inputs.check_cutoff(top_k, "top_k"),)
  stats = _compute(query_codes, db_codes, query_labels, db_labels, ks=ks or (), ns=(), ties=ties,
                   weighted=False, backend=backend, chunk_size=chunk_size)
  return stats["ap"] if ks is None else stats["ap_at"][:, 0]


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, *, top_k=None,
                           ties: str = "index", backend: str | None = None,
                           chunk_size: int | None = None) -> float:
  """mAP: the mean over all Q queries of `average_precision` (same arguments).

  Queries with no relevant item contribute AP 0 and count in the mean.

  Returns:
    float in [0, 1].
  """
  return float(np.mean(average_precision(query_codes, db_codes, query_labels, db_labels, top_k=top_k,
                                         ties=ties, backend=backend, chunk_size=chunk_size)))


def precision_at_n(query_codes, db_codes, query_labels, db_labels, *, n=(1, 10, 100, 1000),
                   ties: str = "index", backend: str | None = None,
                   chunk_size: int | None = None) -> np.ndarray:
  """Mean precision of the top n of each query's Hamming ranking (the P@N curve).

    P@n = mean over queries of hits(n') / n',   n' = min(n, N)

  (the top n is the first n' items when n exceeds N). With ties="average", hits(n') is its
  expectation over random orders within the group of equal distance that the cut falls in.
  Queries with no relevant item count with precision 0.

  Args:
    query_codes, db_codes, query_labels, db_labels: as in `average_precision`.
    n: a positive int or a sequence of them.
    ties, backend, chunk_size: as in `average_precision`.

  Returns:
    (len(n),) float64 array (shape (1,) for an int n).
  """
  ns = inputs.check_cutoffs(n, "n")
  stats = _compute(query_codes, db_codes, query_labels, db_labels, ks=(), ns=ns, ties=ties,
                   weighted=False, backend=backend, chunk_size=chunk_size)
  return stats["precision_at"].mean(axis=0)


def precision_recall_by_radius(query_codes, db_codes, query_labels, db_labels, *,
                               backend: str | None = None,
                               chunk_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Hash-lookup precision and recall for Hamming radius r = 0..K, pooled over all query×item pairs.

    retrieved(r) = #{(i, j) : d_ij <= r},   good(r) = #{(i, j) : d_ij <= r, j relevant to i}
    precision(r) = good(r) / retrieved(r)
    recall(r)    = good(r) / #{relevant pairs}

  Precision is undefined (0/0) at a radius that retrieves nothing and is NaN there; since
  retrieved(r) only grows with r, those radii are a prefix 0..r0-1. Recall is NaN at every
  radius when no relevant pair exists. Either way the radius has no point on the PR curve:
  `np.isfinite(precision) & np.isfinite(recall)` selects the points to draw. (The MATLAB
  `calcPreRecRadiusLabel.m` reports good / (retrieved + eps) = 0 there, which puts a spurious
  (recall 0, precision 0) point at the start of the curve; it also stops at radius max(d) - 1,
  whereas every radius 0..K is reported here, so recall(K) = 1 whenever a relevant pair exists.)
  The tie rule plays no role.

  `evaluate` stores the pair counts instead of these ratios (they average over seeds without
  NaN); `pr_curve_points` turns them back into the drawable points.

  Args:
    query_codes, db_codes, query_labels, db_labels, backend, chunk_size: as in
      `average_precision`.

  Returns:
    (precision, recall): two (K + 1,) float64 arrays, index r = radius r, NaN where undefined.
  """
  stats = _compute(query_codes, db_codes, query_labels, db_labels, ks=(), ns=(), ties="average",
                   weighted=False, backend=backend, chunk_size=chunk_size)
  return _pr_curve(np.cumsum(stats["retrieved"]), np.cumsum(stats["good"]))


def pr_curve_points(pr_radius: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The drawable points of the PR-by-radius curve in an `evaluate` result (or its seed mean).

  Args:
    pr_radius: the "pr_radius" dict of `evaluate`: "radius", "retrieved" and
      "retrieved_relevant", three lists of equal length (as read back from a results file).

  Returns:
    (radius, precision, recall): float64 arrays holding only the radii where both ratios are
    defined (`precision_recall_by_radius`); empty when there is no relevant pair. A mean over
    seeds of the per-query counts gives the curve pooled over the seeds' query×item pairs.
  """
  try:
    radius, retrieved, good = (np.asarray(pr_radius[key], np.float64)
                               for key in ("radius", "retrieved", "retrieved_relevant"))
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"pr_radius must hold numeric lists radius, retrieved, retrieved_relevant: {e}") from None
  if not radius.ndim == retrieved.ndim == good.ndim == 1 or not radius.size == retrieved.size == good.size:
    raise UserError(f"pr_radius lists must be 1-D and of equal length, got {radius.shape}, "
                    f"{retrieved.shape}, {good.shape}")
  precision, recall = _pr_curve(retrieved, good)
  keep = np.isfinite(precision) & np.isfinite(recall)
  return radius[keep], precision[keep], recall[keep]


def normalized_weighted_map(query_codes, db_codes, query_labels, db_labels, *, top_k=None,
                            ties: str = "index", backend: str | None = None,
                            chunk_size: int | None = None) -> float:
  """Normalized weighted mAP: ranking quality graded by the number of shared labels.

  The gain of item j for a query is s_j = number of labels they share (relevant iff s_j > 0);
  S(r) is the summed gain of ranks 1..r. Per query,

    WAP = Σ_{relevant j} S(rank_j) / rank_j,
    NWAP = WAP / WAP*,

  where WAP* is the same sum for the ideal ranking (items by decreasing gain), so NWAP is in
  [0, 1] and equals 1 for a ranking that orders items by gain. The result is the mean of NWAP
  over all queries, those with no relevant item counting 0. For single-label data (all gains
  0/1) NWAP = AP. This is `calc_nwmap` of the DCPH code (1034829217/paddle
  `DCPH/utils/calc_hr.py`; its 1/R factor cancels in the ratio), with a stable instead of an
  unstable sort (`ties`).

  With `top_k=k` both rankings are cut at k: WAP@k sums over relevant items with rank_j <= k,
  WAP*@k is the ideal sum over its first min(R, k) ranks, and NWAP@k = WAP@k / WAP*@k. (A
  common normalizer keeps NWAP@k <= 1; dividing each side by its own number of relevant items,
  as `average_precision` does for AP@k, would not.) With ties="average" the expectation of WAP
  (WAP@k) over random orders within ties is used; WAP* does not depend on the ranking.

  Args:
    as in `average_precision`.

  Returns:
    float in [0, 1].
  """
  ks = None if top_k is None else (inputs.check_cutoff(top_k, "top_k"),)
  stats = _compute(query_codes, db_codes, query_labels, db_labels, ks=ks or (), ns=(), ties=ties,
                   weighted=True, backend=backend, chunk_size=chunk_size)
  return float(np.mean(stats["nwap"] if ks is None else stats["nwap_at"][:, 0]))


def count_no_relevant(query_labels, db_labels) -> int:
  """Number of queries that share no label with any database item (their AP is 0)."""
  ql = inputs.check_labels(query_labels, "query_labels")
  dl = inputs.check_labels(db_labels, "db_labels")
  inputs.check_same_width(ql, dl, "query_labels", "db_labels", "classes")
  # A query has a relevant item iff one of its labels occurs anywhere in the database.
  present = dl.any(axis=0)
  return int((~(ql.astype(bool) & present).any(axis=1)).sum())


def chance_map(query_labels, db_labels) -> float:
  """The expected mAP@all of a uniformly random ranking: the level a model must beat.

  For a query with R relevant items among N, the expected AP over random orders is
  (R - 1) / (N - 1) + H_N (N - R) / (N (N - 1)), H_N the N-th harmonic number (close to R / N
  for large N); a query with R = 0 scores 0, as in `average_precision`.

  Args:
    query_labels: (Q, C) multi-hot labels.
    db_labels: (N, C) multi-hot labels.

  Returns:
    the mean over the Q queries.
  """
  ql = inputs.check_labels(query_labels, "query_labels").astype(np.float64)
  dl = inputs.check_labels(db_labels, "db_labels").astype(np.float64)
  inputs.check_same_width(ql, dl, "query_labels", "db_labels", "classes")
  n = dl.shape[0]
  relevant = ((ql @ dl.T) > 0).sum(axis=1).astype(np.float64)
  if n == 1:
    return float((relevant > 0).mean())
  harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
  expected = (relevant - 1) / (n - 1) + harmonic * (n - relevant) / (n * (n - 1))
  return float(np.where(relevant > 0, expected, 0.0).mean())


def evaluate(query_codes, db_codes, query_labels, db_labels, *, top_k=(1000,),
             pn=(1, 10, 50, 100, 500, 1000), ties: str = "index", nwmap: bool = False,
             backend: str | None = None, chunk_size: int | None = None) -> dict:
  """All retrieval metrics in one scan of the database, as a plain dict (JSON-ready).

  Args:
    query_codes, db_codes, query_labels, db_labels: as in `average_precision`.
    top_k: cut-offs k for mAP@k (a sequence of positive ints; may be empty).
    pn: the N values of the P@N curve (a sequence of positive ints; may be empty).
    ties: "index" or "average" (module docstring); applies to every ranking metric.
    nwmap: also report the normalized weighted mAP (`normalized_weighted_map`).
    backend, chunk_size: as in `average_precision`.

  Returns:
    {
      "map": mAP@all (float),
      "map@k": {k: mAP@k (float) for k in top_k},
      "num_queries": Q (int),
      "num_no_relevant": number of queries without any relevant item (int; AP 0, counted),
      "p@n": {"n": list(pn), "precision": [P@n for n in pn]},
      "pr_radius": {"radius": [0..K], "retrieved": [...], "retrieved_relevant": [...]}: the
                   mean number of database items (of relevant items) within radius r of a
                   query; `pr_curve_points` gives the PR curve (`precision_recall_by_radius`)
                   from them. Counts rather than ratios, because precision is undefined at a
                   radius that retrieves nothing and the dict must stay NaN-free with the same
                   structure for every seed,
      and with nwmap=True: "nwmap": float, "nwmap@k": {k: float for k in top_k},
    }
    Every leaf is a Python int or float (so the dict averages leaf-wise with `jax.tree.map`);
    the k keys are ints, which `json.dump` writes as strings.
  """
  ks = inputs.check_cutoffs(top_k, "top_k", allow_empty=True)
  ns = inputs.check_cutoffs(pn, "pn", allow_empty=True)
  stats = _compute(query_codes, db_codes, query_labels, db_labels, ks=ks, ns=ns, ties=ties,
                   weighted=bool(nwmap), backend=backend, chunk_size=chunk_size)
  num_q = stats["ap"].shape[0]
  out = {
      "map": float(stats["ap"].mean()),
      "map@k": {k: float(v) for k, v in zip(ks, stats["ap_at"].mean(axis=0))},
      "num_queries": int(num_q),
      "num_no_relevant": int((stats["num_relevant"] == 0).sum()),
      "p@n": {"n": list(ns), "precision": [float(v) for v in stats["precision_at"].mean(axis=0)]},
      "pr_radius": {"radius": list(range(stats["retrieved"].shape[0])),
                    "retrieved": (np.cumsum(stats["retrieved"]) / num_q).tolist(),
                    "retrieved_relevant": (np.cumsum(stats["good"]) / num_q).tolist()},
  }
  if nwmap:
    out["nwmap"] = float(stats["nwap"].mean())
    out["nwmap@k"] = {k: float(v) for k, v in zip(ks, stats["nwap_at"].mean(axis=0))}
  return out


def default_backend() -> str:
  """The backend `backend=None` resolves to here for problems of 1e5 query×item pairs or more:
  "jax" off-CPU, else "numba" if importable, else "numpy"."""
  if jax.default_backend() != "cpu":
    return "jax"
  return "numba" if ranking.have_numba() else "numpy"


# -------------------------------------------------------------------------------- driver

def _compute(query_codes, db_codes, query_labels, db_labels, *, ks, ns, ties, weighted, backend,
             chunk_size) -> dict:
  """Validate, scan the database in query chunks, and reduce each chunk to per-query numbers.

  Returns a dict of numpy arrays:
    ap (Q,), ap_at (Q, len(ks)), precision_at (Q, len(ns)), num_relevant (Q,),
    retrieved / good (K + 1,) pair counts at each distance summed over queries,
    and if weighted: nwap (Q,), nwap_at (Q, len(ks)).
  """
  if ties not in TIES:
    raise UserError(f"ties must be one of {TIES}, got {ties!r}")
  if backend is None:
    backend = default_backend()
    if backend == "numba" and inputs.size(query_codes, 0) * inputs.size(db_codes, 0) < _SMALL_PROBLEM:
      backend = "numpy"
  if backend not in BACKENDS:
    raise UserError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
  if backend == "numba" and not ranking.have_numba():
    raise UserError("backend 'numba' needs the numba package (pip install numba)")
  # With the jax backend, device arrays are checked where they are (a scalar comes back);
  # the other backends read them on the host.
  on_device = backend == "jax"
  q_codes = inputs.check_codes(query_codes, "query_codes", on_device_ok=on_device)
  db_codes = inputs.check_codes(db_codes, "db_codes", on_device_ok=on_device)
  q_labels = inputs.check_labels(query_labels, "query_labels", on_device_ok=on_device)
  db_labels = inputs.check_labels(db_labels, "db_labels", on_device_ok=on_device)
  inputs.check_same_width(q_codes, db_codes, "query_codes", "db_codes", "bits")
  inputs.check_same_width(q_labels, db_labels, "query_labels", "db_labels", "classes")
  inputs.check_rows(q_codes, q_labels, "query_codes", "query_labels")
  inputs.check_rows(db_codes, db_labels, "db_codes", "db_labels")
  (num_q, bits), (n_db, num_classes) = q_codes.shape, db_labels.shape
  if bits > ranking.MAX_VALUE or num_classes > ranking.MAX_VALUE:
    raise UserError(f"at most {ranking.MAX_VALUE} bits and classes are supported, got "
                    f"{bits} bits and {num_classes} classes")

  ks_eff = np.minimum(np.asarray(ks, np.int64), n_db)
  ns_eff = np.minimum(np.asarray(ns, np.int64), n_db)
  index_ties = ties == "index"
  top_len = int(max(ks_eff.max(initial=0), ns_eff.max(initial=0))) if index_ties else 0
  if chunk_size is None:
    # Bytes per query: the reduction's (chunk, L) arrays and small per-bucket ones, plus the
    # (chunk, N) arrays of the sorting backends (the numba kernel needs O(N) per thread only).
    per_query = 64 * top_len + 64 * (bits + num_classes + 2)
    per_query += {"numba": 0, "numpy": 40, "jax": _JAX_BYTES_PER_PAIR}[backend] * n_db
    budget = _CHUNK_BYTES[backend]
    if budget is None:
      budget = _device_budget(q_codes)
    chunk_size = int(np.clip(budget // per_query, 1, 1024))
    if backend == "jax":  # the scan pads a chunk's rows to a power of two: stay within the budget
      chunk_size = 1 << (chunk_size.bit_length() - 1)
  elif not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
    raise UserError(f"chunk_size must be a positive int or None, got {chunk_size!r}")

  database = ranking.prepare(backend, db_codes, db_labels)
  queries = ranking.prepare(backend, q_codes, q_labels)
  if backend == "jax" and index_ties and not weighted:
    return _compute_on_device(queries, database, chunk_size=chunk_size, num_buckets=bits + 1,
                              ks=tuple(ks_eff.tolist()), ns=tuple(ns_eff.tolist()))
  parts = []
  for start in range(0, num_q, chunk_size):
    stop = min(start + chunk_size, num_q)
    chunk = tuple(x[start:stop] for x in queries)
    result = ranking.scan(backend, chunk, database, num_buckets=bits + 1,
                          num_classes=num_classes, top_len=top_len, index_ties=index_ties,
                          weighted=weighted)
    parts.append(tie_average.reduce_scan(result, ks_eff, ns_eff, index_ties=index_ties, weighted=weighted))
  out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
  for name in ("retrieved", "good"):  # pooled over queries
    out[name] = np.sum([p[name] for p in parts], axis=0)
  return out


def _compute_on_device(queries, database, *, chunk_size, num_buckets, ks, ns) -> dict:
  """`_compute`'s result for index ties without gains, reduced on the device chunk by chunk;
  the per-query numbers of all chunks come back to the host in one transfer at the end."""
  parts = []
  for start in range(0, queries[0].shape[0], chunk_size):
    chunk = tuple(x[start:start + chunk_size] for x in queries)
    parts.append(ranking.device_index_metrics(chunk, database, num_buckets=num_buckets, ks=ks, ns=ns))
  gathered = {name: jnp.concatenate([p[name] for p in parts]) for name in ("ap", "ap_at", "precision_at",
                                                                           "num_relevant")}
  for name in ("retrieved", "good"):
    gathered[name] = sum(p[name] for p in parts)
  host = jax.device_get(gathered)
  out = {name: np.asarray(v, np.float64) for name, v in host.items()}
  for name in ("num_relevant", "retrieved", "good"):
    out[name] = np.asarray(host[name], np.int64)
  return out


def _device_budget(like) -> int:
  """Device bytes a chunk of the jax scan may use: a quarter of the free memory of the device
  holding `like` (or the default device), clipped to [256 MiB, 8 GiB]; 2 GiB when the device
  does not report its memory (CPU)."""
  devices = getattr(like, "devices", None)
  device = next(iter(devices())) if callable(devices) else jax.devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - not every backend implements memory statistics
    stats = None
  if not stats or "bytes_limit" not in stats:
    return 2 * 2**30
  free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
  return int(np.clip(free // 4, 256 * 2**20, 8 * 2**30))


def _pr_curve(retrieved, good):
  """(precision, recall) at each radius from the cumulative counts within it (any common scale:
  pairs, or pairs per query); NaN where undefined, see `precision_recall_by_radius`."""
  retrieved, good = np.asarray(retrieved, np.float64), np.asarray(good, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    precision = np.where(retrieved > 0, good / retrieved, np.nan)
    total = good[-1] if good.size else 0.0  # radius K retrieves every pair
    recall = good / total if total > 0 else np.full(good.shape, np.nan)
  return precision, recall



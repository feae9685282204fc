"""jxhash.metrics: hand-computed cases, an independent per-query loop, brute-force tie averages,
and agreement between the numba / numpy / jax backends."""

import itertools
import json

import jax
import numpy as np
import pytest
import scipy.io

from jxhash import metrics
from jxhash.metrics import ranking
from jxhash.errors import UserError
from conftest import shared_path

pytestmark = pytest.mark.usefixtures("strict_promotion")

BACKENDS = ["numpy", "jax"] + (["numba"] if ranking.have_numba() else [])
# The jax backend sums in float32; the others in float64.
TOL = {"numpy": 1e-12, "numba": 1e-12, "jax": 1e-6}

# One query, code +1 +1 +1, and five items. Distances d = [1, 0, 1, 2, 0], relevant (shares a
# label) = [1, 0, 1, 0, 1], gains (shared labels) = [2, 0, 1, 0, 1].
# Index ranking: d=0 -> items 1, 4 (ranks 1, 2); d=1 -> items 0, 2 (ranks 3, 4); d=2 -> item 3.
# Ranked relevance [0, 1, 1, 1, 0], ranked gains [0, 1, 2, 1, 0].
Q1 = np.array([[1, 1, 1]])
DB = np.array([[1, 1, -1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, 1, 1]])
QL = np.array([[1, 1, 0]])
DL = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]])
# A second query whose only label no item has: AP 0, still counted.
Q2 = np.array([[1, 1, 1], [-1, 1, 1]])
QL2 = np.array([[1, 1, 0, 0], [0, 0, 0, 1]])
DL2 = np.pad(DL, ((0, 0), (0, 1)))


def test_hamming_distance_hand():
  d = metrics.hamming_distance(Q2, DB)
  np.testing.assert_array_equal(d, [[1, 0, 1, 2, 0], [2, 1, 0, 1, 1]])
  assert d.dtype == np.int32


@pytest.mark.parametrize("backend", BACKENDS)
def test_average_precision_hand_index_ties(backend):
  ap = lambda **kw: metrics.average_precision(Q1, DB, QL, DL, backend=backend, **kw)[0]
  # Relevant at ranks 2, 3, 4 with hits 1, 2, 3: (1/2 + 2/3 + 3/4) / 3 = (23/12) / 3 = 23/36.
  assert ap() == pytest.approx(23 / 36, abs=TOL[backend])
  # Top 1 = [0]: no relevant item inside the cut -> 0.
  assert ap(top_k=1) == 0.0
  # Top 2 = [0, 1], k=2 below R=3: one relevant, precision 1/2, divided by 1 -> 1/2.
  assert ap(top_k=2) == pytest.approx(1 / 2, abs=TOL[backend])
  # Top 3 = [0, 1, 1]: (1/2 + 2/3) / 2 = 7/12.
  assert ap(top_k=3) == pytest.approx(7 / 12, abs=TOL[backend])
  # k beyond N=5 is the whole ranking.
  assert ap(top_k=10) == pytest.approx(23 / 36, abs=TOL[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_average_precision_hand_average_ties(backend):
  ap = lambda **kw: metrics.average_precision(Q1, DB, QL, DL, ties="average", backend=backend, **kw)[0]
  # Only the d=0 group {item 1 irrelevant, item 4 relevant} has a choice (the d=1 group is all
  # relevant). Orders [0, 1, 1, 1, 0] (AP 23/36) and [1, 0, 1, 1, 0] ((1 + 2/3 + 3/4)/3 = 29/36)
  # are equally likely: E[AP] = 26/36 = 13/18.
  assert ap() == pytest.approx(13 / 18, abs=TOL[backend])
  # AP@1: 0 or 1 -> 1/2. AP@2: [0, 1] -> 1/2, [1, 0] -> 1 -> 3/4.
  assert ap(top_k=1) == pytest.approx(1 / 2, abs=TOL[backend])
  assert ap(top_k=2) == pytest.approx(3 / 4, abs=TOL[backend])
  assert ap(top_k=99) == pytest.approx(13 / 18, abs=TOL[backend])


@pytest.mark.parametrize("ties", ["index", "average"])
def test_zero_relevant_query_counts_as_zero(ties):
  ap = metrics.average_precision(Q2, DB, QL2, DL2, ties=ties)
  assert ap[1] == 0.0
  first = 23 / 36 if ties == "index" else 13 / 18
  assert metrics.mean_average_precision(Q2, DB, QL2, DL2, ties=ties) == pytest.approx(first / 2, abs=1e-12)
  assert metrics.count_no_relevant(QL2, DL2) == 1
  assert metrics.evaluate(Q2, DB, QL2, DL2, ties=ties)["num_no_relevant"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_precision_at_n_hand(backend):
  # Ranked relevance [0, 1, 1, 1, 0]: P@1 = 0, P@2 = 1/2, P@4 = 3/4, P@10 -> top 5: 3/5.
  p = metrics.precision_at_n(Q1, DB, QL, DL, n=(1, 2, 4, 10), backend=backend)
  np.testing.assert_allclose(p, [0, 1 / 2, 3 / 4, 3 / 5], atol=TOL[backend])
  # Average ties: rank 1 is relevant with probability 1/2; the top 2 always hold one.
  p = metrics.precision_at_n(Q1, DB, QL, DL, n=(1, 2, 3), ties="average", backend=backend)
  np.testing.assert_allclose(p, [1 / 2, 1 / 2, 2 / 3], atol=TOL[backend])
  assert metrics.precision_at_n(Q1, DB, QL, DL, n=2).shape == (1,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_precision_recall_by_radius_hand(backend):
  precision, recall = metrics.precision_recall_by_radius(Q1, DB, QL, DL, backend=backend)
  # r=0: items 1, 4 (one relevant); r=1: + items 0, 2 (both relevant); r>=2: all five.
  np.testing.assert_allclose(precision, [1 / 2, 3 / 4, 3 / 5, 3 / 5], atol=TOL[backend])
  np.testing.assert_allclose(recall, [1 / 3, 1, 1, 1], atol=TOL[backend])


@pytest.mark.parametrize("backend", BACKENDS)
def test_precision_is_undefined_where_nothing_is_retrieved(backend):
  # The only item differs in 2 bits: radii 0 and 1 retrieve nothing, so precision is 0/0 there
  # (NaN, no point on the curve), not 0; recall there is a true 0 of 1 relevant pair.
  precision, recall = metrics.precision_recall_by_radius(Q1, -DB[:1], QL, DL[:1], backend=backend)
  np.testing.assert_array_equal(np.isnan(precision), [True, True, False, False])
  np.testing.assert_allclose(precision[2:], [1, 1], atol=TOL[backend])
  np.testing.assert_allclose(recall, [0, 0, 1, 1], atol=TOL[backend])


def test_recall_is_undefined_without_relevant_pairs():
  # Query 2 of Q2 has a label no item has; alone it has no relevant pair at any radius.
  # Distances [2, 1, 0, 1, 1]: retrieved 1, 4, 5, 5 pairs, none relevant.
  precision, recall = metrics.precision_recall_by_radius(Q2[1:], DB, QL2[1:], DL2)
  np.testing.assert_array_equal(precision, [0, 0, 0, 0])
  assert np.isnan(recall).all()
  out = metrics.evaluate(Q2[1:], DB, QL2[1:], DL2)
  radius, p, r = metrics.pr_curve_points(out["pr_radius"])
  assert radius.size == p.size == r.size == 0


def test_evaluate_pr_radius_counts_and_points():
  # Two queries against DB. Query 1 as in the hand case: distances [1, 0, 1, 2, 0], relevant
  # items {0, 2, 4}. Query 2 (code Q2[1], label 2 only): distances [2, 1, 0, 1, 1], relevant
  # items {1, 3, 4}. Pairs within radius r, as a mean per query:
  #   r=0: q1 {1, 4}, q2 {2}               -> retrieved 3/2; relevant q1 {4}              -> 1/2
  #   r=1: q1 {0, 1, 2, 4}, q2 {1, 2, 3, 4} -> 8/2;           relevant {0, 2, 4} + {1, 3, 4} -> 6/2
  #   r>=2: all 10                          -> 10/2;          relevant 6                   -> 6/2
  ql3 = np.array([[1, 1, 0], [0, 0, 1]])
  out = metrics.evaluate(Q2, DB, ql3, DL, top_k=(), pn=())
  pr = out["pr_radius"]
  assert pr["radius"] == [0, 1, 2, 3]
  np.testing.assert_allclose(pr["retrieved"], [3 / 2, 8 / 2, 10 / 2, 10 / 2])
  np.testing.assert_allclose(pr["retrieved_relevant"], [1 / 2, 6 / 2, 6 / 2, 6 / 2])
  radius, precision, recall = metrics.pr_curve_points(pr)
  np.testing.assert_array_equal(radius, [0, 1, 2, 3])
  np.testing.assert_allclose(precision, [1 / 3, 6 / 8, 6 / 10, 6 / 10])
  np.testing.assert_allclose(recall, [1 / 6, 1, 1, 1])
  np.testing.assert_allclose(metrics.precision_recall_by_radius(Q2, DB, ql3, DL), (precision, recall))


def test_pr_curve_points_drop_radii_that_retrieve_nothing():
  out = metrics.evaluate(Q1, -DB[:1], QL, DL[:1], top_k=(), pn=())
  assert out["pr_radius"]["retrieved"] == [0.0, 0.0, 1.0, 1.0]
  radius, precision, recall = metrics.pr_curve_points(out["pr_radius"])
  np.testing.assert_array_equal(radius, [2, 3])
  np.testing.assert_allclose(precision, [1, 1])
  np.testing.assert_allclose(recall, [1, 1])
  # Averaged over two seeds where only one retrieved something at radius 0, the counts pool the
  # seeds' pairs: precision at r=0 is that seed's, not halved by a placeholder 0.
  seed_a = {"radius": [0, 1], "retrieved": [0.0, 4.0], "retrieved_relevant": [0.0, 2.0]}
  seed_b = {"radius": [0, 1], "retrieved": [2.0, 4.0], "retrieved_relevant": [1.0, 2.0]}
  mean = jax.tree.map(lambda *v: float(np.mean(v)), seed_a, seed_b)
  radius, precision, recall = metrics.pr_curve_points(mean)
  np.testing.assert_allclose(precision, [1 / 2, 1 / 2])
  np.testing.assert_allclose(recall, [1 / 4, 1])


@pytest.mark.parametrize("bad", [
    {"radius": [0, 1]},
    {"radius": [0, 1], "retrieved": [1, 2], "retrieved_relevant": [1]},
    {"radius": [0], "retrieved": ["x"], "retrieved_relevant": [0]},
])
def test_pr_curve_points_rejects_malformed(bad):
  with pytest.raises(UserError, match="pr_radius"):
    metrics.pr_curve_points(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalized_weighted_map_hand(backend):
  nw = lambda **kw: metrics.normalized_weighted_map(Q1, DB, QL, DL, backend=backend, **kw)
  # Ranked gains [0, 1, 2, 1, 0], cumulative S = [0, 1, 3, 4, 4]; relevant ranks 2, 3, 4:
  # WAP = 1/2 + 3/3 + 4/4 = 5/2. Ideal gains [2, 1, 1, 0, 0], S* = [2, 3, 4]:
  # WAP* = 2/1 + 3/2 + 4/3 = 29/6. NWAP = (5/2) / (29/6) = 15/29.
  assert nw() == pytest.approx(15 / 29, abs=TOL[backend])
  # Cut at 2: WAP@2 = 1/2; WAP*@2 = 2 + 3/2 = 7/2 -> 1/7.
  assert nw(top_k=2) == pytest.approx(1 / 7, abs=TOL[backend])
  # Average ties: both the d=0 group (gains 0, 1) and the d=1 group (gains 2, 1) can flip:
  #   [0, 1, 2, 1, 0]: S = [0, 1, 3, 4, 4], WAP = 1/2 + 3/3 + 4/4 = 5/2
  #   [1, 0, 2, 1, 0]: S = [1, 1, 3, 4, 4], WAP = 1/1 + 3/3 + 4/4 = 3
  #   [0, 1, 1, 2, 0]: S = [0, 1, 2, 4, 4], WAP = 1/2 + 2/3 + 4/4 = 13/6
  #   [1, 0, 1, 2, 0]: S = [1, 1, 2, 4, 4], WAP = 1/1 + 2/3 + 4/4 = 8/3
  # E[WAP] = (15 + 18 + 13 + 16) / 24 = 31/12, E[NWAP] = (31/12) / (29/6) = 31/58.
  assert nw(ties="average") == pytest.approx(31 / 58, abs=TOL[backend])


def test_single_label_nwmap_equals_map():
  rng = np.random.default_rng(3)
  q, db = _codes(rng, 9, 8), _codes(rng, 40, 8)
  ql, dl = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 9)], np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 40)]
  for ties in ("index", "average"):
    assert metrics.normalized_weighted_map(q, db, ql, dl, ties=ties) == pytest.approx(
        metrics.mean_average_precision(q, db, ql, dl, ties=ties), abs=1e-12)


# ------------------------------------------------------------------------ independent loop

def _codes(rng, n, bits):
  return rng.choice(np.array([-1, 1], np.int8), (n, bits))


def _labels(rng, n, classes, p):
  return (rng.random((n, classes)) < p).astype(np.uint8)


def _loop(qc, dc, ql, dl, ks, ns, weighted=True):
  """Per-query loop written directly from the definitions (index ties)."""
  num_q, n_db = qc.shape[0], dc.shape[0]
  dist = (qc[:, None, :] != dc[None, :, :]).sum(-1) if num_q * n_db < 2e6 else \
      (qc.shape[1] - qc.astype(np.float32) @ dc.T.astype(np.float32)) / 2
  gains_all = ql.astype(np.float32) @ dl.T.astype(np.float32)
  ranks = np.arange(1, n_db + 1)
  out = {"ap": [], "ap_k": [], "p_n": [], "nw": [], "nw_k": []}
  for i in range(num_q):
    order = np.argsort(dist[i], kind="stable")
    gains = gains_all[i][order]
    rel = gains > 0
    hits = np.cumsum(rel)
    prec = hits / ranks
    big_r = rel.sum()
    out["ap"].append(prec[rel].sum() / big_r if big_r else 0.0)
    row = []
    for k in ks:
      kk = min(k, n_db)
      row.append(prec[:kk][rel[:kk]].sum() / hits[kk - 1] if hits[kk - 1] else 0.0)
    out["ap_k"].append(row)
    out["p_n"].append([hits[min(n, n_db) - 1] / min(n, n_db) for n in ns])
    if not weighted:
      continue
    wterms = np.where(rel, np.cumsum(gains) / ranks, 0.0)
    ideal = np.cumsum(np.sort(gains)[::-1]) / ranks
    out["nw"].append(wterms.sum() / ideal[:big_r].sum() if big_r else 0.0)
    out["nw_k"].append([wterms[:min(k, n_db)].sum() / ideal[:min(big_r, k)].sum() if big_r else 0.0
                        for k in ks])
  return {name: np.array(v) for name, v in out.items()}


def _expected_ap_loop(qc, dc, ql, dl):
  """E[AP@all] under random tie orders, summed item by item (no harmonic closed form): a
  relevant item of a group (o items before it, h relevant before, n items, r relevant) sits at
  position t = 1..n with probability 1/n and has on average (t-1)(r-1)/(n-1) relevant items of
  its group ahead of it."""
  dist = (qc[:, None, :] != dc[None, :, :]).sum(-1)
  rel_all = (ql.astype(int) @ dl.T.astype(int)) > 0
  out = []
  for i in range(qc.shape[0]):
    total, o, h = 0.0, 0, 0
    for d in range(qc.shape[1] + 1):
      in_group = dist[i] == d
      n, r = int(in_group.sum()), int(rel_all[i][in_group].sum())
      for t in range(1, n + 1):
        ahead = (t - 1) * (r - 1) / (n - 1) if n > 1 else 0.0
        total += r / n * (h + 1 + ahead) / (o + t)
      o, h = o + n, h + r
    out.append(total / h if h else 0.0)
  return np.array(out)


# jax is compared with the other backends in test_backends_agree (its compilations are slow).
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
@pytest.mark.parametrize("bits,classes", [(16, 5), (70, 70)])
def test_matches_independent_loop(backend, bits, classes):
  rng = np.random.default_rng(bits)
  qc, dc = _codes(rng, 23, bits), _codes(rng, 301, bits)
  ql, dl = _labels(rng, 23, classes, 0.08), _labels(rng, 301, classes, 0.08)
  ks, ns = (1, 7, 50, 301, 1000), (1, 3, 100, 500)
  want = _loop(qc, dc, ql, dl, ks, ns)
  got = metrics.evaluate(qc, dc, ql, dl, top_k=ks, pn=ns, nwmap=True, backend=backend, chunk_size=7)
  tol = TOL[backend]
  assert got["map"] == pytest.approx(want["ap"].mean(), abs=tol)
  np.testing.assert_allclose([got["map@k"][k] for k in ks], want["ap_k"].mean(0), atol=tol)
  np.testing.assert_allclose(got["p@n"]["precision"], want["p_n"].mean(0), atol=tol)
  assert got["nwmap"] == pytest.approx(want["nw"].mean(), abs=tol)
  np.testing.assert_allclose([got["nwmap@k"][k] for k in ks], want["nw_k"].mean(0), atol=tol)
  np.testing.assert_allclose(metrics.average_precision(qc, dc, ql, dl, backend=backend), want["ap"], atol=tol)
  np.testing.assert_allclose(metrics.average_precision(qc, dc, ql, dl, ties="average", backend=backend),
                             _expected_ap_loop(qc, dc, ql, dl), atol=tol)


def test_mirflickr_labels_match_loop(mirflickr_dir):
  labels = scipy.io.loadmat(shared_path("mirflickr25k", "mirflickr25k-lall.mat"))["LAll"]
  assert labels.shape == (20015, 24)
  rng = np.random.default_rng(0)
  codes = _codes(rng, labels.shape[0], 64)
  qc, dc, ql, dl = codes[:2000], codes[2000:], labels[:2000], labels[2000:]
  ks, ns = (100, 1000), (10, 1000, 5000)
  want = _loop(qc, dc, ql, dl, ks, ns, weighted=False)
  got = metrics.evaluate(qc, dc, ql, dl, top_k=ks, pn=ns)
  assert got["map"] == pytest.approx(want["ap"].mean(), abs=1e-6)
  np.testing.assert_allclose([got["map@k"][k] for k in ks], want["ap_k"].mean(0), atol=1e-6)
  np.testing.assert_allclose(got["p@n"]["precision"], want["p_n"].mean(0), atol=1e-6)
  assert got["num_no_relevant"] == int((want["ap"] == 0).sum())


# -------------------------------------------------------------------- brute-force tie average

def _brute_force_average(qc, dc, ql, dl, ks, ns):
  """Mean of the index-tie metrics over every order of the database: each order of every tie
  group is then equally likely."""
  total = None
  perms = list(itertools.permutations(range(dc.shape[0])))
  for perm in perms:
    perm = np.array(perm)
    r = _loop(qc, dc[perm], ql, dl[perm], ks, ns)
    total = r if total is None else {name: total[name] + r[name] for name in r}
  return {name: v / len(perms) for name, v in total.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_ties_equal_brute_force(seed):
  rng = np.random.default_rng(seed)
  n_db = 6
  # 2-bit codes over 6 items: big tie groups; 3 labels with dense multi-label overlap.
  qc, dc = _codes(rng, 3, 2), _codes(rng, n_db, 2)
  ql, dl = _labels(rng, 3, 3, 0.5), _labels(rng, n_db, 3, 0.5)
  ks, ns = tuple(range(1, n_db + 2)), tuple(range(1, n_db + 1))
  want = _brute_force_average(qc, dc, ql, dl, ks, ns)
  for backend in BACKENDS:
    got = metrics.evaluate(qc, dc, ql, dl, top_k=ks, pn=ns, ties="average", nwmap=True, backend=backend)
    assert got["map"] == pytest.approx(want["ap"].mean(), abs=1e-9)
    np.testing.assert_allclose([got["map@k"][k] for k in ks], want["ap_k"].mean(0), atol=1e-9)
    np.testing.assert_allclose(got["p@n"]["precision"], want["p_n"].mean(0), atol=1e-9)
    assert got["nwmap"] == pytest.approx(want["nw"].mean(), abs=1e-9)
    np.testing.assert_allclose([got["nwmap@k"][k] for k in ks], want["nw_k"].mean(0), atol=1e-9)


# ---------------------------------------------------------------------------- backends

@pytest.mark.parametrize("ties", ["index", "average"])
def test_backends_agree(ties):
  """numba (when installed) and jax against the numpy fallback, with chunking and 2-word codes."""
  rng = np.random.default_rng(7)
  qc, dc = _codes(rng, 40, 70), _codes(rng, 2000, 70)
  ql, dl = _labels(rng, 40, 12, 0.1), _labels(rng, 2000, 12, 0.1)
  kw = dict(top_k=(1, 10, 100, 2000), pn=(5, 50, 500), ties=ties, nwmap=True)
  ref = metrics.evaluate(qc, dc, ql, dl, backend="numpy", **kw)
  for backend in BACKENDS:
    got = metrics.evaluate(qc, dc, ql, dl, backend=backend, chunk_size=16, **kw)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=TOL[backend]), got, ref)


def test_default_backend_on_cpu():
  assert metrics.default_backend() == ("numba" if ranking.have_numba() else "numpy")


# -------------------------------------------------------------------------- evaluate dict

def test_evaluate_dict_is_plain_and_consistent():
  rng = np.random.default_rng(1)
  qc, dc = _codes(rng, 15, 12), _codes(rng, 120, 12)
  ql, dl = _labels(rng, 15, 6, 0.2), _labels(rng, 120, 6, 0.2)
  out = metrics.evaluate(qc, dc, ql, dl, top_k=(10, 50), pn=(1, 20), nwmap=True)
  assert set(out) == {"map", "map@k", "num_queries", "num_no_relevant", "p@n", "pr_radius", "nwmap", "nwmap@k"}
  assert list(out["map@k"]) == [10, 50] and out["num_queries"] == 15
  assert out["p@n"]["n"] == [1, 20] and len(out["p@n"]["precision"]) == 2
  assert out["pr_radius"]["radius"] == list(range(13))
  leaves = jax.tree.leaves(out)
  assert all(type(v) in (int, float) for v in leaves)
  json.dumps(out)
  # Leaf-wise averaging over seeds (what the trainer does) works on this structure.
  jax.tree.map(lambda *v: float(np.mean(v)), out, out)
  assert out["map"] == metrics.mean_average_precision(qc, dc, ql, dl)
  assert out["map@k"][10] == metrics.mean_average_precision(qc, dc, ql, dl, top_k=10)
  assert out["nwmap@k"][50] == metrics.normalized_weighted_map(qc, dc, ql, dl, top_k=50)
  np.testing.assert_array_equal(out["p@n"]["precision"], metrics.precision_at_n(qc, dc, ql, dl, n=(1, 20)))
  precision, recall = metrics.precision_recall_by_radius(qc, dc, ql, dl)
  radius, p, r = metrics.pr_curve_points(out["pr_radius"])
  defined = np.isfinite(precision) & np.isfinite(recall)
  np.testing.assert_array_equal(radius, np.flatnonzero(defined))
  np.testing.assert_allclose(p, precision[defined])
  np.testing.assert_allclose(r, recall[defined])
  empty = metrics.evaluate(qc, dc, ql, dl, top_k=(), pn=())
  assert empty["map@k"] == {} and empty["p@n"] == {"n": [], "precision": []}


# ------------------------------------------------------------------------------ validation

@pytest.mark.parametrize("args,kwargs,match", [
    ((Q1[:, :2], DB, QL, DL), {}, r"query_codes has 2 bits \(shape \(1, 2\)\) but db_codes has 3"),
    ((Q1, DB, QL, DL[:4]), {}, r"db_labels has 4 rows \(shape \(4, 3\)\) but db_codes has 5"),
    ((Q1, DB, QL[:, :2], DL), {}, r"query_labels has 2 classes"),
    ((Q1 * 0, DB, QL, DL), {}, r"query_codes \(shape \(1, 3\)\) must contain only -1 and \+1, found \[0\]"),
    ((Q1, DB, QL, DL * 2), {}, r"db_labels \(shape \(5, 3\)\) must be multi-hot 0/1, found values \[2\]"),
    ((Q1[0], DB, QL, DL), {}, r"query_codes must be a non-empty 2-D .* got shape \(3,\)"),
    ((Q1, DB[:0], QL, DL[:0]), {}, r"db_codes must be a non-empty 2-D"),
    ((Q1, DB, QL, DL), {"ties": "random"}, r"ties must be one of"),
    ((Q1, DB, QL, DL), {"top_k": 0}, r"top_k must be a positive int"),
    ((Q1, DB, QL, DL), {"backend": "torch"}, r"backend must be None or one of"),
])
def test_validation_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    metrics.mean_average_precision(*args, **kwargs)


def test_validation_errors_other_entry_points():
  with pytest.raises(UserError, match=r"n must be a positive int"):
    metrics.precision_at_n(Q1, DB, QL, DL, n=(10, -1))
  with pytest.raises(UserError, match=r"db_codes .* must contain only -1 and \+1"):
    metrics.hamming_distance(Q1, np.abs(DB) * 0.5)
  with pytest.raises(UserError, match=r"pn must be"):
    metrics.evaluate(Q1, DB, QL, DL, pn="100")

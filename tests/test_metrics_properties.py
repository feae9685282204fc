"""Property tests of jxhash.metrics on random small retrieval problems (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jxhash import metrics

pytestmark = pytest.mark.usefixtures("strict_promotion")

TIES = st.sampled_from(["index", "average"])


@st.composite
def problems(draw, max_q=4, max_n=30, max_bits=10, max_classes=5):
  """(query_codes, db_codes, query_labels, db_labels) with few bits (many ties) and labels of
  varying density, including queries without any relevant item."""
  num_q = draw(st.integers(1, max_q))
  n_db = draw(st.integers(1, max_n))
  bits = draw(st.integers(1, max_bits))
  classes = draw(st.integers(1, max_classes))
  density = draw(st.floats(0.0, 1.0))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  codes = lambda n: rng.choice(np.array([-1, 1], np.int8), (n, bits))
  labels = lambda n: (rng.random((n, classes)) < density).astype(np.uint8)
  return codes(num_q), codes(n_db), labels(num_q), labels(n_db)


@settings(max_examples=60, deadline=None)
@given(problems(), TIES, st.one_of(st.none(), st.integers(1, 40)))
def test_ap_in_unit_interval(problem, ties, top_k):
  ap = metrics.average_precision(*problem, top_k=top_k, ties=ties)
  assert ap.shape == (problem[0].shape[0],)
  assert np.all(ap >= -1e-12) and np.all(ap <= 1 + 1e-12)
  nw = metrics.normalized_weighted_map(*problem, top_k=top_k, ties=ties)
  assert -1e-12 <= nw <= 1 + 1e-12
  p = metrics.precision_at_n(*problem, n=(1, 5, 50), ties=ties)
  assert np.all(p >= -1e-12) and np.all(p <= 1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(problems(), st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_average_ties_invariant_to_database_order(problem, seed, k):
  qc, dc, ql, dl = problem
  perm = np.random.default_rng(seed).permutation(dc.shape[0])
  shuffled = (qc, dc[perm], ql, dl[perm])
  kw = dict(top_k=(k,), pn=(k,), ties="average", nwmap=True)
  a, b = metrics.evaluate(*problem, **kw), metrics.evaluate(*shuffled, **kw)
  assert a["map"] == pytest.approx(b["map"], abs=1e-9)
  assert a["map@k"][k] == pytest.approx(b["map@k"][k], abs=1e-9)
  assert a["p@n"]["precision"] == pytest.approx(b["p@n"]["precision"], abs=1e-9)
  assert a["nwmap"] == pytest.approx(b["nwmap"], abs=1e-9)
  assert a["nwmap@k"][k] == pytest.approx(b["nwmap@k"][k], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(problems(max_q=1), TIES, st.integers(1, 40))
def test_perfect_ranking_scores_one(problem, ties, k):
  qc, dc, ql, dl = problem
  ql = np.ones_like(ql)  # every item with a label is relevant
  dl[0, 0] = 1  # at least one relevant item
  gains = dl.sum(axis=1)
  classes = ql.shape[1]
  # Item codes differ from the query in (C - gain) + (1 if irrelevant) bits, so distance
  # decreases with gain and every relevant item precedes every irrelevant one.
  flips = classes - gains + (gains == 0)
  bits = classes + 1
  qc = np.ones((1, bits), np.int8)
  dc = np.where(np.arange(bits)[None, :] < flips[:, None], -1, 1).astype(np.int8)
  assert metrics.mean_average_precision(qc, dc, ql, dl, ties=ties) == pytest.approx(1.0, abs=1e-12)
  assert metrics.mean_average_precision(qc, dc, ql, dl, top_k=k, ties=ties) == pytest.approx(1.0, abs=1e-12)
  assert metrics.normalized_weighted_map(qc, dc, ql, dl, ties=ties) == pytest.approx(1.0, abs=1e-12)
  assert metrics.normalized_weighted_map(qc, dc, ql, dl, top_k=k, ties=ties) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(problems(), TIES)
def test_map_at_n_equals_map(problem, ties):
  n_db = problem[1].shape[0]
  full = metrics.mean_average_precision(*problem, ties=ties)
  assert metrics.mean_average_precision(*problem, top_k=n_db, ties=ties) == pytest.approx(full, abs=1e-12)
  assert metrics.mean_average_precision(*problem, top_k=n_db + 7, ties=ties) == pytest.approx(full, abs=1e-12)

"""The metrics' jax backend on device arrays: same numbers as the numpy backend (hand-computed
and random cases with many ties, both tie rules, any chunking), bounded device memory, and no
trip of the codes through the host (the trainer's evaluation on accelerators).

On the CPU the jax backend is never chosen by default, so every test here forces it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jxhash import metrics
from jxhash.metrics import inputs, ranking
from jxhash.training import evaluation
from jxhash.errors import UserError
from test_evaluation import FAKE, IDENTITY, _dataset, _Table

pytestmark = pytest.mark.usefixtures("strict_promotion")

TOL = 1e-6  # the jax backend accumulates in float32

# One query, K = 2: distances [0, 1, 1, 0, 2], relevant items 1, 3, 4. Index order 0, 3, 1, 2, 4
# -> relevance 0, 1, 1, 0, 1: hits at ranks 2, 3, 5.
Q = np.array([[1, 1]], np.int8)
DB = np.array([[1, 1], [1, -1], [-1, 1], [1, 1], [-1, -1]], np.int8)
QL = np.array([[1, 0]], np.uint8)
DL = np.array([[0, 1], [1, 0], [0, 1], [1, 1], [1, 0]], np.uint8)


@pytest.fixture
def no_host_codes(monkeypatch):
  """Fail if a device array reaches the host input checks, or the jax backend reduces on the host."""
  seen = []
  as_array = inputs.as_array

  def spy(x, name):
    if isinstance(x, jax.Array):
      seen.append(name)
    return as_array(x, name)

  host_scan = ranking.scan

  def scan(backend, *args, **kwargs):
    assert backend != "jax", "the jax backend's host-reduced scan ran"
    return host_scan(backend, *args, **kwargs)

  monkeypatch.setattr(inputs, "as_array", spy)
  monkeypatch.setattr(ranking, "scan", scan)
  yield seen
  assert not seen, f"read on the host: {seen}"


def _device(*arrays):
  return tuple(jnp.asarray(a) for a in arrays)


def test_hand_case_index_ties_on_device(no_host_codes):
  got = metrics.evaluate(*_device(Q, DB, QL, DL), top_k=(3, 10), pn=(1, 2, 4, 5, 9), backend="jax")
  assert got["map"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3, abs=TOL)  # 53/90
  assert got["map@k"][3] == pytest.approx((1 / 2 + 2 / 3) / 2, abs=TOL)
  assert got["map@k"][10] == pytest.approx(53 / 90, abs=TOL)  # k > N: the whole ranking
  np.testing.assert_allclose(got["p@n"]["precision"], [0, 1 / 2, 1 / 2, 3 / 5, 3 / 5], atol=TOL)
  # pooled radius counts: items within radius 0, 1, 2 (2, 4, 5), relevant ones (1, 2, 3)
  np.testing.assert_allclose(got["pr_radius"]["retrieved"], [2, 4, 5, 5][:3], atol=0)
  np.testing.assert_allclose(got["pr_radius"]["retrieved_relevant"], [1, 2, 3], atol=0)


def test_hand_case_average_ties_on_device():
  # groups: d=0 {0, 3}, one relevant: E[precision] = (1 + 1/2)/2; d=1 {1, 2} after 2 items and
  # 1 hit: (2/3 + 2/4)/2; d=2 {4}: 3/5
  ap = metrics.mean_average_precision(*_device(Q, DB, QL, DL), ties="average", backend="jax")
  assert ap == pytest.approx((3 / 4 + 7 / 12 + 3 / 5) / 3, abs=TOL)  # 29/45


def _random_case(seed, bits, num_q=37, num_db=301, classes=5):
  rng = np.random.default_rng(seed)
  qc = rng.choice(np.array([-1, 1], np.int8), (num_q, bits))
  dc = rng.choice(np.array([-1, 1], np.int8), (num_db, bits))
  ql = (rng.random((num_q, classes)) < 0.25).astype(np.uint8)
  dl = (rng.random((num_db, classes)) < 0.25).astype(np.uint8)
  ql[:3] = 0  # queries without any relevant item count as 0
  return qc, dc, ql, dl


def _assert_same(got, want):
  assert got["num_no_relevant"] == want["num_no_relevant"] >= 3
  assert got["map"] == pytest.approx(want["map"], abs=TOL)
  for k in want["map@k"]:
    assert got["map@k"][k] == pytest.approx(want["map@k"][k], abs=TOL)
  np.testing.assert_allclose(got["p@n"]["precision"], want["p@n"]["precision"], atol=TOL)
  np.testing.assert_allclose(got["pr_radius"]["retrieved"], want["pr_radius"]["retrieved"], rtol=1e-12)
  np.testing.assert_allclose(got["pr_radius"]["retrieved_relevant"], want["pr_radius"]["retrieved_relevant"],
                             rtol=1e-12)


@pytest.mark.parametrize("ties", ["index", "average"])
@pytest.mark.parametrize("bits, seed", [(4, 0), (12, 1)])  # 4 bits: 5 distances, ties everywhere
def test_random_cases_equal_numpy_for_every_chunking(ties, bits, seed, monkeypatch):
  qc, dc, ql, dl = _random_case(seed, bits)
  kw = dict(top_k=(1, 7, 50, 1000), pn=(1, 5, 100, 1000), ties=ties)
  want = metrics.evaluate(qc, dc, ql, dl, backend="numpy", **kw)
  for chunk_size in (1, 5, 16, None):
    _assert_same(metrics.evaluate(*_device(qc, dc, ql, dl), backend="jax", chunk_size=chunk_size, **kw), want)
  # a forced tiny memory budget: one query per chunk, chosen by the budget
  monkeypatch.setitem(metrics._CHUNK_BYTES, "jax", 1)
  _assert_same(metrics.evaluate(*_device(qc, dc, ql, dl), backend="jax", **kw), want)
  np.testing.assert_allclose(metrics.average_precision(*_device(qc, dc, ql, dl), ties=ties, backend="jax"),
                             metrics.average_precision(qc, dc, ql, dl, ties=ties, backend="numpy"), atol=TOL)


def test_index_ties_never_touch_the_host(no_host_codes, monkeypatch):
  qc, dc, ql, dl = _random_case(2, 8)
  want = metrics.evaluate(qc, dc, ql, dl, top_k=(10,), pn=(10,), backend="numpy")
  monkeypatch.setitem(metrics._CHUNK_BYTES, "jax", 20_000)  # a few queries per chunk
  _assert_same(metrics.evaluate(*_device(qc, dc, ql, dl), top_k=(10,), pn=(10,), backend="jax"), want)


def test_weighted_metrics_on_device_arrays_equal_numpy():
  qc, dc, ql, dl = _random_case(3, 6)
  for ties in ("index", "average"):
    got = metrics.normalized_weighted_map(*_device(qc, dc, ql, dl), ties=ties, backend="jax", chunk_size=8)
    assert got == pytest.approx(metrics.normalized_weighted_map(qc, dc, ql, dl, ties=ties, backend="numpy"), abs=TOL)


def test_bad_device_codes_are_named():
  bad = jnp.asarray(DB).at[2, 1].set(0)
  with pytest.raises(UserError, match=r"db_codes \(shape \(5, 2\)\) must contain only -1 and \+1, found \[0\]"):
    metrics.mean_average_precision(*_device(Q), bad, *_device(QL, DL), backend="jax")
  with pytest.raises(UserError, match="query_labels .* must be multi-hot 0/1, found values \\[2\\]"):
    metrics.mean_average_precision(*_device(Q, DB), jnp.asarray(QL) * 2, jnp.asarray(DL), backend="jax")


@pytest.mark.parametrize("rows", [1, 64])
def test_device_memory_per_pair_is_bounded(rows):
  """XLA's own account of each jax program's work memory stays within the bound the chunk
  size is derived from."""
  n_db, bits, classes = 4096, 64, 21
  q = (jnp.ones((rows, bits), jnp.int8), jnp.ones((rows, classes), jnp.uint8))
  db = (jnp.ones((n_db, bits), jnp.int8), jnp.ones((n_db, classes), jnp.uint8))
  programs = {
      "index": ranking._jax_index_metrics.lower(*q, *db, rows, num_buckets=bits + 1, ks=(100, 1000),
                                                ns=(10, 1000)),
      "buckets": ranking._jax_bucket_counts.lower(*q, *db, num_buckets=bits + 1, num_classes=classes,
                                                  weighted=True),
      "scan": ranking._jax_scan_jit.lower(*q, *db, num_buckets=bits + 1, num_classes=classes, top_len=1024),
  }
  for name, lowered in programs.items():
    temp = lowered.compile().memory_analysis().temp_size_in_bytes
    assert temp <= metrics._JAX_BYTES_PER_PAIR * rows * n_db, (name, temp / (rows * n_db))


def test_chunk_size_follows_the_budget(monkeypatch):
  seen = []
  real = ranking.device_index_metrics

  def spy(chunk, database, **kw):
    seen.append(chunk[0].shape[0])
    return real(chunk, database, **kw)

  monkeypatch.setattr(ranking, "device_index_metrics", spy)
  qc, dc, ql, dl = _random_case(4, 8)
  per_query = 64 * (9 + 5 + 2) + metrics._JAX_BYTES_PER_PAIR * dc.shape[0]  # _compute's estimate
  monkeypatch.setitem(metrics._CHUNK_BYTES, "jax", 6 * per_query + 1)
  metrics.mean_average_precision(*_device(qc, dc, ql, dl), backend="jax")
  # 6 queries fit; rounded down to 4, since the device scan pads each chunk to a power of two
  assert seen == [4] * 9 + [1]


def test_device_budget_is_a_quarter_of_free_memory_within_bounds():
  class Device:
    def __init__(self, stats):
      self.stats = stats

    def memory_stats(self):
      return self.stats

  class Like:
    def __init__(self, stats):
      self.device = Device(stats)

    def devices(self):
      return {self.device}

  gib = 2**30
  assert metrics._device_budget(Like({"bytes_limit": 20 * gib, "bytes_in_use": 4 * gib})) == 4 * gib
  assert metrics._device_budget(Like({"bytes_limit": 140 * gib})) == 8 * gib
  assert metrics._device_budget(Like({"bytes_limit": gib // 2})) == 256 * 2**20
  assert metrics._device_budget(Like(None)) == 2 * gib  # the device does not say (CPU)


def test_trainer_evaluation_keeps_codes_on_the_device(no_host_codes, monkeypatch):
  """evaluation.evaluate (what train.fit calls for validation and the test protocol) on an
  accelerator: the metrics' default backend is jax there, which this test forces."""
  text = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, 1, 1, -1], [-1, 1, -1, 1], [1, -1, 1, -1],
                   [-1, -1, 1, 1]], np.float32)
  image = np.array([[1, 1, 1, -1], [-1, -1, 1, 1], [-1, -1, -1, -1], [-1, -1, -1, -1], [-1, -1, -1, -1],
                    [-1, -1, -1, -1]], np.float32)
  model, data = _Table(image, text), _dataset()
  want = evaluation.evaluate(FAKE, model, data, IDENTITY, top_k=(2,), pn=(1, 3), backend="numpy")
  monkeypatch.setattr(metrics, "default_backend", lambda: "jax")
  compute, on_device = metrics._compute, []

  def spy(query_codes, db_codes, *args, **kwargs):
    on_device.append(isinstance(query_codes, jax.Array) and isinstance(db_codes, jax.Array))
    return compute(query_codes, db_codes, *args, **kwargs)

  monkeypatch.setattr(metrics, "_compute", spy)
  got = evaluation.evaluate(FAKE, model, data, IDENTITY, top_k=(2,), pn=(1, 3))
  short = evaluation.evaluate(FAKE, model, data, IDENTITY, full=False)
  for direction in evaluation.DIRECTIONS:
    assert got[direction]["map"] == pytest.approx(want[direction]["map"], abs=TOL)
    assert short[direction]["map"] == pytest.approx(want[direction]["map"], abs=TOL)
    assert got[direction]["map@k"][2] == pytest.approx(want[direction]["map@k"][2], abs=TOL)
    np.testing.assert_allclose(got[direction]["p@n"]["precision"], want[direction]["p@n"]["precision"], atol=TOL)
  assert want["i2t"]["map"] == pytest.approx(0.75)  # the hand value of test_evaluation
  assert len(on_device) == 4 and all(on_device), on_device  # the metrics were given device arrays

"""HashIndex: exact top-k / radius search against a brute-force stable ranking, persistence, errors."""

import os
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from jxhash.errors import UserError
from jxhash.index import HashIndex, flat, persist

ENGINES = ["flat", "mih"]


def random_codes(rng, n, bits, dtype=np.int8):
  return (rng.integers(0, 2, size=(n, bits)) * 2 - 1).astype(dtype)


def brute_ranking(queries, db):
  """Full stable ranking: (Q, N) positions by ascending distance then index, and the distances."""
  bits = db.shape[1]
  dist = (bits - queries.astype(np.int64) @ db.astype(np.int64).T) // 2
  order = np.argsort(dist, axis=1, kind="stable")
  return order, np.take_along_axis(dist, order, axis=1)


def build(bits, db, batches, ids=None):
  index = HashIndex(bits)
  cuts = np.linspace(0, len(db), batches + 1).astype(int)
  for a, b in zip(cuts[:-1], cuts[1:]):
    index.add(db[a:b], None if ids is None else ids[a:b])
  return index


@pytest.fixture
def small_blocks(monkeypatch):
  """Distance blocks of 8 items, and single queries split over up to 3 slices of >= 40 items, so
  searches go through block skipping, candidate compaction and the merge of slices."""
  def set_block(bits):
    monkeypatch.setattr(flat, "_BLOCK", 8)
    monkeypatch.setattr(flat, "_MIN_PART", 40)
    monkeypatch.setattr(flat, "_num_threads", lambda: 3)
  return set_block


@pytest.mark.parametrize("bits", [16, 32, 48, 64, 100, 130, 300])
@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("engine", ENGINES)
def test_top_k_equals_stable_brute_force_ranking(bits, blocked, engine, small_blocks):
  if blocked:
    small_blocks(bits)
  rng = np.random.default_rng(bits)
  # Few distinct codes -> many exact ties at every distance, so the tie order is really tested.
  base = random_codes(rng, 40, bits)
  db = base[rng.integers(0, 40, size=700)]
  db[::3] = random_codes(rng, len(db[::3]), bits)
  queries = np.concatenate([random_codes(rng, 25, bits), db[:5]])
  ids = rng.permutation(10_000)[:len(db)] * 3 - 7000  # arbitrary, some negative
  order, dist = brute_ranking(queries, db)
  for batches in (1, 4):
    index = build(bits, db, batches, ids)
    assert len(index) == len(db) and index.bits == bits
    np.testing.assert_array_equal(index.ids, ids)
    for k in (1, 2, 7, 64, 699, 700, 1000):
      for q_batch in (1, 8, len(queries)):
        got_ids, got_dist = [], []
        for s in range(0, len(queries), q_batch):
          i, d = index.search(queries[s:s + q_batch], k, engine=engine)
          got_ids.append(i)
          got_dist.append(d)
        got_ids, got_dist = np.concatenate(got_ids), np.concatenate(got_dist)
        kk = min(k, len(db))
        assert got_ids.shape == got_dist.shape == (len(queries), kk)
        assert got_ids.dtype == np.int64 and got_dist.dtype == np.int32
        np.testing.assert_array_equal(got_ids, ids[order[:, :kk]], err_msg=f"k={k} q_batch={q_batch} batches={batches}")
        np.testing.assert_array_equal(got_dist, dist[:, :kk])


def test_default_ids_are_insertion_positions_across_batches():
  rng = np.random.default_rng(0)
  db = random_codes(rng, 300, 16)
  index = build(16, db, 3)
  np.testing.assert_array_equal(index.ids, np.arange(300))
  order, dist = brute_ranking(db[:10], db)
  ids, d = index.search(db[:10], 50)
  np.testing.assert_array_equal(ids, order[:, :50])
  np.testing.assert_array_equal(d, dist[:, :50])
  assert (d[:, 0] == 0).all()
  np.testing.assert_array_equal(index.codes(), db)


def test_accepts_jax_float_and_int_codes_alike():
  rng = np.random.default_rng(1)
  db = random_codes(rng, 200, 48)
  queries = random_codes(rng, 6, 48)
  results = []
  for convert in (lambda x: x, lambda x: x.astype(np.float32), lambda x: x.astype(np.int64), jnp.asarray,
                  lambda x: jnp.asarray(x, jnp.float32)):
    index = HashIndex(48)
    index.add(convert(db))
    results.append(index.search(convert(queries), 10))
  for ids, dist in results[1:]:
    np.testing.assert_array_equal(ids, results[0][0])
    np.testing.assert_array_equal(dist, results[0][1])


def test_empty_index_and_nbytes():
  index = HashIndex(100)
  ids, dist = index.search(np.ones((3, 100)), 5)
  assert ids.shape == dist.shape == (3, 0)
  assert [r[0].size for r in index.search_radius(np.ones((2, 100)), 100)] == [0, 0]
  index.add(np.ones((10, 100)))
  assert index.nbytes == 10 * 2 * 8  # 100 bits -> two 64-bit words per item
  assert index.packed_codes.shape == (10, 2)


@pytest.mark.parametrize("bits", [16, 100])
@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("engine", ENGINES)
def test_radius_search_matches_brute_force(bits, blocked, engine, small_blocks):
  if blocked:
    small_blocks(bits)
  rng = np.random.default_rng(7)
  db = random_codes(rng, 500, bits)
  queries = random_codes(rng, 12, bits)
  ids = np.arange(len(db)) * 10 + 5
  index = build(bits, db, 3, ids)
  order, dist = brute_ranking(queries, db)
  for r in (0, 3, bits // 2, bits):
    results = index.search_radius(queries, r, engine=engine)
    assert len(results) == len(queries)
    for q, (got_ids, got_dist) in enumerate(results):
      keep = dist[q] <= r
      np.testing.assert_array_equal(got_ids, ids[order[q][keep]])
      np.testing.assert_array_equal(got_dist, dist[q][keep])
      assert got_dist.dtype == np.int32


@pytest.mark.parametrize("bits", [16, 100])
def test_save_load_round_trip(tmp_path, bits):
  rng = np.random.default_rng(3)
  db = random_codes(rng, 257, bits)
  ids = rng.permutation(1000)[:257]
  metadata = {"method": "dcmh", "checkpoint": "checkpoints/dcmh/wikipedia/16bits", "user": {"a": [1, 2.5, None]}}
  index = HashIndex(bits, metadata=metadata)
  index.add(db[:100], ids[:100])
  index.add(db[100:], ids[100:])
  path = index.save(tmp_path / "db.npz")
  assert path == tmp_path / "db.npz"
  assert os.listdir(tmp_path) == ["db.npz"]  # no temporary file left behind
  loaded = HashIndex.load(path)
  assert loaded.bits == bits and len(loaded) == 257 and loaded.metadata == metadata
  np.testing.assert_array_equal(loaded.codes(), db)
  np.testing.assert_array_equal(loaded.packed_codes, index.packed_codes)
  np.testing.assert_array_equal(loaded.ids, ids)
  queries = random_codes(rng, 9, bits)
  for a, b in zip(index.search(queries, 20), loaded.search(queries, 20)):
    np.testing.assert_array_equal(a, b)
  # Loaded indexes keep refusing duplicates and keep growing.
  with pytest.raises(UserError, match=f"id {ids[0]} is already in the index"):
    loaded.add(db[:1], ids[:1])
  loaded.add(db[:1], [5000])
  assert len(loaded) == 258
  # A directory target holds index.npz.
  folder = tmp_path / "folder"
  folder.mkdir()
  assert index.save(folder) == folder / "index.npz"
  np.testing.assert_array_equal(HashIndex.load(folder).ids, ids)


def test_save_is_atomic(tmp_path, monkeypatch):
  rng = np.random.default_rng(4)
  index = HashIndex(16)
  index.add(random_codes(rng, 50, 16))
  path = index.save(tmp_path / "db.npz")
  before = path.read_bytes()
  index.add(random_codes(rng, 50, 16))

  def crash(*args, **kwargs):
    raise KeyboardInterrupt("simulated crash mid-write")

  monkeypatch.setattr(persist.np, "savez", crash)
  with pytest.raises(KeyboardInterrupt):
    index.save(path)
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["db.npz"]
  assert len(HashIndex.load(path)) == 50


def test_load_rejects_corrupt_files(tmp_path):
  rng = np.random.default_rng(5)
  index = HashIndex(64, metadata={"method": "x"})
  index.add(random_codes(rng, 1000, 64))
  good = index.save(tmp_path / "good.npz").read_bytes()

  with pytest.raises(UserError, match="no HashIndex file at .*missing.npz"):
    HashIndex.load(tmp_path / "missing.npz")
  truncated = tmp_path / "truncated.npz"
  truncated.write_bytes(good[:len(good) // 2])
  with pytest.raises(UserError, match="truncated.npz"):
    HashIndex.load(truncated)
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file at all" * 10)
  with pytest.raises(UserError, match="garbage.npz"):
    HashIndex.load(garbage)
  flipped = bytearray(good)
  middle = good.index(b"codes.npy") + 2000  # inside the stored codes array
  flipped[middle] ^= 0xFF
  bad_crc = tmp_path / "flipped.npz"
  bad_crc.write_bytes(bytes(flipped))
  with pytest.raises(UserError, match="flipped.npz"):
    HashIndex.load(bad_crc)
  other = tmp_path / "other.npz"
  np.savez(other, x=np.zeros(3))
  with pytest.raises(UserError, match="other.npz is not a HashIndex file"):
    HashIndex.load(other)
  with zipfile.ZipFile(tmp_path / "good.npz") as z:
    members = {name: z.read(name) for name in z.namelist()}
  wrong_header = tmp_path / "header.npz"
  with zipfile.ZipFile(wrong_header, "w") as z:
    for name, data in members.items():
      z.writestr(name, data.replace(b'"bits": 64', b'"bits": 65') if name == "header.npy" else data)
  with pytest.raises(UserError, match="header.npz"):
    HashIndex.load(wrong_header)


def test_add_refuses_bad_codes():
  index = HashIndex(32)
  with pytest.raises(UserError, match=r"shape \(N, 32\).*got \(4, 16\)"):
    index.add(np.ones((4, 16)))
  with pytest.raises(UserError, match=r"got \(32,\); for one code pass codes\[None\]"):
    index.add(np.ones(32))
  zeros = np.ones((4, 32))
  zeros[2, 5] = 0
  with pytest.raises(UserError, match=r"codes\[2, 5\] = 0.*sign\(0\)"):
    index.add(zeros)
  half = np.ones((4, 32))
  half[3, 31] = 0.5
  with pytest.raises(UserError, match=r"codes\[3, 31\] = 0.5"):
    index.add(half)
  nan = -np.ones((4, 32))
  nan[0, 0] = np.nan
  with pytest.raises(UserError, match=r"codes\[0, 0\] = nan"):
    index.add(nan)
  with pytest.raises(UserError, match="boolean"):
    index.add(np.ones((4, 32), bool))
  with pytest.raises(UserError, match=r"query_codes must have shape \(N, 32\)"):
    index.search(np.ones((2, 33)), 3)
  assert len(index) == 0  # nothing was added by the failed calls
  with pytest.raises(UserError, match="k must be a positive int"):
    index.search(np.ones((2, 32)), 0)
  with pytest.raises(UserError, match="r must be a non-negative int"):
    index.search_radius(np.ones((2, 32)), -1)
  with pytest.raises(UserError, match="bits must be a positive int"):
    HashIndex(0)
  with pytest.raises(UserError, match="up to 65535"):
    HashIndex(70000)
  with pytest.raises(UserError, match="unknown search engine 'annoy'"):
    index.search(np.ones((2, 32)), 3, engine="annoy")
  with pytest.raises(UserError, match="JSON-serialisable"):
    HashIndex(8, metadata={"f": object()})


def test_add_refuses_duplicate_ids():
  index = HashIndex(16)
  codes = np.ones((3, 16))
  with pytest.raises(UserError, match="duplicate id 4 within"):
    index.add(codes, [4, 9, 4])
  index.add(codes, [4, 9, 11])
  with pytest.raises(UserError, match="id 9 is already in the index"):
    index.add(codes, [1, 2, 9])
  with pytest.raises(UserError, match=r"shape \(3,\)"):
    index.add(codes, [1, 2])
  with pytest.raises(UserError, match="integers"):
    index.add(codes, [1.0, 2.0, 3.0])
  # Default ids are positions 3, 4, 5: 4 was given explicitly above.
  with pytest.raises(UserError, match="collide with id 4"):
    index.add(codes)
  assert len(index) == 3
  positional = HashIndex(16)
  positional.add(codes)
  with pytest.raises(UserError, match="id 2 is already in the index"):
    positional.add(codes, [2, 3, 4])
  positional.add(codes, [3, 4, 5])  # continues the positions
  positional.add(codes)
  np.testing.assert_array_equal(positional.ids, np.arange(9))

"""HashIndex: exact top-k / radius search against a brute-force stable ranking, persistence, errors."""

import io
import json
import os
import struct
import time
import tracemalloc
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from jxhash.errors import UserError
from jxhash.index import HashIndex, flat, mih, persist

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
  """Distance blocks of 8 items, the parallel kernels whatever the size, and single queries split
  over up to 3 slices of >= 40 items: searches go through block skipping, candidate compaction,
  the parallel kernels and the merge of slices (unblocked runs take the serial path)."""
  def set_block(bits):
    monkeypatch.setattr(flat, "_BLOCK", 8)
    monkeypatch.setattr(flat, "_MIN_PART", 40)
    monkeypatch.setattr(flat, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(flat, "_num_threads", lambda: 3)
    monkeypatch.setattr(mih, "PARALLEL_QUERIES", 1)
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
      kk = min(k, len(db))
      # Whole batch, batches of 8, and one at a time (single queries may be split over threads).
      for rows in (slice(None), slice(0, 8), slice(8, 16), slice(3, 4), slice(27, 28)):
        got_ids, got_dist = index.search(queries[rows], k, engine=engine)
        assert got_ids.shape == got_dist.shape == (len(queries[rows]), kk)
        assert got_ids.dtype == np.int64 and got_dist.dtype == np.int32
        np.testing.assert_array_equal(got_ids, ids[order[rows, :kk]], err_msg=f"k={k} rows={rows} batches={batches}")
        np.testing.assert_array_equal(got_dist, dist[rows, :kk])


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


# ------------------------------------------------------------------ multi-index hashing


def clustered_codes(rng, n, bits, prototypes=6, flip=0.08):
  """Codes near a few prototypes, with exact duplicates: many ties at every distance."""
  base = random_codes(rng, prototypes, bits)
  codes = base[rng.integers(0, prototypes, size=n)]
  flips = rng.random((n, bits)) < flip
  codes = np.where(flips, -codes, codes).astype(np.int8)
  codes[::5] = codes[0]  # a block of identical items
  return codes


@pytest.mark.parametrize("bits,m", [(16, 1), (16, 3), (24, 2), (64, 4), (64, 7), (100, 7), (130, 9)])
def test_multi_index_equals_flat_for_any_number_of_tables(bits, m, monkeypatch):
  monkeypatch.setattr(mih, "WORK_LIMIT", 1e9)  # no fallback to a scan: probing answers everything
  rng = np.random.default_rng(bits + m)
  db = clustered_codes(rng, 900, bits)
  index = HashIndex(bits)
  index.add(db)
  tables = mih.MultiIndex(index._packed, len(index), bits, m=m)
  assert tables.m == m and tables.lengths.sum() == bits and tables.lengths.max() - tables.lengths.min() <= 1
  assert tables.nbytes == m * 900 * 4 + tables.offsets.nbytes + m * 900 * 8 * tables.codes.shape[1]
  queries = np.concatenate([db[:6], clustered_codes(rng, 6, bits), random_codes(rng, 4, bits)])
  packed = index._pack(queries, "q")
  order, dist = brute_ranking(queries, db)
  for k in (1, 3, 10, 181, 900):  # 181: the duplicates (every 5th item) plus one
    pos, d = tables.search(packed, k)
    assert tables.gave_up == 0
    np.testing.assert_array_equal(pos, order[:, :k], err_msg=f"k={k}")
    np.testing.assert_array_equal(d, dist[:, :k])
  for r in (0, 2, bits // 4, bits):
    for q, (pos, d) in enumerate(tables.search_radius(packed, r)):
      keep = dist[q] <= r
      np.testing.assert_array_equal(pos, order[q][keep])
      np.testing.assert_array_equal(d, dist[q][keep])


def test_multi_index_hands_costly_queries_to_the_scan():
  rng = np.random.default_rng(12)
  db = clustered_codes(rng, 20_000, 64, prototypes=50)
  index = HashIndex(64)
  index.add(db)
  queries = np.concatenate([db[:3], random_codes(rng, 3, 64)])
  order, dist = brute_ranking(queries, db)
  ids, d = index.search(queries[:3], 10, engine="mih")
  assert index._tables().gave_up == 0  # near neighbours within a few bits: probing is cheap
  np.testing.assert_array_equal(ids, order[:3, :10])
  ids, d = index.search(queries, 10, engine="mih")
  assert index._tables().gave_up == 3  # random queries: the nearest items are ~20 bits away
  np.testing.assert_array_equal(ids, order[:, :10])
  ids, d = index.search(queries, 20_000, engine="mih")  # everything: a scan is cheaper
  assert index._tables().gave_up == len(queries)
  np.testing.assert_array_equal(ids, order)
  np.testing.assert_array_equal(d, dist)


def test_multi_index_tables_follow_adds():
  rng = np.random.default_rng(11)
  db = clustered_codes(rng, 600, 32)
  index = HashIndex(32)
  index.add(db[:300])
  queries = db[290:310]
  index.search(queries, 5, engine="mih")
  index.add(db[300:])  # items closer to the queries than anything before
  order, dist = brute_ranking(queries, db)
  ids, d = index.search(queries, 5, engine="mih")
  np.testing.assert_array_equal(ids, order[:, :5])
  np.testing.assert_array_equal(d, dist[:, :5])


def test_substring_plan():
  assert mih.substring_plan(64, 10_000_000).tolist() == [16, 16, 16, 16]
  assert mih.substring_plan(64, 1_000_000).tolist() == [16, 16, 16, 16]
  assert mih.substring_plan(128, 10_000_000).tolist() == [19, 19, 18, 18, 18, 18, 18]
  assert mih.substring_plan(16, 100).tolist() == [6, 5, 5]
  assert mih.substring_plan(3, 10).tolist() == [3]
  assert mih.substring_plan(32, 5, m=40).tolist() == [1] * 32


# ------------------------------------------------------------------ untrusted index files


def refused(path, match):
  """HashIndex.load(path) raises one UserError naming the file and matching `match`, within a
  second and 100 MB of allocations."""
  tracemalloc.start()
  start = time.perf_counter()
  try:
    with pytest.raises(UserError, match=match) as info:
      HashIndex.load(path)
  finally:
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  message = str(info.value)
  assert str(path) in message and "\n" not in message
  assert elapsed < 1.0, elapsed
  assert peak < 100 * 2**20, peak
  return message


def npz_members(index, tmp_path):
  with zipfile.ZipFile(index.save(tmp_path / "source.npz")) as z:
    return {name: z.read(name) for name in z.namelist()}


def npy_bytes(array):
  buffer = io.BytesIO()
  np.save(buffer, array)
  return buffer.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED):
  with zipfile.ZipFile(path, "w", compression=compression) as z:
    for name, data in members.items():
      z.writestr(name, data)
  return path


def patch_directory(path, member, *, method=None, compressed=None, size=None):
  """Rewrites a member's central-directory entry: what a hostile file can claim."""
  data = bytearray(path.read_bytes())
  at = 0
  while True:
    at = data.index(b"PK\x01\x02", at)
    name_len = struct.unpack_from("<H", data, at + 28)[0]
    if data[at + 46:at + 46 + name_len] == member.encode():
      break
    at += 4
  for offset, fmt, value in ((10, "<H", method), (20, "<I", compressed), (24, "<I", size)):
    if value is not None:
      struct.pack_into(fmt, data, at + offset, value)
  path.write_bytes(bytes(data))


@pytest.fixture
def members(tmp_path):
  rng = np.random.default_rng(8)
  index = HashIndex(64, metadata={"method": "x"})
  index.add(random_codes(rng, 1000, 64))
  return npz_members(index, tmp_path)


def test_load_refuses_a_deeply_nested_header_quickly(tmp_path, members):
  deep = "[" * 200_000 + "]" * 200_000
  path = write_zip(tmp_path / "deep.npz", {**members, "header.npy": npy_bytes(np.frombuffer(deep.encode(), np.uint8))})
  refused(path, "nested 200000 levels deep")
  assert persist.json_depth('{"a": "[[[[", "b": [[1], {"c": []}]}') == 4


def test_load_refuses_an_oversized_header(tmp_path, members):
  big = np.frombuffer(b" " * (2 << 20), np.uint8)
  refused(write_zip(tmp_path / "big.npz", {**members, "header.npy": npy_bytes(big)}), "JSON header is .* bytes, more than")


def test_load_refuses_members_larger_than_the_file(tmp_path, members):
  path = write_zip(tmp_path / "claims.npz", members)
  patch_directory(path, "codes.npy", compressed=2**31, size=2**31)
  refused(path, r"codes.npy claims 2,147,483,648 bytes .*truncated")


def test_load_refuses_a_zip_bomb_without_inflating_it(tmp_path, members):
  # The directory says: 2 MB deflated into 2 GB. Nothing is inflated to find out.
  path = write_zip(tmp_path / "bomb.npz", {**members, "codes.npy": np.random.default_rng(0).bytes(2 << 20)})
  patch_directory(path, "codes.npy", method=zipfile.ZIP_DEFLATED, size=2**31)
  refused(path, r"codes.npy would inflate from 2,097,152 to 2,147,483,648 bytes .*zip bomb")
  # A real one: 64 MB of zeros deflate ~1000x.
  zeros = npy_bytes(np.zeros(8 << 20, np.uint64))
  real = write_zip(tmp_path / "real_bomb.npz", {**members, "ids.npy": zeros}, compression=zipfile.ZIP_DEFLATED)
  refused(real, r"ids.npy would inflate .* zip bomb")


def test_load_refuses_members_that_disagree_with_the_header(tmp_path, members):
  wrong = npy_bytes(np.zeros((1000, 2), "<u8"))
  refused(write_zip(tmp_path / "shape.npz", {**members, "codes.npy": wrong}),
          r"codes.npy holds uint64 \(1000, 2\), expected uint64 \(1000, 1\) from the header")
  header = json.loads(np.load(io.BytesIO(members["header.npy"])).tobytes())
  for field, value, match in (("size", 10**12, "codes.npy holds"), ("bits", "64", "corrupt HashIndex header"),
                              ("words", 2, "corrupt HashIndex header"), ("metadata", [1], "metadata is list"),
                              ("version", 7, "version 7 is not supported")):
    text = json.dumps({**header, field: value}).encode()
    path = write_zip(tmp_path / f"{field}.npz", {**members, "header.npy": npy_bytes(np.frombuffer(text, np.uint8))})
    refused(path, match)
  ids = npy_bytes(np.zeros(1000, "<i8"))
  refused(write_zip(tmp_path / "dup.npz", {**members, "ids.npy": ids}), "corrupt index: duplicate id 0")
  refused(write_zip(tmp_path / "missing.npz", {"header.npy": members["header.npy"]}), r"missing \['codes.npy', 'ids.npy'\]")


def test_load_refuses_files_larger_than_available_memory(tmp_path, members, monkeypatch):
  path = write_zip(tmp_path / "ok.npz", members)
  assert len(HashIndex.load(path)) == 1000
  monkeypatch.setattr(persist, "memory_budget", lambda: 10_000)
  refused(path, r"needs 0.00 GiB of memory, more than the 0.00 GiB available")

  def no_memory(*args, **kwargs):
    raise MemoryError

  monkeypatch.setattr(persist, "memory_budget", lambda: 2**40)
  monkeypatch.setattr(persist.np, "empty", no_memory)
  refused(path, "not enough memory to load this index")


def test_load_refuses_other_files(tmp_path):
  text = tmp_path / "notes.txt"
  text.write_text("hello")
  refused(text, "is not a HashIndex file")
  folder = tmp_path / "empty_folder"
  folder.mkdir()
  with pytest.raises(UserError, match="no HashIndex file at .*empty_folder/index.npz"):
    HashIndex.load(folder)


# ------------------------------------------------------------------ FAISS file format (no faiss)


def test_faiss_file_layout_by_hand(tmp_path):
  index = HashIndex(16)
  codes = -np.ones((2, 16), np.int8)
  codes[0, [0, 9]] = 1  # bytes 0x01 0x02
  codes[1, 15] = 1  # bytes 0x00 0x80
  index.add(codes)
  path = index.save(tmp_path / "flat.faissindex", format="faiss")
  header = struct.pack("<iiqBi", 16, 2, 2, 1, 1)
  assert path.read_bytes() == b"IBxF" + header + struct.pack("<Q", 4) + bytes([1, 2, 0, 0x80])
  with_ids = HashIndex(16)
  with_ids.add(codes, ids=[7, -3])
  path = with_ids.save(tmp_path / "idmap.faissindex", format="faiss")
  assert path.read_bytes() == (b"IBMp" + header + b"IBxF" + header + struct.pack("<Q", 4) + bytes([1, 2, 0, 0x80])
                               + struct.pack("<Qqq", 2, 7, -3))
  for name, ids in (("flat", [0, 1]), ("idmap", [7, -3])):
    loaded = HashIndex.load(tmp_path / f"{name}.faissindex")
    np.testing.assert_array_equal(loaded.codes(), codes)
    np.testing.assert_array_equal(loaded.ids, ids)
    assert loaded.metadata == {"imported_from": str(tmp_path / f"{name}.faissindex")}


@pytest.mark.parametrize("bits", [8, 64, 72, 128])
def test_faiss_format_round_trip(tmp_path, bits):
  rng = np.random.default_rng(bits)
  db = random_codes(rng, 333, bits)
  index = HashIndex(bits)
  index.add(db[:200])
  index.add(db[200:], ids=np.arange(200, 333) * 3)
  loaded = HashIndex.load(index.save(tmp_path / "x.faissindex", format="faiss"))
  np.testing.assert_array_equal(loaded.packed_codes, index.packed_codes)
  np.testing.assert_array_equal(loaded.ids, index.ids)
  queries = random_codes(rng, 5, bits)
  for a, b in zip(index.search(queries, 20), loaded.search(queries, 20)):
    np.testing.assert_array_equal(a, b)


def test_faiss_format_refusals(tmp_path):
  with pytest.raises(UserError, match="multiple of 8 bits; this index has 12"):
    HashIndex(12).save(tmp_path / "x.faissindex", format="faiss")
  with pytest.raises(UserError, match="unknown index format 'hdf5'"):
    HashIndex(16).save(tmp_path / "x.h5", format="hdf5")
  index = HashIndex(64)
  index.add(random_codes(np.random.default_rng(0), 100, 64))
  good = index.save(tmp_path / "good.faissindex", format="faiss").read_bytes()
  cases = {
      "truncated": (good[:500], "too short"),
      "trailing": (good + b"\0", "1 unexpected bytes after the index"),
      "hash": (b"IBHh" + good[4:], "FAISS 'IBHh' indexes are not supported"),
      "dim": (good[:4] + struct.pack("<i", 12) + good[8:], "corrupt FAISS IndexBinaryFlat header: d=12"),
      # 2**40 codes declared in a 900-byte file: refused from the sizes, nothing allocated.
      "huge": (good[:12] + struct.pack("<q", 2**40) + good[20:], r"too short: 1,099,511,627,776 codes"),
      "wrapped": (b"IBMp" + good[4:25] + b"IBwF" + good[4:], "wraps a FAISS 'IBwF' index"),
  }
  for name, (data, match) in cases.items():
    path = tmp_path / f"{name}.faissindex"
    path.write_bytes(data)
    refused(path, match)
  dup = HashIndex(64)
  dup.add(random_codes(np.random.default_rng(1), 2, 64), ids=[5, 6])
  data = dup.save(tmp_path / "dup.faissindex", format="faiss").read_bytes()
  (tmp_path / "dup.faissindex").write_bytes(data[:-8] + struct.pack("<q", 5))
  refused(tmp_path / "dup.faissindex", "duplicate id 5")


# ------------------------------------------------------------------ against real FAISS


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 64, 128])
def test_faiss_reads_exported_indexes_and_finds_the_same_distances(tmp_path, bits):
  import faiss  # a test dependency (pyproject: the test extra), so no skip
  rng = np.random.default_rng(bits)
  db = clustered_codes(rng, 2000, bits)
  queries = np.concatenate([db[:5], random_codes(rng, 5, bits)])
  for ids in (None, rng.permutation(10**6)[:2000]):
    index = HashIndex(bits)
    index.add(db, ids)
    path = index.save(tmp_path / "db.faissindex", format="faiss")
    loaded = faiss.read_index_binary(str(path))
    assert loaded.d == bits and loaded.ntotal == 2000
    if ids is None:
      assert isinstance(loaded, faiss.IndexBinaryFlat)
      np.testing.assert_array_equal(faiss.rev_swig_ptr(loaded.xb.data(), 2000 * bits // 8).reshape(2000, -1),
                                    np.packbits(db > 0, axis=1, bitorder="little"))
    else:
      assert isinstance(loaded, faiss.IndexBinaryIDMap)
    # Queries packed by FAISS's own rule (fvecs2bitvecs: x >= 0 -> bit i % 8 of byte i // 8).
    floats = np.ascontiguousarray(queries, np.float32)
    q_bytes = np.zeros((len(queries), bits // 8), np.uint8)
    faiss.fvecs2bitvecs(faiss.swig_ptr(floats), faiss.swig_ptr(q_bytes), bits, len(queries))
    f_dist, f_ids = loaded.search(q_bytes, 50)
    ours, dist = index.search(queries, 50)
    np.testing.assert_array_equal(f_dist, dist)
    for q in range(len(queries)):  # same item set below the 50th distance; ties may differ
      below = dist[q] < dist[q, -1]
      assert set(f_ids[q][below]) == set(ours[q][below])
    # Brute force in FAISS's own terms agrees too.
    np.testing.assert_array_equal(dist, np.sort(brute_ranking(queries, db)[1][:, :50], axis=1))


@pytest.mark.slow
def test_jxhash_reads_faiss_written_indexes(tmp_path):
  import faiss  # a test dependency (pyproject: the test extra), so no skip
  rng = np.random.default_rng(3)
  db = random_codes(rng, 500, 64)
  rows = np.packbits(db > 0, axis=1, bitorder="little")
  flat_index = faiss.IndexBinaryFlat(64)
  flat_index.add(rows)
  faiss.write_index_binary(flat_index, str(tmp_path / "flat.faissindex"))
  ids = rng.permutation(10**6)[:500].astype(np.int64)
  for cls, name in ((faiss.IndexBinaryIDMap, "idmap"), (faiss.IndexBinaryIDMap2, "idmap2")):
    wrapped = cls(faiss.IndexBinaryFlat(64))
    wrapped.add_with_ids(rows, ids)
    faiss.write_index_binary(wrapped, str(tmp_path / f"{name}.faissindex"))
  for name, expected_ids in (("flat", np.arange(500)), ("idmap", ids), ("idmap2", ids)):
    loaded = HashIndex.load(tmp_path / f"{name}.faissindex")
    np.testing.assert_array_equal(loaded.codes(), db)
    np.testing.assert_array_equal(loaded.ids, expected_ids)
  hashed = faiss.IndexBinaryHash(64, 16)
  hashed.add(rows)
  faiss.write_index_binary(hashed, str(tmp_path / "hash.faissindex"))
  refused(tmp_path / "hash.faissindex", "FAISS 'IBHh' indexes are not supported")


@pytest.mark.slow
def test_faiss_engine_equals_flat_with_stable_ties():
  import faiss  # noqa: F401  (a test dependency: the "faiss" engine needs it)
  rng = np.random.default_rng(5)
  db = clustered_codes(rng, 3000, 64)
  index = HashIndex(64)
  index.add(db, ids=np.arange(3000)[::-1].copy())
  queries = np.concatenate([db[:4], clustered_codes(rng, 4, 64)])
  for k in (1, 10, 700, 5000):
    for a, b in zip(index.search(queries, k, engine="faiss"), index.search(queries, k)):
      np.testing.assert_array_equal(a, b)

"""FAISS interoperability: FAISS's binary index file format, read and written without faiss,
and the "faiss" search engine (which does need faiss-cpu).

File format (faiss/impl/index_write.cpp `write_index_binary`, index_read.cpp
`read_index_binary_up`; every field little-endian, written one after another with no padding):

  IndexBinaryFlat   "IBxF" | header | u64 nbytes | nbytes code bytes (ntotal rows of d / 8)
  IndexBinaryIDMap  "IBMp" (IDMap2: "IBM2") | header | <an IndexBinaryFlat as above> |
                    u64 ntotal | ntotal i64 ids
  header            i32 d | i32 code_size (= d / 8) | i64 ntotal | u8 is_trained | i32 metric_type

Codes: FAISS's byte layout is `jxhash.codes`'s (bit i of a code in byte i // 8, mask 1 << (i % 8)),
so rows are the packed words' first d / 8 bytes; FAISS needs d to be a multiple of 8.

Ids: a FAISS flat index has implicit ids 0..ntotal-1, which are exactly jxhash's default ids
(insertion positions). So an index whose ids are its positions is written as a bare
IndexBinaryFlat, and any other as an IndexBinaryIDMap around one, with the jxhash ids as its
id_map, in insertion order. Reading does the reverse (IDMap2 too); FAISS allows repeated ids in
an id_map, jxhash does not, so those are refused. Metadata has no place in FAISS files and is
dropped on export; imports get {"imported_from": <path>}.

FAISS search order: FAISS returns the right distances but orders equal distances its own way and,
at the k-th distance, may keep other items than the earliest. `faiss_search` restores jxhash's
(distance, insertion index) rule with a range search up to the k-th distance.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

from jxhash import codes as codes_lib
from jxhash import fileio
from jxhash.errors import UserError

FLAT, IDMAP, IDMAP2 = b"IBxF", b"IBMp", b"IBM2"
_HEADER = struct.Struct("<iiqBi")  # d, code_size, ntotal, is_trained, metric_type
_U64 = struct.Struct("<Q")
METRIC_L2 = 1  # what IndexBinary leaves in metric_type; binary search ignores it


def is_faiss_magic(magic: bytes) -> bool:
  """Whether 4 leading bytes start a FAISS binary index ("IB" + type code)."""
  return len(magic) == 4 and magic[:2] == b"IB"


# ------------------------------------------------------------------ writing


def write(index, path):
  """Writes `index` as a FAISS binary index file, atomically; returns the resolved path."""
  bits, n = index.bits, len(index)
  if bits % 8:
    raise UserError(f"FAISS binary indexes need a multiple of 8 bits; this index has {bits}")
  target = fileio.resolve(fileio.refuse_link(path, "FAISS index file"))
  if target.is_dir():
    raise UserError(f"FAISS index file {target} is a directory; give a file name")
  code_size = bits // 8
  header = _HEADER.pack(bits, code_size, n, 1, METRIC_L2)
  rows = codes_lib.to_bytes(index.packed_codes, bits)
  with fileio.atomic_output(target, what="FAISS index file") as tmp:
    with open(tmp, "wb") as f:
      if not index.ids_are_positions:
        f.write(IDMAP + header)
      f.write(FLAT + header + _U64.pack(n * code_size))
      f.write(memoryview(rows).cast("B"))
      if not index.ids_are_positions:
        f.write(_U64.pack(n))
        f.write(memoryview(index.ids.astype("<i8")).cast("B"))
  return target


# ------------------------------------------------------------------ reading


class _Reader:
  """Reads fields from a file, refusing any read past its end (the sizes are untrusted)."""

  def __init__(self, f, path, size: int):
    self.f, self.path, self.size = f, path, size

  def take(self, count: int, what: str) -> bytes:
    left = self.size - self.f.tell()
    if count > left:
      raise UserError(f"{self.path}: FAISS index file too short: {what} needs {count:,} bytes, {left:,} left "
                      "(truncated?)")
    return self.f.read(count)

  def header(self, what: str) -> tuple[int, int, int]:
    d, code_size, ntotal, trained, _metric = _HEADER.unpack(self.take(_HEADER.size, f"the {what} header"))
    if d <= 0 or d % 8 or code_size != d // 8 or ntotal < 0 or trained > 1:
      raise UserError(f"{self.path}: corrupt FAISS {what} header: d={d}, code_size={code_size}, ntotal={ntotal}, "
                      f"is_trained={trained}")
    return d, code_size, ntotal

  def array(self, dtype, count: int, what: str) -> np.ndarray:
    (declared,) = _U64.unpack(self.take(_U64.size, f"the size of {what}"))
    itemsize = np.dtype(dtype).itemsize
    if declared != count:
      raise UserError(f"{self.path}: corrupt FAISS file: {what} declares {declared:,} entries, expected {count:,}")
    data = self.take(count * itemsize, what)
    return np.frombuffer(data, dtype)


def read(cls, path):
  """Reads an IndexBinaryFlat or IndexBinaryIDMap(2)-of-IndexBinaryFlat file into a `cls` index."""
  from jxhash.index import persist
  size = path.stat().st_size
  try:
    with open(path, "rb") as f:
      reader = _Reader(f, path, size)
      magic = reader.take(4, "the index type")
      ids = None
      if magic in (IDMAP, IDMAP2):
        d, _, ntotal = reader.header("IndexBinaryIDMap")
        inner = reader.take(4, "the wrapped index type")
        if inner != FLAT:
          raise UserError(f"{path}: the IndexBinaryIDMap wraps a FAISS {_name(inner)} index; only IndexBinaryFlat "
                          "is read")
      elif magic != FLAT:
        raise UserError(f"{path}: FAISS {_name(magic)} indexes are not supported; jxhash reads IndexBinaryFlat and "
                        "IndexBinaryIDMap(2) of one")
      d_flat, code_size, n = reader.header("IndexBinaryFlat")
      if magic != FLAT and (d_flat, n) != (d, ntotal):
        raise UserError(f"{path}: corrupt FAISS file: the IDMap holds {ntotal} codes of {d} bits, its flat index "
                        f"{n} of {d_flat}")
      declared = _U64.size + n * code_size + (_U64.size + 8 * n if magic != FLAT else 0)
      if declared > size - f.tell():
        raise UserError(f"{path}: FAISS index file too short: {n:,} codes of {code_size} bytes need {declared:,} more "
                        f"bytes, the file has {size - f.tell():,} (truncated?)")
      need = n * (code_size + 8 * 3 * codes_lib.num_words(d_flat) + 8)  # bytes, padded words, store, ids
      if need > persist.memory_budget():
        raise UserError(f"{path}: loading {n:,} codes needs {need / 2**30:.2f} GiB of memory, more than "
                        f"the {persist.memory_budget() / 2**30:.2f} GiB available")
      rows = reader.array(np.uint8, n * code_size, "the codes").reshape(n, code_size)
      if magic != FLAT:
        ids = reader.array(np.dtype("<i8"), n, "the id map").astype(np.int64)
      if f.tell() != size:
        raise UserError(f"{path}: corrupt FAISS file: {size - f.tell():,} unexpected bytes after the index")
  except OSError as e:
    raise UserError(f"cannot read FAISS index file {path}: {fileio.describe_os_error(e)}") from None
  except struct.error as e:
    raise UserError(f"{path}: corrupt FAISS index file: {e}") from None
  try:
    return cls.from_packed(d_flat, codes_lib.from_bytes(rows, d_flat), ids, {"imported_from": str(path)})
  except UserError as e:
    raise UserError(f"{path}: cannot import the FAISS index: {e}") from None


def _name(magic: bytes) -> str:
  return repr(magic.decode("latin-1"))


# ------------------------------------------------------------------ the "faiss" engine


@functools.cache
def _faiss():
  try:
    import faiss
  except ImportError:
    raise UserError("the 'faiss' engine needs faiss-cpu (pip install faiss-cpu, or jxhash[test])") from None
  return faiss


def to_faiss(index):
  """A faiss.IndexBinaryFlat holding `index`'s codes in insertion order (its labels = positions)."""
  faiss = _faiss()
  if index.bits % 8:
    raise UserError(f"FAISS binary indexes need a multiple of 8 bits; this index has {index.bits}")
  flat = faiss.IndexBinaryFlat(index.bits)
  rows = codes_lib.to_bytes(index.packed_codes, index.bits)
  for start in range(0, rows.shape[0], 1 << 20):
    flat.add(rows[start:start + (1 << 20)])
  return flat


def faiss_search(index, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
  """Exact stable top-kk positions and distances for (Q, W) packed queries, computed by FAISS.

  FAISS's k-NN gives each query's k-th distance t; a range search for distance < t + 1 then
  lists every item at distance <= t, and the first kk of those in (distance, position) order are
  the answer. Two FAISS scans per query: this engine is for cross-checks, not speed.
  """
  flat = index._engine_cache("faiss", lambda: to_faiss(index))
  q_bytes = codes_lib.to_bytes(queries, index.bits)
  dist, _ = flat.search(q_bytes, kk)
  out_pos = np.empty((len(queries), kk), np.int64)
  out_dist = np.empty((len(queries), kk), np.int32)
  for q in range(len(queries)):
    _, d, pos = flat.range_search(q_bytes[q:q + 1], int(dist[q, -1]) + 1)
    order = np.lexsort((pos, d))[:kk]
    out_pos[q], out_dist[q] = pos[order], d[order]
  return out_pos, out_dist

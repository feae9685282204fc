"""`HashIndex`: binary codes packed into 64-bit words, exact top-k and radius Hamming search.

Codes are {-1, +1} arrays (N, bits). Each item is stored as ceil(bits / 64) uint64 words (bit j
of the code set where the code is +1; pad bits are 0), so an item costs 8 bytes per started 64
bits, and the Hamming distance to a query is popcount(item XOR query) summed over the words.

Ranking is the one of `jxhash.metrics`: ascending Hamming distance, ties broken by insertion
order (the database index). `search` returns exactly the first k items of that stable ranking,
without sorting the database: distances take only bits + 1 values, so the k-th smallest distance
is found by a binary search over distance values with one counting pass each, then every item
below that threshold and the first ones at it (in index order) are taken, and only those k are
sorted.

The search runs in numpy on the CPU (whatever JAX backend is active): one query at a time against
blocks of at most `_BLOCK_WORDS` words, so its working memory stays bounded (a few tens of MB)
whatever the index or batch size.

Saved indexes are one `.npz` file (no pickle) holding the packed codes, the ids and a JSON header
with bits, size and the user's metadata (conventionally {"method": ..., "checkpoint": ...}).
"""

from __future__ import annotations

import json
import operator
import os
import pathlib
import tempfile
import zipfile

import numpy as np

from jxhash.errors import UserError

_FORMAT = "jxhash.HashIndex"
_VERSION = 1
_INDEX_FILE = "index.npz"  # the file name used when `save`/`load` are given a directory
_BLOCK_WORDS = 1 << 22  # words of the database scanned per pass: bounds the scratch buffers (~40 MB)
_PACK_ROWS = 1 << 16  # rows validated and packed at a time: bounds the temporaries of `add`


class HashIndex:
  """An append-only index of ±1 codes with exact Hamming top-k and radius search.

  Args:
    bits: code length K (any positive int; need not be a multiple of 64).
    metadata: optional JSON-serialisable dict saved with the index, e.g.
      {"method": "dcmh", "checkpoint": "checkpoints/dcmh/...", "modality": "image"}.

  Attributes:
    bits: K.
    ids: (N,) int64 item ids, in insertion order (read-only view).
    metadata: the metadata dict (mutable; validated again by `save`).
    nbytes: bytes of packed codes held, N * ceil(K / 64) * 8.
    len(index): N.

  Example:
    index = HashIndex(64, metadata={"method": "dcmh"})
    index.add(db_codes)                      # (N, 64) ±1; ids 0..N-1
    ids, dist = index.search(query_codes, k=100)   # (Q, 100) each
    index.save("db.npz"); index = HashIndex.load("db.npz")
  """

  def __init__(self, bits: int, *, metadata: dict | None = None):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or bits < 1:
      raise UserError(f"HashIndex bits must be a positive int, got {bits!r}")
    self._bits = int(bits)
    self._words = -(-self._bits // 64)
    self.metadata = _checked_metadata(metadata, "HashIndex metadata")
    self._size = 0
    self._packed = np.zeros((self._words, 0), np.uint64)  # word-major, so each word row is contiguous
    self._id_store = np.zeros(0, np.int64)
    # While every id equals its position (the default), duplicates need no lookup; otherwise a
    # sorted copy of the ids answers "already present?" by binary search.
    self._ids_are_positions = True
    self._sorted_ids: np.ndarray | None = None

  # ---------------------------------------------------------------- properties

  @property
  def bits(self) -> int:
    return self._bits

  @property
  def ids(self) -> np.ndarray:
    view = self._id_store[:self._size]
    view.flags.writeable = False
    return view

  @property
  def nbytes(self) -> int:
    return self._size * self._words * 8

  @property
  def packed_codes(self) -> np.ndarray:
    """(N, ceil(K / 64)) uint64 packed codes (read-only view): bit j of word w is code[64 w + j] > 0."""
    view = self._packed[:, :self._size].T
    view.flags.writeable = False
    return view

  def __len__(self) -> int:
    return self._size

  def __repr__(self) -> str:
    return f"HashIndex(bits={self._bits}, size={self._size}, nbytes={self.nbytes})"

  def codes(self) -> np.ndarray:
    """The stored codes unpacked: (N, K) int8 in {-1, +1}, in insertion order."""
    as_bytes = np.ascontiguousarray(self.packed_codes).astype("<u8", copy=False).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=1, count=self._bits, bitorder="little")
    return (bits.astype(np.int8) * 2 - 1).reshape(self._size, self._bits)

  # ---------------------------------------------------------------- adding

  def add(self, codes, ids=None) -> None:
    """Appends N items.

    Args:
      codes: (N, K) array (numpy or JAX; any int/float dtype) of values in {-1, +1}.
      ids: optional (N,) integer ids; default: the running insertion positions len(index) + i.
        Ids must be unique across the whole index.

    Raises:
      UserError: wrong shape or width, a value other than ±1, bad or duplicate ids. Nothing is
        added when it raises.
    """
    packed = self._pack(codes, "codes")
    n = packed.shape[1]
    new_ids = self._checked_new_ids(ids, n)
    needed = self._size + n
    if needed > self._packed.shape[1]:
      # Geometric growth keeps a long series of small adds linear; the first add is exact.
      capacity = max(needed, self._packed.shape[1] + self._packed.shape[1] // 2)
      grown = np.zeros((self._words, capacity), np.uint64)
      grown[:, :self._size] = self._packed[:, :self._size]
      grown_ids = np.zeros(capacity, np.int64)
      grown_ids[:self._size] = self._id_store[:self._size]
      self._packed, self._id_store = grown, grown_ids
    self._packed[:, self._size:needed] = packed
    self._id_store[self._size:needed] = new_ids
    self._size = needed

  def _checked_new_ids(self, ids, n: int) -> np.ndarray:
    """Validates the ids of a batch of n items, updates the duplicate bookkeeping, returns them."""
    start = self._size
    if ids is None:
      new = np.arange(start, start + n, dtype=np.int64)
      if self._ids_are_positions or n == 0:
        return new
      clash = self._present(new)
      if clash.any():
        raise UserError(f"default ids (insertion positions {start}..{start + n - 1}) collide with id "
                        f"{int(new[clash][0])} given earlier; pass ids explicitly")
      self._sorted_ids = _merge_sorted(self._sorted_ids, new)
      return new
    raw = np.asarray(ids)
    if raw.shape != (n,):
      raise UserError(f"ids must have shape ({n},) to match the codes, got {raw.shape}")
    if n and raw.dtype.kind not in "iu":
      raise UserError(f"ids must be integers, got dtype {raw.dtype}")
    if raw.dtype.kind == "u" and n and raw.max() > np.iinfo(np.int64).max:
      raise UserError(f"ids must fit in int64, got {int(raw.max())}")
    new = raw.astype(np.int64)
    sorted_new = np.sort(new)
    repeated = sorted_new[1:][sorted_new[1:] == sorted_new[:-1]]
    if repeated.size:
      raise UserError(f"duplicate id {int(repeated[0])} within the ids passed to add")
    clash = self._present(new)
    if clash.any():
      raise UserError(f"id {int(new[clash][0])} is already in the index; ids must be unique")
    if self._ids_are_positions and np.array_equal(new, np.arange(start, start + n)):
      return new
    existing = np.arange(start, dtype=np.int64) if self._ids_are_positions else self._sorted_ids
    self._ids_are_positions = False
    self._sorted_ids = _merge_sorted(existing, sorted_new)
    return new

  def _present(self, new: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `new` are ids already in the index."""
    if self._ids_are_positions:
      return (new >= 0) & (new < self._size)
    if self._sorted_ids.size == 0:
      return np.zeros(new.shape, bool)
    where = np.minimum(np.searchsorted(self._sorted_ids, new), self._sorted_ids.size - 1)
    return self._sorted_ids[where] == new

  def _pack(self, codes, name: str) -> np.ndarray:
    """Validates (N, K) ±1 codes and packs them: (words, N) uint64, pad bits 0."""
    x = np.asarray(codes)
    if x.ndim != 2 or x.shape[1] != self._bits:
      hint = "; for one code pass codes[None]" if x.ndim == 1 and x.shape[0] == self._bits else ""
      raise UserError(f"{name} must have shape (N, {self._bits}) for a {self._bits}-bit index, got {x.shape}{hint}")
    if x.dtype == np.bool_:
      raise UserError(f"{name} are boolean; the index takes ±1 codes, e.g. np.where({name}, 1, -1)")
    if x.dtype.kind not in "iuf":
      raise UserError(f"{name} must be an int or float array of ±1, got dtype {x.dtype}")
    n = x.shape[0]
    out = np.zeros((self._words, n), np.uint64)
    row_bytes = np.zeros((min(n, _PACK_ROWS), self._words * 8), np.uint8)
    for start in range(0, n, _PACK_ROWS):
      chunk = x[start:start + _PACK_ROWS]
      bad = np.abs(chunk) != 1  # NaN compares unequal too
      if bad.any():
        i, j = np.argwhere(bad)[0]
        value = chunk[i, j]
        why = " (sign(0) = 0: map zeros to +1 or -1 before indexing)" if value == 0 else ""
        raise UserError(f"{name} must contain only -1 and +1; {name}[{start + i}, {j}] = {value}"
                        f" ({int(np.count_nonzero(bad))} bad entries in rows {start}..{start + len(chunk) - 1}){why}")
      m = chunk.shape[0]
      row_bytes[:m, :-(-self._bits // 8)] = np.packbits(chunk > 0, axis=1, bitorder="little")
      # Little-endian words so that the same file reads back identically on any machine.
      out[:, start:start + m] = row_bytes[:m].view("<u8").T
    return out

  # ---------------------------------------------------------------- search

  def search(self, query_codes, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Hamming distance.

    Args:
      query_codes: (Q, K) ±1 array (numpy or JAX).
      k: positive int. If k > len(index), all items are returned: the result has min(k, N) columns.

    Returns:
      ids: (Q, min(k, N)) int64 item ids, and distances: (Q, min(k, N)) int32 Hamming distances,
      each row in ascending distance, ties in insertion order -- i.e. the first columns of the
      stable full ranking used by `jxhash.metrics`.
    """
    k = _positive_int(k, "k")
    queries = self._pack(query_codes, "query_codes")
    q_count = queries.shape[1]
    kk = min(k, self._size)
    out_ids = np.empty((q_count, kk), np.int64)
    out_dist = np.empty((q_count, kk), np.int32)
    if kk == 0:
      return out_ids, out_dist
    scratch = _Scratch(self)
    for qi in range(q_count):
      query = queries[:, qi]
      if scratch.single_block:
        dist = scratch.distances(query, 0, self._size)
        positions, best = _first_k(dist, kk, self._bits)
      else:
        # The global top-k is within the union of every block's top-k, in block (= index) order,
        # so one stable sort of the union by distance finishes the ranking.
        parts_pos, parts_dist = [], []
        for start in range(0, self._size, scratch.block):
          stop = min(start + scratch.block, self._size)
          dist = scratch.distances(query, start, stop)
          pos, best = _first_k(dist, min(kk, stop - start), self._bits)
          parts_pos.append(pos + start)
          parts_dist.append(best)
        positions, best = np.concatenate(parts_pos), np.concatenate(parts_dist)
        order = np.argsort(best, kind="stable")[:kk]
        positions, best = positions[order], best[order]
      out_ids[qi] = self._id_store[positions]
      out_dist[qi] = best
    return out_ids, out_dist

  def search_radius(self, query_codes, r: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every item within Hamming distance r of each query.

    Args:
      query_codes: (Q, K) ±1 array.
      r: non-negative int radius (inclusive).

    Returns:
      a list of Q pairs (ids (M_q,) int64, distances (M_q,) int32), each in ascending distance with
      ties in insertion order.
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
      raise UserError(f"r must be a non-negative int, got {r!r}")
    queries = self._pack(query_codes, "query_codes")
    results = []
    scratch = _Scratch(self)
    for qi in range(queries.shape[1]):
      parts_pos, parts_dist = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)]
      for start in range(0, self._size, scratch.block):
        stop = min(start + scratch.block, self._size)
        dist = scratch.distances(queries[:, qi], start, stop)
        pos = np.flatnonzero(dist <= r)
        parts_pos.append(pos + start)
        parts_dist.append(dist[pos].astype(np.int32))
      positions, found = np.concatenate(parts_pos), np.concatenate(parts_dist)
      # Blocks come in index order, so a stable sort by distance gives (distance, position) order.
      order = np.argsort(found, kind="stable")
      results.append((self._id_store[positions[order]], found[order]))
    return results

  # ---------------------------------------------------------------- persistence

  def save(self, path) -> pathlib.Path:
    """Writes the index to one .npz file, atomically; returns the path written.

    `path` is the file to write (conventionally ending in .npz), or an existing directory, in
    which case the file is `<path>/index.npz`. The file is written under a temporary name in the
    same directory and renamed over `path`, so a crash never leaves a half-written index there.
    """
    target = _resolve(path)
    header = {
        "format": _FORMAT,
        "version": _VERSION,
        "bits": self._bits,
        "size": self._size,
        "words": self._words,
        "metadata": _checked_metadata(self.metadata, "HashIndex metadata"),
    }
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode(), np.uint8),
        "codes": np.ascontiguousarray(self.packed_codes).astype("<u8", copy=False),
        "ids": self.ids.astype("<i8", copy=False),
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, target)
    except BaseException:
      try:
        os.unlink(tmp)
      except FileNotFoundError:
        pass
      raise
    return target

  @classmethod
  def load(cls, path) -> "HashIndex":
    """Reads an index written by `save` (a .npz file, or a directory holding index.npz).

    Raises:
      UserError: the file is missing, truncated, corrupt, or not a HashIndex file; the message
        names the path.
    """
    target = _resolve(path)
    if not target.is_file():
      raise UserError(f"no HashIndex file at {target}")
    try:
      with np.load(target, allow_pickle=False) as npz:
        missing = {"header", "codes", "ids"} - set(npz.files)
        if missing:
          raise UserError(f"{target} is not a HashIndex file: missing {sorted(missing)}")
        # Reading every member here makes zip CRC checks catch corruption now, not in a search.
        header_bytes, codes, ids = npz["header"], npz["codes"], npz["ids"]
    except UserError:
      raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
      raise UserError(f"cannot read HashIndex file {target} (truncated or corrupt?): {e}") from None
    try:
      header = json.loads(header_bytes.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise UserError(f"{target}: corrupt HashIndex header: {e}") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
      raise UserError(f"{target} is not a HashIndex file (header format {header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("version") != _VERSION:
      raise UserError(f"{target}: HashIndex format version {header.get('version')!r} is not supported (expected {_VERSION})")
    bits, size, words = header.get("bits"), header.get("size"), header.get("words")
    if not all(isinstance(v, int) and v >= 0 for v in (bits, size, words)) or bits < 1 or words != -(-bits // 64):
      raise UserError(f"{target}: corrupt HashIndex header: bits={bits!r}, size={size!r}, words={words!r}")
    if codes.dtype != np.dtype("<u8") or codes.shape != (size, words):
      raise UserError(f"{target}: codes are {codes.dtype} {codes.shape}, expected uint64 {(size, words)}")
    if ids.dtype != np.dtype("<i8") or ids.shape != (size,):
      raise UserError(f"{target}: ids are {ids.dtype} {ids.shape}, expected int64 {(size,)}")
    if bits % 64 and size and (codes[:, -1] >> np.uint64(bits % 64)).any():
      raise UserError(f"{target}: corrupt codes: pad bits beyond bit {bits} are set")
    metadata = header.get("metadata")
    if not isinstance(metadata, dict):
      raise UserError(f"{target}: corrupt HashIndex header: metadata is {type(metadata).__name__}, expected a dict")
    index = cls(bits, metadata=metadata)
    try:
      # Run on the still-empty index: validates uniqueness and sets up the duplicate bookkeeping.
      index._id_store = index._checked_new_ids(ids, size)
    except UserError as e:
      raise UserError(f"{target}: corrupt ids: {e}") from None
    index._packed = np.ascontiguousarray(codes.astype(np.uint64).T)
    index._size = size
    return index


# ------------------------------------------------------------------ helpers


class _Scratch:
  """Reusable buffers for the distances of one query to one database block."""

  def __init__(self, index: HashIndex):
    self.index = index
    self.block = max(1, _BLOCK_WORDS // index._words)
    self.single_block = index._size <= self.block
    n = min(self.block, index._size)
    dtype = np.uint8 if index._bits <= 255 else (np.uint16 if index._bits <= 65535 else np.uint32)
    self.xor = np.empty(n, np.uint64)
    self.dist = np.empty(n, dtype)
    self.word_count = np.empty(n, np.uint8) if index._words > 1 else None

  def distances(self, query: np.ndarray, start: int, stop: int) -> np.ndarray:
    """(stop - start,) Hamming distances of items [start, stop) to a packed (words,) query.

    The returned array is a scratch buffer, overwritten by the next call.
    """
    n = stop - start
    packed, xor, dist = self.index._packed, self.xor[:n], self.dist[:n]
    np.bitwise_xor(packed[0, start:stop], query[0], out=xor)
    np.bitwise_count(xor, out=dist)
    for w in range(1, self.index._words):
      np.bitwise_xor(packed[w, start:stop], query[w], out=xor)
      np.add(dist, np.bitwise_count(xor, out=self.word_count[:n]), out=dist)
    return dist


def _first_k(dist: np.ndarray, k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
  """The first k positions of the stable ranking of `dist` (by distance, then position).

  Args:
    dist: (n,) distances in [0, bits]; k: 1 <= k <= n.
  Returns:
    positions (k,) int64 and their distances (k,) int32, in ranking order.
  """
  if k >= dist.shape[0]:
    order = np.argsort(dist, kind="stable")
    return order, dist[order].astype(np.int32)
  # Threshold t = the k-th smallest distance: smallest t with #{dist <= t} >= k. One counting pass
  # per step, ceil(log2(bits + 1)) steps, instead of sorting n items.
  lo, hi = 0, bits
  while lo < hi:
    mid = (lo + hi) // 2
    if np.count_nonzero(dist <= mid) >= k:
      hi = mid
    else:
      lo = mid + 1
  below = np.flatnonzero(dist < lo)
  at = np.flatnonzero(dist == lo)[:k - below.shape[0]]
  positions = np.concatenate([below, at])
  found = dist[positions].astype(np.int32)
  # Both parts are in index order and every `at` is farther than every `below`, so a stable sort
  # by distance yields (distance, position) order.
  order = np.argsort(found, kind="stable")
  return positions[order], found[order]


def _merge_sorted(a: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:
  """Sorted union of two sorted int64 arrays (timsort merges the two runs in linear time)."""
  return np.sort(np.concatenate([a, b_sorted]), kind="stable")


def _positive_int(value, name: str) -> int:
  try:
    if isinstance(value, bool):
      raise TypeError
    value = operator.index(value)
  except TypeError:
    raise UserError(f"{name} must be a positive int, got {value!r}") from None
  if value < 1:
    raise UserError(f"{name} must be a positive int, got {value}")
  return value


def _checked_metadata(metadata, what: str) -> dict:
  """A JSON round-tripped copy of a metadata dict (so what is saved is what `load` returns)."""
  if metadata is None:
    return {}
  if not isinstance(metadata, dict):
    raise UserError(f"{what} must be a dict, got {type(metadata).__name__}")
  try:
    return json.loads(json.dumps(metadata, allow_nan=False))
  except (TypeError, ValueError) as e:
    raise UserError(f"{what} must be JSON-serialisable (str keys; str/number/bool/None/list/dict values): {e}") from None


def _resolve(path) -> pathlib.Path:
  path = pathlib.Path(path)
  return path / _INDEX_FILE if path.is_dir() else path

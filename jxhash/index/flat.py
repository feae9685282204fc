"""`HashIndex`: ±1 codes packed into 64-bit words, exact top-k and radius Hamming search.

Codes are {-1, +1} arrays (N, K), packed in the one bit order of `jxhash.codes`: each item is
ceil(K / 64) uint64 words, so an item costs 8 bytes per started 64 bits (plus 8 bytes of id),
and the Hamming distance to a query is popcount(item XOR query) summed over the words.

Ranking is the one of `jxhash.metrics`: ascending Hamming distance, ties broken by insertion
order (the database index). Every engine returns exactly the first k items of that stable
ranking, so results never depend on the engine, the batch size or the thread count:

  "flat"   a compiled exhaustive scan (`_scan`): vectorised popcounts, a counting top-k with no
           heap and no sort of the database; queries in parallel, and a single query's scan
           split across threads. The default.
  "mih"    multi-index hashing (`mih`): sublinear where near neighbours are close (trained
           codes), exact by the pigeonhole principle; queries it would answer slower than a scan
           go to "flat". Its m tables (4 + 8 ceil(K / 64) bytes per item each) are built on the
           first "mih" search and rebuilt on the first one after an `add`.
  "faiss"  FAISS's IndexBinaryFlat over the same bytes, ties re-ordered to the stable rule
           (`faiss_io.faiss_search`); needs faiss-cpu. For cross-checks and FAISS users.

Saved indexes are one `.npz` file (no pickle; `persist`), or FAISS's binary index format
(`faiss_io`) for serving stacks built on FAISS.

Length (over 400 lines): storage, validation, exact search dispatch and the atomic
save/load of `HashIndex`; ids and multi-index hashing live in ids.py and mih.py.
"""

from __future__ import annotations

import functools
import json
import operator

import numpy as np

from jxhash import codes as codes_lib
from jxhash.errors import UserError
from jxhash.index.ids import IdSet

ENGINES = ("flat", "mih", "faiss")
MAX_BITS = 65535  # distances are counted in uint16 buffers (as in jxhash.metrics)
_PACK_ROWS = 1 << 16  # rows validated and packed at a time: bounds the temporaries of `add`
_BLOCK = 1024  # items per distance block of the compiled scan (8 KB per word row: stays in L1)
_MIN_PART = 1 << 16  # fewest items a thread scans when one query is split across threads
_PARALLEL_WORK = 1 << 21  # fewer item-words than this (~1 ms of scanning) run on the calling thread


@functools.cache
def _scan():
  """The compiled kernels, imported on first use (numba takes ~0.4 s to import)."""
  from jxhash.index import _scan as kernels
  return kernels


class HashIndex:
  """An append-only index of ±1 codes with exact Hamming top-k and radius search.

  Args:
    bits: code length K (1..65535; need not be a multiple of 64).
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
    ids, dist = index.search(query_codes, k=10, engine="mih")   # same answer, sublinear
    index.save("db.npz"); index = HashIndex.load("db.npz")
    index.save("db.faissindex", format="faiss")   # faiss.read_index_binary can load it
  """

  def __init__(self, bits: int, *, metadata: dict | None = None):
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
      raise UserError(f"HashIndex bits must be a positive int up to {MAX_BITS}, got {bits!r}")
    self._bits = int(bits)
    self._words = codes_lib.num_words(self._bits)
    self.metadata = checked_metadata(metadata, "HashIndex metadata")
    self._size = 0
    self._packed = np.zeros((self._words, 0), np.uint64)  # word-major: each word row is contiguous
    self._id_store = np.zeros(0, np.int64)
    self._id_set = IdSet()
    self._cache = {}  # engine structures (MIH tables, a FAISS copy), built on use, dropped by add

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
  def ids_are_positions(self) -> bool:
    """Whether every id is its insertion position 0..N-1 (FAISS's implicit ids)."""
    return self._id_set.are_positions

  @property
  def nbytes(self) -> int:
    return self._size * self._words * 8

  @property
  def packed_codes(self) -> np.ndarray:
    """(N, ceil(K / 64)) uint64 packed codes (read-only view), `jxhash.codes` bit order."""
    view = self._packed[:, :self._size].T
    view.flags.writeable = False
    return view

  def __len__(self) -> int:
    return self._size

  def __repr__(self) -> str:
    return f"HashIndex(bits={self._bits}, size={self._size}, nbytes={self.nbytes})"

  def codes(self) -> np.ndarray:
    """The stored codes unpacked: (N, K) int8 in {-1, +1}, in insertion order."""
    return codes_lib.unpack(self.packed_codes, self._bits)

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
    self.add_packed(self._pack(codes, "codes"), ids)

  def add_packed(self, words: np.ndarray, ids=None) -> None:
    """Appends items given as (N, ceil(K / 64)) uint64 words in `jxhash.codes` bit order.

    The fast path for codes that are already packed (FAISS imports, generated benchmarks).
    Pad bits past K must be 0.
    """
    words = np.asarray(words)
    if words.dtype != np.uint64 or words.ndim != 2 or words.shape[1] != self._words:
      raise UserError(f"packed codes must be uint64 (N, {self._words}) for {self._bits} bits, "
                      f"got {words.dtype} {words.shape}")
    if self._bits % 64 and words.shape[0] and (words[:, -1] >> np.uint64(self._bits % 64)).any():
      raise UserError(f"packed codes have pad bits set beyond bit {self._bits}")
    n = words.shape[0]
    new_ids = self._id_set.checked_new(ids, self._size, n)
    needed = self._size + n
    if needed > self._packed.shape[1]:
      # Geometric growth keeps a long series of small adds linear; the first add is exact.
      capacity = max(needed, self._packed.shape[1] + self._packed.shape[1] // 2)
      grown = np.zeros((self._words, capacity), np.uint64)
      grown[:, :self._size] = self._packed[:, :self._size]
      grown_ids = np.zeros(capacity, np.int64)
      grown_ids[:self._size] = self._id_store[:self._size]
      self._packed, self._id_store = grown, grown_ids
    self._packed[:, self._size:needed] = words.T
    self._id_store[self._size:needed] = new_ids
    self._size = needed
    if n:
      self._cache.clear()

  def _pack(self, codes, name: str) -> np.ndarray:
    """Validates (N, K) ±1 codes and packs them: (N, W) uint64, pad bits 0."""
    x = np.asarray(codes)
    if x.ndim != 2 or x.shape[1] != self._bits:
      hint = "; for one code pass codes[None]" if x.ndim == 1 and x.shape[0] == self._bits else ""
      raise UserError(f"{name} must have shape (N, {self._bits}) for a {self._bits}-bit index, got {x.shape}{hint}")
    if x.dtype == np.bool_:
      raise UserError(f"{name} are boolean; the index takes ±1 codes, e.g. np.where({name}, 1, -1)")
    if x.dtype.kind not in "iuf":
      raise UserError(f"{name} must be an int or float array of ±1, got dtype {x.dtype}")
    for start in range(0, x.shape[0], _PACK_ROWS):
      chunk = x[start:start + _PACK_ROWS]
      bad = np.abs(chunk) != 1  # NaN compares unequal too
      if bad.any():
        i, j = np.argwhere(bad)[0]
        value = chunk[i, j]
        why = " (sign(0) = 0: map zeros to +1 or -1 before indexing)" if value == 0 else ""
        raise UserError(f"{name} must contain only -1 and +1; {name}[{start + i}, {j}] = {value}"
                        f" ({int(np.count_nonzero(bad))} bad entries in rows {start}..{start + len(chunk) - 1}){why}")
    return codes_lib.pack(x, rows_per_step=_PACK_ROWS)

  # ---------------------------------------------------------------- search

  def search(self, query_codes, k: int, *, engine: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by Hamming distance.

    Args:
      query_codes: (Q, K) ±1 array (numpy or JAX).
      k: positive int. If k > len(index), all items are returned: the result has min(k, N) columns.
      engine: "flat", "mih" or "faiss" (see the module docstring); all give the same result.

    Returns:
      ids: (Q, min(k, N)) int64 item ids, and distances: (Q, min(k, N)) int32 Hamming distances,
      each row in ascending distance, ties in insertion order -- i.e. the first columns of the
      stable full ranking used by `jxhash.metrics`.
    """
    k = positive_int(k, "k")
    engine = _checked_engine(engine)
    queries = self._pack(query_codes, "query_codes")
    positions, dist = self.search_packed(queries, k, engine=engine)
    return self._id_store[positions], dist

  def search_packed(self, queries: np.ndarray, k: int, *, engine: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """`search` for (Q, W) uint64 packed queries; returns insertion positions, not ids."""
    kk = min(k, self._size)
    q_count = queries.shape[0]
    if kk == 0 or q_count == 0:
      return np.zeros((q_count, kk), np.int64), np.zeros((q_count, kk), np.int32)
    queries = np.ascontiguousarray(queries, np.uint64)
    if engine == "mih":
      return self._tables().search(queries, kk)
    if engine == "faiss":
      from jxhash.index import faiss_io
      return faiss_io.faiss_search(self, queries, kk)
    return self._flat_top_k(queries, kk)

  def _flat_top_k(self, queries: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    kernels = _scan()
    q_count = queries.shape[0]
    threads = _num_threads()
    # Fewer queries than threads: split each query's scan into slices, one per spare thread.
    parts = max(1, min(threads // q_count, self._size // _MIN_PART)) if q_count < threads else 1
    pos = np.empty((q_count, parts, kk), np.int64)
    dist = np.empty((q_count, parts, kk), np.int64)
    count = np.zeros((q_count, parts), np.int64)
    if _serial(threads, q_count * parts, self._size * self._words * q_count):
      buf = np.empty(_BLOCK, self._dist_like().dtype)
      for q in range(q_count):
        count[q, 0] = kernels.top_k_range(self._packed, queries[q], 0, self._size, kk, self._bits, _BLOCK, buf,
                                          pos[q, 0], dist[q, 0])
    else:
      kernels.top_k(self._packed, self._size, queries, kk, self._bits, parts, _BLOCK, self._dist_like(), pos, dist,
                    count)
    if parts == 1:
      return pos[:, 0], dist[:, 0].astype(np.int32)
    out_pos = np.empty((q_count, kk), np.int64)
    out_dist = np.empty((q_count, kk), np.int32)
    for q in range(q_count):
      # Each slice is in (distance, index) order and slices come in index order, so a stable
      # sort of the concatenation by distance is the (distance, index) order of the union.
      p = np.concatenate([pos[q, s, :count[q, s]] for s in range(parts)])
      d = np.concatenate([dist[q, s, :count[q, s]] for s in range(parts)])
      order = np.argsort(d, kind="stable")[:kk]
      out_pos[q], out_dist[q] = p[order], d[order]
    return out_pos, out_dist

  def search_radius(self, query_codes, r: int, *, engine: str = "flat") -> list[tuple[np.ndarray, np.ndarray]]:
    """Every item within Hamming distance r of each query.

    Args:
      query_codes: (Q, K) ±1 array.
      r: non-negative int radius (inclusive).
      engine: "flat" or "mih" ("faiss" answers with "flat": FAISS adds nothing here).

    Returns:
      a list of Q pairs (ids (M_q,) int64, distances (M_q,) int32), each in ascending distance with
      ties in insertion order.
    """
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 0:
      raise UserError(f"r must be a non-negative int, got {r!r}")
    engine = _checked_engine(engine)
    queries = np.ascontiguousarray(self._pack(query_codes, "query_codes"))
    r = min(int(r), self._bits)
    if self._size == 0:
      return [(np.zeros(0, np.int64), np.zeros(0, np.int32)) for _ in range(queries.shape[0])]
    if engine == "mih":
      found = self._tables().search_radius(queries, r)
    else:
      found = self._flat_radius(queries, r)
    return [(self._id_store[p], d) for p, d in found]

  def _flat_radius(self, queries: np.ndarray, r: int) -> list[tuple[np.ndarray, np.ndarray]]:
    kernels = _scan()
    q_count = queries.shape[0]
    counts = np.zeros((q_count, r + 1), np.int64)
    no_output = np.empty(0, np.int64)
    serial = _serial(_num_threads(), q_count, self._size * self._words * q_count)
    buf = np.empty(_BLOCK, self._dist_like().dtype)

    def run(starts, out):  # one counting pass (out empty), then one filling pass
      if serial:
        for q in range(q_count):
          kernels.radius_one(self._packed, self._size, queries[q], r, _BLOCK, buf, counts[q], starts[q].copy(), out)
      else:
        kernels.radius(self._packed, self._size, queries, r, _BLOCK, self._dist_like(), counts, starts, out)

    run(counts, no_output)
    # Query q's results start at the total of the earlier queries; inside, distance d's group
    # starts after the closer groups.
    starts = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]]).reshape(counts.shape)
    positions = np.empty(int(counts.sum()), np.int64)
    if positions.size:
      run(starts, positions)
    out = []
    for q in range(q_count):
      start, size = starts[q, 0], int(counts[q].sum())
      out.append((positions[start:start + size], np.repeat(np.arange(r + 1, dtype=np.int32), counts[q])))
    return out

  def _dist_like(self) -> np.ndarray:
    """An empty array of the distance buffers' dtype: uint8 up to 255 bits (32 per AVX2 lane)."""
    return np.empty(0, np.uint8 if self._bits <= 255 else np.uint16)

  def _tables(self):
    from jxhash.index import mih
    return self._engine_cache("mih", lambda: mih.MultiIndex(self._packed, self._size, self._bits,
                                                             fallback=self._flat_top_k, fallback_radius=self._flat_radius))

  def _engine_cache(self, name: str, build):
    """The structure an engine keeps for the current contents, built by `build()` on first use."""
    if name not in self._cache:
      self._cache[name] = build()
    return self._cache[name]

  # ---------------------------------------------------------------- persistence

  def save(self, path, *, format: str = "jxhash"):
    """Writes the index atomically; returns the resolved path written.

    Args:
      path: the file to write, or an existing directory (then `<path>/index.npz`).
      format: "jxhash" (one .npz with ids and metadata; see `persist`) or "faiss" (FAISS's
        binary index file: IndexBinaryFlat, or IndexBinaryIDMap when the ids are not 0..N-1;
        metadata is not kept; see `faiss_io`).
    """
    if format == "faiss":
      from jxhash.index import faiss_io
      return faiss_io.write(self, path)
    if format != "jxhash":
      raise UserError(f"unknown index format {format!r}; expected 'jxhash' or 'faiss'")
    from jxhash.index import persist
    return persist.save(self, path)

  @classmethod
  def load(cls, path) -> "HashIndex":
    """Reads an index written by `save`, in either format (told apart by the file's first bytes).

    Raises:
      UserError: the file is missing, truncated, corrupt, too large for memory, or not an index;
        the message names the path.
    """
    from jxhash.index import persist
    return persist.load(cls, path)

  @classmethod
  def from_packed(cls, bits: int, words: np.ndarray, ids: np.ndarray | None, metadata: dict | None) -> "HashIndex":
    """An index holding (N, W) uint64 `words` (validated like `add_packed`), for the loaders."""
    index = cls(bits, metadata=metadata)
    index.add_packed(words, ids)
    return index


# ------------------------------------------------------------------ helpers


def _num_threads() -> int:
  import numba
  return numba.get_num_threads()


def _serial(threads: int, tasks: int, word_ops: int) -> bool:
  """Whether to run a scan on the calling thread: one thread, one task, or too little work to pay
  for waking the pool (on a loaded machine a parallel launch can wait a whole scheduler tick)."""
  return threads == 1 or tasks == 1 or word_ops < _PARALLEL_WORK


def _checked_engine(engine) -> str:
  if engine not in ENGINES:
    raise UserError(f"unknown search engine {engine!r}; expected one of {', '.join(ENGINES)}")
  return engine


def positive_int(value, name: str) -> int:
  try:
    if isinstance(value, bool):
      raise TypeError
    value = operator.index(value)
  except TypeError:
    raise UserError(f"{name} must be a positive int, got {value!r}") from None
  if value < 1:
    raise UserError(f"{name} must be a positive int, got {value}")
  return value


def checked_metadata(metadata, what: str) -> dict:
  """A JSON round-tripped copy of a metadata dict (so what is saved is what `load` returns)."""
  if metadata is None:
    return {}
  if not isinstance(metadata, dict):
    raise UserError(f"{what} must be a dict, got {type(metadata).__name__}")
  try:
    return json.loads(json.dumps(metadata, allow_nan=False))
  except RecursionError:
    raise UserError(f"{what} is nested too deeply to save as JSON") from None
  except (TypeError, ValueError) as e:
    raise UserError(f"{what} must be JSON-serialisable (str keys; str/number/bool/None/list/dict values): {e}") from None

"""`CrossModalData`: N paired image/text items, their labels and the split index arrays.

Also the one implementation of lazy row reading (`RowSource`, with `row_index` for ints,
slices, masks and index arrays), which `io.LazyRows`, `tfds_reader.TfdsRows`,
`synthetic.SyntheticPixels` and `RowSubset` share, and the data fingerprint (`hash_arrays`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os

import numpy as np

from jxhash.errors import DataError

SPLITS = ("query", "retrieval", "train", "val")
# what `CrossModalData.text` holds: text features (bag-of-words, topics, embeddings), or CLIP's
# token ids (int32, [<start_of_text>, ids..., <end_of_text>, 0...], `jxhash.nets.clip_tokenizer`)
TEXT_KINDS = ("features", "clip-tokens")
CLIP_VOCAB_SIZE = 49408


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CrossModalData:
  """A cross-modal retrieval dataset: arrays in host memory, the image optionally read lazily.

  Attributes:
    image: (N, D) float features, or (N, H, W, 3) uint8 pixels: a numpy array, or a lazy row
      source (see `is_row_source`, e.g. `jxhash.data.io.LazyRows` over an HDF5 stack) whose
      rows are read on demand, for image stacks larger than memory. The trainer streams the
      training batches of a lazy source from the host (`jxhash.training`); its values are not
      checked for NaN up front (that would read it all).
    text: (N, T) bag-of-words or dense text features, or with text_kind "clip-tokens" (N, L)
      int32 CLIP token ids (a text tower reads them; they are never normalised).
    labels: (N, C) multi-hot {0, 1} uint8 labels (single-label data is one-hot).
    query, retrieval, train: 1-D int64 index arrays into the N items.
    val: items held out of training (disjoint from `train` and `query`), used for model
      selection only; the query set is never used for it. May be empty.
    name: dataset name, recorded in results files.
    split_info: how the split was made, e.g. {"rule": "random", "seed": 0}; the loaders add
      the files read and "options", every loader option with its resolved value.
    disjoint_query: whether the protocol requires query ∩ retrieval = ∅ (checked if True).
    text_kind: "features" or "clip-tokens" (`TEXT_KINDS`).

  Construction validates everything and raises `DataError` naming the problem.
  `fingerprint()` is a digest of the arrays and split indices, for the run identity.
  """

  image: np.ndarray
  text: np.ndarray
  labels: np.ndarray
  query: np.ndarray
  retrieval: np.ndarray
  train: np.ndarray
  val: np.ndarray
  name: str = "unnamed"
  split_info: dict = dataclasses.field(default_factory=dict)
  disjoint_query: bool = True
  text_kind: str = "features"

  def __post_init__(self):
    where = f"dataset {self.name!r}"
    if self.text_kind not in TEXT_KINDS:
      raise DataError(f"{where}: text_kind={self.text_kind!r}; choose one of {', '.join(TEXT_KINDS)}")
    n = _rows(self.image, "image", where)
    for field in ("text", "labels"):
      m = _rows(getattr(self, field), field, where)
      if m != n:
        raise DataError(f"{where}: {field} has {m} rows but image has {n}; the modalities must be paired row by row")
    if self.text.ndim != 2:
      raise DataError(f"{where}: text must be 2-D (N, T), got shape {self.text.shape}")
    if self.labels.ndim != 2:
      raise DataError(f"{where}: labels must be 2-D multi-hot (N, C), got shape {self.labels.shape}")
    if self.image.ndim == 4:
      if self.image.dtype != np.uint8 or self.image.shape[-1] != 3:
        raise DataError(f"{where}: pixel images must be uint8 (N, H, W, 3), got {self.image.dtype} {self.image.shape}")
    elif self.image.ndim != 2:
      raise DataError(f"{where}: image must be (N, D) features or (N, H, W, 3) pixels, got shape {self.image.shape}")
    for field in ("image", "text"):
      x = getattr(self, field)
      if isinstance(x, np.ndarray) and x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int(np.argwhere(~np.isfinite(x))[0][0])
        raise DataError(f"{where}: {field} has NaN or inf values (first at row {bad})")
      if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: {field} must be numeric, got dtype {x.dtype}")
    if self.text_kind == "clip-tokens":
      if self.text.dtype != np.int32:
        raise DataError(f"{where}: CLIP token ids must be int32 (N, L), got {self.text.dtype} {self.text.shape}")
      if self.text.size and (self.text.min() < 0 or self.text.max() >= CLIP_VOCAB_SIZE):
        raise DataError(f"{where}: CLIP token ids must lie in [0, {CLIP_VOCAB_SIZE}), found "
                        f"{self.text.min() if self.text.min() < 0 else self.text.max()}")
    if not np.isin(self.labels, (0, 1)).all():
      bad = np.unique(self.labels[~np.isin(self.labels, (0, 1))])[:5]
      raise DataError(f"{where}: labels must be multi-hot 0/1, found values {bad.tolist()}")
    object.__setattr__(self, "labels", self.labels.astype(np.uint8, copy=False))
    for split in SPLITS:
      idx = np.asarray(getattr(self, split))
      if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise DataError(f"{where}: split {split!r} must be a 1-D integer index array, got {idx.dtype} {idx.shape}")
      if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(f"{where}: split {split!r} has indices outside [0, {n}): min {idx.min()}, max {idx.max()}")
      if np.unique(idx).size != idx.size:
        raise DataError(f"{where}: split {split!r} repeats indices")
      object.__setattr__(self, split, idx.astype(np.int64, copy=False))
    for split in ("query", "retrieval", "train"):
      if getattr(self, split).size == 0:
        raise DataError(f"{where}: split {split!r} is empty")
    if self.disjoint_query and np.intersect1d(self.query, self.retrieval).size:
      k = np.intersect1d(self.query, self.retrieval).size
      raise DataError(f"{where}: {k} query items are also in the retrieval set; the protocol requires them disjoint")
    for other in ("train", "query"):
      if np.intersect1d(self.val, getattr(self, other)).size:
        raise DataError(f"{where}: split 'val' overlaps {other!r}; val items must be held out of both")
    empty = np.flatnonzero(self.labels[self.train].sum(1) == 0)
    if empty.size:
      raise DataError(f"{where}: {empty.size} training items have no label (first: item {int(self.train[empty[0]])})")

  @property
  def num_items(self) -> int:
    return self.image.shape[0]

  @property
  def is_pixels(self) -> bool:
    return self.image.ndim == 4

  @property
  def text_tokens(self) -> bool:
    """Whether `text` holds CLIP token ids (text_kind "clip-tokens")."""
    return self.text_kind == "clip-tokens"

  @property
  def image_in_memory(self) -> bool:
    """False when `image` is a lazy row source (read batch by batch)."""
    return isinstance(self.image, np.ndarray)

  def dims(self) -> dict:
    """Sizes a method needs to build its networks: image_shape, text_dim, num_labels."""
    return {"image_shape": tuple(self.image.shape[1:]), "text_dim": self.text.shape[1],
            "num_labels": self.labels.shape[1]}

  def subset(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, text, labels) rows of one split."""
    idx = getattr(self, split)
    return read_rows(self.image, idx), self.text[idx], self.labels[idx]

  def sizes(self) -> dict:
    return {s: int(getattr(self, s).size) for s in SPLITS}

  def __repr__(self) -> str:
    """One line: name, shapes and split sizes (the dataclass default would print every array)."""
    image = "x".join(map(str, self.image.shape))
    text = f"{self.text.shape[1]} CLIP tokens" if self.text_tokens else f"{self.text.shape[1]}-d"
    return (f"CrossModalData({self.name!r}: {self.labels.shape[0]} items, image {image} {self.image.dtype}, "
            f"text {text}, {self.labels.shape[1]} labels, splits {self.sizes()})")

  def fingerprint(self) -> str:
    """Hex digest (blake2b, 256 bits) of the data training and evaluation see; computed once.

    Covers, each with its dtype and shape: every row of `text` and `labels`, the index arrays
    `query`, `retrieval`, `train` and `val`, and the image:
      - an in-memory image: every row's bytes;
      - a lazy row source (a pixel stack left on disk, a TFDS build, synthetic pixels): its
        `identity()` (for files: resolved path, size, mtime_ns, key, stored shape and dtype;
        for TFDS: every file of the build folder with its size and mtime_ns) plus the bytes of
        `FINGERPRINT_SAMPLE_ROWS` rows evenly spaced from the first to the last. Hashing every
        pixel would read gigabytes; an edit elsewhere in the file changes its size or mtime.
    Not covered: `name`, `split_info` (the run identity records it beside the fingerprint) and
    the memory layout (C- and Fortran-ordered copies of one array hash the same). The same
    arrays loaded eagerly and streamed therefore give different fingerprints.
    """
    cached = self.__dict__.get("_fingerprint")
    if cached is not None:
      return cached
    extra = None
    if isinstance(self.image, np.ndarray):
      named = [("image", self.image)]
    else:
      rows = sample_rows(len(self.image))
      named = [("image rows", rows), ("image sample", read_rows(self.image, rows))]
      extra = {"image source": source_identity(self.image), "image shape": list(self.image.shape),
               "image dtype": str(np.dtype(self.image.dtype))}
    if self.text_tokens:  # the same integers as a bag-of-words are other data
      extra = dict(extra or {}, **{"text kind": self.text_kind})
    named += [("text", self.text), ("labels", self.labels)] + [(s, getattr(self, s)) for s in SPLITS]
    cached = hash_arrays(named, extra)
    object.__setattr__(self, "_fingerprint", cached)  # frozen: the one attribute set after construction
    return cached


def is_row_source(x) -> bool:
  """Whether `x` is a lazy row source: not an ndarray, but with `shape`, `dtype`, `ndim`,
  `__len__` and `__getitem__(index)` that reads the rows of an int, slice or int index array
  (any order, repeats allowed) into a numpy array. `RowSource` implements that protocol."""
  return (not isinstance(x, np.ndarray) and all(hasattr(x, a) for a in ("shape", "dtype", "ndim", "__len__"))
          and callable(getattr(x, "__getitem__", None)))


def read_rows(x, index) -> np.ndarray:
  """Rows `index` (an int index array) of an array or a row source, as a numpy array."""
  return np.asarray(x[np.asarray(index)])


def row_index(index, n: int) -> np.ndarray:
  """Row numbers in [0, n) that `index` selects, with numpy's indexing rules for one axis.

  Args:
    index: an int (negative counts from the end), a slice, a bool mask of length n, or an
      integer array of any shape (any order, repeats allowed).
    n: the number of rows.

  Returns:
    int64 array shaped like the index (0-d for an int; 1-D for a slice or mask).

  Raises:
    IndexError for rows outside [-n, n) or a mask of the wrong length; TypeError for other
    index types (tuples, floats): a lazy source indexes rows only.
  """
  if isinstance(index, slice):
    return np.arange(*index.indices(n), dtype=np.int64)
  if isinstance(index, (bool, np.bool_)) or index is None or isinstance(index, tuple):
    raise TypeError(f"a row source is indexed by rows only (an int, slice or index array), got {index!r}")
  array = np.asarray(index)
  if array.dtype == bool:
    if array.shape != (n,):
      raise IndexError(f"boolean row mask of shape {array.shape} does not match {n} rows")
    return np.flatnonzero(array).astype(np.int64)
  if array.size == 0:
    return np.zeros(array.shape, np.int64)  # [] arrives as float64
  if array.dtype.kind not in "iu":
    raise TypeError(f"row indices must be integers, got {array.dtype}")
  low, high = int(array.min()), int(array.max())
  if low < -n or high >= n:
    bad = low if low < -n else high
    raise IndexError(f"row {bad} is out of range for {n} rows")
  array = array.astype(np.int64)
  return np.where(array < 0, array + n, array) if low < 0 else array


class RowSource:
  """A lazy row source: rows read on demand, presented as (N, ...) numpy rows.

  Subclasses set `shape` (N first) and `dtype` and implement `_read_sorted(rows)`, which
  reads strictly increasing, distinct row numbers into a (len(rows), ...) array. Indexing
  (`row_index`: ints, slices, masks, index arrays in any order with repeats) is done here,
  once for every source: each distinct row is read once, in increasing order (sequential
  reads of the file), and the result is put in the order asked for.

  `identity()` describes where the rows come from, for `CrossModalData.fingerprint`.
  """

  shape: tuple = ()
  dtype: np.dtype = np.dtype(np.float32)

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __getitem__(self, index) -> np.ndarray:
    rows = row_index(index, len(self))
    flat = rows.reshape(-1)
    if flat.size == 0:
      return np.zeros(rows.shape + tuple(self.shape[1:]), self.dtype)
    unique, inverse = np.unique(flat, return_inverse=True)
    block = self._read_sorted(unique)
    if unique.size != flat.size or not np.array_equal(unique, flat):
      block = block[inverse.reshape(-1)]
    return block.reshape(rows.shape + tuple(self.shape[1:]))

  def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def identity(self) -> dict:
    """JSON-able description of the source's content (file, size, mtime, key, ...)."""
    return {"type": type(self).__qualname__, "shape": list(self.shape), "dtype": str(np.dtype(self.dtype))}

  def close(self):
    pass

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


class RowSubset(RowSource):
  """Rows `rows` of a row source, still unread: what dropping items from a lazy stack gives."""

  def __init__(self, source, rows):
    self.source, self.rows = source, np.asarray(rows, np.int64)
    self.shape = (int(self.rows.size),) + tuple(source.shape[1:])
    self.dtype = np.dtype(source.dtype)

  def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
    return np.asarray(self.source[self.rows[rows]])

  def identity(self) -> dict:
    return {"subset_of": source_identity(self.source), "rows": digest_array(self.rows)}


def take_rows(x, keep):
  """x[keep] for arrays; an unread `RowSubset` for row sources. keep: bool mask or indices."""
  if isinstance(x, np.ndarray):
    return x[keep]
  keep = np.asarray(keep)
  return RowSubset(x, np.flatnonzero(keep) if keep.dtype == bool else keep)


def source_identity(x) -> dict:
  """What identifies a row source's content without reading it: its `identity()` if it has
  one, else its type, shape and dtype (then only the sampled rows tell two sources apart)."""
  identity = getattr(x, "identity", None)
  if callable(identity):
    return identity()
  return {"type": type(x).__qualname__, "shape": [int(s) for s in x.shape], "dtype": str(np.dtype(x.dtype))}


# ---------------------------------------------------------------------------------------------
# Fingerprints: a digest of the data a run trains and is evaluated on.

FINGERPRINT_VERSION = "jxhash-data-1"
# Rows of a lazy source read for its fingerprint, evenly spaced from the first to the last.
FINGERPRINT_SAMPLE_ROWS = 64
# Bytes per hashed piece: the pieces are hashed on threads (hashlib releases the GIL), and
# their digests hashed in order, so the result does not depend on the number of threads.
_PIECE_BYTES = 1 << 24


def digest_array(array: np.ndarray) -> str:
  """A short hex digest of an array's C-order bytes (for identities of small arrays)."""
  return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).hexdigest()


def _array_pieces(x: np.ndarray) -> list[np.ndarray]:
  """Row blocks of `x` of about `_PIECE_BYTES` each (views; copied to C order when hashed)."""
  if x.ndim == 0 or x.shape[0] == 0:
    return [x]
  row_bytes = max(1, x.nbytes // x.shape[0])
  step = max(1, _PIECE_BYTES // row_bytes)
  return [x[start:start + step] for start in range(0, x.shape[0], step)]


def _hash_piece(piece: np.ndarray) -> bytes:
  # C-order bytes, whatever the memory layout (loadmat returns Fortran-ordered arrays).
  return hashlib.blake2b(memoryview(np.ascontiguousarray(piece)).cast("B"), digest_size=32).digest()


def hash_arrays(named: list[tuple[str, np.ndarray]], extra: dict | None = None) -> str:
  """Hex digest of named arrays (name, dtype, shape and C-order bytes) and a JSON `extra`."""
  pieces, owners = [], []
  for i, (_, x) in enumerate(named):
    for piece in _array_pieces(np.asarray(x)):
      pieces.append(piece)
      owners.append(i)
  workers = max(1, min(4, os.cpu_count() or 1, len(pieces)))
  if workers > 1:
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      digests = list(pool.map(_hash_piece, pieces))
  else:
    digests = [_hash_piece(p) for p in pieces]
  total = hashlib.blake2b(FINGERPRINT_VERSION.encode(), digest_size=32)
  for i, (name, x) in enumerate(named):
    x = np.asarray(x)
    total.update(f"|{name}|{x.dtype.str}|{x.shape}|".encode())
    for owner, digest in zip(owners, digests):
      if owner == i:
        total.update(digest)
  if extra is not None:
    total.update(json.dumps(extra, sort_keys=True, default=str).encode())
  return total.hexdigest()


def sample_rows(n: int, count: int = FINGERPRINT_SAMPLE_ROWS) -> np.ndarray:
  """`count` row numbers evenly spaced over [0, n), first and last included (all if n <= count)."""
  if n <= count:
    return np.arange(n)
  return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def _rows(x, field, where) -> int:
  if not isinstance(x, np.ndarray) and not (field == "image" and is_row_source(x)):
    kind = "a numpy array or a lazy row source" if field == "image" else "a numpy array"
    raise DataError(f"{where}: {field} must be {kind}, got {type(x).__name__}")
  if x.ndim == 0:
    raise DataError(f"{where}: {field} must have a row axis, got a scalar")
  return x.shape[0]

"""`CrossModalData`: N paired image/text items, their labels and the split index arrays."""

from __future__ import annotations

import dataclasses

import numpy as np

from jxhash.errors import DataError

SPLITS = ("query", "retrieval", "train", "val")


@dataclasses.dataclass(frozen=True, eq=False)
class CrossModalData:
  """A cross-modal retrieval dataset: arrays in host memory, the image optionally read lazily.

  Attributes:
    image: (N, D) float features, or (N, H, W, 3) uint8 pixels: a numpy array, or a lazy row
      source (see `is_row_source`, e.g. `jxhash.data.io.LazyRows` over an HDF5 stack) whose
      rows are read on demand, for image stacks larger than memory. The trainer streams the
      training batches of a lazy source from the host (`jxhash.train`); its values are not
      checked for NaN up front (that would read it all).
    text: (N, T) bag-of-words or dense text features.
    labels: (N, C) multi-hot {0, 1} uint8 labels (single-label data is one-hot).
    query, retrieval, train: 1-D int64 index arrays into the N items.
    val: items held out of training (disjoint from `train` and `query`), used for model
      selection only; the query set is never used for it. May be empty.
    name: dataset name, recorded in results files.
    split_info: how the split was made, e.g. {"rule": "random", "seed": 0}.
    disjoint_query: whether the protocol requires query ∩ retrieval = ∅ (checked if True).

  Construction validates everything and raises `DataError` naming the problem.
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

  def __post_init__(self):
    where = f"dataset {self.name!r}"
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


def is_row_source(x) -> bool:
  """Whether `x` is a lazy row source: not an ndarray, but with `shape`, `dtype`, `ndim`,
  `__len__` and `__getitem__(index)` that reads the rows of an int, slice or int index array
  (any order, repeats allowed) into a numpy array."""
  return (not isinstance(x, np.ndarray) and all(hasattr(x, a) for a in ("shape", "dtype", "ndim", "__len__"))
          and callable(getattr(x, "__getitem__", None)))


def read_rows(x, index) -> np.ndarray:
  """Rows `index` (an int index array) of an array or a row source, as a numpy array."""
  return np.asarray(x[np.asarray(index)])


class RowSubset:
  """Rows `rows` of a row source, still unread: what dropping items from a lazy stack gives."""

  def __init__(self, source, rows):
    self.source, self.rows = source, np.asarray(rows, np.int64)
    self.shape = (int(self.rows.size),) + tuple(source.shape[1:])
    self.dtype, self.ndim = np.dtype(source.dtype), len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index) -> np.ndarray:
    return np.asarray(self.source[self.rows[index]])


def take_rows(x, keep):
  """x[keep] for arrays; an unread `RowSubset` for row sources. keep: bool mask or indices."""
  if isinstance(x, np.ndarray):
    return x[keep]
  keep = np.asarray(keep)
  return RowSubset(x, np.flatnonzero(keep) if keep.dtype == bool else keep)


def _rows(x, field, where) -> int:
  if not isinstance(x, np.ndarray) and not (field == "image" and is_row_source(x)):
    kind = "a numpy array or a lazy row source" if field == "image" else "a numpy array"
    raise DataError(f"{where}: {field} must be {kind}, got {type(x).__name__}")
  if x.ndim == 0:
    raise DataError(f"{where}: {field} must have a row axis, got a scalar")
  return x.shape[0]

"""`Table`: every raw item of a dataset as a scan reads it, before a protocol's rules select items.

Also the small text helpers the scans share (tokenising, vocabularies, sparse bag-of-words).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
from collections import Counter

import numpy as np

from jxhash.data.prepare import common

_WORD = re.compile(r"[^\W\d_]+")


@dataclasses.dataclass
class Table:
  """N raw items.

  Attributes:
    ids: item ids: the image file name without extension (what the extract command writes).
    images: image paths relative to the raw root, as laid out once extracted.
    labels: (N, C) uint8 multi-hot; `classes` names the columns.
    indptr, indices: the (N, V) bag-of-words as CSR (row i's columns are
      indices[indptr[i]:indptr[i+1]], sorted); `vocab` names the columns.
    captions: per item, the raw strings a tokenizer reads (one or several).
    raw_tags: (N,) int, tags (or words) per item before the vocabulary filter.
    flags: named (N,) bool arrays (e.g. "image_missing", "not_jpeg").
    notes: JSON-able facts found while scanning (quirks), copied into the manifest.
  """

  ids: list[str]
  images: list[str]
  labels: np.ndarray
  classes: list[str]
  indptr: np.ndarray
  indices: np.ndarray
  vocab: list[str]
  captions: list[list[str]]
  raw_tags: np.ndarray
  flags: dict = dataclasses.field(default_factory=dict)
  notes: dict = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.ids)

  def tags_per_item(self) -> np.ndarray:
    return np.diff(self.indptr)

  def bow_dense(self, rows=None) -> np.ndarray:
    """(len(rows), V) uint8 0/1 bag-of-words of `rows` (default all)."""
    rows = np.arange(len(self)) if rows is None else np.asarray(rows)
    return csr_dense(self.indptr, self.indices, len(self.vocab), rows)

  def take(self, rows: np.ndarray) -> "Table":
    rows = np.asarray(rows, np.int64)
    counts = np.diff(self.indptr)[rows]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    indices = (np.concatenate([self.indices[self.indptr[r]:self.indptr[r + 1]] for r in rows])
               if rows.size else np.zeros(0, np.int32)).astype(np.int32)
    return Table(ids=[self.ids[r] for r in rows], images=[self.images[r] for r in rows],
                 labels=self.labels[rows], classes=self.classes, indptr=indptr, indices=indices,
                 vocab=self.vocab, captions=[self.captions[r] for r in rows], raw_tags=self.raw_tags[rows],
                 flags={k: v[rows] for k, v in self.flags.items()}, notes=self.notes)

  # -- the scan step's files (in the work folder only) --------------------------------------

  def save(self, directory: pathlib.Path) -> None:
    arrays = {"labels": self.labels, "indptr": self.indptr, "indices": self.indices, "raw_tags": self.raw_tags}
    arrays.update({f"flag_{k}": v for k, v in self.flags.items()})
    common_write(directory / "arrays.npz", common.npz_bytes(arrays))
    common_write(directory / "items.jsonl", common.jsonl_text(
        [i, p, c] for i, p, c in zip(self.ids, self.images, self.captions)))
    common_write(directory / "meta.json", common.json_text(
        {"classes": self.classes, "vocab": self.vocab, "notes": self.notes}))

  @classmethod
  def load(cls, directory: pathlib.Path) -> "Table":
    with np.load(directory / "arrays.npz") as f:
      arrays = {k: f[k] for k in f.files}
    ids, images, captions = [], [], []
    with open(directory / "items.jsonl", encoding="utf-8") as f:
      for line in f:
        i, p, c = json.loads(line)
        ids.append(i)
        images.append(p)
        captions.append(c)
    meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    flags = {k[5:]: v for k, v in arrays.items() if k.startswith("flag_")}
    return cls(ids=ids, images=images, labels=arrays["labels"], classes=meta["classes"], indptr=arrays["indptr"],
               indices=arrays["indices"], vocab=meta["vocab"], captions=captions, raw_tags=arrays["raw_tags"],
               flags=flags, notes=meta["notes"])


def common_write(path: pathlib.Path, data) -> None:
  from jxhash import fileio
  fileio.atomic_write(path, data, what="prepare work file")


def csr_dense(indptr: np.ndarray, indices: np.ndarray, width: int, rows: np.ndarray) -> np.ndarray:
  out = np.zeros((rows.size, width), np.uint8)
  for k, r in enumerate(rows):
    out[k, indices[indptr[r]:indptr[r + 1]]] = 1
  return out


def csr_from_rows(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  """CSR (indptr int64, indices int32) of per-item column lists (made sorted and unique)."""
  cleaned = [sorted(set(r)) for r in rows]
  indptr = np.zeros(len(cleaned) + 1, np.int64)
  indptr[1:] = np.cumsum([len(r) for r in cleaned])
  indices = np.fromiter((c for r in cleaned for c in r), np.int32, count=int(indptr[-1]))
  return indptr, indices


def words(text: str) -> list[str]:
  """Lower-case runs of letters (any script) of `text` (the bag-of-words tokeniser of the caption datasets)."""
  return _WORD.findall(text.lower())


def top_vocabulary(counts: Counter, size: int) -> list[str]:
  """The `size` most frequent words, ties broken alphabetically (so the result is unique)."""
  return [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:size]]

"""`prepare mirflickr25k` against the DCMH release (mirflickr25k-lall.mat / -yall.mat, real data: slow).

The raw images and tag files are not at hand, so these tests check what the rules allow:
  - the label column order: MIRFlickr's annotation scheme nests concepts (every "clouds" image
    is a "sky" image, every "dog" an "animals" one, ...). Read with the 24 concepts in
    alphabetical order (prepare's order), the release's columns show those nestings;
  - the release inverted into the official layout (24 concept files with CRLF lines, tag files,
    common_tags.txt with synthetic tag names in column order, images), plus items the DCMH rule
    must drop, prepared with the dcmh protocol: exactly the release's 20,015 rows come back,
    labels and tags equal row for row (up to the item order), with the release's statistics.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from jxhash.data.prepare import cli
from prepare_trees import MIR_CONCEPTS, jpeg

# (child, parent): every image annotated with the child concept shows the parent one
NESTED = (("baby", "people"), ("female", "people"), ("male", "people"), ("portrait", "people"), ("dog", "animals"),
          ("bird", "animals"), ("clouds", "sky"), ("sea", "water"), ("lake", "water"), ("river", "water"),
          ("tree", "plant_life"), ("flower", "plant_life"), ("car", "transport"))


def release(mirflickr_dir):
  labels = scipy.io.loadmat(mirflickr_dir / "mirflickr25k-lall.mat")["LAll"].astype(np.uint8)
  tags = scipy.io.loadmat(mirflickr_dir / "mirflickr25k-yall.mat")["YAll"].astype(np.uint8)
  return labels, tags


def nesting(labels: np.ndarray, order) -> float:
  """The smallest share of a child concept's images that show its parent, columns named by `order`."""
  column = {c: k for k, c in enumerate(order)}
  return min(float(labels[labels[:, column[c]] == 1, column[p]].mean()) for c, p in NESTED)


def test_the_alphabetical_concept_order_fits_the_release_columns(mirflickr_dir):
  labels, _ = release(mirflickr_dir)
  assert labels.shape == (20015, 24)
  assert list(MIR_CONCEPTS) == sorted(MIR_CONCEPTS)
  assert nesting(labels, MIR_CONCEPTS) >= 0.998
  # the check can fail: the same columns under other orders break the nesting
  assert nesting(labels, MIR_CONCEPTS[::-1]) < 0.9
  assert nesting(labels, MIR_CONCEPTS[1:] + MIR_CONCEPTS[:1]) < 0.9


def test_the_release_inverted_into_the_official_layout_comes_back_row_for_row(mirflickr_dir, tmp_path):
  labels, tags = release(mirflickr_dir)
  n, width = tags.shape
  rng = np.random.default_rng(0)
  # 20,015 release rows plus items the DCMH rule drops: 300 without a label, 200 labelled with
  # only tags outside the vocabulary, 100 with an empty tag file; all in a shuffled image order.
  kinds = np.array([0] * n + [1] * 300 + [2] * 200 + [3] * 100)
  order = rng.permutation(kinds.size)
  kinds = kinds[order]
  release_row = np.full(kinds.size, -1)
  release_row[kinds == 0] = order[kinds == 0]
  names = [f"tag{k:04d}" for k in range(width)]
  raw = tmp_path / "raw"
  (raw / "mirflickr" / "meta" / "tags").mkdir(parents=True)
  (raw / "mirflickr" / "doc").mkdir()
  (raw / "mirflickr" / "doc" / "common_tags.txt").write_text(
      "".join(f"{t} {int(c)}\n" for t, c in zip(names, tags.sum(0) + 20)))
  picture = jpeg(1)
  members = {c: [] for c in MIR_CONCEPTS}
  for position, (kind, row) in enumerate(zip(kinds, release_row)):
    i = position + 1
    (raw / "mirflickr" / f"im{i}.jpg").write_bytes(picture)
    if kind == 0:
      words = [names[k] for k in rng.permutation(np.flatnonzero(tags[row]))] + ["rareword"]
      concepts = np.flatnonzero(labels[row])
    else:
      words = {1: [names[0], "rareword"], 2: ["rareword", "other"], 3: []}[kind]
      concepts = [] if kind == 1 else [int(rng.integers(24))]
    (raw / "mirflickr" / "meta" / "tags" / f"tags{i}.txt").write_text("".join(f"{w}\n" for w in words))
    for c in concepts:
      members[MIR_CONCEPTS[c]].append(i)
  for concept, ids in members.items():
    (raw / f"{concept}.txt").write_bytes("".join(f"{i}\r\n" for i in ids).encode())
  out = tmp_path / "out"
  assert cli.main(["mirflickr25k", "--raw", str(raw), "--out", str(out), "--no-progress"]) == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["counts"]["items"] == n == 20015
  assert manifest["counts"]["dropped"] == {"no_label": 300, "no_common_tag": 300}
  assert manifest["counts"]["splits"] == {"query": 2000, "retrieval": 18015, "train": 9500, "val": 500}
  ids = [int(i[2:]) for i in (out / "ids.txt").read_text().splitlines()]
  rows = release_row[np.array(ids) - 1]
  assert (rows >= 0).all() and np.unique(rows).size == n
  np.testing.assert_array_equal(np.load(out / "labels.npy"), labels[rows])
  with np.load(out / "text_bow.npz") as f:
    indptr, indices = f["indptr"], f["indices"]
  dense = np.zeros((n, width), np.uint8)
  dense[np.repeat(np.arange(n), np.diff(indptr)), indices] = 1
  np.testing.assert_array_equal(dense, tags[rows])
  # the release's statistics, as the manifest states them
  assert manifest["label_counts"] == dict(zip(MIR_CONCEPTS, labels.sum(0).astype(int).tolist()))
  assert manifest["labels_per_item"]["histogram"] == {
      str(k): int(c) for k, c in enumerate(np.bincount(labels.sum(1))) if c}
  assert manifest["tags_per_item"]["histogram"] == {str(k): int(c) for k, c in enumerate(np.bincount(tags.sum(1))) if c}
  assert abs(manifest["tags_per_item"]["mean"] - 92808 / 20015) < 1e-3

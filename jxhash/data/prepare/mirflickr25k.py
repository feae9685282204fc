"""MIRFlickr-25K from its official downloads: mirflickr25k.zip and mirflickr25k_annotations_v080.zip.

Layout read (zipped or extracted, anywhere under the raw root):
  mirflickr/im<i>.jpg                i = 1..25000 (listed and checked, not decoded)
  mirflickr/meta/tags/tags<i>.txt    the processed tags of image i, one per line
  mirflickr/doc/common_tags.txt      "<tag> <count>" lines: the 1,386 tags in >= 20 images; the
                                     order of this file is the column order of the bag-of-words
  <annotations>/<concept>.txt        the 1-based ids of the images showing a concept (CRLF lines);
                                     the 24 base concepts are read, the 14 "_r1" files are not

Rules (sources in docs/data.md, "Preparing the official downloads"):
  labels: the 24 base concepts in alphabetical order (the DCMH release's column order);
  text: 0/1 bag-of-words over common_tags.txt;
  keep: "labelled-tagged" = >= 1 label and >= 1 common tag (20,015 items: the DCMH lineage and
    MITH), or "labelled" = every image in >= 1 concept file (DCHMT/DSPH);
  caption: "vocab-tags" = the item's common tags joined by spaces (MITH), "all-tags" = all its
    tags joined by spaces (DCHMT/DSPH).
"""

from __future__ import annotations

import re

import numpy as np

from jxhash.data.options import Option, Schema
from jxhash.data.prepare import common, pipeline
from jxhash.data.prepare.table import Table, csr_from_rows
from jxhash.errors import DataError

CONCEPTS = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake", "male",
            "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset", "transport",
            "tree", "water")
_TAGS = re.compile(r"tags(\d+)\.txt")

RULES = Schema("mirflickr25k", [
    Option("keep", "str", "labelled-tagged", "items kept: >= 1 label and >= 1 common tag, or >= 1 label",
           choices=("labelled-tagged", "labelled")),
    Option("caption", "str", "vocab-tags", "the raw string of an item: its common tags, or all its tags, joined "
           "by spaces", choices=("vocab-tags", "all-tags")),
    *pipeline.split_options(num_query=2000, num_train=10000),
])

PROTOCOLS = {
    "dcmh": {"keep": "labelled-tagged", "caption": "vocab-tags", "num_query": 2000, "num_train": 10000},
    "clip": {"keep": "labelled-tagged", "caption": "vocab-tags", "num_query": 2000, "num_train": 10000},
    "clip-dsph": {"keep": "labelled", "caption": "all-tags", "num_query": 5000, "num_train": 10000},
}


def _decode(data: bytes) -> tuple[str, bool]:
  try:
    return data.decode("utf-8"), False
  except UnicodeDecodeError:
    return data.decode("latin-1"), True


def read_ids(tree: common.RawTree, rel: str, limit: int) -> list[int]:
  """The 1-based image ids of a concept file (blank lines skipped); a malformed line is an error."""
  ids = []
  for number, line in enumerate(tree.lines(rel, "ascii"), 1):
    text = line.strip()
    if not text:
      continue
    if not text.isdigit() or not 1 <= int(text) <= limit:
      raise DataError(f"{tree.where(rel)}:{number}: {text[:40]!r} is not an image id in 1..{limit}")
    ids.append(int(text))
  return ids


def scan(tree: common.RawTree, rules: dict, show_progress: bool) -> Table:
  vocab_file = tree.find_one("doc/common_tags.txt", "the tag vocabulary, in mirflickr25k.zip")
  base = vocab_file[:-len("doc/common_tags.txt")]
  vocab = []
  for number, line in enumerate(tree.lines(vocab_file), 1):
    parts = line.split()
    if not parts:
      continue
    if len(parts) != 2 or not parts[1].isdigit():
      raise DataError(f"{tree.where(vocab_file)}:{number}: expected '<tag> <count>', got {line[:60]!r}")
    vocab.append(parts[0])
  if len(set(vocab)) != len(vocab):
    raise DataError(f"{tree.where(vocab_file)}: a tag is listed twice")
  column = {t: k for k, t in enumerate(vocab)}
  numbers = sorted(int(m.group(1)) for p in tree.under(base + "meta/tags")
                   if (m := _TAGS.fullmatch(p.rsplit("/", 1)[-1])))
  if not numbers:
    raise DataError(f"--raw {tree.root}: no {base}meta/tags/tags<i>.txt files (in mirflickr25k.zip)")
  if numbers != list(range(1, len(numbers) + 1)):
    gap = next(i for k, i in enumerate(numbers, 1) if i != k) if numbers[0] == 1 else 1
    raise DataError(f"--raw {tree.root}: {base}meta/tags/tags{gap}.txt is missing (tag files must run from 1)")
  n = len(numbers)
  anchor = [p for p in tree.find(f"{CONCEPTS[0]}.txt") if "/meta/" not in p]
  if not anchor:
    raise DataError(f"--raw {tree.root}: no annotation file {CONCEPTS[0]}.txt (in mirflickr25k_annotations_v080.zip)")
  folder = anchor[0][:-len(f"{CONCEPTS[0]}.txt")]
  labels = np.zeros((n, len(CONCEPTS)), np.uint8)
  for c, concept in enumerate(CONCEPTS):
    rel = folder + f"{concept}.txt"
    if not tree.exists(rel):
      raise DataError(f"--raw {tree.root}: annotation file {rel} is missing")
    labels[np.array(read_ids(tree, rel, n), np.int64) - 1, c] = 1
  rows, captions, raw_tags, ids, images = [], [], [], [], []
  missing = np.zeros(n, bool)
  not_jpeg = np.zeros(n, bool)
  latin1 = empty = 0
  for i in common.progress(numbers, desc="mirflickr25k tags", enabled=show_progress):
    text, fallback = _decode(tree.read_bytes(f"{base}meta/tags/tags{i}.txt"))
    latin1 += fallback
    tags = [t.strip() for t in text.splitlines() if t.strip()]
    empty += not tags
    in_vocab = [t for t in tags if t in column]
    rows.append([column[t] for t in in_vocab])
    raw_tags.append(len(tags))
    captions.append([" ".join(in_vocab if rules["caption"] == "vocab-tags" else tags)])
    ids.append(f"im{i}")
    image = f"{base}im{i}.jpg"
    images.append(image)
    if not tree.exists(image):
      missing[i - 1] = True
    elif tree.magic(image) != common.JPEG_MAGIC:
      not_jpeg[i - 1] = True
  indptr, indices = csr_from_rows(rows)
  notes = {"empty_tag_files": empty, "tag_files_not_utf8": latin1, "annotation_folder": folder or ".",
           "mirflickr_folder": base or "."}
  return Table(ids=ids, images=images, labels=labels, classes=list(CONCEPTS), indptr=indptr, indices=indices,
               vocab=vocab, captions=captions, raw_tags=np.array(raw_tags, np.int64),
               flags={"image_missing": missing, "not_jpeg": not_jpeg}, notes=notes)


def select(table: Table, rules: dict):
  return pipeline.select_labelled(table, rules, untagged="no_common_tag")


DATASET = pipeline.Dataset(name="mirflickr25k", rules=RULES, protocols=PROTOCOLS, default_protocol="dcmh",
                           scan=scan, select=select)

"""NUS-WIDE from its official downloads: the metadata zips and the Flickr images.

Layout read (zipped or extracted, anywhere under the raw root; names as in the official zips):
  ImageList/Imagelist.txt          one image per line, "<concept folder>\\<nnnn>_<flickr id>.jpg"
                                   (backslashes; a leading "C:\\...\\Flickr\\" is allowed)
  NUS_WID_Tags/All_Tags.txt        "<flickr id> <tag> <tag> ...", same order as Imagelist.txt
  NUS_WID_Tags/AllTags1k.txt       one 0/1 row of the 1,000 tags per image
  NUS_WID_Tags/TagList1k.txt       the 1,000 tags, in column order
  Concepts81.txt                   the 81 concepts (ConceptsList.zip)
  Groundtruth/AllLabels/Labels_<concept>.txt   one 0/1 line per image
  Flickr/<concept folder>/<file>   the images (listed and checked, not decoded)
Groundtruth/TrainTestLabels (with its known bad line, Labels_lake_Train.txt: -1130179) is not read.

Rules (sources in docs/data.md):
  labels: "top21" = the 21 most frequent of the 81 concepts (TC-21, the DCMH lineage), or
    "top10"; frequency over all images, ties by name; columns in alphabetical order;
  text: AllTags1k.txt's 0/1 rows;
  keep: "labelled" = >= 1 label (DCMH: 195,834 for TC-21), "labelled-tagged" = also >= 1 of
    the 1k tags (MITH: 190,421);
  caption: all of an item's tags in All_Tags.txt, joined by spaces;
  not_used: a list of images to remove in the format of DSPH's not-used-id.txt (one number v per
    line; v - not_used_offset is the 0-based line of Imagelist.txt; DSPH subtracts 2), read from a
    file the user gives; removed before the keep rule, and checked against the labels (the
    manifest's notes say how many listed images have a label and how many unlisted ones have none).
Every file is streamed line by line (269,648 lines each); memory stays at the label and tag
matrices of the items (about 100 MB for the full set).
"""

from __future__ import annotations

import hashlib

import numpy as np

from jxhash import fileio
from jxhash.data.options import Option, Schema
from jxhash.data.prepare import common, pipeline
from jxhash.data.prepare.table import Table
from jxhash.errors import DataError

TC21 = ("animal", "beach", "buildings", "clouds", "flowers", "grass", "lake", "mountain", "ocean", "person", "plants",
        "reflection", "road", "rocks", "sky", "snow", "sunset", "tree", "vehicle", "water", "window")

RULES = Schema("nuswide", [
    Option("concepts", "str", "top21", "label set: the 21 or 10 most frequent concepts", choices=("top21", "top10")),
    Option("keep", "str", "labelled", "items kept: >= 1 label, or >= 1 label and >= 1 of the 1k tags",
           choices=("labelled", "labelled-tagged")),
    Option("not_used", "path", None, "a file listing images to remove, in the format of DSPH's not-used-id.txt "
           "(one whole number per line); none: remove nothing", optional=True),
    Option("not_used_offset", "int", 2, "what is subtracted from each number of not_used to give the 0-based line "
           "of Imagelist.txt (DSPH's make_nuswide.py subtracts 2)", low=0),
    *pipeline.split_options(num_query=2100, num_train=10500),
])

PROTOCOLS = {
    "dcmh": {"concepts": "top21", "keep": "labelled", "num_query": 2100, "num_train": 10500},
    "clip": {"concepts": "top21", "keep": "labelled-tagged", "num_query": 2100, "num_train": 10500},
    "clip-5k": {"concepts": "top21", "keep": "labelled-tagged", "num_query": 5000, "num_train": 10000},
}

_ZERO, _ONE = ord("0"), ord("1")


def _binary_column(tree: common.RawTree, rel: str, n: int) -> np.ndarray:
  column = np.zeros(n, np.uint8)
  count = 0
  for number, line in enumerate(tree.lines(rel, "ascii"), 1):
    text = line.strip()
    if not text and number > n:
      continue
    if text not in ("0", "1"):
      raise DataError(f"{tree.where(rel)}:{number}: expected 0 or 1, got {text[:40]!r}")
    if number > n:
      raise DataError(f"{tree.where(rel)}: more lines than the {n} images of Imagelist.txt")
    column[number - 1] = text == "1"
    count = number
  if count != n:
    raise DataError(f"{tree.where(rel)}: {count} lines, but Imagelist.txt lists {n} images")
  return column


def read_not_used(given: str, offset: int, n: int) -> tuple[np.ndarray, dict]:
  """The (n,) bool mask of the images a DSPH-format list removes, and the file's identity.

  The file: one whole number v per line (blank lines skipped, CRLF allowed); v - offset is the
  0-based line of Imagelist.txt. DSPH's make_nuswide.py removes each such row with list.remove,
  so a number listed twice or naming no image fails there too: both are refused here."""
  path = fileio.resolve(given)
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DataError(f"--rule not_used={given}: cannot read it ({e.strerror or e})") from None
  mask = np.zeros(n, bool)
  for number, line in enumerate(data.splitlines(), 1):  # LF, CRLF or CR
    text = line.strip().decode("latin-1")
    if not text:
      continue
    if not (text.isascii() and text.isdigit()):
      raise DataError(f"{path}:{number}: {text[:40]!r} is not a whole number (not_used lists one image number a line)")
    row = int(text) - offset
    if not 0 <= row < n:
      raise DataError(f"{path}:{number}: {text} - not_used_offset {offset} = {row}, not a line of the {n} images of "
                      f"Imagelist.txt (0..{n - 1}); is not_used_offset right?")
    if mask[row]:
      raise DataError(f"{path}:{number}: {text} is listed twice")
    mask[row] = True
  return mask, {"file": str(path), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "offset": offset,
                "listed": int(mask.sum())}


def scan(tree: common.RawTree, rules: dict, show_progress: bool) -> Table:
  listing = tree.find_one("ImageList/Imagelist.txt", "the image list, in ImageList.zip")
  files = []
  for number, line in enumerate(tree.lines(listing, "utf-8"), 1):
    parts = [p for p in line.strip().replace("/", "\\").split("\\") if p]
    if not parts:
      continue
    if len(parts) < 2 or not parts[-1].lower().endswith(".jpg"):
      raise DataError(f"{tree.where(listing)}:{number}: expected '<folder>\\<file>.jpg', got {line[:60]!r}")
    files.append((parts[-2], parts[-1]))
  n = len(files)
  # checked before the long reads below
  not_used = read_not_used(rules["not_used"], rules["not_used_offset"], n) if rules["not_used"] else None
  concepts_file = tree.find_one("Concepts81.txt", "the concept list, in ConceptsList.zip")
  concepts = [c.strip() for c in tree.lines(concepts_file) if c.strip()]
  columns = {}
  for concept in common.progress(concepts, desc="nuswide labels", enabled=show_progress):
    rel = tree.find_one(f"AllLabels/Labels_{concept}.txt", f"the labels of concept {concept!r}, in Groundtruth.zip")
    columns[concept] = _binary_column(tree, rel, n)
  size = 21 if rules["concepts"] == "top21" else 10
  ranked = sorted(concepts, key=lambda c: (-int(columns[c].sum()), c))
  classes = sorted(ranked[:size])
  labels = np.stack([columns[c] for c in classes], axis=1)
  del columns
  vocab_file = tree.find_one("NUS_WID_Tags/TagList1k.txt", "the 1k tag list, in NUS_WID_Tags.zip")
  vocab = [t.strip() for t in tree.lines(vocab_file) if t.strip()]
  matrix = tree.find_one("NUS_WID_Tags/AllTags1k.txt", "the 1k tag matrix, in NUS_WID_Tags.zip")
  indptr = np.zeros(n + 1, np.int64)
  chunks = []
  count = 0
  for number, line in enumerate(common.progress(tree.lines(matrix, "ascii"), total=n, desc="nuswide 1k tags",
                                                enabled=show_progress), 1):
    raw = np.frombuffer(line.encode("ascii"), np.uint8)
    digits = raw[(raw != 32) & (raw != 9)]
    if digits.size == 0 and number > n:
      continue
    if digits.size != len(vocab) or not np.isin(digits, (_ZERO, _ONE)).all():
      raise DataError(f"{tree.where(matrix)}:{number}: expected {len(vocab)} values 0/1 separated by spaces")
    if number > n:
      raise DataError(f"{tree.where(matrix)}: more rows than the {n} images of Imagelist.txt")
    hot = np.flatnonzero(digits == _ONE).astype(np.int32)
    chunks.append(hot)
    indptr[number] = hot.size
    count = number
  if count != n:
    raise DataError(f"{tree.where(matrix)}: {count} rows, but Imagelist.txt lists {n} images")
  indptr = np.cumsum(indptr)
  indices = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
  all_tags = tree.find_one("NUS_WID_Tags/All_Tags.txt", "the tags of every image, in NUS_WID_Tags.zip")
  captions, raw_tags = [], np.zeros(n, np.int64)
  count = 0
  for number, line in enumerate(tree.lines(all_tags, "utf-8"), 1):
    parts = line.split()
    if not parts and number > n:
      continue
    if number > n:
      raise DataError(f"{tree.where(all_tags)}: more lines than the {n} images of Imagelist.txt")
    flickr = files[number - 1][1].rsplit(".", 1)[0].split("_", 1)[-1]
    if not parts or parts[0] != flickr:
      got = parts[0] if parts else ""
      raise DataError(f"{tree.where(all_tags)}:{number}: flickr id {got!r} does not match Imagelist.txt's "
                      f"{files[number - 1][1]!r}; the files must list the images in the same order")
    captions.append([" ".join(parts[1:])])
    raw_tags[number - 1] = len(parts) - 1
    count = number
  if count != n:
    raise DataError(f"{tree.where(all_tags)}: {count} lines, but Imagelist.txt lists {n} images")
  first = tree.find(f"{files[0][0]}/{files[0][1]}") if files else []
  prefix = first[0][:-len(f"{files[0][0]}/{files[0][1]}")] if first else "Flickr/"
  images = [f"{prefix}{folder}/{name}" for folder, name in files]
  missing = np.zeros(n, bool)
  not_jpeg = np.zeros(n, bool)
  for k, image in enumerate(common.progress(images, desc="nuswide images", enabled=show_progress)):
    if not tree.exists(image):
      missing[k] = True
    elif tree.magic(image) != common.JPEG_MAGIC:
      not_jpeg[k] = True
  ids = [name.rsplit(".", 1)[0] for _, name in files]
  flickr_ids = [i.split("_", 1)[-1] for i in ids]
  notes = {"concepts_by_frequency": ranked[:size], "duplicated_flickr_ids": n - len(set(flickr_ids)),
           "image_folder": prefix or "."}
  flags = {"image_missing": missing, "not_jpeg": not_jpeg}
  if not_used is not None:
    listed, identity = not_used
    labelled = labels.any(1)
    # a list that is the unlabelled images (as DSPH's is meant to be) gives 0 and 0 here
    notes["not_used"] = {**identity, "listed_with_label": int((listed & labelled).sum()),
                         "unlisted_without_label": int((~listed & ~labelled).sum())}
    flags["not_used"] = listed
  return Table(ids=ids, images=images, labels=labels, classes=classes, indptr=indptr, indices=indices.astype(np.int32),
               vocab=vocab, captions=captions, raw_tags=raw_tags, flags=flags, notes=notes)


def select(table: Table, rules: dict):
  return pipeline.select_labelled(table, rules, untagged="no_1k_tag", removed=table.flags.get("not_used"))


DATASET = pipeline.Dataset(name="nuswide", rules=RULES, protocols=PROTOCOLS, default_protocol="dcmh",
                           scan=scan, select=select)

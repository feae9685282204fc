"""MS-COCO 2017 from its official downloads: train2017.zip, val2017.zip, annotations_trainval2017.zip.

Layout read (zipped or extracted):
  annotations/instances_{train,val}2017.json   "images" (id, file_name), "annotations"
                                               (image_id, category_id, ...), "categories" (id, name)
  annotations/captions_{train,val}2017.json    "annotations" (id, image_id, caption)
  {train,val}2017/<file_name>                  the images (listed and checked, not decoded)

Rules (sources in docs/data.md):
  items: the images with >= 1 instance annotation (123,287 - 1,069 = 122,218), train2017 then
    val2017, each in numeric image-id order (DCHMT);
  labels: the 80 categories in the order of the instances JSON's "categories" list;
  captions: caption="all": every caption of the image, as written (duplicates kept), in the
    captions JSON's order (DCHMT, whose loader draws one per access); "first": the first of
    them; "draw": one drawn once per image, as MITH's make_coco.py does (Python's
    random.Random(caption_seed).randint over each image's captions, every image in item order,
    those later dropped included); caption_trim="before-first-period" keeps the text before the
    first "." (MITH's split(".")[0]);
  text: a 0/1 bag-of-words over the `vocab_size` most frequent lower-case words of the captions of
    the kept items (ties alphabetical): jxhash's own rule for BoW baselines (the CLIP lineage
    tokenises the captions instead).
The JSON files are streamed (jsonstream): an element at a time, keeping the ids an item needs
and the captions; peak memory is in docs/data.md ("Memory").
"""

from __future__ import annotations

import random
from array import array
from collections import Counter

import numpy as np

from jxhash.data.options import Option, Schema
from jxhash.data.prepare import common, jsonstream, pipeline
from jxhash.data.prepare.table import Table, csr_from_rows, top_vocabulary, words
from jxhash.errors import DataError

PARTS = ("train2017", "val2017")

RULES = Schema("coco", [
    Option("vocab_size", "int", 2000, "words of the caption bag-of-words (most frequent first)", low=1),
    Option("caption", "str", "all", "the captions of an image kept: all, the first, or one drawn once per image "
           "(MITH)", choices=("all", "first", "draw")),
    Option("caption_seed", "int", 1, "seed of caption=draw (Python's random.Random; MITH: random.seed(1))", low=0),
    Option("caption_trim", "str", "none", "keep each caption whole, or only the text before its first '.' (MITH)",
           choices=("none", "before-first-period")),
    *pipeline.split_options(num_query=5000, num_train=10000),
])

PROTOCOLS = {
    "clip": {"caption": "all", "caption_trim": "none", "num_query": 5000, "num_train": 10000},
    "clip-mith": {"caption": "draw", "caption_seed": 1, "caption_trim": "before-first-period", "num_query": 5000,
                  "num_train": 10000},
}


def _walk(tree: common.RawTree, rel: str, lists: dict) -> None:
  """Stream the JSON object of `rel`, calling lists[key] on each element of its top-level list
  `key` (jsonstream: the file is never held whole); every key of `lists` must be a list there."""
  if jsonstream.walk_object(tree.chunks(rel), lists, tree.where(rel)) != set(lists):
    raise DataError(f"{tree.where(rel)}: expected a JSON object with lists {', '.join(lists)}")


def _field(tree, rel, record, key, kind):
  value = record.get(key) if isinstance(record, dict) else None
  if not isinstance(value, kind) or isinstance(value, bool):
    raise DataError(f"{tree.where(rel)}: an entry has no valid {key!r}: {str(record)[:80]}")
  return value


def choose_captions(captions: list[list[str]], rule: str, seed: int, trim: str) -> list[list[str]]:
  """The captions kept per image by the `caption` and `caption_trim` rules (see the module doc).

  caption="draw" calls randint once for every image, in order, whatever it holds (MITH draws
  for every line of its caption file before dropping the unlabelled images), so an image's
  draw does not depend on which items a rule keeps. A seeded random.Random draws the same
  on CPython 3.6 to 3.13 (checked): reruns give the same captions."""
  rng = random.Random(seed)
  chosen = []
  for texts in captions:
    if rule == "draw":
      k = rng.randint(0, max(len(texts) - 1, 0))
      texts = texts[k:k + 1]
    elif rule == "first":
      texts = texts[:1]
    if trim == "before-first-period":
      texts = [t.split(".", 1)[0] for t in texts]
    chosen.append(list(texts))
  return chosen


def scan(tree: common.RawTree, rules: dict, show_progress: bool) -> Table:
  classes, category_ids = None, None
  ids, images, label_rows, captions, missing, not_jpeg = [], [], [], [], [], []
  for part in PARTS:
    rel = tree.find_one(f"annotations/instances_{part}.json", "in annotations_trainval2017.zip")
    cats, files = [], {}
    image_of, category_of, annotation_of = array("q"), array("q"), array("q")

    def category(c):
      cats.append((_field(tree, rel, c, "id", int), _field(tree, rel, c, "name", str)))

    def image(record):
      files[_field(tree, rel, record, "id", int)] = _field(tree, rel, record, "file_name", str)

    def annotation(a):
      # only the ids are kept (compact arrays, checked once the whole file is read: the lists may
      # come in any order); the segmentation and the rest are dropped with the parsed element
      ident = a.get("id") if isinstance(a, dict) else None
      try:
        image_of.append(_field(tree, rel, a, "image_id", int))
        category_of.append(_field(tree, rel, a, "category_id", int))
        annotation_of.append(ident if isinstance(ident, int) and not isinstance(ident, bool) else -1)
      except OverflowError:
        raise DataError(f"{tree.where(rel)}: annotation {ident} holds an id beyond 64 bits") from None

    _walk(tree, rel, {"images": image, "annotations": annotation, "categories": category})
    if classes is None:
      classes, category_ids = [name for _, name in cats], {cid: k for k, (cid, _) in enumerate(cats)}
    elif [name for _, name in cats] != classes:
      raise DataError(f"{tree.where(rel)}: its categories differ from instances_{PARTS[0]}.json's")
    labels: dict[int, set] = {}
    for image_id, category_id, ident in zip(image_of, category_of, annotation_of):
      if image_id not in files or category_id not in category_ids:
        raise DataError(f"{tree.where(rel)}: annotation {ident} refers to image {image_id} or category "
                        f"{category_id}, which the file does not list")
      labels.setdefault(image_id, set()).add(category_ids[category_id])
    del image_of, category_of, annotation_of
    caption_rel = tree.find_one(f"annotations/captions_{part}.json", "in annotations_trainval2017.zip")
    texts: dict[int, list[str]] = {}

    def caption(a):
      texts.setdefault(_field(tree, caption_rel, a, "image_id", int), []).append(
          _field(tree, caption_rel, a, "caption", str))

    _walk(tree, caption_rel, {"annotations": caption})
    folder = None
    for image_id in common.progress(sorted(files), desc=f"coco {part}", enabled=show_progress):
      name = files[image_id]
      if folder is None:
        found = tree.find(f"{part}/{name}")
        folder = found[0][:-len(name)] if found else f"{part}/"
      ids.append(name.rsplit(".", 1)[0])
      images.append(folder + name)
      row = np.zeros(len(classes), np.uint8)
      row[sorted(labels.get(image_id, ()))] = 1
      label_rows.append(row)
      captions.append(texts.get(image_id, []))
      exists = tree.exists(folder + name)
      missing.append(not exists)
      not_jpeg.append(exists and tree.magic(folder + name) != common.JPEG_MAGIC)
  labels = np.stack(label_rows) if label_rows else np.zeros((0, len(classes or [])), np.uint8)
  labelled = labels.any(1)
  duplicated = sum(len(cs) - len(set(cs)) for cs in captions)  # in the files, before the caption rule
  without = sum(not cs for cs in captions)
  captions = choose_captions(captions, rules["caption"], rules["caption_seed"], rules["caption_trim"])
  counts = Counter(w for k in np.flatnonzero(labelled) for c in captions[k] for w in set(words(c)))
  vocab = top_vocabulary(counts, rules["vocab_size"])
  column = {w: k for k, w in enumerate(vocab)}
  rows = [[column[w] for c in cs for w in words(c) if w in column] for cs in captions]
  indptr, indices = csr_from_rows(rows)
  raw = np.array([len({w for c in cs for w in words(c)}) for cs in captions], np.int64)
  notes = {"images_without_instances": int((~labelled).sum()), "duplicated_captions": duplicated,
           "images_without_captions": without, "vocabulary_counted_over": "labelled images"}
  return Table(ids=ids, images=images, labels=labels, classes=classes or [], indptr=indptr, indices=indices,
               vocab=vocab, captions=captions, raw_tags=raw,
               flags={"image_missing": np.array(missing, bool), "not_jpeg": np.array(not_jpeg, bool)}, notes=notes)


def select(table: Table, rules: dict):
  labelled = table.labels.any(1)
  dropped = {"no_instance": int((~labelled).sum())}
  return pipeline.image_rule(table, rules, labelled, dropped), dropped


DATASET = pipeline.Dataset(name="coco", rules=RULES, protocols=PROTOCOLS, default_protocol="clip", scan=scan,
                           select=select)

"""IAPR TC-12 from its official downloads: iaprtc12.tgz and the SAIAPR TC-12 region labels.

Layout read (extracted, or the .tgz archives read in one streaming pass):
  iaprtc12/images/NN/<id>.jpg                   the images (listed and checked, not decoded)
  iaprtc12/annotations_complete_eng/NN/<id>.eng  XML-like text in cp1252: <TITLE>, <DESCRIPTION>,
                                                 <NOTES>, <LOCATION>, <DATE>, <IMAGE>
  .../saiapr_tc-12/**/labels.txt                "<image> <region> <label>" lines: the labels of
                                                 an image are the union over its regions (255)

Rules: no public script rebuilds the DCMH-lineage IAPR TC-12 (20,000 pairs, 2,912-d BoW, 255
labels); jxhash's choice, documented in docs/data.md and changeable here:
  labels: every label id that occurs, in numeric order (named by wlist.txt when it is found);
  text: a 0/1 bag-of-words over the `vocab_size` (2,912) most frequent lower-case words of the
    `fields` of the annotation files (default TITLE and DESCRIPTION), ties alphabetical;
  keep: >= 1 label and >= 1 vocabulary word;
  caption: the chosen fields joined by spaces.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from jxhash.data.options import Option, Schema
from jxhash.data.prepare import common, pipeline
from jxhash.data.prepare.table import Table, csr_from_rows, top_vocabulary, words
from jxhash.errors import DataError

FIELDS = ("title", "description", "notes", "location")
_ENG = re.compile(r"annotations_complete_eng/(\d+)/(\d+)\.eng$")

RULES = Schema("iapr", [
    Option("vocab_size", "int", 2912, "words of the bag-of-words (most frequent first)", low=1),
    Option("fields", "tuple", ("title", "description"), "annotation fields the text comes from", item="str"),
    *pipeline.split_options(num_query=2000, num_train=5000),
])

PROTOCOLS = {"dcmh": {"num_query": 2000, "num_train": 5000}}


def keep_tar(name: str) -> bool:
  return name.endswith(".eng") or name.endswith("labels.txt") or name.endswith("wlist.txt")


def parse_eng(text: str) -> dict:
  """The fields of one .eng annotation (missing ones empty)."""
  out = {}
  for field in FIELDS:
    match = re.search(rf"<{field.upper()}>(.*?)</{field.upper()}>", text, re.S)
    out[field] = " ".join(match.group(1).split()) if match else ""
  return out


def scan(tree: common.RawTree, rules: dict, show_progress: bool) -> Table:
  bad = [f for f in rules["fields"] if f not in FIELDS]
  if bad:
    raise DataError(f"iapr: rule fields={','.join(rules['fields'])}: {bad[0]!r} is not one of {', '.join(FIELDS)}")
  annotations = sorted((int(m.group(1)), int(m.group(2)), p) for p in tree.files if (m := _ENG.search(p)))
  if not annotations:
    raise DataError(f"--raw {tree.root}: no iaprtc12/annotations_complete_eng/NN/<id>.eng files (iaprtc12.tgz)")
  label_files = [p for p in tree.find("labels.txt") if "saiapr" in p.lower()]
  if not label_files:
    raise DataError(f"--raw {tree.root}: no saiapr_tc-12/**/labels.txt files (the SAIAPR TC-12 download)")
  region_labels: dict[int, set] = {}
  for rel in label_files:
    for number, line in enumerate(tree.lines(rel, "latin-1"), 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise DataError(f"{tree.where(rel)}:{number}: expected '<image> <region> <label>', got {line[:60]!r}")
      region_labels.setdefault(int(parts[0]), set()).add(int(parts[2]))
  label_ids = sorted(set().union(*region_labels.values()))
  names = {}
  wlist = [p for p in tree.find("wlist.txt") if "saiapr" in p.lower()]
  if wlist:
    for line in tree.lines(wlist[0], "latin-1"):
      parts = line.split(None, 1)
      if len(parts) == 2 and parts[0].isdigit():
        names[int(parts[0])] = parts[1].strip()
  classes = [names.get(i, f"label{i}") for i in label_ids]
  column = {i: k for k, i in enumerate(label_ids)}
  ids, images, texts, label_rows, missing, not_jpeg = [], [], [], [], [], []
  incomplete = 0
  for _, number, rel in common.progress(annotations, desc="iapr annotations", enabled=show_progress):
    fields = parse_eng(tree.read_text(rel, "cp1252"))
    incomplete += not (fields["title"] or fields["description"])
    texts.append(" ".join(fields[f] for f in rules["fields"] if fields[f]))
    ids.append(str(number))
    image = rel.replace("annotations_complete_eng/", "images/")[:-len(".eng")] + ".jpg"
    images.append(image)
    row = np.zeros(len(label_ids), np.uint8)
    row[[column[i] for i in region_labels.get(number, ())]] = 1
    label_rows.append(row)
    exists = tree.exists(image)
    missing.append(not exists)
    not_jpeg.append(exists and tree.magic(image) != common.JPEG_MAGIC)
  counts = Counter(w for t in texts for w in set(words(t)))
  vocab = top_vocabulary(counts, rules["vocab_size"])
  vocab_column = {w: k for k, w in enumerate(vocab)}
  indptr, indices = csr_from_rows([[vocab_column[w] for w in words(t) if w in vocab_column] for t in texts])
  notes = {"annotations_without_title_or_description": incomplete, "label_files": len(label_files),
           "vocabulary_counted_over": "every annotation file"}
  return Table(ids=ids, images=images, labels=np.stack(label_rows), classes=classes, indptr=indptr, indices=indices,
               vocab=vocab, captions=[[t] for t in texts], raw_tags=np.array([len(words(t)) for t in texts], np.int64),
               flags={"image_missing": np.array(missing, bool), "not_jpeg": np.array(not_jpeg, bool)}, notes=notes)


def select(table: Table, rules: dict):
  labelled = table.labels.any(1)
  tagged = table.tags_per_item() > 0
  dropped = {"no_label": int((~labelled).sum()), "no_vocabulary_word": int((labelled & ~tagged).sum())}
  return pipeline.image_rule(table, rules, labelled & tagged, dropped), dropped


DATASET = pipeline.Dataset(name="iapr", rules=RULES, protocols=PROTOCOLS, default_protocol="dcmh", scan=scan,
                           select=select, keep_tar=keep_tar)

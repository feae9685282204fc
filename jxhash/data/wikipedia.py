"""The Wikipedia cross-modal benchmark (Rasiwasia et al., ACM MM 2010), precomputed features."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from jxhash.data import bounds, io
from jxhash.data.core import CrossModalData
from jxhash.data.options import Option, Schema
from jxhash.errors import DataError

NUM_CLASSES = 10
RAW_FEATURES = "raw_features.mat"
LISTS = ("trainset_txt_img_cat.list", "testset_txt_img_cat.list")
# .mat files that carry their own labels L_tr / L_te (CMFH/LSSH/RFDH-style, SCRATCH's v7.3 copy).
LABELLED_FILES = ("wikiData.mat", "wiki_data.mat")
DOWNLOAD = ("Get raw_features.mat with trainset_txt_img_cat.list and testset_txt_img_cat.list (the Wikipedia "
            "dataset page, http://www.svcl.ucsd.edu/projects/crossmodal/, or the JFSSL folder of "
            "BMC-SDNU/Cross-Modal-Retrieval on GitHub), or wikiData.mat (same repository, RFDH folder), "
            "and put them in data_dir.")


OPTIONS = Schema("wikipedia", [
    Option("num_val", "int", 0, "training items moved to val (seeded); they stay in the retrieval set", low=0),
    Option("file", "path", None, "the .mat to read (raw_features.mat with the two lists, or a labelled "
           "wikiData.mat); default: the first complete set in data_dir", optional=True),
])


def load_wikipedia(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """Wikipedia: 2866 image–text pairs, 128-d SIFT bag-of-words images, 10-d LDA texts, 10 classes.

  Options (`OPTIONS`, docs/data.md): num_val (default 0) and file.

  Files read from `data_dir` (first complete set wins, or the .mat named by `file`):
    - raw_features.mat (I_tr 2173×128, I_te 693×128, T_tr 2173×10, T_te 693×10) with
      trainset_txt_img_cat.list / testset_txt_img_cat.list, whose lines are
      "text_id<TAB>image_id<TAB>category" in the row order of the .mat (category 1..10;
      fields split on tabs only, see `read_list`);
    - wikiData.mat: the same features with L_tr / L_te, either class codes 1..10 (N×1) or
      one-hot (N×10, as in the multi-label-format copy); wiki_data.mat (MATLAB v7.3) likewise.
  Where to get them: the dataset page http://www.svcl.ucsd.edu/projects/crossmodal/, or
  BMC-SDNU/Cross-Modal-Retrieval on GitHub (JFSSL/wikipedia_info for raw_features.mat and the
  lists, RFDH for wikiData.mat).

  Protocol: the official split, whatever `split` says ("random" and "dcmh" are both accepted
  and give the same sets, so results stay comparable with the literature): query = the 693 test
  items (rows 2173..2865), retrieval = train = the 2173 training items (rows 0..2172).
  `num_val` (default 0, so train is exactly the official 2173) moves that many items from
  train to val: the end of a permutation of train seeded by `seed`; they stay in the
  retrieval set. The seed affects nothing else.

  Returns:
    CrossModalData named "wikipedia"; features as float32, labels one-hot.
  """
  o = OPTIONS.check(options)
  check_split_rule(split)  # before looking for files: a typo is the more useful message
  directory = io.data_directory(data_dir, "wikipedia", DOWNLOAD)
  mat, source = choose_source(directory, o["file"])
  # each half's headers first: 2-D, at least one column, rows that agree, within the budget
  for half in ("tr", "te"):
    io.check_declared("wikipedia", {"image": io.declare(mat, f"I_{half}"), "text": io.declare(mat, f"T_{half}")})
  part = {}
  for key in ("I_tr", "I_te", "T_tr", "T_te"):
    part[key] = io.check_matrix(io.read_matrix(mat, key), "image features" if key[0] == "I" else "text features")
  for half, list_name in (("tr", LISTS[0]), ("te", LISTS[1])):
    if source == "lists":
      part[f"L_{half}"] = read_list(directory / list_name)
    else:
      part[f"L_{half}"] = _labels(io.read_matrix(mat, f"L_{half}"))
    io.check_rows(part[f"I_{half}"], part[f"T_{half}"], part[f"L_{half}"])
  for modality in ("I", "T"):
    a, b = part[f"{modality}_tr"], part[f"{modality}_te"]
    if a.array.shape[1] != b.array.shape[1]:
      raise DataError(f"{mat}: {a.key} has {a.array.shape[1]} columns but {b.key} has {b.array.shape[1]}")
  joined = {m: np.concatenate([part[f"{m}_tr"].array, part[f"{m}_te"].array]) for m in ("I", "T", "L")}
  files = [str(mat)] + ([str(directory / n) for n in LISTS] if source == "lists" else [])
  return official_split(joined["I"], joined["T"], joined["L"], num_train=part["I_tr"].rows, split=split, seed=seed,
                        num_val=o["num_val"], info={"files": files, "options": OPTIONS.record(o)})


def check_split_rule(split: str) -> None:
  if split not in ("random", "dcmh"):
    raise DataError(f"unknown split rule {split!r} for 'wikipedia'; 'random' and 'dcmh' both give the official split")


def official_split(image, text, labels, *, num_train: int, split: str, seed: int, num_val: int,
                   info: dict) -> CrossModalData:
  """Wikipedia's protocol over rows [official training items; test items]: query = the test
  rows, retrieval = train = the training rows, then `num_val` seeded items moved from train
  to val. `split` is only checked ("random" and "dcmh" both mean this split)."""
  check_split_rule(split)
  train = np.arange(num_train)
  val = np.zeros(0, np.int64)
  if num_val:
    if not 0 < num_val < num_train:
      raise DataError(f"dataset 'wikipedia': num_val={num_val} must be below the {num_train} official training "
                      "items (it moves that many of them to val)")
    val = np.sort(np.random.default_rng(seed).permutation(train)[num_train - num_val:])
    train = np.setdiff1d(train, val)
  info = {"rule": "official", "requested": split, "seed": int(seed), "num_val": int(num_val), **info}
  return CrossModalData(image=image, text=text, labels=labels, query=np.arange(num_train, labels.shape[0]),
                        retrieval=np.arange(num_train), train=train, val=val, name="wikipedia", split_info=info)


def choose_source(directory: pathlib.Path, file=None) -> tuple[pathlib.Path, str]:
  """(the .mat file, "lists" or "mat"): where the labels come from; a DataError saying what to
  download when `directory` has no complete set."""
  if file is not None:
    path, _ = io.split_spec(file, directory)
    if not path.is_file():
      raise io.missing_file(path, DOWNLOAD)
    return path, "mat" if "L_tr" in io.list_keys(path) else "lists"
  raw = directory / RAW_FEATURES
  if raw.is_file() and all((directory / n).is_file() for n in LISTS):
    return raw, "lists"
  labelled = io.find_file(directory, LABELLED_FILES)
  if labelled is not None:
    return labelled, "mat"
  if raw.is_file():
    missing = [n for n in LISTS if not (directory / n).is_file()]
    raise DataError(f"{directory}: raw_features.mat holds no labels and {', '.join(missing)} is missing. {DOWNLOAD}")
  raise DataError(f"{directory}: no Wikipedia files (need raw_features.mat with the two .list files, or "
                  f"wikiData.mat). {DOWNLOAD}")


def _labels(matrix: io.Matrix) -> io.Matrix:
  """L_tr / L_te as one-hot: class codes (N×1, 1×N) or an N×10 one-hot matrix."""
  x = matrix.array
  if x.ndim == 1 or (x.ndim == 2 and 1 in x.shape):
    converted = io.codes_to_onehot(matrix, NUM_CLASSES)
  else:
    converted = io.check_labels(matrix)
  if converted.array.shape[1] != NUM_CLASSES or not np.all(converted.array.sum(1) == 1):
    raise DataError(f"{matrix.where}: Wikipedia labels must be one class of {NUM_CLASSES} per item, "
                    f"got shape {x.shape}")
  return converted


_CATEGORY = re.compile(r"[0-9]+")


def read_list(path: pathlib.Path) -> io.Matrix:
  """Column 3 (category 1..10) of a trainset/testset_txt_img_cat.list file, one-hot.

  The format is one item per line, "text_id<TAB>image_id<TAB>category". Lines end at "\\n"
  (a "\\r" before it is dropped; other Unicode line breaks are part of a field), fields are
  split on tabs only, so a field with spaces inside is read as it is; trailing whitespace and
  blank lines are ignored. A line that does not have exactly three tab-separated fields, an
  empty id, or a category that is not a whole number is refused with its line number: a
  guessed split could shift every later label.
  """
  if not path.is_file():
    raise io.missing_file(path, DOWNLOAD)
  try:
    size = path.stat().st_size
    bounds.check_budget(size, str(path), "the list")
    text = path.read_bytes().decode("utf-8", errors="replace")
  except OSError as e:
    raise DataError(f"{path}: cannot read the file ({bounds.reason(e)})") from e
  codes = []
  for number, line in enumerate(text.split("\n"), 1):
    line = line.rstrip()
    if not line:
      continue
    fields = line.split("\t")
    shown = line[:80]
    if len(fields) != 3:
      raise DataError(f"{path}: line {number} has {len(fields)} tab-separated fields, expected 3 "
                      f"(text_id<TAB>image_id<TAB>category): {shown!r}")
    if not fields[0].strip() or not fields[1].strip():
      raise DataError(f"{path}: line {number} has an empty {'text_id' if not fields[0].strip() else 'image_id'}: "
                      f"{shown!r}")
    category = fields[2].strip()
    if not _CATEGORY.fullmatch(category):
      raise DataError(f"{path}: line {number}: category {category[:20]!r} is not a whole number 1..{NUM_CLASSES}: "
                      f"{shown!r}")
    codes.append(int(category))
  matrix = io.Matrix(np.asarray(codes, np.int64), path, "category column")
  return dataclasses.replace(io.codes_to_onehot(matrix, NUM_CLASSES), key=None)

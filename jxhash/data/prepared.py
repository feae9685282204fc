"""The "prepared" loader: a protocol folder written by `jxhash prepare` (jxhash.data.prepare).

The folder fixes the items, labels, text and split; the image side comes from the features the
extract command writes (an .npz with `features` (N, D) float32 and `ids`, the image file names
without extension), matched to the items by id. `text=clip-tokens` gives the text as CLIP token
ids instead of the bag-of-words: each item's raw strings (captions.jsonl), joined by spaces and
tokenized once by CLIP's tokenizer, (N, 77) int32, for a method's CLIP text tower. `image=tags` hands the text bag-of-words to the
image network too: a stand-in for sanity runs when no features exist yet, not the benchmark.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from jxhash.data import io
from jxhash.data.core import CrossModalData, SPLITS
from jxhash.data.options import Option, Schema
from jxhash.errors import DataError

OPTIONS = Schema("prepared", [
    Option("image", "str", "auto", "image source: auto (= features), features (image_features required), or tags "
           "(the text bag-of-words as a test-only stand-in)", choices=("auto", "features", "tags")),
    Option("text", "str", "bow", "text source: bow (the bag-of-words) or clip-tokens (each item's raw strings, "
           "joined by spaces, as (N, 77) CLIP token ids for a CLIP text tower)", choices=("bow", "clip-tokens")),
    Option("image_features", "path", None, "an .npz from the extract command: features (N, D) and ids (image file "
           "names without extension), matched to the items by id", optional=True),
])

FILES = ("manifest.json", "ids.txt", "labels.npy", "text_bow.npz", "splits.npz")


def _read_folder(directory: pathlib.Path) -> dict:
  for name in FILES:
    if not (directory / name).is_file():
      raise DataError(f"{directory}: no {name}; is it a folder written by `jxhash prepare`?")
  try:
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    ids = (directory / "ids.txt").read_text(encoding="utf-8").splitlines()
    labels = np.load(directory / "labels.npy", allow_pickle=False)
    with np.load(directory / "text_bow.npz", allow_pickle=False) as f:
      indptr, indices, shape = f["indptr"], f["indices"], f["shape"]
    with np.load(directory / "splits.npz", allow_pickle=False) as f:
      parts = {s: f[s].astype(np.int64) for s in SPLITS}
  except (OSError, ValueError, KeyError) as e:
    raise DataError(f"{directory}: a prepared file is unreadable ({type(e).__name__}: {e}); prepare it again") from None
  n = len(ids)
  if labels.shape[0] != n or int(shape[0]) != n or indptr.shape != (n + 1,) or int(indptr[-1]) != indices.size:
    raise DataError(f"{directory}: ids.txt ({n} items), labels.npy {labels.shape} and text_bow.npz {tuple(shape)} "
                    "disagree; prepare it again")
  if indices.size and (indices.min() < 0 or indices.max() >= int(shape[1])):
    raise DataError(f"{directory}/text_bow.npz: column indices outside [0, {int(shape[1])})")
  text = np.zeros((n, int(shape[1])), np.uint8)
  rows = np.repeat(np.arange(n), np.diff(indptr))
  text[rows, indices] = 1
  return {"manifest": manifest, "ids": ids, "labels": labels, "text": text, "parts": parts}


def _clip_tokens(directory: pathlib.Path, n: int) -> np.ndarray:
  """(n, 77) int32 CLIP token ids of captions.jsonl (one JSON list of strings per item)."""
  from jxhash.nets.clip_tokenizer import tokenize
  path = directory / "captions.jsonl"
  if not path.is_file():
    raise DataError(f"{path}: no such file; text=clip-tokens reads the raw strings `jxhash prepare` writes there")
  texts = []
  try:
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, 1):
        strings = json.loads(line)
        if not isinstance(strings, list) or not all(isinstance(t, str) for t in strings):
          raise DataError(f"{path}:{number}: expected a JSON list of strings")
        texts.append(" ".join(strings))
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise DataError(f"{path}: unreadable ({type(e).__name__}: {e}); prepare it again") from None
  if len(texts) != n:
    raise DataError(f"{path}: {len(texts)} lines for the {n} items of ids.txt; prepare it again")
  return tokenize(texts)


def _features(spec, directory: pathlib.Path, ids: list[str]) -> tuple[np.ndarray, str]:
  path, _ = io.split_spec(spec, directory)
  if not path.is_file():
    raise DataError(f"image_features {path}: no such file (write it with the extract command)")
  try:
    with np.load(path, allow_pickle=False) as f:
      if "features" not in f.files or "ids" not in f.files:
        raise DataError(f"{path}: needs arrays 'features' and 'ids', has {sorted(f.files)}")
      features, feature_ids = f["features"], f["ids"]
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: not a readable .npz ({e})") from None
  if features.ndim != 2 or feature_ids.ndim != 1 or feature_ids.shape[0] != features.shape[0]:
    raise DataError(f"{path}: features {features.shape} and ids {feature_ids.shape} must be (N, D) and (N,)")
  if feature_ids.dtype.kind not in "US":
    raise DataError(f"{path}: ids must be strings, got {feature_ids.dtype}")
  row = {str(i): k for k, i in enumerate(feature_ids.astype(str))}
  if len(row) != feature_ids.shape[0]:
    raise DataError(f"{path}: an id occurs twice in 'ids'")
  absent = [i for i in ids if i not in row]
  if absent:
    raise DataError(f"{path}: {len(absent)} of the {len(ids)} prepared items have no feature row (first: "
                    f"{absent[0]!r}); extract features for every image of the prepared folder")
  return features[[row[i] for i in ids]].astype(np.float32, copy=False), str(path)


def load_prepared(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """A `jxhash prepare` protocol folder as a CrossModalData.

  The split is the folder's (splits.npz): `split` and `seed` do not change it and are ignored
  (split_info records rule "prepared" and the folder's split seed).

  Args:
    data_dir: the protocol folder (`--out` of prepare).
    image / image_features: `OPTIONS` (docs/data.md).

  Returns:
    CrossModalData named "<dataset>-<protocol>" (e.g. "mirflickr25k-dcmh").
  """
  o = OPTIONS.check(options)
  if data_dir is None:
    raise DataError("dataset 'prepared': give the protocol folder written by `jxhash prepare` as data_dir")
  directory = io.data_directory(data_dir, "prepared", "Run `jxhash prepare <dataset> --raw ... --out DIR` first.")
  folder = _read_folder(directory)
  manifest = folder["manifest"]
  name = f"{manifest.get('dataset', 'prepared')}-{manifest.get('protocol', 'custom')}"
  info = {"rule": "prepared", "seed": manifest.get("rules", {}).get("split_seed"), "folder": str(directory),
          "options": OPTIONS.record(o), "dropped_unlabeled": 0}
  if o["image"] == "tags":
    if o["image_features"] is not None:
      raise DataError("dataset 'prepared': image=tags conflicts with image_features=")
    image = folder["text"]
    info["image_stand_in"] = "tags"
  else:
    if o["image_features"] is None:
      raise DataError(f"dataset 'prepared': {directory} holds no images as features; pass "
                      "image_features=<.npz from the extract command> (or image=tags for a sanity run)")
    image, where = _features(o["image_features"], directory, folder["ids"])
    info["files"] = {"image": where}
  text, text_kind = folder["text"], "features"
  if o["text"] == "clip-tokens":
    text, text_kind = _clip_tokens(directory, len(folder["ids"])), "clip-tokens"
  return CrossModalData(image=image, text=text, labels=folder["labels"], name=name, split_info=info,
                        text_kind=text_kind, **folder["parts"])

"""Bring-your-own matrices, and the assembly every file-based loader shares.

`load_features` builds a dataset from any image / text / label matrices a user has (one row per
item, in .npy / .npz / .mat / .h5). `assemble` is the common last step of the loaders: check the
matrices against each other (naming the files), drop unlabeled items, split, build
`CrossModalData`. `load_lineage` reads the `<prefix>-{lall,yall,iall}.mat` family of files
released with DCMH and the papers that followed it (MIRFlickr, NUS-WIDE, IAPR TC-12, MS-COCO).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jxhash import fileio
from jxhash.data import io
from jxhash.data.core import CrossModalData, is_row_source, take_rows
from jxhash.data.options import Option, Schema
from jxhash.data.splits import make_split
from jxhash.errors import DataError, UserError

FORMATS = (".mat", ".npy", ".npz", ".h5")
IMAGE_MODES = ("auto", "features", "pixels", "tags")


def assemble(name: str, image: io.Matrix, text: io.Matrix, labels: io.Matrix, *, split: str, seed: int,
             num_query: int, num_train: int, num_val: int = 0, num_retrieval: int | None = None,
             drop_unlabeled: bool = True, indices: dict | None = None, info: dict | None = None) -> CrossModalData:
  """Check paired matrices, split them and build the dataset.

  Args:
    name: dataset name.
    image: (N, D) features or a 4-D uint8 pixel stack already in (N, H, W, 3) order; its
      array may be a lazy row source (`core.is_row_source`), which stays unread.
    text: (N, T) matrix. labels: (N, C) multi-hot.
    split, seed, num_query, num_train, num_val, num_retrieval: passed to `make_split` (train is
      drawn from the retrieval set, the DCMH protocol).
    drop_unlabeled: drop items whose label row is empty before splitting (relevance is defined
      by shared labels, so they can be neither relevant nor trained on); the count goes into
      `split_info["dropped_unlabeled"]` and the split indices count the kept items.
    indices: a ready split {"query", "retrieval", "train", "val"} of row indices (no dropping).
    info: extra entries for `split_info` (source files, options).
  """
  num_items = io.check_rows(labels, text, image)
  labels = io.check_labels(labels)
  if image.array.ndim != 4 and not is_row_source(image.array):
    image = io.check_matrix(image, "image features")
  text = io.check_matrix(text, "text")
  arrays = [image.array, text.array, labels.array]
  dropped = 0
  if drop_unlabeled and indices is None:
    keep = labels.array.any(axis=1)
    dropped = int(num_items - keep.sum())
    if dropped:
      arrays = [take_rows(a, keep) for a in arrays]
  split_info = dict(info or {})
  if indices is None:
    try:
      parts = make_split(arrays[0].shape[0], num_query=num_query, num_train=num_train, num_val=num_val,
                         num_retrieval=num_retrieval, rule=split, seed=seed)
    except DataError as e:
      raise DataError(f"dataset {name!r}: {e}") from e
    split_info.update(parts.pop("info"))
  else:
    parts = dict(indices)
    split_info.update(rule="given")
  split_info["dropped_unlabeled"] = dropped
  empty = np.flatnonzero(~arrays[2][parts["train"]].any(axis=1))
  if empty.size:
    first = int(parts["train"][empty[0]])
    raise DataError(f"{labels.where}: {empty.size} training items have no label (first: row {first}); "
                    "relevance needs labels, so fix the file or let the loader drop such items")
  return CrossModalData(image=arrays[0], text=arrays[1], labels=arrays[2], name=name, split_info=split_info,
                        **parts)


OPTIONS = Schema("features", [
    Option("image", "path", None, "image matrix, path or path:key: N×D features or an N×H×W×3 uint8 pixel stack "
           "(required)", optional=True),
    Option("text", "path", None, "text matrix N×T, path or path:key (required)", optional=True),
    Option("labels", "path", None, "multi-hot label matrix N×C, path or path:key (required)", optional=True),
    Option("num_query", "int", None, "query items (required unless indices is given)", low=1, optional=True),
    Option("num_train", "int", None, "training items (required unless indices is given)", low=1, optional=True),
    Option("num_val", "int", 0, "validation items, from retrieval items outside train", low=0),
    Option("num_retrieval", "int", None, "cap on the retrieval set; none: every non-query item", low=1,
           optional=True),
    Option("indices", "path", None, "a .npz/.mat/.h5 file with index vectors query, retrieval, train "
           "(and val) instead of a generated split", optional=True),
    Option("index_base", "int", 0, "what the first item is called in indices (1 for MATLAB index files)",
           choices=(0, 1)),
    Option("drop_unlabeled", "bool", True, "drop items with no label before a generated split"),
    Option("name", "str", "features", "the dataset name recorded in results"),
])


def load_features(data_dir=None, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """Any paired matrices the user brings: one row per item in each file.

  Options: `OPTIONS` (docs/data.md).

  Files: `image` (N×D features, or an N×H×W×3 uint8 pixel stack), `text` (N×T) and `labels`
  (N×C multi-hot), each a path or "path:key" (.npy, .npz, MATLAB v5 or v7.3 .mat, .h5; a key
  is needed when the file holds several arrays). Relative paths are taken under `data_dir`.

  Protocol: `split` "random" (seeded permutation) or "dcmh" (query = the first `num_query`
  rows, train = the next `num_train`, retrieval = every non-query row or the first
  `num_retrieval` of them); val (`num_val`, default 0) comes from retrieval items outside train.
  Or `indices`: a .npz / .mat / .h5 file with index vectors named query, retrieval,
  train and optionally val, counted from `index_base` (1 for MATLAB index files); the size
  options do not apply then. Items with no label are dropped before a generated split
  (`drop_unlabeled`), never with `indices` (they refer to the rows as stored).

  Returns:
    CrossModalData named `name`.
  """
  o = OPTIONS.check(options)
  name, indices = o["name"], o["indices"]
  try:
    # the name goes into run names, and run names into paths
    fileio.check_path_component(name, "dataset 'features': option name")
  except UserError as e:
    raise DataError(str(e)) from None
  num_query, num_train, num_val, num_retrieval = o["num_query"], o["num_train"], o["num_val"], o["num_retrieval"]
  if indices is not None:
    sizes = [k for k in ("num_query", "num_train", "num_val", "num_retrieval") if k in options and options[k]]
    if sizes:
      raise DataError(f"dataset {name!r}: indices= gives the split, so {', '.join(sizes)} "
                      f"{'does' if len(sizes) == 1 else 'do'} not apply")
  elif "index_base" in options and o["index_base"] != 0:
    raise DataError(f"dataset {name!r}: index_base={o['index_base']} applies only with indices=<file>")
  base = None if data_dir is None else io.data_directory(data_dir, name, "Pass the folder holding the matrices.")
  specs = {}
  for role in ("image", "text", "labels"):
    spec = o[role]
    if spec is None:
      raise DataError(f"dataset {name!r}: option {role}=<path or path:key> is required (image, text and labels "
                      "matrices with one row per item)")
    specs[role] = io.split_spec(spec, base)
  # every file's header first: shapes, row counts and the total size, before anything is read
  declared = {role: io.declare(*specs[role], hint=f"Check the {role}= option.") for role in specs}
  io.check_declared(name, declared)
  loaded = {role: io.read_matrix(*specs[role], hint=f"Check the {role}= option.") for role in specs}
  if loaded["image"].array.ndim == 4:
    loaded["image"] = io.as_pixels(loaded["image"], loaded["labels"].rows)
  given = None
  if indices is not None:
    given = _read_indices(indices, base, o["index_base"], loaded["labels"].rows)
  elif num_query is None or num_train is None:
    raise DataError(f"dataset {name!r}: give the split sizes num_query and num_train (and optionally num_val, "
                    "num_retrieval), or indices=<file with query/retrieval/train index vectors>")
  info = {"files": {role: m.where for role, m in loaded.items()}, "options": OPTIONS.record(o)}
  return assemble(name, loaded["image"], loaded["text"], loaded["labels"], split=split, seed=seed,
                  num_query=num_query or 0, num_train=num_train or 0, num_val=num_val, num_retrieval=num_retrieval,
                  drop_unlabeled=o["drop_unlabeled"], indices=given, info=info)


def _read_indices(spec, base, index_base: int, num_items: int) -> dict:
  path, _ = io.split_spec(spec, base)
  keys = io.list_keys(path)
  parts = {}
  for split in ("query", "retrieval", "train", "val"):
    if split not in keys:
      if split == "val":
        parts[split] = np.zeros(0, np.int64)
        continue
      raise DataError(f"{path}: no index vector {split!r}; the file holds {keys} (needs query, retrieval, train)")
    m = io.read_matrix(path, split)
    idx = m.array.reshape(-1)
    if idx.dtype.kind == "f":
      if not np.all(idx == np.round(idx)):
        raise DataError(f"{m.where}: split indices must be whole numbers")
    idx = idx.astype(np.int64) - index_base
    bad = (idx < 0) | (idx >= num_items)
    if bad.any():
      raise DataError(f"{m.where}: split index {int(idx[bad][0]) + index_base} is out of range for {num_items} "
                      f"items (indices counted from index_base={index_base})")
    parts[split] = idx
  return parts


# ---------------------------------------------------------------------------------------------
# The DCMH-lineage file family: <prefix>-lall.mat (LAll), <prefix>-yall.mat (YAll),
# <prefix>-iall.mat (IAll pixels, v7.3) and <prefix>-iall-vgg.mat / -xall-vgg.mat (XAll).


@dataclasses.dataclass(frozen=True)
class Lineage:
  """File conventions and standard protocol of one DCMH-lineage dataset."""

  name: str
  prefixes: tuple[str, ...]
  num_labels: int
  download: str
  # (file name, keys) holding labels, tags and pixels together (e.g. DCMH's FLICKR-25K.mat).
  combined: tuple[tuple[str, dict], ...] = ()

  def sources(self, part: str) -> list[tuple[str, tuple[str, ...]]]:
    keys = {"labels": ("LAll",), "tags": ("YAll",), "pixels": ("IAll",), "features": ("XAll", "IAll")}[part]
    stems = {"labels": ("lall",), "tags": ("yall",), "pixels": ("iall",), "features": ("iall-vgg", "xall-vgg")}[part]
    found = [(f"{p}-{s}{ext}", keys) for s in stems for p in self.prefixes for ext in FORMATS]
    found += [(file, (parts[part],)) for file, parts in self.combined if part in parts]
    return found


def lineage_options(name: str, *, num_query: int, num_train: int, num_val: int = 500,
                    extra: tuple = ()) -> Schema:
  """The options every DCMH-lineage loader takes, with its protocol's split sizes as defaults."""
  return Schema(name, [
      Option("num_query", "int", num_query, "query items, disjoint from the retrieval set", low=1),
      Option("num_train", "int", num_train, "training items, drawn from the retrieval set", low=1),
      Option("num_val", "int", num_val, "validation items, from retrieval items outside train", low=0),
      Option("num_retrieval", "int", None, "cap on the retrieval set; none: every non-query item", low=1,
             optional=True),
      Option("image", "str", "auto", "image source: auto (image_features, else CNN features, else pixels), "
             "features, pixels, or tags (the tag matrix as a test-only stand-in)", choices=IMAGE_MODES),
      Option("image_features", "path", None, "a .npy/.npz/.mat/.h5 file (path or path:key) with one feature row "
             "per item, used as the image", optional=True),
      Option("image_key", "str", None, "the array in image_features when it holds several", optional=True),
      Option("drop_unlabeled", "bool", True, "drop items with no label before splitting"),
      Option("stream_pixels", "bool", False, "leave a pixel stack in its file and read batches on demand"),
      *extra,
  ])


def _locate(directory, sources):
  for file, keys in sources:
    path = directory / file
    if path.is_file():
      return path, keys
  return None


def _expected(sources) -> str:
  # Name the .mat releases only; the .npy/.npz/.h5 twins are accepted but would bury the message.
  return " or ".join(dict.fromkeys(file for file, _ in sources if file.endswith(".mat")))


def locate(directory, lineage: Lineage, image: str, *, hint: str = "") -> dict:
  """The files of a DCMH-lineage dataset in `directory`: {"labels", "tags", kind} -> (path, keys).

  `image`: "features", "pixels", "auto" (features if present, else pixels: the loaders'
  precedence) or "none" (no image file wanted). The kind found is the key "features" or
  "pixels". A missing file raises a DataError naming the folder, the expected names, `hint`
  (another way to give the image) and what to download.
  """
  found = {}
  for part in ("labels", "tags"):
    found[part] = _locate(directory, lineage.sources(part))
    if found[part] is None:
      raise DataError(f"{directory}: no {part} file for {lineage.name!r}: expected "
                      f"{_expected(lineage.sources(part))}. {lineage.download}")
  kinds = [k for k in ("features", "pixels") if image in ("auto", k)]
  for kind in kinds:
    source = _locate(directory, lineage.sources(kind))
    if source is not None:
      found[kind] = source
      return found
  if kinds:
    what = {"features": f"{_expected(lineage.sources('features'))} (CNN features)",
            "pixels": f"{_expected(lineage.sources('pixels'))} (224×224 pixels)"}
    raise DataError(f"{directory}: no image source for {lineage.name!r}: put "
                    f"{' or '.join(what[k] for k in kinds)} there{', ' + hint if hint else ''}. {lineage.download}")
  return found


def load_lineage(data_dir, lineage: Lineage, *, split: str, seed: int, num_query: int, num_train: int,
                 num_val: int, num_retrieval: int | None, image: str, image_features, image_key,
                 drop_unlabeled: bool, info: dict | None = None, stream_pixels: bool = False) -> CrossModalData:
  """Read labels, tags and an image source of a DCMH-lineage dataset and assemble it.

  Image source, by `image`:
    "auto": `image_features` if given, else `<prefix>-iall-vgg.mat` / `-xall-vgg.mat`
      features, else `<prefix>-iall.mat` pixels (or a combined file's pixels).
    "features" / "pixels": only that kind. "tags": the tag matrix stands in for the image view
      (for tests and plumbing only; it is not the benchmark).
  Items with an empty label row are dropped (when `drop_unlabeled`), before the split.
  `stream_pixels`: leave a pixel stack (HDF5 / v7.3 / .npy) in its file and read rows on demand
  (`io.open_rows`) instead of loading it: for stacks larger than memory (NUS-WIDE's 29 GB); the
  trainer then streams training batches from the file.
  """
  if image not in IMAGE_MODES:
    raise DataError(f"dataset {lineage.name!r}: option image={image!r}; choose from {list(IMAGE_MODES)}")
  if image_key is not None and image_features is None:
    raise DataError(f"dataset {lineage.name!r}: image_key={image_key!r} applies only with image_features=<file>")
  if stream_pixels and (image in ("features", "tags") or image_features is not None):
    source = f"image={image!r}" if image_features is None else "image_features="
    raise DataError(f"dataset {lineage.name!r}: stream_pixels=true applies to pixel stacks, not to {source}")
  if image_features is not None and image not in ("auto", "features"):
    raise DataError(f"dataset {lineage.name!r}: image_features= conflicts with image={image!r}")
  directory = io.data_directory(data_dir, lineage.name, lineage.download)
  found = locate(directory, lineage, "none" if image_features is not None or image == "tags" else image,
                 hint="or pass image_features=<.npy/.npz/.mat/.h5 file with one feature row per item>")
  # every file's header first: shapes, row counts and the total size, before anything is read
  declared = {"labels": io.declare(*found["labels"], hint=lineage.download),
              "text": io.declare(*found["tags"], hint=lineage.download)}
  if image_features is not None:
    declared["image"] = io.declare(*_image_features_spec(image_features, image_key, directory),
                                   hint="Check the image_features= option.")
  elif image != "tags" and "features" in found:
    declared["image"] = io.declare(*found["features"], hint=lineage.download)
  io.check_declared(lineage.name, declared)
  labels, tags = (io.read_matrix(*found[part], hint=lineage.download) for part in ("labels", "tags"))
  if labels.array.ndim == 2 and labels.array.shape[1] != lineage.num_labels:
    raise DataError(f"{labels.where}: {labels.array.shape[1]} label columns, but {lineage.name!r} has "
                    f"{lineage.num_labels} classes; is it the right file?")
  info = dict(info or {})
  if image_features is not None:
    picture = io.read_matrix(*_image_features_spec(image_features, image_key, directory),
                             hint="Check the image_features= option.")
  elif image == "tags":
    picture = dataclasses.replace(tags, key=f"{tags.key}, as an image stand-in")
    info["image_stand_in"] = "tags"
  elif "features" in found:
    picture = io.read_matrix(*found["features"], hint=lineage.download)
  elif stream_pixels:
    rows = io.open_rows(*found["pixels"], pixels=True, num_rows=labels.rows, hint=lineage.download)
    if rows.dtype != np.uint8:
      rows.close()
      raise DataError(f"{rows.where}: pixel images must be uint8, got {rows.dtype}")
    picture = io.Matrix(rows, rows.path, rows.key)
    info["streamed"] = True
  else:
    picture = io.read_pixels(*found["pixels"], num_rows=labels.rows, hint=lineage.download)
  if picture.array.ndim == 4 and not is_row_source(picture.array):  # image_features may hold a stack too; read_pixels output passes unchanged
    picture = io.as_pixels(picture, labels.rows)
  info["files"] = {"image": picture.where, "text": tags.where, "labels": labels.where}
  return assemble(lineage.name, picture, tags, labels, split=split, seed=seed, num_query=num_query,
                  num_train=num_train, num_val=num_val, num_retrieval=num_retrieval,
                  drop_unlabeled=drop_unlabeled, info=info)


def _image_features_spec(image_features, image_key, directory) -> tuple:
  """(path, key) of the image_features= option ("path" or "path:key"; image_key names the key)."""
  path, key = io.split_spec(image_features, directory)
  return path, key or image_key

"""Read a folder built by `jxhash.data.tfds_writer` back as the dataset's `CrossModalData`.

`load_tfds(version_dir)` (the "tfds" loader) gives the `CrossModalData` the dataset's own loader
gives from the raw files, split by the same rules and defaults (read from the loaders' option
schemas); `read_tfds` gives the unsplit columns. Pixels stay on disk: the image column of a
pixel build is a `TfdsRows`, a lazy row source that decodes only the records asked for.
Reading goes through `as_data_source`, which decodes records to numpy: no TensorFlow.

The module imports tensorflow_datasets at the top; `jxhash.data` imports it only when the
"tfds" loader is used, so `import jxhash` does not pull tfds in.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from jxhash.data import bounds, io, iapr, mirflickr, nuswide, wikipedia
from jxhash.data.core import CrossModalData, RowSource, digest_array
from jxhash.data.features import assemble
from jxhash.data.tfds_format import CHUNK, FORMAT, OPTIONS, SPLIT, import_tfds
from jxhash.errors import DataError

tfds = import_tfds()

# The option schemas whose split defaults `load_tfds` uses, so the two cannot drift apart.
LOADER_OPTIONS = {"wikipedia": wikipedia.OPTIONS, "mirflickr25k": mirflickr.OPTIONS, "nuswide": nuswide.OPTIONS,
                  "iapr": iapr.OPTIONS}


class TfdsRows(RowSource):
  """The image column of a built pixel dataset, read on demand: rows presented as (N, H, W, 3).

  `rows[idx]` (an int, slice or integer index array, any order, repeats allowed; see
  `core.RowSource`) decodes only those records, each once, `CHUNK` at a time through the data
  source's `__getitems__`, and returns a numpy array. The same interface as
  `jxhash.data.io.LazyRows`.

  Attributes:
    shape: (N, H, W, 3). dtype: uint8. ndim: 4. where: "<folder> [image]" for messages.
    directory: the version folder.
  """

  def __init__(self, source, positions: np.ndarray, shape: tuple, dtype, where: str,
               directory: pathlib.Path | None = None):
    self._source = source
    self._positions = positions
    self.shape = tuple(int(s) for s in shape)
    self.dtype = np.dtype(dtype)
    self.where = where
    self.directory = directory

  def _read_sorted(self, rows: np.ndarray) -> np.ndarray:
    out = np.empty((rows.size,) + self.shape[1:], self.dtype)
    for start in range(0, rows.size, CHUNK):
      part = rows[start:start + CHUNK]
      try:
        records = self._source.__getitems__(self._positions[part].tolist())
      except Exception as e:  # tfds and array_record raise their own types for damaged files
        raise DataError(f"{self.where}: cannot read records of rows {int(part[0])}..{int(part[-1])} "
                        f"({bounds.reason(e)}); build the folder again") from e
      for j, record in enumerate(records):
        image = record["image"]
        if image.shape != self.shape[1:]:
          raise DataError(f"{self.where}: row {int(part[j])} has shape {image.shape}, but row 0 has {self.shape[1:]}; "
                          "the rows of a pixel dataset must all be the same size")
        out[start + j] = image
    return out

  def identity(self) -> dict:
    """The build: every file of the version folder with its size and mtime_ns, and the row order."""
    files = []
    if self.directory is not None:
      for path in sorted(p for p in self.directory.iterdir() if p.is_file()):
        stat = path.stat()
        files.append([path.name, stat.st_size, stat.st_mtime_ns])
    return {"tfds": str(self.directory.resolve()) if self.directory else self.where, "files": files,
            "rows": digest_array(self._positions)}

  def close(self):
    self._source = None


@dataclasses.dataclass(frozen=True)
class TfdsColumns:
  """The columns of a built dataset, in row order (the order of the downloaded files).

  Attributes:
    image: (N, D) features (numpy), or (N, H, W, 3) pixels as a lazy `TfdsRows`.
    text: (N, T) and labels: (N, C), numpy, in the dtypes the dataset's loader returns.
    metadata: what the builder recorded (dataset, image kind, source files, ...).
    directory: the version folder.
  """

  image: object
  text: np.ndarray
  labels: np.ndarray
  metadata: dict
  directory: pathlib.Path


def find_version_dir(data_dir, dataset: str | None = None) -> pathlib.Path:
  """The built version folder: `data_dir` itself, or the one below it matching `dataset`.

  `dataset`: "wikipedia", "jxhash_wikipedia" or "<dataset>/<config>" (e.g.
  "mirflickr25k/pixels"); needed when `data_dir` holds several built datasets or configs.
  """
  if data_dir is None:
    raise DataError("dataset 'tfds' needs data_dir: the folder experiments/prepare_tfds.py printed "
                    "(…/jxhash_<dataset>/<config>/1.0.0), or the tfds data folder with dataset=<dataset>")
  path = pathlib.Path(data_dir).expanduser()
  if not path.is_dir():
    raise DataError(f"{path}: TFDS folder not found; build it with experiments/prepare_tfds.py")
  if (path / "dataset_info.json").is_file():
    return path
  wanted = f" for {dataset!r}" if dataset else ""
  dataset, _, config = (dataset or "").removeprefix("jxhash_").partition("/")
  # A version folder is <data_dir>/jxhash_<dataset>/<config>/<version>; data_dir may be any
  # level of that path.
  found = []
  for depth in (1, 2, 3):
    for info in sorted(path.glob("*/" * depth + "dataset_info.json")):
      version = info.parent
      if (not dataset or version.parent.parent.name == f"jxhash_{dataset}") and (
          not config or version.parent.name == config):
        found.append(version)
  if len(found) == 1:
    return found[0]
  if not found:
    raise DataError(f"{path}: no built TFDS dataset{wanted} here (no dataset_info.json up to three levels down); "
                    "build it with experiments/prepare_tfds.py and pass the folder it prints")
  listing = ", ".join(str(p.relative_to(path)) for p in found)
  raise DataError(f"{path}: several built datasets{wanted} ({listing}); pass one version folder, or "
                  "dataset=<dataset> or dataset=<dataset>/<config>")


def read_tfds(data_dir, dataset: str | None = None) -> TfdsColumns:
  """Open a folder built by `prepare`: text and labels read whole, pixels left on disk.

  Args:
    data_dir: a version folder, or a folder above it (see `find_version_dir`).
    dataset: which dataset, when `data_dir` holds several.
  """
  directory = find_version_dir(data_dir, dataset)
  try:
    builder = tfds.builder_from_directory(str(directory))
  except Exception as e:  # tfds raises its own types for unreadable or foreign folders
    raise DataError(f"{directory}: cannot open it as a TFDS dataset ({bounds.reason(e)})") from e
  meta = dict(builder.info.metadata or {})
  if meta.get("format") != FORMAT:
    raise DataError(f"{directory}: not a dataset built by jxhash (metadata.json has no format {FORMAT!r}); "
                    "build it with experiments/prepare_tfds.py")
  if SPLIT not in builder.info.splits:
    raise DataError(f"{directory}: no split {SPLIT!r} (found {list(builder.info.splits)})")
  pixels = meta["image"] == "pixels"
  # The pass over every record for text and labels leaves pixel bytes undecoded.
  decoders = {"image": tfds.decode.SkipDecoding()} if pixels else None
  try:
    source = builder.as_data_source(SPLIT, decoders=decoders)
    columns = _read_columns(source, ("text", "labels", "index") + (() if pixels else ("image",)), directory)
  except DataError:
    raise
  except Exception as e:  # a missing or damaged record file surfaces as various tfds / OS errors
    raise DataError(f"{directory}: cannot read the records ({bounds.reason(e)}); build the folder again") from e
  index = columns.pop("index")
  num_items = index.size
  if num_items != meta["num_items"]:
    raise DataError(f"{directory}: {num_items} records, but the builder wrote {meta['num_items']}")
  if index.min() < 0 or index.max() >= num_items or np.unique(index).size != num_items:
    raise DataError(f"{directory}: the index field is not a permutation of the {num_items} rows; build it again")
  # positions[row] = the record holding that row (the inverse permutation); the identity for
  # folders built here, which keep row order.
  positions = np.argsort(index)
  in_order = columns if np.array_equal(index, np.arange(num_items)) else {k: v[positions] for k, v in columns.items()}
  dtypes = meta.get("dtypes", {})
  text = in_order["text"].astype(dtypes.get("text", "float32"), copy=False)
  labels = in_order["labels"]
  if pixels:
    full = builder.as_data_source(SPLIT)
    first = full[int(positions[0])]["image"]
    image = TfdsRows(full, positions, (num_items,) + first.shape, np.uint8, f"{directory} [image]", directory)
  else:
    image = in_order["image"].astype(dtypes.get("image", "float32"), copy=False)
  return TfdsColumns(image=image, text=text, labels=labels, metadata=meta, directory=directory)


def _read_columns(source, fields, directory) -> dict:
  """Fields of every record as stacked numpy arrays, decoded `CHUNK` records at a time."""
  n = len(source)
  if n == 0:
    raise DataError(f"{directory}: the split {SPLIT!r} holds no records")
  first = source[0]
  out = {f: np.empty((n,) + np.shape(first[f]), np.asarray(first[f]).dtype) for f in fields}
  for start in range(0, n, CHUNK):
    records = source.__getitems__(list(range(start, min(n, start + CHUNK))))
    for f in fields:
      try:
        out[f][start:start + len(records)] = [r[f] for r in records]
      except ValueError as e:
        raise DataError(f"{directory} [{f}]: records {start}..{start + len(records) - 1} do not all have the shape "
                        f"of record 0, {out[f].shape[1:]} ({bounds.reason(e)})") from e
  return out


def load_tfds(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """A dataset built by `tfds_writer.prepare`, split as the dataset's own loader splits it.

  Args:
    data_dir: the version folder `prepare` returned (…/jxhash_<dataset>/<config>/1.0.0), or a
      folder above it with `dataset`.
    split, seed: the split rule and seed, as for the loader ("random" / "dcmh"; Wikipedia
      always uses its official split).
    **options: `tfds_format.OPTIONS` (docs/data.md): dataset ("<dataset>" or
      "<dataset>/<config>", when `data_dir` holds several builds); num_query, num_train,
      num_val, num_retrieval (split sizes; None takes the dataset loader's default, e.g.
      MIRFlickr 2000 / 10000 / 500 / all; Wikipedia takes num_val only); drop_unlabeled.

  Returns:
    CrossModalData named after the dataset ("wikipedia", "mirflickr25k", ...), equal to what
    `jxhash.data.load(<dataset>, <raw folder>, split=split, seed=seed)` gives (same split
    indices and arrays), with `split_info["source"] = "tfds:<version folder>"` and the
    resolved options in `split_info["options"]`. Pixels stay on disk: `image` is then a
    `TfdsRows`, read row by row on demand.
  """
  o = OPTIONS.check(options)
  dataset = o["dataset"]
  columns = read_tfds(data_dir, dataset)
  meta, directory = columns.metadata, columns.directory
  name = meta["dataset"]
  if dataset and dataset.removeprefix("jxhash_").partition("/")[0] != name:
    raise DataError(f"{directory}: holds {name!r}, not {dataset!r}")
  if name not in LOADER_OPTIONS:
    raise DataError(f"{directory}: holds {name!r}, which has no loader options here; rebuild it with this jxhash")
  defaults = LOADER_OPTIONS[name].defaults()
  info = {"source": f"tfds:{directory}", "built_from": meta["files"]}
  if name == "wikipedia":
    extra = [k for k in ("num_query", "num_train", "num_retrieval") if o[k] is not None]
    if extra:
      raise DataError(f"dataset 'wikipedia' uses its official split (693 query / 2173 train); {', '.join(extra)} "
                      "does not apply (num_val does)")
    num_val = defaults["num_val"] if o["num_val"] is None else o["num_val"]
    info["options"] = OPTIONS.record(dict(o, num_val=num_val))
    return wikipedia.official_split(columns.image, columns.text, columns.labels,
                                    num_train=int(meta["official_train"]), split=split, seed=seed,
                                    num_val=num_val, info=info)
  sizes = {k: defaults[k] if o[k] is None else o[k] for k in ("num_query", "num_train", "num_val", "num_retrieval")}
  if "tc" in meta:
    info = {"tc": meta["tc"], **info}
  info["options"] = OPTIONS.record(dict(o, **sizes))
  where = lambda key: io.Matrix(getattr(columns, key), directory, key)  # noqa: E731
  return assemble(name, where("image"), where("text"), where("labels"), split=split, seed=seed,
                  drop_unlabeled=o["drop_unlabeled"], info=info, **sizes)


__all__ = ["LOADER_OPTIONS", "TfdsColumns", "TfdsRows", "find_version_dir", "load_tfds", "read_tfds"]

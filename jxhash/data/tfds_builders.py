"""TFDS builders for Wikipedia, MIRFlickr-25K, NUS-WIDE and IAPR TC-12, and `load_tfds` to read them.

`prepare(name, manual_dir, data_dir)` converts the files a user downloaded (the same files the
loaders of `jxhash.data` read, through the same reading code) into a TensorFlow Datasets
folder of ArrayRecord files; `load_tfds(version_dir)` turns that folder back into the
`CrossModalData` the dataset's own loader gives, split by the same rules and defaults.
ArrayRecord gives random access to single records, so a pixel stack is read row by row on
demand instead of being held in memory. Neither direction needs TensorFlow: tfds can only write
TFRecord files with it, so every build here is `file_format="array_record"`, and reading goes
through `as_data_source`, which decodes records to numpy.

What is stored: every item of the dataset, in the row order of the downloaded files, in one
split named "items" (tfds reserves the name "all" for "every split together", which here reads
the same records). Nothing of the train/query/retrieval protocol is baked in: `load_tfds`
makes the split at load time, seeded as the loaders do. Per record:
  image   (D,) float32 features, or (H, W, 3) uint8 pixels (raw bytes), by builder config;
  text    (T,) float32;
  labels  (C,) uint8 multi-hot;
  index   int64, the row number in the downloaded files.
Shapes are declared dynamic ((None,) and (None, None, 3)) because a builder's features are
fixed when it is constructed, before it has seen the files (whose widths depend on the
release: VGG or other CNN features, 224×224 or other pixels); `load_tfds` reads the sizes from
the first record. The builder's metadata (metadata.json next to the records) says which
dataset it is, where it was built from, the stored dtypes the loaders return (MIRFlickr's tags
are uint8: `load_tfds` casts text back, which float32 holds exactly) and, for Wikipedia, the
size of the official training set.

The module imports tensorflow_datasets at the top; `jxhash.data` imports it only when the
"tfds" loader is used, so `import jxhash` does not pull tfds in.
"""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import tempfile

import numpy as np

from jxhash.data import io, wikipedia
from jxhash.data.core import CrossModalData
from jxhash.data.features import Lineage, assemble, locate
from jxhash.data.iapr import IAPR, load_iapr
from jxhash.data.mirflickr import MIRFLICKR, load_mirflickr25k
from jxhash.data import nuswide
from jxhash.data.nuswide import _DOWNLOAD as _NUSWIDE_DOWNLOAD, load_nuswide
from jxhash.errors import DataError, UserError

try:
  import tensorflow_datasets as tfds
except ImportError as e:  # the optional extra is not installed
  raise UserError(f'the TFDS builders need tensorflow-datasets ({e}); install it with: '
                  'pip install "jxhash[tfds]"') from e

SPLIT = "items"
IMAGE_KINDS = ("features", "pixels")
# Marks a folder as written by these builders (metadata.json), and the layout it follows.
FORMAT = "jxhash-crossmodal-1"
# Rows decoded per `__getitems__` call: enough to amortise the call, small enough that a
# chunk of 224×224 pixels stays around 40 MB.
_CHUNK = 256


@dataclasses.dataclass(eq=False)
class CrossModalConfig(tfds.core.BuilderConfig):
  """A builder config: `image` is "features" or "pixels"; `tc` is NUS-WIDE's concept set (21 or 10)."""

  image: str = "features"
  tc: int | None = None


class _CrossModalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes every item of one dataset, in row order, to the split "items".

  Subclasses set `DATASET` (the jxhash dataset name) and implement `_read(directory)`, which
  returns a `_Columns` of the raw files in `directory` (the manual_dir).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "All items in row order in one split 'items'; image, text, labels, index."}
  DATASET = ""
  HOMEPAGE = ""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    # tfds 4.9.10 resolves this path through `importlib_resources`, a package it installs only
    # on Python < 3.9 (tensorflow/datasets#11212), so a builder defined in a package fails with
    # ModuleNotFoundError. The path only locates a checksums file; these builders download nothing.
    return None

  def _info(self):
    if self.builder_config.image == "pixels":
      # Raw bytes: the default encoding stores uint8 as int64 varints, about 1.5x the size.
      image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="bytes",
                                   doc="(H, W, 3) uint8 pixels")
    else:
      image = tfds.features.Tensor(shape=(None,), dtype=np.float32, doc="(D,) image features")
    features = tfds.features.FeaturesDict({
        "image": image,
        "text": tfds.features.Tensor(shape=(None,), dtype=np.float32, doc="(T,) text features"),
        "labels": tfds.features.Tensor(shape=(None,), dtype=np.uint8, doc="(C,) multi-hot labels"),
        "index": tfds.features.Scalar(dtype=np.int64, doc="row number in the downloaded files"),
    })
    # disable_shuffling keeps the records in key (= row) order; tfds shuffles them otherwise.
    return tfds.core.DatasetInfo(builder=self, description=(self.__doc__ or "").split("\n")[0],
                                 features=features, homepage=self.HOMEPAGE or None, disable_shuffling=True,
                                 metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    columns = self._read(pathlib.Path(dl_manager.manual_dir))
    self.info.metadata.update(format=FORMAT, dataset=self.DATASET, image=self.builder_config.image,
                              num_items=columns.num_items, dtypes=columns.dtypes, files=columns.files,
                              **columns.extra)
    return {SPLIT: self._generate_examples(columns)}

  def _generate_examples(self, columns):
    for start, block in columns.image_blocks():
      for offset, image in enumerate(block):
        row = start + offset
        yield row, {"image": image, "text": columns.text[row].astype(np.float32),
                    "labels": columns.labels[row], "index": row}

  def _read(self, directory: pathlib.Path) -> "_Columns":
    raise NotImplementedError


def _instructions(download_hint: str) -> str:
  """A loader's download hint, worded for a builder: the files go to manual_dir, and the
  loaders' image_features= option has no counterpart here."""
  return download_hint.replace(", or image_features=<file>", "").replace("data_dir", "manual_dir")


@dataclasses.dataclass
class _Columns:
  """What a builder read from the raw files.

  text: (N, T) and labels: (N, C) in memory; the image either as (N, D) features in memory or
  as the (path, keys) of a pixel stack, read `_CHUNK` rows at a time while writing.
  """

  labels: np.ndarray
  text: np.ndarray
  features: np.ndarray | None
  pixels: tuple | None
  hint: str
  files: object  # what the loader records as split_info["files"]
  dtypes: dict
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def num_items(self) -> int:
    return int(self.labels.shape[0])

  def image_blocks(self):
    """(start row, block of image rows) pairs covering every row in order."""
    if self.features is not None:
      for start in range(0, self.num_items, _CHUNK):
        yield start, self.features[start:start + _CHUNK].astype(np.float32)
      return
    path, keys = self.pixels
    with io.open_rows(path, keys, pixels=True, num_rows=self.num_items, hint=self.hint) as rows:
      for start in range(0, len(rows), _CHUNK):
        try:
          block = rows[start:start + _CHUNK]
        except io.READ_ERRORS as e:
          raise DataError(f"{rows.where}: cannot read the pixels ({type(e).__name__}: {e}); the file may be "
                          "truncated or damaged, download it again") from e
        yield start, block


class Wikipedia(_CrossModalBuilder):
  """Wikipedia (Rasiwasia et al. 2010): 2866 pairs, 128-d SIFT BoW images, 10-d LDA texts, 10 classes."""

  name = "jxhash_wikipedia"
  DATASET = "wikipedia"
  HOMEPAGE = "http://www.svcl.ucsd.edu/projects/crossmodal/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(wikipedia.DOWNLOAD)
  BUILDER_CONFIGS = [CrossModalConfig(name="features", image="features",
                                      description="128-d SIFT bag-of-words image features")]

  def _read(self, directory):
    # The loader itself reads the files (either release, labels from the lists or the .mat);
    # its rows are the official training items then the test items.
    data = wikipedia.load_wikipedia(directory)
    return _Columns(labels=data.labels, text=data.text, features=data.image, pixels=None, hint=wikipedia.DOWNLOAD,
                    files=data.split_info["files"], dtypes={"image": "float32", "text": "float32"},
                    extra={"official_train": int(data.retrieval.size)})


class _LineageBuilder(_CrossModalBuilder, skip_registration=True):
  """A DCMH-lineage dataset: <prefix>-lall / -yall and -iall (pixels) or -iall-vgg / -xall-vgg (features)."""

  LINEAGE: Lineage

  def lineage(self) -> Lineage:
    return self.LINEAGE

  def _read(self, directory):
    lineage = self.lineage()
    sources = locate(directory, lineage, self.builder_config.image)
    labels, tags = (io.read_matrix(*sources[part], hint=lineage.download) for part in ("labels", "tags"))
    if labels.array.ndim == 2 and labels.array.shape[1] != lineage.num_labels:
      raise DataError(f"{labels.where}: {labels.array.shape[1]} label columns, but {lineage.name!r} has "
                      f"{lineage.num_labels} classes; is it the right file?")
    io.check_rows(labels, tags)
    labels, tags = io.check_labels(labels), io.check_matrix(tags, "text")
    features = pixels = None
    if self.builder_config.image == "features":
      image = io.read_matrix(*sources["features"], hint=lineage.download)
      io.check_rows(labels, image)
      image = io.check_matrix(image, "image features")
      features, where, dtype = image.array, image.where, image.array.dtype
    else:
      pixels = sources["pixels"]
      # Opening checks the stack's layout, item count and dtype now rather than mid-build.
      with io.open_rows(*pixels, pixels=True, num_rows=labels.rows, hint=lineage.download) as rows:
        if rows.dtype != np.uint8:
          raise DataError(f"{rows.where}: pixel images must be uint8, got {rows.dtype}")
        where, dtype = rows.where, np.dtype(np.uint8)
    return _Columns(labels=labels.array, text=tags.array, features=features, pixels=pixels, hint=lineage.download,
                    files={"image": where, "text": tags.where, "labels": labels.where},
                    dtypes={"image": str(dtype), "text": str(tags.array.dtype)}, extra=self._extra())

  def _extra(self) -> dict:
    return {}


def _lineage_configs(what: str) -> list:
  return [CrossModalConfig(name="features", image="features", description=f"{what} CNN features (XAll)"),
          CrossModalConfig(name="pixels", image="pixels",
                           description=f"{what} pixels (IAll, H×W×3 uint8; 224×224 in the releases)")]


class Mirflickr25k(_LineageBuilder):
  """MIRFlickr-25K (DCMH version): 20015 image–tag pairs, 1386-d tags, 24 labels."""

  name = "jxhash_mirflickr25k"
  DATASET = "mirflickr25k"
  HOMEPAGE = "https://github.com/jiangqy/DCMH-CVPR2017"
  LINEAGE = MIRFLICKR
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(MIRFLICKR.download)
  BUILDER_CONFIGS = _lineage_configs("MIRFlickr-25K")


class Iapr(_LineageBuilder):
  """IAPR TC-12 (DCMH-lineage release): 20000 images with captions, 2912-d bag of words, 255 labels."""

  name = "jxhash_iapr"
  DATASET = "iapr"
  LINEAGE = IAPR
  MANUAL_DOWNLOAD_INSTRUCTIONS = _instructions(IAPR.download)
  BUILDER_CONFIGS = _lineage_configs("IAPR TC-12")


class Nuswide(_LineageBuilder):
  """NUS-WIDE (DCMH-lineage release): TC-21 (195834 items, 21 labels) or TC-10, 1000-d tags."""

  name = "jxhash_nuswide"
  DATASET = "nuswide"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (_instructions(_NUSWIDE_DOWNLOAD.format(tc=21))
                                  + " For TC-10, the same files with tc10 in place of tc21.")
  BUILDER_CONFIGS = [CrossModalConfig(name=f"tc{tc}-{kind}", image=kind, tc=tc,
                                      description=f"NUS-WIDE TC-{tc}, image {kind}")
                     for tc in (21, 10) for kind in IMAGE_KINDS]

  def lineage(self):
    return nuswide.lineage(self.builder_config.tc)

  def _extra(self):
    return {"tc": self.builder_config.tc}


BUILDERS = {cls.DATASET: cls for cls in (Wikipedia, Mirflickr25k, Nuswide, Iapr)}
# The loaders whose split defaults `load_tfds` uses, so the two cannot drift apart.
_LOADERS = {"wikipedia": wikipedia.load_wikipedia, "mirflickr25k": load_mirflickr25k, "nuswide": load_nuswide,
            "iapr": load_iapr}


def prepare(name: str, manual_dir, data_dir, *, image: str = "auto", tc: int | None = None) -> pathlib.Path:
  """Build dataset `name` from the files in `manual_dir` into the tfds folder `data_dir`.

  Args:
    name: "wikipedia", "mirflickr25k", "nuswide" or "iapr".
    manual_dir: the folder holding the downloaded files (what the dataset's loader takes as
      data_dir).
    data_dir: the tfds data folder (e.g. ~/tensorflow_datasets); the dataset goes to
      data_dir/jxhash_<name>/<config>/1.0.0.
    image: "features", "pixels" or "auto" (features if their file is there, else pixels).
      Wikipedia has features only.
    tc: NUS-WIDE's concept set, 21 (default) or 10; other datasets take none.

  Returns:
    The version folder, which `load_tfds` (and `tfds.builder_from_directory`) read. A folder
    already built is reused as it is; delete it to rebuild.
  """
  if name not in BUILDERS:
    raise DataError(f"no TFDS builder for dataset {name!r}; choose from {sorted(BUILDERS)}")
  builder_cls = BUILDERS[name]
  if image not in ("auto", *IMAGE_KINDS):
    raise DataError(f"image={image!r}; choose 'auto', 'features' or 'pixels'")
  if tc is not None and name != "nuswide":
    raise DataError(f"tc={tc!r} applies to 'nuswide' only, not {name!r}")
  if name == "nuswide" and (tc or 21) not in (21, 10):
    raise DataError(f"dataset 'nuswide': tc={tc!r}; choose 21 (TC-21) or 10 (TC-10)")
  if name == "wikipedia":
    directory = io.data_directory(manual_dir, name, wikipedia.DOWNLOAD)
    if image == "pixels":
      raise DataError("dataset 'wikipedia' ships precomputed features only; use image='features' (or 'auto')")
    wikipedia._choose_source(directory, None)  # the loader's error for missing files, before tfds starts
    config = "features"
  else:
    lineage = nuswide.lineage(tc or 21) if name == "nuswide" else builder_cls.LINEAGE
    directory = io.data_directory(manual_dir, name, lineage.download)
    kind = "features" if "features" in locate(directory, lineage, image) else "pixels"
    config = f"tc{tc or 21}-{kind}" if name == "nuswide" else kind
  if data_dir is None:
    raise DataError("prepare needs data_dir, the tfds data folder to build into (e.g. ~/tensorflow_datasets)")
  data_dir = pathlib.Path(data_dir).expanduser()
  builder = builder_cls(data_dir=str(data_dir), config=config, file_format="array_record")
  # tfds makes a downloads/ folder even with nothing to download; keep it out of data_dir.
  with tempfile.TemporaryDirectory(prefix="jxhash-tfds-") as scratch:
    builder.download_and_prepare(download_dir=scratch, download_config=tfds.download.DownloadConfig(
        manual_dir=str(directory.resolve())))
  return pathlib.Path(builder.data_dir)


# ---------------------------------------------------------------------------------------------
# Reading a built folder back.


class TfdsRows:
  """The image column of a built pixel dataset, read on demand: rows presented as (N, H, W, 3).

  `rows[idx]` (an int, slice or integer index array, any order, repeats allowed) decodes only
  those records, in batches through the data source's `__getitems__`, and returns a numpy
  array. The same interface as `jxhash.data.io.LazyRows`.

  Attributes:
    shape: (N, H, W, 3). dtype: uint8. ndim: 4. where: "<folder> [image]" for messages.
  """

  def __init__(self, source, positions: np.ndarray, shape: tuple, dtype, where: str):
    self._source = source
    self._positions = positions
    self.shape = tuple(int(s) for s in shape)
    self.dtype = np.dtype(dtype)
    self.where = where

  @property
  def ndim(self) -> int:
    return len(self.shape)

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, index) -> np.ndarray:
    rows = np.arange(len(self))[index]
    flat = rows.reshape(-1)
    # Each distinct row is decoded once, in record order (sequential reads of the files).
    unique, inverse = np.unique(flat, return_inverse=True)
    out = np.empty((unique.size,) + self.shape[1:], self.dtype)
    for start in range(0, unique.size, _CHUNK):
      part = unique[start:start + _CHUNK]
      for j, record in enumerate(self._source.__getitems__(self._positions[part].tolist())):
        image = record["image"]
        if image.shape != self.shape[1:]:
          raise DataError(f"{self.where}: row {int(part[j])} has shape {image.shape}, but row 0 has {self.shape[1:]}; "
                          "the rows of a pixel dataset must all be the same size")
        out[start + j] = image
    if unique.size != flat.size or not np.array_equal(unique, flat):
      out = out[inverse.reshape(-1)]
    return out.reshape(rows.shape + self.shape[1:])

  def close(self):
    self._source = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


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
    raise DataError(f"{directory}: cannot open it as a TFDS dataset ({type(e).__name__}: {e})") from e
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
    raise DataError(f"{directory}: cannot read the records ({type(e).__name__}: {e}); build the folder again") from e
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
    image = TfdsRows(full, positions, (num_items,) + first.shape, np.uint8, f"{directory} [image]")
  else:
    image = in_order["image"].astype(dtypes.get("image", "float32"), copy=False)
  return TfdsColumns(image=image, text=text, labels=labels, metadata=meta, directory=directory)


def _read_columns(source, fields, directory) -> dict:
  """Fields of every record as stacked numpy arrays, decoded `_CHUNK` records at a time."""
  n = len(source)
  if n == 0:
    raise DataError(f"{directory}: the split {SPLIT!r} holds no records")
  first = source[0]
  out = {f: np.empty((n,) + np.shape(first[f]), np.asarray(first[f]).dtype) for f in fields}
  for start in range(0, n, _CHUNK):
    records = source.__getitems__(list(range(start, min(n, start + _CHUNK))))
    for f in fields:
      try:
        out[f][start:start + len(records)] = [r[f] for r in records]
      except ValueError as e:
        raise DataError(f"{directory} [{f}]: records {start}..{start + len(records) - 1} do not all have the shape "
                        f"of record 0, {out[f].shape[1:]} ({e})") from e
  return out


def load_tfds(data_dir, *, split: str = "random", seed: int = 0, dataset: str | None = None,
              num_query: int | None = None, num_train: int | None = None, num_val: int | None = None,
              num_retrieval: int | None = None, drop_unlabeled: bool = True) -> CrossModalData:
  """A dataset built by `prepare`, split as the dataset's own loader splits it.

  Args:
    data_dir: the version folder `prepare` returned (…/jxhash_<dataset>/<config>/1.0.0), or a
      folder above it with `dataset`.
    split, seed: the split rule and seed, as for the loader ("random" / "dcmh"; Wikipedia
      always uses its official split).
    dataset: "<dataset>" or "<dataset>/<config>", when `data_dir` holds several builds (not
      `name`, which `jxhash.data.load` takes for the loader: --data-option dataset=wikipedia).
    num_query, num_train, num_val, num_retrieval: split sizes; None takes the loader's default
      (e.g. MIRFlickr 2000 / 10000 / 500 / all). Wikipedia takes num_val only.
    drop_unlabeled: drop items with no label before splitting, as the loaders do.

  Returns:
    CrossModalData named after the dataset ("wikipedia", "mirflickr25k", ...), equal to what
    `jxhash.data.load(<dataset>, <raw folder>, split=split, seed=seed)` gives (same split
    indices and arrays), with `split_info["source"] = "tfds:<version folder>"`. Pixels stay on
    disk: `image` is then a `TfdsRows`, read row by row on demand.
  """
  columns = read_tfds(data_dir, dataset)
  meta, directory = columns.metadata, columns.directory
  name = meta["dataset"]
  if dataset and dataset.removeprefix("jxhash_").partition("/")[0] != name:
    raise DataError(f"{directory}: holds {name!r}, not {dataset!r}")
  defaults = {k: p.default for k, p in inspect.signature(_LOADERS[name]).parameters.items()}
  info = {"source": f"tfds:{directory}", "built_from": meta["files"]}
  if name == "wikipedia":
    given = {"num_query": num_query, "num_train": num_train, "num_retrieval": num_retrieval}
    extra = [k for k, v in given.items() if v is not None]
    if extra:
      raise DataError(f"dataset 'wikipedia' uses its official split (693 query / 2173 train); {', '.join(extra)} "
                      "does not apply (num_val does)")
    return wikipedia.official_split(columns.image, columns.text, columns.labels,
                                    num_train=int(meta["official_train"]), split=split, seed=seed,
                                    num_val=defaults["num_val"] if num_val is None else num_val, info=info)
  sizes = {"num_query": num_query, "num_train": num_train, "num_val": num_val, "num_retrieval": num_retrieval}
  sizes = {k: defaults[k] if v is None else v for k, v in sizes.items()}
  if "tc" in meta:
    info = {"tc": meta["tc"], **info}
  where = lambda key: io.Matrix(getattr(columns, key), directory, key)  # noqa: E731
  return assemble(name, where("image"), where("text"), where("labels"), split=split, seed=seed,
                  drop_unlabeled=drop_unlabeled, info=info, **sizes)

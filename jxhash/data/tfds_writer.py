"""TFDS builders for Wikipedia, MIRFlickr-25K, NUS-WIDE and IAPR TC-12, and `prepare` to run them.

`prepare(name, manual_dir, data_dir)` converts the files a user downloaded (the same files the
loaders of `jxhash.data` read, through the same reading code) into a TensorFlow Datasets
folder of ArrayRecord files (the layout: `jxhash.data.tfds_format`); `jxhash.data.tfds_reader`
reads it back. ArrayRecord gives random access to single records, so a pixel stack is read
row by row on demand instead of being held in memory. Writing needs no TensorFlow: tfds can
only write TFRecord files with it, so every build here is `file_format="array_record"`.

What is stored: every item of the dataset, in the row order of the downloaded files, in one
split "items". Nothing of the train/query/retrieval protocol is baked in: the reader makes the
split at load time, seeded as the loaders do. Shapes are declared dynamic ((None,) and
(None, None, 3)) because a builder's features are fixed when it is constructed, before it has
seen the files (whose widths depend on the release: VGG or other CNN features, 224×224 or
other pixels). The builder's metadata (metadata.json next to the records) says which dataset it
is, where it was built from, the stored dtypes the loaders return (MIRFlickr's tags are uint8:
the reader casts text back, which float32 holds exactly) and, for Wikipedia, the size of the
official training set.

The module imports tensorflow_datasets at the top; `jxhash.data` never imports it, so
`import jxhash` does not pull tfds in.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile

import numpy as np

from jxhash import fileio
from jxhash.data import io, nuswide, wikipedia
from jxhash.data.features import Lineage, locate
from jxhash.data.iapr import IAPR
from jxhash.data.mirflickr import MIRFLICKR
from jxhash.data.tfds_format import CHUNK, FORMAT, IMAGE_KINDS, SPLIT, import_tfds
from jxhash.errors import DataError

tfds = import_tfds()


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
  as the (path, keys) of a pixel stack, read `CHUNK` rows at a time while writing.
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
      for start in range(0, self.num_items, CHUNK):
        yield start, self.features[start:start + CHUNK].astype(np.float32)
      return
    path, keys = self.pixels
    # LazyRows turns read failures into a DataError naming the file.
    with io.open_rows(path, keys, pixels=True, num_rows=self.num_items, hint=self.hint) as rows:
      for start in range(0, len(rows), CHUNK):
        yield start, rows[start:start + CHUNK]


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
  MANUAL_DOWNLOAD_INSTRUCTIONS = (_instructions(nuswide.DOWNLOAD.format(tc=21))
                                  + " For TC-10, the same files with tc10 in place of tc21.")
  BUILDER_CONFIGS = [CrossModalConfig(name=f"tc{tc}-{kind}", image=kind, tc=tc,
                                      description=f"NUS-WIDE TC-{tc}, image {kind}")
                     for tc in (21, 10) for kind in IMAGE_KINDS]

  def lineage(self):
    return nuswide.lineage(self.builder_config.tc)

  def _extra(self):
    return {"tc": self.builder_config.tc}


BUILDERS = {cls.DATASET: cls for cls in (Wikipedia, Mirflickr25k, Nuswide, Iapr)}


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
    The version folder, which `tfds_reader.load_tfds` (and `tfds.builder_from_directory`)
    read. A folder already built is reused as it is; delete it to rebuild. tfds writes the
    build into a temporary folder and renames it when complete, so a failed build leaves no
    version folder.
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
    wikipedia.choose_source(directory)  # the loader's error for missing files, before tfds starts
    config = "features"
  else:
    lineage = nuswide.lineage(tc or 21) if name == "nuswide" else builder_cls.LINEAGE
    directory = io.data_directory(manual_dir, name, lineage.download)
    kind = "features" if "features" in locate(directory, lineage, image) else "pixels"
    config = f"tc{tc or 21}-{kind}" if name == "nuswide" else kind
  if data_dir is None:
    raise DataError("prepare needs data_dir, the tfds data folder to build into (e.g. ~/tensorflow_datasets)")
  # Before the build, which reads every row: a folder that cannot be written fails now.
  data_dir = fileio.require_writable_dir(data_dir, what="TFDS data folder")
  builder = builder_cls(data_dir=str(data_dir), config=config, file_format="array_record")
  # tfds makes a downloads/ folder even with nothing to download; keep it out of data_dir.
  with tempfile.TemporaryDirectory(prefix="jxhash-tfds-") as scratch:
    builder.download_and_prepare(download_dir=scratch, download_config=tfds.download.DownloadConfig(
        manual_dir=str(directory.resolve())))
  return pathlib.Path(builder.data_dir)


__all__ = ["BUILDERS", "CrossModalConfig", "Iapr", "Mirflickr25k", "Nuswide", "Wikipedia", "prepare"]

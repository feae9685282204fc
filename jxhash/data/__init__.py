"""Datasets: `CrossModalData` and one loader per dataset, reached through `load(name, ...)`.

Every loader declares its options in a schema (`SCHEMAS`, see `jxhash.data.options` and
docs/data.md); `load` checks them, and `parse_options` reads them from "key=value" strings.
"""

from __future__ import annotations

from jxhash import fileio
from jxhash.data import coco, features, iapr, mirflickr, nuswide, prepared, synthetic, tfds_format, wikipedia
from jxhash.data.coco import load_coco
from jxhash.data.core import CrossModalData, SPLITS
from jxhash.data.features import load_features
from jxhash.data.iapr import load_iapr
from jxhash.data.mirflickr import load_mirflickr25k
from jxhash.data.nuswide import load_nuswide
from jxhash.data.options import Schema
from jxhash.data.splits import make_split
from jxhash.data.synthetic import load_synthetic
from jxhash.data.wikipedia import load_wikipedia
from jxhash.errors import DataError, UserError

SPLIT_RULES = ("random", "dcmh")


def _load_tfds(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """The "tfds" loader: a folder built by jxhash.data.tfds_writer.prepare (see tfds_reader.load_tfds).

  Imported on first use, so `import jxhash.data` does not import tensorflow_datasets; the
  options are checked first, so a typo is reported without importing it either.
  """
  tfds_format.OPTIONS.check(options)
  from jxhash.data.tfds_reader import load_tfds
  return load_tfds(data_dir, split=split, seed=seed, **options)


# name -> loader(data_dir, *, split, seed, **options) -> CrossModalData
LOADERS = {
    "synthetic": load_synthetic,
    "wikipedia": load_wikipedia,
    "mirflickr25k": load_mirflickr25k,
    "nuswide": load_nuswide,
    "iapr": load_iapr,
    "coco": load_coco,
    "features": load_features,
    "tfds": _load_tfds,
    "prepared": prepared.load_prepared,
}

# name -> the loader's options: type, default, range, doc (docs/data.md is rendered from these)
SCHEMAS: dict[str, Schema] = {
    "synthetic": synthetic.OPTIONS,
    "wikipedia": wikipedia.OPTIONS,
    "mirflickr25k": mirflickr.OPTIONS,
    "nuswide": nuswide.OPTIONS,
    "iapr": iapr.OPTIONS,
    "coco": coco.OPTIONS,
    "features": features.OPTIONS,
    "tfds": tfds_format.OPTIONS,
    "prepared": prepared.OPTIONS,
}


def schema(name: str) -> Schema:
  """The option schema of dataset `name`; a DataError listing the datasets if there is none."""
  if not isinstance(name, str) or name not in SCHEMAS:
    raise DataError(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
  return SCHEMAS[name]


def parse_options(name: str, pairs) -> dict:
  """Loader options from command-line "key=value" strings, typed by dataset `name`'s schema.

  bool: true/false/1/0/yes/no; int: digits only (never silently a float); float; str and
  paths as written; tuples comma-separated; "none" for options whose default is None. An
  unknown key, a value of the wrong type or out of range, a pair without "=" or a key given
  twice raises a DataError naming the option and what is valid (the valid keys for an
  unknown one). Only the keys given are returned; `load` fills in the defaults.
  """
  return schema(name).parse(pairs)


def load(name: str, data_dir=None, /, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """Load dataset `name` from `data_dir` with its standard protocol.

  Args:
    name: one of `LOADERS`.
    data_dir: folder holding the files the user downloaded (unused by "synthetic").
    split: "random" (seeded permutation with the dataset's standard sizes) or "dcmh"
      (the deterministic slice order of the DCMH reference code).
    seed: the split seed (an int >= 0), recorded in `CrossModalData.split_info`.
    **options: the dataset's options (`SCHEMAS[name]`, docs/data.md): checked for unknown
      keys, types, ranges and consistency before any file is read; recorded, with their
      defaults, in `split_info["options"]`.
  """
  dataset_schema = schema(name)
  if not isinstance(split, str) or split not in SPLIT_RULES:
    raise DataError(f"unknown split rule {split!r} for {name!r}; choose from {list(SPLIT_RULES)}")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise DataError(f"split seed {seed!r} for {name!r}: must be an integer >= 0")
  if data_dir is not None:
    try:
      data_dir = fileio.user_path(data_dir, f"data_dir of dataset {name!r}")
    except UserError as e:
      raise DataError(str(e)) from None
  dataset_schema.check(options)
  return LOADERS[name](data_dir, split=split, seed=seed, **options)


__all__ = ["CrossModalData", "DataError", "LOADERS", "SCHEMAS", "SPLITS", "load", "make_split", "parse_options",
           "schema"]

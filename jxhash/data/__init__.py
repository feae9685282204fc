"""Datasets: `CrossModalData` and one loader per dataset, reached through `load(name, ...)`."""

from __future__ import annotations

from jxhash.data.coco import load_coco
from jxhash.data.core import CrossModalData, SPLITS
from jxhash.data.features import load_features
from jxhash.data.iapr import load_iapr
from jxhash.data.mirflickr import load_mirflickr25k
from jxhash.data.nuswide import load_nuswide
from jxhash.data.splits import make_split
from jxhash.data.synthetic import load_synthetic
from jxhash.data.wikipedia import load_wikipedia
from jxhash.errors import DataError


def _load_tfds(data_dir, **options) -> CrossModalData:
  """The "tfds" loader: a folder built by jxhash.data.tfds_builders.prepare.

  Imported on first use, so `import jxhash.data` does not import tensorflow_datasets.
  """
  from jxhash.data.tfds_builders import load_tfds
  return load_tfds(data_dir, **options)


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
}


def load(name: str, data_dir=None, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """Load dataset `name` from `data_dir` with its standard protocol.

  Args:
    name: one of `LOADERS`.
    data_dir: folder holding the files the user downloaded (unused by "synthetic").
    split: "random" (seeded permutation with the dataset's standard sizes) or "dcmh"
      (the deterministic slice order of the DCMH reference code).
    seed: the split seed, recorded in `CrossModalData.split_info`.
    **options: loader-specific options (sizes, file names, keys).
  """
  if name not in LOADERS:
    raise DataError(f"unknown dataset {name!r}; choose from {sorted(LOADERS)}")
  return LOADERS[name](data_dir, split=split, seed=seed, **options)


__all__ = ["CrossModalData", "DataError", "LOADERS", "SPLITS", "load", "make_split"]

"""The TFDS writer and reader under their former common name.

The builders and `prepare` live in `jxhash.data.tfds_writer`, `load_tfds`, `read_tfds` and the
lazy `TfdsRows` in `jxhash.data.tfds_reader`, and the layout both follow in
`jxhash.data.tfds_format`; this module re-exports their public names so that code written
against `jxhash.data.tfds_builders` keeps working. Importing it imports tensorflow_datasets.
"""

from __future__ import annotations

from jxhash.data.tfds_format import CHUNK, FORMAT, IMAGE_KINDS, SPLIT
from jxhash.data.tfds_reader import TfdsColumns, TfdsRows, find_version_dir, load_tfds, read_tfds
from jxhash.data.tfds_writer import BUILDERS, CrossModalConfig, Iapr, Mirflickr25k, Nuswide, Wikipedia, prepare

__all__ = ["BUILDERS", "CHUNK", "CrossModalConfig", "FORMAT", "IMAGE_KINDS", "Iapr", "Mirflickr25k", "Nuswide", "SPLIT",
           "TfdsColumns", "TfdsRows", "Wikipedia", "find_version_dir", "load_tfds", "prepare", "read_tfds"]

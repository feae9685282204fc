"""Prepare the official downloads of a dataset into one protocol folder (`jxhash prepare ...`).

    python -m jxhash.data.prepare mirflickr25k --raw ~/downloads/mirflickr --out data/mirflickr25k-dcmh

One module per dataset (`mirflickr25k`, `nuswide`, `coco`, `iapr`) holds its layout, its rules
and its protocols; `common` and `pipeline` hold the machinery they share; `cli` the command.
The `prepared` loader (`jxhash.data.load("prepared", out_dir, ...)`) reads the result.
"""

from __future__ import annotations

from jxhash.data.prepare.pipeline import Dataset, prepare


def datasets() -> dict[str, Dataset]:
  """name -> Dataset, for every dataset `prepare` knows."""
  from jxhash.data.prepare import coco, iapr, mirflickr25k, nuswide
  return {m.DATASET.name: m.DATASET for m in (mirflickr25k, nuswide, coco, iapr)}


__all__ = ["Dataset", "datasets", "prepare"]

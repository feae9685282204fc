"""IAPR TC-12 in the DCMH-lineage release: 20000 images with captions, 255 labels."""

from __future__ import annotations

from jxhash.data.core import CrossModalData
from jxhash.data.features import Lineage, lineage_options, load_lineage

IAPR = Lineage(
    name="iapr",
    prefixes=("iapr-tc12",),
    num_labels=255,
    download=("Get iapr-tc12-lall.mat and iapr-tc12-yall.mat with iapr-tc12-iall.mat (pixels) or image features "
              "(iapr-tc12-xall-vgg.mat, or image_features=<file>) from a DCMH-lineage release (e.g. the DJSRH or "
              "UCCH data links), and put them in data_dir."),
)


OPTIONS = lineage_options("iapr", num_query=2000, num_train=5000)


def load_iapr(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """IAPR TC-12: 20000 items, 2912-d bag-of-words captions, 255 labels.

  Files read from `data_dir`: iapr-tc12-lall.mat (LAll, 20000×255), iapr-tc12-yall.mat (YAll,
  20000×2912), and an image source chosen by `image` as for MIRFlickr: `image_features` (a
  .npy/.npz/.mat/.h5 with one row per item), else iapr-tc12-iall-vgg.mat / -xall-vgg.mat
  (XAll features), else iapr-tc12-iall.mat (IAll pixels, v7.3); "tags" = the caption matrix as
  a test-only stand-in. Where to get them: the data links of DCMH-lineage code (DJSRH, UCCH).

  Protocol: 2000 queries, the other 18000 items are the retrieval set, 5000 training items
  from it (split="random": seeded permutation; "dcmh": query = first 2000 rows, train = next
  5000, retrieval = all but the queries); val (`num_val`, default 500) from retrieval items
  outside train. Items with no label are dropped before splitting; the count is in split_info.

  Returns:
    CrossModalData named "iapr".
  """
  o = OPTIONS.check(options)
  return load_lineage(data_dir, IAPR, split=split, seed=seed, info={"options": OPTIONS.record(o)}, **o)

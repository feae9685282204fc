"""MS-COCO (2014 train + val images with captions) in the DCMH-lineage release, 80 labels."""

from __future__ import annotations

from jxhash.data.core import CrossModalData
from jxhash.data.features import Lineage, lineage_options, load_lineage

COCO = Lineage(
    name="coco",
    prefixes=("coco", "ms-coco", "mscoco"),
    num_labels=80,
    download=("Get coco-lall.mat and coco-yall.mat (or ms-coco-*; .npy copies work too) with coco-iall.mat "
              "(pixels) or image features (coco-xall-vgg.mat / coco-iall-vgg.mat, or image_features=<file>) from "
              "a DCMH-lineage release (e.g. the DADH or UCCH data links), and put them in data_dir."),
)


OPTIONS = lineage_options("coco", num_query=2000, num_train=10000)


def load_coco(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """MS-COCO: about 122k items (the labelled ones), 2000-d caption bag-of-words or dense text, 80 labels.

  Files read from `data_dir` (prefix coco-, ms-coco- or mscoco-; .mat, .npy, .npz or .h5):
  <prefix>lall (LAll, N×80), <prefix>yall (YAll, N×T text) and an image source chosen by
  `image` as for MIRFlickr: `image_features` (a .npy/.npz/.mat/.h5 with one row per item), else
  <prefix>iall-vgg / xall-vgg (XAll features), else <prefix>iall (IAll pixels); "tags" = the
  text matrix as a test-only stand-in. Where to get them: the data links of DCMH-lineage code
  (DADH, UCCH).

  Protocol: `num_query` queries (2000; 5000 in some papers), the rest is the retrieval set,
  10000 training items from it (split="random": seeded permutation; "dcmh": query = first
  rows, train = the next 10000, retrieval = all but the queries); val (`num_val`, default
  500) from retrieval items outside train. Items with no label are dropped before splitting;
  the count is in split_info.

  Returns:
    CrossModalData named "coco".
  """
  o = OPTIONS.check(options)
  return load_lineage(data_dir, COCO, split=split, seed=seed, info={"options": OPTIONS.record(o)}, **o)

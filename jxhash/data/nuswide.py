"""NUS-WIDE in the DCMH-lineage release: the items of the 21 (or 10) most frequent concepts."""

from __future__ import annotations

from jxhash.data.core import CrossModalData
from jxhash.data.features import Lineage, lineage_options, load_lineage
from jxhash.data.options import Option

# What to download, for TC-{tc}: `DOWNLOAD.format(tc=21)`.
DOWNLOAD = ("Get nus-wide-tc{tc}-lall.mat and nus-wide-tc{tc}-yall.mat with nus-wide-tc{tc}-iall.mat (pixels) or "
            "image features (nus-wide-tc{tc}-xall-vgg.mat, or image_features=<file>) from a DCMH-lineage release "
            "(e.g. the DJSRH or UCCH data links), and put them in data_dir.")


def lineage(tc: int) -> Lineage:
  """The files of NUS-WIDE TC-`tc` (21 or 10)."""
  return Lineage(name="nuswide", prefixes=(f"nus-wide-tc{tc}",), num_labels=tc, download=DOWNLOAD.format(tc=tc))


OPTIONS = lineage_options("nuswide", num_query=2100, num_train=10500, extra=(
    Option("tc", "int", 21, "concept set: TC-21 (21 labels) or TC-10", choices=(21, 10)),))


def load_nuswide(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """NUS-WIDE TC-21 (195834 items, 1000-d tags, 21 labels) or TC-10 (`tc=10`: 186577 items, 10 labels).

  Files read from `data_dir` (tc = 21 or 10): nus-wide-tc{tc}-lall.mat (LAll, N×tc labels),
  nus-wide-tc{tc}-yall.mat (YAll, N×1000 tags; v5 or v7.3), and an image source chosen by
  `image` as for MIRFlickr: `image_features` (a .npy/.npz/.mat/.h5 with one row per item),
  else nus-wide-tc{tc}-iall-vgg.mat / -xall-vgg.mat (XAll features), else
  nus-wide-tc{tc}-iall.mat (IAll pixels, v7.3, read as N×224×224×3 — about 29 GB for TC-21);
  "tags" = the tag matrix as a test-only stand-in. `.npy`/`.npz`/`.h5` copies with the same
  stem are accepted. Where to get them: the data links of DCMH-lineage code (DCMH, DJSRH, UCCH).

  Protocol: 2100 queries, the rest is the retrieval set, 10500 training items from it
  (split="random": seeded permutation; "dcmh": query = first 2100 rows, train = next 10500,
  retrieval = all but the queries); val (`num_val`, default 500) from retrieval items outside
  train. Items with no label are dropped before splitting; the count is in split_info.

  Returns:
    CrossModalData named "nuswide".
  """
  o = OPTIONS.check(options)
  tc = o.pop("tc")
  info = {"tc": tc, "options": OPTIONS.record(dict(o, tc=tc))}
  return load_lineage(data_dir, lineage(tc), split=split, seed=seed, info=info, **o)

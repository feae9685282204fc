"""MIRFlickr-25K in the DCMH version: 20015 image–tag pairs with 24 labels."""

from __future__ import annotations

from jxhash.data.core import CrossModalData
from jxhash.data.features import Lineage, lineage_options, load_lineage

MIRFLICKR = Lineage(
    name="mirflickr25k",
    prefixes=("mirflickr25k",),
    num_labels=24,
    download=("Get DCMH's FLICKR-25K.mat (github.com/jiangqy/DCMH-CVPR2017), or mirflickr25k-lall.mat and "
              "mirflickr25k-yall.mat with mirflickr25k-iall.mat (pixels) or mirflickr25k-iall-vgg.mat "
              "(VGG features) as released with DCMH-lineage code (e.g. DJSRH, UCCH), and put them in data_dir."),
    combined=(("FLICKR-25K.mat", {"labels": "LAll", "tags": "YAll", "pixels": "images"}),),
)


OPTIONS = lineage_options("mirflickr25k", num_query=2000, num_train=10000)


def load_mirflickr25k(data_dir, *, split: str = "random", seed: int = 0, **options) -> CrossModalData:
  """MIRFlickr-25K (DCMH's 20015 items with at least 20 tag occurrences), 1386-d tags, 24 labels.

  Files read from `data_dir`:
    - labels: mirflickr25k-lall.mat (LAll, 20015×24), else LAll of FLICKR-25K.mat;
    - text: mirflickr25k-yall.mat (YAll, 20015×1386 binary tags), else YAll of FLICKR-25K.mat;
    - image, by `image`: "auto" takes `image_features` if given (any .npy/.npz/.mat/.h5 with
      one feature row per item; "path:key" or `image_key` picks the array), else
      mirflickr25k-iall-vgg.mat (XAll, 20015×4096), else pixels from mirflickr25k-iall.mat
      (IAll) or FLICKR-25K.mat (images), MATLAB v7.3 stacks read as 20015×224×224×3 uint8.
      "features" / "pixels" restrict to that kind. "tags" uses the tag matrix as the image
      view too: a stand-in for tests and plumbing when no image side is at hand, not the
      benchmark. With no image source a DataError says what to download.
  Rows of all files are the same items in DCMH order. Where to get them: DCMH's FLICKR-25K.mat
  (github.com/jiangqy/DCMH-CVPR2017) or the -lall/-yall/-iall releases of DCMH-lineage code.

  Protocol: 2000 queries; the retrieval set is the other 18015; 10000 training items are drawn
  from the retrieval set. split="random": a permutation seeded by `seed`; split="dcmh":
  query = rows [0, 2000), train = [2000, 12000), retrieval = [2000, 20015). val (`num_val`,
  default 500) comes from the end of the retrieval items outside train. Items with no label
  are dropped first (none in the standard files), counted in split_info.

  stream_pixels=True leaves a pixel stack in its file and reads rows on demand (the trainer
  streams batches from it) instead of loading its 3 GB; the other loaders take it too.

  Returns:
    CrossModalData named "mirflickr25k".
  """
  o = OPTIONS.check(options)
  return load_lineage(data_dir, MIRFLICKR, split=split, seed=seed, info={"options": OPTIONS.record(o)}, **o)

"""What the TFDS writer (`tfds_writer`) and reader (`tfds_reader`) agree on, without importing tfds.

A build is a TensorFlow Datasets folder of ArrayRecord files holding every item of a dataset,
in the row order of the downloaded files, in one split named `SPLIT` ("items"; tfds reserves
"all" for "every split together", which here reads the same records). Per record:
  image   (D,) float32 features, or (H, W, 3) uint8 pixels (raw bytes), by builder config;
  text    (T,) float32;
  labels  (C,) uint8 multi-hot;
  index   int64, the row number in the downloaded files.
Its metadata.json carries `format: FORMAT`, the dataset name, the image kind, the source
files, the dtypes the dataset's loader returns, and (Wikipedia) the official training size.

`OPTIONS` is the "tfds" loader's option schema; it lives here so that `jxhash.data` can list
and check it without importing tensorflow_datasets.
"""

from __future__ import annotations

from jxhash.data.options import Option, Schema
from jxhash.errors import UserError

SPLIT = "items"
IMAGE_KINDS = ("features", "pixels")
# Marks a folder as written by the jxhash builders (metadata.json), and the layout it follows.
FORMAT = "jxhash-crossmodal-1"
# Records decoded (or image rows written) per batch: enough to amortise a call, small enough
# that a batch of 224×224 pixels stays around 40 MB.
CHUNK = 256
# The datasets that have a builder.
DATASETS = ("wikipedia", "mirflickr25k", "nuswide", "iapr")

OPTIONS = Schema("tfds", [
    Option("dataset", "str", None, "which build, as <dataset> or <dataset>/<config>, when data_dir holds several",
           optional=True),
    Option("num_query", "int", None, "query items; none: the dataset loader's default", low=1, optional=True),
    Option("num_train", "int", None, "training items; none: the dataset loader's default", low=1, optional=True),
    Option("num_val", "int", None, "validation items; none: the dataset loader's default", low=0, optional=True),
    Option("num_retrieval", "int", None, "cap on the retrieval set; none: the dataset loader's default", low=1,
           optional=True),
    Option("drop_unlabeled", "bool", True, "drop items with no label before splitting, as the loaders do"),
])


def import_tfds():
  """The tensorflow_datasets module, or a UserError saying how to install it."""
  try:
    import tensorflow_datasets
  except ImportError as e:  # the optional extra is not installed
    raise UserError(f'the TFDS builders and the "tfds" loader need tensorflow-datasets ({e}); install it with: '
                    'pip install "jxhash[tfds]"') from e
  return tensorflow_datasets


__all__ = ["CHUNK", "DATASETS", "FORMAT", "IMAGE_KINDS", "OPTIONS", "SPLIT", "import_tfds"]

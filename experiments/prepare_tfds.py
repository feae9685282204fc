"""Build a dataset's TFDS folder (ArrayRecord files, no TensorFlow) from the files you downloaded.

    python experiments/prepare_tfds.py --dataset wikipedia --manual-dir ../shared/data/wikipedia \
        --data-dir ~/tensorflow_datasets
    python experiments/run.py --dataset tfds --data-dir <the folder it printed> ...

--manual-dir is the folder the dataset's loader reads (what --data-dir is to run.py); the build
goes to <data-dir>/jxhash_<dataset>/<config>/1.0.0, printed on the last line. A folder already
built is reused; delete it to rebuild. Needs `pip install "jxhash[tfds]"`. User errors (missing
files, a bad option) print one line on stderr and exit with code 2. See docs/tfds.md.
"""

from __future__ import annotations

import pathlib
import sys
import time

from jxhash import cli

DATASETS = ("wikipedia", "mirflickr25k", "nuswide", "iapr")


def parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset to build")
  p.add_argument("--manual-dir", required=True, help="folder holding the downloaded files")
  p.add_argument("--data-dir", default="~/tensorflow_datasets", help="tfds data folder to build into "
                 "(default: ~/tensorflow_datasets)")
  p.add_argument("--image", default="auto", choices=("auto", "features", "pixels"),
                 help="image column: CNN features or pixels (auto: features if their file is there)")
  p.add_argument("--tc", type=int, default=None, choices=(21, 10), help="NUS-WIDE concept set (default 21)")
  return p


def build(args) -> pathlib.Path:
  from jxhash.data.tfds_writer import prepare

  start = time.perf_counter()
  directory = prepare(args.dataset, args.manual_dir, args.data_dir, image=args.image, tc=args.tc)
  print(f"ready in {time.perf_counter() - start:.1f} s; load it with --dataset tfds --data-dir {directory}",
        file=sys.stderr)
  print(directory)
  return directory


def main(argv=None) -> int:
  return cli.main(build, argv, parser())


if __name__ == "__main__":
  sys.exit(main())

"""Prepare a dataset's official downloads into a protocol folder (see jxhash/data/prepare/cli.py).

    python experiments/prepare.py mirflickr25k --raw ~/downloads/mirflickr --out data/mirflickr25k-dcmh
"""

import sys

from jxhash.data.prepare.cli import main

if __name__ == "__main__":
  sys.exit(main())

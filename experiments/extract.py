"""Feature extraction from images or texts with a pretrained encoder: `jxhash.extract`'s command.

    python experiments/extract.py --encoder resnet34 --weights resnet34-b627a593.pth \
        --images photos/ --out features.npz

See `python experiments/extract.py --help` and docs/encoders.md.
"""

import sys

from jxhash.extract import main

if __name__ == "__main__":
  sys.exit(main())

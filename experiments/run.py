"""`jxhash train` as a script: train and evaluate one method end to end (docs: `jxhash train --help`).

    python experiments/run.py --method=mmach
    python experiments/run.py --config configs/wikipedia/dcmh.py --config.method.lr=30
"""

import sys

from jxhash.commands.train import main

if __name__ == "__main__":
  sys.exit(main())

"""`jxhash baselines` as a script: LSH, CCA -> sign and ridge -> ITQ (`jxhash baselines --help`)."""

import sys

from jxhash.commands.baselines import main

if __name__ == "__main__":
  sys.exit(main())

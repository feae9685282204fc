"""`jxhash sweep` as a script: choose hyper-parameters on a val split (`jxhash sweep --help`)."""

import sys

from jxhash.commands.sweep import main

if __name__ == "__main__":
  sys.exit(main())

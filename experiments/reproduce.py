"""`jxhash reproduce` as a script: run a folder of config files and baselines (`jxhash reproduce --help`)."""

import sys

from jxhash.commands.reproduce import main

if __name__ == "__main__":
  sys.exit(main())

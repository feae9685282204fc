"""`python -m jxhash <command> ...`: the same as the `jxhash` command."""

import sys

from jxhash.commands import main

if __name__ == "__main__":
  sys.exit(main())

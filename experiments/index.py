"""`jxhash index` as a script: build, search and convert packed-code indexes (`jxhash index --help`)."""

import sys

from jxhash.commands.index import main

if __name__ == "__main__":
  sys.exit(main())

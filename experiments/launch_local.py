"""`jxhash launch` as a script: start one multi-process run as N local processes (`jxhash launch --help`)."""

import sys

from jxhash.commands.launch import main

if __name__ == "__main__":
  sys.exit(main())

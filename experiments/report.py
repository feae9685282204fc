"""`jxhash report` as a script: results files -> markdown table and figures (`jxhash report --help`)."""

import sys

from jxhash.commands.report import main

if __name__ == "__main__":
  sys.exit(main())

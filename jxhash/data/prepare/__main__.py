"""`python -m jxhash.data.prepare ...`: see `jxhash.data.prepare.cli`."""

import sys

from jxhash.data.prepare.cli import main

sys.exit(main())

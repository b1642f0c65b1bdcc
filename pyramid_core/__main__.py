"""`python -m pyramid_core ...`: the same command line as the `pyramid` console script (cli/)."""

import sys

from .cli import main

sys.exit(main(prog="python -m pyramid_core"))

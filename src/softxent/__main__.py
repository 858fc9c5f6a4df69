"""``python -m softxent``: the command line (see :mod:`softxent.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

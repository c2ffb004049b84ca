"""``python -m torchwire``: the ``torchwire`` command line (:mod:`torchwire.cli`)."""

import sys

from torchwire.cli import main

if __name__ == "__main__":
    sys.exit(main())

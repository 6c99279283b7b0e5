"""``python -m s2d`` runs the same CLI as the ``s2d`` console script."""

import sys

from s2d.cli import main

if __name__ == "__main__":
    sys.exit(main())

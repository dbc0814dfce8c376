"""``python -m ramodel``: the ``ramodel`` command line; with no command, ``simulate``.

``python -m ramodel`` alone solves one model (depth 8, 3 classes) and prints its summary:
convergence, the top singular values per layer, the rank, and whether T1-T3 hold.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(default_command="simulate"))

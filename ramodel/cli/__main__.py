"""``python -m ramodel.cli``: the ``ramodel`` command line."""

import sys

from . import main

sys.exit(main())

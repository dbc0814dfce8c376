"""``python -m proofs``: run every proof (see :mod:`proofs.run_all`)."""

import sys

from .run_all import main

sys.exit(main())

"""The chance baseline: Haar-random rotations of the Jacobians' singular vectors (METRICS.md)."""

from __future__ import annotations

from .._random import haar

#: Factor sets up to this width are rotated by full Haar matrices per layer (shared by
#: every input, as for dense sets); wider ones by independent Haar frames per input.
_SHARED_ROTATION_MAX_WIDTH = 512


_haar = haar  # one Haar sampler: ramodel._random.haar


#: Upper bound of ``chance_draws`` (see :func:`check`).
MAX_CHANCE_DRAWS = 10_000

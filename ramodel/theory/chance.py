"""The chance baseline: Haar-random rotations of the Jacobians' singular vectors (METRICS.md)."""

from __future__ import annotations

import numpy as np

#: Factor sets up to this width are rotated by full Haar matrices per layer (shared by
#: every input, as for dense sets); wider ones by independent Haar frames per input.
_SHARED_ROTATION_MAX_WIDTH = 512


def _haar(rng, batch, d, k=None):
    """Haar-distributed ``(d, k)`` frames (``k = d``: orthogonal matrices), shape ``batch + (d, k)``."""
    G = rng.standard_normal(tuple(batch) + (d, d if k is None else k))
    Q, R = np.linalg.qr(G)
    # Without the sign fix LAPACK's convention for R biases Q away from Haar.
    s = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
    s = np.where(s == 0, 1.0, s)
    return Q * s[..., None, :]


#: Upper bound of ``chance_draws`` (see :func:`check`).
MAX_CHANCE_DRAWS = 10_000

"""Random matrices shared by the skip families and the chance baseline."""

from __future__ import annotations

import numpy as np

__all__ = ["haar"]


def haar(rng: np.random.Generator, batch: tuple[int, ...], d: int, k: int | None = None) -> np.ndarray:
    """Haar-distributed ``(d, k)`` orthonormal frames (``k = d``: orthogonal matrices).

    Parameters
    ----------
    rng : numpy.random.Generator
    batch : tuple of int
        Leading shape.
    d, k : int
        Frame shape; ``k`` defaults to ``d``.

    Returns
    -------
    ndarray, shape ``batch + (d, k)``
        QR of a Gaussian matrix with the signs of ``diag(R)`` moved into ``Q``: without that
        fix LAPACK's sign convention for R biases Q away from Haar (e.g. ``Q[0, 0] < 0``).

    Examples
    --------
    >>> Q = haar(np.random.default_rng(0), (2,), 3)
    >>> Q.shape, bool(np.allclose(Q @ np.swapaxes(Q, -1, -2), np.eye(3)))
    ((2, 3, 3), True)
    """
    G = rng.standard_normal(tuple(batch) + (d, d if k is None else k))
    Q, R = np.linalg.qr(G)
    s = np.sign(np.diagonal(R, axis1=-2, axis2=-1))
    s = np.where(s == 0, 1.0, s)
    return Q * s[..., None, :]

"""Data sets: the seeded Gaussian mixture of the model, and offline real data.

All loaders are deterministic for a given seed and never touch the network.
Feature arrays are ``(N, d)``: one row per sample.
"""

from __future__ import annotations

import numpy as np

from ._validation import as_generator, check_int, check_positive_float

__all__ = ["gaussian_mixture"]


def gaussian_mixture(
    classes: int,
    *,
    width: int,
    samples_per_class: int,
    mean_scale: float = 1.0,
    noise: float = 0.1,
    seed=0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the Gaussian mixture that the Unconstrained Jacobians Model is fitted to.

    Class means are ``mu_c ~ N(0, mean_scale**2 / width * I)`` (so ``|mu_c| ~ mean_scale``)
    and each sample is ``mu_c + eps`` with ``eps ~ N(0, noise**2 / width * I)``
    (so the within-class spread has norm about ``noise`` whatever the width).

    Parameters
    ----------
    classes : int
        Number of classes C, >= 2.
    width : int
        Dimension d of each sample, >= 1.
    samples_per_class : int
        Points per class, >= 1. ``N = classes * samples_per_class``.
    mean_scale : float, default 1.0
        Typical norm of a class mean; sets the signal strength.
    noise : float, default 0.1
        Typical norm of the within-class deviation (0 gives collapsed classes).
    seed : int, SeedSequence or numpy.random.Generator, default 0

    Returns
    -------
    X : ndarray, shape (N, width), float64
        Samples, grouped by class (class 0 first).
    y : ndarray, shape (N,), int64
        Labels in ``[0, classes)``.

    Examples
    --------
    >>> X, y = gaussian_mixture(3, width=5, samples_per_class=4, seed=0)
    >>> X.shape, y.tolist()[:5]
    ((12, 5), [0, 0, 0, 0, 1])
    """
    classes = check_int("classes", classes, minimum=2)
    width = check_int("width", width, minimum=1)
    samples_per_class = check_int("samples_per_class", samples_per_class, minimum=1)
    mean_scale = check_positive_float("mean_scale", mean_scale)
    noise = check_positive_float("noise", noise, allow_zero=True)
    rng = as_generator(seed)
    means = rng.standard_normal((classes, width)) * (mean_scale / np.sqrt(width))
    y = np.repeat(np.arange(classes, dtype=np.int64), samples_per_class)
    X = means[y] + rng.standard_normal((y.size, width)) * (noise / np.sqrt(width))
    return X, y

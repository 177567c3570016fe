"""Kernel Inception Distance (Bińkowski et al. 2018, https://arxiv.org/abs/1801.01401).

The unbiased estimate of the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3, averaged over random subsets (as in stylegan2-ada's
``kernel_inception_distance.py``); unlike FID it has no bias from the sample size, so
small sets compare fairly. Its expected value for two samples of one distribution is 0.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

KERNEL_ENTRIES_MAX = 125_000_000  # up to ~1 GB of float64 kernel matrices are computed once


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _mmd2_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m = kxx.shape[0]
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between equally sized samples x, y (m, d), cubic polynomial kernel."""
    m, d = x.shape
    if y.shape != (m, d) or m < 2:
        raise DataError(f"need two (m, d) samples with m >= 2, got {x.shape} and {y.shape}")
    return _mmd2_from_kernels(_poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y))  # (m, m) each


def kid(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``num_subsets`` random subsets of both sets.

    When the sets are small enough the three kernel matrices are computed once and each
    subset reads its blocks (the same numbers, about 5x less arithmetic at n = 5000).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    nr, nf = real.shape[0], fake.shape[0]
    m = min(nr, nf, max_subset_size)
    if m < 2:
        raise DataError(f"KID needs at least 2 images per set, got {nr} and {nf}")
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(nf, m, replace=False), rng.choice(nr, m, replace=False)) for _ in range(num_subsets)]
    t = np.empty(num_subsets)
    if nr * nr + nf * nf + nr * nf <= KERNEL_ENTRIES_MAX:
        kff, krr, kfr = _poly_kernel(fake, fake), _poly_kernel(real, real), _poly_kernel(fake, real)
        for i, (fi, ri) in enumerate(draws):
            t[i] = _mmd2_from_kernels(kff[np.ix_(fi, fi)], krr[np.ix_(ri, ri)], kfr[np.ix_(fi, ri)])
    else:
        for i, (fi, ri) in enumerate(draws):
            t[i] = mmd2_unbiased(fake[fi], real[ri])
    return float(t.mean()), float(t.std())

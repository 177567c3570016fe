"""Fréchet Inception Distance (Heusel et al. 2017, https://arxiv.org/abs/1706.08500).

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the matrix square
root is computed from symmetric eigendecompositions, tr((S1 S2)^(1/2)) =
tr((A S2 A)^(1/2)) with A = S1^(1/2), which stays real and copes with the singular
covariances of fewer samples than feature dimensions (eigenvalues below zero by rounding
are clipped to zero). ``fid_from_features`` takes a cheaper exact route for small sets.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"need at least 2 feature rows (N, D), got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for covariance matrices S1, S2."""
    a = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    m = a @ np.asarray(sigma2, dtype=np.float64) @ a  # symmetric PSD, same eigenvalues as S1 S2
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DataError(f"shape mismatch: mu {mu1.shape} {mu2.shape}, sigma {s1.shape} {s2.shape}")
    diff = mu1 - mu2
    d = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2 * trace_sqrt_product(s1, s2)
    return max(d, 0.0)  # rounding can leave -1e-12 for identical inputs


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between two feature sets (N, D).

    With fewer images than dimensions the covariances have low rank, and the trace term is
    the nuclear norm of the small cross-product instead: with centred X1, X2,
    tr((S1 S2)^(1/2)) = ||X1 X2^T||_* / sqrt((n1 - 1)(n2 - 1)). Same value, far cheaper.
    """
    x1 = np.asarray(real, dtype=np.float64)
    x2 = np.asarray(fake, dtype=np.float64)
    n1, n2, d = x1.shape[0], x2.shape[0], x1.shape[1]
    if n1 * n2 >= d * d:
        return frechet_distance(*feature_stats(x1), *feature_stats(x2))
    if min(n1, n2) < 2 or x2.shape[1] != d:
        raise DataError(f"need (N, D) features with N >= 2 and one D, got {x1.shape} and {x2.shape}")
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2  # (n1, D), (n2, D)
    tr1 = float((c1 * c1).sum()) / (n1 - 1)
    tr2 = float((c2 * c2).sum()) / (n2 - 1)
    nuclear = float(np.linalg.svd(c1 @ c2.T, compute_uv=False).sum())  # (n1, n2) -> singular values
    diff = mu1 - mu2
    return max(float(diff @ diff) + tr1 + tr2 - 2 * nuclear / float(np.sqrt((n1 - 1) * (n2 - 1))), 0.0)

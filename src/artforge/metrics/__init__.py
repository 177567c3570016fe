"""Metrics on Inception features of real and generated images.

``METRICS`` maps a name to a function ``(real_feats, fake_feats, seed) -> dict[str, float]``;
``evaluate`` runs them. Features come from ``inception.features`` (the standard TF-Inception
FID network; ``cache.cached_features`` keeps them on disk). Nothing here imports the network
or touches the disk until called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from .density_coverage import density_coverage
from .fid import fid_from_features, frechet_distance
from .kid import kid
from .novelty import copy_rate, copy_threshold, diversity
from .precision_recall import precision_recall

Features = np.ndarray  # (N, 2048) float64
PR_K = 3  # neighbours that set each manifold ball's radius (Kynkäänniemi et al.)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def _fid(real: Features, fake: Features, seed: int) -> dict[str, float]:
    return {"fid": fid_from_features(real, fake)}


def _kid(real: Features, fake: Features, seed: int) -> dict[str, float]:
    mean, std = kid(real, fake, num_subsets=KID_SUBSETS, max_subset_size=KID_SUBSET_SIZE, seed=seed)
    return {"kid": mean, "kid_std": std}


def _precision_recall(real: Features, fake: Features, seed: int) -> dict[str, float]:
    p, r = precision_recall(real, fake, k=PR_K)
    return {"precision": p, "recall": r}


def _density_coverage(real: Features, fake: Features, seed: int) -> dict[str, float]:
    density, coverage = density_coverage(real, fake, k=PR_K)
    return {"density": density, "coverage": coverage}


def _diversity(real: Features, fake: Features, seed: int) -> dict[str, float]:
    return {"diversity": diversity(real, fake, seed)}


def _novelty(real: Features, fake: Features, seed: int) -> dict[str, float]:
    tau = copy_threshold(real)
    return {"copy_rate": copy_rate(fake, real, tau), "copy_threshold": tau}


METRICS: dict[str, Callable[[Features, Features, int], dict[str, float]]] = {
    "fid": _fid,
    "kid": _kid,
    "precision_recall": _precision_recall,
    "density_coverage": _density_coverage,
    "diversity": _diversity,
    "novelty": _novelty,
}


def evaluate(
    real_feats: Features, fake_feats: Features, metrics: Sequence[str] | None = None, seed: int = 0
) -> dict[str, float]:
    """Run ``metrics`` (default: all of METRICS) on real (training) and generated features.

    Keys: fid, kid, kid_std, precision, recall, density, coverage, diversity, copy_rate, copy_threshold,
    n_real, n_fake.
    """
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r}; choose from {sorted(METRICS)}")
    real = np.asarray(real_feats, dtype=np.float64)
    fake = np.asarray(fake_feats, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise DataError(f"features must be (N, D) with one D, got {real.shape} and {fake.shape}")
    if min(real.shape[0], fake.shape[0]) <= PR_K:
        raise DataError(
            f"need at least {PR_K + 1} images on each side, "
            f"got {real.shape[0]} real and {fake.shape[0]} generated"
        )
    out: dict[str, float] = {}
    for name in names:
        out.update(METRICS[name](real, fake, seed))
    out["n_real"] = real.shape[0]
    out["n_fake"] = fake.shape[0]
    return out


__all__ = [
    "METRICS",
    "copy_rate",
    "density_coverage",
    "diversity",
    "evaluate",
    "frechet_distance",
    "kid",
    "precision_recall",
]

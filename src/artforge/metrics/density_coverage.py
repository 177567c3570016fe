"""Density and coverage (Naeem et al. 2020, https://arxiv.org/abs/2002.09797).

Like precision and recall (precision_recall.py) they use balls around the *real* features with
the radius of each one's distance to its k-th nearest other real feature (k = 3), but only the
real ones: a generated outlier does not widen any ball, and a real outlier's wide ball counts
once, not as a whole region.

- density: the mean, over generated images, of how many real balls hold it, divided by k.
  About 1 when the generated images come from the real distribution; below 1 when they sit
  where real images are sparse, above 1 when they crowd where real images are dense.
- coverage: the share of real images whose ball holds at least one generated image: how much
  of the collection the model makes something near. 1 for a generator as varied as the data.

``farthest_real`` lists the real images farthest from every generated image: the ones the
model has not learned to make (the "not made" sheet, novelty.not_made_sheet).
"""

from __future__ import annotations

import numpy as np

from .precision_recall import distance_chunks, knn_radii, nearest_neighbours


def density_coverage(
    real: np.ndarray, fake: np.ndarray, k: int = 3, radii: np.ndarray | None = None
) -> tuple[float, float]:
    """(density, coverage) of fake against real features (N, D); ``radii`` (N,) are the real
    features' k-NN radii when already computed (``knn_radii(real, k)``)."""
    r = knn_radii(real, k) if radii is None else radii  # (N,)
    held = 0
    for _, d in distance_chunks(fake, real):  # (c, N)
        held += int((d <= r[None, :]).sum())
    density = held / (k * fake.shape[0])
    coverage = float(covered(real, fake, k, r).mean())
    return density, coverage


def covered(real: np.ndarray, fake: np.ndarray, k: int = 3, radii: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: which real features have a generated feature within their k-NN radius (the
    real images coverage counts; their mean over a group is that group's coverage)."""
    r = knn_radii(real, k) if radii is None else radii
    nearest_fake, _ = nearest_neighbours(real, fake, 1)  # (N, 1)
    return nearest_fake[:, 0] <= r


def farthest_real(
    real: np.ndarray, fake: np.ndarray, n: int, k: int = 3, radii: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``n`` real features farthest from their nearest generated feature, farthest first:
    (indices (n,), distances (n,), distance / the real feature's k-NN radius (n,): above 1 it
    is not covered by ``density_coverage``'s rule). ``radii`` as for ``density_coverage``."""
    dist, _ = nearest_neighbours(real, fake, 1)  # (N, 1)
    d = dist[:, 0]
    order = np.argsort(-d, kind="stable")[: min(n, len(d))]
    r = knn_radii(real, k) if radii is None else radii
    ratio = np.divide(d[order], r[order], out=np.full(len(order), np.inf), where=r[order] > 0)
    return order, d[order], ratio

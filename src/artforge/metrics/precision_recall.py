"""Improved precision and recall (Kynkäänniemi et al. 2019, https://arxiv.org/abs/1904.06991).

Each set's manifold is the union of balls around its points, each with the radius of the
distance to its k-th nearest neighbour in the same set (k = 3). Precision is the share of
generated images inside the real manifold (fidelity); recall is the share of real images
inside the generated manifold (coverage). Here on the Inception pool3 features.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import DataError

CHUNK = 1024  # rows of a distance matrix held at once: memory stays O(CHUNK * N)


def distance_chunks(a: np.ndarray, b: np.ndarray, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """(row offset, Euclidean distances (c, len(b))) for row chunks of a, in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    bb = (b * b).sum(1)  # (Nb,)
    for i in range(0, a.shape[0], chunk):
        x = a[i : i + chunk]  # (c, D)
        d2 = (x * x).sum(1)[:, None] + bb[None, :] - 2 * (x @ b.T)  # (c, Nb)
        yield i, np.sqrt(np.clip(d2, 0, None))


def nearest_neighbours(
    queries: np.ndarray, refs: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (Nq, k) of each query's k nearest refs, nearest first.

    With ``exclude_self`` the queries are the refs themselves and no point is its own
    neighbour (leave-one-out).
    """
    n_ref = refs.shape[0] - (1 if exclude_self else 0)
    if n_ref < k:
        raise DataError(f"{k} nearest neighbours need at least {k} reference images, have {n_ref}")
    dist = np.empty((queries.shape[0], k))
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for i, d in distance_chunks(queries, refs):
        rows = np.arange(d.shape[0])
        if exclude_self:
            d[rows, i + rows] = np.inf
        part = np.argpartition(d, k - 1, axis=1)[:, :k]  # (c, k), unordered
        pd = d[rows[:, None], part]
        order = np.argsort(pd, axis=1)
        idx[i : i + d.shape[0]] = np.take_along_axis(part, order, axis=1)
        dist[i : i + d.shape[0]] = np.take_along_axis(pd, order, axis=1)
    return dist, idx


def knn_radii(feats: np.ndarray, k: int = 3) -> np.ndarray:
    """Distance from each point to its k-th nearest other point of the same set, (N,)."""
    return nearest_neighbours(feats, feats, k, exclude_self=True)[0][:, k - 1]


def coverage_share(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> float:
    """Share of ``points`` that lie within ``radii[j]`` of some centre j."""
    inside = np.zeros(points.shape[0], dtype=bool)
    for i, d in distance_chunks(points, centres):
        inside[i : i + d.shape[0]] = (d <= radii[None, :]).any(axis=1)
    return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of fake against real features."""
    precision = coverage_share(fake, real, knn_radii(real, k))
    recall = coverage_share(real, fake, knn_radii(fake, k))
    return precision, recall

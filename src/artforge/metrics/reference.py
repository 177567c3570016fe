"""The real images generated ones are measured against, as the metrics see them.

A ``Reference`` holds the real images' Inception features (from the disk cache when these
pixels were seen before), their copy threshold and the nearest-neighbour search over them,
and computes generated images' features with the same network, device and batch size.
``artforge eval``, the training monitor and the studio's novelty view each build one, so
the three measure alike.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import PR_K, inception
from . import evaluate as evaluate_features
from .cache import cached_features
from .density_coverage import covered, density_coverage, farthest_real
from .novelty import copy_rate, copy_threshold, diversity
from .precision_recall import knn_radii, nearest_neighbours

# Images per forward pass of the network: 50 on the CPU, what every artforge number so far
# used (there the features are bit-identical at any batch size: checked at 20, 50 and 60);
# 200 on a GPU, a few GiB of activations at 299 x 299, where cuDNN may choose other kernels
# per batch size (differences in the last bits; not measured, no GPU was at hand).
BATCH_SIZE = {"cpu": 50, "cuda": 200}


def batch_size_for(device: str | torch.device) -> int:
    return BATCH_SIZE.get(torch.device(device).type, BATCH_SIZE["cpu"])


class Reference:
    """Real images (uint8 (N, 3, H, W)) and their features, for comparing generated images.

    ``limit`` keeps a fixed random subset of at most that many images (the same one every
    time: the monitor's cost does not grow with the data). ``inception`` is the network
    file (None: found as ``inception.find_inception`` finds it); ``batch_size`` None picks
    one for the device (``batch_size_for``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        device: str | torch.device = "cpu",
        *,
        batch_size: int | None = None,
        inception: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        progress: bool = False,
        desc: str = "features: real",
    ):
        if limit is not None and len(images) > limit:
            pick = np.sort(np.random.default_rng(0).choice(len(images), limit, replace=False))
            images = images[torch.from_numpy(pick)]
        self.images = images
        self.device = torch.device(device)
        self.batch_size = batch_size if batch_size is not None else batch_size_for(self.device)
        self.inception = inception
        self.features = self._features(images, cache=True, progress=progress, desc=desc)  # (N, 2048)
        self._threshold: float | None = None
        self._radii: np.ndarray | None = None  # (N,) k-NN radii, for density and coverage

    def __len__(self) -> int:
        return len(self.images)

    def _features(self, images: Any, *, cache: bool, progress: bool, desc: str) -> np.ndarray:
        if cache:
            kw = {"inception_path": self.inception, "device": self.device, "desc": desc}
            return cached_features(images, self.batch_size, progress, **kw)
        kw = {"inception": self.inception, "device": self.device, "desc": desc}
        return inception.features(images, self.batch_size, progress, **kw)

    def features_of(
        self, images: Any, *, cache: bool = False, progress: bool = False, desc: str = "features: generated"
    ) -> np.ndarray:
        """Features (n, 2048) of generated images (uint8 (n, 3, H, W) or floats in [0, 1]);
        ``cache`` keeps them on disk (files of images that are read again)."""
        return self._features(images, cache=cache, progress=progress, desc=desc)

    @property
    def threshold(self) -> float:
        """The copy threshold: the median leave-one-out nearest-neighbour distance among the
        real images (novelty.py), computed once."""
        if self._threshold is None:
            self._threshold = copy_threshold(self.features)
        return self._threshold

    def metrics(self, fake: np.ndarray, seed: int = 0) -> dict[str, Any]:
        """Every metric of ``metrics.METRICS`` of generated features against these."""
        result: dict[str, Any] = evaluate_features(self.features, fake, seed=seed)
        self._threshold = result["copy_threshold"]
        return result

    def nearest(self, fake: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices (n, k) of each generated image's k nearest real images
        (at most as many as there are), nearest first."""
        return nearest_neighbours(fake, self.features, min(k, len(self)))

    def not_made(self, fake: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n`` real images farthest from every generated image, farthest first: (indices,
        distances, distance / the real image's k-NN radius), as ``farthest_real`` gives them."""
        return farthest_real(self.features, fake, n, k=PR_K, radii=self.radii)

    @property
    def radii(self) -> np.ndarray:
        """(N,) each real image's distance to its PR_K-th nearest other one, computed once."""
        if self._radii is None:
            self._radii = knn_radii(self.features, PR_K)
        return self._radii

    def density_coverage(self, fake: np.ndarray) -> tuple[float, float]:
        """(density, coverage) of generated features against these (density_coverage.py)."""
        return density_coverage(self.features, fake, PR_K, radii=self.radii)

    def covered(self, fake: np.ndarray) -> np.ndarray:
        """(N,) bool: the real images with a generated image within their k-NN radius."""
        return covered(self.features, fake, PR_K, radii=self.radii)

    def copy_rate(self, fake: np.ndarray) -> float:
        return copy_rate(fake, self.features, self.threshold)

    def diversity(self, fake: np.ndarray) -> float:
        return diversity(self.features, fake)

"""Diversity and novelty of generated images, measured against the training set.

- diversity: the mean pairwise feature distance among generated images divided by that
  among real ones. 1 means as varied as the data; mode collapse shows as a drop.
- copy rate: the share of generated images closer to their nearest training image than
  training images typically are to each other. The threshold tau is the median, over the
  training images, of each one's distance to its nearest *other* training image
  (leave-one-out). Fresh images from the data's own distribution (held-out real images) then
  score about 0.5 and the training images themselves 1.0; a generator above 0.5 makes images
  nearer to particular training images than new data would be: it is copying.
- the novelty sheet: generated images beside their 3 nearest training images (PNG).
- the not-made sheet: the real images farthest from every generated image, beside their 3
  nearest generated images (PNG): what the model has not learned to make.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError
from ..io import replacing
from .precision_recall import distance_chunks, nearest_neighbours

MAX_DIVERSITY_SAMPLES = 2000  # mean pairwise distances on at most this many images per set


def mean_pairwise_distance(feats: np.ndarray, max_n: int = MAX_DIVERSITY_SAMPLES, seed: int = 0) -> float:
    """Mean Euclidean distance over distinct pairs (on a seeded subset of at most ``max_n``)."""
    n = feats.shape[0]
    if n < 2:
        raise DataError(f"diversity needs at least 2 images, got {n}")
    if n > max_n:
        feats = feats[np.sort(np.random.default_rng(seed).choice(n, max_n, replace=False))]
        n = max_n
    total = 0.0
    for i, d in distance_chunks(feats, feats):
        rows = np.arange(d.shape[0])
        d[rows, i + rows] = 0.0  # exactly, not the rounding of |x|^2 + |x|^2 - 2 x.x
        total += float(d.sum())
    return total / (n * (n - 1))


def diversity(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> float:
    """Mean pairwise feature distance of fakes divided by that of reals."""
    return mean_pairwise_distance(fake, seed=seed) / mean_pairwise_distance(real, seed=seed)


def copy_threshold(train: np.ndarray) -> float:
    """Median leave-one-out nearest-neighbour distance within the training set."""
    d, _ = nearest_neighbours(train, train, 1, exclude_self=True)
    return float(np.median(d[:, 0]))


def copy_rate(fake: np.ndarray, train: np.ndarray, threshold: float | None = None) -> float:
    """Share of fakes whose nearest training image is closer than ``threshold`` (default
    ``copy_threshold(train)``). About 0.5 for held-out real images, 1.0 for training images."""
    tau = copy_threshold(train) if threshold is None else threshold
    d, _ = nearest_neighbours(fake, train, 1)
    return float((d[:, 0] < tau).mean())


# -- the sheet -----------------------------------------------------------------------------


def _to_hwc(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """uint8 (3, H, W) -> (H, W, 3)."""
    return np.asarray(img, dtype=np.uint8).transpose(1, 2, 0)


def novelty_sheet(
    fake: torch.Tensor | np.ndarray,
    train: torch.Tensor | np.ndarray,
    nn_idx: np.ndarray,
    nn_dist: np.ndarray,
    threshold: float,
    path: str | os.PathLike[str],
    rows: int = 16,
) -> Path:
    """Write a PNG: the ``rows`` generated images nearest to a training image (most copy-like
    first), each followed by its nearest training images. uint8 (N, 3, H, W) images; a red
    frame marks a copy (nearest distance below ``threshold``); the label is distance / threshold.
    """
    order = np.argsort(nn_dist[:, 0])[:rows]
    labels = [f"{nn_dist[i, 0] / threshold:.2f}" if threshold > 0 else "inf" for i in order]
    red = [bool(nn_dist[i, 0] < threshold) for i in order]
    return _neighbour_sheet(np.asarray(fake), np.asarray(train), order, nn_idx, labels, red, path)


def not_made_sheet(
    real: torch.Tensor | np.ndarray,
    fake: torch.Tensor | np.ndarray,
    order: np.ndarray,
    ratio: np.ndarray,
    nn_idx: np.ndarray,
    path: str | os.PathLike[str],
) -> Path:
    """Write a PNG: the real images ``order`` (farthest from every generated image first, as
    ``density_coverage.farthest_real`` lists them), each followed by its nearest generated
    images (``nn_idx`` (len(order), k) indices into ``fake``). The label is the distance over
    the real image's own k-NN radius; a red frame (above 1) marks one coverage counts as not made.
    """
    rows = np.arange(len(order))
    labels = [f"{r:.2f}" for r in ratio]
    red = [bool(r > 1) for r in ratio]
    real_np = np.asarray(real)[np.asarray(order)]
    return _neighbour_sheet(real_np, np.asarray(fake), rows, nn_idx, labels, red, path)


def _neighbour_sheet(
    query: np.ndarray,
    refs: np.ndarray,
    order: np.ndarray,
    nn_idx: np.ndarray,
    labels: list[str],
    red: list[bool],
    path: str | os.PathLike[str],
) -> Path:
    """One row per ``order[r]``: its label, the query image (framed red where ``red[r]``), then
    its neighbours ``refs[nn_idx[order[r]]]``; uint8 (N, 3, H, W) images."""
    k = nn_idx.shape[1]
    h, w = query.shape[2], query.shape[3]
    scale = max(1, math.ceil(64 / max(h, w)))  # small images are enlarged (nearest) to see them
    ch, cw = h * scale, w * scale
    pad, gap, label_w = 4, 12, 44
    width = label_w + pad + (k + 1) * (cw + pad) + gap
    height = pad + len(order) * (ch + pad)
    sheet = Image.new("RGB", (width, max(height, 1)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()

    def paste(arr: np.ndarray, x: int, y: int) -> None:
        tile = Image.fromarray(_to_hwc(arr)).resize((cw, ch), Image.Resampling.NEAREST)
        sheet.paste(tile, (x, y))

    for r, i in enumerate(order):
        y = pad + r * (ch + pad)
        draw.text((2, y + ch // 2 - 5), labels[r], fill=(0, 0, 0), font=font)
        x = label_w + pad
        frame = (220, 30, 30) if red[r] else (200, 200, 200)
        draw.rectangle((x - 2, y - 2, x + cw + 1, y + ch + 1), outline=frame, width=2)
        paste(query[i], x, y)
        for j in range(k):
            paste(refs[nn_idx[i, j]], label_w + pad + (j + 1) * (cw + pad) + gap, y)
    path = Path(path)
    with replacing(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path

"""Inception features cached on disk by a content hash of the images.

The key is a sha256 of the uint8 pixels, their shape, the network's sha1 and the
preprocessing version, so the same images give the same file whatever their folder or
name, and a changed image (or network) never reuses stale features. Files live in
$XDG_CACHE_HOME/artforge/features (default ~/.cache/artforge/features) as float32 .npy
(exactly what the network returned) and are written through a temporary name.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..io import replacing
from . import inception
from .inception import FEATURE_DIM, INCEPTION_SHA1, PREPROCESS_VERSION, to_uint8_nchw

log = logging.getLogger(__name__)

HASH_CHUNK = 256  # images hashed per update (keeps copies of memory-mapped data small)


def features_dir() -> Path:
    return inception.cache_dir() / "features"


def content_key(images: torch.Tensor | np.ndarray) -> str:
    """sha256 (32 hex digits) of the uint8 images (N, 3, H, W), the network and preprocessing."""
    x = to_uint8_nchw(images)
    h = hashlib.sha256(f"{PREPROCESS_VERSION}|{INCEPTION_SHA1}|{tuple(x.shape)}|".encode())
    for i in range(0, x.shape[0], HASH_CHUNK):
        h.update(np.ascontiguousarray(x[i : i + HASH_CHUNK].numpy()).data)
    return h.hexdigest()[:32]


def cached_features(
    images: torch.Tensor | np.ndarray,
    batch_size: int = 50,
    progress: bool = False,
    *,
    inception_path: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    desc: str = "Inception features",
) -> np.ndarray:
    """``inception.features`` of the images, from the disk cache when these pixels were seen."""
    x = to_uint8_nchw(images)
    folder = Path(cache_dir) if cache_dir is not None else features_dir()
    path = folder / f"{content_key(x)}.npy"
    try:
        hit = np.load(path)
        if hit.shape == (x.shape[0], FEATURE_DIM):
            log.info("reusing cached Inception features %s", path)
            return hit.astype(np.float64)
        log.warning("ignoring cached features %s of shape %s", path, hit.shape)
    except (OSError, ValueError):  # missing or unreadable: compute
        pass
    feats = inception.features(x, batch_size, progress, inception=inception_path, device=device, desc=desc)
    try:
        with replacing(path) as tmp:
            np.save(tmp, feats.astype(np.float32))  # lossless: the network computes in float32
    except OSError as e:  # a read-only cache only costs time
        log.warning("could not write the feature cache in %s: %s", folder, e)
    return feats

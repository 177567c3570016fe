"""Shared fixtures: tiny synthetic image data written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

_COLOURS = [(230, 57, 70), (29, 53, 87), (69, 123, 157), (241, 196, 15), (42, 157, 143), (244, 162, 97)]
_SIZES = [(16, 16), (24, 16), (16, 24), (20, 20)]  # (width, height): mixed sizes and aspect ratios


def write_tiny_images(folder: Path, n: int = 16, seed: int = 0) -> list[Path]:
    """Write ``n`` small PNGs of a coloured disc or square on a flat background; return the paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = _SIZES[i % len(_SIZES)]
        bg, fg = rng.choice(len(_COLOURS), size=2, replace=False)
        img = Image.new("RGB", (w, h), _COLOURS[bg])
        draw = ImageDraw.Draw(img)
        box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
        if i % 2:
            draw.ellipse(box, fill=_COLOURS[fg])
        else:
            draw.rectangle(box, fill=_COLOURS[fg])
        path = folder / f"img_{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """A folder of 16 synthetic coloured-shape PNGs (16-24 px, mixed sizes)."""
    folder = tmp_path / "tiny"
    write_tiny_images(folder)
    return folder


@pytest.fixture(scope="session")
def network() -> Path:
    """The installed FID Inception network file; tests that need it skip when it is missing."""
    from artforge.metrics import inception

    try:
        return Path(inception.find_inception(allow_download=False))
    except FileNotFoundError:
        pytest.skip(f"the FID Inception network is not installed: {inception.INSTALL_HINT}")


# the studio's shared session fixtures: real runs, the real server, a real browser
from studio_support import browser, page, runs_dir, server  # noqa: E402, F401

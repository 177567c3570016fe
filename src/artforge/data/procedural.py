"""Built-in procedural abstract-art sets: bold shapes and colour stripes.

Image ``i`` of a set depends only on (name, i, height, width): its geometry is drawn in
relative units from a generator seeded by (name, i), rendered at 4x and downsampled with
LANCZOS for antialiasing. The shapes are large and the palettes few, so a small model
trained for minutes at 32x32 already makes recognisable pictures.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError
from .folder import Spec

SUPERSAMPLE = 4
VERSION = 1  # bump when the pictures change, so disk caches are rebuilt

# Five harmonious palettes; every colour contrasts with most of its neighbours.
PALETTES: list[list[tuple[int, int, int]]] = [
    [(0x26, 0x46, 0x53), (0x2A, 0x9D, 0x8F), (0xE9, 0xC4, 0x6A), (0xF4, 0xA2, 0x61), (0xE7, 0x6F, 0x51)],
    [(0xF8, 0xF3, 0xE6), (0xE6, 0x39, 0x46), (0x1D, 0x35, 0x57), (0x45, 0x7B, 0x9D), (0xF1, 0xC4, 0x0F)],
    [(0xF2, 0xEF, 0xE9), (0x11, 0x11, 0x11), (0xD6, 0x28, 0x28), (0x00, 0x3F, 0x88), (0xFC, 0xBF, 0x49)],
    [(0x1B, 0x43, 0x32), (0x95, 0xD5, 0xB2), (0xF2, 0xE8, 0xCF), (0xBC, 0x47, 0x49), (0x6A, 0x99, 0x4E)],
    [(0x2B, 0x2D, 0x42), (0xED, 0xF2, 0xF4), (0xEF, 0x23, 0x3C), (0x8D, 0x99, 0xAE), (0xFF, 0xB7, 0x03)],
]
MIN_CONTRAST = 110.0  # RGB distance between a shape or stripe and what it sits next to

Renderer = Callable[[np.random.Generator, int, int], Image.Image]


def _rng(name: str, i: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(name.encode()), VERSION, i])


def _dist(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def _pick_contrasting(
    rng: np.random.Generator,
    palette: list[tuple[int, int, int]],
    against: tuple[int, int, int],
    avoid: tuple[tuple[int, int, int], ...] = (),
) -> tuple[int, int, int]:
    """A palette colour far from ``against``, preferring ones not in ``avoid``."""
    choices = [c for c in palette if _dist(c, against) >= MIN_CONTRAST]
    if not choices:  # every palette has some, but stay safe
        choices = [max(palette, key=lambda c: _dist(c, against))]
    fresh = [c for c in choices if c not in avoid]
    choices = fresh or choices
    return choices[int(rng.integers(len(choices)))]


def _shapes(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A flat background and 1-3 big discs, rectangles or triangles in palette colours."""
    palette = PALETTES[int(rng.integers(len(PALETTES)))]
    bg = palette[int(rng.integers(len(palette)))]
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    H, W = height * SUPERSAMPLE, width * SUPERSAMPLE
    unit = min(H, W)
    img = Image.new("RGB", (W, H), bg)
    draw = ImageDraw.Draw(img)
    used: tuple[tuple[int, int, int], ...] = ()
    for k in range(n):
        kind = ["disc", "rect", "triangle"][int(rng.choice(3, p=[0.4, 0.35, 0.25]))]
        colour = _pick_contrasting(rng, palette, bg, avoid=used)
        used += (colour,)
        cx, cy = rng.uniform(0.28, 0.72), rng.uniform(0.28, 0.72)  # relative centre
        scale = 1.0 - 0.15 * k  # later shapes a little smaller, so earlier ones stay visible
        x, y = cx * W, cy * H
        if kind == "disc":
            r = rng.uniform(0.2, 0.33) * scale * unit
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        elif kind == "rect":
            hw = rng.uniform(0.16, 0.34) * scale * unit
            hh = rng.uniform(0.16, 0.34) * scale * unit
            if rng.random() < 0.3:  # a bar: long and narrow
                hw, hh = (0.42 * unit, 0.1 * unit) if rng.random() < 0.5 else (0.1 * unit, 0.42 * unit)
            draw.rectangle((x - hw, y - hh, x + hw, y + hh), fill=colour)
        else:
            r = rng.uniform(0.26, 0.38) * scale * unit
            draw.regular_polygon((x, y, r), 3, rotation=float(rng.uniform(0, 120)), fill=colour)
    return img


def _stripes(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """3-6 colour bands, horizontal, vertical or diagonal, in palette colours."""
    palette = PALETTES[int(rng.integers(len(PALETTES)))]
    n = int(rng.integers(3, 7))
    direction = ["horizontal", "vertical", "diagonal", "antidiagonal"][int(rng.integers(4))]
    widths = rng.dirichlet(np.full(n, 5.0))
    edges = np.cumsum(widths)[:-1]  # (n-1,) band boundaries in [0, 1]
    colours = [palette[int(rng.integers(len(palette)))]]
    for _ in range(n - 1):
        colours.append(_pick_contrasting(rng, palette, colours[-1]))
    H, W = height * SUPERSAMPLE, width * SUPERSAMPLE
    y = (np.arange(H, dtype=np.float64)[:, None] + 0.5) / H  # (H, 1)
    x = (np.arange(W, dtype=np.float64)[None, :] + 0.5) / W  # (1, W)
    if direction == "horizontal":
        t = np.broadcast_to(y, (H, W))
    elif direction == "vertical":
        t = np.broadcast_to(x, (H, W))
    elif direction == "diagonal":  # 45 degrees in pixels whatever the aspect ratio
        t = (x * W + y * H) / (W + H)
    else:
        t = (x * W + (1 - y) * H) / (W + H)
    band = np.searchsorted(edges, t)  # (H, W) in 0..n-1
    pixels = np.asarray(colours, dtype=np.uint8)[band]  # (H, W, 3)
    return Image.fromarray(pixels, "RGB")


_SETS: dict[str, Renderer] = {"shapes": _shapes, "stripes": _stripes}


def builtin_names() -> list[str]:
    """Names accepted as ``builtin:NAME``."""
    return sorted(_SETS)


def parse_builtin(path: str) -> str:
    """'builtin' -> 'shapes'; 'builtin:NAME' -> NAME, checked."""
    name = path.split(":", 1)[1] if ":" in path else "shapes"
    if name not in _SETS:
        available = ", ".join(f"builtin:{n}" for n in builtin_names())
        raise ConfigError(f"unknown built-in data set {name!r}; available: {available}")
    return name


def render(name: str, i: int, height: int, width: int) -> np.ndarray:
    """Image i of set ``name`` as (height, width, 3) uint8."""
    if name not in _SETS:
        parse_builtin(f"builtin:{name}")
    big = _SETS[name](_rng(name, i), height, width)  # (4H, 4W) RGB
    small = big.resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)  # (H, W, 3)


class BuiltinSource:
    """A procedural set as a data source (same interface as FolderSource)."""

    def __init__(self, name: str, count: int) -> None:
        if count < 1:
            raise ConfigError(f"data.builtin_count must be at least 1, got {count}")
        self.name = name
        self.names = [f"builtin:{name}/{i:06d}" for i in range(count)]
        self.fingerprints = list(self.names)
        self.listing_skipped: list[tuple[str, str]] = []

    def identity(self) -> str:
        return f"builtin:{self.name}:v{VERSION}"

    def open(self, i: int, spec: Spec) -> Callable[[], np.ndarray]:
        return functools.partial(render, self.name, i, spec.height, spec.width)

    def close(self) -> None:
        pass

"""Checks on everything a request carries: paths inside RUNS_DIR and bounded numbers.

The studio serves a folder of the user's runs to a browser. A URL must never reach a file
outside that folder (``../``, absolute paths, percent-encoded or double-encoded dots, a
symlink pointing out), and no number in a request may ask for unbounded work or memory. The
routes call these functions first, so the rest of the package only sees checked values.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, NotFound, UserError
from ..runfolder import CONFIG_NAME

# Bounds on one request. A request's images also share a pixel budget, so a large run gets
# fewer images per request rather than gigabytes of tensors: 64 images of 256x256 is the most.
MAX_COUNT = 64  # images per generate request
MAX_SEEDS = 64  # seeds in one list
MAX_SEED = 2**31 - 1
MAX_FRAMES = 120  # interpolation frames
MAX_PIXELS = 64 * 256 * 256  # images x height x width per request
MAX_NOVELTY = 8  # generated images in one novelty view
MAX_NEIGHBOURS = 5
MAX_NOT_MADE_SAMPLES = 1024  # generated images one not-made view compares with the training data
MAX_NOT_MADE_ROWS = 16  # training images it lists (eval's not-made sheet lists 16)
MAX_PROJECT_STEPS = 1000  # optimiser steps of one projection
MAX_CREATE = 16  # img2img / inpaint results per request (a GAN's each is a 200-step projection)
MAX_SAMPLE_STEPS = 250  # DDIM steps one request may ask (the model takes up to its run's timesteps)
# A run or output name made from the page: letters, digits, '.', '_', '-'; not hidden.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")


class StudioError(UserError):
    """A request the studio refuses with a status of its own (413, 415, 503...): the user's to
    fix or retry, answered with the message and ``http_status``."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.http_status = status


class BadRequest(StudioError, ConfigError):
    """A value in the request the studio cannot take (HTTP 400)."""

    http_status = 400


# -- paths ----------------------------------------------------------------------------------


def check_relative(rel: str) -> list[str]:
    """The segments of a relative URL path, refusing anything that could climb or escape.

    ``rel`` has been percent-decoded once by the server; a ``%`` left in it means the client
    encoded twice (``%252e%252e``), which no file the studio writes needs, so it is refused
    too rather than decoded again.
    """
    if not isinstance(rel, str) or not rel:
        raise BadRequest("empty path")
    if "\x00" in rel or "\\" in rel or "%" in rel:
        raise BadRequest("bad characters in path")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise BadRequest("absolute paths are not served")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise BadRequest("path segments '', '.' and '..' are not allowed")
    return parts


def inside(root: Path, rel: str) -> Path:
    """``root / rel`` with symlinks resolved, if it stays inside ``root``; else NotFound."""
    parts = check_relative(rel)
    real_root = root.resolve()
    target = real_root.joinpath(*parts).resolve()
    if not target.is_relative_to(real_root):
        raise NotFound("not found")  # a symlink out of RUNS_DIR: as if it did not exist
    return target


def file_inside(root: Path, rel: str) -> Path:
    """A regular file inside ``root`` (see ``inside``), not hidden; NotFound otherwise.

    Hidden files and folders (a name starting with '.', as given or after following links)
    are the studio's own records (``.studio/jobs.json``: job command lines with absolute
    paths, and the jobs' logs) and half-written temporary files: never served.
    """
    target = inside(root, rel)
    if any(p.startswith(".") for p in check_relative(rel)) or any(
        p.startswith(".") for p in target.relative_to(root.resolve()).parts
    ):
        raise NotFound("not found")
    if not target.is_file():
        raise NotFound("not found")
    return target


def run_dir(root: Path, run_id: Any) -> Path:
    """The folder of run ``run_id`` (its path relative to RUNS_DIR): it must hold config.json."""
    if not isinstance(run_id, str):
        raise BadRequest("'run' must be a run name (a string)")
    target = inside(root, run_id)
    if not (target / CONFIG_NAME).is_file():
        raise NotFound(f"no run {run_id!r} in the studio's folder")
    return target


def new_name(value: Any, what: str = "name") -> str:
    """A new folder name chosen on the page (a run's ``out``): one plain path segment."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise BadRequest(
            f"{what} must be 1-64 letters, digits, '.', '_' or '-' (not starting with '.' or '-'), "
            f"got {value!r}"
        )
    return value


# -- numbers --------------------------------------------------------------------------------


def get_int(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int) -> int | None:
    """body[key] as an int in [lo, hi]; ``default`` when absent. Floats must be whole numbers."""
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{key} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{key} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise BadRequest(f"{key} must be a whole number, got {value!r}")
    if not lo <= number <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}, got {value!r}")
    return int(number)


def get_float(
    body: dict[str, Any], key: str, default: float | None, lo: float, hi: float, *, open_lo: bool = False
) -> float | None:
    """body[key] as a finite float in [lo, hi] (or (lo, hi] with ``open_lo``)."""
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadRequest(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{key} must be a number, got {value!r}") from None
    below = number <= lo if open_lo else number < lo
    if not math.isfinite(number) or below or number > hi:
        interval = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        raise BadRequest(f"{key} must be in {interval}, got {value!r}")
    return number


def get_bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {value!r}")
    return value


def seed_list(value: Any, limit: int = MAX_SEEDS) -> list[int]:
    """'1,2,5-8' or [1, 2, 5] -> seeds, at most ``limit``; ranges are sized before expanding,
    so '0-999999999' is refused without building a billion-element list."""
    if isinstance(value, list):
        if not value or len(value) > limit:
            raise BadRequest(f"give 1 to {limit} seeds, got {len(value)}")
        return [int(get_int({"seed": v}, "seed", None, 0, MAX_SEED)) for v in value]  # type: ignore[arg-type]
    if not isinstance(value, str) or len(value) > 1000:
        raise BadRequest("seeds must be a list like 1,2,5-8")
    seeds: list[int] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d{1,10})(?:\s*-\s*(\d{1,10}))?", part)
        if not m:
            raise BadRequest(f"bad seed list {value!r}: use numbers and ranges like 1,2,5-8")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo or hi > MAX_SEED:
            raise BadRequest(f"bad seed range {part!r}: from low to high, at most {MAX_SEED}")
        if len(seeds) + (hi - lo + 1) > limit:
            raise BadRequest(f"at most {limit} seeds per request")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise BadRequest("no seeds given")
    return seeds


def check_pixels(n_images: int, height: int, width: int, what: str = "images") -> None:
    """Refuse a request whose images would hold more than MAX_PIXELS pixels in all."""
    if n_images * height * width > MAX_PIXELS:
        most = max(1, MAX_PIXELS // (height * width))
        raise BadRequest(
            f"{n_images} {what} of {width}x{height} is too much for one request; at most {most} at this size"
        )

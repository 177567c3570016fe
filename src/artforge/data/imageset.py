"""What every data loader returns (``ImageSet``; they raise ``errors.DataError``), and where
their caches live: the image loader (data/__init__.py) and the sound loader (data/audio.py)
both build on this module, so neither imports the other's package to reach them."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import DataConfig
from ..io import write_json

log = logging.getLogger("artforge.data")  # the package's logger: these lines are the loader's

_SHORT_REASON = {"corrupt or truncated": "corrupt", "empty file": "empty", "could not decode": "failed"}
SUMMARY_EXAMPLES = 3  # skipped files named in the one-line summary


def _examples(items: list[tuple[str, str]], k: int) -> str:
    """': a.png: corrupt (...); b.txt: not an image; and 4 more' for the first ``k`` items."""
    if k <= 0 or not items:
        return ""
    more = f"; and {len(items) - k:,} more" if len(items) > k else ""
    return ": " + "; ".join(f"{f}: {r}" for f, r in items[:k]) + more


@dataclass
class ImageSet:
    """Decoded images with where each came from and what was left out."""

    images: torch.Tensor  # uint8 (N, 3, H, W), contiguous; may be backed by a np.memmap
    names: list[str]  # "rel/path.png", "archive.zip:member" or "builtin:shapes/000123"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    root: str = ""  # the data path as given
    # (file, why): degenerate images that were kept (tiny, extreme aspect ratio, flat)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    held_out: list[str] = field(default_factory=list)  # names left out by subset() (data.holdout)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, keep: list[bool]) -> ImageSet:
        """The images where ``keep`` is true (an in-memory copy), same root and skip list; the
        others are listed as held out."""
        idx = torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)
        names = [n for n, k in zip(self.names, keep, strict=True) if k]
        out = [n for n, k in zip(self.names, keep, strict=True) if not k]
        kept = set(names)
        warnings = [(f, r) for f, r in self.warnings if f in kept]
        return ImageSet(
            self.images[idx].contiguous(), names, list(self.skipped), self.root, warnings, self.held_out + out
        )

    def summary(self, examples: int = SUMMARY_EXAMPLES) -> str:
        """One line, e.g. '1,234 images from data/emoji (3 skipped: 2 corrupt, 1 too large: a.png:
        corrupt or truncated (...); ...)', naming the first ``examples`` skipped files and warnings
        (data_report.json lists them all)."""
        n = len(self)
        text = f"{n:,} image{'' if n == 1 else 's'} from {self.root}"
        extra = []
        if self.held_out:
            extra.append(f"{len(self.held_out):,} held out")
        if self.skipped:
            kinds = Counter(_reason_kind(r) for _, r in self.skipped)
            parts = ", ".join(f"{c} {k}" for k, c in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
            extra.append(f"{len(self.skipped):,} skipped: {parts}{_examples(self.skipped, examples)}")
        if self.warnings:
            extra.append(f"{len(self.warnings):,} degenerate but kept{_examples(self.warnings, examples)}")
        return text + (f" ({'; '.join(extra)})" if extra else "")

    def write_report(self, path: str | os.PathLike[str]) -> None:
        """Write {"root", "n_images", "images", "skipped": [{"file", "reason"}], "warnings":
        [{"file", "reason"}], "held_out"} as JSON, atomically; say where when a file was left
        out or kept with a warning."""
        report = {
            "root": self.root,
            "n_images": len(self),
            "images": list(self.names),
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": [{"file": f, "reason": r} for f, r in self.warnings],
            "held_out": list(self.held_out),
        }
        write_json(report, path)
        if self.skipped or self.warnings:
            log.info("every image used, skipped or kept with a warning is listed in %s", path)


def _reason_kind(reason: str) -> str:
    head = reason.split(" (", 1)[0]
    return _SHORT_REASON.get(head, head)


def cache_dir(cfg: DataConfig) -> Path:
    """cfg.cache_dir, or $XDG_CACHE_HOME/artforge/data (default ~/.cache/artforge/data)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "artforge" / "data"

"""Image data: folders, zips and built-in sets -> validated, decoded-once, cached uint8 tensors.

``load_images(cfg)`` is the one entry point. Every usable image is decoded exactly once,
converted to RGB and resized to ``(cfg.height, cfg.width)``; files that cannot be used are
listed in ``ImageSet.skipped`` with a short reason instead of stopping the load. With a disk
cache, a second load of unchanged data reads a memory-mapped file and decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..config import DataConfig
from ..errors import DataError
from ..io import replacing, write_json
from .audio import load_audio, resolve_modality
from .captions import CaptionFile, Captions, read_caption_file, read_captions
from .folder import (
    IMAGE_EXTENSIONS,
    Flagged,
    FolderSource,
    Skip,
    Spec,
    ZipSource,
    parse_background,
    probe_size,
)
from .imageset import ImageSet, cache_dir
from .procedural import BuiltinSource, builtin_names, parse_builtin

__all__ = [
    "CaptionFile",
    "Captions",
    "DataError",
    "ImageSet",
    "builtin_names",
    "load_images",
    "read_caption_file",
    "read_captions",
]

log = logging.getLogger(__name__)

CACHE_VERSION = (
    2  # 2: warnings about degenerate images; bump when decoding changes, so old disk caches are not reused
)
AUTO_RAM_FRACTION = 0.25  # cache="auto" keeps data in memory below this share of RAM


def load_images(cfg: DataConfig, *, progress: bool = False) -> ImageSet:
    """Load ``cfg.path`` (a folder, a .zip, or builtin[:NAME]) as one uint8 tensor.

    A folder of sound files (data.modality "audio", or "auto" finding one) becomes log-mel
    spectrogram images of one channel instead (data/audio.py).
    """
    if cfg.modality != "image":
        cfg = resolve_modality(cfg)
        if cfg.modality == "audio":
            return load_audio(cfg, progress=progress)
    spec = Spec(cfg.height, cfg.width, cfg.fit, parse_background(cfg.background), cfg.max_pixels)
    source = _open_source(cfg)
    try:
        n_max = len(source.names)
        if n_max == 0:
            raise DataError(_nothing_found(cfg.path, source))
        item = 3 * spec.height * spec.width
        mode = cfg.cache
        if mode == "auto":
            mode = "memory" if n_max * item < AUTO_RAM_FRACTION * total_ram_bytes() else "disk"
            log.debug("cache=auto: %s for %d x %d bytes", mode, n_max, item)
        if mode == "disk":
            images, names, skipped, warnings = _load_disk(cfg, source, spec, progress)
        else:
            buf = np.empty((n_max, 3, spec.height, spec.width), dtype=np.uint8)  # (N, 3, H, W)
            names, skipped, warnings = _decode_into(source, spec, buf, progress, cfg.path)
            _check_any(cfg.path, names, skipped)
            k = len(names)
            images = buf[:k] if k >= 0.9 * n_max else buf[:k].copy()
    finally:
        source.close()
    result = ImageSet(torch.from_numpy(images), names, skipped, cfg.path, warnings)
    log.info("%s", result.summary())
    return result


def image_sizes(path: str, limit: int) -> Counter[tuple[int, int]]:
    """How many of (up to ``limit``) images of a folder or zip have each (height, width).

    Headers are read through the loader's own checks (format by content, the pixel limit),
    so a decompression bomb or a broken file is passed over and nothing is decoded; the
    files are visited in a fixed shuffled order, so a probe of a few sees all of a folder.
    Raises DataError naming the path and the reasons when no file has a usable header.
    """
    cfg = DataConfig(path=path)
    source = _open_source(cfg)
    spec = Spec(cfg.height, cfg.width, max_pixels=cfg.max_pixels)
    sizes: Counter[tuple[int, int]] = Counter()
    skipped: list[tuple[str, str]] = list(source.listing_skipped)
    try:
        if not source.names:
            raise DataError(_nothing_found(path, source))
        for i in np.random.default_rng(0).permutation(len(source.names)).tolist():
            try:
                sizes[probe_size(source, i, spec)] += 1  # type: ignore[arg-type]
            except Skip as e:
                skipped.append((source.names[i], e.reason))
                continue
            if sizes.total() >= limit:
                break
    finally:
        source.close()
    if not sizes:
        _check_any(path, [], sorted(skipped))
    return sizes


# -- sources -------------------------------------------------------------------------------


class _Source(Protocol):
    names: list[str]
    fingerprints: list[str]
    listing_skipped: list[tuple[str, str]]

    def identity(self) -> str: ...
    def open(self, i: int, spec: Spec) -> Callable[[], np.ndarray]: ...
    def close(self) -> None: ...


def _open_source(cfg: DataConfig) -> _Source:
    path = cfg.path
    if path == "builtin" or path.startswith("builtin:"):
        return BuiltinSource(parse_builtin(path), cfg.builtin_count)
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"data path {path!r} does not exist; give an image folder, a .zip of images, "
            f"or builtin[:NAME] ({', '.join(builtin_names())})"
        )
    if p.is_dir():
        return FolderSource(p)
    if p.suffix.lower() == ".zip":
        return ZipSource(p)  # a DataError naming it when it is not a readable zip
    raise DataError(f"{path}: is a file but not a .zip; give a folder of images or a .zip archive")


def _nothing_found(path: str, source: _Source) -> str:
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    extra = ""
    if source.listing_skipped:
        f, r = source.listing_skipped[0]
        extra = f"; {len(source.listing_skipped)} unreadable, e.g. {f}: {r}"
    return f"{path}: no image files found (looked for {exts}, in subfolders too){extra}"


def _check_any(path: str, names: list[str], skipped: list[tuple[str, str]]) -> None:
    if names:
        return
    first = "; ".join(f"{f}: {r}" for f, r in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    raise DataError(f"{path}: no usable images ({len(skipped)} files skipped: {first}{more})")


# -- decoding ------------------------------------------------------------------------------


def _n_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _decode_into(
    source: _Source, spec: Spec, out: np.ndarray, progress: bool, desc: str
) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Decode every source item in order into out[0..k); return (names, skipped, warnings):
    warnings name the degenerate images that were kept (folder.degenerate)."""
    names: list[str] = []
    skipped = list(source.listing_skipped)
    warnings: list[tuple[str, str]] = []
    n = len(source.names)
    workers = _n_workers()
    pending: deque[tuple[int, Future[np.ndarray] | None, str | None]] = deque()

    with (
        ThreadPoolExecutor(workers, thread_name_prefix="artforge-decode") as pool,
        tqdm(total=n, desc=f"decoding {desc}", unit="img", disable=not progress, leave=False) as bar,
    ):

        def drain_one() -> None:
            i, fut, reason = pending.popleft()
            if fut is not None:
                try:
                    arr = fut.result()  # (H, W, 3)
                    out[len(names)] = arr.transpose(2, 0, 1)  # (3, H, W)
                    names.append(source.names[i])
                    if isinstance(arr, Flagged):
                        warnings.append((source.names[i], arr.warning))
                except Skip as e:
                    reason = e.reason
                except Exception as e:
                    log.debug("decoding %s failed", source.names[i], exc_info=True)
                    reason = f"could not decode ({type(e).__name__}: {str(e)[:80]})"
            if reason is not None:
                skipped.append((source.names[i], reason))
            bar.update(1)

        for i in range(n):
            try:
                pending.append((i, pool.submit(source.open(i, spec)), None))
            except Skip as e:
                pending.append((i, None, e.reason))
            while len(pending) >= 4 * workers:
                drain_one()
        while pending:
            drain_one()
    skipped.sort()
    for f, r in skipped:
        log.debug("skipped %s: %s", f, r)
    return names, skipped, warnings


# -- disk cache ----------------------------------------------------------------------------


def _cache_key(source: _Source, spec: Spec) -> str:
    h = hashlib.sha256()
    head = {"version": CACHE_VERSION, "source": source.identity(), "spec": spec.key()}
    h.update(json.dumps(head, sort_keys=True).encode())
    for fp in source.fingerprints:  # sorted source names with size and mtime (or CRC)
        h.update(fp.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()[:32]


def _load_disk(
    cfg: DataConfig, source: _Source, spec: Spec, progress: bool
) -> tuple[np.ndarray, list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """Reuse the memory-mapped cache for this exact data and spec, or decode and write it."""
    folder = cache_dir(cfg)
    key = _cache_key(source, spec)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(cfg.path.replace(":", "-")).name)[:40] or "data"
    base = folder / f"{stem}-{spec.width}x{spec.height}-{key}"
    data_path, meta_path = base.with_suffix(".u8"), base.with_suffix(".json")
    item = (3, spec.height, spec.width)

    hit = _read_cache(data_path, meta_path, key, item)
    if hit is not None:
        log.info("reusing data cache %s", data_path)
        return hit

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(folder, e) from None
    with replacing(data_path) as tmp:  # interrupted or refused: no half-written cache is left
        try:
            mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(source.names), *item))
        except OSError as e:
            raise _unwritable(folder, e) from None
        names, skipped, warnings = _decode_into(source, spec, mm, progress, cfg.path)
        mm.flush()
        del mm
        _check_any(cfg.path, names, skipped)
        os.truncate(tmp, len(names) * int(np.prod(item)))
    meta = {
        "version": CACHE_VERSION,
        "key": key,
        "root": cfg.path,
        "shape": [len(names), *item],
        "names": names,
        "skipped": [list(s) for s in skipped],
        "warnings": [list(w) for w in warnings],
    }
    write_json(meta, meta_path)  # written last: its presence means the data file is complete
    log.info("wrote data cache %s", data_path)
    images = np.memmap(data_path, dtype=np.uint8, mode="c", shape=(len(names), *item))
    return images, names, skipped, warnings


def _unwritable(folder: Path, e: OSError) -> OSError:
    return OSError(
        f"cannot write the data cache in {folder} ({e.strerror or e}); "
        "set data.cache_dir to a writable folder or use data.cache='memory'"
    )


def _read_cache(
    data_path: Path, meta_path: Path, key: str, item: tuple[int, int, int]
) -> tuple[np.ndarray, list[str], list[tuple[str, str]], list[tuple[str, str]]] | None:
    try:
        meta = json.loads(meta_path.read_text())
        shape = tuple(meta["shape"])
        ok = meta["version"] == CACHE_VERSION and meta["key"] == key and shape[1:] == item
        ok = ok and len(meta["names"]) == shape[0] and data_path.stat().st_size == int(np.prod(shape))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok or shape[0] == 0:
        return None
    images = np.memmap(data_path, dtype=np.uint8, mode="c", shape=shape)  # copy-on-write
    skipped = [(f, r) for f, r in meta["skipped"]]
    return images, list(meta["names"]), skipped, [(f, r) for f, r in meta.get("warnings", [])]


def total_ram_bytes() -> int:
    """Physical memory, or the cgroup limit when that is lower (containers)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total)

"""Image folders and zips -> decoded, RGB, resized uint8 arrays.

Decoding is split in two so that cheap checks run first: ``open_image`` identifies the
format by content and checks the pixel count from the header (Pillow opens lazily), and
``finish`` decodes fully, applies EXIF orientation, converts any mode to RGB over the
background colour and resizes to the target. ``decode`` does both.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import stat
import threading
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError

from ..config import Fit
from ..errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
)
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")  # chosen by content, not by extension
# image formats people keep beside their pictures that Pillow cannot decode (or we do not take):
# reported as skipped with a hint, instead of being passed over in silence
UNSUPPORTED_EXTENSIONS = {
    ".svg": "SVG, a vector format",
    ".svgz": "SVG, a vector format",
    ".heic": "HEIC",
    ".heif": "HEIF",
    ".avif": "AVIF",
    ".psd": "Photoshop",
    ".ico": "ICO",
}
MAX_FILE_BYTES = 512 * 2**20  # larger files / zip members are skipped unread
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})

Job = Callable[[], np.ndarray]  # runs in a worker thread; returns (H, W, 3) uint8 or raises Skip


# Degenerate images are kept (an odd image is still the user's image, and a flat one may be a
# real blank background or, under eval --fake, a collapsed generator's honest output) but each
# is named with a warning in the summary and in data_report.json, so none is accepted silently.
MIN_SIDE = 8  # pixels: below this an image has almost nothing to resize from
MAX_ASPECT = 8.0  # longer side / shorter side: beyond this a crop keeps a sliver, a pad is mostly padding


class Flagged(np.ndarray):
    """A decoded (H, W, 3) array that carries a ``warning`` (why the image is degenerate)."""

    warning: str


def degenerate(w: int, h: int, arr: np.ndarray) -> str | None:
    """Why an image of ``w`` x ``h`` source pixels decoded to ``arr`` is degenerate, or None."""
    if min(w, h) < MIN_SIDE:
        return f"tiny ({w} x {h} pixels, under {MIN_SIDE} a side)"
    if max(w, h) > MAX_ASPECT * min(w, h):
        return f"extreme aspect ratio ({w} x {h} pixels)"
    if (arr == arr[:1, :1]).all():
        return "flat (every pixel the same colour)"
    return None


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """This file cannot be used; ``reason`` is a short human sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Spec:
    """Target of decoding: size, fit, background colour and the pixel-count limit."""

    height: int
    width: int
    fit: Fit = "crop"
    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int = 100_000_000

    def key(self) -> list[object]:
        return [self.height, self.width, self.fit, list(self.background), self.max_pixels]


def parse_background(colour: str) -> tuple[int, int, int]:
    """'#rrggbb', '#rgb' or a colour name ('white') -> (r, g, b)."""
    try:
        rgb = ImageColor.getcolor(colour, "RGB")
    except (ValueError, AttributeError):
        raise ConfigError(
            f"background colour {colour!r} is not a colour; use '#rrggbb', '#rgb' or a name like 'white'"
        ) from None
    assert isinstance(rgb, tuple) and len(rgb) == 3
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if len(msg) <= 90 else msg[:87] + "..."


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _signature(head: bytes) -> str | None:
    """The format a file's first bytes claim (one of ours), or None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _not_an_image(head: bytes) -> str:
    """A short reason for bytes Pillow could not identify, with a hint when they are text."""
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "not an image (looks like HTML/XML)"
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c in "\t\r\n" for c in text[:1024]):
            return "not an image (a text file)"
    except UnicodeDecodeError:  # may also be a multi-byte character cut at 4096 bytes
        pass
    kind = _signature(head)
    if kind:  # the file says it is an image, but Pillow could not parse even its header
        return f"corrupt or truncated ({kind} signature, but its header cannot be read)"
    try:  # a real image format we do not take, e.g. ICO or PSD
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(head)) as im:
                return f"unsupported format ({im.format})"
    except Exception:
        return "not an image"


# -- decoding ------------------------------------------------------------------------------


def open_image(fp: BinaryIO, spec: Spec) -> Image.Image:
    """Identify an image by content and check its size from the header, without decoding."""
    try:
        with warnings.catch_warnings():  # our own max_pixels check below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        fp.seek(0)
        raise Skip(_not_an_image(fp.read(4096))) from None
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(e))
        detail = f"{int(m[1]):,} pixels > Pillow's limit of {int(m[2]):,}" if m else _short(e)
        raise Skip(f"too large ({detail})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise Skip(f"corrupt or truncated ({_short(e)})") from None
    w, h = img.size
    if w * h > spec.max_pixels:
        img.close()
        raise Skip(f"too large ({w} x {h} pixels > {spec.max_pixels:,})")
    if w < 1 or h < 1:
        img.close()
        raise Skip(f"corrupt or truncated (size {w} x {h})")
    return img


def finish(img: Image.Image, spec: Spec) -> np.ndarray:
    """Fully decode a lazily opened image and return it as (H, W, 3) uint8 at the target size."""
    try:
        if img.format == "JPEG":
            _draft(img, spec)
        img.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays off)
    except Image.DecompressionBombError as e:
        raise Skip(f"too large ({_short(e)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as e:
        raise Skip(f"corrupt or truncated ({_short(e)})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # a broken EXIF block should not cost the image
        log.debug("ignoring unreadable EXIF orientation: %s", e)
    try:
        rgb = to_rgb(img, spec.background)
    except ValueError:  # e.g. LAB, which Pillow cannot convert without a colour profile
        raise Skip(f"unsupported colour mode ({img.mode})") from None
    out = resize(rgb, spec)
    arr = np.asarray(out, dtype=np.uint8)  # (H, W, 3)
    assert arr.shape == (spec.height, spec.width, 3), arr.shape
    warning = degenerate(img.size[0], img.size[1], arr)
    if warning is not None:
        arr = arr.view(Flagged)
        arr.warning = warning
    return arr


def decode(data: bytes | str | os.PathLike[str], spec: Spec) -> np.ndarray:
    """Bytes or a path -> (H, W, 3) uint8, or raise Skip with the reason."""
    if isinstance(data, bytes):
        if not data:
            raise Skip("empty file (0 bytes)")
        return _run(io.BytesIO(data), spec)
    with open(data, "rb") as fh:
        return _run(fh, spec)


def _run(fp: BinaryIO, spec: Spec) -> np.ndarray:
    img = open_image(fp, spec)
    try:
        return finish(img, spec)
    finally:
        img.close()


def _draft(img: Image.Image, spec: Spec) -> None:
    """Let libjpeg decode big JPEGs at 1/2, 1/4 or 1/8 scale, keeping 2x the needed pixels."""
    w, h = img.size
    tw, th = spec.width, spec.height
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF: finish() ignores it too
        orientation = 1
    if orientation in (5, 6, 7, 8):  # rotated 90 degrees: the target is transposed
        tw, th = th, tw
    if spec.fit == "crop":
        s = max(tw / w, th / h)
    elif spec.fit == "pad":
        s = min(tw / w, th / h)
    else:
        s = max(tw / w, th / h)
    need = (max(1, int(w * s * 2)), max(1, int(h * s * 2)))
    if need[0] < w and need[1] < h:
        img.draft(None, need)


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any Pillow mode -> RGB; transparency is composited over ``background``."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.uint16) >> 8  # 16-bit -> 8-bit, not clipped to white
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "I":
        return Image.fromarray(_rescale(np.asarray(img, dtype=np.int64)), "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_rescale(np.asarray(img, dtype=np.float64)), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _rescale(a: np.ndarray) -> np.ndarray:
    """32-bit int or float pixels -> uint8.

    Floats in [0, 1] are scaled by 255; values already in 0..255 are kept; 16-bit range
    (0..65535) is shifted down by 8 bits like I;16; anything else is stretched min..max.
    """
    is_float = a.dtype.kind == "f"
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if is_float and lo >= 0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        a = np.floor(a / 256.0)
    else:
        a = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def resize(img: Image.Image, spec: Spec) -> Image.Image:
    """RGB image -> exactly (spec.width, spec.height) by crop, pad or stretch."""
    w, h = img.size
    tw, th = spec.width, spec.height
    lanczos = Image.Resampling.LANCZOS
    if spec.fit == "stretch":
        return img.resize((tw, th), lanczos, reducing_gap=3.0)
    if spec.fit == "crop":  # the largest centred box of the target's aspect ratio
        if w * th > h * tw:
            bw = h * tw / th
            box = ((w - bw) / 2, 0.0, (w + bw) / 2, float(h))
        else:
            bh = w * th / tw
            box = (0.0, (h - bh) / 2, float(w), (h + bh) / 2)
        return img.resize((tw, th), lanczos, box=box, reducing_gap=3.0)
    if spec.fit == "pad":
        s = min(tw / w, th / h)
        nw, nh = min(tw, max(1, round(w * s))), min(th, max(1, round(h * s)))
        inner = img.resize((nw, nh), lanczos, reducing_gap=3.0)
        canvas = Image.new("RGB", (tw, th), spec.background)
        canvas.paste(inner, ((tw - nw) // 2, (th - nh) // 2))
        return canvas
    raise ConfigError(f"fit must be one of ['crop', 'pad', 'stretch'], got {spec.fit!r}")


def _finish_and_close(img: Image.Image, fp: BinaryIO, spec: Spec) -> np.ndarray:
    try:
        return finish(img, spec)
    finally:
        img.close()
        fp.close()


def _is_candidate(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _unsupported(name: str) -> str | None:
    """The skip reason for a file of a known image format we cannot use, else None."""
    base = name.rsplit("/", 1)[-1]
    kind = UNSUPPORTED_EXTENSIONS.get(os.path.splitext(base)[1].lower())
    if kind is None or base.startswith("."):
        return None
    return f"unsupported format ({kind}); convert it to PNG"


def _os_reason(e: OSError) -> str:
    if isinstance(e, PermissionError):
        return "unreadable (permission denied)"
    if isinstance(e, FileNotFoundError):
        return "unreadable (broken link or file vanished)"
    return f"unreadable ({e.strerror or _short(e)})"


# -- sources -------------------------------------------------------------------------------


class FolderSource:
    """Every image file under a folder, recursively, sorted by relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []  # relative posix paths
        self.fingerprints: list[str] = []  # name, size and mtime, for the cache key
        self.listing_skipped: list[tuple[str, str]] = []
        found: list[tuple[str, int, int]] = []
        seen_dirs: set[str] = set()

        def on_error(e: OSError) -> None:
            rel = os.path.relpath(e.filename, root) if e.filename else str(root)
            self.listing_skipped.append((Path(rel).as_posix() + "/", _os_reason(e)))

        for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen_dirs:  # a symlink loop or a second link to the same folder
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
            for fn in filenames:
                if not _is_candidate(fn):
                    reason = _unsupported(fn)
                    if reason:
                        rel = Path(os.path.relpath(os.path.join(dirpath, fn), root)).as_posix()
                        self.listing_skipped.append((rel, reason))
                    continue
                full = os.path.join(dirpath, fn)
                rel = Path(os.path.relpath(full, root)).as_posix()
                try:
                    st = os.stat(full)
                except OSError as e:
                    self.listing_skipped.append((rel, _os_reason(e)))
                    continue
                if not stat.S_ISREG(st.st_mode):  # a named pipe would block the loader forever
                    self.listing_skipped.append((rel, "not a regular file (a pipe, socket or device)"))
                    continue
                found.append((rel, st.st_size, st.st_mtime_ns))
        found.sort()
        self.names = [r for r, _, _ in found]
        self.sizes = [s for _, s, _ in found]
        self.fingerprints = [f"{r}\0{s}\0{t}" for r, s, t in found]

    def identity(self) -> str:
        return f"folder:{self.root.resolve()}"

    def open(self, i: int, spec: Spec) -> Job:
        """Check file i (main thread, cheap) and return the job that decodes it."""
        if self.sizes[i] == 0:
            raise Skip("empty file (0 bytes)")
        if self.sizes[i] > MAX_FILE_BYTES:
            raise Skip(f"too large ({self.sizes[i] / 2**20:,.0f} MiB file)")
        try:
            fp = open(self.root / self.names[i], "rb")  # noqa: SIM115 - closed by the job
        except OSError as e:
            raise Skip(_os_reason(e)) from None
        try:
            img = open_image(fp, spec)
        except BaseException:
            fp.close()
            raise
        return functools.partial(_finish_and_close, img, fp, spec)

    def close(self) -> None:
        pass


class ZipSource:
    """Every image member of a zip archive, sorted by member name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listing_skipped: list[tuple[str, str]] = []
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path}: not a readable zip file ({_short(e)}); re-create it") from None
        members = [
            m
            for m in self.zf.infolist()
            if not m.is_dir()
            and not m.filename.startswith("__MACOSX/")
            and not any(part.startswith(".") for part in m.filename.split("/")[:-1])
            and _is_candidate(m.filename)
        ]
        members.sort(key=lambda m: m.filename)
        for m in self.zf.infolist():
            reason = None if m.is_dir() else _unsupported(m.filename)
            if reason and not m.filename.startswith("__MACOSX/"):
                self.listing_skipped.append((f"{path.name}:{m.filename}", reason))
        self.members = members
        self.names = [f"{path.name}:{m.filename}" for m in members]
        self.fingerprints = [f"{m.filename}\0{m.file_size}\0{m.CRC}" for m in members]
        self._lock = threading.Lock()

    def identity(self) -> str:
        return f"zip:{self.path.resolve()}"

    def open(self, i: int, spec: Spec) -> Job:
        m = self.members[i]
        if m.file_size == 0:
            raise Skip("empty file (0 bytes)")
        if m.file_size > MAX_FILE_BYTES:
            raise Skip(f"too large ({m.file_size / 2**20:,.0f} MiB uncompressed)")
        try:
            with self._lock, self.zf.open(m) as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except RuntimeError as e:  # encrypted
            raise Skip(f"unreadable ({_short(e)})") from None
        except NotImplementedError:
            raise Skip("unreadable (unsupported zip compression)") from None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise Skip(f"corrupt or truncated ({_short(e)})") from None
        if len(data) > MAX_FILE_BYTES:
            raise Skip(f"too large (over {MAX_FILE_BYTES / 2**20:,.0f} MiB uncompressed)")
        fp = io.BytesIO(data)
        img = open_image(fp, spec)
        return functools.partial(_finish_and_close, img, fp, spec)

    def close(self) -> None:
        self.zf.close()


def probe_size(source: FolderSource | ZipSource, i: int, spec: Spec) -> tuple[int, int]:
    """(height, width) of item i as it will be shown (EXIF rotation applied), read from its
    header through the same checks as loading it, without decoding; raises Skip with the reason.
    """
    job = source.open(i, spec)  # functools.partial(_finish_and_close, img, fp, spec)
    img, fp = job.args[0], job.args[1]  # type: ignore[attr-defined]
    try:
        w, h = img.size
        try:
            if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees when loaded
                w, h = h, w
        except Exception as e:  # a broken EXIF block: finish() ignores it too
            log.debug("ignoring unreadable EXIF orientation: %s", e)
        return h, w
    finally:
        img.close()
        fp.close()

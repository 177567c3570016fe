"""Captions for a folder of images: captions.jsonl, sidecar NAME.txt files, file names, or
sub-folder names.

``--captions auto`` takes captions.jsonl when the folder has one, else sidecar .txt files
when any image has one, else the file names. Nothing here stops training: an image without a
caption gets "" (the unconditional caption) and is reported, as is every caption line that
is broken (with its line number and the reason, like the images the loader skips) or names
an image that is not in the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, DataError

CaptionMode = Literal["auto", "jsonl", "sidecar", "filename", "folder"]
CAPTIONS_FILE = "captions.jsonl"


MAX_LINE_BYTES = 64 * 1024  # longer lines are skipped unread (a caption is a sentence, not a book)
MAX_TEXT_CHARS = 4096


@dataclass
class CaptionFile:
    """One captions.jsonl: file name -> caption text, and the lines that were left out."""

    texts: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, reason)

    def summary(self, path: str | Path) -> str:
        text = f"{len(self.texts):,} captions from {path}"
        if self.skipped:
            first = "; ".join(f"line {n}: {r}" for n, r in self.skipped[:3])
            text += (
                f" ({len(self.skipped):,} lines skipped: {first}{'; ...' if len(self.skipped) > 3 else ''})"
            )
        return text


def read_caption_file(path: str | Path) -> CaptionFile:
    """Read a captions.jsonl file, keeping every good line and reporting the others.

    Raises FileNotFoundError / ValueError only when the file itself cannot be read.
    """
    path = Path(path)
    out = CaptionFile()
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: captions file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read captions ({e.strerror or e})") from None
    with fh:
        number = 0
        while True:
            line = fh.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            number += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                skipped = len(line) + _skip_rest_of_line(fh)
                out.skipped.append((number, f"line too long ({skipped:,} bytes > {MAX_LINE_BYTES:,})"))
                continue
            reason = _parse_line(line, number, out)
            if reason:
                out.skipped.append((number, reason))
    return out


def _skip_rest_of_line(fh) -> int:  # type: ignore[no-untyped-def]
    """Read past the end of an over-long line without holding it; return the bytes skipped."""
    n = 0
    while True:
        chunk = fh.readline(1 << 20)
        n += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return n


def _parse_line(raw: bytes, number: int, out: CaptionFile) -> str | None:
    """Add one line's caption to ``out``; return why it was skipped, or None."""
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
        raw = raw[3:]
    if not raw.strip():
        return None  # blank lines are not errors
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte {e.start})"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at column {e.colno})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    file, caption = record.get("file"), record.get("text")
    if not isinstance(file, str) or not file.strip():
        return 'no "file" name'
    if not isinstance(caption, str):
        return f'no "text" for {file!r}'
    if len(caption) > MAX_TEXT_CHARS:
        return f"caption of {file!r} too long ({len(caption):,} characters > {MAX_TEXT_CHARS:,})"
    if file in out.texts:
        return f"a second caption for {file!r} (the first is kept)"
    out.texts[file] = caption
    return None


@dataclass
class Captions:
    texts: list[str]  # one per image, "" where there is none
    source: str  # "jsonl", "sidecar" or "filename"
    uncaptioned: list[str] = field(default_factory=list)  # image names without a caption
    orphans: list[str] = field(default_factory=list)  # caption entries naming no image in the data
    # caption entries whose image is in the data folder but not among the training images: held
    # out (--data.holdout, kept for eval) or skipped by the loader (data_report.json says why)
    held_out: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "captions.jsonl line 7: not JSON", ...

    def summary(self) -> str:
        n = len(self.texts)
        text = f"captions from {self.source}: {n - len(self.uncaptioned):,} of {n:,} images"
        extra = []
        if self.uncaptioned:
            extra.append(f"{len(self.uncaptioned):,} without a caption")
        if self.held_out:
            extra.append(f"{len(self.held_out):,} for images held out or skipped")
        if self.orphans:
            extra.append(f"{len(self.orphans):,} naming missing images")
        if self.problems:
            extra.append(f"{len(self.problems):,} unreadable lines")
        return text + (f" ({', '.join(extra)})" if extra else "")

    def report(self) -> dict[str, object]:
        return {
            "source": self.source,
            "n_captioned": len(self.texts) - len(self.uncaptioned),
            "uncaptioned": self.uncaptioned,
            "orphans": self.orphans,
            "held_out": self.held_out,
            "problems": self.problems,
        }


# camera and scanner names say nothing about the picture
_UNDESCRIPTIVE = {"img", "dsc", "dscn", "dscf", "image", "photo", "pic", "scan", "screenshot", "untitled"}


def caption_from_filename(name: str) -> str:
    """'red-heart_2.png' -> 'red heart'; 'sub/Cat_Face.jpg' -> 'cat face'; names without
    words ('0001.png', 'IMG_4711.jpg') give "" (no caption)."""
    stem = Path(name.split(":")[-1]).stem
    stem = re.sub(r"[_-]\d+$", "", stem)  # a trailing copy number
    words = [w.lower() for w in re.split(r"[\s_\-.]+", stem) if w]
    if not any(re.search(r"[^\W\d_]", w) for w in words) or " ".join(words) in _UNDESCRIPTIVE:
        return ""
    return " ".join(words)


def _clean(text: str) -> str:
    return " ".join(text.split())


def read_jsonl(path: Path) -> tuple[dict[str, str], list[str]]:
    """{file: text} from captions.jsonl, and a list of problems (bad lines are skipped)."""
    f = read_caption_file(path)
    problems = [f"{path.name} line {n}: {reason}" for n, reason in f.skipped]
    return {k: _clean(v) for k, v in f.texts.items()}, problems


def folder_group(name: str) -> str:
    """The sub-folder an image lies in, its caption and group under ``--captions folder`` (the
    ImageFolder convention): 'cats/a.png' -> 'cats', 'set.zip:cats/x/b.png' -> 'cats'; an
    image at the top of the data gives "" (no caption, no group)."""
    member = name.split(":", 1)[1] if ":" in name else name
    parts = member.split("/")
    return _clean(parts[0]) if len(parts) > 1 else ""


def read_groups(
    root: str, names: list[str], key: str = "group", mode: CaptionMode = "auto"
) -> list[str | None]:
    """Each image's group (None where it has none): its sub-folder under ``--captions folder``
    (or ``key == "folder"``), else the ``key`` field of its captions.jsonl record."""
    if mode == "folder" or key == "folder":
        return [folder_group(n) or None for n in names]
    path = Path(root) / CAPTIONS_FILE
    if not path.is_file():
        raise DataError(
            f"{path}: groups need captions.jsonl with a {key!r} field, or sub-folders (--captions folder)"
        )
    records: dict[str, str] = {}
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise DataError(f"{path}: cannot read groups ({e.strerror or e})") from None
    with fh:
        while line := fh.readline(MAX_LINE_BYTES + 1):
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                _skip_rest_of_line(fh)  # as read_caption_file: never held whole
                continue
            try:
                rec = json.loads(line.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("file"), str) and isinstance(rec.get(key), str):
                records[rec["file"]] = rec[key]
    return [records.get(n) for n in names]


def groups_if_any(root: str, names: list[str], mode: CaptionMode = "auto") -> list[str | None] | None:
    """Each image's group where the data has groups, else None: sub-folders under
    ``--captions folder``; else captions.jsonl's "group" field when some record has one; else
    sub-folders when every image lies in one and there are at least two."""
    if root.startswith("builtin"):
        return None
    if mode == "folder":
        groups = read_groups(root, names, mode="folder")
        return groups if any(g is not None for g in groups) else None
    if (Path(root) / CAPTIONS_FILE).is_file():
        groups = read_groups(root, names, "group", "jsonl")
        if any(g is not None for g in groups):
            return groups
    folders = [folder_group(n) for n in names]
    if folders and all(folders) and len(set(folders)) > 1:
        return list(folders)
    return None


def _folder_member(name: str) -> str | None:
    """The path of an image inside a folder data set (None for zip members and built-ins)."""
    return None if ":" in name else name


def read_captions(root: str, names: list[str], mode: CaptionMode = "auto") -> Captions:
    """Captions for ``names`` (ImageSet.names) of the data at ``root``."""
    folder = Path(root)
    if root.startswith("builtin"):
        raise ConfigError(
            "the built-in procedural data has no captions; train text-conditioned models on a "
            "captioned folder (e.g. artforge data emoji --out DIR)"
        )
    if mode == "auto":
        if folder.is_dir() and (folder / CAPTIONS_FILE).is_file():
            mode = "jsonl"
        elif folder.is_dir() and any(
            (folder / m).with_suffix(".txt").is_file() for m in names[:1000] if _folder_member(m)
        ):
            mode = "sidecar"
        else:
            mode = "filename"
    texts: list[str] = []
    uncaptioned: list[str] = []
    problems: list[str] = []
    orphans: list[str] = []
    held_out: list[str] = []
    if mode == "jsonl":
        path = folder / CAPTIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --captions jsonl, but there is no {CAPTIONS_FILE} here")
        found, problems = read_jsonl(path)
        for name in names:
            texts.append(found.get(name, ""))
        unused = sorted(set(found) - set(names))
        held_out = [f for f in unused if _in_folder(folder, f)]
        orphans = [f for f in unused if not _in_folder(folder, f)]
    elif mode == "sidecar":
        for name in names:
            member = _folder_member(name)
            side = (folder / member).with_suffix(".txt") if member else None
            text = ""
            if side is not None and side.is_file():
                try:
                    text = _clean(side.read_bytes()[:MAX_TEXT_CHARS].decode("utf-8", errors="replace"))
                except OSError as e:
                    problems.append(f"{side}: cannot read ({e.strerror})")
            texts.append(text)
    elif mode == "filename":
        texts = [caption_from_filename(n) for n in names]
    elif mode == "folder":
        texts = [folder_group(n) for n in names]
    else:
        raise ConfigError(f"--captions must be one of auto, jsonl, sidecar, filename, folder; got {mode!r}")
    uncaptioned = [n for n, t in zip(names, texts, strict=True) if not t]
    return Captions(texts, mode, uncaptioned, orphans, problems=problems, held_out=held_out)


def _in_folder(folder: Path, name: str) -> bool:
    """Is ``name`` (a captions.jsonl "file") a file inside ``folder``? Names that climb out are not."""
    try:
        path = (folder / name).resolve()
        return path.is_relative_to(folder.resolve()) and path.is_file()
    except (OSError, ValueError):
        return False

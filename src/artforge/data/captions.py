"""Captions for a folder of images: captions.jsonl, sidecar NAME.txt files, or file names.

``--captions auto`` takes captions.jsonl when the folder has one, else sidecar .txt files
when any image has one, else the file names. Nothing here stops training: an image without a
caption gets "" (the unconditional caption) and is reported, as is every caption line that
is broken or names an image that is not in the data.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

CaptionMode = Literal["auto", "jsonl", "sidecar", "filename"]
CAPTIONS_FILE = "captions.jsonl"
MAX_CAPTION_CHARS = 1000  # longer captions are cut (a text encoder sees ~256 tokens at most)


@dataclass
class Captions:
    texts: list[str]  # one per image, "" where there is none
    source: str  # "jsonl", "sidecar" or "filename"
    uncaptioned: list[str] = field(default_factory=list)  # image names without a caption
    orphans: list[str] = field(default_factory=list)  # caption entries naming no loaded image
    problems: list[str] = field(default_factory=list)  # "captions.jsonl line 7: not JSON", ...

    def summary(self) -> str:
        n = len(self.texts)
        text = f"captions from {self.source}: {n - len(self.uncaptioned):,} of {n:,} images"
        extra = []
        if self.uncaptioned:
            extra.append(f"{len(self.uncaptioned):,} without a caption")
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
    return " ".join(text.split())[:MAX_CAPTION_CHARS]


def read_jsonl(path: Path) -> tuple[dict[str, str], list[str]]:
    """{file: text} from captions.jsonl, and a list of problems (bad lines are skipped)."""
    found: dict[str, str] = {}
    problems: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if len(raw) > 1 << 20:
                problems.append(f"{path.name} line {lineno}: longer than 1 MiB, skipped")
                continue
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path.name} line {lineno}: not JSON ({e.msg})")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
                problems.append(f'{path.name} line {lineno}: expected {{"file": ..., "text": ...}}')
                continue
            if not isinstance(rec.get("text"), str):
                problems.append(f"{path.name} line {lineno}: no text for {rec['file']}")
                continue
            found[rec["file"]] = _clean(rec["text"])
    return found, problems


def _folder_member(name: str) -> str | None:
    """The path of an image inside a folder data set (None for zip members and built-ins)."""
    return None if ":" in name else name


def read_captions(root: str, names: list[str], mode: CaptionMode = "auto") -> Captions:
    """Captions for ``names`` (ImageSet.names) of the data at ``root``."""
    folder = Path(root)
    if root.startswith("builtin"):
        raise ValueError(
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
    if mode == "jsonl":
        path = folder / CAPTIONS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: --captions jsonl, but there is no {CAPTIONS_FILE} here")
        found, problems = read_jsonl(path)
        for name in names:
            texts.append(found.get(name, ""))
        orphans = sorted(set(found) - set(names))
    elif mode == "sidecar":
        for name in names:
            member = _folder_member(name)
            side = (folder / member).with_suffix(".txt") if member else None
            text = ""
            if side is not None and side.is_file():
                try:
                    text = _clean(side.read_bytes()[: 1 << 20].decode("utf-8", errors="replace"))
                except OSError as e:
                    problems.append(f"{side}: cannot read ({e.strerror})")
            texts.append(text)
    elif mode == "filename":
        texts = [caption_from_filename(n) for n in names]
    else:
        raise ValueError(f"--captions must be one of auto, jsonl, sidecar, filename; got {mode!r}")
    uncaptioned = [n for n, t in zip(names, texts, strict=True) if not t]
    return Captions(texts, mode, uncaptioned, orphans, problems)

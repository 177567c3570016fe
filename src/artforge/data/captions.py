"""Captions beside the images: ``captions.jsonl``, one ``{"file": ..., "text": ...}`` per line.

Text conditioning is not trained yet; this reader exists so that one broken line in a file of
ten thousand costs that line, not the data set. Every line that cannot be used is reported
with its line number and the reason, like the images the loader skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINE_BYTES = 64 * 1024  # longer lines are skipped unread (a caption is a sentence, not a book)
MAX_TEXT_CHARS = 4096


@dataclass
class Captions:
    """file name -> caption text, and the lines that were left out."""

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


def read_captions(path: str | Path) -> Captions:
    """Read a captions.jsonl file, keeping every good line and reporting the others.

    Raises FileNotFoundError / ValueError only when the file itself cannot be read.
    """
    path = Path(path)
    out = Captions()
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: captions file not found") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read captions ({e.strerror or e})") from None
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


def _parse_line(raw: bytes, number: int, out: Captions) -> str | None:
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

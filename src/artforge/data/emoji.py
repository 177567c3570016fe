"""Build the captioned emoji data set from Debian's Noto Color Emoji font and Unicode data.

Every fully-qualified emoji in ``emoji-test.txt`` is rendered with Pillow (raqm layout, so
ZWJ sequences, flags and skin tones shape into one glyph), cropped to its alpha box, padded
to a square and resized, and saved as ``NNNN.png`` (RGBA, transparent background) next to
``captions.jsonl``. The set is built in a hidden temporary folder and renamed into place,
so an interrupted build never leaves a half set that looks complete.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .builders import building, check_target

log = logging.getLogger(__name__)

FONT_PATH = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST_PATH = "/usr/share/unicode/emoji/emoji-test.txt"
INSTALL_HINT = "apt-get install fonts-noto-color-emoji unicode-data"
FONT_SIZE = 109  # the only size of the CBDT colour bitmaps; other sizes fail to load
CANVAS = (144, 136)  # a little larger than one 136 x 128 glyph cell
_LINE = re.compile(r"^([0-9A-Fa-f ]+?)\s*;\s*fully-qualified\s*#\s*\S+\s+E\d+\.\d+\s+(.+?)\s*$")


@dataclass(frozen=True)
class Emoji:
    codepoints: str  # "1F600" or "1F468 200D 1F469"
    text: str  # "grinning face"
    group: str
    subgroup: str

    @property
    def sequence(self) -> str:
        return "".join(chr(int(cp, 16)) for cp in self.codepoints.split())


def parse_emoji_test(path: str | Path) -> list[Emoji]:
    """Every fully-qualified line of emoji-test.txt, in file order, with group and subgroup."""
    group = subgroup = ""
    out: list[Emoji] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
            elif line.startswith("# subgroup:"):
                subgroup = line.split(":", 1)[1].strip()
            elif (m := _LINE.match(line)) is not None:
                out.append(Emoji(" ".join(m[1].split()).upper(), m[2], group, subgroup))
    return out


def load_font(font_path: str | Path = FONT_PATH) -> ImageFont.FreeTypeFont:
    """Noto Color Emoji at its bitmap size, laid out with raqm (needed for ZWJ sequences)."""
    if not Path(font_path).is_file():
        raise FileNotFoundError(f"emoji font {font_path} not found; install it with: {INSTALL_HINT}")
    layout = ImageFont.Layout.RAQM if _has_raqm() else ImageFont.Layout.BASIC
    if layout is ImageFont.Layout.BASIC:
        log.warning("Pillow has no raqm: ZWJ sequences and flags render as separate glyphs and are skipped")
    return ImageFont.truetype(str(font_path), FONT_SIZE, layout_engine=layout)


def _has_raqm() -> bool:
    from PIL import features

    return bool(features.check("raqm"))


def render_emoji(font: ImageFont.FreeTypeFont, seq: str, size: int, cell: float) -> Image.Image | str:
    """One emoji as a size x size RGBA image, or the reason it cannot be used."""
    if font.getlength(seq) > 1.25 * cell:  # the font fell back to several glyphs side by side
        return "renders as separate glyphs"
    canvas = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((4, 4), seq, font=font, embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return "renders blank"
    x0, y0, x1, y1 = bbox  # no aspect check: some real emoji are wide (hole, wavy dash)
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(canvas.crop(bbox), ((side - w) // 2, (side - h) // 2))
    return square.resize((size, size), Image.Resampling.LANCZOS)  # Pillow premultiplies alpha


def build_emoji(
    size: int,
    out: str | Path,
    *,
    limit: int | None = None,
    progress: bool = False,
    font_path: str | Path = FONT_PATH,
    emoji_test_path: str | Path = EMOJI_TEST_PATH,
) -> int:
    """Render the emoji set to ``out`` (NNNN.png + captions.jsonl); return how many were written."""
    if not 8 <= size <= 1024:
        raise ConfigError(f"emoji size must be between 8 and 1024 pixels, got {size}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if not Path(emoji_test_path).is_file():
        raise FileNotFoundError(f"emoji list {emoji_test_path} not found; install it with: {INSTALL_HINT}")
    font = load_font(font_path)
    entries = parse_emoji_test(emoji_test_path)
    if not entries:
        raise DataError(f"{emoji_test_path}: no fully-qualified emoji lines; is it emoji-test.txt?")
    out = Path(out)
    check_target(out, "captions.jsonl", "emoji set")
    if size > 128:
        log.info("emoji bitmaps are about 128 px; size %d upsamples them", size)

    cell = font.getlength("\U0001f600")  # one glyph's advance
    digits = max(4, len(str(len(entries))))
    written = 0
    skipped: list[tuple[str, str]] = []
    with building(out) as tmp:
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as captions:
            total = len(entries) if limit is None else min(limit, len(entries))
            bar = tqdm(entries, total=total, desc="rendering emoji", unit="emoji", disable=not progress)
            for e in bar:
                img = render_emoji(font, e.sequence, size, cell)
                if isinstance(img, str):
                    skipped.append((e.codepoints, img))
                    continue
                written += 1
                file = f"{written:0{digits}d}.png"
                img.save(tmp / file, optimize=False)
                record = {
                    "file": file,
                    "text": e.text,
                    "group": e.group,
                    "subgroup": e.subgroup,
                    "codepoints": e.codepoints,
                }
                captions.write(json.dumps(record, ensure_ascii=False) + "\n")
                if limit is not None and written >= limit:
                    break
            bar.close()
        if written == 0:
            raise DataError(f"no emoji rendered with {font_path}; first problems: {skipped[:3]}")
    for cps, why in skipped:
        log.debug("skipped emoji %s: %s", cps, why)
    # the count written is the caller's to say (artforge data emoji prints it): said here too it
    # reached the user twice; only what the caller cannot know, the skipped ones, is logged
    if skipped:
        log.info("%d emoji skipped: %s cannot draw them", len(skipped), Path(font_path).name)
    return written

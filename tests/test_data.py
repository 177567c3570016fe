"""artforge.data: decoding, conversion, resizing, skipping, zips, caches, built-in sets, emoji."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artforge.config import DataConfig
from artforge.data import DataError, ImageSet, builtin_names, load_images
from artforge.data import emoji as emoji_mod
from artforge.data import folder as folder_mod

RED, GREEN, BLUE = (220, 30, 40), (30, 200, 60), (20, 40, 210)


def load(path: Path | str, **kw: object) -> ImageSet:
    kw.setdefault("cache", "memory")
    return load_images(DataConfig(path=str(path), **kw))  # type: ignore[arg-type]


def pixel(s: ImageSet, i: int, y: int, x: int) -> tuple[int, ...]:
    return tuple(int(v) for v in s.images[i, :, y, x])


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def png_header_only(w: int, h: int) -> bytes:
    """A valid-looking PNG that claims w x h pixels but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def noise_bytes(fmt: str, size: int = 64) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


# -- formats and modes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "ext", "tol"),
    [
        ("PNG", "png", 0),
        ("JPEG", "jpg", 6),
        ("WEBP", "webp", 8),
        ("BMP", "bmp", 0),
        ("TIFF", "tiff", 0),
        ("GIF", "gif", 12),
    ],
)
def test_every_format_loads(tmp_path: Path, fmt: str, ext: str, tol: int) -> None:
    Image.new("RGB", (40, 30), RED).save(tmp_path / f"a.{ext}", fmt)
    s = load(tmp_path, height=16, width=16)
    assert s.images.shape == (1, 3, 16, 16) and s.images.dtype == torch.uint8
    assert s.images.is_contiguous()
    assert close(pixel(s, 0, 8, 8), RED, tol), pixel(s, 0, 8, 8)


def test_format_chosen_by_content_not_extension(tmp_path: Path) -> None:
    Image.new("RGB", (20, 20), BLUE).save(tmp_path / "really_a_png.jpg", "PNG")
    Image.new("RGB", (20, 20), RED).save(tmp_path / "image.dat", "PNG")  # not an image extension: ignored
    (tmp_path / "captions.jsonl").write_text('{"file": "x.png"}\n')
    (tmp_path / ".DS_Store").write_bytes(b"\0\1\2")
    (tmp_path / "notes.txt").write_text("hello")
    s = load(tmp_path, height=8, width=8)
    assert s.names == ["really_a_png.jpg"] and s.skipped == []
    assert pixel(s, 0, 4, 4) == BLUE


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (24, 24), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    s = load(tmp_path, height=12, width=12)
    assert close(pixel(s, 0, 6, 6), RED, 12)


@pytest.mark.parametrize(
    ("background", "expected"),
    [("#0000ff", (128, 0, 127)), ("white", (255, 128, 128)), ("#000", (128, 0, 0))],
)
def test_rgba_composited_over_background(tmp_path: Path, background: str, expected: tuple[int, ...]) -> None:
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(tmp_path / "half.png")
    s = load(tmp_path, height=10, width=10, background=background)
    assert close(pixel(s, 0, 5, 5), expected, 2), pixel(s, 0, 5, 5)


def test_bad_background_colour(tmp_path: Path) -> None:
    Image.new("RGB", (20, 20), RED).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match="not a colour"):
        load(tmp_path, background="#12345")


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path, fmt: str) -> None:
    img = Image.fromarray(np.full((20, 20), 32768, dtype=np.uint16))
    assert img.mode == "I;16"
    img.save(tmp_path / f"grey.{fmt.lower()}", fmt)
    s = load(tmp_path, height=8, width=8)
    assert close(pixel(s, 0, 4, 4), (128, 128, 128), 1), pixel(s, 0, 4, 4)


def test_other_modes(tmp_path: Path) -> None:
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.tiff")  # pure red
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(np.full((20, 20), 0.5, dtype=np.float32), "F").save(tmp_path / "float.tiff")
    Image.fromarray(np.full((20, 20), 40000, dtype=np.int32), "I").save(tmp_path / "int32.tiff")
    Image.new("1", (20, 20), 1).save(tmp_path / "bilevel.png")
    Image.new("LA", (20, 20), (200, 0)).save(tmp_path / "la.png")  # fully transparent grey
    s = load(tmp_path, height=8, width=8, background="#00ff00")
    got = {name: pixel(s, i, 4, 4) for i, name in enumerate(s.names)}
    assert s.skipped == []
    assert close(got["cmyk.tiff"], (255, 0, 0), 1)
    assert close(got["cmyk.jpg"], (255, 0, 0), 8)
    assert close(got["float.tiff"], (128, 128, 128), 1)
    assert close(got["int32.tiff"], (156, 156, 156), 1)  # 40000 >> 8
    assert got["bilevel.png"] == (255, 255, 255)
    assert got["la.png"] == (0, 255, 0)


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    img.paste(1, (10, 0, 20, 20))  # right half is index 1 (red); left half index 0, transparent
    img.save(tmp_path / "pal.png", transparency=0)
    s = load(tmp_path, height=20, width=20, background="#0000ff")
    assert pixel(s, 0, 10, 2) == (0, 0, 255)
    assert pixel(s, 0, 10, 17) == RED


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 40), RED)  # stored landscape: left half red, right half blue
    img.paste(BLUE, (30, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: left edge goes to the top
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    s = load(tmp_path, height=60, width=40, fit="stretch")
    assert close(pixel(s, 0, 5, 20), RED, 12), pixel(s, 0, 5, 20)  # top
    assert close(pixel(s, 0, 55, 20), BLUE, 12), pixel(s, 0, 55, 20)  # bottom


def test_big_jpeg_decoded_with_draft(tmp_path: Path) -> None:
    img = Image.new("RGB", (2400, 1600), RED)
    img.paste(BLUE, (1200, 0, 2400, 1600))
    img.save(tmp_path / "big.jpg", quality=90)
    s = load(tmp_path, height=32, width=48, fit="stretch")
    assert close(pixel(s, 0, 16, 4), RED, 8) and close(pixel(s, 0, 16, 44), BLUE, 8)


# -- sizes and fits ------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["crop", "pad", "stretch"])
@pytest.mark.parametrize(("h", "w"), [(100, 100), (48, 80), (32, 32)])
def test_output_shapes(tiny_folder: Path, fit: str, h: int, w: int) -> None:
    s = load(tiny_folder, height=h, width=w, fit=fit)
    assert s.images.shape == (16, 3, h, w)
    assert s.images.is_contiguous() and s.images.dtype == torch.uint8


def test_fit_semantics(tmp_path: Path) -> None:
    wide = Image.new("RGB", (90, 30), BLUE)  # blue | red | blue in thirds
    wide.paste(RED, (30, 0, 60, 30))
    wide.save(tmp_path / "wide.png")
    crop = load(tmp_path, height=32, width=32, fit="crop")  # keeps the centre square: all red
    assert close(pixel(crop, 0, 16, 16), RED, 2) and close(pixel(crop, 0, 16, 3), RED, 12)
    pad = load(tmp_path, height=32, width=32, fit="pad", background="#00ff00")  # 32 x 11 band in green
    assert pixel(pad, 0, 2, 16) == (0, 255, 0) and pixel(pad, 0, 29, 16) == (0, 255, 0)
    assert close(pixel(pad, 0, 16, 16), RED, 12) and close(pixel(pad, 0, 16, 2), BLUE, 12)
    stretch = load(tmp_path, height=32, width=30, fit="stretch")
    assert close(pixel(stretch, 0, 16, 2), BLUE, 12) and close(pixel(stretch, 0, 16, 15), RED, 12)


# -- broken data ---------------------------------------------------------------------------


def write_broken(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.png").write_bytes(b"")
    png, jpg = noise_bytes("PNG"), noise_bytes("JPEG")
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (folder / "page.png").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    (folder / "notes.jpg").write_text("just some text renamed to .jpg\n")
    (folder / "bomb.png").write_bytes(png_header_only(40000, 40000))  # over Pillow's own limit
    (folder / "huge.png").write_bytes(png_header_only(12000, 10000))  # over max_pixels


def test_broken_files_skipped_with_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_broken(folder)
    Image.new("RGB", (20, 20), GREEN).save(folder / "good.png")
    s = load(folder, height=8, width=8)
    assert s.names == ["good.png"] and pixel(s, 0, 4, 4) == GREEN
    reasons = dict(s.skipped)
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["truncated.png"].startswith("corrupt or truncated (")
    assert reasons["truncated.jpg"].startswith("corrupt or truncated (")
    assert reasons["page.png"] == "not an image (looks like HTML/XML)"
    assert reasons["notes.jpg"] == "not an image (a text file)"
    assert reasons["bomb.png"].startswith("too large (")
    assert reasons["huge.png"] == "too large (12000 x 10000 pixels > 100,000,000)"
    kinds = "2 corrupt, 2 not an image, 2 too large, 1 empty"
    assert s.summary().startswith(f"1 image from {folder} (7 skipped: {kinds}: bomb.png: too large (")
    named = "; empty.png: empty file (0 bytes); huge.png: too large (12000 x 10000 pixels > 100,000,000)"
    assert named + "; and 4 more; " in s.summary()
    assert s.summary().endswith("; 1 degenerate but kept: good.png: flat (every pixel the same colour))")
    s.write_report(tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["root"] == str(folder) and report["n_images"] == 1
    assert {"file": "huge.png", "reason": reasons["huge.png"]} in report["skipped"]


def test_max_pixels_checked_before_decoding(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100), RED).save(tmp_path / "big.png")
    Image.new("RGB", (50, 50), RED).save(tmp_path / "small.png")
    s = load(tmp_path, height=8, width=8, max_pixels=5000)
    assert s.names == ["small.png"] and s.skipped == [("big.png", "too large (100 x 100 pixels > 5,000)")]


def test_all_broken_raises_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    write_broken(folder)
    with pytest.raises(DataError, match=str(folder)) as err:
        load(folder)
    assert "no usable images" in str(err.value) and "empty file (0 bytes)" in str(err.value)


def test_empty_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files found"):
        load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        load(tmp_path / "nope")
    (tmp_path / "single.txt").write_text("x")
    with pytest.raises(DataError, match="not a .zip"):
        load(tmp_path / "single.txt")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (20, 20), RED).save(tmp_path / "a.png")
    Image.new("RGB", (20, 20), RED).save(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    real_open = open

    def open_as_user(file: object, *args: object, **kwargs: object) -> object:  # root ignores chmod 0
        if str(file).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(folder_mod, "open", open_as_user, raising=False)
    s = load(tmp_path, height=8, width=8)
    assert s.names == ["a.png"] and s.skipped == [("locked.png", "unreadable (permission denied)")]


def test_recursive_sorted_and_symlink_loop(tiny_folder: Path) -> None:
    sub = tiny_folder / "b_sub"
    sub.mkdir()
    Image.new("RGB", (20, 20), RED).save(sub / "deep.png")
    (tiny_folder / ".hidden").mkdir()
    Image.new("RGB", (20, 20), RED).save(tiny_folder / ".hidden" / "x.png")
    os.symlink(tiny_folder, sub / "loop")  # would recurse forever if followed blindly
    s = load(tiny_folder, height=8, width=8)
    assert len(s) == 17 and s.names == sorted(s.names) and "b_sub/deep.png" in s.names


# -- zips and caches -----------------------------------------------------------------------


def make_zip(folder: Path, out: Path) -> None:
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("pictures/", "")  # a directory entry
        zf.writestr("__MACOSX/._img_000.png", b"\0\5\26\7 mac metadata")
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())


def test_zip_equals_folder(tiny_folder: Path, tmp_path: Path) -> None:
    (tiny_folder / "sub").mkdir()
    Image.new("RGB", (30, 20), BLUE).save(tiny_folder / "sub" / "z.png")
    (tiny_folder / "bad.png").write_bytes(b"")
    make_zip(tiny_folder, tmp_path / "set.zip")
    a = load(tiny_folder, height=24, width=40)
    b = load(tmp_path / "set.zip", height=24, width=40)
    assert torch.equal(a.images, b.images) and len(a) == 17
    assert b.names == [f"set.zip:{n}" for n in a.names]
    assert b.skipped == [("set.zip:bad.png", "empty file (0 bytes)")]


def test_zip_member_size_guard(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_zip(tiny_folder, tmp_path / "set.zip")
    monkeypatch.setattr(folder_mod, "MAX_FILE_BYTES", 100)
    with pytest.raises(DataError, match="too large"):
        load(tmp_path / "set.zip")


def test_disk_cache_reused_without_decoding(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cfg = DataConfig(path=str(tiny_folder), height=20, width=28, cache="disk", cache_dir=str(cache))
    first = load_images(cfg)
    memory = load_images(dataclasses.replace(cfg, cache="memory"))
    assert torch.equal(first.images, memory.images) and first.names == memory.names
    assert len(list(cache.glob("*.u8"))) == 1 and len(list(cache.glob("*.json"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the disk cache should have been reused")

    with monkeypatch.context() as m:
        m.setattr(folder_mod, "open_image", no_decoding)
        m.setattr(folder_mod, "finish", no_decoding)
        second = load_images(cfg)
    assert torch.equal(second.images, memory.images) and second.names == memory.names

    Image.new("RGB", (20, 20), RED).save(tiny_folder / "img_000.png")  # the data changed: new cache
    third = load_images(cfg)
    assert pixel(third, 0, 10, 14) == RED and len(list(cache.glob("*.u8"))) == 2
    assert not list(cache.glob(".*tmp*"))


def test_auto_cache_goes_to_disk_when_memory_is_short(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import artforge.data as data_mod

    monkeypatch.setattr(data_mod, "total_ram_bytes", lambda: 1000)
    s = load(tiny_folder, height=16, width=16, cache="auto", cache_dir=str(tmp_path / "c"))
    assert len(s) == 16 and len(list((tmp_path / "c").glob("*.u8"))) == 1


# -- built-in sets -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["builtin", "builtin:shapes", "builtin:stripes"])
@pytest.mark.parametrize(("h", "w"), [(100, 100), (48, 80)])
def test_builtin_deterministic_and_varied(name: str, h: int, w: int) -> None:
    a = load(name, height=h, width=w, builtin_count=12)
    b = load(name, height=h, width=w, builtin_count=12)
    assert a.images.shape == (12, 3, h, w) and torch.equal(a.images, b.images)
    flat = a.images.reshape(12, -1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(12) for j in range(i + 1, 12))
    assert all(len(torch.unique(flat[i])) > 2 for i in range(12))  # never a blank picture
    assert a.names[3] == f"builtin:{name.split(':')[-1] if ':' in name else 'shapes'}/000003"


def test_builtin_image_depends_only_on_index() -> None:
    few = load("builtin", height=32, width=32, builtin_count=3)
    many = load("builtin", height=32, width=32, builtin_count=10)
    assert torch.equal(few.images, many.images[:3])


def test_builtin_unknown_name() -> None:
    assert {"shapes", "stripes"} <= set(builtin_names())
    with pytest.raises(ValueError, match="builtin:shapes"):
        load("builtin:nonsense")


# -- emoji ---------------------------------------------------------------------------------

needs_emoji = pytest.mark.skipif(
    not (Path(emoji_mod.FONT_PATH).is_file() and Path(emoji_mod.EMOJI_TEST_PATH).is_file()),
    reason="needs Debian fonts-noto-color-emoji and unicode-data (apt-get install fonts-noto-color-emoji "
    "unicode-data)",
)


@needs_emoji
def test_build_emoji(tmp_path: Path) -> None:
    out = tmp_path / "emoji"
    assert emoji_mod.build_emoji(32, out, limit=20) == 20
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:04d}.png" for i in range(1, 21)]
    records = [json.loads(line) for line in (out / "captions.jsonl").read_text().splitlines()]
    assert len(records) == 20
    assert all(set(r) == {"file", "text", "group", "subgroup", "codepoints"} for r in records)
    assert records[0] == {
        "file": "0001.png",
        "text": "grinning face",
        "group": "Smileys & Emotion",
        "subgroup": "face-smiling",
        "codepoints": "1F600",
    }
    with Image.open(pngs[0]) as im:
        assert im.mode == "RGBA" and im.size == (32, 32)
        rgba = np.asarray(im)
    assert rgba[0, 0, 3] == 0  # transparent corner
    opaque = rgba[rgba[..., 3] == 255][:, :3].astype(float).mean(0)
    assert opaque[0] > 170 and opaque[1] > 130 and opaque[2] < 110, opaque  # yellow, not a black glyph
    s = load(out, height=16, width=16)
    assert len(s) == 20 and s.names[0] == "0001.png" and s.skipped == []
    assert emoji_mod.build_emoji(16, out, limit=3) == 3  # rebuilding replaces the old set
    assert len(list(out.glob("*.png"))) == 3 and not list(tmp_path.glob(".*"))


@needs_emoji
def test_build_emoji_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("important")
    with pytest.raises(FileExistsError, match="not empty"):
        emoji_mod.build_emoji(32, tmp_path, limit=1)
    assert (tmp_path / "mine.txt").read_text() == "important"


def test_build_emoji_missing_files(tmp_path: Path) -> None:
    hint = "apt-get install fonts-noto-color-emoji unicode-data"
    with pytest.raises(FileNotFoundError, match=hint) as err:
        emoji_mod.build_emoji(
            32, tmp_path / "out", font_path=tmp_path / "NoFont.ttf", emoji_test_path=Path(__file__)
        )
    assert "NoFont.ttf" in str(err.value)
    with pytest.raises(FileNotFoundError, match=hint) as err:
        emoji_mod.build_emoji(32, tmp_path / "out", emoji_test_path=tmp_path / "no-emoji-test.txt")
    assert "no-emoji-test.txt" in str(err.value)
    assert not (tmp_path / "out").exists()


# -- the hold-out split -----------------------------------------------------------------------


def test_hold_out_split_is_pinned_and_nested() -> None:
    """Which files a run trained with --data.holdout=S left out is part of its folder: these
    lists were chosen by the rule runs have trained with (crc32 of the name, 10,000 buckets), and
    must never change. A larger share holds out a superset (the sound judge's 20% contains a
    run's 10%)."""
    from artforge.data.holdout import is_held_out

    names = [f"{i:04d}.png" for i in range(100)] + ["cat.png", "sub/dog.jpg", "été.png"]
    held_10 = [n for n in names if is_held_out(n, 0.1)]
    held_20 = [n for n in names if is_held_out(n, 0.2)]
    assert held_10 == [f"00{i}.png" for i in (45, 48, 56, 61, 66, 69, 92, 98, 99)] + ["cat.png"]
    assert held_20 == [
        f"00{i}.png"
        for i in (15, 23, 27, 35, 43, 45, 48, 56, 61, 66, 68, 69, 75, 78, 80, 88, 91, 92, 95, 98, 99)
    ] + ["cat.png"]
    assert set(held_10) <= set(held_20)
    assert not any(is_held_out(n, 0.0) for n in names)

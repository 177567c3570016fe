"""Hostile inputs: a corpus of broken, odd and malicious files, run through the real loader and CLI.

Every kind must give a clear message (a skip reason naming the problem, or a one-line error
naming the file) and must not stop good files from loading or a run from finishing.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import artforge
from artforge.cli import main as cli_main
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.data import load_images, read_caption_file
from artforge.training import Trainer

SRC = str(Path(__file__).parents[1] / "src")
RED, BLUE = (220, 30, 40), (20, 40, 210)
NON_UTF8 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 file name, not valid UTF-8


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(w: int, h: int) -> bytes:
    """A PNG header that claims w x h pixels but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int = 48, h: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def build_corpus(folder: Path, locked: bool = False) -> dict[str, str | None]:
    """Write the hostile corpus; return file -> expected skip-reason prefix (None: it loads)."""
    folder.mkdir(parents=True)
    expect: dict[str, str | None] = {}

    def put(name: str, data: bytes, reason: str | None) -> None:
        (folder / name).write_bytes(data)
        expect[name] = reason

    png, jpg = encoded(noise(), "PNG"), encoded(noise(), "JPEG")
    # broken or not images at all
    put("truncated.png", png[: len(png) // 2], "corrupt or truncated (")
    put("truncated.jpg", jpg[: len(jpg) // 2], "corrupt or truncated (")
    webp = encoded(noise(), "WEBP")
    put("truncated.webp", webp[: len(webp) // 2], "corrupt or truncated (")
    put("empty.png", b"", "empty file (0 bytes)")
    put(
        "page.png",
        b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
        "not an image (looks like HTML/XML)",
    )
    put("notes.jpg", b"just some text renamed to .jpg\n", "not an image (a text file)")
    put(
        "random.gif",
        np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "not an image",
    )
    bad_crc = bytearray(png)
    bad_crc[60] ^= 0xFF  # inside the first IDAT chunk: its CRC no longer matches
    put("bad_crc.png", bytes(bad_crc), "corrupt or truncated (")
    put("zero_width.png", png_claiming(0, 10), "corrupt or truncated (")
    put("bomb.png", png_claiming(40000, 40000), "too large (")  # over Pillow's own limit
    put("huge.png", png_claiming(12000, 10000), "too large (12000 x 10000 pixels")  # over max_pixels
    bmp = bytearray(encoded(Image.new("RGB", (4, 4)), "BMP"))
    bmp[18:26] = struct.pack("<ii", 60000, 60000)  # a BMP header claiming 3.6 gigapixels
    put("bomb.bmp", bytes(bmp), "too large (")
    with open(folder / "sparse_giant.png", "wb") as f:  # 600 MiB without writing them
        f.truncate(600 * 2**20)
    expect["sparse_giant.png"] = "too large (600 MiB file)"
    put(
        "drawing.svg",
        b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>',
        "unsupported format (SVG",
    )
    put(
        "svg_named.png",
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
        "not an image (looks",
    )
    # odd but valid: these must load
    put("lab.tif", encoded(Image.new("LAB", (8, 8), (50, 0, 0)), "TIFF"), None)  # CIELAB colours
    put("png_named.jpg", png, None)  # wrong extensions: the format is read from the content
    put("jpeg_named.gif", jpg, None)
    put("one_pixel.png", encoded(Image.new("RGB", (1, 1), RED), "PNG"), None)
    put("wide_20000x10.png", encoded(Image.new("RGB", (20000, 10), RED), "PNG"), None)
    put("gray16.png", encoded(Image.fromarray(np.full((12, 12), 40000, np.uint16)), "PNG"), None)
    put("cmyk.jpg", encoded(Image.new("CMYK", (12, 12), (0, 255, 255, 0)), "JPEG"), None)
    pal = Image.new("P", (12, 12), 0)
    pal.putpalette([0, 0, 0, *RED] + [0] * (256 * 3 - 6))
    pal.paste(1, (6, 0, 12, 12))
    put("palette_transparent.png", encoded(pal, "PNG", transparency=0), None)
    frames = [Image.new("RGB", (12, 12), c) for c in (RED, BLUE, RED)]
    put("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50), None)
    rot = Image.new("RGB", (30, 20), RED)
    rot.paste(BLUE, (15, 0, 30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif_rotated.jpg", encoded(rot, "JPEG", exif=exif, quality=95), None)
    put("broken_exif.jpg", encoded(noise(), "JPEG", exif=b"Exif\0\0II*\0\xff\xff\xff\xff garbage"), None)
    put(NON_UTF8, png, None)  # written as the bytes caf\xe9.png
    (folder / "album.png").mkdir()  # a folder with an image name, holding an image
    put("album.png/inside.png", png, None)
    # links, pipes, permissions
    (folder / "sub").mkdir()
    put("sub/good.png", png, None)
    os.symlink("..", folder / "sub" / "loop")  # a symlink loop: must not recurse forever
    os.symlink(folder / "missing.png", folder / "dangling.png")
    expect["dangling.png"] = "unreadable (broken link or file vanished)"
    os.mkfifo(folder / "pipe.png")  # opening it would block forever
    expect["pipe.png"] = "not a regular file"
    if locked:
        put("locked.png", png, "unreadable (permission denied)")
        (folder / "locked.png").chmod(0)
    return expect


def check_against(expect: dict[str, str | None], names: list[str], skipped: list[tuple[str, str]]) -> None:
    reasons = dict(skipped)
    good = sorted(k for k, v in expect.items() if v is None)
    assert sorted(names) == good
    for name, prefix in expect.items():
        if prefix is not None:
            assert name in reasons, f"{name} was neither loaded nor reported"
            assert reasons[name].startswith(prefix), (name, reasons[name])
    assert set(reasons) == {k for k, v in expect.items() if v is not None}


def test_corpus_has_at_least_25_kinds(tmp_path):
    expect = build_corpus(tmp_path / "corpus", locked=True)
    assert all(os.path.lexists(tmp_path / "corpus" / name) for name in expect)  # real files on disk
    kinds = len(expect) + len(CONFIG_CASES) + len(RUN_CASES) + 1 + 1  # + impossible sizes, captions
    print(f"hostile corpus: {len(expect)} files, {len(CONFIG_CASES)} configs, {len(RUN_CASES)} run folders")
    assert kinds >= 25 and len(expect) >= 25


def test_loader_on_the_hostile_corpus(tmp_path):
    expect = build_corpus(tmp_path / "corpus")
    s = load_images(DataConfig(path=str(tmp_path / "corpus"), height=16, width=16, cache="memory"))
    check_against(expect, s.names, s.skipped)
    img = {n: s.images[i] for i, n in enumerate(s.names)}
    assert tuple(img["one_pixel.png"][:, 8, 8].tolist()) == RED
    assert img["gray16.png"][0, 8, 8] == 40000 >> 8  # 16-bit scaled, not clipped to white
    top, bottom = img["exif_rotated.jpg"][:, 1, 8].tolist(), img["exif_rotated.jpg"][:, 14, 8].tolist()
    assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]  # turned upright: red above blue
    assert tuple(img["palette_transparent.png"][:, 8, 1].tolist()) == (255, 255, 255)  # over white


def drop_file_permission_override() -> None:
    """In the child, before exec: drop root's power to read any file (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH) from the capability bounding set, so chmod 000 means unreadable."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_cli_trains_on_the_hostile_corpus(tmp_path):
    expect = build_corpus(tmp_path / "corpus", locked=True)
    probe = subprocess.run(
        ["cat", str(tmp_path / "corpus" / "locked.png")],
        preexec_fn=drop_file_permission_override if os.geteuid() == 0 else None,
        capture_output=True,
    )
    if probe.returncode == 0:
        pytest.skip("cannot make a file unreadable here (root without a way to drop CAP_DAC_OVERRIDE)")
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "artforge",
        "-q",
        "train",
        "--data",
        str(tmp_path / "corpus"),
        "--size",
        "16",
    ]
    cmd += ["--model", "vae", "--model.base_channels=8", "--batch-size", "4", "--steps", "3", "--grid-n", "4"]
    cmd += ["--out", str(out)]
    p = subprocess.run(
        cmd,
        env={**os.environ, "PYTHONPATH": SRC},
        preexec_fn=drop_file_permission_override if os.geteuid() == 0 else None,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    report = json.loads((out / "data_report.json").read_text())
    check_against(
        expect,
        [n for n, r in expect.items() if r is None],
        [(s["file"], s["reason"]) for s in report["skipped"]],
    )
    assert report["n_images"] == sum(r is None for r in expect.values())
    artforge.load(out, device="cpu")


# -- captions -----------------------------------------------------------------------------------


def test_caption_reader_keeps_good_lines_and_reports_broken_ones(tmp_path):
    path = tmp_path / "captions.jsonl"
    lines = [
        b'\xef\xbb\xbf{"file": "0001.png", "text": "grinning face"}',  # a byte-order mark first
        b'{"file": "0002.png", "text": "red heart"',  # cut short
        b"",  # blank: fine
        b"[1, 2, 3]",
        b'{"file": "0003.png"}',
        b'{"text": "no file"}',
        b'{"file": "0004.png", "text": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"file": "0005.png", "text": "' + b"a" * 200_000 + b'"}',  # a huge line
        b'{"file": "0006.png", "text": "' + "\u00e9".encode() * 5000 + b'"}',  # long caption
        b'{"file": "0001.png", "text": "again"}',
        b'{"file": "0007.png", "text": "star"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n" + b'{"file": "0008.png", "text": "no newline at end"}')
    c = read_caption_file(path)
    assert c.texts == {"0001.png": "grinning face", "0007.png": "star", "0008.png": "no newline at end"}
    reasons = dict(c.skipped)
    assert reasons[2].startswith("not valid JSON")
    assert reasons[4] == "expected a JSON object, got list"
    assert reasons[5] == "no \"text\" for '0003.png'" and reasons[6] == 'no "file" name'
    assert reasons[7].startswith("not UTF-8")
    assert reasons[8].startswith("line too long (200,")
    assert reasons[9].startswith("caption of '0006.png' too long")
    assert reasons[10].startswith("a second caption for '0001.png'")
    assert sorted(reasons) == [2, 4, 5, 6, 7, 8, 9, 10]
    assert "8 lines skipped: line 2: not valid JSON" in c.summary(path)
    with pytest.raises(FileNotFoundError, match="captions file not found"):
        read_caption_file(tmp_path / "nope.jsonl")


# -- configs ------------------------------------------------------------------------------------


CONFIG_CASES = {
    "malformed TOML": ("bad.toml", b"[train\nsteps = 10\n", "bad.toml: not valid TOML"),
    "malformed JSON": ("bad.json", b'{"train": {"steps": 10,}}', "bad.json: not valid JSON"),
    "binary config": ("blob.toml", b"\x00\xff\xfe\x80garbage", "blob.toml: not valid TOML"),
    "JSON list": ("list.json", b"[1, 2]", "the top level must be a table"),
    "unknown model": ("m.toml", b'family = "stylegan9"\n', "unknown model 'stylegan9'"),
    "unknown setting": ("u.toml", b"[train]\nstpes = 10\n", "unknown setting train.stpes"),
    "wrong type": ("t.toml", b'[train]\nsteps = "ten"\n', "train.steps must be an integer"),
    "zero size": ("z.toml", b"[data]\nheight = 0\nwidth = 0\n", "image size must be at least 8x8"),
    "huge size": ("h.toml", b"[data]\nheight = 100000\n", "image size must be at most 4096x4096"),
    "negative steps": ("n.toml", b"[train]\nsteps = -5\n", "--steps must be positive"),
    "bad model setting": ("b.toml", b"[model]\nbase_channels = -3\n", "base_channels"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_cli_refuses_bad_configs_with_one_line(case, tmp_path, capsys):
    name, data, message = CONFIG_CASES[case]
    (tmp_path / name).write_bytes(data)
    rc = cli_main(
        ["-q", "train", "--config", str(tmp_path / name), "--dry-run", "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert err.startswith("artforge: error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("0", "at least 8x8"),
        ("100000", "at most 4096x4096"),
        ("abc", "bad size 'abc'"),
        ("64x-3", "at least 8x8"),
    ],
)
def test_cli_refuses_impossible_sizes(size, message, capsys):
    try:
        rc = cli_main(["-q", "train", "--data", "builtin", f"--size={size}", "--dry-run"])
    except SystemExit as e:  # argparse refuses a size that is not a number, with usage
        rc = e.code
    err = capsys.readouterr().err
    assert rc in (1, 2) and message in err and "Traceback" not in err


# -- weights and run folders --------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("good") / "run"
    cfg = RunConfig(
        family="vae",
        model={"base_channels": 8, "latent_dim": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=16),
        train=TrainConfig(steps=2, batch_size=4, sample_every=0, grid_n=4),
    )
    Trainer(cfg, run, progress=False).train()
    return run


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model.safetensors"))


def _break(kind: str, run: Path, marker: Path) -> None:
    w = run / "model.safetensors"
    if kind == "pickle weights":
        w.write_bytes(pickle.dumps({"w": _Evil(str(marker))}))
    elif kind == "torch.save weights":
        torch.save({"w": _Evil(str(marker))}, w)
    elif kind == "wrong shape":
        sd = _weights(run)
        k = next(k for k, v in sd.items() if v.dim() == 4)
        sd[k] = torch.zeros(*sd[k].shape[:-1], sd[k].shape[-1] + 1)
        save_file(sd, str(w))
    elif kind == "wrong dtype":
        sd = _weights(run)
        k = next(k for k, v in sd.items() if v.is_floating_point())
        sd[k] = sd[k].double()
        save_file(sd, str(w))
    elif kind == "missing tensor":
        sd = _weights(run)
        sd.pop(sorted(sd)[0])
        save_file(sd, str(w))
    elif kind == "huge header":
        w.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif kind == "newer format":
        cfg = json.loads((run / "config.json").read_text())
        cfg["format_version"] = 99
        (run / "config.json").write_text(json.dumps(cfg))
    elif kind == "broken config.json":
        (run / "config.json").write_text('{"family": "vae", ')
    elif kind == "config.json unknown model":
        cfg = json.loads((run / "config.json").read_text())
        cfg["family"] = "stylegan9"
        (run / "config.json").write_text(json.dumps(cfg))
    elif kind == "pickle trainer state":
        torch.save({"step": _Evil(str(marker))}, run / "state" / "trainer.pt")
    elif kind == "truncated trainer state":
        t = run / "state" / "trainer.pt"
        t.write_bytes(t.read_bytes()[:200])
    else:
        raise AssertionError(kind)


RUN_CASES = {
    # kind: (command, message)
    "pickle weights": ("sample", "this is a pickle"),
    "torch.save weights": ("sample", "this is a pickle"),
    "wrong shape": ("sample", "has shape"),
    "wrong dtype": ("sample", "has dtype torch.float64, the model expects torch.float32"),
    "missing tensor": ("sample", "weights do not match the model (missing"),
    "huge header": ("sample", "not a valid safetensors file"),
    "newer format": ("sample", "run format version 99 is newer than this artforge"),
    "broken config.json": ("sample", "config.json: not valid JSON"),
    "config.json unknown model": ("sample", "unknown model 'stylegan9'"),
    "pickle trainer state": ("resume", "trainer.pt: cannot read trainer state"),
    "truncated trainer state": ("resume", "trainer.pt: cannot read trainer state"),
}


@pytest.mark.parametrize("kind", sorted(RUN_CASES))
def test_cli_refuses_broken_run_folders(kind, good_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    marker = tmp_path / "pwned"
    _break(kind, run, marker)
    command, message = RUN_CASES[kind]
    if command == "sample":
        argv = ["-q", "sample", str(run), "-n", "2", "--seed", "0", "--out", str(tmp_path / "g.png")]
    else:
        argv = ["-q", "train", "--out", str(run), "--resume", "--steps", "4"]
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err, err
    assert not marker.exists()  # nothing was unpickled

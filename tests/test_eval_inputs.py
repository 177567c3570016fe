"""`artforge eval --fake DIR` on hostile folders: every generated file goes through the training
loader's checks, the size compared at comes from the real side, and memory stays bounded.

Real files on disk and the real FID network (the tests that need it skip when it is missing).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artforge.cli import main
from artforge.config import DataConfig, RunConfig
from artforge.data import DataError
from artforge.evaluate import MAX_AUTO_SIDE, _real_config, data_size, fit_side
from artforge.runs import write_config

SRC = str(Path(__file__).parents[1] / "src")
REAL_W, REAL_H = 24, 20  # the real images' size: what every eval here must compare at


def png_claiming(w: int, h: int) -> bytes:
    """A PNG header that claims w x h pixels but holds almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def noise_pngs(folder: Path, n: int, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One feature cache for this file's tests: the real images' features are computed once."""
    folder = tmp_path_factory.getbasetemp() / "eval-inputs-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@pytest.fixture
def real(tmp_path: Path) -> Path:
    return noise_pngs(tmp_path / "real", 8, REAL_W, REAL_H, seed=1)


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """8 good 16x16 generated images; each test adds one hostile file that sorts first ('-')."""
    return noise_pngs(tmp_path / "fake", 8, 16, 16, seed=2)


def run_eval(capsys, fake: Path, real: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    rc = main(["-q", "eval", "--fake", str(fake), "--data", str(real), "--json", str(out), *extra])
    err = capsys.readouterr().err
    return rc, (json.loads(out.read_text()) if rc == 0 else {}), err


# -- the size compared at ------------------------------------------------------------------------


def test_data_size_is_the_most_common_real_size_from_headers(tmp_path):
    folder = noise_pngs(tmp_path / "d", 3, 30, 20, seed=0)
    Image.new("RGB", (50, 50)).save(folder / "a_square.png")
    (folder / "-bomb.png").write_bytes(png_claiming(40000, 40000))  # refused from its header
    (folder / "-text.png").write_text("not a picture")
    assert data_size(folder) == (20, 30)
    assert data_size("builtin:shapes") == (64, 64)  # a built-in set: DataConfig's default


def test_data_size_of_large_images_is_capped(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (2048, 1024), (9, 9, 9)).save(folder / "wide.png")
    assert data_size(folder) == (MAX_AUTO_SIDE // 2, MAX_AUTO_SIDE)
    assert fit_side(3, 4000) == (8, 512) and fit_side(4000, 3000, 4096) == (4000, 3000)


def test_data_size_of_only_bad_files_names_the_folder_and_reasons(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (folder / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"bad: no usable images \(2 files skipped: bomb.png: too large"):
        data_size(folder)


# -- hostile generated folders (the real network) --------------------------------------------------


def test_bomb_sorting_first_is_skipped_and_named(network, cache, tmp_path, capsys, caplog, real, fakes):
    (fakes / "-bomb.png").write_bytes(png_claiming(40000, 40000))
    rc, res, err = run_eval(capsys, fakes, real, tmp_path / "e.json")
    assert rc == 0, err
    assert res["n_fake"] == 8 and res["n_real"] == 8 and res["size"] == [REAL_W, REAL_H]
    assert [s["file"] for s in res["skipped"]["fake"]] == ["-bomb.png"]
    assert res["skipped"]["fake"][0]["reason"].startswith("too large (")
    assert "Traceback" not in err
    assert "fake (generated): 1 of 9 files skipped: -bomb.png: too large" in caplog.text  # a warning


def test_a_huge_first_file_does_not_set_the_size_or_the_memory(network, cache, tmp_path, real, fakes):
    """Before, every fake was upscaled to the first file's 4096 x 4096 (over 2 GB here for 9
    images); now each one is decoded straight to the real data's size."""
    Image.new("RGB", (4096, 4096), (200, 30, 40)).save(fakes / "-huge.png")
    out = tmp_path / "e.json"
    probe = (
        "import resource, sys\n"
        "from artforge.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_CACHE_HOME": str(cache)}
    argv = ["-q", "eval", "--fake", str(fakes), "--data", str(real), "--json", str(out), "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-c", probe, *argv], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(out.read_text())
    assert res["size"] == [REAL_W, REAL_H] and res["n_fake"] == 9 and res["skipped"]["fake"] == []
    peak_mib = int(proc.stderr.split("peak_kib")[1].split()[0]) / 1024
    # torch + the network + one 4096^2 decode (48 MiB) stay well under this; 9 upscaled copies
    # and their float batch (about 2.3 GB) do not
    assert peak_mib < 1200, f"peak memory {peak_mib:.0f} MiB"


def test_a_sliver_sorting_first_does_not_refuse_the_eval(network, cache, tmp_path, capsys, real, fakes):
    Image.new("RGB", (4000, 3), (0, 90, 200)).save(fakes / "-sliver.png")
    rc, res, err = run_eval(capsys, fakes, real, tmp_path / "e.json")
    assert rc == 0, err
    assert res["size"] == [REAL_W, REAL_H]
    assert res["n_fake"] + len(res["skipped"]["fake"]) == 9  # loaded, or skipped with a reason


def test_a_folder_of_only_bad_files_is_one_line_naming_it(network, cache, tmp_path, capsys, real):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (bad / "empty.png").write_bytes(b"")
    (bad / "page.png").write_text("<html>not found</html>")
    rc, _, err = run_eval(capsys, bad, real, tmp_path / "e.json")
    assert rc == 1 and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and line.startswith(f"artforge: error: {bad}: no usable images (3 files skipped")
    for reason in ("bomb.png: too large", "empty.png: empty file", "page.png: not an image"):
        assert reason in line


def test_too_few_usable_fakes_names_the_folder(network, cache, tmp_path, capsys, real):
    few = noise_pngs(tmp_path / "few", 2, 16, 16, seed=3)
    (few / "bomb.png").write_bytes(png_claiming(40000, 40000))
    rc, _, err = run_eval(capsys, few, real, tmp_path / "e.json")
    assert rc == 1 and "Traceback" not in err
    assert f"{few}: 2 usable images; evaluation needs at least 4" in err and "bomb.png: too large" in err


def test_size_comes_from_size_then_a_run_then_the_real_images(tmp_path, real):
    run = tmp_path / "run"  # a run folder's config.json: its data, at its size, fit and background
    run.mkdir()
    write_config(RunConfig(data=DataConfig(path=str(real), height=16, width=12, fit="pad")), run)
    cfg, _ = _real_config(run, None, "crop")
    assert (cfg.height, cfg.width, cfg.fit, cfg.path) == (16, 12, "pad", str(real))
    cfg, why = _real_config(run, (40, 30), "crop")
    assert (cfg.height, cfg.width, cfg.fit, why) == (40, 30, "pad", "--size")
    cfg, _ = _real_config(real, None, "stretch")
    assert (cfg.height, cfg.width, cfg.fit) == (REAL_H, REAL_W, "stretch")
    assert main(["-q", "eval", str(run), "--size", "16", "-n", "4"]) == 2  # a RUN has its own size


def test_eval_against_a_run_folder_uses_its_size(network, cache, tmp_path, capsys, real, fakes):
    run = tmp_path / "run"
    run.mkdir()
    write_config(RunConfig(data=DataConfig(path=str(real), height=16, width=12)), run)
    rc, res, err = run_eval(capsys, fakes, run, tmp_path / "e.json")
    assert rc == 0, err
    assert res["size"] == [12, 16] and res["data"] == str(real) and res["n_real"] == 8

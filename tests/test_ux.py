"""What a user sees from the CLI: skipped and degenerate files named, numbers with their
caveats, held-out images counted as held out, MP4 walks, and time left while training.

Each test runs the real command (``artforge.cli.main`` or a subprocess where the printed
lines are the point) on real files.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artforge.cli import main
from conftest import write_tiny_images

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = ["--size", "16", "--batch-size", "8", "--model.base_channels=8", "--grid-n", "4"]


def artforge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m artforge ARGS`` as a user runs it (INFO lines on stderr)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "artforge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# -- 3. skipped and degenerate files are named -----------------------------------------------


def mixed_folder(folder: Path) -> Path:
    write_tiny_images(folder, n=12)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one_pixel.png")
    Image.new("RGB", (3, 500), (0, 0, 255)).save(folder / "sliver.png")
    Image.new("RGB", (200, 20), (0, 0, 255)).save(folder / "banner.png")
    Image.fromarray(np.full((12, 12), 40000, np.uint16)).save(folder / "flat16.png")
    (folder / "notes.png").write_text("not a picture\n")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_skipped_and_degenerate_files_are_named_once_with_the_report(tmp_path):
    data = mixed_folder(tmp_path / "mydata")
    run = tmp_path / "run"
    p = artforge("train", "--data", str(data), *TINY, "--steps", "1", "--out", str(run))
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if "images from" in x]
    assert len(lines) == 1, p.stderr  # said once, not by the loader and again by the trainer
    line = lines[0]
    assert "16 images from" in line and "2 skipped" in line
    assert "empty.png: empty file (0 bytes)" in line and "notes.png: not an image (a text file)" in line
    assert "4 degenerate but kept" in line and "flat16.png: flat" in line
    assert f"listed in {run / 'data_report.json'}" in p.stderr
    report = json.loads((run / "data_report.json").read_text())
    assert len(report["images"]) == report["n_images"] == 16 and "one_pixel.png" in report["images"]
    warnings = {w["file"]: w["reason"] for w in report["warnings"]}
    assert warnings == {
        "one_pixel.png": "tiny (1 x 1 pixels, under 8 a side)",
        "sliver.png": "tiny (3 x 500 pixels, under 8 a side)",
        "banner.png": "extreme aspect ratio (200 x 20 pixels)",
        "flat16.png": "flat (every pixel the same colour)",
    }


# -- 4. numbers with their caveats -------------------------------------------------------------


def test_small_sample_fid_is_flagged(tmp_path, network, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "run"
    base = ["-q", "train", "--data", "builtin", "--builtin-count", "24", *TINY, "--steps", "1"]
    assert main([*base, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["-q", "eval", str(run), "-n", "8"]) == 0
    out = capsys.readouterr().out
    assert "note: small sample: FID at n=8 (< 2000) is biased upward" in out
    caveats = json.loads((run / "eval.json").read_text())["caveats"]
    assert any("FID at n=8" in c for c in caveats) and any("KID at n=8" in c for c in caveats)


def test_faithfulness_with_one_class_is_refused(tmp_path, network, monkeypatch, capsys):
    from test_text import colour_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = colour_folder(tmp_path / "colours", n_each=10)
    lines = [json.loads(x) for x in (data / "captions.jsonl").read_text().splitlines()]
    (data / "captions.jsonl").write_text(
        "\n".join(json.dumps({**r, "shape": "square"}) for r in lines) + "\n"
    )
    run = tmp_path / "run"
    train = ["-q", "train", "--data", str(data), "--text-encoder", "hash", *TINY, "--steps", "1"]
    assert main([*train, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["-q", "eval", str(run), "--data", str(data), "-n", "8", "--faithfulness", "shape"]) == 1
    err = capsys.readouterr().err
    assert "cannot mean anything (one class" in err and "'square'" in err and "Traceback" not in err


# -- 5. held-out images are not missing images ---------------------------------------------------


def test_held_out_images_are_counted_as_held_out_not_orphans(tmp_path):
    from test_text import colour_folder

    data = colour_folder(tmp_path / "colours", n_each=20)
    (data / "captions.jsonl").open("a").write(json.dumps({"file": "gone.png", "text": "lost"}) + "\n")
    run = tmp_path / "run"
    p = artforge(
        "train", "--data", str(data), "--text-encoder", "hash", "--data.holdout=0.25", *TINY, "--steps", "1",
        "--out", str(run),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((run / "captions_report.json").read_text())
    data_report = json.loads((run / "data_report.json").read_text())
    held = data_report["held_out"]
    assert 2 <= len(held) < 40 and data_report["n_images"] == 40 - len(held)
    assert report["orphans"] == ["gone.png"] and sorted(report["held_out"]) == sorted(held)
    assert f"{len(held)} for images held out or skipped, 1 naming missing images" in p.stderr
    assert f"({len(held)} held out" in p.stderr


# -- 2. interpolate --out walk.mp4 ---------------------------------------------------------------


def test_interpolate_writes_a_readable_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="setup installs imageio-ffmpeg (a dependency); rerun it")
    import imageio.v3 as iio

    run = tmp_path / "run"
    assert main(["-q", "train", "--model", "vae", "--data", "builtin", "--builtin-count", "16", *TINY,
                 "--steps", "2", "--out", str(run)]) == 0  # fmt: skip
    walk = ["-q", "interpolate", str(run), "--seeds", "1,2,3", "--frames", "9", "--out"]
    assert main([*walk, str(tmp_path / "walk.mp4")]) == 0
    assert main([*walk, str(tmp_path / "walk.gif")]) == 0
    video = iio.imread(tmp_path / "walk.mp4")
    gif = iio.imread(tmp_path / "walk.gif", index=None)[..., :3]
    assert video.shape == gif.shape == (9, 16, 16, 3)
    assert video.std() > 5  # pictures, not a blank video
    # the same frames, lossily compressed (H.264 halves the colour resolution of 16-px frames)
    assert np.corrcoef(video.ravel(), gif.ravel())[0, 1] > 0.8


# -- 6. time left ----------------------------------------------------------------------------------


def test_progress_bar_shows_the_time_left_of_a_minutes_budget(tmp_path):
    p = artforge(
        "train", "--data", "builtin", "--builtin-count", "32", *TINY, "--minutes", "0.05", "--log-every", "1",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    bar = p.stderr.replace("\r", "\n")
    assert "gan 16x16 (0.05 min)" in bar
    assert re.search(r"img/s \d+:\d\d left", bar), bar[-1500:]


def test_a_minutes_budget_keeps_room_for_the_final_grid():
    """Diffusion at the defaults: the final grid (64 images x 25 DDIM steps) costs about 8
    training steps, so training stops that much before the minutes are up."""
    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.training.trainer import Trainer

    cfg = RunConfig(
        family="diffusion",
        model={"base_channels": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=16),
        train=TrainConfig(minutes=1.0, batch_size=64, grid_n=64),
    )
    trainer = Trainer(cfg, "unused", progress=False)
    trainer.state.step = 10
    step_s = 3.0  # 10 steps in 30 s
    cost = trainer._finish_cost(10 * step_s)
    assert cost == pytest.approx(step_s * (1 + 64 * 25 / (3 * 64)))
    assert not trainer._out_of_time(60 - cost - 1) and trainer._out_of_time(60 - cost + 1)
    trainer.cfg.train.grid_n = 4  # a smaller grid leaves more of the budget to training
    assert trainer._finish_cost(30.0) < cost / 4

"""Output files of sample and interpolate: --scale/--resample, prompt labels drawn on prompt
grids, JPEG/WebP by the --out suffix; and ``artforge data emoji`` saying its count once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from artforge.cli import main
from artforge.sample import label_rows, save_grid, save_image
from artforge.training import Trainer
from test_text import colour_folder, text_config


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A 16x16 caption-conditioned GAN trained for 2 steps (enough to have weights)."""
    root = tmp_path_factory.mktemp("outputs")
    data = colour_folder(root / "colours", n_each=4)
    run = root / "run"
    Trainer(text_config(data, 2, "gan"), run, progress=False).train()
    return run


def sample(run: Path, *extra: str) -> int:
    return main(["-q", "sample", str(run), "-n", "4", "--seed", "3", "--device", "cpu", *extra])


# -- --scale -----------------------------------------------------------------------------------


def test_scale_nearest_makes_each_pixel_a_block(text_run, tmp_path):
    assert sample(text_run, "--out", str(tmp_path / "one.png"), "--nrow", "2") == 0
    assert sample(text_run, "--out", str(tmp_path / "big.png"), "--nrow", "2", "--scale", "3") == 0
    one = np.asarray(Image.open(tmp_path / "one.png"))
    big = np.asarray(Image.open(tmp_path / "big.png"))
    assert one.shape[:2] == (2 * 18 + 2, 2 * 18 + 2)  # two 16-px rows with 2-px gaps
    assert big.shape[:2] == (one.shape[0] * 3, one.shape[1] * 3)
    assert np.array_equal(big, one.repeat(3, axis=0).repeat(3, axis=1))  # nearest: exact blocks


def test_scale_lanczos_smooths_and_per_seed_files_scale_too(text_run, tmp_path):
    assert sample(text_run, "--out", str(tmp_path / "l.png"), "--scale", "4", "--resample", "lanczos") == 0
    assert sample(text_run, "--out", str(tmp_path / "n.png"), "--scale", "4") == 0
    lanczos, nearest = (np.asarray(Image.open(tmp_path / f)) for f in ("l.png", "n.png"))
    assert lanczos.shape == nearest.shape and not np.array_equal(lanczos, nearest)
    assert sample(text_run, "--out", str(tmp_path / "each") + "/", "--scale", "2") == 0
    files = sorted((tmp_path / "each").glob("*.png"))
    assert len(files) == 4 and all(Image.open(f).size == (32, 32) for f in files)


@pytest.mark.parametrize("bad", [["--scale", "0"], ["--scale", "17"]])
def test_scale_out_of_bounds_is_a_one_line_error(text_run, tmp_path, capsys, bad):
    assert sample(text_run, "--out", str(tmp_path / "g.png"), *bad) == 1
    err = capsys.readouterr().err
    assert "--scale must be between 1 and 16" in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()


def test_interpolate_scales_gif_frames(text_run, tmp_path):
    out = tmp_path / "walk.gif"
    argv = ["-q", "interpolate", str(text_run), "--seeds", "1,2", "--frames", "3", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--scale", "5", "--prompt", "red square"]) == 0
    assert main([*argv, "--out", str(tmp_path / "small.gif"), "--prompt", "red square"]) == 0
    with Image.open(out) as gif, Image.open(tmp_path / "small.gif") as small:
        assert gif.size == (80, 80) and small.size == (16, 16)
        big, one = np.asarray(gif.convert("RGB")), np.asarray(small.convert("RGB"))
        assert np.array_equal(big, one.repeat(5, axis=0).repeat(5, axis=1))


# -- prompt labels -----------------------------------------------------------------------------


def test_prompt_grid_rows_are_labelled_in_the_image(text_run, tmp_path):
    out = tmp_path / "prompts.png"
    assert sample(text_run, "--out", str(out), "--prompts", "red square|blue square", "--scale", "2") == 0
    grid = np.asarray(Image.open(out).convert("L"))
    plain = np.asarray(Image.open(_plain_grid(text_run, tmp_path)).convert("L"))
    margin = grid.shape[1] - plain.shape[1]
    assert grid.shape[0] == plain.shape[0] == 2 * 36 + 4 and margin > 20  # a label column on the left
    assert np.array_equal(grid[:, margin:], plain)  # the images are untouched
    row_h = 36
    for r in range(2):  # dark text pixels in each row's band of the margin
        band = grid[4 + r * row_h : 4 + (r + 1) * row_h - 4, :margin]
        assert (band < 128).sum() > 20
    assert (tmp_path / "prompts.txt").read_text() == "row 1: red square\nrow 2: blue square\n"


def _plain_grid(run: Path, tmp_path: Path) -> Path:
    """The same two prompt rows without labels (written by the library, no label column)."""
    import artforge

    r = artforge.load(run, device="cpu")
    images = torch.cat([r.sample(4, seed=3, prompt=p) for p in ("red square", "blue square")])
    return save_grid(images, tmp_path / "plain.png", 4, scale=2)


def test_label_rows_cut_long_prompts():
    grid = Image.new("RGB", (40, 40), "white")
    short = label_rows(grid, ["a"], row_height=20, pad=2)
    long = label_rows(grid, ["x" * 500], row_height=20, pad=2)
    assert long.width < 40 + 400 and long.width > short.width


# -- JPEG / WebP -------------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_grid_format_follows_the_suffix(text_run, tmp_path, suffix, fmt):
    out = tmp_path / f"grid{suffix}"
    assert sample(text_run, "--out", str(out)) == 0
    with Image.open(out) as im:
        assert im.format == fmt and im.size == (38, 38)


def test_per_seed_images_take_format(text_run, tmp_path):
    folder = tmp_path / "each"
    assert sample(text_run, "--out", str(folder) + "/", "--format", "webp") == 0
    files = sorted(folder.iterdir())
    assert len(files) == 4 and all(f.suffix == ".webp" and Image.open(f).format == "WEBP" for f in files)


@pytest.mark.parametrize("name", ["grid.bmp", "grid.gif", "grid.tiff"])
def test_unknown_suffix_is_a_clear_error_before_drawing(text_run, tmp_path, capsys, name):
    assert sample(text_run, "--out", str(tmp_path / name)) == 1
    err = capsys.readouterr().err
    assert ".png, .jpg, .jpeg, .webp" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_format_disagreeing_with_the_suffix_is_refused(text_run, tmp_path, capsys):
    assert sample(text_run, "--out", str(tmp_path / "g.png"), "--format", "jpg") == 2
    assert "--format is for --out DIR/" in capsys.readouterr().err


def test_save_image_greyscale_jpeg_round_trips_closely(tmp_path):
    img = torch.linspace(0, 1, 16 * 16).reshape(1, 16, 16)
    back = np.asarray(Image.open(save_image(img, tmp_path / "g.jpg"))).astype(float) / 255
    assert back.shape == (16, 16) and np.abs(back - img[0].numpy()).max() < 0.05


# -- data emoji says its count once ---------------------------------------------------------------


@pytest.mark.skipif(not Path("/usr/share/unicode/emoji/emoji-test.txt").is_file(), reason="no emoji list")
def test_data_emoji_says_wrote_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, "-m", "artforge", "data", "emoji", "--size", "16", "--limit", "3"]
    done = subprocess.run([*cmd, "--out", str(tmp_path / "e")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    said = (done.stdout + done.stderr).lower()
    assert said.count("wrote 3 emoji") == 1, said


def test_a_nrow_that_mixes_prompt_rows_draws_no_labels(text_run, tmp_path):
    """-n 4 with --nrow 2: each prompt spans two rows, so no label would name its row."""
    out = tmp_path / "mixed.png"
    assert sample(text_run, "--out", str(out), "--prompts", "red square|blue square", "--nrow", "2") == 0
    assert Image.open(out).size == (2 * 18 + 2, 4 * 18 + 2)  # the grid alone, no label column
    assert (tmp_path / "mixed.txt").read_text() == "row 1: red square\nrow 2: blue square\n"

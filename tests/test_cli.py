"""The artforge command end to end, in-process, on temp folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from artforge.cli import main, parse_size

TINY = [
    "--model.base_channels=8",
    "--latent-dim",
    "8",
    "--batch-size",
    "8",
    "--builtin-count",
    "24",
    "--size",
    "16",
    "--train.grid_n=4",
    "-q",
]


def train(tmp_path, *extra, name="run"):
    out = tmp_path / name
    rc = main(["-q", "train", "--data", "builtin", "--out", str(out), *TINY[:-1], *extra])
    return rc, out


def test_parse_size():
    assert parse_size("64") == (64, 64)
    assert parse_size("80x48") == (48, 80)  # width x height


def test_train_sample_interpolate(tmp_path, capsys):
    rc, run = train(tmp_path, "--model", "gan", "--steps", "4", "--d-steps", "2", "--loss", "bce")
    assert rc == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["d_steps"] == 2 and cfg["model"]["loss"] == "bce"
    assert cfg["model"]["latent_dim"] == 8 and cfg["model"]["base_channels"] == 8

    grid = tmp_path / "grid.png"
    assert (
        main(
            [
                "sample",
                str(run),
                "-n",
                "6",
                "--seed",
                "7",
                "--out",
                str(grid),
                "--nrow",
                "3",
                "--truncation",
                "0.7",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert Image.open(grid).size == (3 * 18 + 2, 2 * 18 + 2)

    # one PNG per image, identical to what the Python API returns for the seed
    folder = tmp_path / "imgs"
    assert main(["sample", str(run), "-n", "3", "--seed", "7", "--out", f"{folder}/", "--device", "cpu"]) == 0
    files = sorted(folder.glob("*.png"))
    assert len(files) == 3
    import artforge

    api = artforge.load(run, device="cpu").sample(3, seed=7)
    for f, img in zip(files, api, strict=True):
        png = np.asarray(Image.open(f).convert("RGB"))
        assert np.array_equal(png, (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))

    assert main(["sample", str(run), "--seeds", "0-3", "--out", f"{tmp_path}/per/", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "per").iterdir()) == [f"seed{k:04d}.png" for k in range(4)]

    walk = tmp_path / "walk.gif"
    assert (
        main(
            [
                "interpolate",
                str(run),
                "--seeds",
                "1,2,3",
                "--frames",
                "9",
                "--out",
                str(walk),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    gif = Image.open(walk)
    assert gif.size == (16, 16) and gif.n_frames >= 2
    # Pillow merges identical consecutive frames (an untrained model's may be), adding their
    # durations, so the walk always plays for frames / fps seconds
    durations = []
    for k in range(gif.n_frames):
        gif.seek(k)
        durations.append(gif.info["duration"])
    assert sum(durations) == 9 * 50


def test_resume_and_budget_extension(tmp_path):
    rc, run = train(tmp_path, "--model", "vae", "--steps", "3")
    assert rc == 0
    assert main(["-q", "train", "--out", str(run), "--resume", "--steps", "5"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 5
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 5
    # a model change on resume is refused, and nothing is lost
    before = (run / "model.safetensors").read_bytes()
    assert main(["-q", "train", "--out", str(run), "--resume", "--latent-dim", "4"]) == 2
    assert (run / "model.safetensors").read_bytes() == before


def test_restart_takes_a_new_learning_rate_and_resume_refuses_one(tmp_path, capsys):
    """A saved run holds its optimiser settings per group; --lr given on --restart must reach
    every group (it used to lose to the saved ones, unseen), and on --resume it is refused."""
    rc, run = train(tmp_path, "--steps", "1", "--lr", "0.001")
    assert rc == 0
    saved = json.loads((run / "config.json").read_text())["optim_groups"]
    assert {g["lr"] for g in saved.values()} == {0.001}
    capsys.readouterr()
    assert main(["-q", "train", "--out", str(run), "--restart", "--lr", "0.0005", "--dry-run"]) == 0
    groups = json.loads(capsys.readouterr().out)["optim_groups"]
    assert {g["lr"] for g in groups.values()} == {0.0005}
    # a per-group setting still wins over the run-wide one
    argv = ["-q", "train", "--out", str(run), "--restart", "--lr", "0.0005", "--d-lr", "0.002", "--dry-run"]
    assert main(argv) == 0
    groups = json.loads(capsys.readouterr().out)["optim_groups"]
    assert (groups["G"]["lr"], groups["D"]["lr"]) == (0.0005, 0.002)
    before = (run / "model.safetensors").read_bytes()
    assert main(["-q", "train", "--out", str(run), "--resume", "--lr", "0.0005"]) == 2
    assert "--resume cannot change optim_groups" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before


def test_profile_none_as_an_override(capsys):
    """--train.profile=none: the override parser reads the word as None; the setting means "none"."""
    argv = ["-q", "train", "--data", "builtin", "--train.profile=none", "--dry-run", *TINY[:-1]]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["train"]["profile"] == "none"


def test_config_file_and_overrides(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('family = "vae"\n[train]\nsteps = 3\nbatch_size = 4\n[data]\npath = "builtin"\n')
    assert (
        main(
            [
                "train",
                "--config",
                str(toml),
                "--steps",
                "2",
                "--train.lr=0.003",
                "--size",
                "24x16",
                "--dry-run",
            ]
        )
        == 0
    )
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["family"] == "vae" and cfg["train"]["steps"] == 2 and cfg["train"]["batch_size"] == 4
    assert cfg["optim_groups"]["main"]["lr"] == 0.003
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (16, 24)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--data", "/no/such/folder", "--steps", "1"], "/no/such/folder"),
        (["train", "--model", "nope", "--dry-run"], "unknown model 'nope'"),
        (["train", "--train.stepz=3", "--dry-run"], "unknown setting train.stepz"),
        (["train", "--loss", "magic", "--dry-run"], "magic"),
        (["train", "--model", "dcgan", "--size", "48", "--dry-run"], "dcgan"),
        (["sample", "/no/such/run"], "not a run folder"),
        (["interpolate", "/no/such/run"], "not a run folder"),
        # eval's sample count is bounded before any run is read or image drawn
        (["eval", "/no/such/run", "-n", "1000000000"], "-n must be between 4 and 100,000"),
        (["eval", "/no/such/run", "--snapshots", "-n", "2"], "-n must be between 4 and 100,000"),
        (["bench", "--data", "builtin", "--minutes", "1", "--out", "x", "-n", "3"], "between 4 and"),
    ],
)
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_broken_files_skipped_with_reasons(tmp_path):
    data = tmp_path / "imgs"
    data.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(data / f"ok{k}.png")
    (data / "empty.png").write_bytes(b"")
    (data / "page.png").write_text("<html>not an image</html>")
    good = (data / "ok0.png").read_bytes()
    (data / "cut.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(data),
                "--out",
                str(out),
                "--model",
                "vae",
                "--steps",
                "2",
                *TINY[:-1],
            ]
        )
        == 0
    )
    report = json.loads((out / "data_report.json").read_text())
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"empty.png", "page.png", "cut.png"}
    assert report["n_images"] == 6


def test_empty_data_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "bad"
    data.mkdir()
    (data / "a.png").write_bytes(b"")
    assert main(["-q", "train", "--data", str(data), "--steps", "1", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert str(data) in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_console_script_and_module_entry(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run(
        [sys.executable, "-m", "artforge", "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0 and "train" in out.stdout and "interpolate" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "artforge", "models"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.stdout.split() == ["dcgan", "diffusion", "gan", "upscaler", "vae"]


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "RUN", "--seed", "-1"],
        ["eval", "RUN", "--seed", "-21023817572222840"],  # numpy's KID generator refused it deep inside
        ["img2img", "RUN", "--image", "x.png", "--strength", "0.5", "--seed", "-1"],
        ["bench", "--data", "builtin", "--minutes", "1", "--out", "b", "--seed", str(2**63)],
    ],
)
def test_seeds_are_checked_where_they_are_given(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "seed must be between 0 and 2**63 - 1" in capsys.readouterr().err

"""``artforge bench`` end to end on a tiny folder: real training processes, the real FID network."""

from __future__ import annotations

import json

from artforge.bench import markdown, recommend
from artforge.cli import main


def test_recommend_prefers_low_fid_that_does_not_copy() -> None:
    rows = [
        {"model": "gan", "fid": 40.0, "copy_rate": 0.5, "sample_s_per_1000": 0.5},
        {"model": "vae", "fid": 90.0, "copy_rate": 0.3, "sample_s_per_1000": 0.4},
        {"model": "diffusion", "fid": 20.0, "copy_rate": 0.9, "sample_s_per_1000": 30.0},
    ]
    line = recommend(rows, 15)
    assert line.startswith("For this data and 15 min of training here: gan (FID 40.0")
    assert "diffusion copied training images" in line
    rows[2]["copy_rate"] = 0.5
    line = recommend(rows, 15)
    assert line.startswith("For this data and 15 min of training here: diffusion (FID 20.0")
    assert "vae samples 75x faster" in line
    assert recommend([{"model": "gan", "fid": float("nan"), "copy_rate": 0.0}], 1).startswith("no candidate")


def test_bench_cli_trains_measures_and_writes_table(network, tiny_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    argv = ["-q", "bench", "--data", str(tiny_folder), "--size", "16", "--minutes", "0.04"]
    argv += ["--models", "gan,diffusion", "-n", "12", "--batch-size", "12", "--out", str(out)]
    argv += ["--train.batch_size=8", "--train.grid_n=4"]  # passed on to every training run
    assert main(argv) == 0
    result = json.loads((out / "bench.json").read_text())
    assert [r["model"] for r in result["models"]] == ["gan", "diffusion"]
    for r in result["models"]:
        assert r["steps"] >= 1 and r["train_img_per_s"] > 0 and r["peak_mem_mib"] > 50
        assert r["sample_s_per_1000"] > 0 and r["n_fake"] == 12 and r["n_real"] == 16
        assert 0 <= r["copy_rate"] <= 1 and r["fid"] > 0
        cfg = json.loads((out / "runs" / r["model"] / "config.json").read_text())
        assert cfg["train"]["batch_size"] == 8 and cfg["train"]["minutes"] == 0.04
    assert result["recommendation"].startswith("For this data and 0.04 min")
    md = (out / "bench.md").read_text()
    assert md == markdown(result) and "| gan |" in md and "| diffusion |" in md
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.height > 2 * 16 and grid.width > 2 * 6 * 16  # two labelled panels (12 = 2 rows of 6)
    printed = capsys.readouterr().out
    assert result["recommendation"] in printed


def test_bench_rejects_unknown_model(tiny_folder, tmp_path, capsys):
    argv = ["-q", "bench", "--data", str(tiny_folder), "--minutes", "1", "--models", "gan,gam"]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 1
    assert "unknown model 'gam'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_bench_offers_the_cascade_from_64_px(network, tiny_folder, tmp_path, monkeypatch, capsys):
    """--models cascade trains base and upscaler in one child (train --cascade) and measures
    its samples at the final size; below 64 px it is refused before any training."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    argv = ["-q", "bench", "--data", str(tiny_folder), "--minutes", "0.03", "--models", "cascade"]
    argv += ["-n", "8", "--batch-size", "8", "--out", str(out), "--train.batch_size=8", "--train.grid_n=4"]
    assert main([*argv, "--size", "32"]) == 1
    assert "the cascade candidate is for sizes from 64" in capsys.readouterr().err
    assert not out.exists()
    assert main([*argv, "--size", "64"]) == 0
    (row,) = json.loads((out / "bench.json").read_text())["models"]
    assert row["model"] == "cascade" and row["n_fake"] == 8 and row["fid"] > 0
    base = json.loads((out / "runs" / "cascade" / "base" / "metrics.jsonl").read_text().splitlines()[-1])
    up = json.loads((out / "runs" / "cascade" / "upscaler" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["steps"] == base["step"] + up["step"] and row["images_seen"] == base["images"] + up["images"]
    assert json.loads((out / "runs" / "cascade" / "config.json").read_text())["height"] == 64

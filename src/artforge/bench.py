"""``artforge bench``: which model family suits this data and this much compute?

Each candidate trains with its defaults for the same wall-clock budget, in its own process
(so its peak memory is its own), then is measured the same way: n samples from a fixed seed
against all of the data on the FID network (FID, KID, precision, recall, density, coverage,
diversity, copy rate), plus training images per second and the time to sample 1,000 images.
Results go to ``OUT/bench.json`` and ``OUT/bench.md``; ``OUT/grid.png`` shows the candidates
side by side; the runs stay in ``OUT/runs/FAMILY`` to sample from afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from .cascade import BASE_DIR, UPSCALER_DIR, load_run
from .config import DataConfig
from .data import load_images
from .device import resolve_device
from .errors import ConfigError, UserError
from .evaluate import generate_uint8
from .io import write_json, write_text
from .metrics.inception import INCEPTION_SHA1
from .metrics.reference import Reference
from .models import list_models
from .runfolder import METRICS
from .sample import make_grid, to_uint8_nhwc

log = logging.getLogger(__name__)

CASCADE = "cascade"  # a candidate beside the families: train --cascade (a base and an upscaler)
CASCADE_MIN_SIDE = 64  # below this the base would be under 32 px (cascade.plan)
GRID_SIDE = 6  # each candidate shows GRID_SIDE x GRID_SIDE samples in grid.png
COLUMNS = [  # (key, header, format)
    ("fid", "FID", "{:.1f}"),
    ("kid", "KID x1000", "{:.2f}"),
    ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"),
    ("density", "density", "{:.3f}"),
    ("coverage", "coverage", "{:.3f}"),
    ("diversity", "diversity", "{:.2f}"),
    ("copy_rate", "copy rate", "{:.3f}"),
    ("train_img_per_s", "train img/s", "{:.0f}"),
    ("steps", "steps", "{:d}"),
    ("peak_mem_mib", "peak MiB", "{:.0f}"),
    ("sample_s_per_1000", "s per 1k samples", "{:.1f}"),
]


def _train(
    family: str,
    data: str,
    size: tuple[int, int],
    minutes: float,
    run_dir: Path,
    seed: int,
    device: str,
    extra: list[str],
    quiet: bool,
) -> dict[str, Any]:
    """Train one candidate in a child process; its own peak RSS comes from wait4's rusage.
    The cascade candidate trains both its stages in that process (``train --cascade``)."""
    height, width = size
    what = ["--cascade"] if family == CASCADE else ["--model", family]
    cmd = [
        sys.executable, "-m", "artforge", *(["-q"] if quiet else []), "train",
        "--data", data, "--size", f"{width}x{height}", *what,
        "--minutes", str(minutes), "--seed", str(seed), "--device", device,
        "--out", str(run_dir), "--overwrite", *extra,
    ]  # fmt: skip
    log.info("bench: training %s for %s min: %s", family, minutes, " ".join(cmd[1:]))
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise UserError(  # the child has said why, in one line unless it was a bug
            f"bench: training {family} failed (exit {proc.returncode}); see the messages above"
        )
    stages = [run_dir / BASE_DIR, run_dir / UPSCALER_DIR] if family == CASCADE else [run_dir]
    steps = images = elapsed = cuda_peak = 0.0
    for stage in stages:  # a cascade's figures are its two stages' together
        rows = [json.loads(line) for line in (stage / METRICS).read_text().splitlines() if line.strip()]
        steps += int(rows[-1]["step"])
        images += int(rows[-1]["images"])
        elapsed += float(rows[-1]["elapsed"])
        cuda_peak = max([cuda_peak, *(r.get("cuda_peak_mib", 0.0) for r in rows)])
    return {
        "steps": int(steps),
        "images_seen": int(images),
        "train_seconds": round(elapsed, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "train_img_per_s": images / max(elapsed, 1e-9),
        # ru_maxrss is KiB on Linux; on CUDA the GPU's own peak is what limits a user
        "peak_mem_mib": cuda_peak if cuda_peak else usage.ru_maxrss / 1024,
        "peak_mem_kind": "cuda" if cuda_peak else "cpu-rss",
    }


@torch.no_grad()
def _sample(run_dir: Path, n: int, seed: int, device: str) -> tuple[torch.Tensor, float]:
    """n uint8 samples (the images ``artforge sample -n N --seed S`` writes) and seconds per 1,000."""
    run = load_run(run_dir, device=device)
    start = time.perf_counter()
    fakes = generate_uint8(run.model, n, seed)
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    return fakes, (time.perf_counter() - start) / n * 1000


def _grid(panels: list[tuple[str, torch.Tensor]], path: Path) -> Path:
    """Candidates side by side, each a labelled GRID_SIDE x GRID_SIDE block of samples."""
    blocks = []
    for name, imgs in panels:
        grid = make_grid(imgs[: GRID_SIDE**2].float() / 255, nrow=GRID_SIDE)  # (3, H, W) in [0, 1]
        arr = to_uint8_nhwc(grid[None])[0]  # (H, W, 3)
        label_h = 16
        block = Image.new("RGB", (arr.shape[1], arr.shape[0] + label_h), "white")
        block.paste(Image.fromarray(arr), (0, label_h))
        ImageDraw.Draw(block).text((4, 2), name, fill="black")
        blocks.append(block)
    gap = 8
    width = sum(b.width for b in blocks) + gap * (len(blocks) - 1)
    out = Image.new("RGB", (width, max(b.height for b in blocks)), "white")
    x = 0
    for b in blocks:
        out.paste(b, (x, 0))
        x += b.width + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def recommend(rows: list[dict[str, Any]], minutes: float) -> str:
    """One line: the candidate with the lowest FID among those that do not copy more than
    held-out real images would (copy rate <= 0.6; ~0.5 is what fresh real images score)."""
    ok = [r for r in rows if math.isfinite(r["fid"])]
    if not ok:
        return "no candidate produced finite metrics; train longer or check the data"
    honest = [r for r in ok if r["copy_rate"] <= 0.6] or ok
    best = min(honest, key=lambda r: r["fid"])
    line = (
        f"For this data and {minutes:g} min of training here: {best['model']} "
        f"(FID {best['fid']:.1f}, copy rate {best['copy_rate']:.2f})"
    )
    fastest = min(ok, key=lambda r: r["sample_s_per_1000"])
    if fastest is not best and fastest["sample_s_per_1000"] * 3 < best["sample_s_per_1000"]:
        line += (
            f"; {fastest['model']} samples {best['sample_s_per_1000'] / fastest['sample_s_per_1000']:.0f}x"
            f" faster (FID {fastest['fid']:.1f}) if speed of creation matters more"
        )
    copiers = [r["model"] for r in ok if r["copy_rate"] > 0.6]
    if copiers:
        line += f"; {', '.join(copiers)} copied training images (copy rate > 0.6)"
    return line + "."


def markdown(result: dict[str, Any]) -> str:
    head = ["model", *[h for _, h, _ in COLUMNS]]
    lines = [
        f"# artforge bench: {result['data']} at {result['size'][0]}x{result['size'][1]}, "
        f"{result['minutes']:g} min each",
        "",
        f"n = {result['n']} samples per model against all {result['n_real']} real images; "
        f"device {result['device']}; FID network sha1 {result['inception_sha1'][:12]}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["models"]:
        cells = [r["model"]]
        for key, _, fmt in COLUMNS:
            v = r.get(key)
            cells.append("-" if v is None else fmt.format(v * 1000 if key == "kid" else v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", result["recommendation"], "", "![candidates side by side](grid.png)", ""]
    return "\n".join(lines)


def run_bench(
    data: str,
    minutes: float,
    models: list[str],
    out: str | os.PathLike[str],
    size: tuple[int, int] = (64, 64),
    *,
    n: int = 5000,
    seed: int = 0,
    device: str = "auto",
    inception: str | os.PathLike[str] | None = None,
    batch_size: int | None = None,
    train_args: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train and measure each family in ``models`` (and "cascade": train --cascade, at sizes
    from CASCADE_MIN_SIDE); write bench.json, bench.md and grid.png to ``out``."""
    candidates = [m for m in list_models() if m != "upscaler"] + [CASCADE]
    unknown = [m for m in models if m not in candidates]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}; choose from {candidates}")
    if not models:
        raise ConfigError("--models needs at least one family")
    if CASCADE in models and min(size) < CASCADE_MIN_SIDE:
        raise ConfigError(
            f"the cascade candidate is for sizes from {CASCADE_MIN_SIDE} px (its base is a quarter "
            f"or half the side); --size {size[1]}x{size[0]} is small enough to train directly"
        )
    if not minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    out = Path(out)
    height, width = size
    dev = resolve_device(device)
    reals = load_images(DataConfig(path=data, height=height, width=width), progress=progress).images
    real = Reference(reals, dev, batch_size=batch_size, inception=inception, progress=progress)
    rows, panels = [], []
    for family in models:
        run_dir = out / "runs" / family
        row: dict[str, Any] = {"model": family, "run": str(run_dir)}
        row.update(
            _train(family, data, size, minutes, run_dir, seed, str(dev), list(train_args or []), not progress)
        )
        fakes, s_per_1000 = _sample(run_dir, n, seed, str(dev))
        fake_f = real.features_of(fakes, progress=progress, desc=f"features: {family}")
        metrics = real.metrics(fake_f, seed)
        row.update({k: float(v) for k, v in metrics.items()})
        row["sample_s_per_1000"] = s_per_1000
        rows.append(row)
        panels.append((family, fakes))
        log.info("bench: %s FID %.1f, %.0f train img/s", family, row["fid"], row["train_img_per_s"])
    result = {
        "data": data,
        "size": [width, height],
        "minutes": minutes,
        "n": n,
        "n_real": int(reals.shape[0]),
        "seed": seed,
        "device": str(dev),
        "inception_sha1": INCEPTION_SHA1,
        "models": rows,
        "recommendation": recommend(rows, minutes),
    }
    out.mkdir(parents=True, exist_ok=True)
    _grid(panels, out / "grid.png")
    write_json(result, out / "bench.json")
    write_text(out / "bench.md", markdown(result))
    return result

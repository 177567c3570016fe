"""[cascade] The upscaler alone on held-out real emoji: PSNR and FID against Lanczos, plus its
sampling time per 1,000 images and peak memory beside a base model's.

For each factor (x2: 32 -> 64, x4: 32 -> 128) an upscaler run trains on the emoji set at the
final size with ``--data.holdout`` (so the held-out files, data/holdout.py's rule, are never
seen), then the *real 32-px renders* of the held-out emoji (the 32-px set, not our own
downscales: what a new user's small pictures are) are enlarged by the upscaler and by PIL's
Lanczos. Both are scored against the real held-out images at the final size (PSNR) and against
the whole real set at the final size (FID, on the standard Inception network through
metrics.reference.Reference, as ``artforge eval`` scores); the held-out real images' own FID
against the set is printed as the floor at that n.

    PYTHONPATH=src python benchmarks/bench_cascade.py --emoji32 data/emoji32 \
        --final 64:data/emoji64 --final 128:data/emoji128 --minutes 10 --out bench/cascade \
        [--base runs/emoji-gan15]

A smoke run (tiny budgets, a subset of the real set for FID) is ``--steps 20 --real-limit 500``.
Timing and peak memory are measured in a child process per model (``--measure RUN``), so one
model's allocations do not count toward another's.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artforge import cascade
from artforge.config import DataConfig
from artforge.data import load_images
from artforge.data.holdout import is_held_out
from artforge.metrics.reference import Reference
from artforge.resolve import resolve_run
from artforge.runs import load_run
from artforge.sample import generate, latents_for_seed
from artforge.training import Trainer


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the PSNR (dB) of uint8 (n, 3, H, W) images."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1).clamp(min=1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def lanczos(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (n, 3, h, w) -> (n, 3, height, width) by PIL's Lanczos (``--resample lanczos``)."""
    out = [
        np.array(
            Image.fromarray(a.permute(1, 2, 0).numpy()).resize((width, height), Image.Resampling.LANCZOS)
        )
        for a in images
    ]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def train_upscaler(data: str, size: int, factor: int, args: argparse.Namespace, out: Path) -> Path:
    given = {
        "family": "upscaler",
        "data.path": data,
        "data.height": size,
        "data.width": size,
        "data.holdout": args.holdout,
        "model.factor": factor,
        "train.device": args.device,
        "train.batch_size": args.batch_size,
        "train.seed": args.seed,
    }
    given["train.minutes" if args.minutes else "train.steps"] = args.minutes or args.steps
    cfg = resolve_run(given, args.set)
    Trainer(cfg, out, progress=args.progress).train(overwrite=True)
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory since its exec (VmHWM): unlike getrusage's ru_maxrss,
    which Linux carries over from the parent that forked the child, so a child of a large
    parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: a fallback


def measure(ref: str, n: int, device: str) -> dict[str, float]:
    """Seconds per 1,000 images at the run's size and the process's peak RSS (MiB) after
    drawing n images; a cascade or any run (an upscaler run draws from its bank of inputs)."""
    run = cascade.load_run(ref, device=device)
    z = latents_for_seed(run.model, n, 0)
    generate(run.model, z[:8])  # warm-up
    t = time.perf_counter()
    generate(run.model, z)
    seconds = time.perf_counter() - t
    peak = peak_rss_mib()
    params = sum(p.numel() for p in run.model.parameters())
    size = f"{run.config.data.width}x{run.config.data.height}"
    return {"s_per_1000": seconds * 1000 / n, "peak_rss_mib": peak, "params": params, "size": size}


def measure_child(ref: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(ref),
        "--measure-n",
        str(args.measure_n),
        "--device",
        args.device,
    ]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emoji32", default="data/emoji32", help="the real 32-px set (the inputs)")
    ap.add_argument(
        "--final", action="append", default=[], help="SIZE:DIR of a final-size set, e.g. 64:data/emoji64"
    )
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--minutes", type=float, default=None, help="each upscaler's training budget")
    ap.add_argument("--steps", type=int, default=200, help="the budget when --minutes is not given")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="--section.name=value for the upscalers")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--real-limit", type=int, default=None, help="FID against this many real images (smoke)")
    ap.add_argument("--no-fid", action="store_true", help="PSNR only (minutes of Inception on a CPU saved)")
    ap.add_argument("--base", default=None, help="a base run to time beside the upscalers")
    ap.add_argument("--measure-n", type=int, default=1000)
    ap.add_argument("--out", default="bench/cascade")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.measure_n, args.device)))
        return
    args.set = [s if s.startswith("--") else "--" + s for s in args.set]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    small = load_images(DataConfig(path=args.emoji32, height=32, width=32))
    by_name = {n: i for i, n in enumerate(small.names)}
    rows = []
    for spec in args.final or ["64:data/emoji64", "128:data/emoji128"]:
        size_text, data = spec.split(":", 1)
        size = int(size_text)
        factor = size // 32
        t0 = time.perf_counter()
        run_dir = train_upscaler(data, size, factor, args, out / f"up{size}")
        train_s = time.perf_counter() - t0
        run = load_run(run_dir, device=args.device)
        real = load_images(DataConfig(path=data, height=size, width=size))
        held = [i for i, n in enumerate(real.names) if is_held_out(n, args.holdout) and n in by_name]
        inputs = small.images[[by_name[real.names[i]] for i in held]]  # the real 32-px renders
        target = real.images[held]
        ours = torch.cat(
            [
                (cascade.upscale_images(run, inputs[i : i + 256].float() / 255) * 255).round()
                for i in range(0, len(inputs), 256)
            ]
        ).to(torch.uint8)
        lz = lanczos(inputs, size, size)
        fid: dict[str, float] = {}
        if not args.no_fid:
            reference = Reference(real.images, args.device, limit=args.real_limit, progress=args.progress)
            fid = {
                name: float(reference.metrics(reference.features_of(x))["fid"])
                for name, x in (("upscaler", ours), ("lanczos", lz), ("held_out_real", target))
            }
        row = {
            "factor": factor,
            "size": size,
            "held_out": len(held),
            "real_n": 0 if args.no_fid else len(reference),
            "train_s": round(train_s, 1),
            "psnr_upscaler": round(psnr(ours, target), 2),
            "psnr_lanczos": round(psnr(lz, target), 2),
            **{f"fid_{k}": round(v, 2) for k, v in fid.items()},
            "timing": measure_child(run_dir, args),
        }
        rows.append(row)
        Image.fromarray(
            torch.cat([torch.cat(list(x[:8]), 2) for x in (lz, ours, target)], 1).permute(1, 2, 0).numpy()
        ).save(out / f"x{factor}-lanczos-upscaler-real.png")
        print(json.dumps(row), flush=True)
    if args.base:
        rows.append({"base": args.base, "timing": measure_child(Path(args.base), args)})
        print(json.dumps(rows[-1]), flush=True)
    (out / "cascade.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

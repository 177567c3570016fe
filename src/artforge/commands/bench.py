"""artforge bench: every family trains the same minutes, then one table, grid and recommendation."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import parse_size
from .common import add_batch_size_flag, arg_type, check_eval_n, parse_seed, refuse_sound

NAMES = ("bench",)
TAKES_EXTRAS = True  # other --flags go to every training run


def add_arguments(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="train several families for the same minutes and compare them on the same measures",
        description="Each model trains with its defaults for --minutes (in its own process), then n "
        "samples are measured against the data: FID, KID, precision, recall, diversity, copy rate, "
        "training img/s, peak memory, sampling time. Writes OUT/bench.md, OUT/bench.json, "
        "OUT/grid.png and keeps each run in OUT/runs/MODEL. Other --flags go to every training run.",
        allow_abbrev=False,
    )
    b.add_argument("--data", required=True, metavar="PATH", help="image folder, .zip or builtin[:NAME]")
    b.add_argument("--minutes", type=float, required=True, help="training budget per model")
    b.add_argument(
        "--models",
        default="gan,vae,diffusion",
        help="comma-separated families (default gan,vae,diffusion); cascade (train --cascade: a "
        "base and an upscaler) at sizes from 64",
    )
    b.add_argument(
        "--size", type=arg_type(parse_size), default=(64, 64), help="N or WIDTHxHEIGHT (default 64)"
    )
    b.add_argument("--out", required=True, metavar="DIR", help="folder for the table, grid and runs")
    b.add_argument("-n", type=int, default=5000, help="samples per model for the metrics (default 5000)")
    b.add_argument("--seed", type=parse_seed, default=0)
    add_batch_size_flag(b)
    b.add_argument("--inception", metavar="PATH", default=None, help="the FID network file (see eval)")
    b.add_argument("--device", default="auto")


def run(args: argparse.Namespace, extras: list[str]) -> int:
    from ..bench import COLUMNS, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    refuse_sound(args.data, "artforge bench measures pictures; for sound use benchmarks/bench_audio.py")
    check_eval_n(args.n)
    result = run_bench(
        args.data,
        args.minutes,
        models,
        args.out,
        args.size,
        n=args.n,
        seed=args.seed,
        device=args.device,
        inception=args.inception,
        batch_size=args.batch_size,
        train_args=extras,
        progress=not args.quiet,
    )
    keys = ["fid", "precision", "recall", "copy_rate", "train_img_per_s", "sample_s_per_1000"]
    heads = {k: h for k, h, _ in COLUMNS}
    print("  ".join(f"{h:>12}" for h in ["model", *[heads[k] for k in keys]]))
    for r in result["models"]:
        print("  ".join([f"{r['model']:>12}", *[f"{r[k]:>12.3g}" for k in keys]]))
    print(result["recommendation"])
    print(f"wrote {Path(args.out) / 'bench.md'}, bench.json and grid.png")
    return 0

"""Projection and img2img on held-out images: the figures of benchmarks/RESULTS.md ("Start
from your own image").

    PYTHONPATH=src python benchmarks/bench_create.py --data data/emoji32 \\
        --gan runs/bench-gan --vae runs/bench-vae [--diffusion runs/bench-diffusion] \\
        [-k 16] [--steps 200] [--fid-real 500] --out benchmarks/results/create

The runs must have been trained with ``--data.holdout=S`` (S > 0): the first ``-k`` images
of the data that the hold-out kept out of training are the targets, images the model has
never seen.

Projection (GAN, VAE): each target's reconstruction PSNR against, for the same target, the
mean PSNR of 256 of the run's own random samples (seed 0) and the PSNR of the closest of
them (a nearest neighour among random draws: what picking the best seed by eye would find).
Writes a target / GAN / VAE reconstruction grid (``docs/images/create-projection.png`` with
``--grid``).

img2img (every run given): for strengths 0, 0.25, 0.5, 0.75, 1, the mean absolute
difference to the input (0-255 scale) of 2 outputs per target (the first k/2 targets), and
with ``--fid-real N`` the FID of those outputs against N training images (small n: biased
upward, compare the rows with each other). ``--sketch`` repeats it from crude drawings of
the same targets (``sketch``: 4-pixel blocks, 3 levels per channel), inputs outside the data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import artforge
from artforge.create import load_image, psnr
from artforge.data.holdout import is_held_out
from artforge.sample import make_grid, save_image

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def held_out_targets(run: artforge.api.Run, data: str, k: int) -> tuple[list[str], torch.Tensor]:
    """The first k held-out images (sorted names), fitted like the run's data: (k, 3, H, W)."""
    share = run.config.data.holdout
    if share <= 0:
        raise SystemExit(
            f"{run.path} was trained without --data.holdout; its targets would be training images"
        )
    root = Path(data)
    names = sorted(
        p.name for p in root.iterdir() if p.suffix.lower() == ".png" and is_held_out(p.name, share)
    )[:k]
    if not names:
        raise SystemExit(f"{data}: no held-out images for share {share}")
    return names, torch.cat([load_image(root / n, run.config.data) for n in names])


def bench_projection(run: artforge.api.Run, targets: torch.Tensor, steps: int) -> tuple[dict, torch.Tensor]:
    t = time.perf_counter()
    proj = run.project(targets, steps=steps, seed=0)
    seconds = time.perf_counter() - t
    randoms = run.sample(256, seed=0)  # (256, 3, H, W)
    rand = torch.stack([psnr(randoms, x.expand_as(randoms)) for x in targets])  # (k, 256)
    row = {
        "family": run.config.family,
        "run": str(run.path),
        "targets": len(targets),
        "steps": steps,
        "psnr_projection": round(float(proj.psnr.mean()), 2),
        "psnr_random_mean": round(float(rand.mean()), 2),
        "psnr_random_nearest": round(float(rand.max(1).values.mean()), 2),
        "seconds": round(seconds, 1),
    }
    if run.config.family == "vae":  # the encoder alone, for the refinement's share
        row["psnr_encoder_only"] = round(float(run.project(targets, steps=0).psnr.mean()), 2)
    return row, proj.images


def sketch(images: torch.Tensor, block: int = 4, levels: int = 3) -> torch.Tensor:
    """A crude drawing of each image (n, 3, H, W) in [0, 1]: blocks of ``block`` pixels, each
    channel posterised to ``levels`` values. Outside the data's distribution, as the
    strokes SDEdit starts from are; img2img should pull them toward the data."""
    h, w = images.shape[-2:]
    small = torch.nn.functional.avg_pool2d(images, block, ceil_mode=True)
    blocky = torch.nn.functional.interpolate(small, scale_factor=block, mode="nearest")[..., :h, :w]
    return (blocky * (levels - 1)).round() / (levels - 1)


def bench_img2img(
    run: artforge.api.Run,
    targets: torch.Tensor,
    fid_real: int,
    data: str,
    inputs: str = "held-out",
    grid: str | None = None,
) -> list[dict]:
    real_f = None
    if fid_real:
        from artforge.data import load_images
        from artforge.metrics.cache import cached_features

        reals = load_images(run.config.data).images
        pick = torch.randperm(len(reals), generator=torch.Generator().manual_seed(0))[:fid_real]
        real_f = cached_features(reals[pick])
    rows, firsts = [], []
    for s in STRENGTHS:
        opts = {} if run.config.family == "diffusion" else {"project_steps": 100}
        outs = torch.cat([run.img2img(x[None], s, 2, seed=i, **opts) for i, x in enumerate(targets)])
        firsts.append(outs[0::2][:8])  # each target's first output
        given = targets.repeat_interleave(2, 0)
        row = {
            "family": run.config.family,
            "inputs": inputs,
            "n": len(outs),
            "strength": s,
            "mad_to_input": round(float((outs - given).abs().mean() * 255), 2),
        }
        if real_f is not None:
            from artforge.metrics.fid import fid_from_features
            from artforge.metrics.inception import features

            row["fid"] = round(float(fid_from_features(real_f, features((outs * 255).round().byte()))), 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if grid:  # rows: the inputs, then strength 0 ... 1
        save_image(make_grid(torch.cat([targets[:8], *firsts]), nrow=min(8, len(targets))), grid)
        print(f"wrote {grid} (rows: inputs, then strengths {', '.join(f'{s:g}' for s in STRENGTHS)})")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--gan")
    p.add_argument("--vae")
    p.add_argument("--diffusion")
    p.add_argument("-k", type=int, default=16, help="held-out targets (default 16)")
    p.add_argument("--steps", type=int, default=200, help="projection steps (default 200)")
    p.add_argument("--fid-real", type=int, default=0, help="img2img FID against this many training images")
    p.add_argument("--no-img2img", action="store_true")
    p.add_argument(
        "--sketch",
        action="store_true",
        help="img2img also from crude drawings of the targets (sketch()), outside the data",
    )
    p.add_argument("--img2img-grid", default=None, help="img2img grids: NAME.png (and NAME-sketch.png)")
    p.add_argument("--grid", default=None, help="write the target / reconstruction grid here")
    p.add_argument("--out", default="benchmarks/results/create")
    args = p.parse_args()
    torch.manual_seed(0)
    result: dict = {"projection": [], "img2img": []}
    recon: dict[str, torch.Tensor] = {}
    targets = None
    for family in ("gan", "vae"):
        path = getattr(args, family)
        if not path:
            continue
        run = artforge.load(path, device="cpu")
        names, targets = held_out_targets(run, args.data, args.k)
        row, recon[family] = bench_projection(run, targets, args.steps)
        print(json.dumps(row), flush=True)
        result["projection"].append(row)
    for family in ("gan", "vae", "diffusion"):
        path = getattr(args, family)
        if path and not args.no_img2img:
            run = artforge.load(path, device="cpu")
            _, t = held_out_targets(run, args.data, args.k)
            t = t[: max(1, args.k // 2)]
            grid = args.img2img_grid
            result["img2img"] += bench_img2img(run, t, args.fid_real, args.data, "held-out", grid)
            if args.sketch:
                sgrid = grid and str(Path(grid).with_name(Path(grid).stem + "-sketch.png"))
                result["img2img"] += bench_img2img(run, sketch(t), args.fid_real, args.data, "sketch", sgrid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "create.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.grid and targets is not None and recon:
        rows = [targets[:8]] + [recon[f][:8] for f in ("gan", "vae") if f in recon]
        save_image(make_grid(torch.cat(rows), nrow=min(8, len(targets))), args.grid)
        print(f"wrote {args.grid} (rows: target, " + ", ".join(f for f in ("gan", "vae") if f in recon) + ")")
    print(f"wrote {out / 'create.json'}")


if __name__ == "__main__":
    main()

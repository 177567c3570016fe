"""artforge sample: images (or sounds) from a run, from seeds, latent files or a style mix."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..runfolder import GENERATED
from .common import (
    CLIError,
    add_scale_flags,
    add_upscale_flag,
    image_suffix,
    is_folder,
    parse_seed,
    sample_options,
)

NAMES = ("sample",)


def add_arguments(sub: Any) -> None:
    S = argparse.SUPPRESS
    s = sub.add_parser("sample", help="generate images (or sounds) from a run", allow_abbrev=False)
    s.add_argument("run", metavar="RUN", help="run folder, or RUN@STEP / RUN@best for a snapshot")
    s.add_argument("-n", type=int, default=16, help="number of images (default 16)")
    s.add_argument("--seed", type=parse_seed, default=None, help="seed for all n images (default: random)")
    s.add_argument("--seeds", default=None, help="one image per seed, e.g. 0-35 or 1,5,9")
    s.add_argument(
        "--out",
        default=None,
        help="FILE.png (or .jpg, .jpeg, .webp) for a grid, DIR/ for one image file per image "
        "(a sound run: one WAV per sound and grid.png)",
    )
    s.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default=None,
        help="with --out DIR/: the image files' format (default png); a FILE's suffix names its own",
    )
    s.add_argument("--nrow", type=int, default=None, help="images per grid row")
    add_scale_flags(s)
    add_upscale_flag(s)
    s.add_argument("--truncation", type=float, default=S, help="GAN: scale latents (<1: safer)")
    s.add_argument("--temperature", type=float, default=S, help="VAE: scale prior samples")
    s.add_argument("--steps", type=int, default=S, help="diffusion: DDIM sampling steps (default 25)")
    s.add_argument("--prompt", default=S, help="text runs: what to draw")
    s.add_argument(
        "--prompts",
        default=None,
        help='text runs: several prompts split by "|": one grid row of n images per prompt, the '
        "same noise in every row, each row's prompt drawn beside it (a .txt beside the grid has "
        "them in full)",
    )
    s.add_argument("--guidance", type=float, default=S, help="text runs: guidance scale (default 3)")
    s.add_argument(
        "--latents", metavar="FILE", default=None, help="decode these latents (artforge project's)"
    )
    s.add_argument("--mix", metavar="A,B", default=None, help="GAN/VAE: A's layout, B's style (with --at)")
    s.add_argument("--at", type=int, default=None, help="with --mix: the layer B's statistics start at")
    s.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    return cmd_sample(args)


def _check_grid_out(args: argparse.Namespace, out: str) -> None:
    """A grid FILE names its format by its suffix: refuse an unknown one (and a --format that
    says otherwise) before anything is drawn."""
    from ..sample import image_format

    if Path(out).suffix.lower() == ".wav":  # a sound run's own message says where sounds go
        return
    image_format(out)
    fmt = getattr(args, "format", None)
    if fmt is not None and image_format(out) != image_format(f"x.{fmt}"):
        raise CLIError(
            f"--out {out} is not a .{fmt} file; --format is for --out DIR/ (a FILE's suffix decides)"
        )


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from ..api import load
    from ..sample import (
        MAX_IMAGES,
        batch_names,
        check_scale,
        make_grid,
        parse_seeds,
        save_grid,
        save_image,
        seed_names,
    )

    if not 1 <= args.n <= MAX_IMAGES:
        raise CLIError(f"-n must be between 1 and {MAX_IMAGES:,}, got {args.n}")
    check_scale(args.scale, args.resample, (1, 1))
    if args.out is not None and not is_folder(args.out):
        _check_grid_out(args, args.out)
    run = load(args.run, device=args.device, upscale=args.upscale)
    options = sample_options(args)
    if args.latents is not None or args.mix is not None:
        return _sample_latents_or_mix(args, run, options)
    prompts = _prompt_rows(args, run)
    rows = [{"prompt": p} for p in prompts] or [{}]  # --prompts: the same noise once per prompt
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        batches = [run.sample_seeds(seeds, **options, **row) for row in rows]
        names = seed_names(seeds)
        label = f"seeds {args.seeds}"
    else:
        seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        batches = [run.sample(args.n, seed=seed, **options, **row) for row in rows]
        names = batch_names(seed, args.n)
        label = f"seed {seed}"
    images = torch.cat(batches)
    if prompts:  # row r of the grid is prompt r; file names say which
        names = [f"prompt{r:02d}-{name}" for r in range(len(prompts)) for name in names]
        args.nrow = args.nrow or len(batches[0])
        label += f" {len(prompts)} prompts"
    if run.is_audio:
        return _write_sounds(run, args, images, names, label)
    out = args.out or str(run.path / GENERATED / f"{label.replace(' ', '').replace(',', '_')}.png")
    if is_folder(out):
        folder = Path(out)
        check_scale(args.scale, args.resample, tuple(images.shape[2:]))
        folder.mkdir(parents=True, exist_ok=True)
        suffix = image_suffix(args, out)
        for img, name in zip(images, names, strict=True):
            save_image(img, folder / Path(name).with_suffix(suffix), args.scale, args.resample)
        print(f"wrote {len(images)} images ({label}) to {folder}/")
    else:
        check_scale(args.scale, args.resample, tuple(make_grid(images, args.nrow).shape[1:]))
        # a row per prompt gets its prompt drawn beside it (a different --nrow mixes them: none)
        labels = prompts if prompts and args.nrow == len(batches[0]) else None
        save_grid(images, out, args.nrow, scale=args.scale, resample=args.resample, labels=labels)
        print(f"wrote a grid of {len(images)} images ({label}) to {out}")
    if prompts:
        listing = Path(out) / "prompts.txt" if Path(out).is_dir() else Path(out).with_suffix(".txt")
        listing.write_text("".join(f"row {r + 1}: {p}\n" for r, p in enumerate(prompts)), encoding="utf-8")
        print(f"wrote the prompt of each row to {listing}")
    return 0


def _prompt_rows(args: argparse.Namespace, run: Any) -> list[str]:
    """The prompts of --prompts "a|b|c" (empty list without it), checked against the run."""
    if getattr(args, "prompts", None) is None:
        return []
    if "prompt" in args:
        raise CLIError("give either --prompt or --prompts, not both")
    if not getattr(run.model, "conditional", False):
        raise CLIError(f"{args.run}: this run was trained without captions, so it takes no prompt")
    prompts = [p.strip() for p in args.prompts.split("|")]
    if not any(prompts):
        raise CLIError('--prompts needs at least one prompt, e.g. --prompts "cat face|red heart"')
    return prompts


def _write_sounds(run: Any, args: argparse.Namespace, images: Any, names: list[str], label: str) -> int:
    """A sound run: DIR/ gets one WAV per sample and grid.png of their spectrograms; FILE.png the grid."""
    from ..audio import write_wav
    from ..sample import check_scale, make_grid, save_grid

    check_scale(args.scale, args.resample, tuple(make_grid(images, args.nrow).shape[1:]))
    out = args.out or str(run.path / GENERATED / label.replace(" ", "").replace(",", "_"))
    if Path(out).suffix.lower() == ".png" and not Path(out).is_dir():
        save_grid(images, out, args.nrow, scale=args.scale, resample=args.resample)
        print(f"wrote a grid of {len(images)} spectrograms ({label}) to {out}; give DIR/ for the sounds")
        return 0
    if Path(out).suffix and not out.endswith(("/", "\\")) and not Path(out).is_dir():
        raise CLIError(f"--out {out}: sounds go to a folder (DIR/: WAVs and grid.png) or FILE.png (grid)")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    waves = run.to_audio(images)
    for wave, name in zip(waves, names, strict=True):
        write_wav(wave, folder / Path(name).with_suffix(".wav"), run.sample_rate)
    save_grid(images, folder / "grid.png", args.nrow, scale=args.scale, resample=args.resample)
    seconds = waves.shape[1] / run.sample_rate
    print(
        f"wrote {len(images)} sounds ({label}, {seconds:.2f} s at {run.sample_rate} Hz) and their "
        f"spectrograms (grid.png) to {folder}/"
    )
    return 0


def _sample_latents_or_mix(args: argparse.Namespace, run: Any, options: dict[str, Any]) -> int:
    """sample --latents FILE (decode them) or --mix A,B --at LAYER (one mixed image)."""
    from ..create import load_latents
    from ..sample import check_scale, make_grid, parse_seeds, save_grid, save_image

    if args.seeds is not None or args.seed is not None or args.prompts is not None:
        raise CLIError("--latents and --mix take no --seed, --seeds or --prompts")
    if args.latents is not None and args.mix is not None:
        raise CLIError("give --latents or --mix, not both")
    if args.latents is not None:
        images = run.decode(load_latents(args.latents, run.model), **options)
        label, stem = f"latents of {args.latents}", "latent"
    else:
        pair = parse_seeds(args.mix)
        if len(pair) != 2 or args.at is None:
            raise CLIError(
                "--mix takes two seeds, A,B, and --at LAYER (0 = B's statistics from the first layer)"
            )
        images = run.mix(pair[0], pair[1], args.at, **options)
        label, stem = (
            f"seed {pair[0]} mixed with seed {pair[1]} at layer {args.at}",
            f"mix{pair[0]}-{pair[1]}-at{args.at}",
        )
    out = args.out or str(run.path / GENERATED / f"{stem}.png")
    if is_folder(out):
        check_scale(args.scale, args.resample, tuple(images.shape[2:]))
        for k, img in enumerate(images):
            save_image(img, Path(out) / f"{stem}{k:04d}{image_suffix(args, out)}", args.scale, args.resample)
        print(f"wrote {len(images)} images ({label}) to {out}/")
    else:
        check_scale(args.scale, args.resample, tuple(make_grid(images, args.nrow).shape[1:]))
        save_grid(images, out, args.nrow, scale=args.scale, resample=args.resample)
        print(f"wrote {len(images)} images ({label}) to {out}")
    return 0

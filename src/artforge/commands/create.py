"""artforge project, img2img and inpaint: start from an image (docs/create.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import CLIError, add_upscale_flag, parse_seed

NAMES = ("project", "img2img", "inpaint")


def add_arguments(sub: Any) -> None:
    for name, text in (
        ("project", "find the latent that reproduces an image (GAN, DCGAN, VAE)"),
        ("img2img", "variations of an image: strength 0 returns it, 1 ignores it"),
        ("inpaint", "fill the white part of a mask, keep the black part exactly"),
    ):
        c = sub.add_parser(name, help=text, description=text + "; docs/create.md.", allow_abbrev=False)
        c.add_argument("run", metavar="RUN", help="run folder, or RUN@STEP / RUN@best for a snapshot")
        c.add_argument(
            "--image", required=True, metavar="FILE", help="the input image (any size: fitted like the data)"
        )
        c.add_argument(
            "--out", metavar="DIR", default=None, help="output folder (default RUN/create/COMMAND-IMAGE)"
        )
        c.add_argument("--seed", type=parse_seed, default=0)
        c.add_argument("--prompt", default=None, help="text runs: what to draw")
        c.add_argument("--device", default="auto")
        if name == "project":
            c.add_argument(
                "--steps",
                type=int,
                default=200,
                help="optimisation steps (default 200; VAE 0 = encoder only)",
            )
            c.add_argument("--gif", action="store_true", help="also write progress.gif")
            continue
        add_upscale_flag(c)
        c.add_argument("-n", type=int, default=4, help="outputs (default 4)")
        c.add_argument("--steps", type=int, default=None, help="diffusion: DDIM steps (default the run's)")
        c.add_argument("--guidance", type=float, default=None, help="diffusion text runs: guidance scale")
        c.add_argument(
            "--project-steps", type=int, default=200, help="GAN/VAE: projection steps (default 200)"
        )
        if name == "img2img":
            c.add_argument("--strength", type=float, required=True, help="0 = the input, 1 = ignore it")
        else:
            hole = c.add_mutually_exclusive_group(required=True)
            hole.add_argument("--mask", metavar="FILE", help="white = fill, black = keep")
            hole.add_argument(
                "--box",
                metavar="L,T,R,B",
                help="fill a rectangle instead of a mask file: its edges as fractions of the width "
                "and height, e.g. 0.25,0.25,0.75,0.75 for the middle",
            )
            c.add_argument("--resample", type=int, default=1, help="diffusion: RePaint resampling per step")


def run(args: argparse.Namespace) -> int:
    return cmd_project(args) if args.command == "project" else cmd_img2img_inpaint(args)


def _create_inputs(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """Load the run and the input image (checked like training data) before anything is written.
    A cascaded run is worked on at its base's size (its base stage), its outputs then enlarged
    by its upscaler (``args.upscaler``, as --upscale UPRUN sets it for any run)."""
    from .. import cascade
    from ..api import load
    from ..create import create_dir, load_image

    ref, up_ref = args.run, getattr(args, "upscale", None)
    whole = cascade.is_cascade(args.run)
    if whole:
        if up_ref is not None:
            raise CLIError(f"{args.run} is a cascade: it enlarges its outputs already (leave out --upscale)")
        ref = str(Path(args.run) / cascade.BASE_DIR)
        up_ref = str(Path(args.run) / cascade.UPSCALER_DIR) if args.command != "project" else None
    run = load(ref, device=args.device)
    if run.is_audio:
        raise CLIError(f"{args.run}: a sound run; {args.command} takes pictures")
    args.upscaler = None
    if up_ref is not None:
        args.upscaler = load(up_ref, device=args.device)
        cascade.compose(run, args.upscaler)  # an upscaler of another input size: a ConfigError
    image = load_image(args.image, run.config.data)
    folder = Path(args.run) if whole else run.path  # a cascade's outputs beside both stages
    out = Path(args.out) if args.out else create_dir(folder, args.command, args.image)
    return run, image, out


def cmd_project(args: argparse.Namespace) -> int:
    from ..create import LATENT_FILE

    run, image, out = _create_inputs(args)
    frames = 40 if args.gif else 0
    proj = run.project(image, steps=args.steps, seed=args.seed, prompt=args.prompt, frames=frames)
    written = run.write_projection(
        proj, out, image=str(args.image), steps=args.steps, seed=args.seed, run=str(args.run)
    )
    psnr, dist = float(proj.psnr[0]), float(proj.distance[0])
    print(f"projected {args.image}: PSNR {psnr:.2f} dB, distance {dist:.4f} after {args.steps} steps")
    print(
        f"  wrote {', '.join(written)} to {out}/ (sample and interpolate take --latents {out / LATENT_FILE})"
    )
    return 0


def cmd_img2img_inpaint(args: argparse.Namespace) -> int:
    from ..create import box_mask, load_mask

    run, image, out = _create_inputs(args)
    options: dict[str, Any] = {"seed": args.seed, "prompt": args.prompt}
    if run.config.family == "diffusion":
        options.update(steps=args.steps, guidance=args.guidance)
    elif args.steps is not None or args.guidance is not None:
        raise CLIError("--steps and --guidance apply to diffusion runs; GAN/VAE take --project-steps")
    else:
        options["project_steps"] = args.project_steps
    if args.n < 1 or args.n > 1024:
        raise CLIError(f"-n must be between 1 and 1024, got {args.n}")
    if args.command == "img2img":
        images = run.img2img(image, args.strength, args.n, **options)
    else:
        mask = load_mask(args.mask, run.config.data) if args.mask else box_mask(args.box, run.config.data)
        if run.config.family == "diffusion":
            options["resample"] = args.resample
        elif args.resample != 1:
            raise CLIError("--resample applies to diffusion runs")
        images = run.inpaint(image, mask, args.n, **options)
    strength = args.strength if args.command == "img2img" else None
    written = run.write_variations(images, out, image, kind=args.command, seed=args.seed, strength=strength)
    print(f"wrote {len(images)} images and {written[-1]} (the input first) to {out}/")
    if args.upscaler is not None:
        from ..cascade import upscale_images

        big, big_input = upscale_images(args.upscaler, images), upscale_images(args.upscaler, image)
        folder = out / "upscaled"
        written = run.write_variations(
            big, folder, big_input, kind=args.command, seed=args.seed, strength=strength
        )
        h, w = big.shape[2:]
        print(f"wrote them upscaled to {w}x{h} and {written[-1]} to {folder}/")
    return 0

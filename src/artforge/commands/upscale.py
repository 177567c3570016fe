"""artforge upscale: enlarge pictures (a file or a folder of them) with an upscaler run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..runfolder import GENERATED
from .common import CLIError, add_scale_flags, image_suffix, is_folder

NAMES = ("upscale",)
DEFAULT_DIR = "upscaled"  # UPRUN/generated/upscaled/ when no --out is given


def add_arguments(sub: Any) -> None:
    u = sub.add_parser(
        "upscale",
        help="enlarge pictures with an upscaler run (--model upscaler, or a cascade's)",
        description="Enlarge a picture, or every picture in a folder, with an upscaler run "
        "(artforge train --model upscaler, or the upscaler of a train --cascade run). A picture "
        "of any size is first fitted to the upscaler's input size as its training data was "
        "(docs/cascade.md).",
        allow_abbrev=False,
    )
    u.add_argument("run", metavar="UPRUN", help="an upscaler run folder, or a cascaded run (its upscaler)")
    u.add_argument("--image", required=True, metavar="FILE|DIR", help="a picture, or a folder of them")
    u.add_argument(
        "--out",
        default=None,
        help="FILE.png (or .jpg, .jpeg, .webp) for one picture; DIR/ for a folder (one file per "
        "picture, its name kept; default UPRUN/generated/upscaled/)",
    )
    u.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default=None,
        help="with --out DIR/: the image files' format (default png); a FILE's suffix names its own",
    )
    add_scale_flags(u)
    u.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    return cmd_upscale(args)


def _load_upscaler(ref: str, device: str) -> Any:
    """The upscaler run named by ``ref``: itself, or a cascaded run folder's upscaler stage."""
    from ..api import load
    from ..cascade import UPSCALER_DIR, is_cascade, read_cascade
    from ..errors import ConfigError
    from ..models.upscaler import Upscaler

    if is_cascade(ref):
        read_cascade(ref)  # a broken cascade config is named before its stage is used
        ref = str(Path(ref) / UPSCALER_DIR)
    up = load(ref, device=device)
    if not isinstance(up.model, Upscaler):
        raise ConfigError(
            f"{ref} is a {up.config.family} run, not an upscaler: train one with "
            "--model upscaler --size N --model.factor=F (or sample this run with --upscale UPRUN)"
        )
    return up


def cmd_upscale(args: argparse.Namespace) -> int:
    from ..cascade import upscale_folder, upscale_images
    from ..errors import NotFound
    from ..sample import check_scale, image_format, save_image

    check_scale(args.scale, args.resample, (1, 1))
    source = Path(args.image)
    if not source.exists():
        raise NotFound(f"--image {source}: no such file or folder")
    folder_in = source.is_dir()
    if args.out is not None and not is_folder(args.out):
        if folder_in:
            raise CLIError(f"--image {source} is a folder: --out must be a folder too (DIR/), not {args.out}")
        image_format(args.out)
        if args.format is not None and image_format(args.out) != image_format(f"x.{args.format}"):
            raise CLIError(
                f"--out {args.out} is not a .{args.format} file; --format is for --out DIR/ "
                "(a FILE's suffix decides)"
            )
    up = _load_upscaler(args.run, args.device)
    out = args.out or str(up.path / GENERATED / DEFAULT_DIR) + "/"
    if folder_in:
        files, images, skipped = upscale_folder(up, source)
        names = [f.relative_to(source) for f in files]
    else:
        images, skipped = upscale_images(up, source), []
        names = [Path(source.name)]
    check_scale(args.scale, args.resample, tuple(images.shape[2:]))
    h, w = images.shape[2:]
    if is_folder(out):
        suffix = image_suffix(args, out)
        for img, name in zip(images, names, strict=True):
            target = Path(out) / name.with_suffix(suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_image(img, target, args.scale, args.resample)
        where = f"{out.rstrip('/')}/"
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        save_image(images[0], out, args.scale, args.resample)
        where = out
    size = f"{w * args.scale}x{h * args.scale}"
    print(f"upscaled {len(images)} picture{'s' * (len(images) != 1)} to {size} -> {where}")
    for path, why in skipped:
        print(f"  skipped {path}: {why}")
    return 0

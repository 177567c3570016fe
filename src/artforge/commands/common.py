"""What several commands share: the seed flag type, a setting's parse function as a flag type,
the --scale flags, the sampling options a namespace carries, and the checks of --out and -n."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError


class CLIError(UsageError):
    """A user error in the command line, reported as one line (exit status 2)."""


def arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A setting's parse function (config.parse_size, config.parse_betas) as a flag's type:
    its ValueError's message becomes argparse's (which would otherwise say only "invalid
    parse_size value"); the name stays the function's."""

    @functools.wraps(parse)
    def flag_type(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return flag_type


MAX_SEED = 2**63 - 1  # a torch generator's seed and numpy's, in one signed 64-bit integer


def parse_seed(text: str) -> int:
    """A seed flag: a whole number from 0 to 2**63 - 1 (torch and numpy both take it)."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad seed {text!r}: use a whole number like 7") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    return seed


def add_scale_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scale",
        type=int,
        default=1,
        metavar="N",
        help="write images N times larger (1-16; a 32x32 grid is tiny on screen)",
    )
    p.add_argument(
        "--resample",
        choices=["nearest", "lanczos"],
        default="nearest",
        help="how --scale enlarges: nearest (default: pixel art's sharp blocks) or lanczos (smooth)",
    )


def add_upscale_flag(p: argparse.ArgumentParser) -> None:
    """--upscale UPRUN: sample through an upscaler run (a cascade made on the spot)."""
    p.add_argument(
        "--upscale",
        metavar="UPRUN",
        default=None,
        help="enlarge through an upscaler run (artforge train --model upscaler): its input size "
        "must be this run's size (docs/cascade.md)",
    )


def add_batch_size_flag(p: argparse.ArgumentParser) -> None:
    """--batch-size of the commands that measure with the Inception network (eval, bench)."""
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per Inception batch (default 50 on a CPU, 200 on a GPU)",
    )


def image_suffix(args: argparse.Namespace, out: str) -> str:
    """The suffix of the image files written into the folder ``out`` (sample --format)."""
    return "." + (args.format or "png")


def sample_options(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("truncation", "temperature", "steps", "prompt", "guidance")
    return {k: getattr(args, k) for k in keys if k in args}


def is_folder(out: str) -> bool:
    """--out names a folder: it ends in a slash, is one already, or has no suffix."""
    return out.endswith(("/", "\\")) or Path(out).is_dir() or not Path(out).suffix


MAX_EVAL = 100_000  # samples measured at once (FID is usually reported at 50,000)


def check_eval_n(n: int | None) -> None:
    """-n of eval and bench: at least 4 (KID's subsets), at most MAX_EVAL (features in memory)."""
    if n is not None and not 4 <= n <= MAX_EVAL:
        raise CLIError(f"-n must be between 4 and {MAX_EVAL:,} samples, got {n:,}")


def refuse_sound(data: str, message: str) -> None:
    """Stop before any work when a picture-only command is given a folder of sounds."""
    from ..data.audio import detect_modality

    if detect_modality(data) == "audio":
        raise CLIError(f"{data} holds sound files: {message}")

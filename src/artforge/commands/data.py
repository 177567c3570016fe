"""artforge data: build the emoji or notes sets, or export a built-in set as image files."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..config import parse_size
from .common import CLIError, arg_type

NAMES = ("data",)


def add_arguments(sub: Any) -> None:
    d = sub.add_parser(
        "data", help="build a data set: emoji, notes (sounds), or export builtin[:NAME]", allow_abbrev=False
    )
    d.add_argument("name", metavar="NAME", help="emoji | notes | builtin | builtin:NAME")
    d.add_argument("--size", type=arg_type(parse_size), default=(64, 64), help="N or WIDTHxHEIGHT")
    d.add_argument("--out", required=True, help="output folder")
    d.add_argument("--limit", type=int, default=None, help="emoji: at most this many")
    d.add_argument("--count", type=int, default=None, help="builtin: number of images")
    d.add_argument(
        "--programs", default=None, help="notes: GM programs, e.g. 0,40 or 0-7 (default: 2 per family, 26)"
    )
    d.add_argument("--pitches", default="48-84:3", help="notes: MIDI pitches (default 48-84:3, C3..C6)")
    d.add_argument("--velocities", default="75,127", help="notes: MIDI velocities (default 75,127)")
    d.add_argument("--rate", type=int, default=16_000, help="notes: sample rate in Hz (default 16000)")
    d.add_argument("--seconds", type=float, default=1.0, help="notes: length of each note file (default 1)")
    d.add_argument("--soundfont", default=None, help="notes: a GM .sf2 (default: Debian's FluidR3_GM)")


def run(args: argparse.Namespace) -> int:
    return cmd_data(args)


def cmd_data(args: argparse.Namespace) -> int:
    height, width = args.size
    if args.name == "emoji":
        from ..data.emoji import build_emoji

        if height != width:
            raise CLIError("emoji are square: give --size N")
        n = build_emoji(height, args.out, limit=args.limit, progress=not args.quiet)
        print(f"wrote {n} emoji at {height}x{height} with captions.jsonl to {args.out}")
        return 0
    if args.name == "notes":
        return _data_notes(args)
    if args.name == "builtin" or args.name.startswith("builtin:"):
        from ..config import DataConfig
        from ..data import load_images
        from ..sample import save_image

        cfg = DataConfig(path=args.name, height=height, width=width)
        if args.count is not None:
            cfg = dataclasses.replace(cfg, builtin_count=args.count)
        images = load_images(cfg).images
        out = Path(args.out)
        for k, img in enumerate(images):
            save_image(img.float() / 255, out / f"{k:05d}.png")
        print(f"wrote {len(images)} images of {args.name} at {width}x{height} to {out}")
        return 0
    raise CLIError(f"unknown data set {args.name!r}; choose emoji, notes, builtin or builtin:NAME")


def _int_list(text: str, what: str) -> list[int]:
    """'48-84' or '60,64,67' -> ints (a range may have a step: 48-84:3)."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                span, _, step = part.partition(":")
                lo, hi = (int(v) for v in span.split("-", 1))
                out.extend(range(lo, hi + 1, int(step) if step else 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise CLIError(f"bad {what} {text!r}: use numbers and ranges like 48-84:3 or 60,64,67") from None
    if not out:
        raise CLIError(f"bad {what} {text!r}: nothing listed")
    return out


def _data_notes(args: argparse.Namespace) -> int:
    from ..data.notes import build_notes

    n = build_notes(
        args.out,
        programs=None if args.programs is None else _int_list(args.programs, "--programs"),
        pitches=_int_list(args.pitches, "--pitches"),
        velocities=_int_list(args.velocities, "--velocities"),
        rate=args.rate,
        seconds=args.seconds,
        soundfont=args.soundfont,
        progress=not args.quiet,
    )
    print(
        f"wrote {n} notes ({args.seconds:g} s at {args.rate} Hz) with captions.jsonl and labels.jsonl "
        f"to {args.out}\n  next: artforge train --data {args.out} --model vae --minutes 5 "
        "--out runs/notes-vae"
    )
    return 0

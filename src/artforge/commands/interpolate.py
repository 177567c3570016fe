"""artforge interpolate: an animation (or a sound) walking through latents, seeds or prompts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import CLIError, add_scale_flags, add_upscale_flag, sample_options

NAMES = ("interpolate",)


def add_arguments(sub: Any) -> None:
    S = argparse.SUPPRESS
    i = sub.add_parser("interpolate", help="animate a walk through latent space", allow_abbrev=False)
    i.add_argument("run", metavar="RUN")
    i.add_argument("--seeds", default=None, help="key frames, e.g. 1,2,3 (default; after --latents' ones)")
    i.add_argument(
        "--latents", metavar="FILE[,FILE]", default=None, help="key frames from latent files first"
    )
    i.add_argument("--frames", type=int, default=60, help="frames in all (default 60)")
    i.add_argument("--fps", type=float, default=20)
    i.add_argument("--no-loop", action="store_true", help="stop at the last seed")
    i.add_argument(
        "--out",
        default=None,
        help="walk.gif or walk.mp4 (default RUN/walk.gif); a sound run: FILE.wav (default RUN/walk.wav) "
        "or DIR/ (a WAV per frame)",
    )
    add_scale_flags(i)
    add_upscale_flag(i)
    i.add_argument("--truncation", type=float, default=S)
    i.add_argument("--temperature", type=float, default=S)
    i.add_argument("--steps", type=int, default=S, help="diffusion: DDIM sampling steps")
    i.add_argument("--prompt", default=S, help="text runs: the prompt of every frame")
    i.add_argument("--guidance", type=float, default=S, help="text runs: guidance scale")
    i.add_argument(
        "--prompts",
        default=None,
        help="text runs: walk from prompt to prompt, 'cat face|red heart' "
        "(the noise of the first --seeds seed stays fixed)",
    )
    i.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    return cmd_interpolate(args)


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ..api import load
    from ..sample import check_scale, parse_seeds, save_animation

    check_scale(args.scale, args.resample, (1, 1))
    run = load(args.run, device=args.device, upscale=args.upscale)
    seeds = (
        parse_seeds(args.seeds or ("" if args.latents else "1,2,3")) if args.seeds or not args.latents else []
    )
    if not 2 <= args.frames <= 10_000:
        raise CLIError(f"--frames must be between 2 and 10000, got {args.frames}")
    if not 0.01 <= args.fps <= 1000:  # a GIF frame lasts 1000 / fps ms, stored in 16 bits
        raise CLIError(f"--fps must be between 0.01 and 1000, got {args.fps}")
    if args.prompts is not None:
        prompts = [p.strip() for p in args.prompts.split("|")]
        options = {k: v for k, v in sample_options(args).items() if k != "prompt"}
        frames = run.interpolate_prompts(prompts, args.frames, seed=seeds[0], **options)
        what = f"prompts {prompts} (seed {seeds[0]})"
    elif args.latents is not None:
        frames, what = _walk_latents(args, run, seeds)
    else:
        frames = run.interpolate(seeds, args.frames, loop=not args.no_loop, **sample_options(args))
        what = f"seeds {seeds}"
    if run.is_audio and (args.out is None or not args.out.lower().endswith((".gif", ".mp4"))):
        return _write_walk_sound(run, frames, args.out or str(run.path / "walk.wav"), seeds)
    out = args.out or str(run.path / "walk.gif")
    check_scale(args.scale, args.resample, tuple(frames.shape[2:]))
    save_animation(frames, out, fps=args.fps, scale=args.scale, resample=args.resample)
    print(f"wrote {len(frames)} frames through {what} to {out}")
    return 0


def _write_walk_sound(run: Any, frames: Any, out: str, seeds: list[int]) -> int:
    """A sound walk: FILE.wav plays every frame's sound back to back; DIR/ gets one WAV per frame."""
    from ..audio import write_wav

    waves = run.to_audio(frames)
    if out.lower().endswith(".wav"):
        write_wav(waves.reshape(-1), out, run.sample_rate)
        seconds = waves.numel() / run.sample_rate
        print(f"wrote {len(waves)} frames through seeds {seeds} as one {seconds:.1f} s sound to {out}")
        return 0
    if Path(out).suffix and not out.endswith(("/", "\\")) and not Path(out).is_dir():
        raise CLIError(
            f"--out {out}: a sound walk is FILE.wav (one sound), DIR/ (a WAV per frame) or .gif/.mp4"
        )
    for k, wave in enumerate(waves):
        write_wav(wave, Path(out) / f"frame{k:04d}.wav", run.sample_rate)
    print(f"wrote {len(waves)} frames through seeds {seeds} as WAVs to {out}/")
    return 0


def _walk_latents(args: argparse.Namespace, run: Any, seeds: list[int]) -> tuple[Any, str]:
    """interpolate --latents F[,F]: key frames from latent files, then any --seeds."""
    import torch

    from ..create import load_latents
    from ..sample import check_options, generate, interpolation_path

    files = [f for f in args.latents.split(",") if f]
    keys = [load_latents(f, run.model) for f in files]
    if seeds:
        keys.append(run.latent(seeds))
    path = interpolation_path(torch.cat(keys), args.frames, not args.no_loop)
    options = check_options(run.model, sample_options(args))
    return generate(run.model, path, **options), f"latents {files}" + (f" and seeds {seeds}" if seeds else "")

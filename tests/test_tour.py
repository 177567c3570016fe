"""README's tour of the CLI, read from README.md itself, so the README and this test cannot drift.

The fast test checks that every tour line is a command the CLI accepts and that every run the
tour samples from, interpolates or evaluates was trained by an earlier line. The slow test runs
every line in order, as subprocesses of the real CLI, in a fresh folder (the repository's
configs/ copied in, as in a clone) with tiny budgets put in place of the tour's minutes, steps
and sample counts (``tiny``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from artforge.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TINY_TRAIN = ["--batch-size", "8", "--model.base_channels=8", "--grid-n", "4", "--sample-every", "0"]


def tour_commands(section: str = "## A tour of the CLI") -> list[list[str]]:
    """The artforge commands of the first bash block after ``section`` in README.md, in order."""
    text = README.read_text()
    start = text.index(section)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"no bash block after {section!r} in README.md"
    commands = []
    for line in block.group(1).splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "artforge":
            commands.append(words[1:])
    return commands


def _set(args: list[str], flag: str, value: str) -> list[str]:
    """``args`` with ``flag``'s value replaced (or the flag added)."""
    if flag in args:
        i = args.index(flag)
        return [*args[: i + 1], value, *args[i + 2 :]]
    return [*args, flag, value]


def tiny(args: list[str]) -> list[str]:
    """One tour command with a budget a test can afford: the same command, smaller numbers."""
    command = args[0]
    if command == "data":
        return [*args, "--limit", "40"]  # the real emoji set, 40 of its images
    if command == "train" and "--dry-run" not in args:
        if "--minutes" in args:
            args = _drop(args, "--minutes")
        args = _set(args, "--steps", "5" if "--resume" in args else "3")
        if "--snapshot-every" in args:
            args = _set(args, "--snapshot-every", "1")
        return [*args, *TINY_TRAIN] if "--resume" not in args else args
    if command == "sample":
        if "-n" in args:
            args = _set(args, "-n", "4")
        if "--seeds" in args:
            args = _set(args, "--seeds", "0-3")
        if "--steps" in args:
            args = _set(args, "--steps", "2")
        return args
    if command == "interpolate":
        return _set(args, "--frames", "4")
    if command == "project":
        return _set(args, "--steps", "2")
    if command in ("img2img", "inpaint"):
        return _set(_set(args, "-n", "1"), "--project-steps", "2")
    if command == "eval":
        return _set(args, "-n", "8") if args[1] != "--fake" else args
    if command == "bench":
        args = _set(_set(args, "--minutes", "0.02"), "-n", "8")
        return [*args, "--batch-size", "8"] if "--batch-size" not in args else args
    return args


def _drop(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2 :]


READERS = ("sample", "interpolate", "eval", "project", "img2img", "inpaint")


def _positional_run(args: list[str]) -> str | None:
    """The RUN folder a line reads (its first positional; RUN@STEP / RUN@best name RUN)."""
    if args[0] in READERS and len(args) > 1 and not args[1].startswith("-"):
        return args[1].partition("@")[0]
    return None


def test_every_tour_line_parses_and_reads_only_runs_the_tour_trained():
    commands = tour_commands()
    assert len(commands) >= 12, commands
    parser = build_parser()
    trained: set[str] = set()
    folders: set[str] = set()  # what `data` lines and per-image outputs wrote
    for args in commands:
        parsed, extras = parser.parse_known_args(args)
        assert all(e.startswith("--") and "=" in e for e in extras), (args, extras)  # --section.name=value
        line = f"README tour: `artforge {shlex.join(args)}`"
        run = _positional_run(args)
        if run is not None:
            assert run in trained, f"{line} reads {run}, never trained"
        for given in (
            getattr(parsed, "image", None),
            getattr(parsed, "mask", None),
            getattr(parsed, "latents", None),
        ):
            if given is not None:  # an input file: in a folder an earlier line wrote
                assert any(given.startswith(f.rstrip("/") + "/") for f in folders), (
                    f"{line}: {given} not made"
                )
        if args[0] == "train":
            out = getattr(parsed, "out", None)
            again = parsed.resume or parsed.restart or parsed.overwrite or parsed.dry_run
            assert again or out not in trained, f"{line} trains into {out}, which an earlier line trained"
            trained.add(out)
        elif getattr(parsed, "out", None):
            folders.add(parsed.out)
    assert "runs/emoji-diffusion" in trained


def test_tiny_keeps_each_command_and_only_shrinks_numbers():
    for args in tour_commands():
        small = tiny(args)
        assert small[0] == args[0]
        if "--out" in args:
            assert small[small.index("--out") + 1] == args[args.index("--out") + 1]


@pytest.mark.slow
def test_readme_tour_runs_in_order_on_a_fresh_folder(tmp_path, network):
    """Every tour line, in order, as `python -m artforge ...` in a folder holding only configs/."""
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "XDG_CACHE_HOME": str(tmp_path / ".cache"),  # a fresh clone's data and feature caches
    }
    for args in tour_commands():
        small = tiny(args)
        p = subprocess.run(
            [sys.executable, "-m", "artforge", "-q", *small],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert p.returncode == 0, f"`artforge {shlex.join(small)}` failed:\n{p.stderr[-3000:]}"
    # what the tour says each line writes is there
    for path in (
        "grid.png",
        "safe.png",
        "vae.png",
        "diff.png",
        "walk.gif",
        "eval.json",
        "bench/emoji32/bench.md",
    ):
        assert (tmp_path / path).is_file(), path
    assert len(list((tmp_path / "picks").glob("*.png"))) == 4
    assert (tmp_path / "runs/shapes-vae/model.safetensors").is_file()

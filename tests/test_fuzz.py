"""Property-based fuzzing of the two parsers that read what users hand us: images and configs.

The default run tries a few hundred cases, derandomised so it is repeatable. The long run
(README) draws fresh cases:

    ARTFORGE_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/test_fuzz.py -p no:randomly

Properties: an image decoder returns an (H, W, 3) uint8 array or raises Skip with a reason,
nothing else, and a folder of such files always loads its good images; a config file either
becomes a RunConfig whose numbers the Trainer can use, or is refused with a ConfigError.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import json
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from artforge.config import DataConfig, OptimConfig, TrainConfig, load_config_file, parse_override
from artforge.config import run_config_from_dict as parse_run_config
from artforge.data import load_images
from artforge.data.folder import Skip, Spec, decode
from artforge.errors import ConfigError, UserError
from artforge.metrics import inception
from artforge.models import MODELS, make_model_config, model_class
from artforge.optim import build_optimizer, ema_beta, resolve_optim

LONG = "ARTFORGE_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("ARTFORGE_FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # the default run is repeatable; the long run explores
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
SPEC = Spec(16, 16, "crop", (255, 255, 255), max_pixels=2_000_000)  # bombs stay cheap to refuse

# -- images --------------------------------------------------------------------------------------


def _seed_images() -> list[bytes]:
    """Valid files of every format we read, in several modes: the material the mutations break."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = []
    for fmt, img, kw in [
        ("PNG", rgb, {}),
        ("PNG", rgb.convert("RGBA"), {}),
        ("PNG", rgb.convert("P"), {"transparency": 0}),
        ("PNG", Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)), {}),
        ("JPEG", rgb, {"quality": 80}),
        ("JPEG", rgb.convert("CMYK"), {}),
        ("JPEG", rgb, {"progressive": True}),
        ("GIF", rgb.convert("P"), {"save_all": True, "append_images": [rgb.convert("P")]}),
        ("BMP", rgb, {}),
        ("TIFF", rgb, {"compression": "tiff_deflate"}),
        ("TIFF", rgb.convert("F"), {}),
        ("WEBP", rgb, {"quality": 70}),
        ("WEBP", rgb.convert("RGBA"), {"lossless": True}),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with a few byte-level mutations: flips, cuts, inserts and extreme integers
    written over header fields (sizes, lengths, offsets)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "int", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "int":
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * width) - 1)
            data[pos : pos + width] = value.to_bytes(width, draw(st.sampled_from(["big", "little"])))
        else:
            end = draw(st.integers(pos, len(data)))
            data[end:end] = data[pos:end]
        if not data:
            break
    return bytes(data)


image_bytes = st.one_of(
    mutated_images(),
    st.binary(max_size=512),
    st.builds(
        lambda magic, rest: magic + rest, st.sampled_from([s[:16] for s in SEEDS]), st.binary(max_size=256)
    ),
)


def _check_decode(data: bytes) -> None:
    try:
        arr = decode(data, SPEC)
    except Skip as e:
        assert e.reason and isinstance(e.reason, str)
        return
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8


@fuzz
@given(image_bytes)
@example(SEEDS[0][:33])  # a PNG cut right after its header
def test_fuzz_image_decoder(data: bytes) -> None:
    _check_decode(data)


@settings(fuzz, max_examples=max(10, EXAMPLES // 20))  # each case writes a folder: fewer cases
@given(st.lists(image_bytes, min_size=1, max_size=6))
def test_fuzz_folder_loader_keeps_good_images(
    tmp_path_factory: pytest.TempPathFactory, files: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for i, data in enumerate(files):
        (folder / f"f{i}.png").write_bytes(data)
    (folder / "zz_good.png").write_bytes(SEEDS[0])
    s = load_images(DataConfig(path=str(folder), height=16, width=16, cache="memory", max_pixels=2_000_000))
    assert "zz_good.png" in s.names
    assert len(s.names) + len(s.skipped) == len(files) + 1
    assert all(reason for _, reason in s.skipped)


# -- configs -------------------------------------------------------------------------------------

CHOICES = ["crop", "pad", "stretch", "auto", "memory", "disk", "off", "bf16", "fp16", "sgd", "adam"]
CHOICES += ["adamw", "stop", "continue", "builtin", "hinge", "bce", "wgan-gp", "color,translation", *MODELS]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.integers(),
    st.floats(),
    st.floats(-2, 2),
    st.text(max_size=8),
    st.sampled_from(CHOICES),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
)
MODEL_FIELDS = sorted({f.name for cls in MODELS.values() for f in dataclasses.fields(cls.config_class)})


def section(cls: type) -> st.SearchStrategy[dict]:
    names = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=6), values, max_size=5)


run_dicts = st.fixed_dictionaries(
    {},
    optional={
        "family": st.sampled_from(sorted(MODELS)) | st.text(max_size=6),
        "data": section(DataConfig) | values,
        "train": section(TrainConfig),
        "optim": section(OptimConfig),
        "model": st.dictionaries(st.sampled_from(MODEL_FIELDS), values, max_size=4),
        "optim_groups": st.dictionaries(
            st.sampled_from(["G", "D", "main", "x"]), section(OptimConfig), max_size=2
        ),
        "format_version": st.integers(0, 2),
    },
)


def usable(d: dict) -> None:
    """Parse like `artforge train` does; a refusal must be a ConfigError (a plain ValueError,
    e.g. torch's from an optimiser setting artforge let through, is a bug). What is accepted must
    hold numbers the Trainer can compute with, without dividing by zero or overflowing."""
    try:
        cfg = parse_run_config(d)
        cls = model_class(cfg.family)
        make_model_config(cfg.family, cfg.model, height=cfg.data.height, width=cfg.data.width)
        groups = ["D", "G"] if cfg.family in ("gan", "dcgan") else ["main"]
        optim = resolve_optim(cfg, groups, dict(cls.optim_defaults))
        for settings_ in optim.values():
            build_optimizer([torch.nn.Parameter(torch.zeros(2))], settings_)
    except ConfigError as e:
        assert str(e)
        return
    t = cfg.train.budget_defaulted()
    for g in optim.values():
        assert math.isfinite(g["lr"]) and g["lr"] > 0 and g["clip"] >= 0
    if t.epochs is not None:
        math.ceil(t.epochs * 1000 / t.batch_size)
    if t.minutes is not None:
        assert math.isfinite(t.minutes)
    assert 7 % t.log_every >= 0 and t.grid_n >= 1 and t.monitor_n >= 1
    for every in (t.sample_every, t.ckpt_every, t.monitor_every):
        assert every >= 0
    ema_beta(t.ema_half_life, t.batch_size)
    torch.Generator().manual_seed(t.seed * 1_000_003 + 10**6)  # BatchStream's epoch seeds
    torch.Generator().manual_seed(t.seed * 7_919 + 10**9)  # and flip seeds
    torch.manual_seed(t.seed)


@fuzz
@given(run_dicts)
def test_fuzz_config_dicts(d: dict) -> None:
    usable(d)


@fuzz
@given(
    st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    st.sampled_from([".toml", ".json"]),
)
@example(b"[train]\nsteps = 1e400\n", ".toml")
@example(b'{"train": {"epochs": 1e999}}', ".json")
@example(b"[" * 5000, ".json")
def test_fuzz_config_files(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / f"run{suffix}"
    path.write_bytes(data)
    try:
        d = load_config_file(path)
    except ConfigError as e:
        assert str(path) in str(e)
        return
    usable(d)


@fuzz
@given(st.text(max_size=60))
@example("--train.steps=" + "[" * 5000)
@example("--train.seed=" + "9" * 5000)
def test_fuzz_overrides(arg: str) -> None:
    try:
        key, value = parse_override(arg)
    except ConfigError:
        return
    assert isinstance(key, str)
    section_, _, name = key.partition(".")
    if section_ in ("train", "data", "optim") and name:
        usable({section_: {name: value}})


# -- the command line, end to end ----------------------------------------------------------------
#
# Each case runs the real entry point, ``artforge.cli.main([...])`` (or ``artforge.load``), in a
# worker process that imports artforge once. The parent gives every case a time bound: a case
# that does not answer in CASE_SECONDS is a hang, the worker is killed and the case fails. The
# worker runs under an address-space limit, so a memory bomb fails there instead of taking the
# machine. Every case runs in its own folder with HOME, XDG_CACHE_HOME and TMPDIR inside the
# sandbox; after it, nothing outside its folder and the sandbox's cache may have changed.
#
# Property: exit code 0, or a non-zero code whose stderr ends in one line
# "artforge[ COMMAND]: error: ..." (argparse's usage lines may come before it); never an
# exception out of main, never "Traceback" in the output, never a hang.

CASE_SECONDS = float(os.environ.get("ARTFORGE_FUZZ_CASE_SECONDS", "120"))  # a shared CPU is slow
STARTUP_SECONDS = 60.0  # a fresh worker's imports, on a busy machine
WORKER_MEMORY = 6 * 2**30  # bytes of address space: torch, the FID network and a tiny run fit
CLI_EXAMPLES = int(os.environ.get("ARTFORGE_FUZZ_CLI_EXAMPLES", max(10, EXAMPLES // 10)))
FINDINGS = os.environ.get("ARTFORGE_FUZZ_FINDINGS")  # a file: log failures there instead of failing
ERROR_LINE = re.compile(r"^artforge(?: [a-z]+|\.load)?: error: \S")
REPO = Path(__file__).resolve().parents[1]


def _worker(fd_in: int, fd_out: int) -> None:  # pragma: no cover - runs in the worker process
    """Read one JSON case a line from fd_in, run it, write one JSON result a line to fd_out."""
    import contextlib
    import logging
    import resource
    import time
    import traceback

    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    import artforge
    from artforge.cli import main

    with os.fdopen(fd_in, "r") as cases, os.fdopen(fd_out, "w") as results:
        for line in cases:
            case = json.loads(line)
            os.chdir(case["cwd"])
            out, err = io.StringIO(), io.StringIO()
            for h in logging.root.handlers[:]:  # main's basicConfig binds the stderr of this case
                logging.root.removeHandler(h)
            rc, tb, t0 = None, None, time.perf_counter()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    if case["kind"] == "cli":
                        rc = main(case["argv"])
                    else:  # "load": the Python API on a run folder
                        run = artforge.load(case["run"], device="cpu")
                        run.sample(2, seed=0)
                        rc = 0
                except SystemExit as e:  # argparse
                    rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                except (UserError, OSError) as e:  # main catches these itself
                    if case["kind"] == "cli":
                        tb = traceback.format_exc()
                    else:  # the API's documented refusals: the message is what the user sees
                        rc = 1
                        err.write(f"artforge.load: error: {type(e).__name__}: {e}\n")
                except BaseException:  # noqa: BLE001 - everything else is the finding
                    tb = traceback.format_exc()
            result = {
                "rc": rc,
                "stdout": _tail(out.getvalue()),
                "stderr": _tail(err.getvalue()),
                "traceback": tb and tb[-6000:],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            results.write(json.dumps(result) + "\n")
            results.flush()


def _tail(text: str, lines: int = 30, width: int = 400) -> str:
    """The last lines of an output, each cut to its first ``width`` characters."""
    return "\n".join(line[:width] for line in text.splitlines()[-lines:])


class Worker:
    """The parent's side of one worker process: run a case with a time bound, restart on a hang."""

    def __init__(self, sandbox: Path) -> None:
        self.sandbox = sandbox
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = sandbox / "worker.log"  # the worker's own fd 1 and 2 (C-level output, crashes)

    def start(self) -> None:
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        home = self.sandbox / "home"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")]),
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "TMPDIR": str(self.sandbox / "tmp"),
            "ARTFORGE_INCEPTION": str(inception.find_inception(allow_download=False))
            if _has_network()
            else "",
        }
        if not env["ARTFORGE_INCEPTION"]:
            del env["ARTFORGE_INCEPTION"]
        code = f"import test_fuzz; test_fuzz._worker({to_worker_r}, {from_worker_w})"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                env=env,
                cwd=self.sandbox,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(to_worker_r, from_worker_w),
            )
        os.close(to_worker_r)
        os.close(from_worker_w)
        self.buffer = b""
        self.fresh = True  # its first case also waits for the imports (torch, artforge)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            os.close(self.to_worker)
            os.close(self.from_worker)
            self.proc = None

    def run(self, case: dict[str, Any], seconds: float = CASE_SECONDS) -> dict[str, Any]:
        """The worker's result, or {"hang": True} / {"died": code} (the worker is then restarted)."""
        if self.proc is None:
            self.start()
        try:
            os.write(self.to_worker, (json.dumps(case) + "\n").encode())
        except BrokenPipeError:  # it died between cases
            code = self.proc.wait() if self.proc else None
            self.stop()
            return {"died": code, "log": self.log.read_text(errors="replace")[-2000:]}
        deadline = time.monotonic() + seconds + (STARTUP_SECONDS if self.fresh else 0.0)
        self.fresh = False
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready = select.select([self.from_worker], [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                self.stop()
                return {"hang": True, "seconds": seconds}
            chunk = os.read(self.from_worker, 1 << 16)
            if not chunk:
                code = self.proc.wait() if self.proc else None
                self.stop()
                return {"died": code, "log": self.log.read_text(errors="replace")[-2000:]}
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)


def _has_network() -> bool:
    try:
        inception.find_inception(allow_download=False)
        return True
    except FileNotFoundError:
        return False


def _tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under root (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _repo_tree() -> dict[str, tuple[int, int]]:
    """The repository's own files (not runs/, data or caches other jobs may be writing)."""
    out = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in REPO.iterdir() if p.is_file()}
    for folder in ("src", "tests", "docs", "configs", "scripts"):
        out |= {f"{folder}/{k}": v for k, v in _tree(REPO / folder, skip=("__pycache__",)).items()}
    return out


class Sandbox:
    """A folder for one fuzz target: home/ (the caches), tmp/, runs/ (pristine runs to copy) and
    one cases/N/ folder per case; checks what each case wrote."""

    def __init__(self, root: Path, runs: dict[str, Path]) -> None:
        self.root, self.n = root, 0
        for d in ("home", "tmp", "cases"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.runs = runs
        self.pristine = {name: _tree(p) for name, p in runs.items()}
        self.worker = Worker(root)
        self.repo = _repo_tree()
        self.counts: collections.Counter[str] = collections.Counter()

    def new_case(self) -> Path:
        self.n += 1
        case = self.root / "cases" / str(self.n)
        case.mkdir()
        return case

    def run(self, case_dir: Path, kind: str, **fields: Any) -> dict[str, Any]:
        """Run one case in case_dir and check the sandbox around it; returns the result."""
        before = _tree(self.root, skip=("cases", "home", "tmp"))
        res = self.worker.run({"kind": kind, "cwd": str(case_dir), **fields})
        after = _tree(self.root, skip=("cases", "home", "tmp"))
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        changed = [c for c in changed if c != "worker.log"]
        assert not changed, f"{fields}: wrote outside its folder: {changed[:5]}"
        home = [p for p in _tree(self.root / "home") if not p.startswith(".cache/artforge/")]
        assert not home, f"{fields}: wrote into HOME outside the artforge cache: {home[:5]}"
        leftovers = list((self.root / "tmp").iterdir())
        assert not leftovers, f"{fields}: left temporary files: {leftovers[:5]}"
        others = [p for p in (self.root / "cases").iterdir() if p != case_dir]
        for old in others:  # earlier cases' folders must not change either: remove them now
            shutil.rmtree(old)
        return res

    def close(self) -> None:
        self.worker.stop()
        for name, p in self.runs.items():
            assert _tree(p) == self.pristine[name], f"the pristine run {name} was changed"
        now = _repo_tree()
        changed = sorted(k for k in self.repo.keys() | now.keys() if self.repo.get(k) != now.get(k))
        assert not changed, f"the repository changed during the fuzz: {changed[:5]}"


def check_cli(case: dict[str, Any], res: dict[str, Any], counts: collections.Counter[str]) -> None:
    """Success, or a clean one-line error; anything else fails."""
    problem = None
    if res.get("hang"):
        problem = f"no answer within {res['seconds']:.0f} s (a hang)"
    elif "died" in res:
        problem = f"the worker died (exit {res['died']}): {res['log']}"
    else:
        text = res["stdout"] + res["stderr"]
        lines = res["stderr"].rstrip().splitlines()
        if res["traceback"]:
            problem = f"an exception left main:\n{res['traceback']}"
        elif "Traceback (most recent call last)" in text:
            problem = f"a traceback in the output:\n{text}"
        elif res["rc"] != 0 and not (lines and ERROR_LINE.match(lines[-1])):
            problem = f"exit {res['rc']} without a one-line 'artforge: error:' at the end:\n{res['stderr']}"
    if problem is None:
        counts["ok" if res["rc"] == 0 else "clean error"] += 1
        return
    shown = json.dumps(case)
    shown = shown if len(shown) < 2000 else shown[:2000] + "..."
    if FINDINGS:  # a survey: write every failure down and go on
        counts["FAILED"] += 1
        with open(FINDINGS, "a") as f:
            f.write(json.dumps({"case": shown, "problem": problem[-1500:]}) + "\n")
        return
    raise AssertionError(f"{shown}\n{problem}")


# what users type: numbers at and past every edge, words, paths, colours, devices, literals
WORDS = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "7",
    "16",
    "64",
    "4096",
    "4097",
    "100000",
    "1e10",
    "1e400",
    "-1e400",
    "1" + "0" * 400,
]
WORDS += ["nan", "inf", "-inf", "5e-324", "0.5", "-0.0", "9" * 40, "", " ", "x", "none", "true", "false"]
WORDS += ["#fff", "#12345", "white", "/etc", "/dev/null", "cuda", "cuda:99", "cpu", "mps", "auto", "meta"]
WORDS += ["[1, 2]", "[]", "{'a': 1}", "{}", "()", "64x", "x64", "0x0", "64x-3", "16x16", "80x48", "0-3"]
WORDS += ["1,5,9", "0.5,0.999", "a,b", "[" * 50, "\x00", "é", "\u202e", "1_000", "0b101", "0x10", "${HOME}"]
WORDS += ["crop", "pad", "stretch", "memory", "disk", "off", "bf16", "fp16", "adam", "sgd", "hinge", *MODELS]
cli_words = st.one_of(
    st.sampled_from(WORDS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=12),
)


def _train_flags() -> list[tuple[str, bool]]:
    """(option, takes a value) of every `artforge train` flag, read from the real parser."""
    from artforge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for action in sub.choices["train"]._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--config", "--dry-run", "--out"):
                out.append((opt, action.nargs != 0))
    return out


TRAIN_OPTIONS = _train_flags()
SECTIONS = {
    "data": [f.name for f in dataclasses.fields(DataConfig)],
    "train": [f.name for f in dataclasses.fields(TrainConfig)],
    "optim": [f.name for f in dataclasses.fields(OptimConfig)],
    "model": MODEL_FIELDS,
    "optim_groups.G": [f.name for f in dataclasses.fields(OptimConfig)],
    "optim_groups.D": ["lr", "name", "betas"],
    "data.audio": ["n_mels", "sample_rate", "seconds"],
}
literal_values = st.recursive(
    st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
).map(repr)


@st.composite
def override_args(draw: st.DrawFn) -> str:
    section = draw(st.sampled_from(sorted(SECTIONS)) | st.text(max_size=5))
    name = draw(st.sampled_from(SECTIONS.get(section, ["x"])) | st.text(max_size=5))
    value = draw(cli_words | literal_values)
    return f"--{section}.{name}={value}"


@st.composite
def train_argv(draw: st.DrawFn) -> list[str]:
    argv = ["-q", "train", "--dry-run"]
    if draw(st.booleans()):
        data = ["builtin", "builtin:shapes", "builtin:nope", "DATA", "none"]
        argv += ["--data", draw(st.sampled_from(data))]
    for opt, takes_value in draw(st.lists(st.sampled_from(TRAIN_OPTIONS), max_size=4)):
        argv += [opt, draw(cli_words)] if takes_value else [opt]
    argv += draw(st.lists(override_args(), max_size=3))
    if draw(st.integers(0, 9)) == 0:
        argv += ["--resume", "--out", "run"]
    return argv


@pytest.fixture(scope="module")
def fuzz_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained run of each kind the fuzz mutates, and a small folder of images."""
    from artforge.cli import main

    root = tmp_path_factory.mktemp("fuzz-pristine")
    runs = {}
    for family in ("gan", "vae"):
        out = root / family
        argv = ["-q", "train", "--data", "builtin", "--builtin-count", "24", "--size", "16"]
        argv += ["--model", family, "--model.base_channels=8", "--latent-dim", "8", "--steps", "1"]
        argv += ["--batch-size", "8"]
        assert main([*argv, "--train.grid_n=4", "--device", "cpu", "--out", str(out)]) == 0
        runs[family] = out
    data = root / "data"
    data.mkdir()
    for i, seed in enumerate(SEEDS[:6]):
        (data / f"img{i}.png").write_bytes(seed)
    runs["data"] = data
    return runs


@pytest.fixture
def sandbox(tmp_path_factory: pytest.TempPathFactory, fuzz_runs: dict[str, Path]) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("clifuzz"), fuzz_runs)
    yield box
    box.close()
    if box.counts:
        print(f"\n{box.root.name}: {dict(sorted(box.counts.items()))}")


def _paths(argv: list[str], box: Sandbox, case: Path) -> list[str]:
    """Stand-ins replaced: DATA is the sample image folder; a run named 'run' is copied in."""
    if "run" in argv:
        shutil.copytree(box.runs["gan"], case / "run")
    return [str(box.runs["data"]) if a == "DATA" else a for a in argv]


cli_fuzz = settings(fuzz, max_examples=CLI_EXAMPLES)


@cli_fuzz
@given(train_argv())
@example(["-q", "train", "--dry-run", "--size", "0"])
@example(["-q", "train", "--dry-run", "--train.steps=" + "[" * 5000])
@example(["-q", "train", "--dry-run", "--train.minutes=1" + "0" * 400])  # was an OverflowError
@example(["-q", "train", "--dry-run", "--model.latent_dim=1000000000"])  # was a 4 TB allocation
@example(["-q", "train", "--dry-run", "--\r.x=0"])  # a control character in the error line
def test_fuzz_cli_train_dry_run(sandbox: Sandbox, argv: list[str]) -> None:
    case = sandbox.new_case()
    argv = _paths(argv, sandbox, case)
    before = _tree(case)
    res = sandbox.run(case, "cli", argv=argv)
    check_cli({"argv": argv}, res, sandbox.counts)
    assert _tree(case) == before, f"{argv}: --dry-run wrote files"


def toml_value(v: Any) -> str:
    """A value as TOML (inline tables for dicts); None has no TOML form and is left out."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else {math.inf: "inf", -math.inf: "-inf"}.get(v, repr(v))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items() if x is not None) + "}"
        )
    raise TypeError(type(v))


def to_toml(d: dict[str, Any]) -> str:
    """Top-level values first, then one [table] per dict-valued key."""
    head = [
        f"{json.dumps(k)} = {toml_value(v)}"
        for k, v in d.items()
        if not isinstance(v, dict) and v is not None
    ]
    tables = [
        f"[{json.dumps(k)}]\n"
        + "".join(f"{json.dumps(n)} = {toml_value(x)}\n" for n, x in v.items() if x is not None)
        for k, v in d.items()
        if isinstance(v, dict)
    ]
    return "\n".join(head) + "\n" + "\n".join(tables)


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A run config as TOML or JSON over the real setting names, sometimes with its bytes broken."""
    d = draw(run_dicts)
    suffix = draw(st.sampled_from([".toml", ".json"]))
    try:
        text = to_toml(d) if suffix == ".toml" else json.dumps(d)
    except (TypeError, ValueError):
        text = repr(d)
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:  # cut, or a few bytes written over
        data = bytearray(data)
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        data[pos : pos + draw(st.integers(0, 4))] = draw(st.binary(max_size=4))
        data = bytes(data[: draw(st.integers(pos, len(data)))]) if draw(st.booleans()) else bytes(data)
    return suffix, data


@cli_fuzz
@given(config_files(), st.lists(override_args(), max_size=2))
@example((".toml", b"[model]\nlatent_dim = 8\n[train]\nsteps = 1e400\n"), [])
@example((".json", b"[" * 100_000), [])
@example((".toml", b"[data]\nheight = 9223372036854775807\n"), [])
def test_fuzz_cli_config_files(sandbox: Sandbox, config: tuple[str, bytes], extras: list[str]) -> None:
    case = sandbox.new_case()
    suffix, data = config
    (case / f"run{suffix}").write_bytes(data)
    argv = ["-q", "train", "--dry-run", "--config", f"run{suffix}", *extras]
    before = _tree(case)
    res = sandbox.run(case, "cli", argv=argv)
    check_cli({"argv": argv, "config": data.decode("utf-8", "replace")[:500]}, res, sandbox.counts)
    assert _tree(case) == before, f"{argv}: --dry-run wrote files"


# -- a run folder's config.json, mutated, then used ----------------------------------------------

huge_numbers = st.sampled_from([10**6, 10**9, 10**12, 2**63, 10**30, 10**400, -(10**9), 1e308, -1e308])
json_values = st.one_of(
    values,
    huge_numbers,
    st.sampled_from(["64", "1e3", "nan", "", "gan", "cpu", "#fff", "builtin", "../x"]),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)
mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), json_values),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("add"), st.integers(0, 10**6), st.text(max_size=8), json_values),
    st.tuples(
        st.just("nest"), st.integers(0, 10**6), st.sampled_from([2, 2, 50, 50, 500, 500, 3000, 200_000])
    ),
)
whole_files = st.sampled_from(
    [b"", b"[]", b"null", b'"gan"', b"{", b"\xff\xfe{}", b"{}", b'{"family": "gan"}', b" " * 2_000_000]
)


def _paths_of(d: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into nested dicts and lists (the containers too)."""
    out = [prefix] if prefix else []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _paths_of(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out += _paths_of(v, (*prefix, i))
    return out


def mutate(d: dict[str, Any], ops: list[tuple[Any, ...]]) -> tuple[bytes, list[str]]:
    """config.json's bytes after set / delete / add / nest operations on paths picked by index
    (modulo their count), and what was done, by setting name. A nested value is written by
    hand: json.dumps cannot go that deep."""
    nests: dict[str, str] = {}
    done: list[str] = []
    for op in ops:
        paths = _paths_of(d)
        if not paths:
            break
        path = paths[op[1] % len(paths)]
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        done.append(f"{op[0]} {'.'.join(map(str, path))} {' '.join(repr(x)[:80] for x in op[2:])}".strip())
        if op[0] == "set":
            parent[key] = op[2]
        elif op[0] == "delete":
            del parent[key]
        elif op[0] == "add" and isinstance(parent[key], dict):
            parent[key][op[2]] = op[3]
        elif op[0] == "nest":  # the value, wrapped in lists op[2] deep
            marker = f"@@nest{len(nests)}@@"
            nests[marker] = "[" * op[2] + json.dumps(parent[key]) + "]" * op[2]
            parent[key] = marker
    text = json.dumps(d)
    for marker, nested in reversed(nests.items()):  # a later nest may hold an earlier marker
        text = text.replace(json.dumps(marker), nested)
    return text.encode("utf-8", "surrogatepass"), done


USES = ["sample", "sample", "load", "load", "interpolate", "eval", "resume"]


def _use(use: str) -> tuple[str, dict[str, Any]]:
    """The command run on the mutated folder 'run', as (kind, fields) for the worker."""
    if use == "load":
        return "load", {"run": "run"}
    argv = {
        "sample": ["-q", "sample", "run", "-n", "2", "--seed", "0", "--out", "out.png", "--device", "cpu"],
        "interpolate": ["-q", "interpolate", "run", "--frames", "2", "--out", "walk.gif", "--device", "cpu"],
        "eval": ["-q", "eval", "run", "-n", "4", "--batch-size", "4", "--device", "cpu"],
        "resume": ["-q", "train", "--out", "run", "--resume", "--dry-run"],
    }[use]
    return "cli", {"argv": argv}


@settings(cli_fuzz, max_examples=max(10, CLI_EXAMPLES))
@given(
    st.sampled_from(["gan", "vae"]),
    st.one_of(st.lists(mutation, min_size=1, max_size=4), whole_files),
    st.sampled_from(USES),
)
@example("gan", [("set", 0, 10**9)], "load")  # whichever setting sorts first, huge
@example("vae", [("nest", 3, 200_000)], "sample")
def test_fuzz_run_folder_config(
    sandbox: Sandbox, family: str, change: list[tuple[Any, ...]] | bytes, use: str
) -> None:
    if use == "eval" and not _has_network():
        use = "sample"
    case = sandbox.new_case()
    run = case / "run"
    shutil.copytree(sandbox.runs[family], run)
    if isinstance(change, bytes):
        data, done = change, [f"whole file {change[:20]!r}"]
    else:
        data, done = mutate(json.loads((run / "config.json").read_text()), change)
    (run / "config.json").write_bytes(data)
    kind, fields = _use(use)
    res = sandbox.run(case, kind, **fields)
    shown = data if len(data) < 600 else data[:300] + b" ... " + data[-200:]
    what = {"change": "; ".join(done)[:600], "config.json": shown.decode("utf-8", "replace")}
    check_cli({**fields, "family": family, **what}, res, sandbox.counts)
    assert (run / "config.json").read_bytes() == data, "the run's config.json was changed"


# -- flags of the commands that read a run folder ------------------------------------------------

OUT_NAMES = ["out.png", "dir/", "x.jpg", "", "out", "a/b/c.png", "walk.gif", "walk.mp4", "w.wav", "o.json"]
small_counts = st.sampled_from(["0", "-1", "1", "2", "3", "4", "5", "x", "1e10", "2.5", ""])
SAMPLE_FLAGS = {
    "-n": small_counts | st.sampled_from(["64", "1000", str(2**31), str(2**70)]),
    "--seed": cli_words,
    "--seeds": cli_words | st.sampled_from(["0-3", "3-0", "0-100000000000", "1,,2", "-5--1", "0-0"]),
    "--nrow": cli_words,
    "--truncation": cli_words,
    "--temperature": cli_words,
    "--steps": cli_words,
    "--prompt": cli_words,
    "--prompts": cli_words,
    "--guidance": cli_words,
    "--device": cli_words,
    "--out": st.sampled_from(OUT_NAMES),
}
INTERPOLATE_FLAGS = {
    "--seeds": SAMPLE_FLAGS["--seeds"],
    "--frames": small_counts | st.sampled_from(["10001", "1e4"]),  # 10000 frames: legitimately slow
    "--fps": cli_words,
    "--no-loop": st.none(),
    "--truncation": cli_words,
    "--steps": cli_words,
    "--device": cli_words,
    "--out": st.sampled_from(OUT_NAMES),
}
EVAL_FLAGS = {
    "-n": small_counts,
    "--seed": cli_words,
    "--batch-size": small_counts | st.sampled_from(["1000000"]),
    "--device": cli_words,
    "--size": cli_words,
    "--fit": cli_words,
    "--data": st.sampled_from(["DATA", "builtin", "builtin:nope", "none", "run"]),
    "--fake": st.sampled_from(["DATA", "none", "run"]),
    "--json": st.sampled_from(OUT_NAMES),
    "--sheet": st.sampled_from(OUT_NAMES),
    "--truncation": cli_words,
    "--faithfulness": st.none() | cli_words,
}


@st.composite
def run_argv(draw: st.DrawFn) -> list[str]:
    """sample, interpolate or eval of the run folder 'run' with a few fuzzed flags."""
    command = draw(st.sampled_from(["sample", "sample", "sample", "interpolate", "eval"]))
    flags = {"sample": SAMPLE_FLAGS, "interpolate": INTERPOLATE_FLAGS, "eval": EVAL_FLAGS}[command]
    argv = ["-q", command, "run"]
    if command == "eval":  # small unless fuzzed: the default 5000 samples is minutes of work
        argv += ["-n", "4", "--batch-size", "8"]
    for flag in draw(st.lists(st.sampled_from(sorted(flags)), max_size=4, unique=True)):
        value = draw(flags[flag])
        argv += [flag] if value is None else [flag, value]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    return argv


@cli_fuzz
@given(st.sampled_from(["gan", "vae"]), run_argv())
@example("gan", ["-q", "sample", "run", "--device", "#fff"])  # was a torch RuntimeError
@example("gan", ["-q", "interpolate", "run", "--fps", "0", "--device", "cpu"])  # was ZeroDivisionError
@example("gan", ["-q", "eval", "--fake", "run", "--data", "DATA", "--device", "cpu"])
def test_fuzz_cli_run_flags(sandbox: Sandbox, family: str, argv: list[str]) -> None:
    if "eval" in argv and not _has_network():
        argv = ["-q", "sample", "run", "-n", "2"]
    case = sandbox.new_case()
    shutil.copytree(sandbox.runs[family], case / "run")
    argv = [str(sandbox.runs["data"]) if a == "DATA" else a for a in argv]
    res = sandbox.run(case, "cli", argv=argv)
    check_cli({"argv": argv, "family": family}, res, sandbox.counts)
    assert _tree(case / "run" / "state") == _tree(sandbox.runs[family] / "state"), "a checkpoint changed"

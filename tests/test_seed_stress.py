"""A seed is a promise: ``artforge sample RUN -n 4 --seed 3`` writes the same bytes in every
process, however busy the machine is and however many threads torch picks.

The run is the one a new user made when two samples once differed: a finished 8-step GAN at
100x100 (odd sizes take other conv kernels than powers of two)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
PROCESSES = 12  # sample calls in all
AT_ONCE = 4  # running together
BUSY = 2  # busy-loop processes loading the machine meanwhile
TRAIN = (
    "-q train --data builtin --builtin-count 16 --size 100x100 --steps 8 --batch-size 4 "
    "--model.base_channels=8 --grid-n 4"
)


def env(threads: str | None) -> dict[str, str]:
    """The environment of a user's shell: torch picks its own thread count unless ``threads``."""
    e = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    e["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    if threads is not None:
        e["OMP_NUM_THREADS"] = e["MKL_NUM_THREADS"] = threads
    return e


def sample(run: Path, out: Path, threads: str | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "artforge", "sample", str(run), "-n", "4", "--seed", "3", "--out", str(out)],
        env=env(threads),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seed") / "run"
    p = subprocess.run(
        [sys.executable, "-m", "artforge", *TRAIN.split(), "--out", str(out)],
        env=env("1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def run_all(run: Path, folder: Path, threads: list[str | None]) -> list[bytes]:
    """One sample call per entry of ``threads``, AT_ONCE at a time; the PNGs' bytes."""
    outs, running = [], []
    for k, th in enumerate(threads):
        while len(running) >= AT_ONCE:
            running.pop(0).wait(timeout=300)
        out = folder / f"s{k:02d}.png"
        outs.append(out)
        running.append(sample(run, out, th))
    for p in running:
        p.wait(timeout=300)
    return [o.read_bytes() for o in outs]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_bytes_in_every_process_on_a_busy_machine(run, tmp_path):
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)
        for _ in range(BUSY)
    ]
    try:
        time.sleep(0.2)
        # the user's default (torch picks the threads), and explicit 1, 2 and 3 threads
        pngs = run_all(run, tmp_path, [None, "1", "2", "3"] * (PROCESSES // 4))
    finally:
        for b in busy:
            b.kill()
            b.wait()
    assert len(pngs) == PROCESSES and all(pngs)
    distinct = {p for p in pngs}
    assert len(distinct) == 1, f"{len(distinct)} different PNGs from {PROCESSES} calls with --seed 3"

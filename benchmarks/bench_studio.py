"""The studio under a burst: N concurrent generate requests against the real server.

    PYTHONPATH=src python benchmarks/bench_studio.py RUNS_DIR --run NAME [--requests 50] [-n 16]
    PYTHONPATH=src python benchmarks/bench_studio.py            # trains a small run first

Starts ``python -m artforge studio RUNS_DIR --port 0`` as a subprocess, sends --requests
POST /api/generate calls at once (one thread each, released together by a barrier, each
asking for -n images from its own seed), and reports how many got 200, the wall time until
the last answer, and the server's peak resident memory (VmHWM) before and after.
Without RUNS_DIR a GAN is trained for --train-steps steps at 32x32 on the built-in shapes
into a temporary folder.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def start(root: Path) -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "artforge", "studio", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:  # type: ignore[union-attr]
        m = re.search(r"http://([\d.]+):(\d+)/", line)
        if m:
            return proc, m.group(1), int(m.group(2))
    raise SystemExit("the studio did not start")


def post(host: str, port: int, body: dict) -> int:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection(host, port, timeout=600)
    try:
        conn.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs_dir", nargs="?", help="a studio folder (default: train a run into a temp folder)")
    p.add_argument("--run", default="bench-gan", help="the run to generate from")
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("-n", type=int, default=16, help="images per request")
    p.add_argument("--train-steps", type=int, default=200)
    args = p.parse_args()

    tmp = None
    if args.runs_dir is None:
        tmp = tempfile.TemporaryDirectory()
        root = Path(tmp.name)
        subprocess.run(
            [sys.executable, "-m", "artforge", "-q", "train", "--data", "builtin", "--size", "32",
             "--steps", str(args.train_steps), "--batch-size", "32", "--out", str(root / args.run)],
            check=True,
        )  # fmt: skip
    else:
        root = Path(args.runs_dir)
    proc, host, port = start(root)
    try:
        post(host, port, {"run": args.run, "n": 1, "seed": 0})  # load the model once (not timed)
        before = peak_rss_mib(proc.pid)
        barrier = threading.Barrier(args.requests)

        def one(i: int) -> int:
            barrier.wait()
            return post(host, port, {"run": args.run, "n": args.n, "seed": i})

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.requests) as pool:
            statuses = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
        after = peak_rss_mib(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        if tmp is not None:
            tmp.cleanup()
    counts = Counter(statuses)
    print(
        f"{args.requests} concurrent POST /api/generate ({args.n} images each from {args.run}): "
        f"statuses {dict(counts)}; all succeeded: {counts[200] == args.requests}; "
        f"wall {wall:.2f} s ({wall / args.requests * 1000:.0f} ms per request); "
        f"server peak RSS {before:.0f} MiB after one request, {after:.0f} MiB after the burst; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    return 0 if counts[200] == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())

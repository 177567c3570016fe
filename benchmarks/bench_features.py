"""Throughput of FID feature extraction (images/s) at a few input sizes.

    PYTHONPATH=src nice -n 19 python benchmarks/bench_features.py [--sizes 32,64] [-n 200] [--repeats 3]

Every image is resized to 299x299 before the network, so the input size mostly changes the
resize cost. Reports the median of --repeats timed runs after one warm-up batch; run it on
an otherwise idle machine (the load average at the start is printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

from artforge.config import DataConfig
from artforge.data import load_images
from artforge.metrics.inception import features, load_inception


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="32,64", help="input sizes, e.g. 32,64,128")
    p.add_argument("-n", type=int, default=200, help="images per timed run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}, device {args.device}")
    print(f"load average at start: {load:.2f}")
    load_inception(device=args.device)
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = DataConfig(path="builtin", height=size, width=size, builtin_count=args.n, cache="memory")
        imgs = load_images(cfg).images  # uint8 (n, 3, size, size)
        features(imgs[: args.batch_size], args.batch_size, device=args.device)  # warm-up
        rates = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            features(imgs, args.batch_size, device=args.device)
            rates.append(args.n / (time.perf_counter() - t))
        runs = ", ".join(f"{r:.1f}" for r in rates)
        print(f"{size}x{size}: {statistics.median(rates):.1f} images/s (median of {args.repeats}: {runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Helpers of benchmarks/gpu_session.sh: the sweep's runs, their samples, and a summary.

    python benchmarks/gpu_sweep.py runs                     # NAME<TAB>flags, one run a line
    python benchmarks/gpu_sweep.py sample RUN N OUT.npy.xz  # N samples of RUN as uint8 (N, H, W, 3)
    python benchmarks/gpu_sweep.py summary RUNS_DIR         # steps, img/s, GPU memory per run
    python benchmarks/gpu_sweep.py fit DIR MIB              # trim the largest sample files to fit

The samples are what ``artforge eval`` would draw from the run (``generate_uint8`` with seed
0, the EMA weights where the run keeps them), saved compressed so they come back from the
device machine and are scored here with the real FID network (benchmarks/score_npz.py).
"""

from __future__ import annotations

import io
import json
import lzma
import statistics
import sys
import time
from pathlib import Path

# The sweep: today's default against candidate GPU defaults, all on one card side by side.
# Each line: a name and the flags added to `artforge train --data D --size S --minutes M`.
RUNS = [
    ("gan-default", ""),
    ("gan-profile-gpu", "--profile gpu"),  # provisional: base_channels 64, batch 128
    ("gan-w96-b256", "--model.base_channels=96 --batch-size 256"),
    ("gan-w64-b256-bf16", "--model.base_channels=64 --batch-size 256 --amp bf16"),
    ("gan-w64-b128-graphs", "--model.base_channels=64 --batch-size 128 --compile-mode reduce-overhead"),
    ("diffusion-default", "--model diffusion"),
    ("diffusion-profile-gpu", "--model diffusion --profile gpu"),  # base_channels 64, batch 128
]


def cmd_runs() -> int:
    for name, flags in RUNS:
        print(f"{name}\t{flags}")
    return 0


def cmd_sample(run: str, n: int, out: str) -> int:
    import torch

    import artforge
    from artforge.evaluate import generate_uint8

    device = "cuda" if torch.cuda.is_available() else "cpu"
    r = artforge.load(run, device=device)
    t = time.perf_counter()
    images = generate_uint8(r.model, n, 0)  # (n, 3, H, W) uint8, eval's seed
    seconds = time.perf_counter() - t
    save_images(out, images.permute(0, 2, 3, 1).numpy())
    print(f"{run}: {n} samples in {seconds:.2f} s -> {out} ({Path(out).stat().st_size / 2**20:.1f} MiB)")
    return 0


def save_images(path: str | Path, images: object) -> None:
    """uint8 (n, H, W, C) as an xz-compressed .npy."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, images)
    Path(path).write_bytes(lzma.compress(buf.getvalue(), preset=6))


def load_images(path: str | Path) -> object:
    """What save_images wrote (or a .npz holding ``images``)."""
    import numpy as np

    path = Path(path)
    if path.suffix == ".npz":
        return np.load(path)["images"]
    return np.load(io.BytesIO(lzma.decompress(path.read_bytes())))


def cmd_fit(folder: str, mib: float) -> int:
    """Keep what comes back under ``mib``: while the sample files in ``folder`` are larger
    together, the largest keeps its first 80% of images (FID then has a smaller n: said here)."""
    files = sorted(Path(folder).glob("*.npy.xz"))
    total = sum(f.stat().st_size for f in files)
    while files and total > mib * 2**20:
        big = max(files, key=lambda f: f.stat().st_size)
        images = load_images(big)
        keep = int(len(images) * 0.8)  # type: ignore[arg-type]
        total -= big.stat().st_size
        save_images(big, images[:keep])  # type: ignore[index]
        total += big.stat().st_size
        print(f"{big.name}: trimmed to {keep} images to fit {mib} MiB")
    print(f"samples: {total / 2**20:.1f} MiB in {len(files)} files")
    return 0


def cmd_summary(runs_dir: str) -> int:
    """One line per run: steps reached, images seen, median img/s of its log lines, GPU peak."""
    from artforge.training.logbook import read_jsonl

    print(f"{'run':24} {'steps':>7} {'images':>10} {'img/s':>8} {'GPU MiB':>8}  settings")
    for run in sorted(Path(runs_dir).iterdir()):
        metrics, config = run / "metrics.jsonl", run / "config.json"
        if not metrics.exists() or not config.exists():
            print(f"{run.name:24} (no metrics: the run failed, see its log)")
            continue
        rows = [r for r in read_jsonl(metrics) if "img_per_s" in r]
        cfg = json.loads(config.read_text())
        last = rows[-1] if rows else {}
        speed = statistics.median(r["img_per_s"] for r in rows[1:] or rows) if rows else float("nan")
        settings = (
            f"{cfg['family']} w{cfg['model'].get('base_channels')} b{cfg['train']['batch_size']} "
            f"amp={cfg['train']['amp']} compile_mode={cfg['train'].get('compile_mode')}"
        )
        print(
            f"{run.name:24} {last.get('step', 0):>7} {last.get('images', 0):>10,} {speed:>8,.0f} "
            f"{last.get('cuda_peak_mib', float('nan')):>8,.0f}  {settings}"
        )
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["runs"]:
        return cmd_runs()
    if argv[:1] == ["sample"] and len(argv) == 4:
        return cmd_sample(argv[1], int(argv[2]), argv[3])
    if argv[:1] == ["summary"] and len(argv) == 2:
        return cmd_summary(argv[1])
    if argv[:1] == ["fit"] and len(argv) == 3:
        return cmd_fit(argv[1], float(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

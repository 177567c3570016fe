"""Score samples that came back from the GPU machine (uint8 .npz) with the real FID network.

    PYTHONPATH=src python benchmarks/score_npz.py --data data/emoji32 RUN1.npy.xz [RUN2.npy.xz ...]
        [--json scores.json] [--inception PATH] [--sheets DIR]

Each file holds uint8 images (n, H, W, 3): an xz-compressed .npy written by
benchmarks/gpu_sweep.py, or a .npz with an ``images`` array. Its images
are written as PNGs to a temporary folder and measured exactly as ``artforge eval --fake DIR
--data DATA`` measures any folder (FID, KID, precision/recall, diversity, copy rate), so the
figures compare with every other eval figure in RESULTS.md. One line per file at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def write_pngs(npz: Path, folder: Path) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_sweep import load_images

    images = np.asarray(load_images(npz))
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{npz}: expected uint8 images (n, H, W, 3), got {images.dtype} {images.shape}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(folder / f"{i:05d}.png")
    return len(images)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("npz", nargs="+", type=Path)
    p.add_argument("--data", required=True, help="the real images (the sweep's training data)")
    p.add_argument("--json", default=None, help="also write every result here")
    p.add_argument("--inception", default=None, help="the FID network file (see artforge eval)")
    p.add_argument("--sheets", default=None, metavar="DIR", help="also write each run's novelty sheet here")
    args = p.parse_args()

    from artforge.cli import main as cli

    results = {}
    for npz in args.npz:
        with tempfile.TemporaryDirectory() as tmp:
            n = write_pngs(npz, Path(tmp) / "fake")
            out = Path(tmp) / "eval.json"
            argv = ["-q", "eval", "--fake", str(Path(tmp) / "fake"), "--data", args.data, "--json", str(out)]
            if args.sheets:  # the .npz may lie in a read-only folder (the device tool's files_at)
                argv += ["--sheet", str(Path(args.sheets) / f"{npz.name.split('.')[0]}.novelty.png")]
            if args.inception:
                argv += ["--inception", args.inception]
            if cli(argv) != 0:
                print(f"{npz}: eval failed", file=sys.stderr)
                continue
            results[npz.name.split(".")[0]] = {"n": n, **json.loads(out.read_text())}
    print(f"\n{'run':28} {'n':>6} {'FID':>8} {'KID':>8} {'copy rate':>9}")
    for name, r in results.items():
        copy = r.get("copy_rate", r.get("novelty", {}).get("copy_rate", float("nan")))
        kid = r.get("kid", float("nan"))
        kid = kid.get("mean", float("nan")) if isinstance(kid, dict) else kid
        print(f"{name:28} {r['n']:>6} {r.get('fid', float('nan')):>8.2f} {kid:>8.4f} {copy:>9.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())

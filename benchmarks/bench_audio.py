"""Sound benchmark: every family trains the same minutes on the notes set, then is measured.

    .venv/bin/python benchmarks/bench_audio.py --minutes 5 --out bench/audio

Builds the notes set with ``artforge data notes`` when --data does not exist, then for each
model: ``artforge train`` (one child process, one at a time), ``artforge sample`` (8 WAVs and
their spectrogram grid) and ``artforge eval`` (family classifier, FID-like distance on its
features, round-trip spectral convergence; docs/audio.md). Writes OUT/bench_audio.json and
OUT/bench_audio.md with the exact commands. Nothing here is faked: the figures are read back
from each run's eval.json and metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ARTFORGE = [sys.executable, "-m", "artforge"]
# Per-family flags for a CPU budget of minutes at 128 x 64; everything else is the defaults.
FLAGS = {
    "gan": ["--batch-size", "32"],
    "vae": ["--batch-size", "32", "--model.base_channels=32"],
    "diffusion": ["--batch-size", "32", "--model.base_channels=16"],
}


def run(cmd: list[str], log: list[str]) -> None:
    text = " ".join(shlex.quote(c) for c in cmd).replace(
        shlex.quote(sys.executable) + " -m artforge", "artforge"
    )
    log.append(text)
    print(f"$ {text}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def last_metrics(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows[-1] if rows else {}


def roundtrip_table(data: str, out: Path) -> None:
    """Spectral convergence of held-out real notes for 64 and 128 mel bands, float and uint8 images."""
    import dataclasses

    from artforge.config import DataConfig
    from artforge.data.audio import AUDIO_EXTENSIONS, _candidates
    from artforge.data.holdout import is_held_out
    from artforge.evaluate_audio import HELD_OUT, round_trip

    names = _candidates(Path(data), AUDIO_EXTENSIONS)
    held = [n for n in names if is_held_out(n, HELD_OUT)]
    rows = []
    for mels in (64, 128):
        cfg = DataConfig(path=data, height=mels, width=64, modality="audio")
        for iters in (32, 64, 128):
            cfg_i = dataclasses.replace(cfg, audio=dataclasses.replace(cfg.audio, gl_iters=iters))
            t0 = time.perf_counter()
            r = round_trip(cfg_i, held)
            rows.append(
                {"mel_bands": mels, "gl_iters": iters, **r, "seconds": round(time.perf_counter() - t0, 1)}
            )
            print(rows[-1], flush=True)
    (out / "roundtrip.json").write_text(json.dumps(rows, indent=1) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/notes", help="notes folder (built when missing)")
    p.add_argument("--minutes", type=float, default=5.0, help="training minutes per family")
    p.add_argument("--models", default="gan,vae,diffusion")
    p.add_argument("--out", default="bench/audio")
    p.add_argument("-n", type=int, default=500, help="generated sounds per model for the measures")
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads per training (1 is fastest when shared)"
    )
    p.add_argument("--roundtrip", action="store_true", help="only the round-trip table (roundtrip.json)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.roundtrip:
        roundtrip_table(args.data, out)
        return 0
    commands: list[str] = []
    if not (Path(args.data) / "labels.jsonl").is_file():
        run([*ARTFORGE, "-q", "data", "notes", "--out", args.data], commands)
    rows = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        run_dir = out / "runs" / model
        train = [
            *ARTFORGE,
            "-q",
            "train",
            "--data",
            args.data,
            "--model",
            model,
            "--minutes",
            str(args.minutes),
        ]
        train += [*FLAGS.get(model, []), "--threads", str(args.threads), "--out", str(run_dir), "--overwrite"]
        run(train, commands)
        run(
            [
                *ARTFORGE,
                "-q",
                "sample",
                str(run_dir),
                "-n",
                "8",
                "--seed",
                "0",
                "--out",
                f"{out}/samples/{model}/",
            ],
            commands,
        )
        run([*ARTFORGE, "-q", "eval", str(run_dir), "-n", str(args.n), "--seed", "0"], commands)
        ev = json.loads((run_dir / "eval.json").read_text())
        m = last_metrics(run_dir)
        rows.append({
            "model": model,
            "steps": m.get("step"),
            "minutes": round(m.get("elapsed", 0) / 60, 2),
            "judge_acc_real_held_out": ev["classifier_accuracy_held_out"],
            "confidence_generated": ev["generated"]["confidence"],
            "confidence_real": ev["real_held_out"]["confidence"],
            "class_score_generated": ev["generated"]["class_score"],
            "class_score_real": ev["real_held_out"]["class_score"],
            "family_tv": ev["family_tv_distance"],
            "fd_generated": ev["fd_generated"],
            "fd_real_held_out": ev["fd_real_held_out"],
            "gen_mel_consistency": ev["generated_mel_consistency"],
            "sc_roundtrip": ev["sc_roundtrip"],
            "sc_roundtrip_float": ev["sc_roundtrip_float"],
            "sc_griffin_lim_only": ev["sc_griffin_lim_only"],
            "eval": ev,
        })  # fmt: skip
    (out / "bench_audio.json").write_text(json.dumps({"commands": commands, "models": rows}, indent=1) + "\n")
    keys = [k for k in rows[0] if k not in ("model", "eval")] if rows else []
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['model']} | " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    md = "\n".join(lines) + "\n\nCommands:\n\n```\n" + "\n".join(commands) + "\n```\n"
    (out / "bench_audio.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

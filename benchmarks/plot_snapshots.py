"""Best snapshot vs last weights across seeds: issue 21's snapshot figure.

    PYTHONPATH=src python benchmarks/plot_snapshots.py runs/snap0 runs/snap1 runs/snap2 [--n 5000] \
        [--out docs/images/snapshots-best-vs-last.png] [--json benchmarks/results/snapshots.json]

Each RUN must have been scored three ways (the commands in benchmarks/RESULTS.md):
``artforge eval RUN --snapshots -n 500`` (snapshots.json: FID of every snapshot at n=500,
seed 0, which picks the best), then ``artforge eval RUN@best -n N --seed 1 --json
RUN/bestN.json`` and ``artforge eval RUN -n N --seed 1 --json RUN/lastN.json`` (``--n N``).
The best is chosen on one sample and re-scored on another, so the figure is not flattered by
the choice (the minimum of ~30 noisy n=500 FIDs favours a lucky draw).

Prints a Markdown table (per seed: steps, the best's step, last and best FID at the re-scoring n, their
difference) and the spread of each column, and plots every seed's n=500 curve with its best
marked.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any


def read_run(run: Path, n: int) -> dict[str, Any]:
    """One run's three score files, with a message naming the missing one."""
    out: dict[str, Any] = {"run": str(run)}
    for key, name in (("table", "snapshots.json"), ("best", f"best{n}.json"), ("last", f"last{n}.json")):
        path = run / name
        if not path.is_file():
            raise SystemExit(f"{path}: missing; score the run first (see this script's docstring)")
        out[key] = json.loads(path.read_text())
    cfg = json.loads((run / "config.json").read_text())
    out["seed"] = cfg["train"]["seed"]
    steps = [r["step"] for r in out["table"]["rows"] if isinstance(r["step"], int)]
    out["steps"] = max(steps) if steps else None
    return out


def summarise(runs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    rows = []
    for r in runs:
        last, best = r["last"]["fid"], r["best"]["fid"]
        rows.append(
            {
                "seed": r["seed"],
                "steps": r["steps"],
                "best_step": r["table"]["best"],
                "last_fid": round(last, 2),
                "best_fid": round(best, 2),
                "gain": round(last - best, 2),
            }
        )
    lasts = [r["last_fid"] for r in rows]
    bests = [r["best_fid"] for r in rows]
    return {
        "n": n,
        "rows": rows,
        "last": {"min": min(lasts), "max": max(lasts), "mean": round(statistics.fmean(lasts), 2)},
        "best": {"min": min(bests), "max": max(bests), "mean": round(statistics.fmean(bests), 2)},
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"| seed | snapshots up to step | best snapshot's step | last FID (n={summary['n']}) "
        f"| best FID (n={summary['n']}) | last - best |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        lines.append(
            f"| {r['seed']} | {r['steps']:,} | {r['best_step']} | {r['last_fid']:.1f} | "
            f"**{r['best_fid']:.1f}** | {r['gain']:+.1f} |"
        )
    a, b = summary["last"], summary["best"]
    lines.append(
        f"| range | | | {a['min']:.1f}-{a['max']:.1f} (mean {a['mean']:.1f}) | "
        f"{b['min']:.1f}-{b['max']:.1f} (mean {b['mean']:.1f}) | |"
    )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for r in runs:
        pts = [(row["step"], row["fid"]) for row in r["table"]["rows"] if isinstance(row["step"], int)]
        (line,) = ax.plot(*zip(*pts, strict=True), marker=".", label=f"seed {r['seed']} (n=500)")
        best = r["table"]["best"]
        if isinstance(best, int):
            fid = next(row["fid"] for row in r["table"]["rows"] if row["step"] == best)
            ax.plot([best], [fid], marker="*", ms=14, color=line.get_color(), ls="")
    ax.set_xlabel("step")
    ax.set_ylabel("FID (n=500, biased upward)")
    ax.set_title("Snapshots of the default GAN on emoji32 (star: best)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--n", type=int, default=5000, help="the re-scoring's n: RUN/bestN.json, RUN/lastN.json")
    p.add_argument("--out", type=Path, default=None, help="the figure (PNG)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = p.parse_args()
    runs = [read_run(r, args.n) for r in args.runs]
    summary = summarise(runs, args.n)
    print(markdown(summary))
    if args.out:
        plot(runs, args.out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

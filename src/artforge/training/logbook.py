"""metrics.jsonl (one JSON object per logged step) and PNG plots of it."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import DataError
from ..io import replacing, write_bytes

log = logging.getLogger(__name__)


class Logbook:
    """Averages per-step values and appends them to ``metrics.jsonl`` every few steps.

    Tensor values stay where they are (on the GPU) until a line is written or the sums are
    saved: reading one with ``float()`` every step would make the host wait for the device
    every step. They are then read in one transfer per device and summed in the order they
    were added, so the numbers are the same as reading each one at once.
    """

    def __init__(self, path: Path):
        self.path = path
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._waiting: list[tuple[str, Tensor | float]] = []  # (key, value) not yet summed
        self.last: dict[str, float] = {}

    def add(self, prefix: str, values: dict[str, Tensor | float]) -> None:
        for k, v in values.items():
            self._waiting.append((f"{prefix}/{k}", v.detach() if isinstance(v, Tensor) else float(v)))

    def _settle(self) -> None:
        """Sum the waiting values: one device-to-host copy per device, then plain floats."""
        if not self._waiting:
            return
        by_device: dict[Any, list[int]] = defaultdict(list)
        for i, (_, v) in enumerate(self._waiting):
            if isinstance(v, Tensor):
                by_device[v.device].append(i)
        read: dict[int, float] = {}
        for idx in by_device.values():
            flat = torch.stack([self._waiting[i][1].reshape(()).float() for i in idx]).tolist()  # type: ignore[union-attr]
            read.update(zip(idx, flat, strict=True))
        for i, (key, v) in enumerate(self._waiting):
            x = read[i] if i in read else float(v)  # type: ignore[arg-type]
            self._sums[key] += x
            self._counts[key] += 1
            self.last[key] = x
        self._waiting.clear()

    def means(self) -> dict[str, float]:
        self._settle()
        return {k: self._sums[k] / self._counts[k] for k in self._sums}

    def flush(self, **fields: Any) -> dict[str, Any]:
        row = {**fields, **self.means()}
        self._append(row)
        self._sums.clear()
        self._counts.clear()
        return row

    def event(self, **fields: Any) -> None:
        """One line that is not a mean of losses, e.g. {"step", "event": "rollback", ...}."""
        self._append(fields)

    def _append(self, row: dict[str, Any]) -> None:
        """Append one line; on a write error (full disk) cut the file back to whole lines and
        warn: a lost log line must not end a run whose weights are safe."""
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            log.warning("could not append to %s (%s); this line is lost", self.path, e.strerror or e)
            with contextlib.suppress(OSError):
                os.truncate(self.path, size)

    def pending(self) -> dict[str, dict[str, float]]:
        """The sums not yet flushed, saved in checkpoints so a resumed log line averages the
        same steps as an uninterrupted one."""
        self._settle()
        return {"sums": dict(self._sums), "counts": {k: int(v) for k, v in self._counts.items()}}

    def restore(self, pending: dict[str, dict[str, float]] | None) -> None:
        self._waiting.clear()
        self._sums.clear()
        self._counts.clear()
        if pending:
            self._sums.update(pending.get("sums", {}))
            self._counts.update({k: int(v) for k, v in pending.get("counts", {}).items()})

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` (a resumed run rewrites them).

        The file is cut at its first line logged after ``step`` (steps never decrease in it:
        a rollback cuts it the same way before logging its event), so the lines before the cut
        are kept byte for byte, a corrupt one included (it is skipped when read, and named in
        a warning here). A broken tail after the last whole line (a kill mid-write) goes.
        """
        if not self.path.exists():
            return
        if not self.path.is_file():  # a FIFO or /dev/zero would never end
            raise DataError(
                f"{self.path}: not a regular file, so the log cannot be continued; move it away "
                "and resume again (nothing was changed)"
            )
        lines = self.path.read_bytes().splitlines(keepends=True)
        keep, bad = 0, []  # keep: lines up to the last good one at or before ``step``
        for i, raw in enumerate(lines):
            row = _parse(raw)
            if row is None:
                bad.append(i)
                continue
            if row["step"] > step:
                break
            keep = i + 1
        bad = [i + 1 for i in bad if i < keep]
        if bad:
            log.warning(
                "%s: line(s) %s are not valid JSON (a damaged file?); kept as they are, skipped when reading",
                self.path,
                ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else ""),
            )
        body = b"".join(lines[:keep])
        if body and not body.endswith(b"\n"):
            body += b"\n"
        write_bytes(self.path, body)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """One metrics.jsonl line as a dict, or None if it is damaged (bad bytes, cut short, not
    an object with a numeric step)."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("step"), int | float):
        return None
    return row


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The whole lines of a JSONL file; a damaged line (a crash cut it short, a bad byte) is
    skipped, never an error."""
    rows = []
    for line in path.read_bytes().splitlines():
        row = _parse(line)
        if row is not None:
            rows.append(row)
    return rows


def plot_losses(metrics: Path, out: Path) -> None:
    """One panel per phase (D, G, main, ...) with its logged values against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics) if metrics.exists() else []
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for k, v in r.items():
            if "/" in k and isinstance(v, int | float) and math.isfinite(v):
                phase, name = k.split("/", 1)
                series[phase][name].append((r["step"], v))
    if not series:
        return
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.5), squeeze=False)
    for ax, (phase, named) in zip(axes[0], sorted(series.items()), strict=True):
        for name, pts in sorted(named.items()):
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=name, lw=1.2)
        ax.set_title(phase)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out)


def save_figure(fig: Any, out: Path) -> None:
    """Write a matplotlib figure as PNG via a temp name (a crash never leaves half a plot)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with replacing(out) as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)

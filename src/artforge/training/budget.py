"""A run's budget: how much of it is spent and how long the rest will take.

A run ends at the first of its budgets: ``steps``, ``epochs`` (passes over the data) or
``minutes`` of training time. The Trainer decays the learning rate by the fraction spent and
shows the time left on its progress bar; the studio shows both on a run's card from
config.json and metrics.jsonl. Both use this module, so they agree.

The time left of a steps or epochs budget is the work left at the *recent* speed: the median
of the last few log windows' speeds (``Speed``), so a pause (Ctrl-Z and ``fg``, a laptop's
sleep) slows one window, which the median ignores, instead of the average since the start.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

RECENT_WINDOWS = 5  # log windows the speed is taken from (their median)


@dataclass(frozen=True)
class Budget:
    """``steps``: the step budget, or None; ``epochs``: passes over the data, or None;
    ``minutes``: training time, or None. A value <= 0 counts as no budget (the studio reads
    hand-edited config.json files)."""

    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None

    @classmethod
    def of(cls, train: object) -> Budget:
        """From a TrainConfig or config.json's "train" table (values that are no numbers are
        ignored)."""

        def get(name: str) -> float | None:
            v = train.get(name) if isinstance(train, dict) else getattr(train, name, None)
            return v if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None

        steps = get("steps")
        return cls(int(steps) if steps is not None else None, get("epochs"), get("minutes"))

    def total_steps(self, images: int, batch_size: int) -> int | None:
        """The step at which the steps or epochs budget ends, the first of the two; None
        under a minutes budget alone. ``images``: the data's size."""
        limits = []
        if self.steps is not None:
            limits.append(self.steps)
        if self.epochs is not None:
            limits.append(math.ceil(self.epochs * images / batch_size))
        return min(limits) if limits else None

    def spent(self, step: float, elapsed: float, epoch: float | None = None) -> float | None:
        """How much of the budget is spent, 0..1: the largest of step/steps, epoch/epochs and
        elapsed/minutes; None without a budget."""
        parts = []
        if self.steps is not None:
            parts.append(step / self.steps)
        if self.minutes is not None:
            parts.append(elapsed / (self.minutes * 60))
        if self.epochs is not None and epoch is not None:
            parts.append(epoch / self.epochs)
        return min(max(parts), 1.0) if parts else None

    def time_left(
        self, step: float, elapsed: float, steps_per_s: float | None, epoch: float | None = None
    ) -> float | None:
        """Seconds until the budget that ends first: a minutes budget's own clock; a steps or
        epochs budget's work left at ``steps_per_s`` (None: not known yet). None without an
        estimate."""
        left = []
        if self.minutes is not None:
            left.append(self.minutes * 60 - elapsed)
        if steps_per_s is not None and steps_per_s > 0:
            if self.steps is not None:
                left.append((self.steps - step) / steps_per_s)
            if self.epochs is not None and epoch is not None and epoch > 0 and step > 0:
                left.append((self.epochs - epoch) * (step / epoch) / steps_per_s)
        return max(0.0, min(left)) if left else None


def out_of_time(minutes: float | None, elapsed: float, finish_cost: float) -> bool:
    """A minutes budget covers the final grid and checkpoint too: training stops when the
    time left is what they will take (``finish_cost`` seconds), so the command ends in its
    minutes."""
    return minutes is not None and elapsed + finish_cost >= minutes * 60


def recent_rate(rates: Iterable[float], n: int = RECENT_WINDOWS) -> float | None:
    """The median of the last ``n`` positive speeds (one per log window), or None. A window
    that held a pause is slow; the median of several leaves it out."""
    last = [r for r in rates if r > 0][-n:]
    return statistics.median(last) if last else None


@dataclass
class Speed:
    """Images trained since the last log line and since when (the speed the next line reports),
    and the speeds of the last few lines (the time left is taken from them). ``clock`` is
    injectable for tests."""

    clock: Callable[[], float] = time.perf_counter
    images: int = 0
    start: float = field(default=0.0)
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_WINDOWS))

    def __post_init__(self) -> None:
        self.start = self.clock()

    def add(self, images: int) -> None:
        self.images += images

    def lap(self) -> float:
        """This window's images per second; the next window starts now."""
        now = self.clock()
        rate = self.images / max(now - self.start, 1e-9)
        self.recent.append(rate)
        self.images, self.start = 0, now
        return rate

    def reset(self) -> None:
        """Start the window again without counting it (after a rollback)."""
        self.images, self.start = 0, self.clock()

    def images_per_s(self) -> float | None:
        """The recent speed: the median of the last windows'."""
        return recent_rate(self.recent)


def clock(seconds: float) -> str:
    """1:05:09, 4:07 or 0:09 (h:mm:ss or m:ss, like tqdm)."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"

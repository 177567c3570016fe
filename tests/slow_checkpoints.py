"""``python tests/slow_checkpoints.py SECONDS ARGS...``: the CLI (``artforge ARGS...``) with every
checkpoint write slowed down, so the kill trials of test_reliability.py can land inside one.

It pauses SECONDS at three stages of ``save_checkpoint``, by wrapping real functions of
training/checkpoint.py in this process only: before each rename of a checkpoint folder (once
state.tmp/ is complete; between state/ -> state.old/ and state.tmp/ -> state/) and before
model.safetensors is rewritten (state/ already holds the new step). Nothing else changes:
a run it finishes is bit-identical to one of the plain CLI.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from artforge.cli import main
from artforge.training import checkpoint


class SlowRenames:
    """checkpoint.py's ``os``: the real module, but each ``os.replace`` waits first."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        time.sleep(self.pause)
        os.replace(src, dst)


def slow_down(pause: float) -> None:
    checkpoint.os = SlowRenames(pause)  # type: ignore[assignment]
    save_weights = checkpoint.save_weights

    def slow_save_weights(module: Any, path: Path) -> None:
        if Path(path).parent.name != checkpoint.STATE + ".tmp":  # the run's model.safetensors
            time.sleep(pause)
        save_weights(module, path)

    checkpoint.save_weights = slow_save_weights  # type: ignore[assignment]


if __name__ == "__main__":
    slow_down(float(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))

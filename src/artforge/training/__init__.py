"""The training loop, its checkpoints and its logbook.

``Trainer`` and ``TrainingError`` load torch on first use, so ``training.budget`` (which the
studio's gallery reads) stays light."""

from typing import Any

__all__ = ["Trainer", "TrainingError"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

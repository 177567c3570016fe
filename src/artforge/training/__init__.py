"""The training loop, its checkpoints and its logbook."""

from .trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError"]

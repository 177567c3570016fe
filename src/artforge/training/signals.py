"""Stopping a run cleanly: Ctrl-C and SIGTERM ask the training loop to stop at the next step
boundary, where it saves a checkpoint (``Trainer.train``)."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during training: handled like Ctrl-C (a checkpoint, then exit)."""


class StopSignals:
    """While training, Ctrl-C (SIGINT) and SIGTERM (``kill PID``, ``docker stop``, a scheduler's
    preemption, the studio's Stop) ask the loop to stop at the next step boundary, where it
    saves a checkpoint and exits, so ``--resume`` continues exactly where it stopped. Raising
    inside a step instead would save a half-done step (batch-norm statistics of a forward that
    the resumed run repeats). A second signal stops at once (no checkpoint: the last one stays).

    Only in the main thread, only over the default handlers (a caller's own, or an ignored
    SIGINT in a background job, is left alone), and not under torchrun, where the ranks must
    stop together: there a signal raises where it lands, as Python's default does."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.requested: KeyboardInterrupt | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested is not None:  # asked twice: now
            raise KeyboardInterrupt
        self.requested = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def __enter__(self) -> StopSignals:
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            return self
        defaults = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}
        for sig, default in defaults.items():
            if signal.getsignal(sig) is default:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def check(self) -> None:
        """At a step boundary: stop if asked to."""
        if self.requested is not None:
            raise self.requested

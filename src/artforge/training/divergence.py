"""The divergence guard: a NaN/Inf loss, gradient or weight is found without waiting for the
device, and the run rolls back to its last checkpoint with a lower learning rate.

Each phase of a step notes (on the device) whether its loss and gradients are finite
(``Watch.note``); the flag is read once per log line, sample grid or checkpoint
(``Watch.check``), and weights are checked before every save (``nonfinite``). A divergence
raises ``Diverged``; the Trainer reloads its last checkpoint and cuts every learning rate
(``cut_learning_rates``), train.nan_retries times, then gives up with TrainingError.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import TrainingError
from ..models.base import Phase


class Diverged(TrainingError):
    """A loss, gradient or weight became NaN/Inf at ``step``; nothing from it has been saved.

    The Trainer rolls back to the last checkpoint with a lower learning rate (train.nan_retries
    times) and raises it, as a TrainingError, when the retries are spent. Every rank sees the
    same values (losses and gradients are averaged first, weights are identical), so all ranks
    raise it together.
    """

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class Watch:
    """The first non-finite loss or gradient since the last check, kept on the device."""

    def __init__(self, phases: Sequence[Phase]) -> None:
        self.phases = phases
        self._first_bad: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    def note(self, step: int, phase: int, loss: torch.Tensor, params: list[nn.Parameter] | None) -> None:
        """Note (on the device) the first step whose loss, or whose gradients of ``params``,
        are not finite: code = 2 * (step * phases + phase) + (1 if only the gradients are)."""
        loss = loss.detach()
        loss_ok = torch.isfinite(loss).reshape(())
        ok = loss_ok if params is None else loss_ok & grads_finite(params)
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=torch.float32, device=loss.device)
        new = self._first_bad.lt(0) & ~ok
        code = loss_ok.long() + 2 * (step * len(self.phases) + phase)
        self._first_bad = torch.where(new, code, self._first_bad)
        self._bad_loss = torch.where(new, loss.float().reshape(()), self._bad_loss)

    def check(self, now: int) -> None:
        """Raise Diverged if a loss or gradient went NaN/Inf since the last check (``now``: the
        step reached): one read of the device flag."""
        if self._first_bad is None:
            return
        code = int(self._first_bad)  # the one host sync per log interval
        if code < 0:
            return
        loss = float(self._bad_loss)  # type: ignore[arg-type]
        self._first_bad.fill_(-1)
        at, phase = divmod(code // 2, len(self.phases))
        name = self.phases[phase].name
        what = "gradients became non-finite" if code % 2 else f"loss became {loss}"
        raise Diverged(f"{name} {what} at step {at} (caught at step {now})", at)


def nonfinite(models: Sequence[tuple[str, nn.Module]]) -> str | None:
    """The name (prefixed) of a NaN/Inf weight or buffer of ``(prefix, model)`` pairs, or None."""
    for prefix, m in models:
        for name, v in m.state_dict().items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return prefix + name
    return None


def cut_learning_rates(
    optimizers: dict[str, torch.optim.Optimizer], rates: dict[str, list[float]], factor: float
) -> dict[str, float]:
    """After reloading a checkpoint: every group's rate becomes ``factor`` times ``rates`` (its
    initial rate before the reload, which carries every earlier cut), at the lr decay's
    position the checkpoint restored. Returns each optimiser's first rate, for the log."""
    for g, opt in optimizers.items():
        for group, before in zip(opt.param_groups, rates[g], strict=True):
            cut = before * factor
            decayed = group["lr"] / group["initial_lr"]  # the lr decay's position (1 without)
            group["lr"] = cut if decayed == 1 else cut * decayed
            group["initial_lr"] = cut
    return {g: opt.param_groups[0]["lr"] for g, opt in optimizers.items()}


def grads_finite(params: list[nn.Parameter]) -> torch.Tensor:
    """() bool tensor on the device: every gradient of ``params`` is finite. No host sync;
    one fused kernel per dtype on CUDA (the check GradScaler uses, with a scale of 1, which
    leaves finite gradients bit-for-bit unchanged)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=params[0].device if params else "cpu")
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    found = torch.zeros(1, dtype=torch.float32, device=grads[0].device)
    one = torch.ones(1, dtype=torch.float32, device=grads[0].device)
    for gs in by_dtype.values():
        torch._amp_foreach_non_finite_check_and_unscale_(gs, found, one)
    return found.eq(0).reshape(())

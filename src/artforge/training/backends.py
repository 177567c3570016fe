"""Process-wide speed settings and the compile back-ends (``--compile``, ``--compile-mode``).

Nothing here changes results: TF32 is the user's choice (train.tf32), and a compiled network
computes what the eager one does (or falls back to it, with one line saying why).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..config import TrainConfig

log = logging.getLogger(__name__)


def configure_backends(t: TrainConfig, device: torch.device) -> None:
    """Process-wide speed settings: CPU threads, and TF32 on GPUs that have it."""
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = t.tf32
        torch.backends.cudnn.allow_tf32 = t.tf32


class CompileFailures(logging.Filter):
    """Collects torch.compile's fallbacks: dynamo logs a full traceback per network when it
    falls back to eager; the user gets one line with the reason instead (Trainer.train)."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[str] = []
        self.reported = 0  # reasons already told to the user

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "WON'T CONVERT" not in msg and "Traceback" not in msg:
            return True
        errors = [ln.strip() for ln in msg.splitlines() if "Error: " in ln or "Error(" in ln]
        reason = errors[-1] if errors else msg.splitlines()[0].strip()
        if reason not in self.reasons:
            self.reasons.append(reason)
        return False

    def report(self) -> None:
        if len(self.reasons) > self.reported:
            log.warning(
                "torch.compile failed, so the networks run eagerly (same results, no speed-up): %s",
                "; ".join(self.reasons[self.reported :]),
            )
            self.reported = len(self.reasons)


def compile_networks(model: nn.Module, mode: str = "default") -> CompileFailures:
    """``torch.compile`` each network of the model in place (parameter names, and so the
    checkpoints, are unchanged). If compilation fails (e.g. no C++ compiler on the machine),
    the networks run eagerly: ``suppress_errors`` makes dynamo fall back instead of raising.
    On the 2-core CPU this was slower than eager for every family (benchmarks/RESULTS.md), so
    it is opt-in."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    failures = CompileFailures()
    logging.getLogger("torch._dynamo.convert_frame").addFilter(failures)
    for name, net in model.named_children():
        if not any(True for _ in net.parameters()):
            continue
        try:
            net.compile(mode=None if mode == "default" else mode)
        except Exception as e:  # noqa: BLE001 - any failure means: stay eager
            failures.reasons.append(f"{name}: {e}")
    return failures


def compile_model(
    model: nn.Module, t: TrainConfig, device: torch.device
) -> tuple[CompileFailures | None, bool]:
    """torch.compile the networks of ``model`` as ``t`` asks (``--compile``, ``--compile-mode``):
    (the fallbacks collected, or None when nothing was compiled; whether CUDA graphs replay
    the networks, so each step must mark its start). CUDA graphs need a CUDA device and fixed
    shapes: elsewhere the networks run eagerly, and one line says why."""
    if not t.compile and t.compile_mode == "default":
        return None, False
    if t.compile_mode == "reduce-overhead" and device.type != "cuda":
        log.warning(
            "--compile-mode reduce-overhead replays CUDA graphs, which need a CUDA device; "
            "the networks run eagerly on %s",
            device,
        )
        return None, False
    if t.compile_mode == "reduce-overhead" and getattr(model, "conditional", False):
        log.warning(
            "--compile-mode reduce-overhead: text runs change shapes with each caption batch; "
            "the networks run eagerly"
        )
        return None, False
    return compile_networks(model, t.compile_mode), t.compile_mode == "reduce-overhead"

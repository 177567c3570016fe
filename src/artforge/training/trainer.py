"""The one training loop for every model family.

Nothing here knows about GANs or VAEs: a family gives its parameter groups, its phases and
one phase's loss on a batch; the Trainer owns devices, backward, mixed precision, clipping,
EMA, logging, sample grids and checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import RunConfig, TrainConfig
from ..data import ImageSet, load_images
from ..data.captions import read_captions
from ..data.holdout import is_held_out
from ..device import resolve_device
from ..errors import ConfigError, Conflict, DataError, TrainingError  # TrainingError: importable from here
from ..io import write_json
from ..models.base import GenerativeModel
from ..optim import EMA, build_optimizer
from ..resolve import complete_config
from ..runs import build_model, write_config
from ..sample import generate, latents_for_seed, save_grid
from . import distributed
from .batches import BatchStream
from .checkpoint import (
    SaveError,
    TrainState,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
    state_dir,
)
from .logbook import Logbook, plot_losses

log = logging.getLogger(__name__)

GRID_SEED = 1234  # the fixed seed of the training sample grids
Hook = Callable[["Trainer", int], None]


@dataclass
class _Window:
    """Images trained since the last log line, and when that line was written: the speed
    the next line reports."""

    images: int = 0
    start: float = field(default_factory=time.perf_counter)

    def reset(self) -> None:
        self.images, self.start = 0, time.perf_counter()


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


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


class Trainer:
    """Train ``cfg`` into ``run_dir``. ``hooks`` are ``fn(trainer, step)`` called after each step
    (on the main process only). The Trainer imports no evaluation code: the hooks that
    ``train.monitor_every`` and ``train.snapshot_every`` ask for are built by the caller
    (``evaluate.training_hooks(cfg.train)``, as ``api.train`` and ``artforge train`` do).

    Under ``torchrun`` every process runs a Trainer: each takes its slice of every batch, the
    gradients are averaged (training/distributed.py), and only rank 0 writes the run folder.
    """

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str | Path,
        *,
        data: ImageSet | None = None,
        progress: bool = True,
        hooks: list[Hook] | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.dist = distributed.from_env()
        self.main = self.dist.main
        self.progress = progress and self.main
        self.hooks = list(hooks or [])
        self.stops = StopSignals(enabled=False)  # train() installs the real ones around its loop
        self.device = distributed.setup(self.dist, resolve_device(cfg.train.device))
        configure_backends(cfg.train, self.device)
        if cfg.train.deterministic:
            if self.device.type == "cuda":  # cuBLAS refuses deterministic mode without it
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        seed_everything(cfg.train.seed)  # the same on every rank: same weights, same RNG stream
        self.cfg = complete_config(cfg)  # a no-op on a config from resolve.resolve_run
        model = build_model(self.cfg, cfg.train.device, training=True)  # weights from the seeded RNG
        if cfg.train.batch_size % self.dist.world:
            raise ConfigError(
                f"--batch-size {cfg.train.batch_size} must be divisible by the number of processes "
                f"({self.dist.world}); it is the global batch, split evenly"
            )
        if data is None:  # rank 0 decodes first, so a disk cache is written once and then shared
            if not self.main:
                distributed.barrier(self.dist)
            data = load_images(self.cfg.data, progress=self.progress)
            if self.main:
                distributed.barrier(self.dist)
        if self.cfg.data.holdout > 0:  # kept out of training, so eval can use them as unseen
            keep = [not is_held_out(n, self.cfg.data.holdout) for n in data.names]
            if not any(keep):
                raise ConfigError(f"--data.holdout={self.cfg.data.holdout} leaves no image to train on")
            data = data.subset(keep)
        self.data = data
        self.model: GenerativeModel = model.to(self.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)  # 4-D weights only
        self.model.shard = (self.dist.rank, self.dist.world)
        distributed.broadcast_module(self.dist, self.model)
        t = self.cfg.train
        self.groups = self.model.param_groups()
        self.optimizers = {
            g: build_optimizer(ps, self.cfg.optim_groups[g], t.optim_impl, self.device.type)
            for g, ps in self.groups.items()
        }
        self._keep_initial_lr()
        self.progress_done = 0.0  # fraction of the budget spent, for the lr decay
        self.phases = self.model.phases()
        names = {id(p): n for n, p in self.model.named_parameters()}
        ema_names = {names[id(p)] for g in self.model.ema_groups for p in self.groups[g]}
        self.ema = EMA(self.model, ema_names, t.ema_half_life) if t.ema else None
        # after the EMA copy, which stays eager: it only samples
        self.graphs = False  # CUDA graphs replayed by torch.compile (compile_mode reduce-overhead)
        self.compile_failures = self._compile(t) if t.compile or t.compile_mode != "default" else None
        # CPUs: bf16 autocast only (oneDNN's bf16 kernels; no fp16 grad scaling off CUDA)
        amp = t.amp if self.device.type == "cuda" or t.amp == "bf16" else "off"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
        self.batches = BatchStream(
            self.data.images,
            t.batch_size,
            t.seed,
            self.cfg.data.hflip,
            self.dist.rank,
            self.dist.world,
            memory_format=self.memory_format,
        )
        where = self.batches.place(self.device)
        if self.device.type == "cuda":
            log.info(
                "data cache (%.0f MiB of uint8) kept in %s memory", self.data.images.numel() / 2**20, where
            )
        self.captions = self._read_captions()  # None unless the model is text-conditioned
        self._grid_prompts: list[str] | None = None
        self.state = TrainState()
        self.logbook = Logbook(self.run_dir / "metrics.jsonl")
        self.saved_step: int | None = None  # step of the last checkpoint written (the rollback target)
        self.rollbacks: list[dict] = []  # type: ignore[type-arg]  # divergences survived so far
        # first non-finite loss/gradient since the last check, kept on the device (_watch)
        self._first_bad: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None

    def _compile(self, t: TrainConfig) -> CompileFailures | None:
        """torch.compile the networks in ``t.compile_mode``. CUDA graphs need a CUDA device and
        fixed shapes: elsewhere the networks run eagerly, and one line says why."""
        if t.compile_mode == "reduce-overhead" and self.device.type != "cuda":
            log.warning(
                "--compile-mode reduce-overhead replays CUDA graphs, which need a CUDA device; "
                "the networks run eagerly on %s",
                self.device,
            )
            return None
        if t.compile_mode == "reduce-overhead" and getattr(self.model, "conditional", False):
            log.warning(
                "--compile-mode reduce-overhead: text runs change shapes with each caption batch; "
                "the networks run eagerly"
            )
            return None
        self.graphs = t.compile_mode == "reduce-overhead"
        return compile_networks(self.model, t.compile_mode)

    def _read_captions(self) -> list[str] | None:
        if not getattr(self.model, "conditional", False):
            return None
        caps = read_captions(self.data.root or self.cfg.data.path, self.data.names, self.cfg.data.captions)
        if len(caps.uncaptioned) == len(caps.texts):
            raise DataError(
                f"{self.cfg.data.path}: no image has a caption (source: {caps.source}); a text-conditioned "
                "model needs captions.jsonl, NAME.txt sidecars or descriptive file names"
            )
        self.caption_report = caps
        return caps.texts

    # -- budget --------------------------------------------------------------------------
    def total_steps(self) -> int | None:
        t = self.cfg.train
        limits = []
        if t.steps is not None:
            limits.append(t.steps)
        if t.epochs is not None:
            limits.append(math.ceil(t.epochs * len(self.data) / t.batch_size))
        return min(limits) if limits else None

    def _budget_fraction(self, step: int, elapsed: float, total: int | None) -> float:
        """How much of the budget is spent: the largest of steps/total and elapsed/minutes."""
        m = self.cfg.train.minutes
        parts = [step / total if total else 0.0, elapsed / (m * 60) if m else 0.0]
        return min(max(parts), 1.0)

    def _out_of_time(self, elapsed: float) -> bool:
        """A --minutes budget covers the final grid and checkpoint too: training stops when the
        time left is what they will take (``_finish_cost``), so the command ends in its minutes."""
        m = self.cfg.train.minutes
        return m is not None and elapsed + self._finish_cost(elapsed) >= m * 60

    def _finish_cost(self, elapsed: float) -> float:
        """Seconds the final grid and checkpoint will take, from the training speed so far (so
        every rank computes the same number from the shared clock; nothing extra is run).

        A training step is about 3 network passes (forward and backward) per image of the
        batch; the grid is ``grid_n`` images of one pass each, or of one pass per DDIM step
        (diffusion); the checkpoint is counted as one more step. Diffusion at the defaults
        (batch 64, grid 64, 25 steps): a grid costs about 8 training steps."""
        step = self.state.step
        if step < 1:
            return 0.0
        t = self.cfg.train
        passes = getattr(self.model.config, "sample_steps", 1) if "steps" in self.model.sample_options else 1
        step_s = elapsed / step
        return step_s * (1 + t.grid_n * passes / (3 * t.batch_size))

    # -- the loop ------------------------------------------------------------------------
    def train(self, resume: bool = False, overwrite: bool = False) -> Path:
        """Train until the budget is spent; ``resume`` continues from ``state/``.

        A folder that already holds a run is only started afresh with ``overwrite``.
        """
        resume = self._check_folder(resume, overwrite)
        distributed.barrier(self.dist)  # every rank has looked before rank 0 writes anything
        if resume:
            self._load_state()
            log.info("resumed %s at step %d", self.run_dir, self.state.step)
        elif self.main:
            self._clear_for_fresh_start()
        if self.main:
            self._write_run_files()
        distributed.barrier(self.dist)
        if not resume:  # step 0: loadable and resumable from the start, and a rollback target
            self.checkpoint()

        total = self.total_steps()
        if total is not None and self.state.step >= total:
            log.info("nothing to do: already at step %d of %d", self.state.step, total)
            self._finish()
            return self.run_dir

        bar = self._progress_bar(total)
        self.stops = StopSignals(enabled=not self.dist.enabled)
        try:
            with self.stops:
                window = self._loop(total, bar)
        except KeyboardInterrupt as e:
            if e is self.stops.requested or not self.stops.enabled:  # at a step boundary (or DDP)
                self._save_on_interrupt(bar)
            else:
                log.warning(
                    "stopped inside a step; the last checkpoint stays, continue with --resume from it"
                )
            raise
        if bar is not None:
            bar.close()
        if self.main and window.images:  # a budget in minutes ends between log lines: log the tail
            self._log_row(self.state.step, window)
        self._finish()
        distributed.teardown(self.dist)
        return self.run_dir

    def _check_folder(self, resume: bool, overwrite: bool) -> bool:
        """Refuse to start over a run unless told to; whether to resume after all."""
        if not resume and (self.run_dir / "config.json").exists() and not overwrite:
            raise Conflict(
                f"{self.run_dir} already holds a run; continue it with --resume, "
                "or pick another --out (or --overwrite to replace it)"
            )
        # without a checkpoint, --resume refuses (naming what is missing) unless the folder
        # holds nothing a fresh start would replace (a run killed before its first checkpoint)
        if resume and not check_resumable(self.run_dir):
            log.warning("%s has no checkpoint and no results yet; starting it from step 0", self.run_dir)
            return False
        return resume

    def _clear_for_fresh_start(self) -> None:
        """Remove what a fresh start replaces: its log, grids, checkpoint, snapshots, and the
        measurements of the old weights (eval*.json, novelty*.png: the studio would show them
        beside the new run). What the user made with the old model (generated/, create/,
        walks) and their favourites stay."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        measured = [p.name for pattern in ("eval*.json", "novelty*.png") for p in self.run_dir.glob(pattern)]
        for stale in (
            *("metrics.jsonl", "samples", "plots", "state", "state.old", "state.tmp"),
            *("snapshots", "snapshots.json", "snapshots.md"),
            *measured,
        ):
            p = self.run_dir / stale
            if p.is_symlink():  # a link is removed, never what it points to
                p.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()

    def _write_run_files(self) -> None:
        """config.json and the reports of what the data held (rank 0)."""
        write_config(self.cfg, self.run_dir)
        self.data.write_report(self.run_dir / "data_report.json")
        if self.captions is not None:
            log.info("%s", self.caption_report.summary())
            write_json(self.caption_report.report(), self.run_dir / "captions_report.json")
        if self.data.held_out:  # the loader said what it read; this is what training keeps
            log.info("%s", self.data.summary())

    def _loop(self, total: int | None, bar) -> _Window:  # type: ignore[no-untyped-def]
        """Steps until the budget is spent, rolling back on divergence; returns the images
        trained since the last log line."""
        t = self.cfg.train
        start = time.perf_counter() - self.state.elapsed
        window = _Window()
        step = self.state.step
        timed = t.minutes is not None  # only then do the ranks need one clock (a collective)
        while total is None or step < total:
            self.stops.check()  # Ctrl-C / SIGTERM stop here, between steps
            now = time.perf_counter() - start
            elapsed = distributed.from_main(self.dist, now, self.device) if timed else now
            if self._out_of_time(elapsed):
                if self._guard(self.check_finite):  # the last steps are checked before the end
                    break
                step = self._rolled_back(bar, window)
                continue
            self.progress_done = self._budget_fraction(step, elapsed, total)
            self._train_step(step)
            if self.compile_failures is not None and self.main:
                self.compile_failures.report()
            step += 1
            self._count_step(step, start, window)
            if not self._after_step(step, total, bar, window):
                step = self._rolled_back(bar, window)
                continue
            if bar is not None:
                bar.update(1)
        return window

    def _count_step(self, step: int, start: float, window: _Window) -> None:
        """The counters of a finished step, and the EMA's update."""
        t = self.cfg.train
        self.state.step = step
        self.state.images_seen += t.batch_size
        window.images += t.batch_size
        if self.ema is not None:
            self.ema.update(self.model, self.state.images_seen, t.batch_size)
        self.state.elapsed = time.perf_counter() - start

    def _due(self, step: int, total: int | None) -> tuple[bool, bool, bool]:
        """Whether ``step`` ends with a log line, a sample grid, a checkpoint."""
        t = self.cfg.train
        logs = step % t.log_every == 0 or step == total
        grid = bool(t.sample_every) and step % t.sample_every == 0
        ckpt = bool(t.ckpt_every and step % t.ckpt_every == 0) or step == total
        return logs, grid, ckpt

    def _after_step(self, step: int, total: int | None, bar, window: _Window) -> bool:  # type: ignore[no-untyped-def]
        """The outputs due after ``step``, then the hooks; False when a divergence was found
        and the run rolled back."""
        logs, grid, ckpt = self._due(step, total)
        # the deferred NaN check, on every rank alike, before anything leaves the step
        if (logs or grid) and not self._guard(self.check_finite):
            return False
        if self.main and logs:
            row = self._log_row(step, window)
            if bar is not None:
                bar.set_postfix_str(self._postfix(row), refresh=False)
        if self.main and grid:
            self.save_samples()
        if ckpt and not self._guard(self.checkpoint):
            return False
        for hook in self.hooks if self.main else ():
            hook(self, step)
        return True

    def _save_on_interrupt(self, bar) -> None:  # type: ignore[no-untyped-def]
        """Ctrl-C: save a checkpoint (unless the weights diverged) so --resume continues."""
        if bar is not None:
            bar.close()
        try:
            self.checkpoint(verify=False)  # the other ranks are being interrupted too
        except Diverged as e:
            log.warning("interrupted; %s", e)
            raise
        why = "terminated (SIGTERM)" if isinstance(sys.exc_info()[1], Terminated) else "interrupted"
        log.warning("%s at step %d; checkpoint saved, continue with --resume", why, self.state.step)

    def _rolled_back(self, bar, window: _Window) -> int:  # type: ignore[no-untyped-def]
        """After a rollback: the step to continue from, shown on the progress bar; the speed
        window starts again."""
        if bar is not None:
            bar.n = self.state.step
        window.reset()
        return self.state.step

    def _log_row(self, step: int, window: _Window) -> dict:  # type: ignore[type-arg]
        """Write one metrics.jsonl line: counters, speed over the window, mean losses; the
        window starts again."""
        row = self.logbook.flush(
            step=step,
            images=self.state.images_seen,
            epoch=round(self.batches.epoch_of(step), 4),
            elapsed=round(self.state.elapsed, 2),
            img_per_s=round(window.images / max(time.perf_counter() - window.start, 1e-9), 2),
            **self._memory(),
        )
        window.reset()
        return row

    def _memory(self) -> dict[str, float]:
        """Peak CUDA memory so far (MiB), for the log; nothing on the CPU."""
        if self.device.type != "cuda":
            return {}
        return {"cuda_peak_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}

    def _finish(self) -> None:
        grid = self.run_dir / "samples" / f"step-{self.state.step:07d}.png"
        if self.main and not grid.is_file():  # a sample_every grid at this step is the same grid
            self.save_samples()
        if self.saved_step != self.state.step:  # a --minutes budget ends between checkpoints
            self.checkpoint()
        if self.saved_step != self.state.step:  # on_save_error=continue, and the last save failed too
            kept = f"state/ holds step {self.saved_step}" if self.saved_step is not None else "no checkpoint"
            raise TrainingError(
                f"training reached step {self.state.step} but its checkpoint could not be written; "
                f"{kept} in {self.run_dir}. Free some space and continue with --resume"
            )

    # -- divergence: roll back -----------------------------------------------------------
    def _guard(self, fn: Callable[..., None], *args: int) -> bool:
        """Run ``fn``; on divergence roll back (or raise when out of retries) and return False."""
        try:
            fn(*args)
        except Diverged as e:
            self._rollback(e)
            return False
        return True

    def _rollback(self, err: Diverged) -> None:
        """Reload the last checkpoint and multiply every learning rate by train.nan_lr_factor.

        Deterministic: the checkpoint restores weights, optimiser and RNG states, and batch k
        is a function of (seed, k), so the same divergence always leads to the same run.
        """
        t = self.cfg.train
        kept = (
            f"the last good checkpoint (step {self.saved_step}) in {self.run_dir / 'state'} is intact"
            if self.saved_step is not None
            else "no checkpoint was written"
        )
        if len(self.rollbacks) >= t.nan_retries or state_dir(self.run_dir) is None:
            raise TrainingError(
                f"{err}; gave up after {len(self.rollbacks)} rollback(s) with a lower learning rate "
                f"(train.nan_retries={t.nan_retries}); {kept}. Try a lower learning rate (--lr) or "
                "--optim.clip=1.0"
            ) from None
        distributed.barrier(self.dist)  # rank 0 has finished writing state/
        # the cut compounds: it applies to the rates in use now, which carry every earlier
        # cut, not to the checkpoint's (an earlier rollback to the same checkpoint reloads
        # the uncut rates); after k rollbacks the rates are factor**k of the configured ones
        rates = {g: [group["initial_lr"] for group in opt.param_groups] for g, opt in self.optimizers.items()}
        self._load_state()
        for g, opt in self.optimizers.items():
            for group, before in zip(opt.param_groups, rates[g], strict=True):
                cut = before * t.nan_lr_factor
                decayed = group["lr"] / group["initial_lr"]  # the lr decay's position (1 without)
                group["lr"] = cut if decayed == 1 else cut * decayed
                group["initial_lr"] = cut
        lrs = {g: opt.param_groups[0]["lr"] for g, opt in self.optimizers.items()}
        self.rollbacks.append(
            {"at_step": err.step, "to_step": self.state.step, "reason": str(err), "lr": lrs}
        )
        self.state.extra["rollbacks"] = list(self.rollbacks)
        if self.main:
            self.logbook.event(step=self.state.step, event="rollback", at_step=err.step, lr=lrs)
        log.warning(
            "%s; rolled back to step %d with learning rate(s) %s (rollback %d of %d)",
            err,
            self.state.step,
            lrs,
            len(self.rollbacks),
            t.nan_retries,
        )

    def _keep_initial_lr(self) -> None:
        """Each optimiser group remembers its rate before any decay (a rollback scales both)."""
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])

    def _load_state(self) -> None:
        """Restore the newest checkpoint: weights, EMA, optimisers, RNGs, counters, log window."""
        ema_model = self.ema.model if self.ema else None
        self.state = load_checkpoint(self.run_dir, self.model, ema_model, self.optimizers, self.scaler)
        self._keep_initial_lr()  # checkpoints from before the lr decay lack it
        self.saved_step = self.state.step
        if not self.rollbacks:  # a resumed run keeps counting the rollbacks it has had
            self.rollbacks = list(self.state.extra.get("rollbacks", []))
        if self.main:
            self.logbook.truncate_after(self.state.step)
            self.logbook.restore(self.state.extra.get("logbook"))

    def _nonfinite(self) -> str | None:
        """The name of a NaN/Inf weight or buffer (training or EMA copy), or None."""
        models = [("", self.model)] + ([("ema.", self.ema.model)] if self.ema is not None else [])
        for prefix, m in models:
            for name, v in m.state_dict().items():
                if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                    return prefix + name
        return None

    def _train_step(self, step: int, batch: torch.Tensor | None = None) -> None:
        """One optimisation step on batch ``step`` of the data (or on ``batch``, for benchmarks).

        Nothing here waits for the device: the batch is gathered where the data cache lives,
        logged values stay tensors (Logbook) and a NaN/Inf loss or gradient is only noted in
        a device-side flag (``_watch``), read at the next log line, sample grid or checkpoint
        (``check_finite``). A divergence found there rolls back to the last checkpoint, which
        was verified finite when it was written, so no NaN weight is ever saved.
        """
        if self.graphs:  # a new iteration: the graphs may overwrite the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        if batch is None:
            batch = self.batches.batch(step, self.device)  # (B, C, H, W) in [-1, 1]
        kwargs = {}
        if self.captions is not None:  # this rank's captions, in the order of its images
            kwargs["text"] = [self.captions[i] for i in self.batches.local_indices(step).tolist()]
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else nullcontext()
        )
        for i, ph in enumerate(self.phases):
            if step % ph.every:
                continue
            opt = self.optimizers[ph.opt]
            params = self.groups[ph.opt]
            opt.zero_grad(set_to_none=True)
            with autocast:
                out = self.model.training_step(ph.name, batch, step, **kwargs)
            loss = out["loss"]
            # gradients for this phase's group only (the other groups are frozen in it);
            # ``inputs`` prunes the rest of the backward as toggling requires_grad did
            if self.scaler is not None:
                self.scaler.scale(loss).backward(inputs=params)
            else:
                loss.backward(inputs=params)
            if self.dist.enabled:  # average gradients and the logged values over the ranks
                keys = list(out)
                values = torch.stack([out[k].detach().float() for k in keys])
                values = distributed.average_grads(self.dist, params, values)
                out = dict(zip(keys, values.unbind(0), strict=True))
            # fp16: the scaler skips steps with non-finite gradients itself
            self._watch(step, i, out["loss"], None if self.scaler is not None else params)
            if self.scaler is not None:
                self.scaler.unscale_(opt)
            decay = self.cfg.optim_groups[ph.opt].get("decay", 0.0)  # runs before it lack the key
            if decay:
                factor = decayed_lr_factor(self.progress_done, decay)
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * factor
                out["lr"] = opt.param_groups[0]["lr"]  # a float: the Logbook takes both
            clip = self.cfg.optim_groups[ph.opt]["clip"]
            if clip:
                nn.utils.clip_grad_norm_(params, clip)
            if self.scaler is not None:
                self.scaler.step(opt)
                self.scaler.update()
            else:
                opt.step()
            if self.main:
                self.logbook.add(ph.name, out)
        distributed.average_buffers(self.dist, self.model)

    # -- divergence, seen without waiting for the device ---------------------------------
    def _watch(self, step: int, phase: int, loss: torch.Tensor, params: list[nn.Parameter] | None) -> None:
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

    def check_finite(self) -> None:
        """Raise Diverged if a loss or gradient went NaN/Inf since the last check: one read of
        the device flag. Every rank sees the same averaged values, so all raise together."""
        if self._first_bad is None:
            return
        code = int(self._first_bad)  # the one host sync per log interval
        if code < 0:
            return
        loss = float(self._bad_loss)
        self._first_bad.fill_(-1)
        at, phase = divmod(code // 2, len(self.phases))
        name = self.phases[phase].name
        what = "gradients became non-finite" if code % 2 else f"loss became {loss}"
        raise Diverged(f"{name} {what} at step {at} (caught at step {self.state.step})", at)

    # -- outputs -------------------------------------------------------------------------
    @property
    def sampling_model(self) -> GenerativeModel:
        return self.ema.model if self.ema is not None else self.model  # type: ignore[return-value]

    def save_samples(self) -> Path:
        model = self.sampling_model
        was_training = model.training
        model.eval()
        n = self.cfg.train.grid_n
        z = latents_for_seed(model, n, GRID_SEED)
        prompts = self.grid_prompts()
        images = generate(model, z) if prompts is None else generate(model, z, prompt=prompts)
        model.train(was_training)
        path = self.run_dir / "samples" / f"step-{self.state.step:07d}.png"
        try:
            return save_grid(images, path)
        except OSError as e:  # a full disk: the grid is for looking at, the checkpoint decides
            log.warning("could not write %s (%s)", path, e.strerror or e)
            return path

    def grid_prompts(self) -> list[str] | None:
        """Text runs: the sample grids show fixed captions drawn from the data (listed in
        samples/prompts.txt, one per grid cell, row by row)."""
        if self.captions is None:
            return None
        if self._grid_prompts is None:  # the same every grid: drawn once
            distinct = sorted({c for c in self.captions if c})
            order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(GRID_SEED)).tolist()
            self._grid_prompts = [distinct[order[i % len(order)]] for i in range(self.cfg.train.grid_n)]
        prompts = self._grid_prompts
        listing = self.run_dir / "samples" / "prompts.txt"
        if self.main and not listing.exists():
            listing.parent.mkdir(parents=True, exist_ok=True)
            listing.write_text("\n".join(prompts) + "\n", encoding="utf-8")
        return prompts

    def checkpoint(self, verify: bool = True) -> None:
        """Rank 0 writes state/ and model.safetensors; first all ranks check they agree.

        NaN/Inf weights are never saved: they raise Diverged (the caller rolls back). A failed
        write (full disk) stops training with TrainingError, or with train.on_save_error=continue
        logs a warning and trains on; either way the previous checkpoint is intact.
        """
        self.check_finite()  # a NaN loss or gradient since the last check: nothing is saved
        if verify:
            distributed.check_identical(self.dist, self.model, self.device)
        bad = self._nonfinite()  # identical weights on every rank: all ranks agree
        if bad is not None:
            raise Diverged(
                f"weight {bad} became non-finite at step {self.state.step} (not saved)", self.state.step
            )
        error = ""
        if self.main:
            ema_model = self.ema.model if self.ema is not None else None
            self.state.extra["logbook"] = self.logbook.pending()
            try:
                save_checkpoint(self.run_dir, self.model, ema_model, self.optimizers, self.scaler, self.state)
            except SaveError as e:
                error = str(e)
        # rank 0 tells the others (not on Ctrl-C: the ranks may not all reach a collective then)
        if distributed.agree(self.dist, bool(error), self.device) if verify else error:
            self._save_failed(error or "rank 0 could not write the checkpoint")
            return
        self.saved_step = self.state.step
        if self.main:
            try:
                plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "plots" / "losses.png")
            except OSError as e:  # the plot is for looking at; a full disk must not end the run here
                log.warning("could not write plots/losses.png (%s)", e.strerror or e)

    def _save_failed(self, error: str) -> None:
        if self.cfg.train.on_save_error == "stop":
            raise TrainingError(
                f"{error}. Training stopped at step {self.state.step}; free some space and continue "
                f"with --resume, or pass --train.on_save_error=continue to train on when a save fails"
            )
        log.warning(
            "%s; training continues (train.on_save_error=continue), next try at the next checkpoint", error
        )

    def _progress_bar(self, total: int | None):  # type: ignore[no-untyped-def]
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        desc = f"{self.cfg.family} {self.cfg.data.width}x{self.cfg.data.height}"
        if total is None and self.cfg.train.minutes is not None:  # the postfix shows the time left
            desc += f" ({self.cfg.train.minutes:g} min)"
        return tqdm(total=total, initial=self.state.step, desc=desc, unit="step", dynamic_ncols=True)

    def _postfix(self, row: dict) -> str:  # type: ignore[type-arg]
        """Losses, speed and the time left to the budget that ends first (a --minutes budget's
        own clock; steps and epochs at the speed so far)."""
        parts = [f"{k}={v:.3g}" for k, v in row.items() if k.endswith("/loss")]
        parts.append(f"{row['img_per_s']:.0f} img/s")
        left = self._time_left(row.get("step", 0), row.get("elapsed", 0.0))
        if left is not None:
            parts.append(f"{_clock(left)} left")
        return " ".join(parts)

    def _time_left(self, step: int, elapsed: float) -> float | None:
        m, total = self.cfg.train.minutes, self.total_steps()
        left = []
        if m is not None:
            left.append(m * 60 - elapsed)
        if total is not None and step > 0 and elapsed > 0:
            left.append((total - step) * elapsed / step)
        return max(0.0, min(left)) if left else None


def _clock(seconds: float) -> str:
    """1:05:09, 4:07 or 0:09 (h:mm:ss or m:ss, like tqdm)."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def decayed_lr_factor(progress: float, decay: float) -> float:
    """Learning-rate multiplier: 1 until the last ``decay`` of the budget, then linear to 0."""
    if decay <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / decay))


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

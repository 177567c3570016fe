"""The one training loop for every model family.

Nothing here knows about GANs or VAEs: a family gives its parameter groups, its phases and
one phase's loss on a batch; the Trainer owns devices, backward, mixed precision, clipping,
EMA, logging, sample grids and checkpoints.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..config import RunConfig
from ..data import ImageSet, load_images
from ..data.captions import groups_if_any, read_captions
from ..data.holdout import is_held_out
from ..device import resolve_device
from ..errors import ConfigError, Conflict, DataError, TrainingError  # TrainingError: importable from here
from ..io import write_json
from ..models.base import GenerativeModel
from ..optim import EMA, build_optimizer
from ..resolve import config_and_model
from ..runfolder import (
    CAPTIONS_REPORT,
    CONFIG_NAME,
    DATA_REPORT,
    METRICS,
    PLOTS,
    SAMPLES,
    replaced_by_fresh_start,
    sample_grid,
)
from ..runs import write_config
from ..sample import generate, latents_for_seed, save_grid
from . import distributed
from .backends import CompileFailures, compile_model, configure_backends
from .batches import BatchStream, group_weights
from .budget import Budget, Speed, clock, out_of_time
from .checkpoint import (
    SaveError,
    TrainState,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
    state_dir,
)
from .divergence import Diverged, Watch, cut_learning_rates, grads_finite, nonfinite
from .logbook import Logbook, plot_losses
from .signals import StopSignals, Terminated

# imported from here by callers and tests
__all__ = ["Diverged", "StopSignals", "Terminated", "Trainer", "TrainingError", "grads_finite"]

log = logging.getLogger(__name__)

GRID_SEED = 1234  # the fixed seed of the training sample grids
Hook = Callable[["Trainer", int], None]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


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
        # the complete config (unchanged from resolve.resolve_run) and the model, built once
        self.cfg, model = config_and_model(cfg)  # weights from the seeded RNG
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
        self.watch = Watch(self.phases)  # NaN/Inf losses and gradients, noted on the device
        names = {id(p): n for n, p in self.model.named_parameters()}
        ema_names = {names[id(p)] for g in self.model.ema_groups for p in self.groups[g]}
        self.ema = EMA(self.model, ema_names, t.ema_half_life) if t.ema else None
        # after the EMA copy, which stays eager: it only samples
        # CUDA graphs replayed by torch.compile (compile_mode reduce-overhead): graphs=True
        self.compile_failures: CompileFailures | None
        self.compile_failures, self.graphs = compile_model(self.model, t, self.device)
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
            weights=self._sampling_weights(),
        )
        where = self.batches.place(self.device)
        if self.device.type == "cuda":
            log.info(
                "data cache (%.0f MiB of uint8) kept in %s memory", self.data.images.numel() / 2**20, where
            )
        self.captions = self._read_captions()  # None unless the model is text-conditioned
        self._grid_prompts: list[str] | None = None
        self.state = TrainState()
        self.logbook = Logbook(self.run_dir / METRICS)
        self.saved_step: int | None = None  # step of the last checkpoint written (the rollback target)
        self.rollbacks: list[dict] = []  # type: ignore[type-arg]  # divergences survived so far

    def _sampling_weights(self) -> torch.Tensor | None:
        """Per-image probabilities for ``data.sampling`` "group" / "sqrt" (None: "uniform")."""
        mode = self.cfg.data.sampling
        if mode == "uniform":
            return None
        root = self.data.root or self.cfg.data.path
        groups = groups_if_any(root, self.data.names, self.cfg.data.captions)
        if groups is None:
            raise ConfigError(
                f"{self.cfg.data.path}: data.sampling={mode} evens out groups, but the images have no "
                "groups: put them in sub-folders (with --captions folder) or give captions.jsonl "
                'a "group" field'
            )
        log.info("data.sampling=%s: %d groups", mode, len(set(groups)))
        return group_weights(groups, mode)

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

    # -- budget ------------------------------------------------------------------------
    def budget(self) -> Budget:
        """The steps and minutes budgets (an epochs budget counted in steps: ``total_steps``)."""
        return Budget(steps=self.total_steps(), minutes=self.cfg.train.minutes)

    def total_steps(self) -> int | None:
        t = self.cfg.train
        return Budget.of(t).total_steps(len(self.data), t.batch_size)

    def _out_of_time(self, elapsed: float) -> bool:
        """A --minutes budget covers the final grid and checkpoint too (budget.out_of_time)."""
        return out_of_time(self.cfg.train.minutes, elapsed, self._finish_cost(elapsed))

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
        self._open(resume, overwrite)
        total = self.total_steps()
        if total is not None and self.state.step >= total:
            log.info("nothing to do: already at step %d of %d", self.state.step, total)
            self._finish()
            return self.run_dir

        bar = self._progress_bar(total)
        self.stops = StopSignals(enabled=not self.dist.enabled)
        try:
            with self.stops:
                speed = self._loop(total, bar)
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
        if self.main and speed.images:  # a budget in minutes ends between log lines: log the tail
            self._log_row(self.state.step, speed)
        self._finish()
        distributed.teardown(self.dist)
        return self.run_dir

    def _open(self, resume: bool, overwrite: bool) -> None:
        """Resume from state/, or start afresh (a step-0 checkpoint: loadable and resumable
        from the start, and a rollback target); config.json and the data reports written."""
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
        if not resume:
            self.checkpoint()

    def _check_folder(self, resume: bool, overwrite: bool) -> bool:
        """Refuse to start over a run unless told to; whether to resume after all."""
        if not resume and (self.run_dir / CONFIG_NAME).exists() and not overwrite:
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
        """Remove what a fresh start replaces (runfolder.replaced_by_fresh_start: its log,
        grids, checkpoint, snapshots and the old weights' measurements); what the user made
        with the old model and their favourites stay."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in replaced_by_fresh_start(self.run_dir):
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
        self.data.write_report(self.run_dir / DATA_REPORT)
        if self.captions is not None:
            log.info("%s", self.caption_report.summary())
            write_json(self.caption_report.report(), self.run_dir / CAPTIONS_REPORT)
        if self.data.held_out:  # the loader said what it read; this is what training keeps
            log.info("%s", self.data.summary())

    def _loop(self, total: int | None, bar) -> Speed:  # type: ignore[no-untyped-def]
        """Steps until the budget is spent, rolling back on divergence; returns the speed
        window (the images trained since the last log line)."""
        t = self.cfg.train
        budget = self.budget()
        start = time.perf_counter() - self.state.elapsed
        window = Speed()
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
            self.progress_done = budget.spent(step, elapsed) or 0.0  # for the lr decay
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

    def _count_step(self, step: int, start: float, window: Speed) -> None:
        """The counters of a finished step, and the EMA's update."""
        t = self.cfg.train
        self.state.step = step
        self.state.images_seen += t.batch_size
        window.add(t.batch_size)
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

    def _after_step(self, step: int, total: int | None, bar, window: Speed) -> bool:  # type: ignore[no-untyped-def]
        """The outputs due after ``step``, then the hooks; False when a divergence was found
        and the run rolled back."""
        logs, grid, ckpt = self._due(step, total)
        # the deferred NaN check, on every rank alike, before anything leaves the step
        if (logs or grid) and not self._guard(self.check_finite):
            return False
        if self.main and logs:
            row = self._log_row(step, window)
            if bar is not None:
                bar.set_postfix_str(self._postfix(row, window), refresh=False)
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

    def _rolled_back(self, bar, window: Speed) -> int:  # type: ignore[no-untyped-def]
        """After a rollback: the step to continue from, shown on the progress bar; the speed
        window starts again."""
        if bar is not None:
            bar.n = self.state.step
        window.reset()
        return self.state.step

    def _log_row(self, step: int, window: Speed) -> dict:  # type: ignore[type-arg]
        """Write one metrics.jsonl line: counters, speed over the window, mean losses; the
        window starts again."""
        return self.logbook.flush(
            step=step,
            images=self.state.images_seen,
            epoch=round(self.batches.epoch_of(step), 4),
            elapsed=round(self.state.elapsed, 2),
            img_per_s=round(window.lap(), 2),
            **self._memory(),
        )

    def _memory(self) -> dict[str, float]:
        """Peak CUDA memory so far (MiB), for the log; nothing on the CPU."""
        if self.device.type != "cuda":
            return {}
        return {"cuda_peak_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)}

    def _finish(self) -> None:
        grid = self.run_dir / SAMPLES / sample_grid(self.state.step)
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
        lrs = cut_learning_rates(self.optimizers, rates, t.nan_lr_factor)
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
            self.watch.note(step, i, out["loss"], None if self.scaler is not None else params)
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

    def check_finite(self) -> None:
        """Raise Diverged if a loss or gradient went NaN/Inf since the last check: one read of
        the device flag. Every rank sees the same averaged values, so all raise together."""
        self.watch.check(self.state.step)

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
        path = self.run_dir / SAMPLES / sample_grid(self.state.step)
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
        listing = self.run_dir / SAMPLES / "prompts.txt"
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
        models = [("", self.model)] + ([("ema.", self.ema.model)] if self.ema is not None else [])
        bad = nonfinite(models)  # identical weights on every rank: all ranks agree
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
                plot_losses(self.run_dir / METRICS, self.run_dir / PLOTS / "losses.png")
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

    def _postfix(self, row: dict, window: Speed) -> str:  # type: ignore[type-arg]
        """Losses, speed and the time left to the budget that ends first (a --minutes budget's
        own clock; steps and epochs at the recent speed, budget.Speed)."""
        parts = [f"{k}={v:.3g}" for k, v in row.items() if k.endswith("/loss")]
        parts.append(f"{row['img_per_s']:.0f} img/s")
        rate = window.images_per_s()
        steps_per_s = rate / self.cfg.train.batch_size if rate is not None else None
        left = self.budget().time_left(row.get("step", 0), row.get("elapsed", 0.0), steps_per_s)
        if left is not None:
            parts.append(f"{clock(left)} left")
        return " ".join(parts)


def decayed_lr_factor(progress: float, decay: float) -> float:
    """Learning-rate multiplier: 1 until the last ``decay`` of the budget, then linear to 0."""
    if decay <= 0:
        return 1.0
    return min(1.0, max(0.0, (1.0 - progress) / decay))

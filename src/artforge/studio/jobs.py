"""Training runs started from the page: ``python -m artforge train ...`` child processes.

A job is a process, a log file and a line in RUNS_DIR/.studio/jobs.json. Keeping the record
on disk is what lets the page survive a reload (the browser asks for the jobs again) and even
a restart of the studio (a job still running is found again by its pid, checked against its
command line so a recycled pid is not mistaken for it). Stopping sends SIGINT, the same as
Ctrl-C in a terminal: the trainer writes a checkpoint and exits, so the run can be resumed.
Jobs run in their own session, so a Ctrl-C meant for the studio does not stop training.

At most ``max_running`` jobs train at once (default: one per GPU, one on a machine without:
two trainings on the same cores each run at half speed or worse); the others are ``queued``
and start, oldest first, when one ends (checked every ``POLL_S`` seconds). A job's data must
be ``builtin`` or a folder/zip under RUNS_DIR or one of the ``data_roots`` the studio was
started with, so a page (or a script) cannot make the studio read, and list in a run's
data report, files from anywhere on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Range, Setting, settings
from ..errors import Conflict, NotFound, UserError
from ..io import write_json
from ..runfolder import CONFIG_NAME, METRICS, WEIGHTS_NAME
from .safety import BadRequest, StudioError, get_float, get_int, new_name, run_dir

STATE_DIR = ".studio"
LOG_TAIL = 4000  # characters of a job's log sent to the page
POLL_S = 2.0  # how often ended jobs are noticed and queued ones started


def default_max_running() -> int:
    """One training per GPU; one on a machine without."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


@dataclass
class Job:
    id: str
    run: str  # run id (folder name under RUNS_DIR)
    argv: list[str]
    pid: int
    log: str  # path relative to RUNS_DIR
    started: float
    # queued (waiting for a free slot) | running | finished | failed | stopped
    # | lost (ended unseen, budget not spent: killed or crashed)
    status: str = "running"
    returncode: int | None = None
    ended: float | None = None
    stop_requested: bool = False
    spec: dict[str, Any] = field(default_factory=dict)


def train_argv(
    spec: dict[str, Any], root: Path, models: list[str], data_roots: list[Path] | None = None
) -> tuple[str, list[str]]:
    """Check the page's training form and turn it into ``artforge train`` arguments.

    Only known fields are taken, each bounded; the data path must exist (or be builtin) inside
    RUNS_DIR or one of ``data_roots``, the run name is one new folder inside RUNS_DIR. Returns
    (run name, argv after ``artforge``).
    """
    if not isinstance(spec, dict):
        raise BadRequest("expected a JSON object")
    unknown = sorted(set(spec) - TRAIN_FIELDS)
    if unknown:
        raise BadRequest(f"unknown training field {unknown[0]!r}; known: {', '.join(sorted(TRAIN_FIELDS))}")
    name = new_name(spec.get("out"), "out (the run's name)")
    if (root / name).exists():
        raise Conflict(f"{name!r} already exists in the studio's folder; choose another name")
    model = spec.get("model", "gan")
    if model not in models:
        raise BadRequest(f"model must be one of {models}, got {model!r}")
    data = spec.get("data", "builtin")
    if not isinstance(data, str) or not data.strip():
        raise BadRequest("data must be a folder, a .zip or builtin[:NAME]")
    data = data.strip()
    data = _check_data(data, root, data_roots)
    width, height = _width_height(spec)
    argv = [
        "train",
        "--data",
        data,
        "--model",
        model,
        "--size",
        f"{width}x{height}",
        "--out",
        str(root / name),
    ]
    argv += _budget_argv(spec)
    values = {s.key: _form_value(spec, s) for s in FORM.values() if s.key not in BUDGET}
    flagged = [s for s in FORM.values() if s.flag and values.get(s.key) is not None]
    argv += [x for s in flagged for x in (s.flag, values[s.key])]
    # settings without a flag of their own go last, as --path=value
    argv += [
        f"--{s.path}={values[s.key]}" for s in FORM.values() if not s.flag and values.get(s.key) is not None
    ]
    if spec.get("text_encoder", "none") != "none" and model == "dcgan":
        raise BadRequest("dcgan takes no captions; use gan, vae or diffusion with a text encoder")
    channels = None if values.get("base_channels") is None else int(values["base_channels"])
    batch = None if values.get("batch_size") is None else int(values["batch_size"])
    _check_size(model, height, width, channels, batch)
    return name, argv


def _form_value(spec: dict[str, Any], s: Setting) -> str | None:
    """The form's value of setting ``s`` as flag text, checked against its choices or range;
    None when not given."""
    value = spec.get(s.key)
    if value is None:
        return None
    if s.choices is not None:
        if value not in s.choices:
            raise BadRequest(f"{s.key} must be one of {list(s.choices)}, got {value!r}")
        return str(value)
    r = s.studio
    assert isinstance(r, Range) and r.hi is not None, s.path
    if s.type is int:
        return str(get_int(spec, s.key, None, int(r.lo), int(r.hi)))
    return repr(get_float(spec, s.key, None, float(r.lo), float(r.hi), open_lo=r.open_lo))


def _check_data(data: str, root: Path, data_roots: list[Path] | None) -> str:
    """``builtin[:NAME]`` or an existing folder/zip under RUNS_DIR or a data root (resolved)."""
    if data.startswith("builtin"):
        return data
    path = Path(data).expanduser()
    if not path.exists():
        raise BadRequest(f"data {data!r}: no such folder or zip on the studio's machine")
    allowed = [root.resolve(), *(data_roots or [])]
    if not any(path.resolve().is_relative_to(r) for r in allowed):
        raise StudioError(
            f"data {data!r} is outside the folders the studio may read ({', '.join(map(str, allowed))}); "
            "move it into the studio's folder or start the studio with --data-root FOLDER",
            403,
        )
    return str(path.resolve())  # config.json then names it wherever the studio was started


def _width_height(spec: dict[str, Any]) -> tuple[int, int]:
    """``size`` (a square) or ``width`` and ``height`` (in SIZE, pixels each)."""
    if "width" not in spec and "height" not in spec:
        size = get_int(spec, "size", 32, int(SIZE.lo), int(SIZE.hi))  # type: ignore[arg-type]
        assert size is not None
        return size, size
    if "size" in spec:
        raise BadRequest("give size (a square) or width and height, not both")
    lo, hi = int(SIZE.lo), int(SIZE.hi)  # type: ignore[arg-type]
    width, height = get_int(spec, "width", None, lo, hi), get_int(spec, "height", None, lo, hi)
    if width is None or height is None:
        raise BadRequest(f"give both width and height (pixels, {lo} to {hi})")
    return width, height


def _budget_argv(spec: dict[str, Any]) -> list[str]:
    """--steps and/or --minutes, each in its declared range; one of them is needed."""
    given = [(FORM[k], _form_value(spec, FORM[k])) for k in BUDGET]
    if all(v is None for _, v in given):
        raise BadRequest("give a budget: steps, minutes or both (the first reached stops)")
    return [x for s, v in given if v is not None for x in (s.flag, v)]


def resume_argv(
    spec: dict[str, Any], root: Path, data_roots: list[Path] | None, jobs: dict[str, str]
) -> tuple[str, list[str]]:
    """Check a request to continue run ``spec["resume"]`` (a stopped or finished run) with a
    larger budget and turn it into ``artforge train --out RUN --resume`` arguments.

    The budget given replaces the run's whole budget (the others are cleared: a spent minutes
    budget would otherwise stop a run given more steps at once), and must be beyond what the
    run has done. The run's data must still be one the studio may read, as for a new job.
    """
    from . import gallery

    unknown = sorted(set(spec) - RESUME_FIELDS)
    if unknown:
        raise BadRequest(f"a resume takes only {', '.join(sorted(RESUME_FIELDS))}; not {unknown[0]!r}")
    run_id = spec["resume"]
    path = run_dir(root, run_id)
    cfg = gallery.read_json(path / CONFIG_NAME)
    if not isinstance(cfg, dict):
        raise BadRequest(f"{run_id}: config.json is unreadable, so the run cannot be continued")
    rows = gallery.read_rows(path / METRICS)
    if gallery.status(path, cfg, rows, jobs.get(run_id)) == "training":
        raise Conflict(f"{run_id!r} is training; stop it first")
    from ..training.checkpoint import state_dir

    if state_dir(path) is None:
        raise Conflict(f"{run_id!r} has no checkpoint (state/) to continue from")
    data = (cfg.get("data") or {}).get("path")
    if not isinstance(data, str):
        raise BadRequest(f"{run_id}: config.json names no data path")
    _check_data(data, root, data_roots)
    budget = _budget_argv(spec)
    last = next((r for r in reversed(rows) if "img_per_s" in r), {})
    given = (_form_value(spec, FORM[k]) for k in BUDGET)  # checked by _budget_argv
    steps, minutes = (None if v is None else float(v) for v in given)
    if steps is not None and steps <= last.get("step", 0):
        raise BadRequest(f"{run_id!r} is at step {last['step']}; give more steps than that")
    if minutes is not None and minutes * 60 <= last.get("elapsed", 0):
        raise BadRequest(
            f"{run_id!r} has trained {last['elapsed'] / 60:.1f} minutes; give more minutes than that"
        )
    cleared = [
        f"--train.{k}=none" for k in ("steps", "minutes", "epochs") if k not in spec or spec[k] is None
    ]
    return run_id, ["train", "--out", str(path), "--resume", *budget, *cleared]


def _check_size(model: str, height: int, width: int, channels: int | None, batch_size: int | None) -> None:
    """The training size guard every entry point shares (in resolve.resolve_run), here before
    a job starts, so a model the machine cannot hold is refused on the page, not in a log."""
    from ..resolve import resolve_run

    given: dict[str, Any] = {"family": model, "data.height": height, "data.width": width}
    if channels is not None:
        given["model.base_channels"] = channels
    if batch_size is not None:
        given["train.batch_size"] = batch_size
    try:
        resolve_run(given)
    except UserError as e:  # a setting the form gave that cannot be trained; a bug stays a bug
        raise BadRequest(str(e)) from None


# The training form's settings: those declared with studio=... beside their field
# (config.settings()), by the key the page sends; their bounds are the form's.
FORM: dict[str, Setting] = {s.key: s for s in settings() if s.studio}
BUDGET = ("steps", "minutes")  # at least one is needed; _budget_argv checks them
SIZE = Range(8, 512)  # pixels a side of a run trained from the page
TRAIN_FIELDS = {"out", "model", "data", "size", "width", "height", *FORM}
RESUME_FIELDS = {"resume", "steps", "minutes"}


class JobManager:
    """Starts, stops and remembers the studio's training processes."""

    def __init__(
        self,
        root: Path,
        python: str = sys.executable,
        *,
        data_roots: list[Path] | None = None,
        max_running: int | None = None,
        poll: bool = True,
    ):
        self.root = root
        self.python = python
        self.data_roots = list(data_roots or [])
        self.max_running = max_running or default_max_running()
        self.state_dir = root / STATE_DIR
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self.jobs: dict[str, Job] = self._load()
        self._stop = threading.Event()
        if poll:  # queued jobs start when a slot frees even while no page is open
            threading.Thread(target=self._poll, name="studio-jobs", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                self._refresh()

    def close(self) -> None:
        self._stop.set()

    # -- persistence ----------------------------------------------------------------------
    def _load(self) -> dict[str, Job]:
        try:
            rows = json.loads((self.state_dir / "jobs.json").read_text())
            names = {f.name for f in dataclasses.fields(Job)}
            return {r["id"]: Job(**{k: v for k, v in r.items() if k in names}) for r in rows}
        except (OSError, ValueError, TypeError, KeyError):
            return {}

    def _save(self) -> None:
        write_json([dataclasses.asdict(j) for j in self.jobs.values()], self.state_dir / "jobs.json")

    # -- life cycle -----------------------------------------------------------------------
    def start(self, spec: dict[str, Any]) -> Job:
        """Check ``spec`` and start the training, or queue it while ``max_running`` train."""
        from ..models import list_models

        with self._lock:
            self._refresh()
            if isinstance(spec, dict) and "resume" in spec:
                states = {j.run: j.status for j in sorted(self.jobs.values(), key=lambda j: j.started)}
                name, argv = resume_argv(spec, self.root, self.data_roots, states)
            else:
                name, argv = train_argv(spec, self.root, list_models(), self.data_roots)
            if any(j.run == name and j.status in ("running", "queued") for j in self.jobs.values()):
                raise Conflict(f"a job is already training {name!r}")
            job_id = uuid.uuid4().hex[:10]
            log_rel = f"{STATE_DIR}/job-{job_id}.log"
            full = [self.python, "-m", "artforge", "-q", *argv]
            job = Job(job_id, name, full, 0, log_rel, time.time(), status="queued", spec=dict(spec))
            self.jobs[job_id] = job
            self._start_queued()
            self._save()
            return job

    def _launch(self, job: Job) -> None:
        """Start a queued job's process (it writes its log under .studio/)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            with open(self.root / job.log, "wb") as log_file:
                proc = subprocess.Popen(
                    job.argv,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=env,
                )
        except OSError as e:
            job.status, job.ended = "failed", time.time()
            with contextlib.suppress(OSError):
                (self.root / job.log).write_text(f"could not start: {e}\n")
            return
        self._procs[job.id] = proc
        job.pid, job.status, job.started = proc.pid, "running", time.time()

    def _start_queued(self) -> bool:
        """Start queued jobs, oldest first, while fewer than ``max_running`` run."""
        started = False
        queued = sorted((j for j in self.jobs.values() if j.status == "queued"), key=lambda j: j.started)
        for job in queued:
            if sum(j.status == "running" for j in self.jobs.values()) >= self.max_running:
                break
            self._launch(job)
            started = True
        return started

    def stop(self, job_id: str) -> Job:
        """SIGTERM: the trainer checkpoints and exits (continue later with --resume). Not
        SIGINT: a studio started in the background (``artforge studio ... &``) passes its
        ignored SIGINT on to its jobs, which would then never stop."""
        with self._lock:
            self._refresh()
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            if job.status == "queued":  # never started: nothing to checkpoint
                job.status, job.stop_requested, job.ended = "stopped", True, time.time()
                self._save()
            elif job.status == "running":
                job.stop_requested = True
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(job.pid, signal.SIGTERM)
                self._save()
            return job

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            self._refresh()
            return [self.describe(j) for j in sorted(self.jobs.values(), key=lambda j: -j.started)]

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            self._refresh()
            if job_id not in self.jobs:
                raise NotFound(f"no job {job_id!r}")
            return self.describe(self.jobs[job_id])

    def run_states(self) -> dict[str, str]:
        """The status of the latest job of each run started from the studio."""
        with self._lock:
            self._refresh()
            return {j.run: j.status for j in sorted(self.jobs.values(), key=lambda j: j.started)}

    def describe(self, job: Job) -> dict[str, Any]:
        d = dataclasses.asdict(job)
        d["log_tail"] = self._tail(job)
        return d

    def _tail(self, job: Job) -> str:
        try:
            with open(self.root / job.log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _refresh(self) -> None:
        """Update running jobs: reap our children; check others (from a previous studio) by pid."""
        changed = False
        for job in self.jobs.values():
            if job.status != "running":
                continue
            proc = self._procs.get(job.id)
            if proc is not None:
                rc = proc.poll()
                if rc is None:
                    continue
                self._procs.pop(job.id)
            elif _alive(job.pid, job.argv):
                continue
            else:
                rc = None  # not our child: its exit status is unknown
            job.returncode, job.ended, changed = rc, time.time(), True
            if job.stop_requested:
                job.status = "stopped"
            elif rc is None:  # ended while no studio watched: judge by what it left
                job.status = "finished" if self._budget_spent(job.run) else "lost"
            else:
                job.status = "finished" if rc == 0 else "failed"
        if self._start_queued():
            changed = True
        if changed:
            self._save()

    def _budget_spent(self, run: str) -> bool:
        from . import gallery

        path = self.root / run
        rows = [r for r in gallery.read_rows(path / METRICS) if "img_per_s" in r]
        cfg = gallery.read_json(path / CONFIG_NAME)
        done = (gallery.progress(cfg, rows[-1]) or 0) >= 1 if rows and isinstance(cfg, dict) else False
        return done and (path / WEIGHTS_NAME).is_file()

    def shutdown(self) -> list[Job]:
        """The jobs still running when the studio stops (they keep running; see the module doc)."""
        with self._lock:
            self._refresh()
            return [j for j in self.jobs.values() if j.status == "running"]


def _alive(pid: int, argv: list[str]) -> bool:
    """Is ``pid`` still the process we started (same command line)?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (not Linux): trust the pid
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return [c.decode("utf-8", "replace") for c in cmdline if c] == argv

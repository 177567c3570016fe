"""The generation queue: models are run on worker threads, never on the web server's loop.

Why a queue: a burst of requests (a user clicking fast, several tabs, 50 scripted calls) must
neither start 50 model loads at once nor hold 50 batches of images in memory. Each *lane* is
one thread with a bounded queue; a request waits for its turn (the server stays responsive
meanwhile) and a full queue answers 503 "busy" instead of growing without end. Generation and
interpolation share the fast lane; the novelty view has its own lane because its first call
on a data set computes Inception features of every training image (minutes on a CPU), which
must not hold up everybody's samples. Models are kept in a small LRU cache keyed by the
weights file's mtime, so a run that is still training is reloaded when it writes new weights.

Why the lane is fair: one request in range (diffusion, 64 images, 250 steps) is minutes of
work on a CPU, and a 1-image request behind it must not wait for all of it. Generation work
is a generator that samples in chunks of bounded cost (``chunk_size``) and yields between
them; the lane runs the started requests round robin, one chunk each, and starts a waiting
request before the next turn, so a small request is answered after at most one chunk of
each request ahead of it. A request can be cancelled (its client went away): it is dropped
at its next turn, before any file is written.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
import zipfile
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from .. import create as cr
from ..api import load
from ..audio import write_wav
from ..cascade import BASE_DIR, UPSCALER_DIR, CascadeModel, is_cascade, upscale_images
from ..data import load_images
from ..errors import ConfigError, Conflict
from ..metrics.inception import find_inception
from ..metrics.precision_recall import nearest_neighbours
from ..metrics.reference import Reference
from ..models.upscaler import Upscaler
from ..runfolder import GENERATED, WEIGHTS_NAME
from ..sample import (
    batch_names,
    check_options,
    interpolation_path,
    make_grid,
    options_slice,
    save_animation,
    save_image,
    seed_names,
)
from ..sample import generate as decode  # this module's generate() is the studio's job
from .safety import BadRequest, StudioError

log = logging.getLogger(__name__)

OUTPUT_DIR = f"{GENERATED}/studio"  # inside a run folder, beside the CLI's RUN/generated/


CHUNK_COST = 2**16  # pixels x network passes in the first chunk of a request
TURN_S = 0.5  # later chunks are sized to take about this long (measured on the chunks so far)
MAX_STARTED = 8  # requests worked on round robin at once (each holds its partial images)
_turn = threading.local()  # .task: the Task whose turn it is on this lane's thread


class Busy(StudioError):
    status = 503


class Cancelled(StudioError):
    """The request's client went away before its answer was ready."""

    status = 499


@dataclass
class Task:
    work: Callable[[], Any]  # returns the result, or a generator that yields between chunks
    future: Future[Any] = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    steps: Iterator[None] | None = None  # the generator, once started


class Lane:
    """One worker thread shared fairly by the requests submitted to it (see the module doc).

    ``work`` that returns a plain value runs to completion in one turn; ``work`` that returns
    a generator gets one turn per chunk. At most ``maxsize`` requests wait beside the one
    being worked on; more are refused (Busy).
    """

    def __init__(self, name: str, maxsize: int, max_started: int = MAX_STARTED):
        self.name = name
        self.maxsize = maxsize
        self.max_started = max_started
        self._cond = threading.Condition()
        self._waiting: deque[Task] = deque()  # not started yet, first come first served
        self._started: deque[Task] = deque()  # round robin
        self._current: Task | None = None  # the task in its turn now
        self._closed = False
        self._tasks: dict[int, Task] = {}  # id(future) -> task, for cancel()
        self._thread = threading.Thread(target=self._loop, name=f"studio-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        task = Task(fn)
        with self._cond:
            if self.pending >= self.maxsize + 1:
                raise Busy(f"the {self.name} queue is full ({self.maxsize} waiting); try again shortly")
            self._waiting.append(task)
            self._tasks[id(task.future)] = task
            self._cond.notify()
        return task.future

    def cancel(self, future: Future[Any]) -> None:
        """Drop the request of ``future``: at once if it has not started, else at its next turn."""
        with self._cond:
            task = self._tasks.get(id(future))
            if task is None:
                return
            task.cancelled.set()
            if task in self._waiting:
                self._waiting.remove(task)
                self._end(task, error=Cancelled("cancelled: the client went away"))

    @property
    def pending(self) -> int:
        """Requests accepted and not answered yet: waiting, started, or in their turn now."""
        return len(self._waiting) + len(self._started) + (self._current is not None)

    @property
    def running(self) -> int:
        """Requests started and not finished (one has its turn, the others wait for theirs)."""
        return len(self._started) + (self._current is not None)

    def _next(self) -> Task | None:
        """The task for the next turn: a waiting one first while there is room, else round robin."""
        with self._cond:
            while not self._closed and not self._waiting and not self._started:
                self._cond.wait()
            if self._closed:
                return None
            if self._waiting and (len(self._started) < self.max_started or not self._started):
                task = self._waiting.popleft()
            else:
                task = self._started.popleft()
            self._current = task
            return task

    def _loop(self) -> None:
        while True:
            task = self._next()
            if task is None:
                return
            if task.cancelled.is_set():
                self._end(task, error=Cancelled("cancelled: the client went away"))
            else:
                self._turn(task)

    def _turn(self, task: Task) -> None:
        """Start ``task`` or advance it by one chunk; put it back in the round if not done."""
        _turn.task = task
        try:
            if task.steps is None:
                if not task.future.set_running_or_notify_cancel():
                    self._end(task)
                    return
                out = task.work()
                if not isinstance(out, Generator):
                    self._end(task, result=out)
                    return
                task.steps = out
            next(task.steps)
        except StopIteration as stop:
            self._end(task, result=stop.value)
            return
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            self._end(task, error=e)
            return
        finally:
            _turn.task = None
        with self._cond:
            self._started.append(task)
            self._current = None

    def _end(self, task: Task, result: Any = None, error: BaseException | None = None) -> None:
        if task.steps is not None:
            with contextlib.suppress(Exception):
                task.steps.close()  # a cancelled generator: nothing after its last yield runs
        with self._cond:  # counted out before its answer is out, so the queue length is never stale
            self._tasks.pop(id(task.future), None)
            if self._current is task:
                self._current = None
        if task.future.done():
            return
        if not task.future.running():
            task.future.set_running_or_notify_cancel()
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(result)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _stop_if_cancelled(module: torch.nn.Module, args: Any) -> None:
    """A forward pre-hook on a studio model's networks: a request cancelled in the middle of a
    chunk (a diffusion image is hundreds of network calls) stops at the next call."""
    task = getattr(_turn, "task", None)
    if task is not None and task.cancelled.is_set():
        raise Cancelled("cancelled: the client went away")


class ModelCache:
    """The last ``size`` loaded runs, least recently used dropped first; thread-safe."""

    def __init__(self, size: int = 4, device: str = "auto"):
        self.size = size
        self.device = device
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_path: Path, upscale: Path | None = None) -> Any:
        """The loaded run (a cascaded run folder at its final size), or the cascade of it and
        the upscaler run ``upscale`` (api.load's ``upscale``)."""
        mtimes = []
        for folder in [run_path, *([upscale] if upscale is not None else [])]:
            for weights in _weights_files(folder):
                try:
                    mtimes.append(weights.stat().st_mtime_ns)
                except OSError:
                    raise Conflict(
                        f"{folder.name} has no model.safetensors yet: it has not saved weights"
                    ) from None
        key = (str(run_path), str(upscale), tuple(mtimes))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        run = load(run_path, device=self.device, upscale=upscale)  # outside the lock: loads can be slow
        model = run.model
        for part in [model.base, model.upscaler] if isinstance(model, CascadeModel) else [model]:
            for net in part.children():
                net.register_forward_pre_hook(_stop_if_cancelled)
        with self._lock:
            for k in [k for k in self._items if k[:2] == key[:2]]:
                del self._items[k]  # an older version of the same run's weights
            self._items[key] = run
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return run

    def __len__(self) -> int:
        return len(self._items)


def _weights_files(folder: Path) -> list[Path]:
    """The weights a run folder's model loads from: a cascaded run's two stages' (cascade.py)."""
    if is_cascade(folder):
        return [folder / BASE_DIR / WEIGHTS_NAME, folder / UPSCALER_DIR / WEIGHTS_NAME]
    return [folder / WEIGHTS_NAME]


@dataclass
class Options:
    """Checked sampling options for one run: the family's own (truncation / temperature / steps)
    and a text prompt, which only a text-conditioned run may take."""

    values: dict[str, Any]
    prompt: str | None = None

    def check(self, run: Any) -> dict[str, Any]:
        """The options as api.Run takes them, checked by the same rule (sample.check_options)."""
        values = {**self.values, "prompt": self.prompt} if self.prompt else dict(self.values)
        try:
            return check_options(run.model, values)
        except ConfigError as e:  # the request's values: a bad request, as every other field's
            raise BadRequest(str(e)) from None


def new_output_dir(run_path: Path, kind: str) -> Path:
    """A fresh folder RUN/generated/studio/<time>-<kind>-<id>/ for one request's files."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = run_path / OUTPUT_DIR / f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"
    out.mkdir(parents=True, exist_ok=False)
    return out


def chunk_size(run: Any, opts: dict[str, Any]) -> int:
    """Images per turn of the lane: CHUNK_COST over one image's pixels x network passes (a
    diffusion image takes one pass per DDIM step, two with guidance)."""
    passes = 1
    if "steps" in run.model.sample_options:
        passes = int(opts.get("steps") or getattr(run.model.config, "sample_steps", 25))
        passes *= 2 if opts.get("guidance") else 1
    h, w = run.config.data.height, run.config.data.width
    return max(1, CHUNK_COST // (h * w * passes))


def sample_chunks(run: Any, z: torch.Tensor, opts: dict[str, Any]) -> Generator[None, None, torch.Tensor]:
    """The images of latents ``z`` (n, ...), one chunk per turn of the lane (yielding between
    chunks); the same images as one call (``artforge sample``) since each depends on its latent only."""
    n = int(z.shape[0])
    k = chunk_size(run, opts)
    parts: list[torch.Tensor] = []
    i = 0
    while i < n:
        yield
        t0 = time.perf_counter()
        parts.append(decode(run.model, z[i : i + k], **options_slice(opts, n, i, i + k)))
        i += k
        per_image = (time.perf_counter() - t0) / len(parts[-1])
        k = max(1, min(2 * k, int(TURN_S / max(per_image, 1e-6))))  # the next turn: about TURN_S
    return torch.cat(parts)


def generate(
    cache: ModelCache,
    run_path: Path,
    seeds: list[int] | None,
    seed: int,
    n: int,
    options: Options,
    upscale: Path | None = None,
) -> Generator[None, None, dict[str, Any]]:
    """PNGs (one per image), a grid and a zip of them: ``seeds`` gives one image per seed,
    else ``n`` images from ``seed`` (the images ``artforge sample`` writes for the same call).
    A sound run also gets a WAV per image (its spectrogram turned back into sound), in the zip
    too. ``upscale``: an upscaler run the images go through (the Create page's output size).
    Worked in chunks (a generator for Lane); files are written only when all are ready."""
    run = cache.get(run_path, upscale)
    opts = options.check(run)
    if seeds is not None:
        z = run.latent(seeds)
        names = seed_names(seeds)
    else:
        z = run.latents(n, seed)
        names = batch_names(seed, n)
    images = yield from sample_chunks(run, z, opts)
    waves = None
    if run.is_audio:
        chunk = []
        for i in range(0, len(images), 8):  # Griffin-Lim: a turn per 8 sounds
            yield
            chunk.append(run.to_audio(images[i : i + 8]))
        waves = torch.cat(chunk)
    out = new_output_dir(run_path, "sample")
    for img, name in zip(images, names, strict=True):
        save_image(img, out / name)
    save_image(make_grid(images), out / "grid.png")
    sounds = []
    if waves is not None:
        for wave, name in zip(waves, names, strict=True):
            sounds.append(Path(name).with_suffix(".wav").name)
            write_wav(wave, out / sounds[-1], run.sample_rate)
    with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_STORED) as zf:
        for name in [*sounds, *names]:
            zf.write(out / name, name)
    result: dict[str, Any] = {"folder": out, "images": names, "grid": "grid.png", "zip": "images.zip"}
    if waves is not None:
        result["sounds"] = sounds
        result["sample_rate"] = run.sample_rate
    return result


def interpolate(
    cache: ModelCache, run_path: Path, seeds: list[int], frames: int, fps: float, loop: bool, options: Options
) -> Generator[None, None, dict[str, Any]]:
    """An animated GIF walking through the latents of ``seeds`` (``artforge interpolate``),
    worked in chunks like ``generate``."""
    run = cache.get(run_path)
    opts = options.check(run)
    path = interpolation_path(run.latent(seeds), frames, loop)
    walk = yield from sample_chunks(run, path, opts)
    out = new_output_dir(run_path, "walk")
    save_animation(walk, out / "walk.gif", fps=fps)
    return {"folder": out, "gif": "walk.gif", "frames": int(walk.shape[0])}


class NoveltyData:
    """The metrics reference (Inception features, copy threshold) of each training data set,
    with its image names, kept for the next request."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict[str, tuple[Any, Reference]] = OrderedDict()

    def get(self, data_cfg: Any, device: torch.device) -> tuple[Any, Reference]:
        """(ImageSet, Reference) of a run's training data."""

        key = repr(data_cfg)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        path = data_cfg.path
        if not path.startswith("builtin") and not Path(path).expanduser().exists():
            raise Conflict(
                f"the training data {path!r} named in this run's config.json is not there any more, "
                "so there is nothing to compare with; restore it at that path to use the novelty view"
            )
        try:  # never a download from a web request: the network must be installed
            network = find_inception(allow_download=False)
        except FileNotFoundError as e:
            raise Conflict(f"the novelty view needs the FID network: {e}") from None
        data = load_images(data_cfg)
        if len(data) < 2:
            raise Conflict(f"the training data {path!r} has {len(data)} image(s); novelty needs at least 2")
        item = (data, Reference(data.images, device, inception=network))
        self._items[key] = item
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return item


def novelty(
    cache: ModelCache,
    store: NoveltyData,
    run_path: Path,
    seeds: list[int],
    k: int,
    options: Options,
) -> dict[str, Any]:
    """One image per seed beside its ``k`` nearest training images, by distance in the
    Inception feature space that ``artforge eval``'s copy rate uses. ``ratio`` is the distance
    over the copy threshold (the median nearest-neighbour distance among training images): below
    1 the image is closer to a training image than training images are to each other."""
    run = cache.get(run_path)
    opts = options.check(run)
    data, real = store.get(run.config.data, run.device)
    tau = real.threshold
    k = min(k, len(data))
    images = run.sample_seeds(seeds, **opts)
    dist, idx = real.nearest(real.features_of(images), k)
    out = new_output_dir(run_path, "novelty")
    rows = []
    for i, s in enumerate(seeds):
        name = f"seed{s:04d}.png"
        save_image(images[i], out / name)
        neighbours = []
        for j in range(k):
            t = int(idx[i, j])
            nn_name = f"seed{s:04d}-nn{j + 1}.png"
            save_image(data.images[t].float() / 255, out / nn_name)
            d = float(dist[i, j])
            neighbours.append(
                {"image": nn_name, "source": data.names[t], "distance": round(d, 3), "ratio": _ratio(d, tau)}
            )
        nearest = float(dist[i, 0])
        rows.append(
            {
                "seed": s,
                "image": name,
                "distance": round(nearest, 3),
                "ratio": _ratio(nearest, tau),
                "copy": nearest < tau,
                "neighbours": neighbours,
            }
        )
    return {"folder": out, "threshold": round(tau, 3), "n_train": len(data), "data": data.root, "rows": rows}


def not_made(
    cache: ModelCache,
    store: NoveltyData,
    run_path: Path,
    first_seed: int,
    n: int,
    rows: int,
    k: int,
    options: Options,
) -> dict[str, Any]:
    """The not-made view, the novelty view's counterpart: ``n`` images (seeds ``first_seed``
    on) are drawn, and the ``rows`` training images farthest from every one of them are shown,
    farthest first, each beside its ``k`` nearest generated images, as ``artforge eval``'s
    not-made sheet does with its n samples. ``ratio`` is the distance over the training image's
    own k-NN radius: above 1 the coverage metric counts it as not made. ``coverage`` is the
    share of all training images with a generated one inside that radius."""
    run = cache.get(run_path)
    opts = options.check(run)
    data, real = store.get(run.config.data, run.device)
    seeds = list(range(first_seed, first_seed + n))
    images = run.sample_seeds(seeds, **opts)
    fake_f = real.features_of(images)
    order, dist, ratio = real.not_made(fake_f, rows)
    k = min(k, n)
    nn_dist, nn_idx = nearest_neighbours(real.features[order], fake_f, k)
    out = new_output_dir(run_path, "notmade")
    listed = []
    for r, (t, d, q) in enumerate(zip(order.tolist(), dist.tolist(), ratio.tolist(), strict=True)):
        name = f"real{r + 1:02d}.png"
        save_image(data.images[t].float() / 255, out / name)
        made = []
        for j in range(k):
            g = int(nn_idx[r, j])
            g_name = f"real{r + 1:02d}-seed{seeds[g]:04d}.png"
            save_image(images[g], out / g_name)
            made.append({"image": g_name, "seed": seeds[g], "distance": round(float(nn_dist[r, j]), 3)})
        listed.append(
            {
                "image": name,
                "source": data.names[t],
                "distance": round(d, 3),
                "ratio": round(q, 3) if q != float("inf") else None,
                "made": q <= 1,
                "neighbours": made,
            }
        )
    coverage = float(real.covered(fake_f).mean())
    return {
        "folder": out,
        "n_generated": n,
        "n_train": len(data),
        "data": data.root,
        "coverage": round(coverage, 4),
        "rows": listed,
    }


def _ratio(d: float, tau: float) -> float | None:
    return round(d / tau, 3) if tau > 0 else None


# -- create: img2img and inpaint on an uploaded picture (docs/create.md) --------------------


def _zip_set(out: Path, names: list[str], grid: str) -> dict[str, Any]:
    """A zip of an img2img/inpaint set's images beside them; the answer naming the files."""
    images = names[:-1]  # the grid is the last name written
    with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_STORED) as zf:
        for name in images:
            zf.write(out / name, name)
    return {"folder": out, "images": images, "grid": grid, "zip": "images.zip"}


def upscale_file(cache: ModelCache, up_path: Path, image: Path, label: str) -> dict[str, Any]:
    """One picture of the studio's folder (a gallery or favourite image) enlarged by the
    upscaler run ``up_path``: UP/generated/studio/<time>-upscale-<id>/<name>.png. The picture
    is read with the training loader's checks (cascade.read_picture)."""
    up = cache.get(up_path)
    if not isinstance(up.model, Upscaler):
        raise Conflict(f"{up_path.name} is a {up.config.family} run, not an upscaler")
    big = upscale_images(up, image)
    out = new_output_dir(up_path, "upscale")
    name = f"{Path(label).stem}-x{up.model.config.factor}.png"
    save_image(big[0], out / name)
    return {"folder": out, "image": name, "size": [int(big.shape[3]), int(big.shape[2])]}


def create(
    cache: ModelCache,
    run_path: Path,
    kind: str,
    image: bytes,
    mask: bytes | str | None,
    strength: float,
    n: int,
    seed: int,
    options: Options,
) -> dict[str, Any]:
    """``kind`` "img2img" (n variations of ``image`` at ``strength``) or "inpaint" (n fills of
    ``mask``: the bytes of a mask picture or an "L,T,R,B" box) through api.Run, written under
    the names ``artforge img2img/inpaint`` gives them. One turn of the lane: create runs a
    projection or a DDIM loop as one call (the forward pre-hook still stops it at the next
    network call once cancelled)."""
    run = cache.get(run_path)
    if run.is_audio:
        raise Conflict(f"{run_path.name} is a sound run; img2img and inpaint take pictures")
    opts = options.check(run)
    extra = sorted(set(opts) - {"steps", "guidance", "prompt"})
    if extra:
        raise BadRequest(f"{kind} takes steps, guidance and prompt (diffusion), not {', '.join(extra)}")
    # the user's files: a bad one is a DataError (400) naming it
    picture = cr.load_image(image, run.config.data, name="the uploaded image")
    fill = None
    if kind == "inpaint" and isinstance(mask, str):
        fill = cr.box_mask(mask, run.config.data)
    elif kind == "inpaint":
        fill = cr.load_mask(mask or b"", run.config.data, name="the uploaded mask")
    if fill is None:
        images = run.img2img(picture, strength, n, seed=seed, **opts)
    else:
        images = run.inpaint(picture, fill, n, seed=seed, **opts)
    out = new_output_dir(run_path, kind)
    names = run.write_variations(
        images, out, picture, kind=kind, seed=seed, strength=strength if fill is None else None
    )
    return _zip_set(out, names, names[-1])


def project(
    cache: ModelCache, run_path: Path, image: bytes, steps: int, seed: int, options: Options
) -> dict[str, Any]:
    """The latent that reproduces an uploaded picture (``artforge project``'s files, written by
    api.Run.write_projection) in a fresh RUN/generated/studio/ folder."""
    run = cache.get(run_path)
    if run.config.family not in ("gan", "dcgan", "vae") or run.is_audio:
        raise Conflict(
            f"projection works for gan, dcgan and vae picture runs, not this {run.config.family} run"
        )
    opts = options.check(run)
    extra = sorted(set(opts) - {"prompt"})
    if extra:
        raise BadRequest(f"project takes a prompt (text runs), not {', '.join(extra)}")
    picture = cr.load_image(image, run.config.data, name="the uploaded image")  # a bad one: 400
    proj = run.project(picture, steps=steps, seed=seed, prompt=opts.get("prompt"))
    out = new_output_dir(run_path, "project")
    run.write_projection(proj, out, image="upload", steps=steps, seed=seed, run=run_path.name)
    return {
        "folder": out,
        "reconstruction": cr.RECONSTRUCTION_FILE,
        "target": cr.TARGET_FILE,
        "latent": cr.LATENT_FILE,
        "psnr": round(float(proj.psnr[0]), 3),
        "distance": round(float(proj.distance[0]), 6),
    }

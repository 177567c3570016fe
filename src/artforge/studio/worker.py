"""The generation queue: models are run on worker threads, never on the web server's loop.

Why a queue: a burst of requests (a user clicking fast, several tabs, 50 scripted calls) must
neither start 50 model loads at once nor hold 50 batches of images in memory. Each *lane* is
one thread with a bounded queue; a request waits for its turn (the server stays responsive
meanwhile) and a full queue answers 503 "busy" instead of growing without end. Generation and
interpolation share the fast lane; the novelty view has its own lane because its first call
on a data set computes Inception features of every training image (minutes on a CPU), which
must not hold up everybody's samples. Models are kept in a small LRU cache keyed by the
weights file's mtime, so a run that is still training is reloaded when it writes new weights.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .safety import BadRequest, Conflict, StudioError

log = logging.getLogger(__name__)

OUTPUT_DIR = "generated/studio"  # inside a run folder, beside the CLI's RUN/generated/


class Busy(StudioError):
    status = 503


class Lane:
    """One worker thread running submitted calls in order, with at most ``maxsize`` waiting."""

    def __init__(self, name: str, maxsize: int):
        self.name = name
        self._queue: queue.Queue[tuple[Future[Any], Callable[[], Any]] | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(target=self._loop, name=f"studio-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            self._queue.put_nowait((fut, fn))
        except queue.Full:
            raise Busy(
                f"the {self.name} queue is full ({self._queue.maxsize} waiting); try again shortly"
            ) from None
        return fut

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the waiting request
                fut.set_exception(e)

    def close(self) -> None:
        with contextlib.suppress(queue.Full):  # then it is a daemon thread that ends with the process
            self._queue.put_nowait(None)


class ModelCache:
    """The last ``size`` loaded runs, least recently used dropped first; thread-safe."""

    def __init__(self, size: int = 4, device: str = "auto"):
        self.size = size
        self.device = device
        self._items: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_path: Path) -> Any:
        from ..api import load

        weights = run_path / "model.safetensors"
        try:
            key = (str(run_path), weights.stat().st_mtime_ns)
        except OSError:
            raise Conflict(
                f"{run_path.name} has no model.safetensors yet: it has not saved weights"
            ) from None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        run = load(run_path, device=self.device)  # outside the lock: loads can be slow
        with self._lock:
            for k in [k for k in self._items if k[0] == key[0]]:
                del self._items[k]  # an older version of the same run's weights
            self._items[key] = run
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return run

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Options:
    """Checked sampling options for one run: the family's own (truncation / temperature / steps)
    and a text prompt, which only a text-conditioned run may take."""

    values: dict[str, Any]
    prompt: str | None = None

    def check(self, run: Any) -> dict[str, Any]:
        allowed = run.model.sample_options
        for k in self.values:
            if k not in allowed:
                raise BadRequest(
                    f"option {k!r} does not apply to {run.config.family} runs; "
                    + (f"it takes {list(allowed)}" if allowed else "it takes none")
                )
        if self.prompt:  # refused, never silently ignored, by runs trained without captions
            if not getattr(run.model, "conditional", False):
                raise BadRequest(
                    f"this {run.config.family} run is not text-conditioned (trained without captions): "
                    "it takes no prompt"
                )
            return {**self.values, "prompt": self.prompt}
        return dict(self.values)


def new_output_dir(run_path: Path, kind: str) -> Path:
    """A fresh folder RUN/generated/studio/<time>-<kind>-<id>/ for one request's files."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = run_path / OUTPUT_DIR / f"{stamp}-{kind}-{uuid.uuid4().hex[:6]}"
    out.mkdir(parents=True, exist_ok=False)
    return out


def generate(
    cache: ModelCache, run_path: Path, seeds: list[int] | None, seed: int, n: int, options: Options
) -> dict[str, Any]:
    """PNGs (one per image), a grid and a zip of them: ``seeds`` gives one image per seed,
    else ``n`` images from ``seed`` (the images ``artforge sample`` writes for the same call)."""
    from ..sample import make_grid, save_image

    run = cache.get(run_path)
    opts = options.check(run)
    if seeds is not None:
        images = run.sample_seeds(seeds, **opts)
        names = [f"seed{s:04d}.png" for s in seeds]
    else:
        images = run.sample(n, seed=seed, **opts)
        names = [f"seed{seed}-{k:04d}.png" for k in range(n)]
    out = new_output_dir(run_path, "sample")
    for img, name in zip(images, names, strict=True):
        save_image(img, out / name)
    save_image(make_grid(images), out / "grid.png")
    with zipfile.ZipFile(out / "images.zip", "w", zipfile.ZIP_STORED) as zf:
        for name in names:
            zf.write(out / name, name)
    return {"folder": out, "images": names, "grid": "grid.png", "zip": "images.zip"}


def interpolate(
    cache: ModelCache, run_path: Path, seeds: list[int], frames: int, fps: float, loop: bool, options: Options
) -> dict[str, Any]:
    """An animated GIF walking through the latents of ``seeds`` (``artforge interpolate``)."""
    from ..sample import save_animation

    run = cache.get(run_path)
    walk = run.interpolate(seeds, frames, loop=loop, **options.check(run))
    out = new_output_dir(run_path, "walk")
    save_animation(walk, out / "walk.gif", fps=fps)
    return {"folder": out, "gif": "walk.gif", "frames": int(walk.shape[0])}


class NoveltyData:
    """Training images and their Inception features per data set, kept for the next request."""

    def __init__(self, size: int = 2):
        self.size = size
        self._items: OrderedDict[str, tuple[Any, np.ndarray, float]] = OrderedDict()
        self.network: Path | None = None

    def get(self, data_cfg: Any, device: torch.device) -> tuple[Any, np.ndarray, float]:
        """(ImageSet, features, copy threshold) of a run's training data."""
        from ..data import load_images
        from ..metrics.cache import cached_features
        from ..metrics.inception import find_inception
        from ..metrics.novelty import copy_threshold

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
        try:
            self.network = network = find_inception(allow_download=False)
        except FileNotFoundError as e:
            raise Conflict(f"the novelty view needs the FID network: {e}") from None
        data = load_images(data_cfg)
        if len(data) < 2:
            raise Conflict(f"the training data {path!r} has {len(data)} image(s); novelty needs at least 2")
        feats = cached_features(data.images, 50, inception_path=network, device=device)
        item = (data, feats, copy_threshold(feats))
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
    from ..metrics.inception import features
    from ..metrics.precision_recall import nearest_neighbours
    from ..sample import save_image

    run = cache.get(run_path)
    opts = options.check(run)
    data, real_f, tau = store.get(run.config.data, run.device)
    k = min(k, len(data))
    images = run.sample_seeds(seeds, **opts)
    fake_f = features(images, 50, inception=store.network, device=run.device)
    dist, idx = nearest_neighbours(fake_f, real_f, k)
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


def _ratio(d: float, tau: float) -> float | None:
    return round(d / tau, 3) if tau > 0 else None

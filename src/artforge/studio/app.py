"""The studio's web application (Starlette): JSON endpoints, the run folder's files, the page.

Endpoints (docs/studio.md describes them with examples):

    GET  /                          the page (static/index.html; JS and CSS under /static/)
    GET  /api/info                  RUNS_DIR, limits, model families, queue lengths
    GET  /api/settings              the forms' fields: training settings, sizes, sample options
    GET  /api/runs                  every run's summary (gallery cards)
    GET  /api/runs/{run}            one run: summary, config, grids, data report, evals
    GET  /api/live/{run}?since=N    metrics rows after the first N, progress, newest grid
    POST /api/generate              images from seed(s) -> PNG URLs, a grid and a zip
    POST /api/interpolate           an animated GIF through seeds
    POST /api/novelty               generated images beside their nearest training images
    POST /api/notmade               the training images farthest from n generated ones
    GET  /api/jobs                  training jobs started from the page
    POST /api/jobs                  start one (python -m artforge train ...)
    GET  /api/jobs/{id}             one job with its log tail
    POST /api/jobs/{id}/stop        SIGINT: checkpoint and stop
    GET  /files/{path}              a file inside RUNS_DIR, nothing outside it

Every error is JSON ``{"error": message}`` with a 4xx status (5xx only for a real fault, and
then without a traceback). POST bodies must be ``application/json``: a browser cannot send
that cross-site without a preflight the studio never grants, so another web page cannot drive
a studio on localhost. Requests naming another host than the one served are refused
(DNS rebinding).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..config import Range
from ..errors import Conflict, UserError, http_status
from ..runfolder import CASCADE_KIND, CONFIG_NAME
from . import favourites, gallery, jobs, safety, worker
from .jobs import JobManager
from .safety import BadRequest, StudioError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
MAX_BODY = 64 * 1024  # bytes of a JSON request body
MAX_UPLOAD = 4 * 2**20  # bytes of one uploaded picture (img2img / inpaint), once decoded
MAX_UPLOAD_BODY = 2 * (2 * MAX_UPLOAD * 4 // 3) + MAX_BODY  # an image and a mask in base64, and the rest


class HostCheck:
    """Refuse requests whose Host header is not the served one (a DNS-rebinding page would send
    its own name). When the studio is bound to another interface on purpose, any host is let in."""

    def __init__(self, app: ASGIApp, allowed: set[str] | None):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.allowed is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            name = name.strip("[]").lower()
            if name not in self.allowed:
                response = JSONResponse({"error": f"host {host!r} is not served here"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Studio:
    """The state behind the routes: RUNS_DIR, the worker lanes, the model cache and the jobs."""

    def __init__(
        self,
        root: Path,
        *,
        max_models: int = 4,
        queue_size: int = 128,
        device: str = "auto",
        data_roots: list[Path] | None = None,
        max_jobs: int | None = None,
    ):
        self.root = root.resolve()
        self.models = worker.ModelCache(max_models, device)
        self.fast = worker.Lane("generation", queue_size)
        self.slow = worker.Lane("novelty", max(4, queue_size // 8))
        self.novelty_data = worker.NoveltyData()
        self.jobs = JobManager(self.root, data_roots=data_roots, max_running=max_jobs)

    def close(self) -> None:
        self.fast.close()
        self.slow.close()
        self.jobs.close()

    def output_urls(self, result: dict[str, Any], *keys: str) -> dict[str, Any]:
        """Turn a worker result's file names into /files URLs under its output folder."""
        folder: Path = result.pop("folder")
        base = "/files/" + quote(folder.relative_to(self.root).as_posix()) + "/"
        out = dict(result)
        out["folder"] = folder.relative_to(self.root).as_posix()
        for k in keys:
            v = result[k]
            out[k] = [base + quote(x) for x in v] if isinstance(v, list) else base + quote(v)
        return out


# -- request helpers ------------------------------------------------------------------------


async def json_body(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The request's JSON object; 415 for another content type, 400 for malformed JSON."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise StudioError("send the request body as application/json", 415)
    raw = await request.body()
    if len(raw) > limit:
        raise StudioError(f"request body over {limit} bytes", 413)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object")
    return body


def option_ranges() -> dict[str, Range]:
    """The numeric sample options of every family, by name, with the ranges the models declare
    (``option_ranges``); an option without a fixed upper end (diffusion's steps, at most the
    run's timesteps) is capped at what one request may cost."""
    from ..models import MODELS

    out: dict[str, Range] = {}
    for cls in MODELS.values():
        for name, r in cls.option_ranges.items():
            out[name] = r if r.hi is not None else dataclasses.replace(r, hi=safety.MAX_SAMPLE_STEPS)
    return out


def sample_options(body: dict[str, Any]) -> worker.Options:
    """The family options present in a request, each in its model's range; a prompt for text
    conditioning."""
    values: dict[str, Any] = {}
    for name, r in option_ranges().items():
        if body.get(name) is None:
            continue
        assert r.hi is not None
        if r.integer:
            values[name] = safety.get_int(body, name, None, int(r.lo), int(r.hi))
        else:
            values[name] = safety.get_float(body, name, None, float(r.lo), float(r.hi), open_lo=r.open_lo)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise BadRequest("prompt must be text")
    if prompt is not None and len(prompt) > 500:
        raise BadRequest("prompt must be at most 500 characters")
    return worker.Options(values, prompt.strip() or None if prompt else None)


def run_size(run_path: Path) -> tuple[int, int]:
    """(height, width) from a run's config.json, to size a request before any work."""
    cfg = gallery.read_json(run_path / CONFIG_NAME) or {}
    data = cfg if cfg.get("kind") == CASCADE_KIND else (cfg.get("data") or {})  # a cascade: its final size
    h, w = data.get("height"), data.get("width")
    if not isinstance(h, int) or not isinstance(w, int):
        raise Conflict("this run's config.json has no image size")
    return h, w


DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there


async def run_in(request: Request, lane: worker.Lane, fn: Any) -> Any:
    """Run ``fn`` on ``lane`` and wait for it; if the client goes away meanwhile (a closed tab,
    a timed-out script), cancel the work so it frees the worker for the requests still waiting."""
    future = lane.submit(fn)
    waiter = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiter.result()
        if await request.is_disconnected():
            lane.cancel(future)
            log.info("%s %s: client went away, request cancelled", request.method, request.url.path)
            raise worker.Cancelled("cancelled: the client went away")


# -- routes ---------------------------------------------------------------------------------


def studio(request: Request) -> Studio:
    return request.app.state.studio  # type: ignore[no-any-return]


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def info(request: Request) -> Response:
    from ..models import list_models

    s = studio(request)
    return JSONResponse(
        {
            "version": __version__,
            "runs_dir": str(s.root),
            "models": list_models(),
            "limits": {
                "count": safety.MAX_COUNT,
                "seeds": safety.MAX_SEEDS,
                "frames": safety.MAX_FRAMES,
                "pixels": safety.MAX_PIXELS,
                "novelty": safety.MAX_NOVELTY,
                "neighbours": safety.MAX_NEIGHBOURS,
                "not_made_samples": safety.MAX_NOT_MADE_SAMPLES,
                "not_made_rows": safety.MAX_NOT_MADE_ROWS,
                "create": safety.MAX_CREATE,
                "upload_bytes": MAX_UPLOAD,
            },
            # requests accepted and not answered yet (waiting or being worked on), and of those
            # the ones started: the generation lane works on several in turn (worker.Lane)
            "queue": {"generation": s.fast.pending, "novelty": s.slow.pending},
            "running": {"generation": s.fast.running, "novelty": s.slow.running},
            "jobs": {"max_running": s.jobs.max_running, "data_roots": [str(p) for p in s.jobs.data_roots]},
            "models_cached": len(s.models),
        }
    )


async def settings(request: Request) -> Response:
    """What the page's forms may send, from the one declaration of each: the training form's
    settings (config.settings() with studio=...), the image size, and the sample options'
    ranges (the models' option_ranges)."""
    from ..models import list_models

    train = {
        s.key: {
            "path": s.path,
            "flag": s.flag,
            "type": "choice" if s.choices else s.type.__name__,
            "choices": list(s.choices) if s.choices else None,
            "help": s.help,
            **(s.studio.to_dict() if isinstance(s.studio, Range) else {}),
        }
        for s in jobs.FORM.values()
    }
    return JSONResponse(
        {
            "models": list_models(),
            "train": train,
            "size": jobs.SIZE.to_dict(),
            "sample": {name: r.to_dict() for name, r in option_ranges().items()},
        }
    )


async def list_runs(request: Request) -> Response:
    s = studio(request)
    jobs = s.jobs.run_states()
    return JSONResponse({"runs": [gallery.summary(s.root, r, jobs) for r in gallery.find_runs(s.root)]})


async def run_detail(request: Request) -> Response:
    s = studio(request)
    path = safety.run_dir(s.root, request.path_params["run"])
    run_id = path.relative_to(s.root).as_posix()
    return JSONResponse(gallery.detail(s.root, run_id, s.jobs.run_states()))


async def run_live(request: Request) -> Response:
    s = studio(request)
    path = safety.run_dir(s.root, request.path_params["run"])
    since = safety.get_int(dict(request.query_params), "since", 0, 0, 10**9)
    run_id = path.relative_to(s.root).as_posix()
    return JSONResponse(gallery.live(s.root, run_id, since or 0, s.jobs.run_states()))


async def run_request(request: Request, limit: int = MAX_BODY) -> tuple[Studio, dict[str, Any], Path]:
    """The studio, the request's JSON body and the run folder it names (inside RUNS_DIR)."""
    s = studio(request)
    body = await json_body(request, limit)
    return s, body, safety.run_dir(s.root, body.get("run"))


def upscaler_of(s: Studio, body: dict[str, Any], path: Path) -> Path | None:
    """The upscaler run a request names as ``upscale`` (the Create page's output size), None
    when it names none; one whose input size is not the run's size is refused by name."""
    ref = body.get("upscale")
    if ref in (None, ""):
        return None
    up = safety.run_dir(s.root, ref)
    cfg = gallery.read_json(up / CONFIG_NAME) or {}
    info = gallery.upscaler_sizes(cfg)
    if info is None:
        raise Conflict(f"{ref} is not an upscaler run")
    h, w = run_size(path)
    if info["from"] != [w, h]:
        raise Conflict(
            f"{ref} enlarges {info['from'][0]}x{info['from'][1]} pictures, and this run makes {w}x{h}"
        )
    return up


async def generate(request: Request) -> Response:
    s, body, path = await run_request(request)
    up = upscaler_of(s, body, path)
    h, w = run_size(up if up is not None else path)
    options = sample_options(body)
    seeds = safety.seed_list(body["seeds"]) if body.get("seeds") not in (None, "", []) else None
    seed = safety.get_int(body, "seed", 0, 0, safety.MAX_SEED)
    n = len(seeds) if seeds is not None else safety.get_int(body, "n", 16, 1, safety.MAX_COUNT)
    safety.check_pixels(n, h, w)  # type: ignore[arg-type]
    result = await run_in(
        request,
        s.fast,
        lambda: worker.generate(s.models, path, seeds, seed, n, options, up),  # type: ignore[arg-type]
    )
    keys = ("images", "grid", "zip", *(("sounds",) if "sounds" in result else ()))
    return JSONResponse(s.output_urls(result, *keys))


async def interpolate(request: Request) -> Response:
    s, body, path = await run_request(request)
    h, w = run_size(path)
    options = sample_options(body)
    seeds = safety.seed_list(body.get("seeds", "1,2,3"), limit=16)
    if len(seeds) < 2:
        raise BadRequest("an interpolation needs at least two seeds")
    frames = safety.get_int(body, "frames", 30, 2, safety.MAX_FRAMES)
    fps = safety.get_float(body, "fps", 12.0, 1.0, 50.0)
    loop = safety.get_bool(body, "loop", True)
    safety.check_pixels(frames, h, w, "frames")  # type: ignore[arg-type]
    result = await run_in(
        request,
        s.fast,
        lambda: worker.interpolate(s.models, path, seeds, frames, fps, loop, options),  # type: ignore[arg-type]
    )
    return JSONResponse(s.output_urls(result, "gif"))


def upload(body: dict[str, Any], key: str, what: str) -> bytes:
    """The bytes of a picture sent as base64 (a data: URL or bare), bounded by MAX_UPLOAD."""
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key}: send {what} as base64 text (a data: URL)")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    if len(value) > MAX_UPLOAD * 4 // 3 + 4:
        raise StudioError(f"{what} is over {MAX_UPLOAD // 2**20} MiB", 413)
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise BadRequest(f"{what}: not valid base64") from None


async def create_images(request: Request, kind: str) -> Response:
    """img2img / inpaint: an uploaded picture through the run's model on the generation lane."""
    s, body, path = await run_request(request, MAX_UPLOAD_BODY)
    cfg = gallery.read_json(path / CONFIG_NAME) or {}
    if gallery.modality(cfg) == "audio":
        raise Conflict(f"{path.name} is a sound run; {kind} takes pictures")
    h, w = run_size(path)
    options = sample_options(body)
    n = safety.get_int(body, "n", 4, 1, safety.MAX_CREATE)
    seed = safety.get_int(body, "seed", 0, 0, safety.MAX_SEED)
    strength = safety.get_float(body, "strength", 0.5, 0.0, 1.0) if kind == "img2img" else 0.0
    safety.check_pixels(n, h, w)  # type: ignore[arg-type]
    image = upload(body, "image", "the uploaded image")
    mask: bytes | str | None = None
    if kind == "inpaint":
        if body.get("box") not in (None, ""):
            if not isinstance(body["box"], str):
                raise BadRequest('box must be text "L,T,R,B" (fractions)')
            mask = body["box"]
        else:
            mask = upload(body, "mask", "the uploaded mask")
    result = await run_in(
        request,
        s.fast,
        lambda: worker.create(s.models, path, kind, image, mask, strength, n, seed, options),  # type: ignore[arg-type]
    )
    return JSONResponse(s.output_urls(result, "images", "grid", "zip"))


async def project(request: Request) -> Response:
    """The latent of an uploaded picture (GAN, DCGAN, VAE), on the generation lane."""
    s, body, path = await run_request(request, MAX_UPLOAD_BODY)
    cfg = gallery.read_json(path / CONFIG_NAME) or {}
    if gallery.modality(cfg) == "audio" or cfg.get("family") not in ("gan", "dcgan", "vae"):
        raise Conflict(
            f"projection works for gan, dcgan and vae picture runs, not this {cfg.get('family', '?')} "
            f"{gallery.modality(cfg)} run; img2img varies a picture with any family"
        )
    steps = safety.get_int(body, "steps", 200, 0, safety.MAX_PROJECT_STEPS)  # optimiser steps, not DDIM's
    options = sample_options({k: v for k, v in body.items() if k != "steps"})
    seed = safety.get_int(body, "seed", 0, 0, safety.MAX_SEED)
    image = upload(body, "image", "the uploaded image")
    result = await run_in(
        request,
        s.fast,
        lambda: worker.project(s.models, path, image, steps, seed, options),  # type: ignore[arg-type]
    )
    return JSONResponse(s.output_urls(result, "reconstruction", "target", "latent"))


async def upscale(request: Request) -> Response:
    """A picture of the studio's folder (``image``: its /files/ URL, as the page shows it)
    enlarged by the upscaler run ``run``; the result is written under that run."""
    s, body, path = await run_request(request)
    url = body.get("image")
    if not isinstance(url, str) or not url.startswith("/files/"):
        raise BadRequest("image: send the /files/... URL of a picture in the studio's folder")
    rel = unquote(url.removeprefix("/files/").partition("?")[0])
    image = safety.file_inside(s.root, rel)
    info = gallery.upscaler_sizes(gallery.read_json(path / CONFIG_NAME) or {})
    if info is None:
        raise Conflict(f"{body.get('run')} is not an upscaler run")
    safety.check_pixels(1, info["to"][1], info["to"][0])
    result = await run_in(request, s.fast, lambda: worker.upscale_file(s.models, path, image, image.name))
    return JSONResponse(s.output_urls(result, "image"))


async def img2img(request: Request) -> Response:
    return await create_images(request, "img2img")


async def inpaint(request: Request) -> Response:
    return await create_images(request, "inpaint")


SEEDS_PER_PAGE = 24  # the seed browser's page


async def seed_page(request: Request) -> Response:
    """One page of the seed browser: seeds page*24 .. page*24+23, one image each (generate's
    per-seed mode), and which of them are starred."""
    s, body, path = await run_request(request)
    h, w = run_size(path)
    options = sample_options(body)
    page = safety.get_int(body, "page", 0, 0, safety.MAX_SEED // SEEDS_PER_PAGE)
    seeds = list(range(page * SEEDS_PER_PAGE, (page + 1) * SEEDS_PER_PAGE))  # type: ignore[operator]
    safety.check_pixels(len(seeds), h, w)  # type: ignore[arg-type]
    starred = {x["seed"] for x in favourites.read(path)}  # a broken file says so before any work
    result = await run_in(
        request,
        s.fast,
        lambda: worker.generate(s.models, path, seeds, 0, len(seeds), options),  # type: ignore[arg-type]
    )
    keys = ("images", "grid", "zip", *(("sounds",) if "sounds" in result else ()))
    out = s.output_urls(result, *keys)
    out.update(page=page, seeds=seeds, starred=[x for x in seeds if x in starred])
    return JSONResponse(out)


async def get_favourites(request: Request) -> Response:
    s = studio(request)
    path = safety.run_dir(s.root, request.query_params.get("run"))
    return JSONResponse({"run": path.relative_to(s.root).as_posix(), "favourites": favourites.read(path)})


async def set_favourite(request: Request) -> Response:
    """Star (``"star": true``, the default) or unstar one seed of a run."""
    s, body, path = await run_request(request)
    if body.get("seed") is None:
        raise BadRequest("seed is required")
    seed = safety.get_int(body, "seed", None, 0, safety.MAX_SEED)
    items = favourites.star(path, seed, safety.get_bool(body, "star", True))  # type: ignore[arg-type]
    return JSONResponse({"run": path.relative_to(s.root).as_posix(), "favourites": items})


def picture_run(path: Path, view: str) -> None:
    """The novelty and not-made views compare pictures: a sound run is refused by name."""
    if gallery.modality(gallery.read_json(path / CONFIG_NAME) or {}) == "audio":
        raise Conflict(
            f"the {view} view compares pictures by the FID network's features; a sound run has none "
            "(artforge eval RUN measures a sound run: docs/audio.md)"
        )


def neighbour_rows(s: Any, result: dict[str, Any]) -> JSONResponse:
    """A novelty / not-made result with each row's image and its neighbours' as /files/ URLs."""
    base = s.output_urls(result)
    prefix = "/files/" + quote(base["folder"]) + "/"
    for row in base["rows"]:
        row["image"] = prefix + quote(row["image"])
        for nb in row["neighbours"]:
            nb["image"] = prefix + quote(nb["image"])
    return JSONResponse(base)


async def novelty(request: Request) -> Response:
    s, body, path = await run_request(request)
    h, w = run_size(path)
    options = sample_options(body)
    picture_run(path, "novelty")
    seeds = safety.seed_list(body.get("seeds", "0-3"), limit=safety.MAX_NOVELTY)
    k = safety.get_int(body, "k", 3, 1, safety.MAX_NEIGHBOURS)
    safety.check_pixels(len(seeds) * (1 + k), h, w)  # type: ignore[operator]
    result = await run_in(
        request,
        s.slow,
        lambda: worker.novelty(s.models, s.novelty_data, path, seeds, k, options),  # type: ignore[arg-type]
    )
    return neighbour_rows(s, result)


async def not_made(request: Request) -> Response:
    s, body, path = await run_request(request)
    h, w = run_size(path)
    options = sample_options(body)
    picture_run(path, "not-made")
    first = safety.get_int(body, "seed", 0, 0, safety.MAX_SEED - safety.MAX_NOT_MADE_SAMPLES)
    n = safety.get_int(body, "samples", 256, 2, safety.MAX_NOT_MADE_SAMPLES)
    rows = safety.get_int(body, "rows", 8, 1, safety.MAX_NOT_MADE_ROWS)
    k = safety.get_int(body, "k", 3, 1, safety.MAX_NEIGHBOURS)
    safety.check_pixels(n + rows * (1 + k), h, w)  # type: ignore[operator]
    result = await run_in(
        request,
        s.slow,
        lambda: worker.not_made(s.models, s.novelty_data, path, first, n, rows, k, options),  # type: ignore[arg-type]
    )
    return neighbour_rows(s, result)


async def list_jobs(request: Request) -> Response:
    return JSONResponse({"jobs": studio(request).jobs.list()})


async def start_job(request: Request) -> Response:
    s = studio(request)
    body = await json_body(request)
    job = s.jobs.start(body)
    return JSONResponse(s.jobs.describe(job), status_code=201)


async def get_job(request: Request) -> Response:
    return JSONResponse(studio(request).jobs.get(request.path_params["job"]))


async def stop_job(request: Request) -> Response:
    s = studio(request)
    job = s.jobs.stop(request.path_params["job"])
    return JSONResponse(s.jobs.describe(job))


async def files(request: Request) -> Response:
    s = studio(request)
    path = safety.file_inside(s.root, request.path_params["path"])
    return FileResponse(path, headers={"Cache-Control": "no-cache"})


# -- errors ---------------------------------------------------------------------------------


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def user_error(request: Request, exc: Exception) -> Response:
    """The user's mistake (errors.is_user_error: a UserError, or an OSError for a file the
    request named): its own status (400, 404, 409...) with the message, as the command line
    prints it."""
    return JSONResponse({"error": str(exc)}, status_code=http_status(exc))


async def server_error(request: Request, exc: Exception) -> Response:
    """Anything else is a bug (an InternalError, a library's ValueError, a KeyError...): logged
    with its traceback, answered 500 without one."""
    log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse(
        json.dumps({"error": f"internal error ({type(exc).__name__}); see the studio's log"}),
        status_code=500,
        media_type="application/json",
    )


# -- the app --------------------------------------------------------------------------------


def create_app(
    runs_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    max_models: int = 4,
    queue_size: int = 128,
    device: str = "auto",
    data_roots: list[str | Path] | None = None,
    max_jobs: int | None = None,
) -> Starlette:
    """The studio for ``runs_dir``; ``host`` is the address served (for the Host check).
    Training jobs read data only under ``runs_dir`` and ``data_roots``; at most ``max_jobs``
    train at once (default: one per GPU, one on a machine without)."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no such folder")
    roots = []
    for d in data_roots or []:
        if not Path(d).expanduser().is_dir():
            raise FileNotFoundError(f"--data-root {d}: no such folder")
        roots.append(Path(d).expanduser().resolve())
    state = Studio(
        root, max_models=max_models, queue_size=queue_size, device=device, data_roots=roots, max_jobs=max_jobs
    )

    @asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        yield
        state.close()

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/settings", settings),
        Route("/api/runs", list_runs),
        Route("/api/runs/{run:path}", run_detail),
        Route("/api/live/{run:path}", run_live),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/interpolate", interpolate, methods=["POST"]),
        Route("/api/novelty", novelty, methods=["POST"]),
        Route("/api/notmade", not_made, methods=["POST"]),
        Route("/api/img2img", img2img, methods=["POST"]),
        Route("/api/upscale", upscale, methods=["POST"]),
        Route("/api/project", project, methods=["POST"]),
        Route("/api/seeds", seed_page, methods=["POST"]),
        Route("/api/favourites", get_favourites),
        Route("/api/favourites", set_favourite, methods=["POST"]),
        Route("/api/inpaint", inpaint, methods=["POST"]),
        Route("/api/jobs", list_jobs),
        Route("/api/jobs", start_job, methods=["POST"]),
        Route("/api/jobs/{job}", get_job),
        Route("/api/jobs/{job}/stop", stop_job, methods=["POST"]),
        Route("/files/{path:path}", files),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {
        HTTPException: http_error,
        UserError: user_error,  # errors.py's rule, the command line's: a user error...
        OSError: user_error,
        Exception: server_error,  # ...or a bug
    }
    allowed = LOOPBACK | {host} if is_loopback(host) else None
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,  # type: ignore[arg-type]
        lifespan=lifespan,
        middleware=[Middleware(HostCheck, allowed=allowed)],
    )
    app.state.studio = state
    return app


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def serve(app: Starlette, sock: Any) -> None:
    """Serve ``app`` on an already bound socket until Ctrl-C (uvicorn, quiet: the CLI prints)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])

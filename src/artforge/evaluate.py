"""Evaluation glue: a run or a folder of images against real data, the in-training monitor and
the snapshot table.

``evaluate_run`` samples n images from a run (the images ``artforge sample -n N --seed S``
writes) and ``evaluate_folders`` reads any folder of images; both load images through
``artforge.data.load_images`` (the training loader, with its checks and skip reasons) at one
size that comes from the run or the real data, measure them against a ``metrics.Reference``
of the real images (Inception features cached by content hash) and return the metrics of
``artforge.metrics.evaluate``. ``training_hooks`` builds the Trainer hooks a run's settings
ask for: the monitor (``make_monitor_hook``, a cheap check every N steps) and weight
snapshots; ``evaluate_snapshots`` scores the snapshots.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .cascade import load_run as load_any_run
from .config import DataConfig, Fit, TrainConfig
from .data import image_sizes, load_images
from .data.captions import CaptionMode, groups_if_any, read_captions
from .device import resolve_device
from .errors import ConfigError, Conflict, DataError, InternalError, NotFound
from .faithfulness import prompt_faithfulness
from .io import write_json, write_text
from .metrics import PR_K
from .metrics.fid import fid_from_features
from .metrics.inception import INCEPTION_SHA1
from .metrics.novelty import not_made_sheet, novelty_sheet
from .metrics.precision_recall import nearest_neighbours
from .metrics.reference import Reference
from .runfolder import (
    CONFIG_NAME,
    PLOTS,
    SNAPSHOT_DIR,
    TABLE_NAME,
    TABLE_REPORT,
    WEIGHTS_NAME,
    eval_name,
    novelty_name,
)
from .runs import load_run, read_config, split_ref
from .sample import check_options, generate, latents_for_seed, options_slice
from .snapshots import (
    finite_weights,
    list_snapshots,
    make_snapshot_hook,
    read_best,
    save_best,
    weights_meta,
)
from .training import Trainer
from .training.logbook import read_jsonl, save_figure

log = logging.getLogger(__name__)
Hook = Callable[[Trainer, int], None]

MONITOR_SEED = 4321  # latents of the monitor's samples: the same images at every check
SHEET_NEIGHBOURS = 3
NOT_MADE_ROWS = 16  # real images on the not-made sheet and in the JSON's "not_made" list
# eval --fake reads the real images at their most common size, at most this a side: Inception
# sees 299 x 299, and N images at a 4000-pixel photo's size would not fit in memory
MAX_AUTO_SIDE = 512
SIZE_PROBE = 256  # real images whose headers decide that size


def _to_data_config(data: DataConfig | str | os.PathLike[str], like: DataConfig) -> DataConfig:
    """A DataConfig as given, or ``like`` (size, fit, background) pointed at a path."""
    if isinstance(data, DataConfig):
        if (data.height, data.width) != (like.height, like.width):
            log.warning(
                "real data at %dx%d but generated images are %dx%d; the metrics compare them all at 299x299",
                data.width,
                data.height,
                like.width,
                like.height,
            )
        return data
    return dataclasses.replace(like, path=str(data))


def _finish(
    real: Reference,
    fake_u8: torch.Tensor,
    fake_f: Any,
    seed: int,
    sheet: str | os.PathLike[str] | None,
    names: list[str] | None = None,
    groups: list[str | None] | None = None,
) -> dict[str, Any]:
    result = real.metrics(fake_f, seed)
    result["not_made"] = not_made_list(real, fake_f, names)
    if groups is not None:
        result["coverage_by_group"] = coverage_by_group(real, fake_f, groups)
    if sheet is not None:
        dist, idx = real.nearest(fake_f, SHEET_NEIGHBOURS)
        result["sheet"] = str(novelty_sheet(fake_u8, real.images, idx, dist, real.threshold, sheet))
        result["not_made_sheet"] = str(write_not_made_sheet(real, fake_u8, fake_f, not_made_path(sheet)))
    result["seed"] = seed
    result["size"] = [int(fake_u8.shape[3]), int(fake_u8.shape[2])]  # width, height
    result["inception_sha1"] = INCEPTION_SHA1
    result["caveats"] = caveats(result["n_fake"], result["n_real"])
    return result


def coverage_by_group(real: Reference, fake_f: Any, groups: list[str | None]) -> dict[str, dict[str, Any]]:
    """{group: {"n": real images in it, "coverage": the share of them with a generated image
    within their k-NN radius}} for the real images' groups (None: no group), largest first."""
    if len(groups) != len(real):
        raise InternalError(f"{len(groups)} groups for {len(real)} real images")
    hit = real.covered(fake_f)
    out: dict[str, list[bool]] = {}
    for g, h in zip(groups, hit.tolist(), strict=True):
        if g is not None:
            out.setdefault(g, []).append(h)
    ordered = sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {g: {"n": len(v), "coverage": round(sum(v) / len(v), 4)} for g, v in ordered}


def not_made_path(sheet: str | os.PathLike[str]) -> Path:
    """Where the not-made sheet goes beside a novelty sheet: "novelty" in the file name becomes
    "notmade" (RUN/novelty.png -> RUN/notmade.png), else "-notmade" is added to the stem."""
    p = Path(sheet)
    name = p.name.replace("novelty", "notmade") if "novelty" in p.name else f"{p.stem}-notmade{p.suffix}"
    return p.with_name(name)


def not_made_list(real: Reference, fake_f: Any, names: list[str] | None = None) -> list[dict[str, Any]]:
    """The NOT_MADE_ROWS real images farthest from every generated image, farthest first:
    {"index" (in the real set), "file" (its name, when known), "distance" (to the nearest
    generated image, in Inception features), "radius_ratio" (that distance over the real
    image's own 3-NN radius: above 1, coverage counts it as not made)}."""
    order, dist, ratio = real.not_made(fake_f, NOT_MADE_ROWS)
    return [
        {
            "index": int(i),
            **({"file": names[i]} if names is not None and i < len(names) else {}),
            "distance": round(float(d), 4),
            "radius_ratio": round(float(r), 4),
        }
        for i, d, r in zip(order, dist, ratio, strict=True)
    ]


def write_not_made_sheet(
    real: Reference, fake_u8: torch.Tensor, fake_f: Any, path: str | os.PathLike[str]
) -> Path:
    """The not-made sheet (metrics.novelty.not_made_sheet): the NOT_MADE_ROWS real images
    farthest from every generated image, each beside its nearest generated images."""
    order, _, ratio = real.not_made(fake_f, NOT_MADE_ROWS)
    _, idx = nearest_neighbours(real.features[order], fake_f, min(SHEET_NEIGHBOURS, len(fake_f)))
    return not_made_sheet(real.images, fake_u8, order, ratio, idx, path)


def eval_table(r: dict[str, Any]) -> list[str]:
    """The lines of ``artforge eval``'s printed table for a result of ``evaluate_run`` or
    ``evaluate_folders``: each figure with a one-line meaning, the faithfulness of both judges
    (when measured), the farthest not-made image and the caveats. Older results without a key
    (density, coverage, not_made, judges) print without that row."""
    rows = [
        ("FID", f"{r['fid']:.3f}", "lower is better"),
        ("KID", f"{r['kid']:.5f} +- {r['kid_std']:.5f}", "lower is better; unbiased"),
        ("precision", f"{r['precision']:.3f}", "share of generated images that look real"),
        ("recall", f"{r['recall']:.3f}", "share of the collection's variety the model makes"),
    ]
    if "density" in r:
        rows += [
            ("density", f"{r['density']:.3f}", "~1 = samples as real as the data; outliers do not raise it"),
            ("coverage", f"{r['coverage']:.3f}", "share of real images with a generated one near them"),
        ]
    rows += [
        ("diversity", f"{r['diversity']:.3f}", "1 = as varied as the real data; a drop = mode collapse"),
        ("copy rate", f"{r['copy_rate']:.3f}", "held-out real images score ~0.5; copies 1.0"),
        ("images", f"{r['n_fake']} generated, {r['n_real']} real", ""),
    ]
    if r.get("not_made"):
        far = r["not_made"][0]
        rows.append(
            (
                "not made",
                str(far.get("file", f"real image {far['index']}")),
                f"farthest real image from every sample ({far['radius_ratio']:.2f} x its k-NN radius)",
            )
        )
    if "faithfulness" in r:
        f = r["faithfulness"]
        judges = f.get("judges") or {"cnn": f}
        who = {"cnn": "the small CNN", "inception_probe": "a probe on FID features"}
        for name, j in judges.items():
            rows.append(
                (
                    "prompts",
                    f"{j['generated_balanced_accuracy']:.3f} / {j['real_balanced_accuracy']:.3f} "
                    f"= {j['ratio']}",
                    f"{f['label_key']} balanced accuracy by {who.get(name, name)}: generated / real held-out",
                )
            )
            if "generated_accuracy" in j:
                rows.append(
                    ("", f"{j['generated_accuracy']:.3f} / {j['real_accuracy']:.3f}", "plain accuracy")
                )
            if j.get("never_drawn"):
                rows.append(
                    (
                        "never made",
                        ", ".join(j["never_drawn"]),
                        "groups whose prompted images never land in them",
                    )
                )
    lines = [f"  {name:<10} {value:<22} {note}".rstrip() for name, value, note in rows]
    return lines + [f"  note: {caveat}" for caveat in r.get("caveats", [])]


FID_MIN_N = 2000  # below this FID's upward bias dominates differences between models
KID_MIN_N = 500  # below this KID's spread across subsets is as large as typical gaps


def caveats(n_fake: int, n_real: int) -> list[str]:
    """Why a score of this evaluation should not be read alone (empty when nothing to say).

    FID is biased upward at small n (the covariance of 2048 features is estimated from n
    images), so a FID at n=60 is far above the same model's FID at n=5000 and is comparable
    only with FIDs at the same n. KID is unbiased but noisy at small n: read it with kid_std.
    """
    n = min(n_fake, n_real)
    out = []
    if n < FID_MIN_N:
        out.append(
            f"small sample: FID at n={n} (< {FID_MIN_N}) is biased upward and comparable only with "
            f"FIDs at the same n; use -n 5000 and at least {FID_MIN_N} real images for a number to quote"
        )
    if n < KID_MIN_N:
        out.append(f"small sample: KID at n={n} (< {KID_MIN_N}) varies by about its kid_std between draws")
    return out


@torch.no_grad()
def generate_uint8(model: Any, n: int, seed: int, chunk: int = 256, **options: Any) -> torch.Tensor:
    """uint8 (n, 3, H, W) images of ``latents_for_seed(model, n, seed)``, decoded in chunks."""
    z = latents_for_seed(model, n, seed)
    out = []
    for i in range(0, n, chunk):
        opts = options_slice(options, n, i, i + chunk)
        out.append((generate(model, z[i : i + chunk], **opts) * 255).round().to(torch.uint8))
    return torch.cat(out)  # (n, 3, H, W)


def data_prompts(
    root: str, names: list[str], n: int, seed: int, mode: CaptionMode = "auto"
) -> tuple[list[str], str]:
    """n captions drawn (seeded, with replacement) from the data's captioned images: a text run
    is measured on what users ask of it, pictures of the data's captions, not on the
    caption-less input it saw in a tenth of its training."""
    captions = [c for c in read_captions(root, names, mode).texts if c]
    if not captions:
        raise DataError(f"{root}: no captions to prompt this text-conditioned run with; give --prompt")
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(captions), (n,), generator=g).tolist()
    return [captions[i] for i in pick], f"{n} captions drawn from {root} (seed {seed})"


def eval_files(run: str | Path) -> tuple[Path, Path]:
    """Where ``artforge eval`` of a run, or of a snapshot RUN@STEP, writes its results and its
    novelty sheet: RUN/eval.json and RUN/novelty.png, or eval-step0000500.json and
    novelty-step0000500.png beside them (runfolder.eval_name / novelty_name)."""
    folder, weights = split_ref(run)
    return folder / eval_name(weights), folder / novelty_name(weights)


def evaluate_run(
    run_dir: str | os.PathLike[str],
    data: DataConfig | str | os.PathLike[str] | None = None,
    n: int = 5000,
    seed: int = 0,
    batch_size: int | None = None,
    inception: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "auto",
    progress: bool = False,
    sheet: str | os.PathLike[str] | None = None,
    sample_options: dict[str, Any] | None = None,
    faithfulness: str | None = None,
) -> dict[str, Any]:
    """Metrics of ``n`` images sampled from a run with ``seed`` against real data.

    ``data`` is a path (loaded like the run's training data: same size, fit and background),
    a DataConfig, or None for the run's own training data. ``sheet`` writes the novelty PNG.
    ``faithfulness`` (a label key such as "group") adds prompt faithfulness (faithfulness.py)
    for text-conditioned runs. ``batch_size`` (images per Inception pass) None: chosen for
    the device (``metrics.reference.batch_size_for``).
    """
    if n < 4:
        raise ConfigError(f"evaluation needs at least 4 generated images, got n={n}")
    dev = resolve_device(device)
    run = load_any_run(Path(run_dir), device=str(dev))  # a run, or a cascade at its final size
    cfg = _to_data_config(data if data is not None else run.config.data, run.config.data)
    real_set = load_images(cfg, progress=progress)
    reals = real_set.images  # uint8 (N, 3, H, W)
    real = Reference(reals, dev, batch_size=batch_size, inception=inception, progress=progress)
    options = check_options(run.model, dict(sample_options or {}))
    prompted_with, gen_options = None, dict(options)
    if getattr(run.model, "conditional", False) and "prompt" not in options:
        gen_options["prompt"], prompted_with = data_prompts(cfg.path, real_set.names, n, seed, cfg.captions)
    fakes = generate_uint8(run.model, n, seed, **gen_options)
    fake_f = real.features_of(fakes, progress=progress)
    groups = groups_if_any(cfg.path, real_set.names, cfg.captions)
    result = _finish(real, fakes, fake_f, seed, sheet, real_set.names, groups)
    if prompted_with:
        result["prompts"] = prompted_with
    if faithfulness:
        result["faithfulness"] = prompt_faithfulness(
            run,
            reals,
            real_set.names,
            cfg.path,
            label_key=faithfulness,
            captions_mode=cfg.captions,
            seed=seed,
            reference=real,
            **options,
        )
    return {"run": str(run_dir), "data": cfg.path, **result}


def data_size(path: str | os.PathLike[str], max_side: int = MAX_AUTO_SIDE) -> tuple[int, int]:
    """(height, width) to evaluate real images at: the most common size among (up to
    SIZE_PROBE of) their headers, scaled down to at most ``max_side`` a side.

    Headers are read through the training loader's own checks (``open_image``: format by
    content, the pixel limit), so a decompression bomb or a broken file is passed over and
    nothing is decoded. Raises DataError naming the path and the reasons when no file has a
    usable header. A built-in set has no size of its own: DataConfig's default is used.
    """
    path = str(path)
    if path == "builtin" or path.startswith("builtin:"):
        cfg = DataConfig(path=path)
        return cfg.height, cfg.width
    (h, w), _ = image_sizes(path, SIZE_PROBE).most_common(1)[0]
    return fit_side(h, w, max_side)


def fit_side(h: int, w: int, max_side: int = MAX_AUTO_SIDE) -> tuple[int, int]:
    """(h, w) scaled down to at most ``max_side`` a side, each side kept within 8..max_side."""
    s = min(1.0, max_side / max(h, w))
    return min(max_side, max(8, round(h * s))), min(max_side, max(8, round(w * s)))


def _real_config(
    data: DataConfig | str | os.PathLike[str], size: tuple[int, int] | None, fit: Fit
) -> tuple[DataConfig, str]:
    """The real data's DataConfig at the evaluation size, and where that size came from.

    A DataConfig keeps its own size; a run folder means its training data as it was trained
    (size, fit, background); a folder, zip or built-in set is read at the most common size of
    its images (``data_size``). ``size`` (height, width) overrides all three.
    """
    if isinstance(data, DataConfig):
        cfg, why = data, "the given data config"
    elif (Path(data).expanduser() / CONFIG_NAME).is_file():
        cfg = read_config(Path(data).expanduser()).data
        if cfg.modality == "audio":
            raise DataError(f"{data}: a sound run; eval --fake compares pictures")
        why = f"the run {data}"
    else:
        if size is None:
            h, w = data_size(data)
            why = f"the most common size of {data}'s images (at most {MAX_AUTO_SIDE} a side)"
        else:
            h, w = size
        cfg = DataConfig(path=str(data), height=h, width=w, fit=fit)
    if size is not None:
        cfg, why = dataclasses.replace(cfg, height=size[0], width=size[1]), "--size"
    return cfg, why


def skip_summary(where: str, kept: int, skipped: list[tuple[str, str]], shown: int = 3) -> str:
    """One line naming the skipped files and why, e.g. 'fakes: 2 of 43 files skipped: a.png: ...'."""
    first = "; ".join(f"{f}: {r}" for f, r in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"{where}: {len(skipped)} of {kept + len(skipped)} files skipped: {first}{more}"


def evaluate_folders(
    fake_dir: str | os.PathLike[str],
    data: DataConfig | str | os.PathLike[str],
    batch_size: int | None = None,
    inception: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = False,
    sheet: str | os.PathLike[str] | None = None,
    fit: Fit = "crop",
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Metrics of a folder (or zip) of generated images against real data.

    The evaluation size comes from the real side, never from a generated file: ``size``
    (height, width), else ``data``'s own (a DataConfig, or a run folder's training data), else
    the most common size of the real images (``data_size``). Both sides are read by the
    training loader at that size with one fit: every file is checked (format by content, the
    pixel limit, decompression bombs) and decoded straight to the evaluation size, files that
    cannot be used are skipped with a reason (``result["skipped"]``), and a large set goes to
    a memory-mapped file instead of memory (``cache="auto"``). Both sides' features are cached.
    """
    if not Path(fake_dir).expanduser().exists():
        raise FileNotFoundError(f"{fake_dir}: no such folder or zip of generated images")
    dev = resolve_device(device)
    real_cfg, why = _real_config(data, size, fit)
    log.info("evaluating at %dx%d (from %s)", real_cfg.width, real_cfg.height, why)
    fake_cfg = dataclasses.replace(
        real_cfg, path=str(fake_dir), hflip=False, captions="auto", holdout=0.0, modality="image"
    )
    fake_set = load_images(fake_cfg, progress=progress)
    if len(fake_set) < 4:
        raise DataError(
            f"{fake_dir}: {len(fake_set)} usable images; evaluation needs at least 4"
            + (f" ({skip_summary('skipped', len(fake_set), fake_set.skipped)})" if fake_set.skipped else "")
        )
    real_set = load_images(real_cfg, progress=progress)
    for name, s in (("generated", fake_set), ("real", real_set)):
        if s.skipped:
            log.warning("%s", skip_summary(f"{s.root} ({name})", len(s), s.skipped))
    real = Reference(real_set.images, dev, batch_size=batch_size, inception=inception, progress=progress)
    fakes = fake_set.images
    fake_f = real.features_of(fakes, cache=True, progress=progress)
    groups = groups_if_any(real_cfg.path, real_set.names, real_cfg.captions)
    result = _finish(real, fakes, fake_f, seed, sheet, real_set.names, groups)
    result["skipped"] = {
        "fake": [{"file": f, "reason": r} for f, r in fake_set.skipped],
        "real": [{"file": f, "reason": r} for f, r in real_set.skipped],
    }
    return {"fake": str(fake_dir), "data": real_cfg.path, **result}


# -- the in-training monitor ---------------------------------------------------------------


def training_hooks(t: TrainConfig) -> list[Hook]:
    """The Trainer hooks a run's settings ask for: the monitor (``--monitor-every``) and weight
    snapshots (``--snapshot-every``). The Trainer runs the hooks it is given and imports no
    evaluation code; every entry point that trains (``api.train``, ``artforge train`` and so
    the studio's jobs) builds its hooks here."""
    hooks: list[Hook] = []
    if t.monitor_every > 0:  # the creativity monitor, on the standard FID network
        hooks.append(
            make_monitor_hook(
                t.monitor_every, t.monitor_n, fid=t.monitor_fid or t.keep_best, keep_best=t.keep_best
            )
        )
    if t.snapshot_every > 0:  # numbered copies of the sampling weights (snapshots.py)
        hooks.append(make_snapshot_hook(t.snapshot_every, t.snapshot_keep))
    return hooks


def make_monitor_hook(
    every: int,
    n: int = 256,
    *,
    fid: bool = False,
    keep_best: bool = False,
    max_real: int = 2000,
    batch_size: int | None = None,
    inception: str | os.PathLike[str] | None = None,
    collapse: float = 0.7,
    copy_warn: float = 0.65,
    seed: int = MONITOR_SEED,
) -> Hook:
    """A Trainer hook: every ``every`` steps, ``n`` samples from ``trainer.sampling_model``
    (fixed latents) against up to ``max_real`` training images (their features computed once,
    cached on disk). Logs ``{"step", "monitor/diversity", "monitor/copy_rate", "monitor/density",
    "monitor/coverage"}`` (coverage at n samples against max_real images is below eval's at
    n=5000: compare it across steps; and
    ``"monitor/fid"`` with ``fid``; at small n it is biased upward: compare it across steps
    only) as a line of the trainer's Logbook (metrics.jsonl), plots ``plots/monitor.png`` and
    logs a warning when diversity falls below ``collapse`` times its best so far or the copy
    rate exceeds ``copy_warn`` (fresh real images score about 0.5). ``every <= 0`` turns it off.
    With ``keep_best`` (and ``fid``) the sampling weights of the lowest FID so far are kept as
    snapshots/best.safetensors (RUN@best; a resumed run continues its record).
    """
    if n < 2:
        raise ConfigError(f"the monitor needs at least 2 samples, got n={n}")
    if keep_best and not fid:
        raise ConfigError("keep_best keeps the best monitor FID: the monitor must score FID")
    state: dict[str, Any] = {"real": None, "best": -math.inf}

    def hook(trainer: Trainer, step: int) -> None:
        if every <= 0 or step % every:
            return
        metrics_path = trainer.logbook.path
        if state["real"] is None:
            images = trainer.data.images
            log.info(
                "monitor: Inception features of %d training images (once, then cached)",
                min(len(images), max_real),
            )
            kw: dict[str, Any] = {"batch_size": batch_size, "inception": inception, "desc": "monitor: real"}
            state["real"] = Reference(images, trainer.device, limit=max_real, **kw)
            state["best"] = max(
                [r["monitor/diversity"] for r in _read_rows(metrics_path) if "monitor/diversity" in r]
                + [-math.inf]
            )
        real: Reference = state["real"]
        model = trainer.sampling_model
        was_training = model.training
        model.eval()
        try:
            fakes = generate_uint8(model, n, seed)
        finally:
            model.train(was_training)
        fake_f = real.features_of(fakes, desc="monitor: generated")
        row: dict[str, Any] = {
            "step": step,
            "monitor/diversity": round(real.diversity(fake_f), 5),
            "monitor/copy_rate": round(real.copy_rate(fake_f), 5),
        }
        if n > PR_K:  # density and coverage need more samples than neighbours
            density, coverage = real.density_coverage(fake_f)
            row["monitor/density"], row["monitor/coverage"] = round(density, 5), round(coverage, 5)
        if fid:
            row["monitor/fid"] = round(fid_from_features(real.features, fake_f), 4)
        trainer.logbook.event(**row)
        if keep_best:
            _keep_if_best(trainer, state, step, row["monitor/fid"], n)
        d, c = row["monitor/diversity"], row["monitor/copy_rate"]
        if d < collapse * state["best"]:
            log.warning(
                "step %d: diversity %.2f fell below %.0f%% of its best (%.2f): mode collapse?",
                step,
                d,
                100 * collapse,
                state["best"],
            )
        if c > copy_warn:
            log.warning(
                "step %d: copy rate %.2f (fresh real images score about 0.5): the model may be "
                "memorising training images",
                step,
                c,
            )
        state["best"] = max(state["best"], d)
        plot_monitor(metrics_path, trainer.run_dir / PLOTS / "monitor.png")

    return hook


def _keep_if_best(trainer: Trainer, state: dict[str, Any], step: int, fid: float, n: int) -> None:
    """--keep-best: the sampling weights of the lowest monitor FID so far, kept with their step."""
    if "best_fid" not in state:  # this process's first score: a resumed run continues its record
        info = read_best(trainer.run_dir)
        state["best_fid"] = info["fid"] if info is not None else math.inf
    if not fid < state["best_fid"]:
        return
    model = trainer.sampling_model
    if not finite_weights(model):
        return
    try:
        save_best(model, trainer.run_dir, step, fid, n, weights_meta(trainer))
    except OSError as e:  # a full disk: the best is an extra, the checkpoint decides
        log.warning("could not keep the best weights of step %d (%s)", step, e.strerror or e)
        return
    log.info("step %d: monitor FID %.2f, the best so far: kept as RUN@best", step, fid)
    state["best_fid"] = fid


def _read_rows(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.exists() else []


def plot_monitor(metrics: Path, out: Path) -> Path | None:
    """One panel per monitor/* series against step, with the real data's level marked."""
    import matplotlib  # lazy: plotting libraries load only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in _read_rows(metrics) if any(k.startswith("monitor/") for k in r)]
    keys = sorted({k for r in rows for k in r if k.startswith("monitor/")})
    if not keys:
        return None
    # what real data scores
    reference = {"monitor/diversity": 1.0, "monitor/copy_rate": 0.5, "monitor/density": 1.0}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2)
        if key in reference:
            ax.axhline(reference[key], color="grey", ls="--", lw=0.8, label="real data")
            ax.legend(fontsize=8)
        ax.set_title(key.split("/", 1)[1].replace("_", " "))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    save_figure(fig, out)
    return out


# -- scoring snapshots --------------------------------------------------------------------------------------


def evaluate_snapshots(
    run_dir: str | os.PathLike[str],
    n: int = 500,
    seed: int = 0,
    data: str | None = None,
    *,
    batch_size: int | None = None,
    inception: str | os.PathLike[str] | None = None,
    device: str = "auto",
    progress: bool = False,
) -> dict[str, Any]:
    """FID of ``n`` samples (latents of ``seed``) from each snapshot and the final weights
    against the run's data (its Inception features cached on disk): writes snapshots.json,
    snapshots.md and plots/snapshots.png, and returns the table. At a small n FID is biased
    upward; compare the rows with each other, not with FIDs at another n."""
    run_dir = Path(run_dir)
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise NotFound(f"{run_dir}: no snapshots to score; train with --snapshot-every N")
    if n < 4:
        raise ConfigError(f"scoring snapshots needs n >= 4 generated images, got {n}")
    final = load_run(run_dir, device=device)
    if final.is_audio:
        raise Conflict(f"{run_dir}: scoring snapshots measures pictures; this is a sound run")
    cfg = final.config.data if data is None else _data_like(final.config.data, data)
    real = load_images(cfg, progress=progress)
    kw: dict[str, Any] = {"batch_size": batch_size, "inception": inception, "progress": progress}
    reference = Reference(real.images, final.device, **kw)
    options: dict[str, Any] = {}
    if getattr(final.model, "conditional", False):
        options["prompt"], _ = data_prompts(cfg.path, real.names, n, seed, cfg.captions)
    rows = []
    entries = [(s, f"{SNAPSHOT_DIR}/{p.name}") for s, p in snaps] + [(None, WEIGHTS_NAME)]
    for step, weights in entries:
        run = final if step is None else load_run(run_dir, device=device, weights=weights)
        fakes = generate_uint8(run.model, n, seed, **options)
        fake_f = reference.features_of(fakes)
        fid = round(float(fid_from_features(reference.features, fake_f)), 4)
        rows.append({"step": "final" if step is None else step, "weights": weights, "fid": fid})
        log.info("%s: FID %.2f (n=%d)", weights, fid, n)
    best = min(rows, key=lambda r: r["fid"])
    table = {"run": str(run_dir), "data": cfg.path, "n": n, "seed": seed, "rows": rows, "best": best["step"]}
    write_json(table, run_dir / TABLE_NAME)
    _write_markdown(table, run_dir / TABLE_REPORT)
    plot_table(table, run_dir / PLOTS / "snapshots.png")
    return table


def _data_like(like: DataConfig, path: str) -> DataConfig:
    return dataclasses.replace(like, path=path)


def _write_markdown(table: dict[str, Any], path: Path) -> None:
    lines = [
        f"# Snapshots of {table['run']}",
        "",
        f"FID of {table['n']} samples (seed {table['seed']}) against {table['data']}; lower is better. "
        "At a small n FID is biased upward: compare rows with each other.",
        "",
        "| step | FID | |",
        "|---:|---:|---|",
    ]
    for r in table["rows"]:
        mark = "best" if r["step"] == table["best"] else ""
        lines.append(f"| {r['step']} | {r['fid']:.2f} | {mark} |")
    write_text(path, "\n".join(lines) + "\n")


def plot_table(table: dict[str, Any], out: Path) -> Path:
    """FID against step, the best snapshot marked, the final weights as a dashed line."""
    import matplotlib  # lazy: plotting libraries load only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r["step"], r["fid"]) for r in table["rows"] if isinstance(r["step"], int)]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label="snapshot")
    final = [r["fid"] for r in table["rows"] if r["step"] == "final"]
    if final:
        ax.axhline(final[0], color="grey", ls="--", lw=0.8, label="final weights")
    best = next(r for r in table["rows"] if r["step"] == table["best"])
    if isinstance(best["step"], int):
        ax.plot([best["step"]], [best["fid"]], marker="*", ms=14, color="tab:red", ls="", label="best")
    ax.set_xlabel("step")
    ax.set_ylabel(f"FID (n={table['n']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    return out

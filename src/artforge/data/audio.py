"""Sound data: a folder of WAV/FLAC/OGG files -> log-mel images in the same uint8 ImageSet.

Each file is read with soundfile (libsndfile), mixed to mono, resampled to the run's rate
with soxr, cut or zero-padded to the clip length, checked for silence, peak-normalised and
analysed once into a (1, n_mels, frames) image (``artforge.audio``). Files that cannot be
used are listed with a reason, like broken images. The images are stored as uint8 like
pictures: docs/audio.md measures the quantisation (0.31 dB steps) against the rest of the
round trip and finds it negligible, so the Trainer's batches need no second data path.
A second load of the same folder with the same settings reads a cache file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..audio import AudioSpec, spec_from_config, wave_to_image
from ..config import DataConfig
from ..errors import DataError
from ..io import replacing
from .folder import IMAGE_EXTENSIONS
from .imageset import ImageSet, cache_dir

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga"})
AUDIO_CACHE_VERSION = 1  # bump when decoding or analysis changes
MAX_FILE_BYTES = 512 * 2**20
CHUNK = 256  # clips analysed per STFT batch
INSTALL_HINT = "pip install soundfile soxr"


def _candidates(root: Path, extensions: frozenset[str]) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for fn in filenames:
            if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in extensions:
                out.append(Path(os.path.relpath(os.path.join(dirpath, fn), root)).as_posix())
    return sorted(out)


def detect_modality(path: str) -> str:
    """ "audio" for a folder with more sound files than image files, else "image"."""
    p = Path(path).expanduser()
    if path.startswith("builtin") or not p.is_dir():
        return "image"
    sounds = len(_candidates(p, AUDIO_EXTENSIONS))
    if sounds == 0:
        return "image"
    images = len(_candidates(p, frozenset(IMAGE_EXTENSIONS)))
    return "audio" if sounds > images else "image"


def resolve_modality(cfg: DataConfig) -> DataConfig:
    """The DataConfig with "auto" replaced by what the data is."""
    if cfg.modality != "auto":
        return cfg
    return dataclasses.replace(cfg, modality=detect_modality(cfg.path))


# -- one file -------------------------------------------------------------------------------------


class AudioSkip(Exception):  # noqa: N818 - a control-flow signal, like folder.Skip
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_clip(
    path: str | os.PathLike[str], spec: AudioSpec, silence_db: float, normalize: bool
) -> np.ndarray:
    """One file -> float32 (samples,) mono at spec.sample_rate, cut or padded; raise AudioSkip."""
    import soundfile as sf
    import soxr

    size = os.path.getsize(path)
    if size == 0:
        raise AudioSkip("empty file (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise AudioSkip(f"too large ({size / 2**20:,.0f} MiB file)")
    try:
        with sf.SoundFile(path) as f:
            rate = f.samplerate
            need = int(np.ceil(spec.samples * rate / spec.sample_rate)) + 16  # only what the clip uses
            data = f.read(frames=need, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioSkip(f"corrupt or unreadable audio ({msg[:90]})") from None
    if data.shape[0] == 0:
        raise AudioSkip("no audio samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise AudioSkip("corrupt audio (NaN or infinite samples)")
    if rate != spec.sample_rate:
        mono = soxr.resample(mono, rate, spec.sample_rate, quality="HQ").astype(np.float32)
    clip = np.zeros(spec.samples, dtype=np.float32)
    k = min(spec.samples, mono.shape[0])
    clip[:k] = mono[:k]
    peak = float(np.abs(clip).max())
    if peak <= 10 ** (silence_db / 20):
        level = f"{20 * np.log10(peak):.0f} dBFS" if peak > 0 else "digital silence"
        raise AudioSkip(f"silent (peak {level} < {silence_db:g} dBFS)")
    if normalize:
        clip *= 10 ** (-1 / 20) / peak
    return clip


# -- the set --------------------------------------------------------------------------------------


def _cache_path(cfg: DataConfig, root: Path, names: list[str], spec: AudioSpec) -> Path:
    h = hashlib.sha256()
    head = {
        "version": AUDIO_CACHE_VERSION,
        "root": str(root.resolve()),
        "spec": dataclasses.asdict(spec),
        "silence_db": cfg.audio.silence_db,
        "normalize": cfg.audio.normalize,
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for n in names:
        st = os.stat(root / n)
        h.update(f"{n}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    stem = "".join(c if c.isalnum() or c in "_.-" else "_" for c in root.name)[:40] or "audio"
    return cache_dir(cfg) / f"audio-{stem}-{spec.frames}x{spec.n_mels}-{h.hexdigest()[:32]}.npz"


def load_audio(cfg: DataConfig, *, progress: bool = False):  # type: ignore[no-untyped-def]
    """A folder of sound files -> ImageSet of uint8 (N, 1, n_mels, frames) log-mel images."""
    try:
        import soundfile  # noqa: F401
        import soxr  # noqa: F401
    except ImportError:
        raise DataError(f"reading sound files needs soundfile and soxr: {INSTALL_HINT}") from None
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise DataError(f"{cfg.path}: sound data must be a folder of {', '.join(sorted(AUDIO_EXTENSIONS))}")
    names = _candidates(root, AUDIO_EXTENSIONS)
    if not names:
        raise DataError(
            f"{cfg.path}: no sound files found (looked for {' '.join(sorted(AUDIO_EXTENSIONS))}, "
            "in subfolders too)"
        )
    spec = spec_from_config(cfg)
    cache = _cache_path(cfg, root, names, spec) if cfg.cache != "memory" else None
    hit = _read_cache(cache) if cache is not None else None
    if hit is not None:
        images, kept, skipped = hit
        log.info("reusing audio cache %s", cache)
    else:
        images, kept, skipped = _decode_all(root, names, spec, cfg, progress)
        if cache is not None:
            _write_cache(cache, images, kept, skipped)
    result = ImageSet(torch.from_numpy(images), kept, skipped, cfg.path)
    log.info("%s", result.summary().replace(" image", " sound"))
    return result


def _decode_all(
    root: Path, names: list[str], spec: AudioSpec, cfg: DataConfig, progress: bool
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    waves: list[np.ndarray] = []
    kept: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name in tqdm(names, desc=f"reading {cfg.path}", unit="file", disable=not progress, leave=False):
        try:
            waves.append(read_clip(root / name, spec, cfg.audio.silence_db, cfg.audio.normalize))
            kept.append(name)
        except AudioSkip as e:
            skipped.append((name, e.reason))
        except OSError as e:
            skipped.append((name, f"unreadable ({e.strerror or e})"))
    for f, r in skipped:
        log.debug("skipped %s: %s", f, r)
    if not kept:
        first = "; ".join(f"{f}: {r}" for f, r in skipped[:5])
        raise DataError(f"{cfg.path}: no usable sound files ({len(skipped)} skipped: {first})")
    out = np.empty((len(kept), 1, spec.n_mels, spec.frames), dtype=np.uint8)
    for i in range(0, len(waves), CHUNK):
        batch = torch.from_numpy(np.stack(waves[i : i + CHUNK]))
        img = wave_to_image(batch, spec)  # (b, 1, n_mels, frames) in [-1, 1]
        out[i : i + len(batch)] = ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return out, kept, skipped


def _read_cache(path: Path) -> tuple[np.ndarray, list[str], list[tuple[str, str]]] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["images"]
            meta = json.loads(str(z["meta"]))
        return images, list(meta["names"]), [(f, r) for f, r in meta["skipped"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, images: np.ndarray, names: list[str], skipped: list[tuple[str, str]]) -> None:
    meta = json.dumps({"names": names, "skipped": [list(s) for s in skipped]})
    try:
        with replacing(path) as tmp:
            np.savez(tmp, images=images, meta=np.array(meta))
    except OSError as e:  # a cache is an optimisation: carry on without it
        log.warning("could not write the audio cache %s (%s)", path, e.strerror or e)

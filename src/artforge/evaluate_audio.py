"""Measuring a sound run: a small family classifier trained on real notes, and the round trip.

There is no standard network for these spectrograms (FAD uses VGGish on raw audio, which is
not available here), so ``artforge eval`` on a sound run trains a small CNN on the real
notes' log-mel images to tell the instrument family (labels.jsonl of ``artforge data
notes``), on a fixed 80/20 split by a hash of the file name (data/holdout.py, the rule of
``--data.holdout``), and reports:

- its accuracy on the held-out real notes (how good the judge is);
- for held-out real and for generated sounds: the judge's mean top-class confidence, an
  Inception-Score-like exp(E KL(p(y|x) || p(y))) and the predicted family histogram; the
  models here are unconditional, so "accuracy on generated sounds" is not defined, but a
  model whose sounds the judge cannot place, or places all in one family, shows here;
- an FID-like Frechet distance between the judge's 128-d penultimate features of generated
  sounds and of the real training notes, beside the same distance for the held-out real
  notes (the floor at that sample size). It is *not* FAD and not comparable across judges;
- spectral convergence of the sound -> image -> sound round trip on held-out real notes
  (mel + uint8 + NNLS + Griffin-Lim), of Griffin-Lim alone on the exact magnitude, and of
  generated images against a re-analysis of the sound made from them.

The judge is cached by the data and settings, so evaluating several runs trains it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .audio import (
    AudioSpec,
    image_to_mel,
    one_thread,
    quantize,
    spec_from_config,
    spectral_convergence,
    stft_magnitude,
    to_audio,
    wave_to_image,
)
from .config import DataConfig
from .data.holdout import is_held_out
from .errors import Conflict, DataError
from .io import load_safetensors, save_safetensors
from .metrics.classifier import epoch_batches, fit_classifier, to_signed_unit

log = logging.getLogger(__name__)

# part of the cache key: 2 since the held-out notes are data/holdout.py's (a version-1 judge
# was trained on another 20%, some of them held out now)
CLASSIFIER_VERSION = 2
FEATURES = 128
HELD_OUT = 0.2  # share of the real notes the judge never trains on (data/holdout.py)


class FamilyNet(nn.Module):
    """Four strided conv blocks -> global average -> 128-d features -> family logits."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        chans = [1, 16, 32, 64, FEATURES]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.BatchNorm2d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURES, n_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _time_shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Start the batch 0-3 frames later (silence, -1, before): notes elsewhere do not all
    start on the first frame."""
    shift = int(torch.randint(0, 4, (), generator=g))
    if shift:
        x = torch.cat([torch.full_like(x[..., :shift], -1), x[..., :-shift]], dim=-1)
    return x


def train_classifier(x: Tensor, y: Tensor, n_classes: int, epochs: int = 25, seed: int = 0) -> FamilyNet:
    """Fit FamilyNet on uint8 (N, 1, H, W) spectrograms; a random time shift is the only augmentation."""
    steps = epochs * ((len(x) + 63) // 64)
    return fit_classifier(
        lambda: FamilyNet(n_classes),
        x,
        y,
        steps,
        lambda g: epoch_batches(len(x), 64, epochs, g),
        _time_shift,
        seed,
    )


@torch.no_grad()
def judge(net: FamilyNet, images: Tensor) -> tuple[Tensor, Tensor]:
    """(probabilities (N, classes), features (N, 128)) for uint8 or [-1, 1] images."""
    probs, feats = [], []
    for i in range(0, len(images), 256):
        f = net.features(to_signed_unit(images[i : i + 256]))
        feats.append(f)
        probs.append(net.head(f).softmax(-1))
    return torch.cat(probs), torch.cat(feats)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) on float64 features."""
    from .metrics.fid import frechet_distance as fd

    a64, b64 = a.double().numpy(), b.double().numpy()
    return float(fd(a64.mean(0), np.cov(a64, rowvar=False), b64.mean(0), np.cov(b64, rowvar=False)))


def score_set(probs: Tensor, classes: list[str]) -> dict[str, Any]:
    """Confidence, an IS-like score and the family histogram of a set's predictions."""
    marginal = probs.mean(0, keepdim=True)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
    counts = Counter(classes[int(k)] for k in probs.argmax(1))
    return {
        "confidence": round(float(probs.max(1).values.mean()), 4),
        "class_score": round(float(kl.mean().exp()), 3),
        "families": {c: counts.get(c, 0) for c in classes},
    }


def histogram_distance(a: dict[str, int], b: dict[str, int]) -> float:
    """Total variation between two family histograms (0 = same proportions, 1 = disjoint)."""
    na, nb = max(1, sum(a.values())), max(1, sum(b.values()))
    return round(0.5 * sum(abs(a.get(k, 0) / na - b.get(k, 0) / nb) for k in set(a) | set(b)), 4)


# -- the judge for a data set ---------------------------------------------------------------------


def _labels_for(data: DataConfig, names: list[str]) -> tuple[list[str], np.ndarray]:
    from .data.notes import read_labels

    labels = read_labels(data.path)
    missing = [n for n in names if n not in labels]
    if missing:
        raise DataError(
            f"{data.path}/labels.jsonl has no line for {missing[0]} (and {len(missing) - 1} more)"
        )
    fam = [str(labels[n]["family"]) for n in names]
    classes = sorted(set(fam))
    return classes, np.array([classes.index(f) for f in fam])


def load_judge(data: DataConfig, progress: bool = False) -> dict[str, Any]:
    """Real notes split into train/held-out, and the family classifier trained on the train part
    (from the cache when the same data and settings were judged before)."""
    from .data import cache_dir, load_images

    real = load_images(data, progress=progress)
    classes, y = _labels_for(data, real.names)
    held = np.array([is_held_out(n, HELD_OUT) for n in real.names])
    if held.all() or not held.any():
        raise DataError(f"{data.path}: too few notes ({len(real)}) for a train/held-out split")
    h = hashlib.sha256()
    h.update(json.dumps([CLASSIFIER_VERSION, str(Path(data.path).resolve()), classes]).encode())
    h.update(real.images.numpy().tobytes())
    h.update(y.tobytes())
    h.update(held.tobytes())  # a judge is only reused with the notes it did not train on
    path = cache_dir(data) / f"audio-judge-{h.hexdigest()[:32]}.safetensors"
    net = FamilyNet(len(classes))
    x = real.images
    y_t = torch.from_numpy(y)
    train_idx = torch.from_numpy(np.flatnonzero(~held))
    if path.is_file():
        net.load_state_dict(load_safetensors(path))
        net.eval()
        log.info("reusing the audio judge %s", path)
    else:
        log.info("training the family classifier on %d real notes (%d classes)", len(train_idx), len(classes))
        with one_thread():  # small convolutions: one thread was 3x faster on the shared 2-core machine
            net = train_classifier(x[train_idx], y_t[train_idx], len(classes))
        try:
            save_safetensors(net.state_dict(), path)
        except OSError as e:
            log.warning("could not cache the audio judge in %s (%s)", path, e)
    return {"net": net, "classes": classes, "images": x, "labels": y_t, "held": torch.from_numpy(held),
            "names": real.names}  # fmt: skip


# -- round trip -----------------------------------------------------------------------------------


def round_trip(data: DataConfig, names: list[str], limit: int = 32) -> dict[str, float]:
    """Spectral convergence of held-out real notes through the whole representation, through
    Griffin-Lim alone, and with float instead of uint8 images (what the cache costs)."""
    from .data.audio import read_clip

    spec = spec_from_config(data)
    root = Path(data.path)
    waves = torch.from_numpy(
        np.stack(
            [read_clip(root / n, spec, data.audio.silence_db, data.audio.normalize) for n in names[:limit]]
        )
    )
    img = wave_to_image(waves, spec)
    with one_thread():
        gl_only = spectral_convergence(waves, _gl(stft_magnitude(waves, spec), spec), spec)
    full_u8 = spectral_convergence(waves, to_audio(quantize(img), spec), spec)
    full_float = spectral_convergence(waves, to_audio(img, spec), spec)
    return {
        "sc_roundtrip": round(float(full_u8.mean()), 4),
        "sc_roundtrip_float": round(float(full_float.mean()), 4),
        "sc_griffin_lim_only": round(float(gl_only.mean()), 4),
        "roundtrip_clips": len(waves),
    }


def _gl(mag: Tensor, spec: AudioSpec) -> Tensor:
    from .audio import griffin_lim

    return griffin_lim(mag, spec)


def generated_consistency(images: Tensor, spec: AudioSpec) -> float:
    """Mean mel-domain spectral convergence between generated images and the images of the
    sounds made from them: how much of what the model drew survives as sound."""
    x = to_signed_unit(images)
    waves = to_audio(x, spec)
    with one_thread():
        again = image_to_mel(wave_to_image(waves, spec), spec)
        want = image_to_mel(x, spec)
        num = torch.linalg.vector_norm(again - want, dim=(-2, -1))
        sc = num / torch.linalg.vector_norm(want, dim=(-2, -1)).clamp_min(1e-10)
    return round(float(sc.mean()), 4)


# -- the run --------------------------------------------------------------------------------------


def evaluate_audio_run(
    run_dir: str | Path,
    data: str | None = None,
    n: int = 500,
    seed: int = 0,
    *,
    device: str = "auto",
    progress: bool = False,
    sample_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample ``n`` sounds from a sound run and measure them against the labelled real notes."""
    import dataclasses

    from .evaluate import generate_uint8
    from .runs import load_run

    run = load_run(run_dir, device=device)
    if not run.is_audio:
        raise Conflict(f"{run_dir} is an image run; audio measures need a run trained on sound")
    cfg = run.config.data
    if data is not None:
        cfg = dataclasses.replace(cfg, path=data)
    j = load_judge(cfg, progress=progress)
    net, classes, held = j["net"], j["classes"], j["held"]
    real_probs, real_feats = judge(net, j["images"])
    acc = float((real_probs[held].argmax(1) == j["labels"][held]).float().mean())
    train_acc = float((real_probs[~held].argmax(1) == j["labels"][~held]).float().mean())
    fakes = generate_uint8(run.model, n, seed, **(sample_options or {}))  # uint8 (n, 1, H, W)
    fake_probs, fake_feats = judge(net, fakes)
    real_score = score_set(real_probs[held], classes)
    fake_score = score_set(fake_probs, classes)
    spec = spec_from_config(cfg)
    held_names = [nm for nm, h in zip(j["names"], held.tolist(), strict=True) if h]
    result: dict[str, Any] = {
        "run": str(run_dir),
        "data": cfg.path,
        "family": run.config.family,
        "size": [cfg.width, cfg.height],
        "n_fake": n,
        "n_real_train": int((~held).sum()),
        "n_real_held_out": int(held.sum()),
        "classes": classes,
        "classifier_accuracy_held_out": round(acc, 4),
        "classifier_accuracy_train": round(train_acc, 4),
        "real_held_out": real_score,
        "generated": fake_score,
        "family_tv_distance": histogram_distance(fake_score["families"], real_score["families"]),
        "fd_generated": round(frechet_distance(fake_feats, real_feats[~held]), 3),
        "fd_real_held_out": round(frechet_distance(real_feats[held], real_feats[~held]), 3),
        "generated_mel_consistency": generated_consistency(fakes[:32], spec),
        **round_trip(cfg, held_names),
        "seed": seed,
    }
    return result

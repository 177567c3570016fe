"""Sound <-> spectrogram images: log-mel analysis, mel inversion, Griffin-Lim, WAV output.

The model families work on (C, H, W) images in [-1, 1]; a sound becomes a one-channel image
whose rows are mel bands (row 0 = the highest band, so a PNG looks like a usual
spectrogram) and whose columns are STFT frames. Analysis: STFT magnitude (Hann window,
scaled so a full-scale sine peaks at 0.5) -> triangular mel filterbank -> decibels -> a
fixed range [-top_db, 0] dB mapped to [-1, 1]. The range is fixed (not per clip), so
loudness is kept and a generated image means the same thing in every run.

Inversion (``to_audio``): decibels -> mel amplitude -> linear magnitude by non-negative
least squares (projected gradient from the pseudo-inverse; a plain pseudo-inverse leaves
negative energy and ringing) -> phase by fast Griffin-Lim (Perraudin et al. 2013, momentum
0.99), written with torch.stft/istft. Spectral convergence measures what comes back.
Everything is torch, batched, on any device; nothing here reads files except ``write_wav``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io import replacing

EPS = 1e-10


@dataclass(frozen=True)
class AudioSpec:
    """Everything needed to turn sound into the model's images and back."""

    sample_rate: int = 16_000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 128  # image height
    frames: int = 64  # image width; the clip is hop_length * frames samples long
    f_min: float = 0.0
    f_max: float = 0.0  # 0: the Nyquist frequency
    top_db: float = 80.0  # quietest level kept, below full scale
    gl_iters: int = 64  # Griffin-Lim iterations when going back to sound

    @property
    def samples(self) -> int:
        return self.hop_length * self.frames

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def fmax(self) -> float:
        return self.f_max or self.sample_rate / 2


def spec_from_config(data: object) -> AudioSpec:
    """The AudioSpec of a DataConfig: image height = mel bands, width = frames."""
    a = data.audio  # type: ignore[attr-defined]
    return AudioSpec(
        sample_rate=a.sample_rate,
        n_fft=a.n_fft,
        hop_length=a.hop_length,
        n_mels=data.height,  # type: ignore[attr-defined]
        frames=data.width,  # type: ignore[attr-defined]
        f_min=a.f_min,
        f_max=a.f_max,
        top_db=a.top_db,
        gl_iters=a.gl_iters,
    )


@contextmanager
def one_thread() -> Iterator[None]:
    """Run small DSP ops on one CPU thread. These tensors are small (a few MB); with two or
    more threads on a busy machine OpenMP's waiting made mel inversion and Griffin-Lim 10-60x
    slower (2.4 s vs 0.15 s for four clips), and on an idle one the second thread saves little."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- filterbank ---------------------------------------------------------------------------------


def _hz_to_mel(f: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(spec: AudioSpec) -> Tensor:
    """(n_mels, n_freqs) HTK-style triangles with peak 1, so a pure tone keeps its level."""
    freqs = torch.linspace(0, spec.sample_rate / 2, spec.n_freqs, dtype=torch.float64)
    edges = _mel_to_hz(torch.linspace(_hz_to_mel(spec.f_min), _hz_to_mel(spec.fmax), spec.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs - lo) / (mid - lo).clamp_min(1e-9)
    down = (hi - freqs) / (hi - mid).clamp_min(1e-9)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    # a band narrower than one FFT bin would be empty: give it its nearest bin
    empty = fb.sum(1) == 0
    if empty.any():
        nearest = (freqs[None, :] - mid[empty]).abs().argmin(1)
        fb[empty.nonzero()[:, 0], nearest] = 1.0
    return fb.float()


# -- analysis -----------------------------------------------------------------------------------


def _window(spec: AudioSpec, device: torch.device) -> Tensor:
    return torch.hann_window(spec.n_fft, periodic=True, device=device)


def stft_magnitude(wave: Tensor, spec: AudioSpec) -> Tensor:
    """(B, samples) -> (B, n_freqs, frames) linear magnitude; a full-scale sine peaks near 0.5."""
    win = _window(spec, wave.device)
    x = torch.stft(wave.float(), spec.n_fft, spec.hop_length, window=win, center=True, return_complex=True)
    return x.abs()[..., : spec.frames] / win.sum()


def magnitude_to_image(mag: Tensor, spec: AudioSpec, fb: Tensor | None = None) -> Tensor:
    """Linear magnitude (B, n_freqs, frames) -> images (B, 1, n_mels, frames) in [-1, 1]."""
    fb = mel_filterbank(spec).to(mag.device) if fb is None else fb
    mel = torch.einsum("mf,bft->bmt", fb, mag)
    db = 20.0 * torch.log10(mel.clamp_min(EPS))
    unit = ((db + spec.top_db) / spec.top_db).clamp(0, 1)
    return (unit * 2 - 1).flip(1)[:, None]


def wave_to_image(wave: Tensor, spec: AudioSpec) -> Tensor:
    """(B, samples) waveforms -> (B, 1, n_mels, frames) log-mel images in [-1, 1]."""
    with one_thread():
        return magnitude_to_image(stft_magnitude(wave, spec), spec)


def image_to_mel(images: Tensor, spec: AudioSpec) -> Tensor:
    """(B, C, n_mels, frames) in [-1, 1] (channel 0 is used) -> mel amplitude (B, n_mels, frames)."""
    unit = (images[:, 0].float().clamp(-1, 1) + 1) / 2
    db = unit.flip(1) * spec.top_db - spec.top_db
    mel = 10.0 ** (db / 20.0)
    return torch.where(unit.flip(1) <= 0, torch.zeros_like(mel), mel)  # the floor means silence


@functools.lru_cache(maxsize=8)
def _mel_inverse(spec: AudioSpec) -> tuple[Tensor, Tensor, float]:
    """(filterbank, its pseudo-inverse, gradient step) for ``spec``, computed once.

    The pseudo-inverse is fb^T (fb fb^T)^-1 from a small (n_mels x n_mels) float64 solve:
    torch.linalg.pinv's SVD of the wide float32 matrix took from 0.2 to 6 s on the test CPU.
    The step is 1 / the largest eigenvalue of fb fb^T (the gradient's Lipschitz constant).
    """
    fb = mel_filterbank(spec).double()
    gram = fb @ fb.T
    ridge = 1e-10 * float(gram.diagonal().mean())
    pinv = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), fb).T
    step = 1.0 / float(torch.linalg.eigvalsh(gram)[-1])
    return fb.float(), pinv.float(), step


def mel_to_magnitude(mel: Tensor, spec: AudioSpec, iters: int = 100) -> Tensor:
    """Mel amplitude -> linear magnitude: non-negative least squares by projected gradient,
    started from the clamped pseudo-inverse (which alone leaves more error: docs/audio.md)."""
    fb, pinv, step = (v.to(mel.device) if isinstance(v, Tensor) else v for v in _mel_inverse(spec))
    mel = mel.contiguous()
    x = (pinv @ mel).clamp_min(0)  # (B, n_freqs, frames)
    for _ in range(iters):
        x = (x - step * (fb.T @ (fb @ x - mel))).clamp_min(0)
    return x


# -- phase reconstruction -----------------------------------------------------------------------


def griffin_lim(
    mag: Tensor, spec: AudioSpec, iters: int | None = None, momentum: float = 0.99, seed: int = 0
) -> Tensor:
    """Magnitude (B, n_freqs, frames) -> waveform (B, samples) by fast Griffin-Lim.

    Fast GL (Perraudin, Balazs & Sondergaard 2013) adds a momentum step to the alternating
    projections; at 0.99 it converges in a few tens of iterations to what plain GL reaches in
    hundreds. The phase starts random from ``seed``, so the output is reproducible.
    """
    iters = spec.gl_iters if iters is None else iters
    win = _window(spec, mag.device)
    scale = win.sum()
    full = torch.cat([mag, mag[..., -1:]], dim=-1) * scale  # the frame dropped by analysis
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * math.pi * torch.rand(full.shape, generator=g)).to(mag.device)
    prev = torch.zeros_like(angles)

    def istft(spec_c: Tensor) -> Tensor:
        return torch.istft(spec_c, spec.n_fft, spec.hop_length, window=win, center=True, length=spec.samples)

    for _ in range(iters):
        wave = istft(full * angles)
        rebuilt = torch.stft(wave, spec.n_fft, spec.hop_length, window=win, center=True, return_complex=True)
        accel = rebuilt - (momentum / (1 + momentum)) * prev
        angles = accel / accel.abs().clamp_min(1e-16)
        prev = rebuilt
    return istft(full * angles)


def to_audio(images: Tensor, spec: AudioSpec, iters: int | None = None, seed: int = 0) -> Tensor:
    """(B, C, n_mels, frames) images in [-1, 1] -> (B, samples) float waveforms in [-1, 1]."""
    with one_thread():
        mag = mel_to_magnitude(image_to_mel(images, spec), spec)
        wave = griffin_lim(mag, spec, iters=iters, seed=seed)
    peak = wave.abs().amax(dim=-1, keepdim=True)
    return torch.where(peak > 1, wave / peak, wave)  # never clip; quieter sounds stay as they are


def spectral_convergence(reference: Tensor, estimate: Tensor, spec: AudioSpec) -> Tensor:
    """Per clip ||S_ref| - |S_est||_F / ||S_ref||_F on linear STFT magnitudes (0 = identical)."""
    a, b = stft_magnitude(reference, spec), stft_magnitude(estimate, spec)
    num = torch.linalg.vector_norm(a - b, dim=(-2, -1))
    return num / torch.linalg.vector_norm(a, dim=(-2, -1)).clamp_min(EPS)


def quantize(images: Tensor) -> Tensor:
    """[-1, 1] -> the uint8 cache's values and back, as the Trainer's batches see them."""
    q = ((images.clamp(-1, 1) + 1) * 127.5).round()
    return q / 127.5 - 1


# -- files --------------------------------------------------------------------------------------


def write_wav(wave: Tensor | np.ndarray, path: str | os.PathLike[str], sample_rate: int) -> Path:
    """A mono float waveform -> 16-bit PCM WAV, written to a temp name and renamed."""
    import soundfile as sf

    path = Path(path)
    arr = wave.detach().cpu().numpy() if isinstance(wave, Tensor) else np.asarray(wave)
    arr = np.clip(arr.astype(np.float32).reshape(-1), -1, 1)
    with replacing(path) as tmp:
        sf.write(tmp, arr, sample_rate, subtype="PCM_16", format="WAV")
    return path

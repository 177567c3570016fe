"""Property-based fuzzing of the two parsers that read what users hand us: images and configs.

The default run tries a few hundred cases, derandomised so it is repeatable. The long run
(README) draws fresh cases:

    ARTFORGE_FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest -q tests/test_fuzz.py -p no:randomly

Properties: an image decoder returns an (H, W, 3) uint8 array or raises Skip with a reason,
nothing else, and a folder of such files always loads its good images; a config file either
becomes a RunConfig whose numbers the Trainer can use, or is refused with a ValueError.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from artforge.config import DataConfig, OptimConfig, TrainConfig, load_config_file, parse_override
from artforge.config import run_config_from_dict as parse_run_config
from artforge.data import load_images
from artforge.data.folder import Skip, Spec, decode
from artforge.models import MODELS, make_model_config, model_class
from artforge.optim import build_optimizer, ema_beta, resolve_optim

LONG = "ARTFORGE_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("ARTFORGE_FUZZ_EXAMPLES", "150"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not LONG,  # the default run is repeatable; the long run explores
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
SPEC = Spec(16, 16, "crop", (255, 255, 255), max_pixels=2_000_000)  # bombs stay cheap to refuse

# -- images --------------------------------------------------------------------------------------


def _seed_images() -> list[bytes]:
    """Valid files of every format we read, in several modes: the material the mutations break."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))
    out = []
    for fmt, img, kw in [
        ("PNG", rgb, {}),
        ("PNG", rgb.convert("RGBA"), {}),
        ("PNG", rgb.convert("P"), {"transparency": 0}),
        ("PNG", Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)), {}),
        ("JPEG", rgb, {"quality": 80}),
        ("JPEG", rgb.convert("CMYK"), {}),
        ("JPEG", rgb, {"progressive": True}),
        ("GIF", rgb.convert("P"), {"save_all": True, "append_images": [rgb.convert("P")]}),
        ("BMP", rgb, {}),
        ("TIFF", rgb, {"compression": "tiff_deflate"}),
        ("TIFF", rgb.convert("F"), {}),
        ("WEBP", rgb, {"quality": 70}),
        ("WEBP", rgb.convert("RGBA"), {"lossless": True}),
    ]:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with a few byte-level mutations: flips, cuts, inserts and extreme integers
    written over header fields (sizes, lengths, offsets)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "int", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "int":
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * width) - 1)
            data[pos : pos + width] = value.to_bytes(width, draw(st.sampled_from(["big", "little"])))
        else:
            end = draw(st.integers(pos, len(data)))
            data[end:end] = data[pos:end]
        if not data:
            break
    return bytes(data)


image_bytes = st.one_of(
    mutated_images(),
    st.binary(max_size=512),
    st.builds(
        lambda magic, rest: magic + rest, st.sampled_from([s[:16] for s in SEEDS]), st.binary(max_size=256)
    ),
)


def _check_decode(data: bytes) -> None:
    try:
        arr = decode(data, SPEC)
    except Skip as e:
        assert e.reason and isinstance(e.reason, str)
        return
    assert arr.shape == (16, 16, 3) and arr.dtype == np.uint8


@fuzz
@given(image_bytes)
@example(SEEDS[0][:33])  # a PNG cut right after its header
def test_fuzz_image_decoder(data: bytes) -> None:
    _check_decode(data)


@settings(fuzz, max_examples=max(10, EXAMPLES // 20))  # each case writes a folder: fewer cases
@given(st.lists(image_bytes, min_size=1, max_size=6))
def test_fuzz_folder_loader_keeps_good_images(
    tmp_path_factory: pytest.TempPathFactory, files: list[bytes]
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for i, data in enumerate(files):
        (folder / f"f{i}.png").write_bytes(data)
    (folder / "zz_good.png").write_bytes(SEEDS[0])
    s = load_images(DataConfig(path=str(folder), height=16, width=16, cache="memory", max_pixels=2_000_000))
    assert "zz_good.png" in s.names
    assert len(s.names) + len(s.skipped) == len(files) + 1
    assert all(reason for _, reason in s.skipped)


# -- configs -------------------------------------------------------------------------------------

CHOICES = ["crop", "pad", "stretch", "auto", "memory", "disk", "off", "bf16", "fp16", "sgd", "adam"]
CHOICES += ["adamw", "stop", "continue", "builtin", "hinge", "bce", "wgan-gp", "color,translation", *MODELS]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 70),
    st.integers(),
    st.floats(),
    st.floats(-2, 2),
    st.text(max_size=8),
    st.sampled_from(CHOICES),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
)
MODEL_FIELDS = sorted({f.name for cls in MODELS.values() for f in dataclasses.fields(cls.config_class)})


def section(cls: type) -> st.SearchStrategy[dict]:
    names = [f.name for f in dataclasses.fields(cls)]
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=6), values, max_size=5)


run_dicts = st.fixed_dictionaries(
    {},
    optional={
        "family": st.sampled_from(sorted(MODELS)) | st.text(max_size=6),
        "data": section(DataConfig) | values,
        "train": section(TrainConfig),
        "optim": section(OptimConfig),
        "model": st.dictionaries(st.sampled_from(MODEL_FIELDS), values, max_size=4),
        "optim_groups": st.dictionaries(
            st.sampled_from(["G", "D", "main", "x"]), section(OptimConfig), max_size=2
        ),
        "format_version": st.integers(0, 2),
    },
)


def usable(d: dict) -> None:
    """Parse like `artforge train` does; a refusal must be a ValueError. What is accepted must
    hold numbers the Trainer can compute with, without dividing by zero or overflowing."""
    try:
        cfg = parse_run_config(d)
        cls = model_class(cfg.family)
        make_model_config(cfg.family, cfg.model, height=cfg.data.height, width=cfg.data.width)
        groups = ["D", "G"] if cfg.family in ("gan", "dcgan") else ["main"]
        optim = resolve_optim(cfg, groups, dict(cls.optim_defaults))
        for settings_ in optim.values():
            build_optimizer([torch.nn.Parameter(torch.zeros(2))], settings_)
    except ValueError as e:
        assert str(e)
        return
    t = cfg.train.budget_defaulted()
    for g in optim.values():
        assert math.isfinite(g["lr"]) and g["lr"] > 0 and g["clip"] >= 0
    if t.epochs is not None:
        math.ceil(t.epochs * 1000 / t.batch_size)
    if t.minutes is not None:
        assert math.isfinite(t.minutes)
    assert 7 % t.log_every >= 0 and t.grid_n >= 1 and t.monitor_n >= 1
    for every in (t.sample_every, t.ckpt_every, t.monitor_every):
        assert every >= 0
    ema_beta(t.ema_half_life, t.batch_size)
    torch.Generator().manual_seed(t.seed * 1_000_003 + 10**6)  # BatchStream's epoch seeds
    torch.Generator().manual_seed(t.seed * 7_919 + 10**9)  # and flip seeds
    torch.manual_seed(t.seed)


@fuzz
@given(run_dicts)
def test_fuzz_config_dicts(d: dict) -> None:
    usable(d)


@fuzz
@given(
    st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
    st.sampled_from([".toml", ".json"]),
)
@example(b"[train]\nsteps = 1e400\n", ".toml")
@example(b'{"train": {"epochs": 1e999}}', ".json")
@example(b"[" * 5000, ".json")
def test_fuzz_config_files(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / f"run{suffix}"
    path.write_bytes(data)
    try:
        d = load_config_file(path)
    except ValueError as e:
        assert str(path) in str(e)
        return
    usable(d)


@fuzz
@given(st.text(max_size=60))
@example("--train.steps=" + "[" * 5000)
@example("--train.seed=" + "9" * 5000)
def test_fuzz_overrides(arg: str) -> None:
    try:
        key, value = parse_override(arg)
    except ValueError:
        return
    assert isinstance(key, str)
    section_, _, name = key.partition(".")
    if section_ in ("train", "data", "optim") and name:
        usable({section_: {name: value}})

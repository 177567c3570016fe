"""DiffAugment transforms and the ADA controller: what each does to pixels, that gradients
flow through them, and that an adaptive GAN run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from artforge.models import GAN, make_model_config
from artforge.models.augment import adapt_p, adapt_p_, augment, color, cutout, parse_policy, translation


def images(n: int = 6, h: int = 16, w: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x (C, H, W) moved down dy and right dx, zeros where nothing moved in."""
    out = torch.zeros_like(x)
    h, w = x.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_translation_is_a_shift_within_the_ratio() -> None:
    x = images()
    torch.manual_seed(1)
    out = translation(x, ratio=0.125)  # up to 2 rows, 2 columns (rounded) at 16x12
    seen = set()
    for i in range(x.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(out[i], shifted(x[i], dy, dx))
        ]
        assert len(matches) == 1, i
        seen.add(matches[0])
    assert len(seen) > 1  # shifts differ per image
    assert torch.equal(translation(x, ratio=0.0), x)


def test_cutout_zeroes_one_rectangle_and_keeps_the_rest() -> None:
    x = images(8) * 0.5 + 0.6  # strictly positive, so zeros can only come from the cutout
    torch.manual_seed(2)
    out = cutout(x, ratio=0.5)
    for i in range(x.shape[0]):
        hole = out[i, 0] == 0  # (H, W)
        assert 0 < int(hole.sum()) <= 8 * 6
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert int(hole.sum()) == len(rows) * len(cols)  # one axis-aligned rectangle
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole])
        assert (out[i][:, hole] == 0).all()


def test_color_changes_each_image_and_passes_gradients() -> None:
    x = images().requires_grad_(True)
    torch.manual_seed(3)
    out = color(x)
    assert out.shape == x.shape and not torch.allclose(out, x)
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augment_probability_and_policy() -> None:
    x = images(64)
    torch.manual_seed(4)
    assert augment(x, ("translation", "cutout"), p=0.0) is x
    assert augment(x, (), p=1.0) is x
    out = augment(x, ("color",), p=0.5)
    changed = int((out != x).flatten(1).any(1).sum())
    assert 16 < changed < 48  # about half of 64 images
    out = augment(x, ("color",), p=1.0)
    assert (out != x).flatten(1).any(1).all()
    assert parse_policy(" color, translation ") == ("color", "translation") and parse_policy("") == ()
    with pytest.raises(ValueError, match=r"unknown augmentation 'flip'; choose from \['color'"):
        parse_policy("color,flip")


def test_ada_controller_moves_toward_target() -> None:
    confident = torch.ones(8)  # D says "real" to every real image: r = 1 > 0.6
    unsure = torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1])  # r = 0
    assert adapt_p(0.2, confident, 0.6, batch=8, speed_images=80) == pytest.approx(0.3)
    assert adapt_p(0.2, unsure, 0.6, batch=8, speed_images=80) == pytest.approx(0.1)
    assert adapt_p(0.99, confident, 0.6, batch=8, speed_images=80) == 1.0
    assert adapt_p(0.0, unsure, 0.6, batch=8, speed_images=80) == 0.0


def test_device_controller_matches_the_host_one_bit_for_bit() -> None:
    """ADA on a GPU keeps p on the device (adapt_p_, no host sync): over a long run of random
    logits and batch sizes, with p pinned at 0 and 1 along the way, every new p is the host
    controller's, and ties at the target (r = 0.6 in float32) go the same way."""
    g = torch.Generator().manual_seed(0)
    p_host, p_dev = 0.0, torch.tensor(0.0)
    for k in range(400):
        b = int(torch.randint(1, 40, (), generator=g))
        bias = [2.0, -2.0, 0.0][k // 50 % 3]  # stretches of confident, unsure and mixed D
        logits = torch.randn(b, generator=g) + bias
        if k == 123:  # r exactly 0.6 at batch 5: the float32 tie with the target
            logits = torch.tensor([1.0, 1, 1, 1, -1])
        p_host = adapt_p(p_host, logits, 0.6, b, 500)
        adapt_p_(p_dev, logits, 0.6, b, 500)
        assert torch.tensor(p_host, dtype=torch.float32).item() == p_dev.item()
        p_host = float(p_dev)  # the host one reads the float32 buffer back, as the GAN's did
    assert p_dev.dtype == torch.float32


def test_augment_with_a_device_p_matches_a_host_p_inside_0_1() -> None:
    """A tensor p draws exactly as a float p does for 0 < p < 1 (same images chosen, same
    transforms), and at p = 0 it changes no image while still drawing."""
    x = images(32)
    for p in (0.25, 0.5, 0.9):
        torch.manual_seed(7)
        host = augment(x, ("color", "translation", "cutout"), p=p)
        torch.manual_seed(7)
        dev = augment(x, ("color", "translation", "cutout"), p=torch.tensor(p))
        assert torch.equal(host, dev)
    torch.manual_seed(7)
    assert torch.equal(augment(x, ("color", "cutout"), p=torch.tensor(0.0)), x)


def test_adaptive_gan_logs_p_and_saves_it() -> None:
    fields = {"base_channels": 8, "latent_dim": 8, "augment": "color,translation,cutout"}
    cfg = make_model_config("gan", {**fields, "ada_target": 0.6, "augment_p": 0.0}, height=16, width=16)
    model = GAN(cfg)
    assert "aug_p" in model.state_dict()
    out = model.training_step("D", images(8, 16, 16), 0)
    assert "aug_p" in out and 0.0 <= float(out["aug_p"]) <= 8 / 50_000
    fixed = GAN(make_model_config("gan", fields, height=16, width=16))
    assert "aug_p" not in fixed.state_dict()  # a fixed probability is config, not state
    with pytest.raises(ValueError, match="augment_p must be in"):
        make_model_config("gan", {"augment_p": 1.5}, height=16, width=16)


@pytest.mark.parametrize(
    ("extra", "buffer"),
    [
        ({"ada_target": 0.6, "augment_p": 0.3, "ada_images": 100}, "aug_p"),
        ({"lecam_weight": 0.3, "lecam_decay": 0.9}, "lecam_ema"),
    ],
    ids=["ada", "lecam"],
)
def test_gan_state_that_adapts_resumes_exactly(tmp_path, extra, buffer) -> None:
    """ADA's probability and LeCam's logit averages are saved and continue on resume."""
    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.models.base import load_weights
    from artforge.training import Trainer

    fields = {"base_channels": 8, "latent_dim": 8, "augment": "color,translation,cutout", **extra}

    def cfg(steps: int) -> RunConfig:
        return RunConfig(
            family="gan",
            model=fields,
            data=DataConfig(path="builtin", height=16, width=16, builtin_count=40),
            train=TrainConfig(steps=steps, batch_size=8, log_every=2, sample_every=0, ckpt_every=0, grid_n=4),
        )

    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(cfg(8), straight, progress=False).train()
    Trainer(cfg(4), split, progress=False).train()
    Trainer(cfg(8), split, progress=False).train(resume=True)
    a = load_weights(straight / "state" / "model.safetensors")
    b = load_weights(split / "state" / "model.safetensors")
    start = GAN(make_model_config("gan", fields, height=16, width=16)).state_dict()[buffer]
    assert not torch.equal(a[buffer], start)  # training moved it
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ranks_augment_their_slice_of_the_global_batch() -> None:
    """Under data-parallel training each rank draws the global batch's augmentation and keeps
    its slice: two ranks together augment exactly as one process on the whole batch."""
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    policy = parse_policy("color,translation,cutout")
    torch.manual_seed(5)
    whole = augment(x, policy, p=0.7)
    halves = []
    for rank in (0, 1):
        torch.manual_seed(5)  # every rank has the same RNG state
        halves.append(augment(x[rank * 4 : (rank + 1) * 4], policy, p=0.7, shard=(rank, 2)))
    assert torch.equal(torch.cat(halves), whole)
    torch.manual_seed(5)
    assert not torch.equal(augment(x[4:], policy, p=0.7), whole[4:])  # without the shard they would differ

import pytest
import torch

from artforge.optim import ema_beta
from artforge.sample import interpolation_path, make_grid, parse_seeds, slerp, to_unit


def test_parse_seeds():
    assert parse_seeds("1,2,5-8") == [1, 2, 5, 6, 7, 8]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    for bad in ("a", "5-2", "", "-1"):
        with pytest.raises(ValueError, match="bad seed list"):
            parse_seeds(bad)


def test_slerp_hits_both_ends_and_keeps_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    # unit vectors stay on the sphere halfway
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    assert torch.allclose(slerp(an, bn, 0.5).norm(dim=1), torch.ones(3), atol=1e-5)
    # identical vectors: no NaN
    assert torch.allclose(slerp(a, a, 0.3), a)


def test_interpolation_path():
    keys = torch.eye(3)
    loop = interpolation_path(keys, 6, loop=True)
    assert loop.shape == (6, 3)
    assert torch.allclose(loop[0], keys[0]) and torch.allclose(loop[2], keys[1], atol=1e-6)
    assert torch.allclose(loop[4], keys[2], atol=1e-6)
    open_path = interpolation_path(keys, 5, loop=False)
    assert torch.allclose(open_path[-1], keys[2], atol=1e-6)
    with pytest.raises(ValueError):
        interpolation_path(keys[:1], 5)


def test_grid_layout_and_unit_range():
    imgs = torch.zeros(5, 3, 4, 6)
    g = make_grid(imgs, nrow=2, pad=1)
    assert g.shape == (3, 3 * 5 + 1, 2 * 7 + 1)
    x = to_unit(torch.tensor([-2.0, -1.0, 0.0, 1.0]))
    assert (x * 255).tolist() == pytest.approx([0.0, 0.0, 128.0, 255.0])


def test_ema_beta_half_life():
    # after half_life images (in batches of 32) the old weight has halved
    beta = ema_beta(3200, 32)
    assert abs(beta**100 - 0.5) < 1e-9
    assert ema_beta(0, 32) == 0.0

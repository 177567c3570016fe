"""Coverage measures: density and coverage on constructed feature sets with known answers, the
"not made" list and sheet, balanced accuracy and the linear probe judge, and sub-folder groups."""

import numpy as np
import pytest
import torch
from PIL import Image

from artforge.metrics import evaluate, inception
from artforge.metrics.density_coverage import density_coverage, farthest_real
from artforge.metrics.precision_recall import precision_recall


def gaussian(n, d=8, seed=0, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(size=(n, d)) * scale + shift


# -- density and coverage ---------------------------------------------------------------------


def test_one_distribution_scores_density_about_one_and_full_coverage():
    real = gaussian(2000, seed=1)
    density, coverage = density_coverage(real, gaussian(2000, seed=2))
    assert density == pytest.approx(1.0, abs=0.1)  # E[density] = 1 for fresh draws of the same data
    assert coverage > 0.85  # about 1 - e^-k when as many fakes as reals (Naeem et al.)
    assert density_coverage(real, real.copy())[1] == 1.0  # every real ball holds its own point


def test_fakes_on_one_cluster_of_two_cover_half():
    a, b = gaussian(500, seed=1), gaussian(500, seed=2, shift=40.0)
    real = np.concatenate([a, b])
    density, coverage = density_coverage(real, gaussian(3000, seed=3))  # all near cluster a
    assert coverage == pytest.approx(0.5, abs=0.02)
    assert density == pytest.approx(1.0, abs=0.1)  # what it makes is as real as the data


def test_outlier_fakes_do_not_raise_density_and_coverage_as_they_raise_precision():
    cluster = gaussian(500, seed=1)
    outlier = np.zeros((1, 8))
    outlier[0, 0] = 20.0  # one real outlier: its 3rd neighbour is the cluster, its ball ~20 wide
    real = np.concatenate([cluster, outlier])
    fakes = gaussian(300, seed=2, scale=0.3) + np.eye(8)[0] * 12.0  # between, far from the cluster
    precision, _ = precision_recall(real, fakes)
    density, coverage = density_coverage(real, fakes)
    assert precision == 1.0  # every fake lies in the outlier's wide ball
    assert density == pytest.approx(1 / 3, abs=0.01)  # ... which counts once of k = 3
    assert coverage == pytest.approx(1 / 501)  # and covers one real image of 501
    good = density_coverage(real, gaussian(500, seed=3))
    assert good[0] > 0.8 and good[1] > 0.8


def test_evaluate_reports_density_and_coverage():
    out = evaluate(gaussian(80, seed=1), gaussian(60, seed=2))
    assert out["density"] > 0 and 0 < out["coverage"] <= 1


# -- the not-made list ------------------------------------------------------------------------


def test_farthest_real_names_the_images_a_generator_leaves_out():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)) * 10  # 20 kinds of image, 10 of each
    real = np.repeat(centres, 10, axis=0) + rng.normal(size=(200, 16)) * 0.5
    left_out = {3, 11, 17}  # kinds the constructed generator never makes
    made = [c for c in range(20) if c not in left_out]
    fake = centres[rng.choice(made, 400)] + rng.normal(size=(400, 16)) * 0.5
    idx, dist, ratio = farthest_real(real, fake, 30)
    assert {int(i) // 10 for i in idx} == left_out  # the first 30 are exactly those 3 kinds x 10
    assert (np.diff(dist) <= 0).all() and (ratio > 1).all()
    rest, _, rest_ratio = farthest_real(real, fake, 200)
    assert (rest_ratio[30:] < ratio.min()).all()


def colour_features(images, batch_size=50, progress=False, **kw):
    """Stand-in for the FID network: (N, 2048) features that are the images' channel means."""
    x = inception.to_uint8_nchw(images).double()
    return np.tile(x.mean((2, 3)).numpy(), (1, 2048 // 3 + 1))[:, :2048]


def write_kinds(folder, kinds, per_kind, seed, nested=False):
    """per_kind 8x8 PNGs of each colour kind k (hue from k), a little noise on each; ``nested``
    puts each kind in its own sub-folder (kindKK/kindKK_J.png)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for k in kinds:
        where = folder / f"kind{k:02d}" if nested else folder
        where.mkdir(exist_ok=True)
        base = np.array([(37 * k) % 256, (91 * k + 40) % 256, (23 * k + 200) % 256], dtype=float)
        for j in range(per_kind):
            px = np.clip(base + rng.normal(0, 2.0, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(where / f"kind{k:02d}_{j}.png")


def test_eval_names_the_real_images_a_generator_leaves_out(tmp_path, monkeypatch):
    from artforge.evaluate import eval_table, evaluate_folders

    monkeypatch.setattr(inception, "features", colour_features)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    left_out = {2, 9}
    write_kinds(tmp_path / "real", range(12), 8, seed=0, nested=True)  # 96 real images, 12 kinds
    write_kinds(tmp_path / "fake", [k for k in range(12) if k not in left_out], 6, seed=1)
    r = evaluate_folders(tmp_path / "fake", tmp_path / "real", sheet=tmp_path / "novelty.png", size=(8, 8))
    first = [row["file"] for row in r["not_made"][:16]]
    assert {f[:6] for f in first} == {"kind02", "kind09"}  # exactly the 2 x 8 images left out
    by_group = r["coverage_by_group"]  # the sub-folders are the groups
    assert len(by_group) == 12 and all(v["n"] == 8 for v in by_group.values())
    assert by_group["kind02"]["coverage"] == by_group["kind09"]["coverage"] == 0.0
    assert min(v["coverage"] for g, v in by_group.items() if g not in {"kind02", "kind09"}) > 0
    assert all(row["radius_ratio"] > 1 for row in r["not_made"][:16])
    assert 0.7 < r["coverage"] <= 80 / 96  # the left-out kinds are never covered
    assert r["not_made_sheet"] == str(tmp_path / "notmade.png")
    w, h = Image.open(r["not_made_sheet"]).size
    assert h > 16 * 64  # 16 rows of 8 px images enlarged to 64 px
    table = "\n".join(eval_table(r))
    assert "coverage" in table and "share of the collection's variety" in table and "kind0" in table


# -- balanced accuracy and the two judges ------------------------------------------------------


def test_balanced_accuracy_on_an_imbalanced_case():
    from artforge.faithfulness import balanced_accuracy, judge_scores

    true = torch.tensor([0] * 90 + [1] * 10)
    always_big = torch.zeros(100, dtype=torch.long)  # a judge (or model) that only knows group 0
    assert balanced_accuracy(always_big, true) == pytest.approx(0.5)
    s = judge_scores(true.clone(), always_big, true, ["smileys", "flags"])
    assert s["generated_accuracy"] == pytest.approx(0.9) and s["generated_balanced_accuracy"] == 0.5
    assert s["real_balanced_accuracy"] == 1.0 and s["ratio"] == 0.5
    assert s["per_group"]["flags"] == {"n": 10, "real": 1.0, "generated": 0.0, "ratio": 0.0}
    assert s["never_drawn"] == ["flags"]


def test_linear_probe_learns_a_rare_class_that_plain_accuracy_would_ignore():
    from artforge.faithfulness import balanced_accuracy
    from artforge.metrics.classifier import LinearProbe

    rng = np.random.default_rng(0)
    sizes = [400, 40, 12]  # one big group, two rare ones
    means = rng.normal(size=(3, 64)) * 0.6
    feats = np.concatenate([means[c] + rng.normal(size=(n, 64)) for c, n in enumerate(sizes)])
    labels = torch.tensor(np.repeat(np.arange(3), sizes))
    test = np.concatenate([means[c] + rng.normal(size=(50, 64)) for c in range(3)])
    test_labels = torch.tensor(np.repeat(np.arange(3), 50))
    probe = LinearProbe(torch.from_numpy(feats), labels, 3)
    pred = probe.predict(torch.from_numpy(test))
    assert balanced_accuracy(pred, test_labels) > 0.8
    assert (pred[test_labels == 2] == 2).float().mean() > 0.6  # the 12-image group is not drowned
    again = LinearProbe(torch.from_numpy(feats), labels, 3).predict(torch.from_numpy(test))
    assert torch.equal(pred, again)  # deterministic


# -- groups from sub-folders ------------------------------------------------------------------


def test_captions_folder_takes_the_sub_folder_as_caption_and_group(tmp_path):
    from artforge.config import DataConfig
    from artforge.data import load_images
    from artforge.data.captions import read_captions, read_groups
    from artforge.faithfulness import read_labels

    root = tmp_path / "icons"
    for group, n in (("red_panda", 3), ("cats", 2)):
        (root / group).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / group / f"{i}.png")
    Image.new("RGB", (8, 8)).save(root / "loose.png")
    data = load_images(DataConfig(path=str(root), height=8, width=8, captions="folder"))
    caps = read_captions(str(root), data.names, "folder")
    by_name = dict(zip(data.names, caps.texts, strict=True))
    assert by_name == {
        "cats/0.png": "cats",
        "cats/1.png": "cats",
        "loose.png": "",
        "red_panda/0.png": "red_panda",
        "red_panda/1.png": "red_panda",
        "red_panda/2.png": "red_panda",
    }
    assert caps.source == "folder" and caps.uncaptioned == ["loose.png"]
    assert read_groups(str(root), data.names, mode="folder") == [by_name[n] or None for n in data.names]
    assert read_labels(root, data.names, "group", "folder") == read_groups(str(root), data.names, "folder")
    assert read_captions("x.zip", ["x.zip:dogs/a.png"], "folder").texts == ["dogs"]
    with pytest.raises(ValueError, match="captions"):
        DataConfig(captions="subfolders")


def test_a_text_run_on_sub_folders_is_judged_per_group_by_both_judges(tmp_path, monkeypatch):
    """--captions folder end to end: a text run trains on sub-folder captions, eval prompts it
    with them, and both judges score the sub-folder groups (the FID network stood in for)."""
    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.evaluate import eval_table, evaluate_run
    from artforge.training import Trainer

    monkeypatch.setattr(inception, "features", colour_features)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "squares"
    rng = np.random.default_rng(0)
    for group, rgb in (("red", (220, 30, 30)), ("blue", (30, 40, 220)), ("green", (30, 200, 40))):
        (root / group).mkdir(parents=True)
        for i in range(12):
            px = np.clip(np.array(rgb) + rng.normal(0, 6, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / group / f"{i:02d}.png")
    cfg = RunConfig(
        family="gan",
        model={"base_channels": 8, "latent_dim": 16, "text_encoder": "hash", "text_dim": 16},
        data=DataConfig(path=str(root), height=16, width=16, captions="folder", holdout=0.25),
        train=TrainConfig(steps=2, batch_size=8, sample_every=0, ckpt_every=0, grid_n=4, seed=1),
    )
    Trainer(cfg, tmp_path / "run", progress=False).train()
    r = evaluate_run(tmp_path / "run", n=12, faithfulness="group", device="cpu")
    f = r["faithfulness"]
    assert f["label_key"] == "folder" and f["n_classes"] == 3
    assert set(r["coverage_by_group"]) == {"red", "blue", "green"}
    assert set(f["judges"]) == {"cnn", "inception_probe"}
    probe = f["judges"]["inception_probe"]
    assert probe["real_balanced_accuracy"] == 1.0  # the stand-in features are the colour itself
    assert set(probe["per_group"]) <= {"red", "blue", "green"}
    assert f["ratio"] == f["judges"]["cnn"]["ratio"]  # the top-level figures stay the CNN's
    assert all(g in probe["per_group"] for g in probe["never_drawn"])
    assert sum("balanced accuracy by a probe on FID features" in line for line in eval_table(r)) == 1


def test_the_monitor_logs_density_and_coverage(tmp_path, monkeypatch):
    import json

    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.evaluate import make_monitor_hook
    from artforge.training import Trainer

    monkeypatch.setattr(inception, "features", colour_features)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cfg = RunConfig(
        family="gan",
        model={"base_channels": 8, "latent_dim": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=24),
        train=TrainConfig(steps=2, batch_size=8, log_every=2, sample_every=0, ckpt_every=0, grid_n=4),
    )
    run = tmp_path / "run"
    Trainer(cfg, run, progress=False, hooks=[make_monitor_hook(2, n=12)]).train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (mon,) = [r for r in rows if "monitor/coverage" in r]
    assert mon["monitor/density"] >= 0 and 0 <= mon["monitor/coverage"] <= 1


# -- training levers: minibatch standard deviation in D ---------------------------------------


def test_minibatch_std_is_zero_for_look_alikes_and_grouped_by_divisors():
    from artforge.models.gan import minibatch_std

    same = torch.ones(6, 4, 2, 2)
    assert minibatch_std(same, 4).abs().max() < 1e-3  # 6 images: groups of 3 (largest divisor <= 4)
    varied = torch.randn(6, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = minibatch_std(varied, 4)
    assert out.shape == (6, 1, 2, 2) and (out > 0.1).all()
    groups = varied.reshape(3, 2, 4, 2, 2)  # images i and i + 2 and i + 4 form one group
    expect = groups.var(0, unbiased=False).add(1e-8).sqrt().mean(1, keepdim=True)  # (2, 1, 2, 2)
    torch.testing.assert_close(out, expect.repeat(3, 1, 1, 1))
    torch.testing.assert_close(minibatch_std(varied[:1], 4), torch.full((1, 1, 2, 2), 1e-4))  # alone: 0


@pytest.mark.parametrize("mbstd", [0, 4])
def test_minibatch_std_lets_d_tell_a_collapsed_batch_from_a_varied_one(mbstd):
    """The same real image scored inside a varied batch and inside a batch of 8 copies of it: a
    per-image D cannot tell them apart (the inputs are equal); with mbstd, D learns to."""
    import torch.nn.functional as F

    from artforge.models import make_model_config, model_class

    torch.manual_seed(0)
    cfg = make_model_config(
        "gan",
        {"base_channels": 16, "max_channels": 64, "latent_dim": 16, "mbstd": mbstd},
        height=16,
        width=16,
    )
    d = model_class("gan")(cfg).D
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(d.parameters(), lr=3e-3, betas=(0.0, 0.99))
    for _ in range(120):
        real = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1  # varied
        collapsed = real[:1].expand(8, -1, -1, -1)  # one real image, 8 times
        loss = F.softplus(-d(real)).mean() + F.softplus(d(collapsed)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    d.eval()
    with torch.no_grad():
        real = torch.rand(8, 3, 16, 16, generator=g) * 2 - 1
        gap = float(d(real)[0] - d(real[:1].expand(8, -1, -1, -1))[0])
    if mbstd:
        assert gap > 0.5, gap  # 0.78 at 100 steps, 1.1 at 200
    else:
        assert gap == 0.0


def test_mbstd_must_be_a_group_size():
    from artforge.errors import ConfigError
    from artforge.models import make_model_config

    with pytest.raises(ConfigError, match="mbstd"):
        make_model_config("gan", {"mbstd": -1}, height=16, width=16)


# -- training levers: the relativistic pairing loss (R3GAN) ---------------------------------------


def test_rpgan_losses_rank_pairs_and_ignore_a_shared_shift():
    from artforge.losses import gan_d_loss, gan_g_loss

    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    d = gan_d_loss("rpgan", real, fake)
    # -log sigmoid(real - fake), pair by pair
    assert float(d) == pytest.approx(float(-torch.log(torch.sigmoid(real - fake)).mean()), rel=1e-6)
    # only each pair's difference counts: a shift of every logit changes nothing, unlike bce
    assert float(gan_d_loss("rpgan", real + 5, fake + 5)) == pytest.approx(float(d), rel=1e-6)
    assert float(gan_d_loss("bce", real + 5, fake + 5)) != pytest.approx(float(gan_d_loss("bce", real, fake)))
    # G's loss is D's with the roles swapped; equal logits are a coin toss: log 2
    assert float(gan_g_loss("rpgan", fake, real)) == pytest.approx(float(gan_d_loss("rpgan", fake, real)))
    assert float(gan_d_loss("rpgan", real, real)) == pytest.approx(float(np.log(2)))


def _tiny_gan(**fields):
    from artforge.models import make_model_config, model_class

    base = {"base_channels": 8, "max_channels": 32, "latent_dim": 8, "augment": ""}
    return model_class("gan")(make_model_config("gan", {**base, **fields}, height=16, width=16))


def test_rpgan_g_step_sees_the_real_batch_and_d_reg_adds_r1_and_r2():
    """With rpgan G's loss depends on the real images its fakes are paired with (with hinge it
    does not), and the lazy D_reg phase adds R2 on generated images beside R1 on real ones."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1, torch.rand(4, 3, 16, 16, generator=g) * 2 - 1

    def g_loss(model, batch):
        torch.manual_seed(1)  # the same z for both batches
        return float(model.training_step("G", batch, 0)["loss"].detach())

    torch.manual_seed(0)
    rp, hinge = _tiny_gan(loss="rpgan"), _tiny_gan()
    for model in (rp, hinge):
        model.D.eval()  # spectral norm's power iteration stays put between the two calls
    assert g_loss(rp, a) != pytest.approx(g_loss(rp, b))
    assert g_loss(hinge, a) == g_loss(hinge, b)
    assert [p.name for p in rp.phases()] == ["D", "D_reg", "G"]
    assert [p.name for p in hinge.phases()] == ["D", "G"]
    reg = rp.training_step("D_reg", a, 0)
    assert float(reg["r1"]) > 0 and float(reg["r2"]) > 0
    gamma, every = rp.config.rp_gamma, rp.config.r1_every
    expected = 0.5 * gamma * every * float(reg["r1"] + reg["r2"])
    assert float(reg["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    assert [p.name for p in _tiny_gan(loss="rpgan", rp_gamma=0.0).phases()] == ["D", "G"]


# -- training levers: group-balanced sampling ----------------------------------------------------


def test_group_weights_even_out_groups_or_follow_their_square_roots():
    from artforge.training.batches import group_weights

    groups = ["big"] * 90 + ["rare"] * 10
    share = lambda w: float(w[90:].sum())  # noqa: E731 - the rare group's probability
    assert share(group_weights(groups, "group")) == pytest.approx(0.5)
    assert share(group_weights(groups, "sqrt")) == pytest.approx(10**0.5 / (90**0.5 + 10**0.5))
    assert float(group_weights(groups, "sqrt").sum()) == pytest.approx(1.0)


def test_weighted_batches_are_a_pure_function_of_seed_and_step_and_balance_groups():
    from artforge.training.batches import BatchStream, group_weights

    images = torch.zeros(100, 3, 2, 2, dtype=torch.uint8)
    groups = ["big"] * 90 + ["rare"] * 10
    stream = BatchStream(images, 50, seed=3, weights=group_weights(groups, "group"))
    batches = [stream.indices(k) for k in range(40)]
    again = BatchStream(images, 50, seed=3, weights=group_weights(groups, "group"))
    assert all(torch.equal(again.indices(k), batches[k]) for k in (39, 0, 17))  # any order
    assert not torch.equal(BatchStream(images, 50, seed=4, weights=stream.weights).indices(0), batches[0])
    rare = float((torch.cat(batches) >= 90).float().mean())
    assert rare == pytest.approx(0.5, abs=0.05)  # 10% of the images, half of what training sees
    uniform = BatchStream(images, 50, seed=3)
    assert int((torch.cat([uniform.indices(k) for k in range(40)]) >= 90).sum()) == 200  # 20 epochs x 10


def test_training_with_group_sampling_on_sub_folders(tmp_path):
    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.errors import ConfigError
    from artforge.training import Trainer

    root = tmp_path / "icons"
    for group, n in (("common", 20), ("rare", 4)):
        (root / group).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (10 * i, 200 if group == "rare" else 20, 90)).save(
                root / group / f"{i}.png"
            )

    def config(data, sampling):
        return RunConfig(
            family="gan",
            model={"base_channels": 8, "latent_dim": 8},
            data=DataConfig(path=str(data), height=8, width=8, captions="folder", sampling=sampling),
            train=TrainConfig(steps=1, batch_size=8, sample_every=0, ckpt_every=0, grid_n=4),
        )

    t = Trainer(config(root, "group"), tmp_path / "run", progress=False)
    names = t.data.names
    drawn = torch.cat([t.batches.indices(k) for k in range(200)])
    assert float(sum(names[i].startswith("rare/") for i in drawn.tolist()) / len(drawn)) == pytest.approx(
        0.5, abs=0.05
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(flat / f"{i}.png")
    with pytest.raises(ConfigError, match="no groups"):
        Trainer(config(flat, "sqrt"), tmp_path / "run2", progress=False)
    with pytest.raises(ValueError, match="sampling"):
        DataConfig(sampling="balanced")


def test_groups_from_captions_jsonl_skip_broken_and_over_long_lines(tmp_path):
    import json

    from artforge.data.captions import MAX_LINE_BYTES, groups_if_any, read_groups

    lines = [
        json.dumps({"file": "a.png", "text": "grinning face", "group": "Smileys"}),
        json.dumps({"file": "b.png", "text": "x" * (2 * MAX_LINE_BYTES), "group": "Flags"}),  # too long
        "{not json",
        json.dumps({"file": "c.png", "text": "flag", "group": "Flags"}),
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    names = ["a.png", "b.png", "c.png", "d.png"]
    assert read_groups(str(tmp_path), names) == ["Smileys", None, "Flags", None]
    assert groups_if_any(str(tmp_path), names) == ["Smileys", None, "Flags", None]
    assert groups_if_any(str(tmp_path), names, "folder") is None  # flat: no sub-folders
    assert groups_if_any("builtin", names) is None

"""The Trainer, run folders, checkpoints, exact resume and safe loading, on tiny built-in data."""

import json
import pickle

import pytest
import torch

import artforge
from artforge.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from artforge.models.base import load_weights
from artforge.training import Trainer, TrainingError
from artforge.training.batches import BatchStream
from artforge.training.trainer import decayed_lr_factor

TINY = {
    "gan": {"base_channels": 8, "latent_dim": 16},
    "dcgan": {},
    "vae": {"base_channels": 8, "latent_dim": 8},
}


def tiny_config(family="gan", steps=6, size=16, **train):
    return RunConfig(
        family=family,
        model=dict(TINY[family]),
        data=DataConfig(path="builtin", height=size, width=size, builtin_count=40, hflip=True),
        train=TrainConfig(
            steps=steps, batch_size=8, log_every=2, sample_every=0, ckpt_every=0, grid_n=4, **train
        ),
    )


def state_tensors(run_dir):
    sd = load_weights(run_dir / "state" / "model.safetensors")
    ema = run_dir / "state" / "ema.safetensors"
    if ema.exists():
        sd.update({"ema." + k: v for k, v in load_weights(ema).items()})
    return sd


def test_run_folder_contents(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("gan", steps=4), run, progress=False).train()
    for name in (
        "config.json",
        "model.safetensors",
        "metrics.jsonl",
        "data_report.json",
        "state/trainer.pt",
        "state/model.safetensors",
        "plots/losses.png",
        "samples/step-0000004.png",
    ):
        assert (run / name).is_file(), name
    assert not [f for f in run.rglob("*") if ".tmp" in f.name]  # io.py's temp names, state.tmp/
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["family"] == "gan" and cfg["data"]["height"] == 16 and "height" not in cfg["model"]
    assert set(cfg["optim_groups"]) == {"G", "D"}  # resolved per group
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"D/loss", "G/loss", "img_per_s"} <= set(rows[-1])


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_resume_matches_uninterrupted(tmp_path, family):
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(tiny_config(family, steps=10), straight, progress=False).train()
    Trainer(tiny_config(family, steps=5), split, progress=False).train()
    Trainer(tiny_config(family, steps=10), split, progress=False).train(resume=True)
    a, b = state_tensors(straight), state_tensors(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    a, b = load_weights(straight / "model.safetensors"), load_weights(split / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lr_decay_factor():
    assert decayed_lr_factor(0.3, 0.0) == 1.0  # off
    assert [decayed_lr_factor(p, 0.5) for p in (0.0, 0.5, 0.75, 1.0)] == [1.0, 1.0, 0.5, 0.0]
    assert decayed_lr_factor(0.0, 1.0) == 1.0 and decayed_lr_factor(0.9, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr decay must be a fraction"):
        OptimConfig(decay=1.5)


def test_lr_decay_falls_linearly_over_the_last_part_of_the_budget(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("gan", steps=8)
    cfg.train.log_every, cfg.optim.decay = 1, 0.5
    Trainer(cfg, run, progress=False).train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "D/lr" in r]
    resolved = json.loads((run / "config.json").read_text())["optim_groups"]
    for g in ("D", "G"):
        lr0 = resolved[g]["lr"]
        # step k runs with 1 - k/8 of the budget left: full rate to step 4, then 0.75, 0.5, 0.25
        expected = [lr0] * 5 + [lr0 * 0.75, lr0 * 0.5, lr0 * 0.25]
        assert [r[f"{g}/lr"] for r in rows] == pytest.approx(expected)


def test_resume_with_lr_decay_matches_uninterrupted(tmp_path):
    def interrupt(trainer, step):
        if step == 5:
            raise KeyboardInterrupt

    def cfg():
        c = tiny_config("gan", steps=10)
        c.optim.decay = 0.6
        return c

    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(cfg(), straight, progress=False).train()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg(), split, progress=False, hooks=[interrupt]).train()
    Trainer(cfg(), split, progress=False).train(resume=True)
    a, b = state_tensors(straight), state_tensors(split)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_batches_are_a_function_of_step():
    imgs = torch.randint(0, 255, (10, 3, 8, 8), dtype=torch.uint8)
    s1, s2 = BatchStream(imgs, 4, seed=3, hflip=True), BatchStream(imgs, 4, seed=3, hflip=True)
    seq = [s1.batch(k, torch.device("cpu")) for k in range(6)]
    assert torch.equal(s2.batch(4, torch.device("cpu")), seq[4])  # random access = sequential
    # each epoch visits every image once
    idx = torch.cat([s1.indices(k) for k in range(5)])  # 20 indices = 2 epochs
    assert sorted(idx[:10].tolist()) == list(range(10)) and sorted(idx[10:].tolist()) == list(range(10))
    assert not torch.equal(idx[:10], idx[10:])  # reshuffled per epoch
    # tiny data: batch larger than the set still works
    assert BatchStream(imgs[:3], 8, seed=0).batch(0, torch.device("cpu")).shape == (8, 3, 8, 8)


def test_existing_run_not_overwritten(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("vae", steps=2), run, progress=False).train()
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(tiny_config("vae", steps=2), run, progress=False).train()
    assert (run / "model.safetensors").read_bytes() == before


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path):
    run = tmp_path / "run"
    saved = {}

    def poison(trainer, step):  # divergence after the step-2 checkpoint
        if step == 2:
            saved["bytes"] = (run / "model.safetensors").read_bytes()
        if step == 3:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    cfg = tiny_config("vae", steps=8)
    cfg.train.ckpt_every = 2
    with pytest.raises(TrainingError, match="loss became nan at step 3"):
        Trainer(cfg, run, progress=False, hooks=[poison]).train()
    assert (run / "model.safetensors").read_bytes() == saved["bytes"]
    for v in load_weights(run / "model.safetensors").values():
        assert torch.isfinite(v).all()


def test_load_sample_is_bit_exact_and_matches_model(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("gan", steps=3), run, progress=False).train()
    r1, r2 = artforge.load(run, device="cpu"), artforge.load(run, device="cpu")
    a, b = r1.sample(5, seed=7), r2.sample(5, seed=7)
    assert a.shape == (5, 3, 16, 16) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, r1.sample(5, seed=8))
    # sampling in one batch or seed by seed: each seed's image is reproducible alone
    assert torch.equal(r1.sample_seeds([3, 4])[1], r1.sample_seeds([4])[0])
    with pytest.raises(ValueError, match="does not apply to gan"):
        r1.sample(2, seed=0, temperature=0.5)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_planted_pickle_is_refused(tmp_path, writer):
    run = tmp_path / "run"
    Trainer(tiny_config("vae", steps=2), run, progress=False).train()
    marker = tmp_path / "pwned"
    weights = run / "model.safetensors"
    if writer == "pickle":
        weights.write_bytes(pickle.dumps({"w": _Evil(marker)}))
    else:
        torch.save({"w": _Evil(marker)}, weights)
    with pytest.raises(ValueError, match="model.safetensors"):
        artforge.load(run, device="cpu")
    assert not marker.exists()


def test_truncated_weights_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("vae", steps=2), run, progress=False).train()
    w = run / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        artforge.load(run, device="cpu")


def test_newer_format_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config("vae", steps=2), run, progress=False).train()
    cfg = json.loads((run / "config.json").read_text())
    cfg["format_version"] = 99
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="newer than this artforge"):
        artforge.load(run, device="cpu")


def test_epochs_and_minutes_budgets(tmp_path):
    cfg = tiny_config("vae", steps=None)
    cfg.train.epochs = 1.0  # 40 images / batch 8 = 5 steps
    t = Trainer(cfg, tmp_path / "a", progress=False)
    t.train()
    assert t.state.step == 5
    cfg = tiny_config("vae", steps=None)
    cfg.train.minutes = 1e-6
    t = Trainer(cfg, tmp_path / "b", progress=False)
    t.train()
    assert t.state.step == 1  # the budget is checked after each step


def test_trainer_loss_falls_on_tiny_data(tmp_path):
    cfg = tiny_config("vae", steps=60)
    cfg.data.builtin_count = 8
    t = Trainer(cfg, tmp_path / "r", progress=False)
    t.train()
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["main/loss"] for r in rows[:3]) / 3
    last = sum(r["main/loss"] for r in rows[-3:]) / 3
    assert last < 0.7 * first


def test_safetensors_header_starting_with_0x80_loads(tmp_path):
    # the first 8 bytes are the header length; its low byte can be 0x80, like a pickle's first byte
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    for pad in range(300):
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert torch.equal(load_weights(path)["w"], torch.ones(2))

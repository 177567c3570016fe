"""The GPU path, tested on the CPU where it can be: the sync-free step (deferred NaN checks,
device-side logging), rollback within a log interval, the device-resident batch path, the
CUDA-graph fallback, device profiles and chunked sampling. Tests marked ``gpu`` need CUDA
(``pytest -m gpu``; benchmarks/gpu_session.sh runs them on the lent H200)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.optim import EMA, ema_beta
from artforge.profiles import apply_profile
from artforge.sample import generate
from artforge.training import Trainer
from artforge.training.batches import BatchStream
from artforge.training.logbook import Logbook, read_jsonl
from artforge.training.trainer import grads_finite

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny(family: str = "vae", steps: int = 12, device: str = "cpu", **train) -> RunConfig:
    model = {
        "gan": {"base_channels": 8, "latent_dim": 16},
        "vae": {"base_channels": 8, "latent_dim": 8},
        "diffusion": {"base_channels": 8},
    }[family]
    fields = dict(batch_size=8, log_every=3, sample_every=0, ckpt_every=4, grid_n=4, ema=True, device=device)
    fields.update(train)
    return RunConfig(
        family=family,
        model=model,
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=40, hflip=True, cache="memory"),
        train=TrainConfig(steps=steps, **fields),
    )


def all_finite(run: Path) -> bool:
    files = [run / "model.safetensors", *sorted((run / "state").glob("*.safetensors"))]
    return all(torch.isfinite(v).all() for f in files for v in load_file(f).values())


def reference_batch(images: torch.Tensor, s: BatchStream, step: int) -> torch.Tensor:
    """The batch as main's BatchStream.batch computed it before the device path (per step)."""
    lo, hi = s.rank * s.local_size, (s.rank + 1) * s.local_size
    x = images[s.indices(step)[lo:hi]].float().mul_(2 / 255).sub_(1)
    if s.hflip:
        g = torch.Generator().manual_seed(s.seed * 7_919 + step)
        flip = (torch.rand(s.batch_size, generator=g) < 0.5)[lo:hi]
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


# -- the sync-free pieces -------------------------------------------------------------------


def test_logbook_reads_tensors_once_and_averages_like_floats(tmp_path):
    values = [torch.tensor(v) for v in (0.1, 0.7, 1e-8, 3.0)]
    book = Logbook(tmp_path / "m.jsonl")
    for v in values:
        book.add("D", {"loss": v, "lr": 2e-4})
    assert book._waiting and not book._sums  # nothing read from the device yet
    pending = book.pending()  # what a checkpoint saves: settled sums
    assert pending["counts"] == {"D/loss": 4, "D/lr": 4}
    expected = 0.0
    for v in values:
        expected += float(v)
    assert pending["sums"]["D/loss"] == expected  # bit-exact: same order, same doubles
    row = book.flush(step=4)
    assert row["D/loss"] == expected / 4 and row["D/lr"] == pytest.approx(2e-4)
    assert read_jsonl(tmp_path / "m.jsonl") == [row]


def test_grads_finite_is_a_device_flag_and_leaves_gradients_alone():
    ps = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    for p in ps:
        p.grad = torch.randn_like(p)
    before = [p.grad.clone() for p in ps]
    ok = grads_finite(ps)
    assert isinstance(ok, torch.Tensor) and ok.dtype == torch.bool and bool(ok)
    assert all(torch.equal(p.grad, b) for p, b in zip(ps, before, strict=True))
    ps[1].grad[2] = float("inf")
    assert not bool(grads_finite(ps))


def test_foreach_ema_matches_the_per_tensor_update():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    names = {"0.weight", "0.bias", "2.weight"}  # 2.bias is copied, not averaged
    ema = EMA(net, names, half_life=100)
    ref = copy.deepcopy(ema.model)
    for step in range(1, 4):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
        ema.update(net, step * 16, 16)
        beta = ema_beta(min(100, step * 16 * 0.05), 16)  # the update before foreach, by hand
        src = dict(net.named_parameters())
        with torch.no_grad():
            for name, p in ref.named_parameters():
                p.lerp_(src[name], 1.0 - beta) if name in names else p.copy_(src[name])
            for b_ref, b in zip(ref.buffers(), net.buffers(), strict=True):
                b_ref.copy_(b)
    for (k, a), (_, b) in zip(ema.model.state_dict().items(), ref.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


# -- batches gathered where the cache lives --------------------------------------------------


@pytest.mark.parametrize("world", [1, 2])
def test_planned_batches_equal_the_per_step_batches(world):
    images = torch.randint(0, 256, (13, 3, 6, 5), dtype=torch.uint8)
    for rank in range(world):
        s = BatchStream(images, 6, seed=5, hflip=True, rank=rank, world=world)
        s.plan_steps = 4  # several chunks, crossing epochs (13 images, 6 per batch)
        assert s.place(torch.device("cpu")) == "host"
        for step in [*range(11), 3, 40, 2]:  # forwards, back into an old chunk, far ahead
            assert torch.equal(s.batch(step, torch.device("cpu")), reference_batch(images, s, step)), step
        starts = set()
        for step in range(8):  # drawn once per chunk, not once per step
            s.batch(step, torch.device("cpu"))
            starts.add(s._plan[0])
        assert starts == {0, 4}


# -- rollback within a log interval ----------------------------------------------------------


def poison_weights(at_step: int):
    done = []

    def hook(trainer, step):
        if step == at_step and not done:
            done.append(step)
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    return hook


def test_nan_loss_is_caught_within_a_log_interval_and_rolled_back(tmp_path):
    # checkpoints at 0 and 8; the NaN loss of step 5 is seen at the log line of step 9
    cfg = tiny("vae", steps=12, log_every=9, ckpt_every=8)
    t = Trainer(cfg, tmp_path / "run", progress=False, hooks=[poison_weights(5)])
    t.train()
    assert [(r["at_step"], r["to_step"]) for r in t.rollbacks] == [(5, 0)]
    reason = t.rollbacks[0]["reason"]
    assert "main loss became nan at step 5" in reason and "caught at step 8" in reason  # by the checkpoint
    assert t.state.step == 12 and all_finite(tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    losses = [r["main/loss"] for r in rows if "main/loss" in r]
    assert losses and all(v == v for v in losses)  # no NaN line survives the rollback


def test_nan_is_caught_at_the_log_line_before_any_checkpoint(tmp_path):
    cfg = tiny("vae", steps=10, log_every=3, ckpt_every=0)  # checkpoints at 0 and at the end only
    t = Trainer(cfg, tmp_path / "run", progress=False, hooks=[poison_weights(4)])
    t.train()
    (r,) = t.rollbacks
    assert (r["at_step"], r["to_step"]) == (4, 0) and "caught at step 6" in r[
        "reason"
    ]  # s + log_every at most
    assert t.state.step == 10 and all_finite(tmp_path / "run")


def test_nan_gradient_with_a_finite_loss_is_caught(tmp_path):
    cfg = tiny("gan", steps=8, log_every=2, ckpt_every=2)
    armed = {"on": False, "fired": False}
    t = Trainer(cfg, tmp_path / "run", progress=False)

    def poison(g):  # once: the D gradient of step 3 only
        if not armed["on"]:
            return g
        armed["on"], armed["fired"] = False, True
        return g * float("nan")

    next(t.model.D.parameters()).register_hook(poison)

    def arm(trainer, step):
        armed["on"] = step == 3 and not armed["fired"]

    t.hooks.append(arm)
    t.train()
    (r,) = t.rollbacks
    assert (
        r["at_step"] == 3 and r["to_step"] == 2 and "D gradients became non-finite at step 3" in r["reason"]
    )
    assert all_finite(tmp_path / "run") and t.state.step == 8


def test_nan_in_the_last_steps_of_a_minutes_budget_is_rolled_back(tmp_path):
    """A --minutes budget can end between log lines: the flag is read before stopping."""
    cfg = tiny("vae", steps=None, minutes=0.05, log_every=10_000, ckpt_every=0)
    t = Trainer(cfg, tmp_path / "run", progress=False)
    calls = {"n": 0}

    def poison_last(trainer, step):  # NaN weights after every step: the run can only roll back
        calls["n"] += 1
        if step > 0 and not trainer.rollbacks:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    t.hooks.append(poison_last)
    t.train()
    assert len(t.rollbacks) == 1 and t.rollbacks[0]["to_step"] == 0
    assert all_finite(tmp_path / "run")


# -- CUDA graphs: the eager fallback -----------------------------------------------------------


def test_reduce_overhead_off_cuda_runs_eagerly_and_says_so(tmp_path, caplog):
    eager = Trainer(tiny("gan", steps=3), tmp_path / "eager", progress=False)
    eager.train()
    with caplog.at_level(logging.WARNING, logger="artforge.training.trainer"):
        t = Trainer(tiny("gan", steps=3, compile_mode="reduce-overhead"), tmp_path / "graphs", progress=False)
    lines = [r.getMessage() for r in caplog.records if "reduce-overhead" in r.getMessage()]
    assert len(lines) == 1 and "need a CUDA device" in lines[0] and "eagerly on cpu" in lines[0]
    assert t.compile_failures is None and not t.graphs
    t.train()
    a = load_file(tmp_path / "eager" / "model.safetensors")
    b = load_file(tmp_path / "graphs" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the eager step, exactly
    saved = json.loads((tmp_path / "graphs" / "config.json").read_text())
    assert saved["train"]["compile_mode"] == "reduce-overhead"


# -- device profiles ---------------------------------------------------------------------------


def test_gpu_profile_fills_only_unset_settings_on_cuda():
    d = {"family": "gan", "train": {"profile": "gpu", "batch_size": 32}}
    out = apply_profile(d, cuda=True)
    assert out["train"]["batch_size"] == 32  # the user's value wins
    assert out["model"]["base_channels"] == 64 and out["train"]["profile"] == "gpu"
    assert d == {"family": "gan", "train": {"profile": "gpu", "batch_size": 32}}  # not modified
    vae = apply_profile({"family": "vae", "train": {"profile": "gpu"}}, cuda=True)
    assert vae["train"]["batch_size"] == 128 and "model" not in vae


def test_gpu_profile_changes_nothing_on_the_cpu_or_when_not_asked(caplog):
    d = {"family": "gan", "train": {"profile": "gpu"}}
    with caplog.at_level(logging.WARNING, logger="artforge.profiles"):
        out = apply_profile(d, cuda=False)
    assert out == d and "applies on CUDA only" in caplog.text
    assert apply_profile({"family": "gan"}, cuda=True) == {"family": "gan"}  # opt-in until measured
    assert apply_profile({"train": {"profile": "none"}}, cuda=True) == {"train": {"profile": "none"}}


def test_profile_values_are_recorded_in_config_json(tmp_path, monkeypatch):
    """The profile writes plain settings: resume and sample read config.json, never the table."""
    from artforge import cli, profiles

    monkeypatch.setattr(profiles, "_on_cuda", lambda device: True)  # pretend the run is on CUDA
    monkeypatch.setitem(profiles.PROFILES["gpu"], "vae", {"model.base_channels": 12})
    monkeypatch.setitem(profiles.PROFILES["gpu"], "*", {"train.batch_size": 4})
    out = tmp_path / "run"
    args = ["-q", "train", "--data", "builtin", "--builtin-count", "8", "--size", "16", "--model", "vae"]
    args += ["--steps", "2", "--profile", "gpu", "--device", "cpu", "--out", str(out)]
    assert cli.main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["base_channels"] == 12 and saved["train"]["batch_size"] == 4
    monkeypatch.setitem(profiles.PROFILES["gpu"], "vae", {"model.base_channels": 99})  # table changes
    assert cli.main(["-q", "train", "--out", str(out), "--resume", "--steps", "3"]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["base_channels"] == 12


# -- sampling in large chunks ------------------------------------------------------------------


def test_generate_gives_the_same_images_in_any_chunking():
    from artforge.models import GAN, make_model_config

    torch.manual_seed(0)
    model = GAN(make_model_config("gan", {"base_channels": 8, "latent_dim": 16}, height=16, width=16))
    model.eval()
    z = model.sample_latents(10, torch.Generator().manual_seed(3))
    whole = generate(model, z, chunk=10)
    assert whole.device.type == "cpu" and torch.equal(whole, generate(model, z, chunk=3))


def test_a_device_the_machine_lacks_is_one_clear_error(monkeypatch):
    """cuda:N past the GPUs there are (torch's own error comes from deep in the first tensor
    move) and mps off a Mac are refused with what the machine has."""
    from artforge.device import resolve_device

    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
            resolve_device("cuda:1")
        # a one-GPU machine, as far as this check can tell (no GPU here to ask)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=rf"'cuda:{count}': this machine has {count} GPU"):
        resolve_device(f"cuda:{count}")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


# -- on CUDA (pytest -m gpu) -------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("budget", [0.5, 0.0])  # device-resident cache, and the pinned-host fallback
def test_cuda_batches_equal_the_cpu_batches(budget):
    images = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8)
    cpu = BatchStream(images, 16, seed=2, hflip=True)
    gpu = BatchStream(images, 16, seed=2, hflip=True)
    assert gpu.place(torch.device("cuda"), budget=budget) == ("device" if budget else "pinned host")
    for step in [0, 1, 2, 63, 64, 65, 7]:
        assert torch.equal(gpu.batch(step, torch.device("cuda")).cpu(), cpu.batch(step, torch.device("cpu")))


@pytest.mark.gpu
@cuda
def test_cuda_rollback_within_a_log_interval(tmp_path):
    t = Trainer(
        tiny("gan", steps=10, device="cuda", log_every=3, ckpt_every=0), tmp_path / "run", progress=False
    )
    t.hooks.append(poison_weights(4))
    t.train()
    (r,) = t.rollbacks
    assert r["at_step"] == 4 and r["to_step"] == 0 and all_finite(tmp_path / "run")


@pytest.mark.gpu
@cuda
def test_cuda_resume_is_exact(tmp_path):
    """Stopped at step 4 and resumed: the same weights as an uninterrupted run, on CUDA with
    --train.deterministic (fresh processes: cuBLAS reads its workspace setting at start)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}

    def train(out: Path, steps: int, *extra: str) -> None:
        cmd = [sys.executable, "-m", "artforge", "-q", "train", "--data", "builtin", "--builtin-count", "40"]
        cmd += [
            "--size",
            "16",
            "--model",
            "vae",
            "--model.base_channels=8",
            "--batch-size",
            "8",
            "--ckpt-every",
            "4",
        ]
        cmd += [
            "--device",
            "cuda",
            "--train.deterministic=true",
            "--steps",
            str(steps),
            "--out",
            str(out),
            *extra,
        ]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]

    train(tmp_path / "whole", 8)
    train(tmp_path / "part", 4)
    train(tmp_path / "part", 8, "--resume")
    a, b = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "part" / "model.safetensors"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_cuda_graph_step_matches_eager(tmp_path, family):
    """compile_mode reduce-overhead on CUDA: the losses follow the eager run's to float
    rounding (compiled kernels fuse differently, so not bit-exact)."""
    rows = {}
    for mode in ("default", "reduce-overhead"):
        cfg = tiny(family, steps=6, device="cuda", log_every=1, ckpt_every=0, compile_mode=mode)
        cfg.train.compile = mode != "default"
        t = Trainer(cfg, tmp_path / mode, progress=False)
        assert t.graphs == (mode == "reduce-overhead")
        t.train()
        rows[mode] = [
            r for r in read_jsonl(tmp_path / mode / "metrics.jsonl") if "step" in r and "event" not in r
        ]
    key = "G/loss" if family == "gan" else "main/loss"
    a = [r[key] for r in rows["default"] if key in r]
    b = [r[key] for r in rows["reduce-overhead"] if key in r]
    assert len(a) == len(b) == 6 and a == pytest.approx(b, rel=2e-2, abs=2e-3)


def test_fp32_spectral_norm_is_torchs_own_without_autocast():
    from torch.nn.utils.parametrizations import spectral_norm

    from artforge.models.blocks import spectral_norm_all_

    nets = []
    for ours in (True, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 36, 8))
        if ours:
            spectral_norm_all_(net)
        else:
            spectral_norm(net[0]), spectral_norm(net[2])
        x = torch.randn(4, 3, 8, 8)
        for _ in range(3):  # training forwards: one power iteration each
            net(x)
        nets.append(net.state_dict())
    assert nets[0].keys() == nets[1].keys() and all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])


@pytest.mark.gpu
@cuda
def test_spectral_norm_is_computed_in_fp32_under_bf16_autocast():
    """On CUDA, autocast runs torch.mv in bf16: sigma must not (it divides every weight)."""
    from artforge.models.blocks import spectral_norm_all_

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.Linear(64, 256)).cuda()
    spectral_norm_all_(net)
    net.eval()  # no power-iteration update: both reads see the same u, v
    plain = [m.weight.detach().clone() for m in net]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        mixed = [m.weight.detach().clone() for m in net]
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(mixed, plain, strict=True))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "family,model",
    [
        ("gan", {}),
        ("gan", {"ada_target": 0.6}),  # ADA's p stays on the device (augment.adapt_p_)
        ("vae", {}),
        ("diffusion", {}),
    ],
)
def test_cuda_steps_never_wait_for_the_device(tmp_path, family, model):
    """The claim of the sync-free step, checked by CUDA itself: with torch's sync debug mode
    set to "error", any operation that makes the host wait for the GPU (``.item()``,
    ``float(t)``, a blocking copy to the host, ``nonzero``) raises. A warm-up step first
    (lazy initialisation may sync once), then steps and EMA updates between log lines."""
    cfg = tiny(family, steps=20, device="cuda", log_every=1000, ckpt_every=0)
    cfg.model.update(model)
    t = Trainer(cfg, tmp_path / "run", progress=False)
    t._train_step(0)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 6):
            t._train_step(step)
            if t.ema is not None:
                t.ema.update(t.model, (step + 1) * cfg.train.batch_size, cfg.train.batch_size)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    t.check_finite()  # the one read per log interval, outside the checked steps

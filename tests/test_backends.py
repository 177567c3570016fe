"""Speed settings change how the step is computed, never what it computes: channels-last,
optimiser kernels, torch.compile (and its fallback to eager), CPU threads."""

import os
import subprocess
import sys

import pytest
import torch

import artforge
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.models.base import load_weights
from artforge.training import Trainer

TINY = {
    "gan": {"base_channels": 8, "latent_dim": 16},
    "vae": {"base_channels": 8, "latent_dim": 8},
    "diffusion": {"base_channels": 8, "channel_mult": (1, 2), "timesteps": 100, "sample_steps": 4},
}


def config(family="gan", steps=5, **train):
    return RunConfig(
        family=family,
        model=dict(TINY[family]),
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=40),
        train=TrainConfig(steps=steps, batch_size=8, sample_every=0, ckpt_every=0, grid_n=4, **train),
    )


def trained(tmp_path, name, family="gan", **train):
    run = tmp_path / name
    Trainer(config(family, **train), run, progress=False).train()
    return load_weights(run / "state" / "model.safetensors")


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("family", ["gan", "vae", "diffusion"])
def test_channels_last_computes_the_same_step(tmp_path, family):
    nhwc = trained(tmp_path, "nhwc", family, channels_last=True)
    nchw = trained(tmp_path, "nchw", family, channels_last=False)
    assert max_diff(nhwc, nchw) < 1e-4  # the same maths; only float rounding differs
    assert max_diff(nhwc, trained(tmp_path, "nhwc2", family, channels_last=True)) == 0  # deterministic


def test_channels_last_layout_and_saved_weights(tmp_path):
    trainer = Trainer(config("gan", steps=2), tmp_path / "run", progress=False)
    convs = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert trainer.batches.batch(0, trainer.device).is_contiguous(memory_format=torch.channels_last)
    trainer.train()
    # the saved file is an ordinary contiguous safetensors file that samples identically
    from artforge.sample import generate, latents_for_seed

    model = trainer.sampling_model.eval()
    expected = generate(model, latents_for_seed(model, 4, 3))
    assert torch.allclose(artforge.load(tmp_path / "run").sample(4, seed=3), expected, atol=1 / 255)


def test_optimiser_kernels_agree_and_resume_across_them(tmp_path):
    runs = {impl: trained(tmp_path, impl, "gan", optim_impl=impl) for impl in ("loop", "foreach", "fused")}
    assert max_diff(runs["loop"], runs["foreach"]) < 1e-5
    assert max_diff(runs["loop"], runs["fused"]) < 1e-5
    # a run started with one kernel continues with another (the state dicts are the same)
    run = tmp_path / "switch"
    Trainer(config("gan", steps=3, optim_impl="loop"), run, progress=False).train()
    Trainer(config("gan", steps=5, optim_impl="fused"), run, progress=False).train(resume=True)
    assert max_diff(load_weights(run / "state" / "model.safetensors"), runs["loop"]) < 1e-5


@pytest.mark.parametrize("family", ["gan", "vae", "diffusion"])
def test_bf16_autocast_on_the_cpu(tmp_path, family):
    """--amp bf16 runs on a CPU: weights stay fp32, the step is deterministic and resumes
    exactly, and it lands near the fp32 step (bf16 rounds to ~3 significant digits)."""
    trainer = Trainer(config(family, steps=2, amp="bf16"), tmp_path / "probe", progress=False)
    assert trainer.autocast_dtype == torch.bfloat16 and trainer.scaler is None
    bf16 = trained(tmp_path, "bf16", family, amp="bf16")
    floats = [v for v in bf16.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in floats)
    assert max_diff(bf16, trained(tmp_path, "bf16b", family, amp="bf16")) == 0
    fp32 = trained(tmp_path, "fp32", family)
    assert 0 < max_diff(bf16, fp32) < 0.05, max_diff(bf16, fp32)
    run = tmp_path / "split"
    Trainer(config(family, steps=3, amp="bf16"), run, progress=False).train()
    Trainer(config(family, steps=5, amp="bf16"), run, progress=False).train(resume=True)
    assert max_diff(load_weights(run / "state" / "model.safetensors"), bf16) == 0
    # fp16 has no CPU path (it needs CUDA's grad scaler): it runs in fp32
    assert (
        Trainer(config(family, steps=1, amp="fp16"), tmp_path / "fp16", progress=False).autocast_dtype is None
    )


def test_threads_setting(tmp_path):
    before = torch.get_num_threads()
    try:
        Trainer(config("gan", steps=1, threads=1), tmp_path / "run", progress=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=-1)


TRAIN = [
    sys.executable, "-m", "artforge", "train", "--data", "builtin", "--builtin-count", "40",
    "--size", "16", "--steps", "5", "--batch-size", "8", "--model.base_channels=8",
    "--model.latent_dim=16", "--sample-every", "0", "--ckpt-every", "0", "--grid-n", "4",
]  # fmt: skip


def cli(args, env=None):
    return subprocess.run(
        TRAIN + args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
    )


def test_compile_falls_back_to_eager_with_one_clear_line(tmp_path):
    """No C++ compiler (common on laptops): --compile still trains, with the same result as
    eager, and says why in one line instead of dynamo's tracebacks."""
    eager = cli(["--out", str(tmp_path / "eager")])
    assert eager.returncode == 0, eager.stderr
    broken = cli(["--compile", "--out", str(tmp_path / "fallback")], env={"CXX": "/nonexistent/g++"})
    assert broken.returncode == 0, broken.stderr
    assert "torch.compile failed, so the networks run eagerly" in broken.stderr
    assert "No working C++ compiler" in broken.stderr
    assert "Traceback" not in broken.stderr
    a, b = (load_weights(tmp_path / r / "state" / "model.safetensors") for r in ("eager", "fallback"))
    assert max_diff(a, b) == 0


@pytest.mark.slow
def test_compile_matches_eager(tmp_path):
    """A real compiled run (about a minute of compilation on 2 cores) agrees with eager."""
    eager = cli(["--out", str(tmp_path / "eager")])
    compiled = cli(["--compile", "--out", str(tmp_path / "compiled")])
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert "torch.compile failed" not in compiled.stderr
    a, b = (load_weights(tmp_path / r / "state" / "model.safetensors") for r in ("eager", "compiled"))
    assert max_diff(a, b) < 1e-4


def test_speed_flags_reach_the_config_and_may_change_on_resume(tmp_path):
    run = tmp_path / "run"
    first = cli(["--no-channels-last", "--optim-impl", "loop", "--threads", "1", "--out", str(run)])
    assert first.returncode == 0, first.stderr
    cfg = artforge.runs.read_config(run)
    assert (cfg.train.channels_last, cfg.train.optim_impl, cfg.train.threads) == (False, "loop", 1)
    again = subprocess.run(
        [sys.executable, "-m", "artforge", "train", "--out", str(run), "--resume", "--steps", "6",
         "--channels-last", "--optim-impl", "fused", "--no-tf32"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert artforge.runs.read_config(run).train.optim_impl == "fused"

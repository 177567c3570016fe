"""Data-parallel training on 2 CPU processes with gloo: the ranks stay identical, together they
match one process on the global batch, torchrun drives the real CLI, and resume works."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.models.base import load_weights
from artforge.training import Trainer
from artforge.training.batches import BatchStream

SRC = str(Path(__file__).parents[1] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_config(family: str, steps: int) -> RunConfig:
    model = {
        "vae": {"base_channels": 8, "latent_dim": 8},
        "diffusion": {"base_channels": 8, "channel_mult": (1, 2)},
        "gan": {"base_channels": 8, "latent_dim": 8},
    }[family]
    return RunConfig(
        family=family,
        model=model,
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=40, hflip=True, cache="memory"),
        train=TrainConfig(steps=steps, batch_size=8, log_every=2, sample_every=0, ckpt_every=3, grid_n=4),
    )


def _worker(rank: int, world: int, port: int, family: str, steps: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(family, steps), Path(out) / "run", progress=False)
    trainer.train()
    save_file(
        {k: v.contiguous() for k, v in trainer.model.state_dict().items()}, f"{out}/rank{rank}.safetensors"
    )


def spawn(family: str, steps: int, out: Path, world: int = 2) -> list[dict[str, torch.Tensor]]:
    mp.spawn(_worker, args=(world, free_port(), family, steps, str(out)), nprocs=world, join=True)
    return [load_weights(out / f"rank{r}.safetensors") for r in range(world)]


def test_shards_partition_the_global_batch() -> None:
    imgs = torch.randint(0, 255, (10, 3, 4, 4), dtype=torch.uint8)
    whole = BatchStream(imgs, 6, seed=3, hflip=True)
    parts = [BatchStream(imgs, 6, seed=3, hflip=True, rank=r, world=3) for r in range(3)]
    for step in (0, 1, 7):
        cpu = torch.device("cpu")
        assert torch.equal(torch.cat([p.batch(step, cpu) for p in parts]), whole.batch(step, cpu))
    with pytest.raises(ValueError, match="batch size 6 must be divisible by the number of processes \\(4\\)"):
        BatchStream(imgs, 6, seed=0, rank=0, world=4)


@pytest.mark.parametrize("family", ["vae", "diffusion"])
def test_two_ranks_agree_with_each_other_and_with_one_process(family: str, tmp_path: Path) -> None:
    ranks = spawn(family, 6, tmp_path / "ddp")
    single = Trainer(tiny_config(family, 6), tmp_path / "single", progress=False)
    single.train()
    one = single.model.state_dict()
    assert ranks[0].keys() == ranks[1].keys() == one.keys()
    moved = 0.0
    initial = Trainer(tiny_config(family, 6), tmp_path / "init", progress=False).model.state_dict()
    for k in one:
        assert torch.equal(ranks[0][k], ranks[1][k]), k  # bit-identical across ranks
        # the same update as one process on the global batch, up to float summation order
        torch.testing.assert_close(ranks[0][k], one[k], rtol=1e-4, atol=2e-5, msg=k)
        if one[k].is_floating_point():
            moved = max(moved, float((one[k] - initial[k]).abs().max()))
    assert moved > 1e-3  # training moved the weights far more than the tolerance
    # rank 0 alone wrote the run folder, once
    run = tmp_path / "ddp" / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert (run / "model.safetensors").is_file() and (run / "samples" / "step-0000006.png").is_file()


def test_gan_ranks_stay_identical(tmp_path: Path) -> None:
    # batch norm sees each rank's slice (as DDP without SyncBatchNorm); its statistics are
    # averaged after every step, so the ranks still hold the same model
    ranks = spawn("gan", 4, tmp_path)
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    cmd += [str(free_port()), "-m", "artforge", "-q", "train", *args]
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_torchrun_cli_trains_and_resumes_exactly(tmp_path: Path) -> None:
    common = ["--data", "builtin", "--builtin-count", "40", "--size", "16", "--model", "vae"]
    common += ["--latent-dim", "8", "--model.base_channels=8", "--batch-size", "8", "--train.grid_n=4"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    out = torchrun(*common, "--steps", "6", "--out", str(straight))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("trained vae to step 6") == 1  # rank 0 reports, rank 1 is quiet
    out = torchrun(*common, "--steps", "3", "--out", str(split))
    assert out.returncode == 0, out.stderr[-3000:]
    out = torchrun("--out", str(split), "--resume", "--steps", "6")
    assert out.returncode == 0, out.stderr[-3000:]
    a = load_weights(straight / "state" / "model.safetensors")
    b = load_weights(split / "state" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    cfg = json.loads((split / "config.json").read_text())
    assert cfg["train"]["batch_size"] == 8 and cfg["train"]["steps"] == 6


def test_torchrun_rejects_a_batch_that_does_not_split(tmp_path: Path) -> None:
    out = torchrun("--data", "builtin", "--builtin-count", "8", "--size", "16", "--batch-size", "7",
                   "--steps", "1", "--out", str(tmp_path / "r"))  # fmt: skip
    assert out.returncode != 0
    assert "--batch-size 7 must be divisible by the number of processes (2)" in out.stderr

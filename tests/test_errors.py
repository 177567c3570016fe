"""How `artforge` reports a failure (errors.py): a user's mistake is one line, a bug shows its
traceback, and --debug shows the traceback of every error. Also the one resolution step
(resolve.py) that every way of starting a training goes through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import artforge.resolve
from artforge.cli import main
from artforge.config import RunConfig
from artforge.errors import UsageError, is_own_refusal, is_user_error
from artforge.resolve import complete_config, resolve_run

DRY = ["-q", "train", "--data", "builtin", "--size", "16", "--batch-size", "16", "--dry-run"]
TINY = ["-q", "train", "--data", "builtin", "--size", "16", "--batch-size", "16", "--model.base_channels=8"]


def _json(cfg: RunConfig) -> dict:
    """As config.json holds it (tuples become lists)."""
    return json.loads(json.dumps(cfg.to_dict()))


def _error_lines(err: str) -> list[str]:
    return err.strip().splitlines()


# -- the rule -----------------------------------------------------------------------------------


def test_a_user_error_is_one_line(capsys):
    assert main([*DRY, "--train.log_every=0"]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == ["artforge: error: train.log_every must be at least 1, got 0"]


def test_a_bad_data_size_override_is_one_line_not_a_traceback(capsys):
    # before: parse_size's argparse.ArgumentTypeError left main with a traceback
    assert main([*DRY, "--data.size=abc"]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == ["artforge: error: bad size 'abc': use N for NxN or WIDTHxHEIGHT like 80x48"]


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), KeyError("family")])
def test_an_internal_error_shows_its_traceback(bug, monkeypatch, capsys):
    def broken(cfg: RunConfig) -> RunConfig:
        raise bug

    monkeypatch.setattr(artforge.resolve, "complete_config", broken)
    rc = main(DRY)
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert _error_lines(err)[-1].startswith(f"artforge: internal error: {type(bug).__name__}: ")


def test_a_value_error_from_a_library_is_a_bug_not_bad_input(monkeypatch, capsys):
    """A ValueError artforge did not raise itself (here numpy's, from a wrong reshape in the
    code) used to be printed as if the user had given a bad value."""

    def broken(d: dict) -> dict:
        np.zeros(3).reshape(2)  # ValueError: cannot reshape array of size 3 into shape (2,)
        return d

    monkeypatch.setattr(artforge.resolve, "audio_size_default", broken)
    rc = main(DRY)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback (most recent call last)" in err and "reshape" in err
    assert _error_lines(err)[-1].startswith("artforge: internal error: ValueError: cannot reshape")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_user_error(where, capsys):
    argv = (
        ["--debug", *DRY, "--train.log_every=0"]
        if where == "before"
        else [*DRY, "--train.log_every=0", "--debug"]
    )
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "__post_init__" in err
    assert _error_lines(err)[-1] == "artforge: error: train.log_every must be at least 1, got 0"


def test_debug_after_another_command(capsys):
    assert main(["sample", "/no/such/run", "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert _error_lines(err)[-1].startswith("artforge: error: /no/such/run: not a run folder")


def test_the_rule_itself():
    def caught(fn) -> BaseException:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            return e
        raise AssertionError("no exception")

    own = caught(lambda: artforge.resolve.parse_size("abc"))  # a raise statement in artforge
    assert is_own_refusal(own) and is_user_error(own)
    library = caught(lambda: np.zeros(3).reshape(2))
    assert not is_own_refusal(library) and not is_user_error(library)
    assert is_user_error(FileNotFoundError("x")) and is_user_error(UsageError("x"))
    assert not is_user_error(KeyError("x")) and not is_user_error(ValueError("never raised"))


# -- the one resolution step ----------------------------------------------------------------------


def test_resolve_run_order_of_precedence(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('family = "vae"\n[train]\nsteps = 3\nbatch_size = 4\nseed = 5\n')
    cfg = resolve_run(
        {"train.steps": 2, "train.seed": 6, "data.height": 16, "data.width": 24},
        ["--train.seed=7", "--train.lr=0.003"],
        config=toml,
    )
    assert cfg.family == "vae" and cfg.train.batch_size == 4  # the file
    assert cfg.train.steps == 2  # a flag over the file
    assert cfg.train.seed == 7  # an override over a flag
    assert cfg.optim_groups["main"]["lr"] == 0.003  # an alias, then the optimiser defaults
    assert (cfg.data.height, cfg.data.width, cfg.data.modality) == (16, 24, "image")
    assert cfg.model["latent_dim"] and cfg.train.ema is not None  # every default concrete
    assert complete_config(cfg) == cfg  # what the Trainer applies is a no-op on it


def test_dry_run_is_resolve_run_and_the_trainer_writes_it(tmp_path, capsys):
    args = [*TINY[2:], "--model", "vae", "--steps", "1", "--lr", "0.002"]
    assert main([*DRY[:2], *args, "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    given = {"data.path": "builtin", "data.height": 16, "data.width": 16, "train.batch_size": 16}
    given |= {"family": "vae", "train.steps": 1, "optim.lr": 0.002}
    assert _json(resolve_run(given, ["--model.base_channels=8"])) == shown
    out = tmp_path / "run"
    assert main([*DRY[:2], *args, "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert {k: v for k, v in saved.items() if not k.endswith("version")} == json.loads(json.dumps(shown))


def test_resume_rules_read_the_same(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--model", "vae", "--steps", "1", "--out", str(out)]) == 0
    with pytest.raises(UsageError, match=r"^--resume cannot change model settings; start a new run"):
        resolve_run({"model.latent_dim": 4}, saved=out, resume=True)
    with pytest.raises(UsageError, match=r"^--resume cannot change train.seed; only \['channels_last'"):
        resolve_run({"train.seed": 9}, saved=out, resume=True)
    assert resolve_run({"train.steps": 9}, saved=out, resume=True).train.steps == 9
    assert main(["-q", "train", "--out", str(out), "--resume", "--seed", "9"]) == 2
    assert _error_lines(capsys.readouterr().err)[-1].startswith(
        "artforge: error: --resume cannot change train.seed"
    )


def test_api_train_resolves_like_the_command_line(tmp_path):
    d = {"family": "vae", "data": {"height": 16, "width": 16}, "train": {"steps": 1, "batch_size": 16}}
    d["model"] = {"base_channels": 8}
    run = artforge.train(d, tmp_path / "api")
    assert _json(run.config) == _json(resolve_run(config=d))  # read back from its config.json
    assert Path(run.path, "config.json").is_file()

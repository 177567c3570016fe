"""How `artforge` reports a failure (errors.py): a user's mistake is one line, a bug shows its
traceback, and --debug shows the traceback of every error; the studio answers the same two
kinds with a 4xx and the message, or a 500 logged with its traceback. Also the one resolution
step (resolve.py) that every way of starting a training goes through."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import artforge.resolve
from artforge import errors
from artforge.cli import main
from artforge.config import RunConfig
from artforge.errors import (
    ConfigError,
    Conflict,
    DataError,
    InternalError,
    NotFound,
    TrainingError,
    UsageError,
    UserError,
    http_status,
    is_user_error,
)
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

    own = caught(lambda: artforge.resolve.parse_size("abc"))  # a check in artforge: a ConfigError
    assert isinstance(own, ConfigError) and is_user_error(own) and http_status(own) == 400
    library = caught(lambda: np.zeros(3).reshape(2))
    assert not is_user_error(library) and http_status(library) == 500
    assert is_user_error(FileNotFoundError("x")) and is_user_error(UsageError("x"))
    assert not is_user_error(KeyError("x")) and not is_user_error(ValueError("never raised"))
    assert not is_user_error(InternalError("unknown phase")) and http_status(InternalError("x")) == 500
    # no second rule: a ValueError raised by a raise statement in artforge is a bug unless it
    # is one of the hierarchy's classes (the bytecode rule that said otherwise is gone)
    assert not hasattr(errors, "is_own_refusal")
    statuses = {c: http_status(c("x")) for c in (ConfigError, DataError, UsageError, NotFound, Conflict)}
    assert statuses == {ConfigError: 400, DataError: 400, UsageError: 400, NotFound: 404, Conflict: 409}
    assert http_status(TrainingError("x")) == 409 and http_status(FileNotFoundError("x")) == 400
    # callers that caught ValueError / RuntimeError keep working
    assert all(issubclass(c, ValueError) for c in (ConfigError, DataError, UsageError, NotFound, Conflict))
    assert issubclass(TrainingError, RuntimeError) and issubclass(InternalError, RuntimeError)


def test_the_old_names_are_the_hierarchy():
    from artforge.data import DataError as LoaderError
    from artforge.studio import jobs, safety
    from artforge.training import TrainingError as TrainerError
    from artforge.training.checkpoint import SaveError
    from artforge.training.trainer import Diverged

    assert LoaderError is DataError and TrainerError is TrainingError
    assert issubclass(Diverged, TrainingError) and issubclass(SaveError, TrainingError)
    assert safety.NotFound is NotFound and jobs.NotFound is NotFound and jobs.Conflict is Conflict
    assert issubclass(safety.BadRequest, ConfigError) and issubclass(safety.StudioError, UserError)
    assert http_status(safety.StudioError("too large", 413)) == 413


@pytest.mark.parametrize("family", ["gan", "vae", "diffusion"])
def test_an_unknown_phase_is_a_bug(family):
    """A broken invariant of the code (a phase the model does not have) is an InternalError:
    a traceback and "please report it", never the user's mistake."""
    import torch

    from artforge.config import DataConfig
    from artforge.runs import build_model

    model = build_model(
        complete_config(RunConfig(family=family, data=DataConfig(height=16, width=16))), "cpu"
    )
    with pytest.raises(InternalError, match="^unknown phase 'nope'; this model has ") as info:
        model.training_step("nope", torch.zeros(2, 3, 16, 16), 0)
    assert not is_user_error(info.value)


# -- the same two kinds, through the command line and the studio -----------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "gan"
    assert main([*TINY, "--steps", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture
def studio_client(tiny_run):
    from starlette.testclient import TestClient

    from artforge.studio.app import create_app

    app = create_app(tiny_run.parent, device="cpu")
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


def _break_decode(monkeypatch, exc: BaseException) -> None:
    """Make every GAN decode (what `artforge sample` and the studio's generate both run) raise."""
    from artforge.models.gan import GAN

    def decode(self, *args, **kwargs):
        raise exc

    monkeypatch.setattr(GAN, "decode", decode)


def test_a_bad_option_is_one_line_and_a_400_with_its_message(tiny_run, studio_client, capsys):
    assert main(["sample", str(tiny_run), "--truncation", "-1", "--out", str(tiny_run / "x.png")]) == 1
    cli = _error_lines(capsys.readouterr().err)
    assert len(cli) == 1 and cli[0].startswith("artforge: error: ") and "truncation" in cli[0]
    r = studio_client.post("/api/generate", json={"run": "gan", "n": 1, "truncation": -1})
    assert r.status_code == 400 and "truncation" in r.json()["error"]


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (ConfigError("truncation must be at most 2, got 9"), 400),
        (NotFound("gan@best: no scored snapshots"), 404),
        (Conflict("gan is training; stop it first"), 409),
        (FileNotFoundError("no such file: weights"), 400),
    ],
)
def test_a_user_error_deep_in_the_library_reads_the_same_in_both(
    exc, status, tiny_run, studio_client, monkeypatch, capsys, caplog
):
    _break_decode(monkeypatch, exc)
    assert main(["sample", str(tiny_run), "-n", "1", "--out", str(tiny_run / "x.png")]) == 1
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"artforge: error: {exc}"] and "Traceback" not in err
    with caplog.at_level(logging.ERROR, logger="artforge.studio"):
        r = studio_client.post("/api/generate", json={"run": "gan", "n": 1})
    assert (r.status_code, r.json()) == (status, {"error": str(exc)})
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]  # not logged as a fault


@pytest.mark.parametrize(
    "bug",
    [
        InternalError("unknown phase 'nope'; this model has ['main']"),
        ValueError("cannot reshape array of size 3 into shape (2,)"),  # a library's, not a refusal
        KeyError("family"),
    ],
)
def test_a_bug_is_a_traceback_and_a_logged_500_in_both(
    bug, tiny_run, studio_client, monkeypatch, capsys, caplog
):
    _break_decode(monkeypatch, bug)
    assert main(["sample", str(tiny_run), "-n", "1", "--out", str(tiny_run / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in decode" in err
    last = _error_lines(err)[-1]
    assert last.startswith(f"artforge: internal error: {type(bug).__name__}: ") and "please report it" in last
    with caplog.at_level(logging.ERROR, logger="artforge.studio"):
        r = studio_client.post("/api/generate", json={"run": "gan", "n": 1})
    assert r.status_code == 500
    assert r.json() == {"error": f"internal error ({type(bug).__name__}); see the studio's log"}
    logged = [rec for rec in caplog.records if rec.levelno >= logging.ERROR and rec.exc_info]
    assert logged and logged[0].exc_info[1] is bug  # the traceback is in the studio's log


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

"""The run folder's format in one module: the names eval writes and what a fresh start removes."""

from __future__ import annotations

from pathlib import Path

from artforge import runfolder
from artforge.evaluate import eval_files


def test_eval_and_novelty_names_for_a_run_and_a_snapshot() -> None:
    assert runfolder.eval_name() == "eval.json" and runfolder.novelty_name() == "novelty.png"
    snap = "snapshots/step-0000500.safetensors"
    assert runfolder.eval_name(snap) == "eval-step-0000500.json"
    assert runfolder.novelty_name(snap) == "novelty-step-0000500.png"
    assert runfolder.not_made_name() == "notmade.png"
    assert runfolder.not_made_name(snap) == "notmade-step-0000500.png"
    assert runfolder.sample_grid(500) == "step-0000500.png"


def test_eval_files_of_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / runfolder.CONFIG_NAME).write_text("{}")
    assert eval_files(tmp_path) == (tmp_path / "eval.json", tmp_path / "novelty.png")


def test_a_fresh_start_removes_the_log_and_measurements_and_keeps_what_the_user_made(tmp_path: Path) -> None:
    measured = ("eval.json", "eval-step-0000500.json", "novelty.png", "novelty-best.png", "notmade.png")
    for name in (*measured, "notmade-best.png", "walk.gif"):
        (tmp_path / name).write_text("x")
    gone = runfolder.replaced_by_fresh_start(tmp_path)
    for name in ("metrics.jsonl", "samples", "plots", "state", "state.old", "state.tmp", "snapshots"):
        assert name in gone
    assert {*measured, "notmade-best.png"} <= set(gone)
    for kept in ("config.json", "model.safetensors", "generated", "create", "walk.gif", "favourites.json"):
        assert kept not in gone

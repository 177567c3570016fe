"""The studio's HTTP API against the real server (a subprocess) on real run folders.

Every endpoint, the path-safety rules (traversal, encodings, symlinks), the bounds on numbers,
malformed requests, the generation queue under 50 concurrent requests, and training jobs.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artforge
from artforge.studio.jobs import JobManager
from artforge.studio.safety import BadRequest
from artforge.studio.worker import Busy, Cancelled, Lane
from conftest import write_tiny_images
from studio_support import Server, start_server, stop_server


def png(server: Server, url: str) -> np.ndarray:
    status, body, headers = server.request("GET", url)
    assert status == 200 and headers["content-type"] == "image/png", (url, status)
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


# -- the gallery ----------------------------------------------------------------------------


def test_runs_lists_every_run_with_its_files(server):
    runs = {r["id"]: r for r in server.get("/api/runs")["runs"]}
    # (runs that other tests train from the page may be there too; .studio/ never is)
    assert {"gan", "nested/vae", "folder"} <= set(runs) and not any(r.startswith(".") for r in runs)
    gan = runs["gan"]
    assert gan["family"] == "gan" and gan["size"] == [16, 16] and gan["status"] == "finished"
    assert gan["progress"] == 1.0 and gan["last"]["step"] == 30 and gan["has_model"]
    assert gan["latest_sample"]["step"] == 30 and gan["sample_options"] == ["truncation"]
    assert gan["conditioning"] is None
    assert png(server, gan["latest_sample"]["url"]).shape == (146, 146, 3)  # 8x8 images of 16 px, 2 px apart
    assert [p["name"] for p in gan["plots"]] == ["losses"]
    assert png(server, gan["plots"][0]["url"]).shape[2] == 3
    assert runs["nested/vae"]["sample_options"] == ["temperature"]


def test_run_detail_and_eval_results(server, runs_dir):
    # an eval JSON saved in the run folder (artforge eval writes RUN/eval.json) is shown
    result = {"fid": 123.4, "kid": 0.05, "precision": 0.5, "recall": 0.25, "copy_rate": 0.1, "n_fake": 8}
    (runs_dir / "gan" / "eval.json").write_text(json.dumps(result))
    d = server.get("/api/runs/gan")
    assert d["config"]["family"] == "gan" and d["config"]["train"]["steps"] == 30
    assert [s["name"] for s in d["samples"]] == ["step-0000015.png", "step-0000030.png"]
    assert d["data_report"] == {"root": "builtin", "n_images": 64, "skipped": 0}
    assert d["evals"] == [{"file": "eval.json", **result}]
    assert server.get("/api/runs/nested/vae")["family"] == "vae"
    status, body, _ = server.request("GET", "/api/runs/nope")
    assert status == 404 and b"no run 'nope'" in body


def test_live_returns_rows_incrementally(server):
    first = server.get("/api/live/gan?since=0")
    steps = [r["step"] for r in first["rows"]]
    assert steps == [5, 10, 15, 20, 25, 30] and first["total_rows"] == 6 and not first["reset"]
    assert all("D/loss" in r and "G/loss" in r for r in first["rows"])
    assert server.get("/api/live/gan?since=6")["rows"] == []
    assert [r["step"] for r in server.get("/api/live/gan?since=4")["rows"]] == [25, 30]
    again = server.get("/api/live/gan?since=99")  # the file shrank (a resume truncated it): all rows
    assert again["reset"] and len(again["rows"]) == 6


def test_info(server):
    info = server.get("/api/info")
    assert info["limits"]["count"] == 64 and "gan" in info["models"]
    assert Path(info["runs_dir"]) == server.root.resolve()


def test_settings_are_served_from_their_declarations(server, runs_dir):
    """GET /api/settings: the training form's fields and the sample options' ranges are the
    ones declared beside the config fields and in the models, and the requests are checked
    against the same numbers (a value just past a served bound is refused)."""
    from artforge.config import settings
    from artforge.models import MODELS, list_models
    from artforge.studio.jobs import train_argv
    from artforge.studio.safety import MAX_SAMPLE_STEPS

    served = server.get("/api/settings")
    assert served["models"] == list_models() and served["size"]["lo"] == 8 and served["size"]["hi"] == 512
    declared = {s.key: s for s in settings() if s.studio}
    assert set(served["train"]) == set(declared)
    assert served["train"]["batch_size"]["hi"] == declared["batch_size"].studio.hi == 4096
    assert served["train"]["captions"]["choices"] == ["auto", "jsonl", "sidecar", "filename", "folder"]
    assert served["train"]["text_encoder"]["choices"] == ["none", "hash", "minilm"]
    assert served["sample"]["truncation"] == MODELS["gan"].option_ranges["truncation"].to_dict()
    assert served["sample"]["temperature"] == MODELS["vae"].option_ranges["temperature"].to_dict()
    assert served["sample"]["guidance"]["hi"] == 30 and served["sample"]["steps"]["hi"] == MAX_SAMPLE_STEPS
    for key, field in served["train"].items():
        if field["type"] == "choice" or key in ("steps", "minutes"):
            continue
        past = field["hi"] + (1 if field["type"] == "int" else 0.5)
        with pytest.raises(BadRequest, match=key):
            train_argv({**JOB, "out": "x", key: past}, runs_dir, list_models())
    status, out = server.post(
        "/api/generate", {"run": "gan", "truncation": served["sample"]["truncation"]["hi"] + 0.1}
    )
    assert status == 400 and "truncation must be in (0.0, 2.0]" in out["error"]


def test_page_and_assets_are_served_locally(server):
    status, body, _ = server.request("GET", "/")
    assert status == 200 and b"/static/studio.js" in body
    for asset in ("/static/studio.js", "/static/chart.js", "/static/studio.css"):
        assert server.request("GET", asset)[0] == 200
    # nothing is loaded from anywhere else (the studio must work offline)
    page = (
        body + server.request("GET", "/static/studio.js")[1] + server.request("GET", "/static/studio.css")[1]
    )
    assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page


# -- create ---------------------------------------------------------------------------------


def test_generate_matches_the_python_api(server, runs_dir):
    status, out = server.post("/api/generate", {"run": "gan", "n": 4, "seed": 3, "truncation": 0.8})
    assert status == 200, out
    assert len(out["images"]) == 4 and out["folder"].startswith("gan/generated/studio/")
    got = np.stack([png(server, u) for u in out["images"]])
    want = artforge.load(runs_dir / "gan").sample(4, seed=3, truncation=0.8)
    want = (want * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(got, want)  # the images `artforge sample -n 4 --seed 3` writes
    assert png(server, out["grid"]).shape == (2 * 18 + 2, 2 * 18 + 2, 3)


def test_generate_one_image_per_seed_and_zip(server):
    status, out = server.post("/api/generate", {"run": "nested/vae", "seeds": "1,2,5-6", "temperature": 0.7})
    assert status == 200, out
    assert [u.rsplit("/", 1)[1] for u in out["images"]] == [f"seed{s:04d}.png" for s in (1, 2, 5, 6)]
    status, body, _ = server.request("GET", out["zip"])
    assert status == 200
    names = zipfile.ZipFile(io.BytesIO(body)).namelist()
    assert names == ["seed0001.png", "seed0002.png", "seed0005.png", "seed0006.png"]
    # one image per seed: seed 5 alone gives the same picture
    _, alone = server.post("/api/generate", {"run": "nested/vae", "seeds": [5], "temperature": 0.7})
    np.testing.assert_array_equal(png(server, alone["images"][0]), png(server, out["images"][2]))


def test_options_and_prompts_are_checked_per_family(server):
    status, out = server.post("/api/generate", {"run": "gan", "n": 2, "temperature": 0.5})
    assert status == 400 and "does not apply to gan runs" in out["error"]
    status, out = server.post("/api/generate", {"run": "gan", "n": 2, "prompt": "a red square"})
    assert status == 400 and "not text-conditioned" in out["error"]


def test_text_run_takes_a_prompt(tmp_path):
    """A run trained on captions shows a prompt box, and /api/generate draws what
    artforge.load(run).sample(..., prompt=...) draws."""
    from studio_support import train
    from test_text import colour_folder

    data = colour_folder(tmp_path / "colours", n_each=4)
    root = tmp_path / "runs"
    train(root / "text", "--data", str(data), "--text-encoder", "hash", "--steps", "4")
    s = start_server(root, cache=tmp_path / "xdg")
    try:
        (run,) = s.get("/api/runs")["runs"]
        assert run["conditioning"] == "text" and run["sample_options"] == ["truncation"]
        body = {"run": "text", "n": 2, "seed": 4, "prompt": "blue square"}
        status, out = s.post("/api/generate", body)
        assert status == 200, out
        got = np.stack([png(s, u) for u in out["images"]])
        want = artforge.load(root / "text").sample(2, seed=4, prompt="blue square")
        want = (want * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(got, want)
    finally:
        stop_server(s)


def test_interpolate_writes_an_animated_gif(server):
    status, out = server.post("/api/interpolate", {"run": "gan", "seeds": "1,2,3", "frames": 6, "fps": 10})
    assert status == 200, out
    status, body, headers = server.request("GET", out["gif"])
    assert status == 200 and headers["content-type"] == "image/gif"
    gif = Image.open(io.BytesIO(body))
    assert gif.n_frames == 6 == out["frames"] and gif.size == (16, 16)
    status, out = server.post("/api/interpolate", {"run": "gan", "seeds": "1"})
    assert status == 400 and "two seeds" in out["error"]


def test_novelty_shows_nearest_training_images(server, network):
    status, out = server.post("/api/novelty", {"run": "gan", "seeds": "0-1", "k": 3})
    assert status == 200, out
    assert out["n_train"] == 64 and out["data"] == "builtin" and out["threshold"] > 0
    assert [r["seed"] for r in out["rows"]] == [0, 1]
    for row in out["rows"]:
        d = [n["distance"] for n in row["neighbours"]]
        assert len(d) == 3 and d == sorted(d) and row["distance"] == d[0]
        assert row["copy"] == (row["ratio"] < 1)
        assert png(server, row["image"]).shape == (16, 16, 3)
        assert all(n["source"].startswith("builtin:") for n in row["neighbours"])
        assert png(server, row["neighbours"][0]["image"]).shape == (16, 16, 3)


def test_novelty_says_when_the_training_data_is_gone(server):
    status, out = server.post("/api/novelty", {"run": "folder", "seeds": "0"})
    assert status == 409
    assert "not there any more" in out["error"] and "moved-data" in out["error"]


# -- safety ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(runs_dir):
    """A secret beside RUNS_DIR, symlinks from a run to it, and a symlink that stays inside."""
    secret = runs_dir.parent / "secret.txt"
    secret.write_text("TOP SECRET")
    (runs_dir / "gan" / "out-link.txt").symlink_to(secret)
    (runs_dir / "gan" / "out-dir").symlink_to(runs_dir.parent, target_is_directory=True)
    (runs_dir / "gan" / "in-link.json").symlink_to(runs_dir / "gan" / "config.json")
    return secret


TRAVERSALS = [
    "/files/../secret.txt",
    "/files/gan/../../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/gan/%2e%2e/%2e%2e/secret.txt",
    "/files/gan%2f..%2f..%2fsecret.txt",
    "/files/%252e%252e/secret.txt",
    "/files/gan/%252e%252e%252f%252e%252e%252fsecret.txt",
    "/files/..%5csecret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/gan/out-link.txt",
    "/files/gan/out-dir/secret.txt",
    "/files/gan/nothing.png",
    "/files/gan/samples",  # a folder is not a file
    "/files/./gan/config.json",
    "/files/gan/config.json%00.png",
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/api/runs/..%2f..%2fetc",
    "/api/live/..%2fsecret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_nothing_outside_runs_dir_is_served(server, planted, path):
    status, body, _ = server.request("GET", path)
    assert status in (400, 404), (path, status)
    assert b"TOP SECRET" not in body and b"root:" not in body and b"Traceback" not in body
    assert "error" in json.loads(body)


def test_files_inside_are_served_including_symlinks_that_stay_inside(server, planted):
    assert server.request("GET", "/files/gan/config.json")[0] == 200
    status, body, _ = server.request("GET", "/files/gan/in-link.json")
    assert status == 200 and json.loads(body)["family"] == "gan"


def test_body_run_names_cannot_escape_either(server, planted):
    for run in ["../", "..", "/etc", str(planted.parent), "gan/../..", "gan/out-dir"]:
        status, out = server.post("/api/generate", {"run": run, "n": 1})
        assert status in (400, 404), (run, status, out)


BAD_GENERATE = [
    ({"run": "gan", "n": 0}, "between 1 and 64"),
    ({"run": "gan", "n": 65}, "between 1 and 64"),
    ({"run": "gan", "n": 10**12}, "between 1 and 64"),
    ({"run": "gan", "n": 2.5}, "whole number"),
    ({"run": "gan", "n": "many"}, "whole number"),
    ({"run": "gan", "n": True}, "whole number"),
    ({"run": "gan", "n": [4]}, "whole number"),
    ({"run": "gan", "seed": -1}, "between 0"),
    ({"run": "gan", "seed": 2**40}, "between 0"),
    ({"run": "gan", "seeds": "0-999999999"}, "at most 64 seeds"),
    ({"run": "gan", "seeds": "5-2"}, "bad seed range"),
    ({"run": "gan", "seeds": "1;rm -rf"}, "bad seed list"),
    ({"run": "gan", "seeds": list(range(65))}, "1 to 64 seeds"),
    ({"run": "gan", "truncation": 0}, "truncation must be in"),
    ({"run": "gan", "truncation": 1e9}, "truncation must be in"),
    ({"run": "gan", "truncation": "nan"}, "truncation must be in"),
    ({"run": "gan", "prompt": 5}, "prompt must be text"),
    ({"run": 7}, "'run' must be a run name"),
    ({}, "'run' must be a run name"),
]


@pytest.mark.parametrize("body,message", BAD_GENERATE)
def test_generate_bounds(server, body, message):
    status, out = server.post("/api/generate", body)
    assert status == 400 and message in out["error"], (body, status, out)


BAD_OTHER = [
    ("/api/interpolate", {"run": "gan", "frames": 1}, "between 2 and 120"),
    ("/api/interpolate", {"run": "gan", "frames": 100000}, "between 2 and 120"),
    ("/api/interpolate", {"run": "gan", "fps": 0}, "fps must be in"),
    ("/api/interpolate", {"run": "gan", "loop": "yes"}, "true or false"),
    ("/api/interpolate", {"run": "gan", "seeds": "0-16"}, "at most 16 seeds"),
    ("/api/novelty", {"run": "gan", "seeds": "0-8"}, "at most 8 seeds"),
    ("/api/novelty", {"run": "gan", "k": 6}, "between 1 and 5"),
]


@pytest.mark.parametrize("path,body,message", BAD_OTHER)
def test_interpolate_and_novelty_bounds(server, path, body, message):
    status, out = server.post(path, body)
    assert status == 400 and message in out["error"], (body, status, out)


def test_pixel_budget_scales_with_the_run_size(tmp_path):
    from artforge.studio import safety

    safety.check_pixels(64, 256, 256)
    with pytest.raises(safety.BadRequest, match="at most 16 at this size"):
        safety.check_pixels(17, 512, 512)


def test_malformed_requests_get_4xx_with_a_message(server):
    cases = [
        ("POST", "/api/generate", b"{not json", {"Content-Type": "application/json"}, 400),
        ("POST", "/api/generate", b"[1, 2]", {"Content-Type": "application/json"}, 400),
        ("POST", "/api/generate", b'{"run": "gan"}', {"Content-Type": "text/plain"}, 415),
        ("POST", "/api/generate", b"\xff\xfe", {"Content-Type": "application/json"}, 400),
        ("POST", "/api/generate", b"{" + b" " * 70000 + b"}", {"Content-Type": "application/json"}, 413),
        ("GET", "/api/generate", None, {}, 405),
        ("GET", "/api/nothing", None, {}, 404),
        ("GET", "/api/live/gan?since=-1", None, {}, 400),
        ("GET", "/api/live/gan?since=x", None, {}, 400),
        ("GET", "/api/info", None, {"Host": "evil.example:7860"}, 400),  # DNS rebinding
    ]
    for method, path, body, headers, want in cases:
        status, raw, _ = server.request(method, path, body, headers)
        assert status == want, (method, path, status, raw[:200])
        assert json.loads(raw)["error"] and b"Traceback" not in raw


# -- load -----------------------------------------------------------------------------------


def test_50_concurrent_generate_requests_all_succeed(server):
    """The queue takes a burst: every request answered 200, memory bounded (figure in docs)."""
    before = server.peak_rss_mib()
    barrier = threading.Barrier(50)

    def one(i: int) -> int:
        barrier.wait()  # all 50 in flight together
        status, _, _ = server.request("POST", "/api/generate", {"run": "gan", "n": 16, "seed": i})
        return status

    t0 = time.perf_counter()
    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(one, range(50)))
    wall = time.perf_counter() - t0
    peak = server.peak_rss_mib()
    print(
        f"50 concurrent generate requests: {statuses.count(200)} x 200 in {wall:.1f} s; "
        f"server peak RSS {before:.0f} -> {peak:.0f} MiB"
    )
    assert statuses == [200] * 50
    assert peak - before < 400, f"peak RSS grew {peak - before:.0f} MiB"


def test_a_full_lane_answers_busy():
    lane = Lane("test", maxsize=2)
    gate = threading.Event()
    running = lane.submit(gate.wait)  # occupies the worker
    time.sleep(0.1)
    queued = [lane.submit(lambda: 1), lane.submit(lambda: 2)]
    with pytest.raises(Busy, match="queue is full"):
        lane.submit(lambda: 3)
    gate.set()
    assert running.result(5) and [f.result(5) for f in queued] == [1, 2]
    lane.close()


# -- training jobs --------------------------------------------------------------------------


JOB = {
    "data": "builtin",
    "model": "gan",
    "size": 16,
    "steps": 100000,
    "batch_size": 16,
    "base_channels": 8,
    "log_every": 2,
    "sample_every": 10,
    "builtin_count": 32,
}


def test_job_start_live_stop_and_remembered(server, runs_dir):
    status, job = server.post("/api/jobs", {**JOB, "out": "api-job"})
    assert status == 201, job
    assert job["status"] == "running" and job["run"] == "api-job"
    deadline = time.time() + 90
    live = {}
    while time.time() < deadline:
        if (runs_dir / "api-job" / "config.json").exists():
            live = server.get("/api/live/api-job?since=0")
            if len(live["rows"]) >= 2:
                break
        time.sleep(0.5)
    assert live.get("status") == "training" and len(live["rows"]) >= 2, live
    assert 0 < live["progress"] < 1
    # a second studio on the same folder (a restarted one) finds the running job by its pid
    again = JobManager(runs_dir).get(job["id"])
    assert again["status"] == "running" and again["pid"] == job["pid"]
    status, stopped = server.post(f"/api/jobs/{job['id']}/stop", {})
    assert status == 200 and stopped["stop_requested"]
    deadline = time.time() + 60
    while time.time() < deadline and stopped["status"] == "running":
        time.sleep(0.5)
        stopped = server.get(f"/api/jobs/{job['id']}")
    assert stopped["status"] == "stopped" and stopped["returncode"] == 143, stopped
    assert "checkpoint saved" in stopped["log_tail"]
    assert (runs_dir / "api-job" / "state" / "trainer.pt").is_file()  # SIGTERM checkpointed
    assert server.get("/api/live/api-job?since=0")["status"] == "stopped"
    assert JobManager(runs_dir).get(job["id"])["status"] == "stopped"
    assert job["id"] in [j["id"] for j in server.get("/api/jobs")["jobs"]]


BAD_JOBS = [
    ({**JOB, "out": "../escape"}, 400, "out (the run's name)"),
    ({**JOB, "out": ".hidden"}, 400, "out (the run's name)"),
    ({**JOB, "out": "a/b"}, 400, "out (the run's name)"),
    ({**JOB, "out": "gan"}, 409, "already exists"),
    ({**JOB, "out": "x", "model": "gpt"}, 400, "model must be one of"),
    ({**JOB, "out": "x", "data": "/no/such/folder"}, 400, "no such folder"),
    ({**JOB, "out": "x", "size": 4}, 400, "size must be between 8 and 512"),
    ({**JOB, "out": "x", "steps": None, "minutes": None}, 400, "give a budget"),
    ({**JOB, "out": "x", "minutes": -1}, 400, "minutes must be in"),
    (
        {**JOB, "out": "x", "resume": True},
        400,
        "a resume takes only minutes, resume, steps; not 'base_channels'",
    ),
    ({**JOB, "out": "x", "lr": 0}, 400, "lr must be in (0.0, 1.0]"),
    ({**JOB, "out": "x", "lr": 3}, 400, "lr must be in (0.0, 1.0]"),
    ({**JOB, "out": "x", "lr": "nan"}, 400, "lr must be in"),
    ({**JOB, "out": "x", "width": 24}, 400, "give size (a square) or width and height, not both"),
    (
        {k: v for k, v in JOB.items() if k != "size"} | {"out": "x", "width": 24},
        400,
        "give both width and height",
    ),
    (
        {k: v for k, v in JOB.items() if k != "size"} | {"out": "x", "width": 4, "height": 16},
        400,
        "width must be between 8 and 512",
    ),
    ({**JOB, "out": "x", "text_encoder": "bert"}, 400, "text_encoder must be one of"),
    ({**JOB, "out": "x", "captions": "exif"}, 400, "captions must be one of"),
    ({**JOB, "out": "x", "model": "dcgan", "text_encoder": "hash"}, 400, "dcgan takes no captions"),
    ({"resume": "nope", "steps": 50}, 404, "no run 'nope'"),
    ({"resume": "../gan", "steps": 50}, 400, ""),
    ({"resume": "gan", "steps": 10}, 400, "'gan' is at step 30; give more steps than that"),
    ({"resume": "gan", "minutes": 0.0001}, 400, "give more minutes than that"),
    ({"resume": "gan"}, 400, "give a budget"),
    ({"resume": "gan", "steps": 50, "data": "/etc"}, 400, "a resume takes only"),
    ({**JOB, "out": "x", "batch_size": "32; rm"}, 400, "whole number"),
]


@pytest.mark.parametrize("body,want,message", BAD_JOBS)
def test_job_requests_are_checked(server, body, want, message):
    status, out = server.post("/api/jobs", body)
    assert status == want and message in out["error"], (status, out)


def test_cards_get_a_bounded_loss_curve(server):
    from artforge.studio.gallery import loss_curve

    gan = next(r for r in server.get("/api/runs")["runs"] if r["id"] == "gan")
    curve = gan["loss_curve"]
    assert curve and curve[-1]["step"] == gan["last"]["step"]
    assert {"D/loss", "G/loss"} <= set(curve[0]) and all(k == "step" or k.endswith("/loss") for k in curve[0])
    rows = [{"step": i, "img_per_s": 1.0, "G/loss": float(i)} for i in range(1, 1001)]
    long = loss_curve(rows, points=100)
    assert len(long) <= 101 and long[0]["step"] == 1 and long[-1]["step"] == 1000


def test_train_form_fields_become_train_flags(runs_dir):
    """Non-square sizes, captions, text encoder and learning rate reach `artforge train`."""
    from artforge.models import list_models
    from artforge.studio.jobs import train_argv

    spec = {**{k: v for k, v in JOB.items() if k != "size"}, "out": "wide", "width": 48, "height": 16}
    spec |= {"lr": 0.0005, "captions": "filename", "text_encoder": "hash"}
    name, argv = train_argv(spec, runs_dir, list_models())
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert name == "wide" and flags["--size"] == "48x16" and flags["--lr"] == "0.0005"
    assert flags["--captions"] == "filename" and flags["--text-encoder"] == "hash"
    _, square = train_argv({**JOB, "out": "sq"}, runs_dir, list_models())
    assert square[square.index("--size") + 1] == "16x16"


def test_resume_extends_a_stopped_run_through_the_queue_and_the_data_rules(tmp_path, runs_dir):
    """POST /api/jobs {"resume": RUN, "steps": N}: `train --out RUN --resume` with the larger
    budget, waiting its turn behind a running job; a run whose data the studio may not read
    (moved away, or outside its folders) is refused before anything starts."""
    root = tmp_path / "runs"
    shutil.copytree(runs_dir / "gan", root / "gan", symlinks=True)
    shutil.copytree(runs_dir / "folder", root / "folder", symlinks=True)  # its data was deleted
    outside = tmp_path / "outside"
    write_tiny_images(outside, n=8)
    shutil.copytree(runs_dir / "gan", root / "elsewhere", symlinks=True)
    cfg = json.loads((root / "elsewhere" / "config.json").read_text())
    cfg["data"]["path"] = str(outside)
    (root / "elsewhere" / "config.json").write_text(json.dumps(cfg))
    s = start_server(root, "--max-jobs", "1")
    try:
        status, out = s.post("/api/jobs", {"resume": "folder", "steps": 50})
        assert status == 400 and "no such folder" in out["error"], out
        status, out = s.post("/api/jobs", {"resume": "elsewhere", "steps": 50})
        assert status == 403 and "outside the folders the studio may read" in out["error"], out
        status, blocker = s.post("/api/jobs", {**JOB, "out": "blocker"})
        assert status == 201 and blocker["status"] == "running"
        status, job = s.post("/api/jobs", {"resume": "gan", "steps": 40})
        assert status == 201 and job["status"] == "queued" and job["run"] == "gan", job  # the cap holds
        assert job["argv"][-5:] == [
            "--resume",
            "--steps",
            "40",
            "--train.minutes=none",
            "--train.epochs=none",
        ]
        status, again = s.post("/api/jobs", {"resume": "gan", "steps": 60})
        assert status == 409 and "already training 'gan'" in again["error"]
        s.post(f"/api/jobs/{blocker['id']}/stop", {})
        done = _wait(
            lambda: (j := s.get(f"/api/jobs/{job['id']}"))["status"] in ("finished", "failed") and j,
            120,
            "the resumed run to finish",
        )
        assert done["status"] == "finished", done["log_tail"]
        rows = [json.loads(line) for line in (root / "gan" / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows if "img_per_s" in r]
        assert steps[-1] == 40 and steps == sorted(steps)  # continued from 30, not started over
        assert json.loads((root / "gan" / "config.json").read_text())["train"]["steps"] == 40
    finally:
        stop_server(s)


def test_unknown_job(server):
    assert server.request("GET", "/api/jobs/nope")[0] == 404
    assert server.request("POST", "/api/jobs/nope/stop", {})[0] == 404


# -- the command ----------------------------------------------------------------------------


def test_studio_command_warns_for_other_hosts_and_refuses_a_busy_port(tmp_path, runs_dir):
    from artforge.cli import main

    s = start_server(tmp_path / "new-runs", "--host", "0.0.0.0")  # noqa: S104 - what is tested
    try:
        assert (tmp_path / "new-runs").is_dir()  # created
        status, body, _ = s.request("GET", "/api/runs")
        assert status == 200 and json.loads(body) == {"runs": []}
    finally:
        out = stop_server(s)
    assert "WARNING: listening on 0.0.0.0" in s.banner
    assert "artforge studio: stopped" in out and "interrupted" not in out
    holder = start_server(runs_dir)
    try:
        assert main(["studio", str(runs_dir), "--port", str(holder.port)]) == 2
    finally:
        stop_server(holder)


def test_jobs_that_ended_unseen_are_judged_by_their_run(tmp_path, runs_dir):
    """A studio restarted after its jobs ended: a spent budget is 'finished', else 'lost'."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    root = tmp_path / "runs"
    (root / ".studio").mkdir(parents=True)
    shutil.copytree(runs_dir / "gan", root / "gan", symlinks=True)  # other tests plant links out
    rows = [
        {"id": "a", "run": "gan", "argv": ["x"], "pid": dead.pid, "log": ".studio/a.log", "started": 1.0},
        {"id": "b", "run": "gone", "argv": ["x"], "pid": dead.pid, "log": ".studio/b.log", "started": 2.0},
    ]
    (root / ".studio" / "jobs.json").write_text(json.dumps(rows))
    jobs = {j["id"]: j for j in JobManager(root).list()}
    assert jobs["a"]["status"] == "finished" and jobs["b"]["status"] == "lost"
    assert jobs["a"]["returncode"] is None  # not our child: its exit status is unknown


# -- a fair queue ------------------------------------------------------------------------------


def _info(server: Server) -> dict:
    return server.get("/api/info")


def _send_and_leave(server: Server, body: dict) -> socket.socket:
    """Send a POST /api/generate and keep the connection open without reading (the caller
    closes it: a client that went away)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = (
        f"POST /api/generate HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_small_request_is_answered_while_a_long_one_runs_and_a_gone_client_frees_the_worker(
    server, runs_dir
):
    """diffusion n=64 steps=250 (the largest request in range) does not hold up a 1-image GAN
    request; the queue counts both; when the long request's client leaves, its work stops
    and nothing is written."""
    from studio_support import diffusion_run

    diffusion_run(runs_dir)
    outputs = runs_dir / "diff" / "generated" / "studio"
    before = set(outputs.iterdir()) if outputs.exists() else set()
    _wait(lambda: _info(server)["queue"]["generation"] == 0, 60, "an idle generation lane")
    long = _send_and_leave(server, {"run": "diff", "n": 64, "steps": 250, "seed": 1})
    try:
        _wait(lambda: _info(server)["running"]["generation"] == 1, 30, "the long request to start")
        t0 = time.perf_counter()
        status, small = server.post("/api/generate", {"run": "gan", "n": 1, "seed": 5})
        small_s = time.perf_counter() - t0
        assert status == 200 and len(small["images"]) == 1, small
        info = _info(server)
        # the long one is still being worked on, and the queue says so
        assert info["running"]["generation"] == 1 and info["queue"]["generation"] == 1, info
        print(f"1-image GAN request answered in {small_s:.2f} s while diffusion n=64 steps=250 ran")
    finally:
        long.close()  # the client goes away
    t1 = time.perf_counter()
    _wait(lambda: _info(server)["queue"]["generation"] == 0, 30, "the cancelled request to free the worker")
    print(f"cancelled request left the lane after {time.perf_counter() - t1:.2f} s")
    after = set(outputs.iterdir()) if outputs.exists() else set()
    assert after == before  # the cancelled request wrote nothing
    status, again = server.post("/api/generate", {"run": "gan", "n": 1, "seed": 5})
    assert status == 200


def test_lane_round_robin_and_cancel():
    """Chunked work is interleaved between requests; a cancelled one stops at its next turn."""
    lane = Lane("test", maxsize=8)
    order: list[str] = []
    gate = threading.Event()

    def work(name: str, chunks: int):  # type: ignore[no-untyped-def]
        def steps():  # type: ignore[no-untyped-def]
            for k in range(chunks):
                yield
                gate.wait(5)
                time.sleep(0.02)  # a chunk of work
                order.append(f"{name}{k}")
            return name

        return steps

    long = lane.submit(work("L", 50))
    time.sleep(0.05)
    short = lane.submit(work("s", 2))
    doomed = lane.submit(work("d", 50))
    gate.set()
    assert short.result(5) == "s"
    lane.cancel(doomed)
    assert long.result(10) == "L"
    with pytest.raises(Cancelled):
        doomed.result(5)
    assert order.index("s1") < 6  # answered after a few chunks of the long request, not 50
    assert sum(x.startswith("d") for x in order) < 10
    assert lane.pending == 0
    lane.close()


# -- img2img and inpaint ------------------------------------------------------------------------


def _upload(server: Server, run: str) -> tuple[bytes, np.ndarray]:
    """A real picture to upload: the PNG of one of the run's own samples."""
    _, out = server.post("/api/generate", {"run": run, "seeds": [7]})
    status, body, _ = server.request("GET", out["images"][0])
    assert status == 200
    return body, np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _b64(raw: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(raw).decode()


def test_img2img_matches_the_python_api(server, runs_dir):
    raw, pixels = _upload(server, "gan")
    status, out = server.post("/api/img2img", {"run": "gan", "image": _b64(raw), "strength": 0, "n": 2})
    assert status == 200, out
    assert out["folder"].startswith("gan/generated/studio/") and len(out["images"]) == 2
    for url in out["images"]:  # strength 0 gives the picture back
        np.testing.assert_array_equal(png(server, url), pixels)
    body = {"run": "gan", "image": _b64(raw), "strength": 0.6, "n": 2, "seed": 4}
    status, out = server.post("/api/img2img", body)
    assert status == 200, out
    got = np.stack([png(server, u) for u in out["images"]]).astype(int)
    want = artforge.load(runs_dir / "gan").img2img(raw, 0.6, 2, seed=4)
    want = (want * 255).round().permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(got - want).max() <= 1  # the Python API's images (PNG rounding aside)
    assert np.abs(got - pixels).mean() > 1  # and not the picture itself
    names = zipfile.ZipFile(io.BytesIO(server.request("GET", out["zip"])[1])).namelist()
    assert names == [u.rsplit("/", 1)[1] for u in out["images"]]


def test_inpaint_keeps_the_pixels_outside_the_box_and_takes_a_mask_picture(server):
    raw, pixels = _upload(server, "nested/vae")
    body = {"run": "nested/vae", "image": _b64(raw), "box": "0.25,0.25,0.75,0.75", "n": 2, "seed": 1}
    status, out = server.post("/api/inpaint", body)
    assert status == 200, out
    keep = np.ones(pixels.shape[:2], bool)
    keep[4:12, 4:12] = False  # the box on a 16 x 16 picture
    for url in out["images"]:
        got = png(server, url)
        np.testing.assert_array_equal(got[keep], pixels[keep])
        assert np.abs(got[~keep].astype(int) - pixels[~keep]).max() > 0
    mask = np.zeros((16, 16), np.uint8)
    mask[:8] = 255  # fill the top half
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    body = {"run": "nested/vae", "image": _b64(raw), "mask": _b64(buf.getvalue()), "n": 1}
    status, out = server.post("/api/inpaint", body)
    assert status == 200, out
    np.testing.assert_array_equal(png(server, out["images"][0])[8:], pixels[8:])


def test_create_requests_are_checked(server, runs_dir):
    from studio_support import sound_run

    raw, _ = _upload(server, "gan")
    cases = [
        ("/api/img2img", {"run": "gan", "image": _b64(b"not a picture at all")}, 400, "the uploaded image"),
        ("/api/img2img", {"run": "gan", "image": "%%%"}, 400, "not valid base64"),
        ("/api/img2img", {"run": "gan"}, 400, "image"),
        ("/api/img2img", {"run": "gan", "image": _b64(raw), "strength": 1.5}, 400, "strength must be in"),
        ("/api/img2img", {"run": "gan", "image": _b64(raw), "n": 17}, 400, "n must be"),
        ("/api/img2img", {"run": "gan", "image": _b64(raw), "truncation": 0.5}, 400, "not truncation"),
        ("/api/inpaint", {"run": "gan", "image": _b64(raw), "box": "0.5,0,0.2,1"}, 400, "--box needs"),
        ("/api/inpaint", {"run": "gan", "image": _b64(raw)}, 400, "mask"),
        ("/api/img2img", {"run": "gan", "image": "A" * (6 * 2**20)}, 413, "over 4 MiB"),
    ]
    for path, body, want, message in cases:
        status, out = server.post(path, body)
        assert status == want and message in out["error"], (body.get("strength"), status, out)
    sound_run(runs_dir)
    status, out = server.post("/api/img2img", {"run": "sound", "image": _b64(raw)})
    assert status == 409 and "sound run" in out["error"]


def test_project_writes_the_latent_that_reproduces_the_picture(server, runs_dir):
    from artforge.create import load_latents

    raw, pixels = _upload(server, "nested/vae")
    body = {"run": "nested/vae", "image": _b64(raw), "steps": 20, "seed": 2}
    status, out = server.post("/api/project", body)
    assert status == 200, out
    assert out["folder"].startswith("nested/vae/generated/studio/") and out["psnr"] > 10
    np.testing.assert_array_equal(png(server, out["target"]), pixels)
    run = artforge.load(runs_dir / "nested" / "vae")
    z = load_latents(runs_dir / out["folder"] / "latent.safetensors", run.model)
    want = (run.decode(z)[0] * 255).round().permute(1, 2, 0).numpy().astype(int)
    assert np.abs(png(server, out["reconstruction"]).astype(int) - want).max() <= 1  # the latent's picture
    proj = run.project(raw, steps=20, seed=2)
    assert abs(float(proj.psnr[0]) - out["psnr"]) < 1e-2  # the Python API's projection
    from studio_support import diffusion_run

    diffusion_run(runs_dir)
    status, out = server.post("/api/project", {"run": "diff", "image": _b64(raw)})
    assert status == 409 and "not this diffusion" in out["error"] and "img2img" in out["error"], out
    status, out = server.post("/api/project", {"run": "gan", "image": _b64(raw), "steps": 5000})
    assert status == 400 and "steps must be" in out["error"]


# -- the seed browser and favourites --------------------------------------------------------------


def test_seed_pages_and_favourites_saved_in_the_run(server, runs_dir):
    status, out = server.post("/api/seeds", {"run": "nested/vae", "page": 2, "temperature": 0.7})
    assert status == 200, out
    assert out["seeds"] == list(range(48, 72)) and out["starred"] == []
    assert [u.rsplit("/", 1)[1] for u in out["images"]] == [f"seed{s:04d}.png" for s in range(48, 72)]
    # the same picture as generate's per-seed mode for that seed
    _, one = server.post("/api/generate", {"run": "nested/vae", "seeds": [50], "temperature": 0.7})
    np.testing.assert_array_equal(png(server, out["images"][2]), png(server, one["images"][0]))
    fav = runs_dir / "nested" / "vae" / "favourites.json"
    fav.unlink(missing_ok=True)
    try:
        for seed in (50, 12, 50):  # starring twice keeps one entry
            status, got = server.post("/api/favourites", {"run": "nested/vae", "seed": seed})
            assert status == 200, got
        assert [x["seed"] for x in got["favourites"]] == [50, 12]
        assert [x["seed"] for x in json.loads(fav.read_text())["favourites"]] == [50, 12]
        assert [x["seed"] for x in server.get("/api/favourites?run=nested/vae")["favourites"]] == [50, 12]
        _, out = server.post("/api/seeds", {"run": "nested/vae", "page": 2, "temperature": 0.7})
        assert out["starred"] == [50]
        _, got = server.post("/api/favourites", {"run": "nested/vae", "seed": 50, "star": False})
        assert [x["seed"] for x in got["favourites"]] == [12]
        assert not list(fav.parent.glob(".favourites.json.*"))  # the temporary file was renamed
        # a broken file is reported and left as it is, never overwritten
        fav.write_text("{not json")
        status, got = server.post("/api/favourites", {"run": "nested/vae", "seed": 3})
        assert status == 409 and "favourites.json" in got["error"], got
        assert fav.read_text() == "{not json"
        status, got = server.post("/api/seeds", {"run": "nested/vae"})
        assert status == 409 and "favourites.json" in got["error"]
    finally:
        fav.unlink(missing_ok=True)
    for body, message in [
        ({"run": "gan", "page": -1}, "page must be"),
        ({"run": "gan", "page": 2.5}, "page must be"),
    ]:
        status, got = server.post("/api/seeds", body)
        assert status == 400 and message in got["error"], got
    for body, message in [
        ({"run": "gan"}, "seed is required"),
        ({"run": "gan", "seed": -3}, "seed must be"),
        ({"run": "gan", "seed": 1, "star": "yes"}, "star must be"),
        ({"run": "../x", "seed": 1}, ""),
    ]:
        status, got = server.post("/api/favourites", body)
        assert status in (400, 404) and message in got["error"], got
    assert not (runs_dir / "gan" / "favourites.json").exists()


# -- sound runs --------------------------------------------------------------------------------


def test_sound_run_generates_wav_files_and_offers_no_novelty(server, runs_dir):
    import soundfile as sf

    from studio_support import sound_run

    run = sound_run(runs_dir)
    summary = {r["id"]: r for r in server.get("/api/runs")["runs"]}["sound"]
    assert summary["modality"] == "audio" and summary["family"] == "vae"
    status, out = server.post("/api/generate", {"run": "sound", "n": 3, "seed": 2})
    assert status == 200, out
    assert [u.rsplit("/", 1)[1] for u in out["sounds"]] == [f"seed2-{k:04d}.wav" for k in range(3)]
    rate = out["sample_rate"]
    want, want_rate = artforge.load(run).sample_audio(3, seed=2)
    for i, url in enumerate(out["sounds"]):
        status, body, headers = server.request("GET", url)
        assert status == 200 and headers["content-type"] in ("audio/wav", "audio/x-wav"), headers
        wave, got_rate = sf.read(io.BytesIO(body))
        assert got_rate == rate == want_rate and wave.shape == (want.shape[1],)
        np.testing.assert_allclose(wave, want[i].numpy(), atol=2 / 32768)  # 16-bit PCM of the same sound
    names = zipfile.ZipFile(io.BytesIO(server.request("GET", out["zip"])[1])).namelist()
    assert {"seed2-0000.wav", "seed2-0000.png"} <= set(names)
    status, out = server.post("/api/novelty", {"run": "sound", "seeds": "0-1"})
    assert status == 409 and "sound run" in out["error"]


def test_sound_eval_json_is_shown(server, runs_dir):
    from studio_support import sound_run

    run = sound_run(runs_dir)
    # the keys `artforge eval RUN` writes for a sound run (cli._eval_sound)
    result = {"classifier_accuracy_held_out": 0.8, "family_tv_distance": 0.2, "fd_generated": 12.5,
              "sc_roundtrip": 0.1, "n": 8, "generated": {"confidence": 0.5}}  # fmt: skip
    (run / "eval.json").write_text(json.dumps(result))
    evals = server.get("/api/runs/sound")["evals"]
    assert evals == [{"file": "eval.json", **{k: v for k, v in result.items() if k != "generated"}}]


# -- training jobs: a cap, a queue, and data only from allowed folders ---------------------------


def test_jobs_beyond_the_cap_wait_and_data_stays_inside_the_allowed_folders(tmp_path):
    root, allowed = tmp_path / "runs", tmp_path / "shared-data"
    write_tiny_images(allowed / "imgs", n=8)
    write_tiny_images(tmp_path / "elsewhere", n=8)
    (root / "mine").mkdir(parents=True)
    write_tiny_images(root / "mine", n=8)
    s = start_server(root, "--data-root", str(allowed), "--max-jobs", "1")
    try:
        assert _info(s)["jobs"]["max_running"] == 1
        for data in ("/etc", str(tmp_path / "elsewhere"), str(root / ".." / "elsewhere")):
            status, out = s.post("/api/jobs", {**JOB, "out": "x", "data": data})
            assert status == 403 and "outside the folders the studio may read" in out["error"], out
        assert not (root / "x").exists()
        status, first = s.post("/api/jobs", {**JOB, "out": "one", "data": str(allowed / "imgs")})
        assert status == 201 and first["status"] == "running", first
        status, second = s.post("/api/jobs", {**JOB, "out": "two", "data": str(root / "mine")})
        assert status == 201 and second["status"] == "queued" and second["pid"] == 0, second
        time.sleep(1)
        assert s.get(f"/api/jobs/{second['id']}")["status"] == "queued"  # still waiting its turn
        s.post(f"/api/jobs/{first['id']}/stop", {})
        _wait(
            lambda: s.get(f"/api/jobs/{second['id']}")["status"] == "running", 60, "the queued job to start"
        )
        assert s.get(f"/api/jobs/{first['id']}")["status"] == "stopped"
        s.post(f"/api/jobs/{second['id']}/stop", {})
        _wait(lambda: s.get(f"/api/jobs/{second['id']}")["status"] == "stopped", 60, "the second job to stop")
        # a queued job can be cancelled before it starts
        s.post("/api/jobs", {**JOB, "out": "three"})
        status, fourth = s.post("/api/jobs", {**JOB, "out": "four"})
        assert fourth["status"] == "queued"
        status, cancelled = s.post(f"/api/jobs/{fourth['id']}/stop", {})
        assert status == 200 and cancelled["status"] == "stopped" and cancelled["pid"] == 0
        for job in s.get("/api/jobs")["jobs"]:
            if job["status"] == "running":
                s.post(f"/api/jobs/{job['id']}/stop", {})
        _wait(lambda: all(j["status"] != "running" for j in s.get("/api/jobs")["jobs"]), 60, "jobs to stop")
        assert not (root / "four").exists()
    finally:
        stop_server(s)


def test_the_studios_own_records_are_never_served(server, runs_dir):
    (runs_dir / ".studio").mkdir(exist_ok=True)
    (runs_dir / ".studio" / "jobs.json").touch()
    link = runs_dir / "gan" / "jobs-link.json"
    if not link.exists():
        link.symlink_to(runs_dir / ".studio" / "jobs.json")
    (runs_dir / "gan" / ".hidden.png").write_bytes(b"x")
    for path in ("/files/.studio/jobs.json", "/files/gan/jobs-link.json", "/files/gan/.hidden.png"):
        status, body, _ = server.request("GET", path)
        assert status == 404, (path, status)


def test_upscale_enlarges_a_picture_of_the_folder_and_refuses_what_it_cannot_use(server, runs_dir):
    from studio_support import upscaler_run

    upscaler_run(runs_dir)
    grid = next((runs_dir / "gan" / "samples").glob("step-*.png")).relative_to(runs_dir).as_posix()
    status, out = server.post("/api/upscale", {"run": "up", "image": f"/files/{grid}?v=1"})
    assert status == 200 and out["size"] == [32, 32] and out["folder"].startswith("up/generated/studio/")
    status, _, _ = server.request("GET", out["image"])
    assert status == 200
    for body, code, words in [
        ({"run": "gan", "image": f"/files/{grid}"}, 409, "not an upscaler run"),
        ({"run": "up", "image": "/files/gan/config.json"}, 400, "config.json: not an image"),
        ({"run": "up", "image": "/files/../outside.png"}, 400, ""),
        ({"run": "up", "image": "gan/samples/x.png"}, 400, "/files/"),
        ({"run": "up", "image": "/files/gan/nothing.png"}, 404, ""),
    ]:
        status, answer = server.post("/api/upscale", body)
        assert status == code and words in answer["error"], (body, status, answer)

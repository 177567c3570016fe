"""Start from an image (project, img2img, inpaint), style mixing, latent files and snapshots.

Tiny runs are trained once per module (16x16, 30 steps): the tests measure the behaviour the
commands promise (exact pixels kept, strength 0 = the input, determinism, projection closer
than random samples, snapshots bounded and loadable), not image quality.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import artforge
from artforge.cli import main
from artforge.create import load_image, psnr
from artforge.snapshots import list_snapshots, to_remove
from conftest import write_tiny_images

TINY = [
    "--size",
    "16",
    "--batch-size",
    "16",
    "--model.base_channels=8",
    "--steps",
    "30",
    "--sample-every",
    "0",
]


def _train(root: Path, family: str, *extra: str) -> Path:
    out = root / f"run-{family}"
    rc = main(
        ["-q", "train", "--data", str(root / "data"), "--model", family, "--out", str(out), *TINY, *extra]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("create")
    write_tiny_images(base / "data", n=16)
    return base


@pytest.fixture(scope="module")
def gan(root: Path) -> Path:
    return _train(root, "gan", "--snapshot-every", "3", "--snapshot-keep", "4")


@pytest.fixture(scope="module")
def vae(root: Path) -> Path:
    return _train(root, "vae")


@pytest.fixture(scope="module")
def diffusion(root: Path) -> Path:
    return _train(root, "diffusion", "--model.sample_steps=5")


@pytest.fixture(scope="module")
def target(root: Path) -> Path:
    return root / "data" / "img_003.png"  # a training image: a disc on a flat ground


@pytest.fixture(scope="module")
def mask(root: Path) -> Path:
    m = Image.new("L", (16, 16), 0)
    m.paste(255, (4, 4, 12, 12))  # fill the middle, keep the border
    m.save(root / "mask.png")
    return root / "mask.png"


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# -- projection -----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gan", "vae"])
def test_projection_is_closer_than_random_samples(family, request, target):
    run = artforge.load(request.getfixturevalue(family), device="cpu")
    proj = run.project(target, steps=30, seed=0)
    randoms = run.sample(32, seed=1)
    random_psnr = psnr(randoms, proj.targets.expand_as(randoms))
    assert proj.latents.shape == (1, run.model.config.latent_dim)
    # better than the best of 32 random samples, and well above their mean
    assert float(proj.psnr[0]) > float(random_psnr.max())
    assert float(proj.psnr[0]) > float(random_psnr.mean()) + 1.0


def test_projection_is_deterministic_under_a_seed(gan, target):
    run = artforge.load(gan, device="cpu")
    a = run.project(target, steps=10, seed=3)
    b = run.project(target, steps=10, seed=3)
    c = run.project(target, steps=10, seed=4)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.images, b.images)
    assert not torch.equal(a.latents, c.latents)


def test_project_cli_latents_reload_bit_exactly(gan, target, tmp_path, capsys):
    out = tmp_path / "proj"
    assert (
        main(["-q", "project", str(gan), "--image", str(target), "--steps", "10", "--gif", "--out", str(out)])
        == 0
    )
    for name in ("latent.safetensors", "reconstruction.png", "target.png", "progress.gif", "project.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "project.json").read_text())["psnr"] > 0
    # the latent decodes, through sample --latents, to the very reconstruction
    assert (
        main(
            [
                "-q",
                "sample",
                str(gan),
                "--latents",
                str(out / "latent.safetensors"),
                "--out",
                str(tmp_path / "s") + "/",
            ]
        )
        == 0
    )
    assert np.array_equal(_png(tmp_path / "s" / "latent0000.png"), _png(out / "reconstruction.png"))
    assert (
        main(
            [
                "-q",
                "interpolate",
                str(gan),
                "--latents",
                str(out / "latent.safetensors"),
                "--seeds",
                "2",
                "--frames",
                "4",
                "--out",
                str(tmp_path / "w.gif"),
            ]
        )
        == 0
    )
    api_run = artforge.load(gan, device="cpu")
    assert torch.equal(
        api_run.decode(api_run.read_latents(out / "latent.safetensors")),
        api_run.project(target, steps=10).images,
    )
    # a latent file of another shape is refused with one line
    vae_run = artforge.load(gan, device="cpu")
    from artforge.create import save_latents

    save_latents(torch.zeros(1, 7), tmp_path / "bad.safetensors", {})
    capsys.readouterr()
    assert (
        main(
            [
                "-q",
                "sample",
                str(gan),
                "--latents",
                str(tmp_path / "bad.safetensors"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert "bad.safetensors" in err and len(err.splitlines()) == 1
    assert vae_run.model.config.latent_dim != 7


def test_diffusion_runs_cannot_be_projected(diffusion, target):
    with pytest.raises(ValueError, match="img2img"):
        artforge.load(diffusion, device="cpu").project(target)


# -- img2img --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gan", "vae", "diffusion"])
def test_strength_zero_returns_the_input_and_one_ignores_it(family, request, target):
    run = artforge.load(request.getfixturevalue(family), device="cpu")
    given = load_image(target, run.config.data)
    same = run.img2img(target, 0.0, 3, seed=5)
    assert torch.equal(same, given.expand(3, -1, -1, -1))
    ignored = run.img2img(target, 1.0, 3, seed=5)
    assert torch.equal(ignored, run.sample(3, seed=5))  # exactly sample(n, seed)'s images


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_img2img_is_deterministic_and_moves_with_strength(family, request, target):
    run = artforge.load(request.getfixturevalue(family), device="cpu")
    given = load_image(target, run.config.data)
    opts = {"project_steps": 5} if family == "gan" else {}
    a = run.img2img(target, 0.5, 2, seed=1, **opts)
    assert torch.equal(a, run.img2img(target, 0.5, 2, seed=1, **opts))
    assert not torch.equal(a, run.img2img(target, 0.5, 2, seed=2, **opts))
    if family == "diffusion":  # SDEdit: a lower strength stays closer to the input
        dist = [float((run.img2img(target, s, 4, seed=1) - given).abs().mean()) for s in (0.1, 0.9)]
        assert dist[0] < dist[1]


def test_strength_outside_zero_one_is_refused(diffusion, target, tmp_path, capsys):
    out = tmp_path / "o"
    assert (
        main(
            ["-q", "img2img", str(diffusion), "--image", str(target), "--strength", "1.5", "--out", str(out)]
        )
        == 1
    )
    assert "strength must be in [0, 1]" in capsys.readouterr().err
    assert not out.exists()


# -- inpainting -----------------------------------------------------------------------------


@pytest.mark.parametrize("resample", ["1", "2"])
def test_diffusion_inpainting_keeps_known_pixels_exactly(diffusion, target, mask, tmp_path, resample):
    out = tmp_path / "inp"
    args = ["-q", "inpaint", str(diffusion), "--image", str(target), "--mask", str(mask), "-n", "2"]
    assert main([*args, "--resample", resample, "--out", str(out)]) == 0
    files = sorted(out.glob("inpaint-seed0-000*.png"))
    assert len(files) == 2
    given = (
        (load_image(target, artforge.load(diffusion).config.data)[0] * 255)
        .round()
        .byte()
        .permute(1, 2, 0)
        .numpy()
    )
    keep = _png(mask)[..., 0] < 128
    for f in files:
        got = _png(f)
        assert np.array_equal(got[keep], given[keep])
    assert not np.array_equal(_png(files[0])[~keep], _png(files[1])[~keep])  # two different fills
    run = artforge.load(diffusion, device="cpu")
    a = run.inpaint(target, mask, 2, seed=0, resample=int(resample))
    assert torch.equal(a, run.inpaint(target, mask, 2, seed=0, resample=int(resample)))


def test_gan_inpainting_keeps_known_pixels_exactly(gan, target, mask):
    run = artforge.load(gan, device="cpu")
    given = load_image(target, run.config.data)
    out = run.inpaint(target, mask, 2, seed=0, project_steps=5)
    keep = torch.from_numpy(_png(mask)[..., 0] < 128)
    assert torch.equal(out[:, :, keep], given.expand(2, -1, -1, -1)[:, :, keep])
    assert not torch.equal(out[0], out[1])


# -- inputs are checked like training data --------------------------------------------------


def _bomb() -> bytes:
    """A PNG claiming 40000 x 40000 pixels but holding almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "corrupt or truncated"),
        ("bomb.png", _bomb(), "too large"),
        ("notes.png", b"just some text\n", "not an image"),
    ],
)
@pytest.mark.parametrize("command", ["project", "img2img", "inpaint"])
def test_bad_inputs_give_one_line_and_write_nothing(gan, mask, tmp_path, capsys, name, data, reason, command):
    bad = tmp_path / name
    bad.write_bytes(data)
    out = tmp_path / "out"
    extra = {"project": [], "img2img": ["--strength", "0.5"], "inpaint": ["--mask", str(mask)]}[command]
    assert main(["-q", command, str(gan), "--image", str(bad), *extra, "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and reason in err
    assert not out.exists()


def test_uploaded_bytes_are_checked_like_files(gan, target):
    run = artforge.load(gan, device="cpu")
    from_bytes = run.img2img(target.read_bytes(), 0.0)
    assert torch.equal(from_bytes, load_image(target, run.config.data))
    with pytest.raises(ValueError, match=r"^cat\.png: too large"):
        load_image(_bomb(), run.config.data, name="cat.png")
    with pytest.raises(ValueError, match=r"^upload: corrupt or truncated"):
        run.project(b"\x89PNG\r\n\x1a\n" + bytes(40))


def test_a_bad_mask_is_named(gan, target, tmp_path, capsys):
    bad = tmp_path / "mask.png"
    bad.write_bytes(_bomb())
    assert (
        main(
            [
                "-q",
                "inpaint",
                str(gan),
                "--image",
                str(target),
                "--mask",
                str(bad),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "too large" in err
    assert not (tmp_path / "o").exists()


# -- style mixing and latent arithmetic -----------------------------------------------------


def test_style_mixing(gan, diffusion, tmp_path, capsys):
    from artforge.create import mix_layers

    run = artforge.load(gan, device="cpu")
    a, b = run.sample_seeds([1]), run.sample_seeds([2])
    last = len(mix_layers(run.model))
    assert torch.equal(run.mix(1, 2, last), a)  # no layer takes B's statistics: A itself
    mixed = run.mix(1, 2, 0)
    assert not torch.equal(mixed, a) and not torch.equal(mixed, b)
    assert torch.equal(mixed, run.mix(1, 2, 0))
    assert (
        main(["-q", "sample", str(gan), "--mix", "1,2", "--at", "1", "--out", str(tmp_path / "m.png")]) == 0
    )
    assert (
        main(["-q", "sample", str(diffusion), "--mix", "1,2", "--at", "1", "--out", str(tmp_path / "d.png")])
        == 1
    )
    assert "cannot mix styles" in capsys.readouterr().err


def test_latent_arithmetic(vae):
    run = artforge.load(vae, device="cpu")
    z = run.latent([1, 2])
    assert torch.equal(run.decode(z), run.sample_seeds([1, 2]))
    assert run.decode(z[:1] - z[1:] + run.latent(3)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="latents must be"):
        run.decode(torch.zeros(1, 3))


# -- snapshots ------------------------------------------------------------------------------


def test_thinning_keeps_first_newest_and_best():
    steps = list(range(1, 26))
    removed = to_remove(steps, 20, protect={2})
    kept = sorted(set(steps) - set(removed))
    assert len(kept) == 20 and {1, 2, 25} <= set(kept)
    assert max(removed) < 15  # the old end thins first


def test_snapshots_are_written_bounded_and_load(gan, capsys, tmp_path):
    snaps = list_snapshots(gan)
    steps = [s for s, _ in snaps]
    assert len(steps) <= 4 and steps[0] == 3 and steps[-1] == 30 and all(s % 3 == 0 for s in steps)
    # the newest snapshot is the final sampling weights, bit for bit
    last = artforge.load(f"{gan}@30", device="cpu")
    final = artforge.load(gan, device="cpu")
    assert last.weights.startswith("snapshots/")
    assert all(torch.equal(v, final.model.state_dict()[k]) for k, v in last.model.state_dict().items())
    older = artforge.load(f"{gan}@{steps[1]}", device="cpu")
    assert not torch.equal(older.sample(2, seed=0), final.sample(2, seed=0))
    assert (
        main(
            ["-q", "sample", f"{gan}@{steps[1]}", "-n", "2", "--seed", "0", "--out", str(tmp_path / "g.png")]
        )
        == 0
    )
    capsys.readouterr()
    for ref, msg in ((f"{gan}@7", "no snapshot of step 7"), (f"{gan}@best", "eval")):
        assert main(["-q", "sample", ref, "--out", str(tmp_path / "x.png")]) == 1
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1


def test_snapshots_of_undone_steps_are_dropped_on_resume(root, tmp_path):
    run = tmp_path / "r"
    args = [
        "-q",
        "train",
        "--data",
        str(root / "data"),
        "--out",
        str(run),
        *TINY[:-2],
        "--snapshot-every",
        "3",
    ]
    assert main([*args, "--steps", "12", "--ckpt-every", "6"]) == 0
    assert [s for s, _ in list_snapshots(run)] == [3, 6, 9, 12]
    # a killed run had written a snapshot after its last checkpoint (step 12): resume undoes it
    (run / "snapshots" / "step-0000014.safetensors").write_bytes(
        (run / "snapshots" / "step-0000012.safetensors").read_bytes()
    )
    assert main(["-q", "train", "--out", str(run), "--resume", "--steps", "18"]) == 0
    assert [s for s, _ in list_snapshots(run)] == [3, 6, 9, 12, 15, 18]


def test_eval_snapshots_writes_table_and_best_loads(root, tmp_path, network, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the feature cache stays in tmp
    run = tmp_path / "e"
    args = ["-q", "train", "--data", str(root / "data"), "--out", str(run), *TINY[:-2], "--steps", "9"]
    assert main([*args, "--snapshot-every", "3", "--snapshot-keep", "3"]) == 0
    assert main(["-q", "eval", str(run), "--snapshots", "-n", "6", "--inception", str(network)]) == 0
    table = json.loads((run / "snapshots.json").read_text())
    assert [r["step"] for r in table["rows"]] == [3, 6, 9, "final"]
    assert table["best"] == min(table["rows"], key=lambda r: r["fid"])["step"]
    assert (run / "snapshots.md").is_file() and (run / "plots" / "snapshots.png").is_file()
    best = artforge.load(f"{run}@best", device="cpu")
    assert best.weights == next(r["weights"] for r in table["rows"] if r["step"] == table["best"])
    # one snapshot at a time: its own eval file in the run folder, no "RUN@3" folder appears
    assert main(["-q", "eval", f"{run}@3", "-n", "6", "--inception", str(network)]) == 0
    assert (run / "eval-step-0000003.json").is_file() and (run / "novelty-step-0000003.png").is_file()
    assert main(["-q", "interpolate", f"{run}@3", "--frames", "3"]) == 0
    assert (run / "walk.gif").is_file() and not Path(f"{run}@3").exists()


def test_keep_best_keeps_the_lowest_monitor_fid_and_resume_continues_it(root, tmp_path, network, monkeypatch):
    """--keep-best: snapshots/best.safetensors holds the sampling weights of the step with the
    lowest monitor FID (bit for bit the snapshot of that step), RUN@best loads them when no eval
    table chose a best, and a resumed run compares against its old record."""
    from safetensors.torch import load_file

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "kb"
    args = ["-q", "train", "--data", str(root / "data"), "--out", str(run), *TINY[:-4], "--sample-every", "0"]
    watch = ["--monitor-every", "2", "--monitor-n", "8", "--snapshot-every", "2", "--snapshot-keep", "50"]
    assert main([*args, "--steps", "6", *watch, "--keep-best"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    fids = {r["step"]: r["monitor/fid"] for r in rows if "monitor/fid" in r}
    assert sorted(fids) == [2, 4, 6]
    info = json.loads((run / "snapshots" / "best.json").read_text())
    best_step = min(fids, key=lambda s: fids[s])
    assert (info["step"], info["fid"], info["n"]) == (best_step, fids[best_step], 8)
    kept = load_file(run / "snapshots" / "best.safetensors")
    same = load_file(run / "snapshots" / f"step-{best_step:07d}.safetensors")
    assert kept.keys() == same.keys() and all(torch.equal(kept[k], same[k]) for k in kept)
    assert artforge.load(f"{run}@best", device="cpu").weights == "snapshots/best.safetensors"
    # resumed: only a lower FID than the record replaces it
    assert main(["-q", "train", "--out", str(run), "--resume", "--steps", "10"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    fids = {r["step"]: r["monitor/fid"] for r in rows if "monitor/fid" in r}
    assert sorted(fids) == [2, 4, 6, 8, 10]
    info = json.loads((run / "snapshots" / "best.json").read_text())
    assert info["step"] == min(fids, key=lambda s: fids[s]) and info["fid"] == min(fids.values())
    # --keep-best without the monitor is refused before training, naming what is missing
    assert main([*args, "--overwrite", "--keep-best"]) == 1


def test_snapshots_of_a_diverged_history_are_replaced_after_rollback(tmp_path):
    from safetensors.torch import load_file

    from artforge.config import DataConfig, RunConfig, TrainConfig
    from artforge.evaluate import training_hooks
    from artforge.training.trainer import Trainer

    cfg = RunConfig(
        family="vae",
        model={"base_channels": 8, "latent_dim": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=40, cache="memory"),
        train=TrainConfig(
            steps=9, batch_size=8, sample_every=0, ckpt_every=4, snapshot_every=1, nan_lr_factor=0.25
        ),
    )
    run = tmp_path / "r"
    before: dict[str, bytes] = {}

    def poison(trainer, step):  # after step 6: remember snapshot 5, then break a weight once
        if step == 6 and not before:
            before["5"] = (run / "snapshots" / "step-0000005.safetensors").read_bytes()
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))

    t = Trainer(cfg, run, progress=False, hooks=[poison, *training_hooks(cfg.train)])
    t.train()
    assert [(r["at_step"], r["to_step"]) for r in t.rollbacks] == [(6, 4)]
    assert [s for s, _ in list_snapshots(run)] == list(range(1, 10))
    # step 5 was trained again at the lower rate: its snapshot is the new history's
    assert (run / "snapshots" / "step-0000005.safetensors").read_bytes() != before["5"]
    for _, p in list_snapshots(run):
        assert all(bool(torch.isfinite(v).all()) for v in load_file(p).values() if v.is_floating_point())


def test_dcgan_projects_and_mixes(root):
    out = root / "run-dcgan"
    args = ["-q", "train", "--data", str(root / "data"), "--model", "dcgan", "--out", str(out)]
    assert main([*args, *TINY[:4], "--model.ngf=8", "--model.ndf=8", *TINY[5:]]) == 0
    run = artforge.load(out, device="cpu")
    proj = run.project(root / "data" / "img_000.png", steps=10, seed=0)
    randoms = run.sample(32, seed=1)
    assert float(proj.psnr[0]) > float(psnr(randoms, proj.targets.expand_as(randoms)).mean())
    from artforge.create import mix_layers

    assert torch.equal(run.mix(1, 2, len(mix_layers(run.model))), run.sample_seeds([1]))


def test_inpaint_box_fills_a_rectangle_without_a_mask_file(diffusion, target, tmp_path, capsys):
    out = tmp_path / "box"
    args = ["-q", "inpaint", str(diffusion), "--image", str(target), "-n", "1", "--out", str(out)]
    assert main([*args, "--box", "0.25,0.25,0.75,0.75"]) == 0
    (got,) = sorted(out.glob("inpaint-seed0-000*.png"))
    data = artforge.load(diffusion).config.data
    given = (load_image(target, data)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    h, w = data.height, data.width
    keep = np.ones((h, w), dtype=bool)
    keep[round(h / 4) : round(3 * h / 4), round(w / 4) : round(3 * w / 4)] = False
    assert np.array_equal(_png(got)[keep], given[keep])  # outside the box: the input exactly
    assert not np.array_equal(_png(got)[~keep], given[~keep])  # inside: filled
    capsys.readouterr()
    for bad in ("0.5,0.5,0.25,1", "a,b,c,d", "0,0,1"):
        assert main([*args, "--box", bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith("artforge: error: --box") and err.count("\n") == 1, err


# -- the same files under the same names from the CLI, the API and the studio ---------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_project_writes_the_same_files_from_the_cli_the_api_and_the_studio(gan: Path, target: Path, tmp_path):
    from artforge.studio.worker import ModelCache, Options
    from artforge.studio.worker import project as studio_project

    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert (
        main(["-q", "project", str(gan), "--image", str(target), "--steps", "5", "--out", str(cli_out)]) == 0
    )
    run = artforge.load(gan)
    proj = run.project(target, steps=5, seed=0)
    written = run.write_projection(proj, api_out, image=str(target), steps=5, seed=0)
    studio = studio_project(ModelCache(), gan, target.read_bytes(), 5, 0, Options({}))

    cli, api, web = _files(cli_out), _files(api_out), _files(studio["folder"])
    assert list(cli) == list(api) == list(web) == sorted(written)
    assert sorted(written) == ["latent.safetensors", "project.json", "reconstruction.png", "target.png"]
    for name in ("reconstruction.png", "target.png"):  # the same projection, pixel for pixel
        assert cli[name] == api[name] == web[name], name
    records = [json.loads(files["project.json"]) for files in (cli, api, web)]
    assert [sorted(r) for r in records] == [["distance", "image", "psnr", "seed", "steps"]] * 3
    assert records[0]["psnr"] == records[1]["psnr"] == records[2]["psnr"] == studio["psnr"]
    assert records[2]["image"] == "upload" and records[0]["image"] == records[1]["image"] == str(target)
    assert (studio["reconstruction"], studio["target"], studio["latent"]) == (
        "reconstruction.png",
        "target.png",
        "latent.safetensors",
    )


def test_img2img_writes_the_same_names_from_the_cli_the_api_and_the_studio(gan: Path, target: Path, tmp_path):
    from artforge.studio.worker import ModelCache, Options
    from artforge.studio.worker import create as studio_create

    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    args = ["-q", "img2img", str(gan), "--image", str(target), "--strength", "0.6", "-n", "2", "--seed", "4"]
    assert main([*args, "--project-steps", "5", "--out", str(cli_out)]) == 0
    run = artforge.load(gan)
    image = load_image(target, run.config.data)
    images = run.img2img(image, 0.6, 2, seed=4, project_steps=5)
    written = run.write_variations(images, api_out, image, kind="img2img", seed=4, strength=0.6)
    web = studio_create(ModelCache(), gan, "img2img", target.read_bytes(), None, 0.6, 2, 4, Options({}))

    want = ["img2img-s0.60-seed4-0000.png", "img2img-s0.60-seed4-0001.png", "img2img-s0.60-seed4-grid.png"]
    assert written == want
    assert list(_files(cli_out)) == list(_files(api_out)) == want
    assert sorted(p.name for p in web["folder"].iterdir()) == sorted([*want, "images.zip"])
    assert web["images"] == want[:2] and web["grid"] == want[2]
    cli, api = _files(cli_out), _files(api_out)
    assert cli[want[0]] == api[want[0]]  # the same seed: the same variation, byte for byte


def test_the_api_and_the_studio_refuse_sampling_options_in_the_same_words(vae: Path):
    from artforge.errors import ConfigError
    from artforge.studio.safety import BadRequest
    from artforge.studio.worker import Options

    run = artforge.load(vae)
    for options, prompt in (({"truncation": 0.5}, None), ({}, "cat face")):  # GAN's option; no captions
        given = {**options, **({"prompt": prompt} if prompt else {})}
        with pytest.raises(ConfigError) as api:
            run.sample(1, seed=0, **given)
        with pytest.raises(BadRequest) as studio:
            Options(options, prompt=prompt).check(run)
        assert str(api.value) == str(studio.value)
    assert "takes no prompt" in str(api.value)
    assert Options({"temperature": 0.5}).check(run) == {"temperature": 0.5}

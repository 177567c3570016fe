"""The upscaler family and cascades (cascade.py): the loader-matched downscale, learning a known
map, exact save/load and resume, a cascaded run folder that samples at its final size, clear
errors for mismatched sizes and hostile pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import artforge
from artforge import cascade
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.errors import ConfigError, DataError
from artforge.models import make_model_config, model_class
from artforge.models.base import load_weights
from artforge.models.upscaler import Upscaler, UpscalerConfig, pil_downscale
from artforge.runs import load_run, read_config
from artforge.training import Trainer

TINY_UP = {"factor": 2, "base_channels": 8, "blocks": 1, "d_channels": 4, "bank": 8}


def up_config(steps=6, size=16, **model):
    return RunConfig(
        family="upscaler",
        model={**TINY_UP, **model},
        data=DataConfig(path="builtin", height=size, width=size, builtin_count=40, hflip=True),
        train=TrainConfig(steps=steps, batch_size=8, log_every=2, sample_every=0, ckpt_every=0, grid_n=4),
    )


def state_tensors(run_dir):
    sd = load_weights(run_dir / "state" / "model.safetensors")
    sd.update({"ema." + k: v for k, v in load_weights(run_dir / "state" / "ema.safetensors").items()})
    return sd


def shapes(n, size, seed):
    """n pictures of discs and boxes with sharp edges, drawn at 4x and reduced as the loader does."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        big = size * 4
        img = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = rng.integers(0, big - 8, 2)
            x1, y1 = x0 + rng.integers(8, big // 2), y0 + rng.integers(8, big // 2)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
        small = img.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        out.append(torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(out)


def psnr(a, b):
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


# -- the pairs are made as the loader makes a base model's data --------------------------------


@pytest.mark.parametrize(
    ("size", "target"), [((128, 96), (32, 24)), ((64, 48), (32, 24)), ((256, 128), (32, 16))]
)
def test_downscale_matches_the_loaders_lanczos(size, target):
    """Within one 8-bit level of PIL's resize(LANCZOS, reducing_gap=3.0) (data/folder.py), two
    after the box pre-reduction of an 8x reduction (PIL rounds to 8 bits between its passes)."""
    rng = np.random.default_rng(0)
    h, w = size
    noise = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)
    src = np.array(Image.fromarray(noise).resize((w, h), Image.Resampling.BICUBIC))  # smooth, in range
    th, tw = target
    want = np.array(Image.fromarray(src).resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0))
    got = pil_downscale(torch.from_numpy(src).permute(2, 0, 1)[None].float(), th, tw)[0]
    got = got.permute(1, 2, 0).round().clamp(0, 255).numpy()
    diff = np.abs(got - want.astype(np.float64))
    assert diff.max() <= (2 if h // th >= 6 else 1) and diff.mean() < 0.3


# -- settings ------------------------------------------------------------------------------------


def test_factor_and_size_are_checked_by_name():
    c = make_model_config("upscaler", {"factor": 2}, height=32, width=48)  # non-square
    assert Upscaler(c).in_size == (16, 24)
    with pytest.raises(ConfigError, match=r"model.factor must be one of \[2, 4, 8\], got 3"):
        make_model_config("upscaler", {"factor": 3}, height=48, width=48)
    with pytest.raises(ConfigError, match=r"needs a size divisible by 4; 50x48 is not \(try 48x48"):
        make_model_config("upscaler", {"factor": 4}, height=48, width=50)
    with pytest.raises(ConfigError, match="at least 4 pixels a side"):
        make_model_config("upscaler", {"factor": 8}, height=16, width=16)
    assert model_class("upscaler") is Upscaler


def test_untrained_upscaler_is_bicubic_and_degradations_stay_in_range():
    torch.manual_seed(0)
    m = Upscaler(UpscalerConfig(height=32, width=32, factor=4, base_channels=8, blocks=1))
    lr = shapes(4, 8, seed=1)
    out = m.upscale(lr)
    ref = torch.nn.functional.interpolate(lr, size=(32, 32), mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.allclose(out, ref, atol=1e-5)
    deg = m.degrade(m.downscale(shapes(32, 32, seed=2)))
    assert deg.shape == (32, 3, 8, 8) and deg.min() >= -1 and deg.max() <= 1
    levels = (deg + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # 8-bit, as a saved sample


# -- learning ------------------------------------------------------------------------------------


def pixel_art(n, seed):
    """n 16x16 pictures of 2x2-pixel blocks in 4 colours: a known map from their downscales."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.rand(n, 4, 3, generator=g) * 2 - 1
    index = torch.randint(0, 4, (n, 8, 8), generator=g)
    low = torch.stack([palette[i][index[i]] for i in range(n)]).permute(0, 3, 1, 2)  # (n, 3, 8, 8)
    return low.repeat_interleave(2, 2).repeat_interleave(2, 3)


def test_upscaler_learns_a_known_map_and_beats_lanczos_on_held_out_pictures():
    """x2 on pixel art: after 300 steps of the real training step (L1 alone, clean inputs) the
    held-out PSNR beats PIL's Lanczos enlargement of the same 8-bit inputs by over 10 dB (38 vs
    19 dB when measured), and the loss has fallen to under half."""
    torch.manual_seed(0)
    train, held = pixel_art(48, seed=3), pixel_art(16, seed=4)
    m = Upscaler(
        UpscalerConfig(height=16, width=16, factor=2, base_channels=16, blocks=2, adv_weight=0, degrade=0)
    )
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    losses = []
    for step in range(300):
        batch = train[torch.randperm(48)[:16]]
        loss = m.training_step("G", batch, step)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    m.eval()
    lr = m.downscale(held)
    with torch.no_grad():
        ours = psnr(m.upscale(lr), held)
    u8 = ((lr + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    lanczos = torch.stack(
        [
            torch.from_numpy(np.array(Image.fromarray(a).resize((16, 16), Image.Resampling.LANCZOS)))
            for a in u8
        ]
    )
    lanczos = lanczos.permute(0, 3, 1, 2).float() / 127.5 - 1
    assert ours > psnr(lanczos, held) + 10.0, (ours, psnr(lanczos, held))


# -- run folders: save/load, resume, sampling -----------------------------------------------------


def test_saved_upscaler_loads_bit_exactly_and_samples_its_held_in_inputs(tmp_path):
    trainer = Trainer(up_config(steps=4), tmp_path / "up", progress=False)
    trainer.train()
    run = load_run(tmp_path / "up", device="cpu")
    mine = trainer.sampling_model.state_dict()
    theirs = run.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine)
    assert int(theirs["bank_count"]) == 8  # the bank filled from the first batch
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = trainer.sampling_model.eval().sample(4, g())
    assert torch.equal(a, run.model.sample(4, g())) and a.shape == (4, 3, 16, 16)
    z = run.model.sample_latents(4, g())  # latents are held-in inputs at the input size
    assert z.shape == (4, 3, 8, 8) and {tuple(r) for r in z.flatten(1).tolist()} <= {
        tuple(r) for r in (run.model.bank_images.float() / 127.5 - 1).flatten(1).tolist()
    }
    assert (tmp_path / "up" / "samples" / "step-0000004.png").is_file()  # the grid


def test_resume_of_an_upscaler_matches_an_uninterrupted_run(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(up_config(steps=8), straight, progress=False).train()
    Trainer(up_config(steps=4), split, progress=False).train()
    Trainer(up_config(steps=8), split, progress=False).train(resume=True)
    a, b = state_tensors(straight), state_tensors(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def tiny_cascade(out, data, **kw):
    return cascade.train_cascade(
        out,
        data=str(data),
        size=(32, 32),
        common={"train.batch_size": 8, "train.sample_every": 0, "train.grid_n": 4},
        base={"family": "vae", "model.base_channels": 8, "model.latent_dim": 8, "train.steps": 3},
        upscaler={**{f"model.{k}": v for k, v in TINY_UP.items() if k != "factor"}, "train.steps": 3},
        device="cpu",
        **kw,
    )


def test_cascaded_run_samples_at_its_final_size_with_no_flag(tmp_path, tiny_folder):
    out = tmp_path / "cas"
    tiny_cascade(out, tiny_folder)
    top = json.loads((out / "config.json").read_text())
    assert top["kind"] == "cascade" and (top["factor"], top["base_height"], top["base_width"]) == (2, 16, 16)
    assert read_config(out / "base").data.height == 16 and read_config(out / "upscaler").family == "upscaler"
    run = artforge.load(out, device="cpu")
    images = run.sample(4, seed=1)
    assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, run.sample(4, seed=1))
    assert run.config.data.height == 32 and run.model.family == "cascade"
    # the same as the base's samples, upscaled
    base = load_run(out / "base", device="cpu")
    up = load_run(out / "upscaler", device="cpu")
    z = base.model.sample_latents(2, torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = up.model.upscale(base.model.decode(z))
    assert torch.equal(run.model.decode(z), want)
    with pytest.raises(ConfigError, match="is a cascaded run"):
        read_config(out)
    # resuming a finished cascade trains nothing more; each stage is its own run
    steps = [json.loads(p.read_text().splitlines()[-1])["step"] for p in out.glob("*/metrics.jsonl")]
    tiny_cascade(out, tiny_folder, resume=True)
    assert [json.loads(p.read_text().splitlines()[-1])["step"] for p in out.glob("*/metrics.jsonl")] == steps


def test_sample_and_eval_take_a_cascade_at_its_final_size(tmp_path, tiny_folder, network):
    from artforge.cli import main

    out = tmp_path / "cas"
    tiny_cascade(out, tiny_folder)
    assert main(["sample", str(out), "-n", "4", "--seed", "1", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (2 * 34 + 2, 2 * 34 + 2)  # 2 x 2 cells of 32 px
    assert main(["sample", str(out), "--seeds", "0-1", "--out", str(tmp_path / "each") + "/"]) == 0
    assert [Image.open(p).size for p in sorted((tmp_path / "each").iterdir())] == [(32, 32)] * 2
    from artforge.evaluate import evaluate_run  # (the eval command's wiring: cli.py)

    result = evaluate_run(out, n=8, device="cpu")
    assert result["fid"] > 0 and result["n_real"] == 16 and list(result["size"]) == [32, 32]
    assert main(["-q", "eval", str(out), "-n", "8"]) == 0  # the command: eval.json beside the stages
    assert json.loads((out / "eval.json").read_text())["size"] == [32, 32]


def test_a_cascade_resumes_the_stage_it_had_not_finished(tmp_path, tiny_folder):
    out = tmp_path / "cas"
    tiny_cascade(out, tiny_folder)
    import shutil

    shutil.rmtree(out / "upscaler")  # killed before the upscaler's first checkpoint
    tiny_cascade(out, tiny_folder, resume=True)
    assert artforge.load(out, device="cpu").sample(2, seed=0).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="already holds a run"):
        tiny_cascade(out, tiny_folder)


def test_a_base_of_another_size_is_a_clear_error(tmp_path):
    base_cfg = RunConfig(
        family="vae",
        model={"base_channels": 8, "latent_dim": 8},
        data=DataConfig(path="builtin", height=16, width=16, builtin_count=16),
        train=TrainConfig(steps=1, batch_size=4, sample_every=0, grid_n=4),
    )
    Trainer(base_cfg, tmp_path / "base", progress=False).train()
    Trainer(up_config(steps=1, size=64, factor=2), tmp_path / "up", progress=False).train()
    base, up = load_run(tmp_path / "base", device="cpu"), load_run(tmp_path / "up", device="cpu")
    with pytest.raises(ConfigError, match=r"makes 16x16 images, but the upscaler .* takes 32x32"):
        cascade.compose(base, up)
    with pytest.raises(ConfigError, match="not an upscaler"):
        cascade.compose(base, base)


def test_plan_puts_the_base_near_32_pixels():
    assert cascade.plan(64, 64) == (2, 32, 32)
    assert cascade.plan(128, 128) == (4, 32, 32)
    assert cascade.plan(256, 256) == (8, 32, 32)
    assert cascade.plan(96, 128) == (4, 24, 32)
    with pytest.raises(ConfigError, match="a cascade to 30x30 needs"):
        cascade.plan(30, 30)


# -- upscaling any picture -----------------------------------------------------------------------


def test_upscale_takes_any_picture_and_refuses_hostile_files_as_the_loader_does(tmp_path):
    Trainer(up_config(steps=1, size=32, factor=4), tmp_path / "up", progress=False).train()
    run = load_run(tmp_path / "up", device="cpu")
    pics = tmp_path / "pics"
    pics.mkdir()
    Image.new("RGB", (50, 30), (200, 30, 30)).save(pics / "big.png")  # any size: fitted to 8x8
    good = Image.new("RGBA", (8, 8), (0, 0, 255, 128))
    good.save(pics / "small.png")
    full = (pics / "big.png").read_bytes()
    (pics / "truncated.png").write_bytes(full[: len(full) // 2])
    (pics / "notes.png").write_text("this is not a picture\n")
    out = cascade.upscale_images(run, pics / "small.png")
    assert out.shape == (1, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(DataError, match=r"truncated\.png: corrupt or truncated"):
        cascade.upscale_images(run, pics / "truncated.png")
    with pytest.raises(DataError, match=r"notes\.png: not an image \(a text file\)"):
        cascade.upscale_images(run, pics / "notes.png")
    files, images, skipped = cascade.upscale_folder(run, pics)
    assert [p.name for p in files] == ["big.png", "small.png"] and images.shape == (2, 3, 32, 32)
    assert sorted((p.name, why.split(" (")[0]) for p, why in skipped) == [
        ("notes.png", "not an image"),
        ("truncated.png", "corrupt or truncated"),
    ]
    with pytest.raises(ConfigError, match="must be finite and in"):
        cascade.upscale_images(run, torch.full((1, 3, 8, 8), 2.0))


# -- kill -9 (tests/test_reliability.py's trials, on an upscaler run) -----------------------------

from test_reliability import references, run_kill_trials  # noqa: E402, F401


def test_kill_trials_of_an_upscaler_resume_bit_identical(references, tmp_path):  # noqa: F811
    """SIGKILL at random moments (one trial inside a slowed checkpoint write), resumed to the
    end: bit-identical to the uninterrupted run, as for every family; a cascade's stages are
    such runs, each resumed on its own."""
    hits = run_kill_trials(2, ["upscaler"], references, tmp_path, seed=2)
    assert hits, "no process was killed: the trials tested nothing"


# -- the command line and the API (train --cascade, sample/interpolate/img2img --upscale, upscale) --

TINY_CASCADE_ARGS = [
    "--steps", "3", "--batch-size", "8", "--train.sample_every=0", "--train.grid_n=4",
    "--model", "vae", "--model.base_channels=8", "--model.latent_dim=8",
    *[f"--upscaler.model.{k}={v}" for k, v in TINY_UP.items() if k != "factor"],
]  # fmt: skip


def last_step(run_dir):
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["step"]


def test_train_cascade_command_plans_trains_both_stages_and_resumes_each(tmp_path, tiny_folder, capsys):
    from artforge.cli import main

    out = tmp_path / "cas"
    argv = ["-q", "train", "--data", str(tiny_folder), "--size", "32", "--cascade", "--out", str(out)]
    assert main([*argv, *TINY_CASCADE_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "cascade to 32x32" in printed and "vae at 16x16" in printed and "upscaler x2" in printed
    top = json.loads((out / "config.json").read_text())
    assert top["kind"] == "cascade" and top["data"] == str(tiny_folder) and top["plan"]
    base, up = read_config(out / "base"), read_config(out / "upscaler")
    assert (base.family, base.data.height, base.model["base_channels"]) == ("vae", 16, 8)
    assert (up.family, up.data.height, up.model["factor"], up.model["base_channels"]) == (
        "upscaler",
        32,
        2,
        8,
    )
    assert [last_step(out / "base"), last_step(out / "upscaler")] == [3, 3]
    # --resume with nothing but the folder: each stage continues to the new budget
    assert main(["-q", "train", "--out", str(out), "--resume", "--steps", "5"]) == 0
    assert [last_step(out / "base"), last_step(out / "upscaler")] == [5, 5]
    assert artforge.load(out, device="cpu").sample(2, seed=0).shape == (2, 3, 32, 32)
    capsys.readouterr()
    # refusals name what to do
    assert main([*argv, *TINY_CASCADE_ARGS]) == 1
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert main(["-q", "train", "--data", str(tiny_folder), "--cascade", "--out", str(tmp_path / "x")]) == 2
    assert "--cascade needs --size" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "y"), "--size", "24"]) == 1
    assert "needs a size divisible by" in capsys.readouterr().err


def test_sample_interpolate_img2img_and_load_take_an_upscaler(tmp_path, tiny_folder, capsys):
    from artforge.cli import main

    out = tmp_path / "cas"
    tiny_cascade(out, tiny_folder)
    base, up = str(out / "base"), str(out / "upscaler")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["sample", str(out), "-n", "4", "--seed", "3", "--out", str(a)]) == 0
    assert main(["sample", base, "--upscale", up, "-n", "4", "--seed", "3", "--out", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()  # a cascade made on the spot is the cascade
    run = artforge.load(base, device="cpu", upscale=up)
    assert torch.equal(run.sample(3, seed=2), artforge.load(out, device="cpu").sample(3, seed=2))
    assert (
        main(["interpolate", base, "--upscale", up, "--frames", "3", "--out", str(tmp_path / "w.gif")]) == 0
    )
    assert Image.open(tmp_path / "w.gif").size == (32, 32)
    # img2img through an upscaler: the outputs and their enlargements
    pic = tmp_path / "pic.png"
    Image.new("RGB", (20, 20), (200, 40, 40)).save(pic)
    argv = ["img2img", base, "--image", str(pic), "--strength", "0.5", "-n", "2", "--project-steps", "2"]
    assert main([*argv, "--upscale", up, "--out", str(tmp_path / "v")]) == 0
    small = sorted(p.name for p in (tmp_path / "v").glob("*.png"))
    big = sorted((tmp_path / "v" / "upscaled").glob("*.png"))
    assert [p.name for p in big] == small and Image.open(big[0]).size == (32, 32)
    capsys.readouterr()
    # an upscaler of another input size: the clear error of compose
    assert main(["sample", str(out), "--upscale", up, "-n", "1", "--out", str(tmp_path / "c.png")]) == 1
    assert "makes 32x32 images, but the upscaler" in capsys.readouterr().err
    assert main(["sample", up, "--upscale", up, "-n", "1", "--out", str(tmp_path / "c.png")]) == 1
    assert "is an upscaler; a cascade starts from a picture model" in capsys.readouterr().err


def test_upscale_command_takes_a_file_or_a_folder_and_names_what_it_skipped(tmp_path, capsys):
    from artforge.cli import main

    Trainer(up_config(steps=1, size=32, factor=4), tmp_path / "up", progress=False).train()
    run = load_run(tmp_path / "up", device="cpu")
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    Image.new("RGB", (50, 30), (200, 30, 30)).save(pics / "big.png")
    Image.new("RGB", (8, 8), (0, 90, 255)).save(pics / "sub" / "small.jpg")
    (pics / "notes.png").write_text("this is not a picture\n")
    up = str(tmp_path / "up")
    assert main(["upscale", up, "--image", str(pics / "big.png"), "--out", str(tmp_path / "one.png")]) == 0
    got = np.array(Image.open(tmp_path / "one.png"))
    want = (cascade.upscale_images(run, pics / "big.png")[0] * 255).round().byte().permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    assert (
        main(["upscale", up, "--image", str(pics), "--out", str(tmp_path / "all") + "/", "--scale", "2"]) == 0
    )
    printed = capsys.readouterr().out
    assert "upscaled 2 pictures to 64x64" in printed and "skipped" in printed and "notes.png" in printed
    written = sorted(p.relative_to(tmp_path / "all").as_posix() for p in (tmp_path / "all").rglob("*.png"))
    assert written == ["big.png", "sub/small.png"]
    assert Image.open(tmp_path / "all" / "sub" / "small.png").size == (64, 64)  # 32 px, then --scale 2
    # no --out: beside the run's other outputs
    assert main(["upscale", up, "--image", str(pics / "big.png")]) == 0
    assert (tmp_path / "up" / "generated" / "upscaled" / "big.png").is_file()
    capsys.readouterr()
    assert main(["upscale", up, "--image", str(pics), "--out", str(tmp_path / "x.png")]) == 2
    assert "--out must be a folder too" in capsys.readouterr().err
    assert main(["upscale", up, "--image", str(pics / "notes.png"), "--out", str(tmp_path / "n.png")]) == 1
    assert "notes.png: not an image" in capsys.readouterr().err
    assert main(["upscale", up, "--image", str(tmp_path / "missing.png")]) == 1
    assert "no such file or folder" in capsys.readouterr().err

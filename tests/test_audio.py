"""Sound: real WAV/FLAC/OGG files on disk -> spectrogram images -> models -> WAV files again."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from artforge.audio import (
    AudioSpec,
    griffin_lim,
    quantize,
    spectral_convergence,
    stft_magnitude,
    to_audio,
    wave_to_image,
)
from artforge.cli import main
from artforge.config import AudioConfig, DataConfig
from artforge.data import DataError, load_images
from artforge.data.audio import detect_modality, read_clip

RATE = 16_000
SPEC32 = AudioSpec(n_mels=32, frames=32)  # the tiny runs' size: 32 x 256 = 8192 samples


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5, harmonics: int = 3) -> np.ndarray:
    """A decaying harmonic tone, like a plucked note."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, harmonics + 1))
    return (amp * np.exp(-2.5 * t) * wave / 1.84).astype(np.float32)


def write_tones(folder: Path, n: int = 8, seed: int = 0) -> list[Path]:
    """n tones at different pitches, as 16 kHz WAV, 44.1 kHz stereo FLAC and 22.05 kHz OGG in turn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = [("wav", 16_000, 1), ("flac", 44_100, 2), ("ogg", 22_050, 1)]
    paths = []
    for i in range(n):
        ext, rate, channels = kinds[i % 3]
        wave = tone(float(rng.uniform(200, 1200)), float(rng.uniform(0.6, 1.5)), rate)
        data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
        path = folder / f"tone_{i:02d}.{ext}"
        sf.write(path, data, rate)
        paths.append(path)
    return paths


def dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * rate / len(wave))


# -- reading --------------------------------------------------------------------------------------


def test_read_clip_resamples_and_fits_the_length(tmp_path):
    spec = AudioSpec()  # 16 kHz, 16384 samples
    for ext, rate in (("wav", 16_000), ("flac", 44_100), ("ogg", 22_050), ("wav", 8_000)):
        path = tmp_path / f"a_{rate}.{ext}"
        sf.write(path, tone(440.0, 2.0, rate, harmonics=1), rate)
        clip = read_clip(path, spec, silence_db=-60, normalize=True)
        assert clip.shape == (spec.samples,) and clip.dtype == np.float32
        assert abs(dominant_hz(clip, RATE) - 440.0) < 3, (ext, rate)  # the pitch survives resampling
        assert abs(np.abs(clip).max() - 10 ** (-1 / 20)) < 1e-3  # peak-normalised to -1 dBFS
    short = tmp_path / "short.wav"
    sf.write(short, tone(440.0, 0.25, RATE), RATE)
    clip = read_clip(short, spec, -60, True)
    assert clip.shape == (spec.samples,) and np.abs(clip[int(0.25 * RATE) :]).max() == 0  # zero-padded
    img = wave_to_image(torch.from_numpy(clip)[None], spec)
    assert img.shape == (1, 1, 128, 64) and img[..., -8:].max() == -1  # padding reads as silence


def test_a_folder_of_sounds_loads_as_one_channel_spectrograms(tmp_path):
    folder = tmp_path / "sounds"
    write_tones(folder, 6)
    assert detect_modality(str(folder)) == "audio"
    cfg = DataConfig(path=str(folder), height=32, width=32, cache_dir=str(tmp_path / "cache"))
    data = load_images(cfg)
    assert data.images.shape == (6, 1, 32, 32) and data.images.dtype == torch.uint8
    exts = ["wav", "flac", "ogg"] * 2
    assert data.names == [f"tone_{i:02d}.{e}" for i, e in enumerate(exts)]
    assert not data.skipped
    assert len(list((tmp_path / "cache").glob("audio-*.npz"))) == 1
    again = load_images(cfg)  # from the cache file
    assert torch.equal(again.images, data.images)
    # the same 440 Hz tone as WAV at 16 kHz and FLAC at 44.1 kHz gives the same image (resampling works)
    pair = tmp_path / "pair"
    pair.mkdir()
    sf.write(pair / "a.wav", tone(440.0, 1.0, 16_000), 16_000)
    sf.write(pair / "b.flac", tone(440.0, 1.0, 44_100), 44_100)
    a, b = load_images(DataConfig(path=str(pair), height=32, width=32, cache="memory")).images.float()
    assert (a - b).abs().mean() < 2.0  # out of 255
    assert (a - b).abs().max() < 40


def test_broken_and_silent_files_are_skipped_with_reasons(tmp_path):
    folder = tmp_path / "mixed"
    write_tones(folder, 3)
    (folder / "text.wav").write_text("this is not a sound\n")
    (folder / "empty.flac").write_bytes(b"")
    good = (folder / "tone_00.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(good[:30])  # the header cut short
    sf.write(folder / "zeros.wav", np.zeros(RATE, dtype=np.float32), RATE)
    sf.write(folder / "hiss.ogg", tone(300.0, 1.0, RATE, amp=10 ** (-75 / 20)), RATE)
    data = load_images(DataConfig(path=str(folder), height=32, width=32, cache="memory"))
    assert len(data) == 3
    reasons = dict(data.skipped)
    assert set(reasons) == {"text.wav", "empty.flac", "truncated.wav", "zeros.wav", "hiss.ogg"}
    assert reasons["empty.flac"].startswith("empty file")
    assert reasons["text.wav"].startswith("corrupt or unreadable audio")
    assert reasons["truncated.wav"].startswith("corrupt or unreadable audio")
    assert reasons["zeros.wav"] == "silent (peak digital silence < -60 dBFS)"
    assert reasons["hiss.ogg"].startswith("silent (peak -7")
    report = tmp_path / "report.json"
    data.write_report(report)
    assert len(json.loads(report.read_text())["skipped"]) == 5


def test_nothing_usable_names_the_folder_and_the_reasons(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.wav").write_text("nope")
    with pytest.raises(DataError, match=r"bad: no usable sound files \(1 skipped: a.wav: corrupt"):
        load_images(DataConfig(path=str(folder), height=32, width=32, modality="audio", cache="memory"))


def test_image_folders_stay_images(tiny_folder):
    assert detect_modality(str(tiny_folder)) == "image"
    assert detect_modality("builtin") == "image"
    data = load_images(DataConfig(path=str(tiny_folder), height=16, width=16, cache="memory"))
    assert data.images.shape[1] == 3


def test_audio_settings_are_checked():
    with pytest.raises(ValueError, match="hop_length"):
        AudioConfig(hop_length=2048)
    with pytest.raises(ValueError, match="f_max"):
        AudioConfig(f_max=9000)
    with pytest.raises(ValueError, match="modality must be one of"):
        DataConfig(modality="video")  # type: ignore[arg-type]


# -- the round trip -------------------------------------------------------------------------------


def test_griffin_lim_round_trip_on_a_tone():
    spec = AudioSpec()
    wave = torch.from_numpy(
        np.stack([tone(440.0, 1.1, RATE)[: spec.samples], tone(196.0, 1.1, RATE)[: spec.samples]])
    )
    gl = griffin_lim(stft_magnitude(wave, spec), spec)
    sc_gl = spectral_convergence(wave, gl, spec)
    assert (sc_gl < 0.2).all(), sc_gl  # measured 0.06 (440 Hz sine), 0.14 (196 Hz, 3 harmonics)
    sc_full = spectral_convergence(wave, to_audio(quantize(wave_to_image(wave, spec)), spec), spec)
    assert (sc_full < 0.3).all(), sc_full  # mel + uint8 + NNLS + GL; measured 0.16, 0.14
    # a wrong spectrogram is far away: the measure can fail
    other = torch.from_numpy(np.stack([tone(1000.0, 1.1, RATE)[: spec.samples]] * 2))
    assert (spectral_convergence(wave, other, spec) > 1.0).all()
    # more Griffin-Lim iterations do not hurt, none at all is much worse
    sc_none = spectral_convergence(wave, griffin_lim(stft_magnitude(wave, spec), spec, iters=0), spec)
    assert (sc_none > 2 * sc_gl).all()


def test_uint8_quantisation_costs_little_of_the_round_trip():
    spec = SPEC32
    wave = torch.from_numpy(np.stack([tone(f, 0.6, RATE)[: spec.samples] for f in (262.0, 523.0)]))
    img = wave_to_image(wave, spec)
    assert ((quantize(img) - img).abs() <= 1 / 127.5 + 1e-6).all()  # half a step of 80 dB / 255
    sc_float = spectral_convergence(wave, to_audio(img, spec), spec)
    sc_u8 = spectral_convergence(wave, to_audio(quantize(img), spec), spec)
    assert ((sc_u8 - sc_float).abs() < 0.03).all(), (sc_u8, sc_float)


# -- models ---------------------------------------------------------------------------------------

TINY = [
    "--size", "32", "--model.base_channels=8", "--latent-dim", "8", "--batch-size", "4",
    "--steps", "2", "--train.grid_n=4", "--data.cache=memory",
]  # fmt: skip


TINY_DIFFUSION = [a for a in TINY if a not in ("--latent-dim", "8")] + ["--model.sample_steps=4"]


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sounds")
    write_tones(folder, 8)
    return folder


@pytest.mark.parametrize("family", ["gan", "vae", "diffusion"])
def test_each_family_trains_on_sound_and_samples_wav_files(sounds, tmp_path, family, capsys):
    run = tmp_path / family
    tiny = TINY_DIFFUSION if family == "diffusion" else TINY
    assert main(["-q", "train", "--data", str(sounds), "--model", family, "--out", str(run), *tiny]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"]["modality"] == "audio" and cfg["model"]["channels"] == 1
    assert cfg["data"]["audio"]["sample_rate"] == RATE and cfg["data"]["audio"]["hop_length"] == 256
    out = tmp_path / "wavs"
    sample = ["sample", str(run), "-n", "3", "--seed", "5", "--out", f"{out}/"]
    if family == "diffusion":
        sample += ["--steps", "2"]
    assert main(sample) == 0
    wavs = sorted(out.glob("*.wav"))
    assert [w.name for w in wavs] == [f"seed5-{k:04d}.wav" for k in range(3)]
    for w in wavs:
        info = sf.info(w)
        assert (info.samplerate, info.frames, info.channels) == (RATE, 32 * 256, 1)
        data, _ = sf.read(w)
        assert np.isfinite(data).all() and np.abs(data).max() <= 1
    assert (out / "grid.png").is_file()
    assert "wrote 3 sounds (seed 5, 0.51 s at 16000 Hz)" in capsys.readouterr().out


def test_python_api_returns_tensors_and_sound(sounds, tmp_path):
    import artforge

    run_dir = tmp_path / "vae"
    assert main(["-q", "train", "--data", str(sounds), "--model", "vae", "--out", str(run_dir), *TINY]) == 0
    run = artforge.load(run_dir)
    assert run.is_audio and run.sample_rate == RATE
    images = run.sample(2, seed=3)
    assert images.shape == (2, 1, 32, 32)
    waves, rate = run.sample_audio(2, seed=3)
    assert rate == RATE and waves.shape == (2, 32 * 256) and waves.dtype == torch.float32
    assert torch.equal(waves, run.to_audio(images))  # sound i is image i
    # a walk: one WAV of every frame back to back, or a spectrogram GIF
    walk = tmp_path / "walk.wav"
    assert main(["interpolate", str(run_dir), "--seeds", "1,2", "--frames", "3", "--out", str(walk)]) == 0
    assert sf.info(walk).frames == 3 * 32 * 256
    assert (
        main(
            ["interpolate", str(run_dir), "--seeds", "1,2", "--frames", "3", "--out", str(tmp_path / "w.gif")]
        )
        == 0
    )
    # image runs say so when asked for sound
    run.config = dataclasses.replace(run.config, data=dataclasses.replace(run.config.data, modality="image"))
    with pytest.raises(ValueError, match="trained on images"):
        run.sample_audio(1)


# -- the notes set --------------------------------------------------------------------------------


def _need_fluidsynth() -> None:
    from artforge.data.notes import SOUNDFONT_PATHS

    have = shutil.which("fluidsynth") and any(Path(p).is_file() for p in SOUNDFONT_PATHS)
    if not have:
        if os.geteuid() == 0:
            pytest.fail(
                "fluidsynth / fluid-soundfont-gm missing although running as root: run scripts/setup.sh"
            )
        pytest.skip(
            "fluidsynth and fluid-soundfont-gm are not installed "
            "(apt-get install fluidsynth fluid-soundfont-gm)"
        )


def test_data_notes_renders_labelled_notes_and_eval_measures_a_run(tmp_path, capsys):
    _need_fluidsynth()
    notes = tmp_path / "notes"
    rc = main(["-q", "data", "notes", "--out", str(notes), "--programs", "0,40", "--pitches", "55-69:2",
               "--velocities", "100"])  # fmt: skip
    assert rc == 0
    labels = [json.loads(x) for x in (notes / "labels.jsonl").read_text().splitlines()]
    captions = [json.loads(x) for x in (notes / "captions.jsonl").read_text().splitlines()]
    assert len(labels) == len(captions) == 16
    assert captions[2] == {"file": "000-acoustic-grand-piano-059-100.wav", "text": "acoustic grand piano B3"}
    assert {x["family"] for x in labels} == {"piano", "strings"}
    assert labels[-1]["instrument"] == "violin" and labels[-1]["pitch"] == 69 and labels[-1]["note"] == "A4"
    for x in labels:
        info = sf.info(notes / x["file"])
        assert (info.samplerate, info.frames) == (RATE, RATE)
        wave, _ = sf.read(notes / x["file"])
        assert np.abs(wave).max() > 0.01  # a real note, not silence
    piano = read_clip(notes / labels[0]["file"], AudioSpec(), -60, True)
    assert (
        abs(dominant_hz(piano, RATE) / 196.0 - round(dominant_hz(piano, RATE) / 196.0)) < 0.05
    )  # G3 harmonics

    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(notes), "--model", "vae", "--out", str(run), *TINY]) == 0
    capsys.readouterr()
    assert main(["-q", "eval", str(run), "-n", "8", "--json", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "judge accuracy" in text and "FD (judge)" in text and "round trip SC" in text
    r = json.loads((tmp_path / "e.json").read_text())
    assert r["classes"] == ["piano", "strings"] and r["n_fake"] == 8
    assert r["n_real_train"] + r["n_real_held_out"] == 16 and r["n_real_held_out"] >= 1
    assert 0 <= r["classifier_accuracy_held_out"] <= 1
    assert sum(r["generated"]["families"].values()) == 8
    assert r["fd_generated"] >= 0 and 0 < r["sc_griffin_lim_only"] < r["sc_roundtrip"] < 1
    assert (run / "eval.json").is_file()


def test_audio_judge_holds_out_by_the_shared_rule_and_is_not_reused_across_splits(tmp_path, monkeypatch):
    """The judge's held-out notes are data/holdout.py's 20%; a cached judge is reused only with
    the split it was trained under, so it is never scored on notes it trained on."""
    from artforge import evaluate_audio
    from artforge.data.holdout import is_held_out

    folder = tmp_path / "notes"
    paths = write_tones(folder, 20)
    labels = [{"file": p.name, "family": "low" if i % 2 else "high"} for i, p in enumerate(paths)]
    (folder / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    cfg = DataConfig(
        path=str(folder), height=16, width=16, modality="audio", cache_dir=str(tmp_path / "cache")
    )
    judges = lambda: sorted((tmp_path / "cache").glob("audio-judge-*.safetensors"))  # noqa: E731

    j = evaluate_audio.load_judge(cfg)
    assert j["held"].tolist() == [is_held_out(n, 0.2) for n in j["names"]] and 0 < j["held"].sum() < 20
    assert len(judges()) == 1
    evaluate_audio.load_judge(cfg)
    assert len(judges()) == 1  # same data, same split: reused
    monkeypatch.setattr(evaluate_audio, "HELD_OUT", 0.5)
    j = evaluate_audio.load_judge(cfg)
    assert j["held"].sum() > 4 and len(judges()) == 2  # another split: a judge of its own


def test_data_notes_without_fluidsynth_names_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth on this PATH
    assert main(["-q", "data", "notes", "--out", str(tmp_path / "n")]) == 1
    with pytest.raises(FileNotFoundError, match="apt-get install fluidsynth fluid-soundfont-gm"):
        from artforge.data.notes import build_notes

        build_notes(tmp_path / "n")


def test_picture_only_commands_refuse_sound_folders_before_any_work(sounds, tmp_path, capsys):
    assert main(["bench", "--data", str(sounds), "--minutes", "0.01", "--out", str(tmp_path / "b")]) == 2
    assert "holds sound files" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    assert main(["eval", "--fake", str(sounds), "--data", str(sounds)]) == 2
    assert "sound is measured from a RUN" in capsys.readouterr().err

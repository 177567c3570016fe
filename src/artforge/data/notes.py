"""Build a captioned set of single instrument notes (NSynth-style) from a General MIDI soundfont.

For each chosen GM program, one small MIDI file plays every (pitch, velocity) note in turn,
each held ``hold`` seconds and followed by silence for its release; Debian's ``fluidsynth``
renders it with the sampled ``fluid-soundfont-gm`` (FluidR3) at the target rate, dry (no
reverb or chorus), and the render is cut into one WAV per note. Next to the WAVs go
``captions.jsonl`` ({"file", "text": "acoustic grand piano C4"}) and ``labels.jsonl``
(program, instrument, family, pitch, note name, velocity) for the audio classifier. As with
the emoji set, the folder is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError
from .builders import building, check_target

log = logging.getLogger(__name__)

SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
LEAD = 0.1  # seconds of silence before the first note
GAP = 1.0  # seconds after each clip for the release to die away before the next note
SILENT_DB = -60.0  # a rendered note quieter than this (peak, dBFS) is left out

GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # fmt: skip
GM_PROGRAMS = (
    "acoustic grand piano", "bright acoustic piano", "electric grand piano", "honky-tonk piano",
    "electric piano 1", "electric piano 2", "harpsichord", "clavinet",
    "celesta", "glockenspiel", "music box", "vibraphone", "marimba", "xylophone", "tubular bells",
    "dulcimer",
    "drawbar organ", "percussive organ", "rock organ", "church organ", "reed organ", "accordion",
    "harmonica", "tango accordion",
    "acoustic guitar (nylon)", "acoustic guitar (steel)", "electric guitar (jazz)",
    "electric guitar (clean)", "electric guitar (muted)", "overdriven guitar", "distortion guitar",
    "guitar harmonics",
    "acoustic bass", "electric bass (finger)", "electric bass (pick)", "fretless bass", "slap bass 1",
    "slap bass 2", "synth bass 1", "synth bass 2",
    "violin", "viola", "cello", "contrabass", "tremolo strings", "pizzicato strings",
    "orchestral harp", "timpani",
    "string ensemble 1", "string ensemble 2", "synth strings 1", "synth strings 2", "choir aahs",
    "voice oohs", "synth voice", "orchestra hit",
    "trumpet", "trombone", "tuba", "muted trumpet", "french horn", "brass section", "synth brass 1",
    "synth brass 2",
    "soprano sax", "alto sax", "tenor sax", "baritone sax", "oboe", "english horn", "bassoon",
    "clarinet",
    "piccolo", "flute", "recorder", "pan flute", "blown bottle", "shakuhachi", "whistle", "ocarina",
    "lead 1 (square)", "lead 2 (sawtooth)", "lead 3 (calliope)", "lead 4 (chiff)", "lead 5 (charang)",
    "lead 6 (voice)", "lead 7 (fifths)", "lead 8 (bass + lead)",
    "pad 1 (new age)", "pad 2 (warm)", "pad 3 (polysynth)", "pad 4 (choir)", "pad 5 (bowed)",
    "pad 6 (metallic)", "pad 7 (halo)", "pad 8 (sweep)",
    "fx 1 (rain)", "fx 2 (soundtrack)", "fx 3 (crystal)", "fx 4 (atmosphere)", "fx 5 (brightness)",
    "fx 6 (goblins)", "fx 7 (echoes)", "fx 8 (sci-fi)",
    "sitar", "banjo", "shamisen", "koto", "kalimba", "bagpipe", "fiddle", "shanai",
    "tinkle bell", "agogo", "steel drums", "woodblock", "taiko drum", "melodic tom", "synth drum",
    "reverse cymbal",
    "guitar fret noise", "breath noise", "seashore", "bird tweet", "telephone ring", "helicopter",
    "applause", "gunshot",
)  # fmt: skip
# The default set: two instruments from each family of pitched instruments (synth and sound
# effects, whose "notes" are noises, are left out): 26 programs.
DEFAULT_PROGRAMS = (0, 4, 8, 12, 16, 19, 24, 27, 32, 33, 40, 42, 48, 52, 56, 60, 64, 68, 72, 73,
                    80, 81, 88, 89, 104, 105)  # fmt: skip
NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

assert len(GM_PROGRAMS) == 128


def note_name(pitch: int) -> str:
    """MIDI 60 -> 'C4' (scientific pitch notation)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def family_of(program: int) -> str:
    return GM_FAMILIES[program // 8]


@dataclass(frozen=True)
class Note:
    program: int
    pitch: int
    velocity: int

    @property
    def file(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", GM_PROGRAMS[self.program]).strip("-")
        return f"{self.program:03d}-{slug}-{self.pitch:03d}-{self.velocity:03d}.wav"


# -- a tiny Standard MIDI File writer -------------------------------------------------------------


def _varlen(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


def midi_file(program: int, notes: list[tuple[float, float, int, int]], ticks_per_second: int = 960) -> bytes:
    """A format-0 MIDI file on channel 0: program change, then (start_s, end_s, pitch, velocity) notes.

    Tempo 500,000 us per beat with 480 ticks per beat, so one tick is 1/960 s.
    """
    events: list[tuple[int, int, bytes]] = []  # (tick, order, message): offs before ons at a tick
    for start, end, pitch, vel in notes:
        events.append((round(start * ticks_per_second), 1, bytes([0x90, pitch, vel])))
        events.append((round(end * ticks_per_second), 0, bytes([0x80, pitch, 0])))
    events.sort()
    track = bytearray(b"\x00\xff\x51\x03\x07\xa1\x20")  # tempo 500,000 us per beat
    track += b"\x00" + bytes([0xC0, program])
    tick = 0
    for t, _, msg in events:
        track += _varlen(t - tick) + msg
        tick = t
    track += _varlen(ticks_per_second // 2) + b"\xff\x2f\x00"  # end of track after half a second
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, ticks_per_second // 2)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


# -- building -------------------------------------------------------------------------------------


def find_soundfont(path: str | os.PathLike[str] | None = None) -> Path:
    candidates = [path] if path else [os.environ.get("ARTFORGE_SOUNDFONT"), *SOUNDFONT_PATHS]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    where = path or " or ".join(SOUNDFONT_PATHS)
    raise FileNotFoundError(f"General MIDI soundfont {where} not found; install it with: {INSTALL_HINT}")


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError(f"the fluidsynth program is not installed; install it with: {INSTALL_HINT}")
    return exe


def _render_program(
    exe: str, sf2: Path, program: int, notes: list[Note], rate: int, seconds: float, hold: float, work: Path
) -> list[np.ndarray]:
    """Render all of one program's notes in one fluidsynth call; return one clip per note."""
    import soundfile as sf

    step = seconds + GAP
    timed = [(LEAD + k * step, LEAD + k * step + hold, n.pitch, n.velocity) for k, n in enumerate(notes)]
    mid, wav = work / f"p{program:03d}.mid", work / f"p{program:03d}.wav"
    mid.write_bytes(midi_file(program, timed))
    cmd = [
        exe,
        "-ni",
        "-q",
        "-R",
        "0",
        "-C",
        "0",
        "-g",
        "1.0",
        "-r",
        str(rate),
        "-F",
        str(wav),
        str(sf2),
        str(mid),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not wav.is_file():
        raise RuntimeError(
            f"fluidsynth failed on program {program}: {(done.stderr or done.stdout).strip()[:300]}"
        )
    audio, got_rate = sf.read(wav, dtype="float32", always_2d=True)
    if got_rate != rate:
        raise RuntimeError(f"fluidsynth wrote {got_rate} Hz instead of {rate} Hz")
    mono = audio.mean(axis=1)
    n = round(seconds * rate)
    clips = []
    for start, _, _, _ in timed:
        a = round(start * rate)
        clip = np.zeros(n, dtype=np.float32)
        piece = mono[a : a + n]
        clip[: len(piece)] = piece
        clips.append(clip)
    return clips


def build_notes(
    out: str | os.PathLike[str],
    *,
    programs: list[int] | None = None,
    pitches: list[int] | None = None,
    velocities: list[int] | None = None,
    rate: int = 16_000,
    seconds: float = 1.0,
    hold: float = 0.75,
    soundfont: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> int:
    """Render notes to ``out`` (WAVs + captions.jsonl + labels.jsonl); return how many were written."""
    exe = find_fluidsynth()
    sf2 = find_soundfont(soundfont)
    programs = list(DEFAULT_PROGRAMS) if programs is None else programs
    pitches = list(range(48, 85, 3)) if pitches is None else pitches
    velocities = [75, 127] if velocities is None else velocities
    for p in programs:
        if not 0 <= p <= 127:
            raise ConfigError(f"GM programs are 0..127, got {p}")
    for p in pitches:
        if not 0 <= p <= 127:
            raise ConfigError(f"MIDI pitches are 0..127, got {p}")
    for v in velocities:
        if not 1 <= v <= 127:
            raise ConfigError(f"MIDI velocities are 1..127, got {v}")
    if not 0 < hold <= seconds <= 10:
        raise ConfigError(f"need 0 < hold <= seconds <= 10, got hold={hold}, seconds={seconds}")
    out = Path(out)
    check_target(out, "labels.jsonl", "notes set")
    written, silent = 0, 0
    with building(out) as tmp:
        with tempfile.TemporaryDirectory(prefix="artforge-notes-") as work:
            jobs = {p: [Note(p, pitch, v) for pitch in pitches for v in velocities] for p in programs}

            def render(p: int) -> tuple[int, list[np.ndarray]]:
                return p, _render_program(exe, sf2, p, jobs[p], rate, seconds, hold, Path(work))

            with (
                ThreadPoolExecutor(2) as pool,
                open(tmp / "captions.jsonl", "w") as captions,
                open(tmp / "labels.jsonl", "w") as labels,
            ):
                bar = tqdm(
                    total=len(programs), desc="rendering notes", unit="instrument", disable=not progress
                )
                for p, clips in pool.map(render, programs):
                    for note, clip in zip(jobs[p], clips, strict=True):
                        peak = float(np.abs(clip).max())
                        if peak <= 10 ** (SILENT_DB / 20):
                            silent += 1
                            continue
                        _write_clip(tmp / note.file, clip, rate)
                        written += 1
                        name = GM_PROGRAMS[p]
                        captions.write(
                            json.dumps({"file": note.file, "text": f"{name} {note_name(note.pitch)}"})
                        )
                        captions.write("\n")
                        label = {
                            "file": note.file,
                            "program": p,
                            "instrument": name,
                            "family": family_of(p),
                            "pitch": note.pitch,
                            "note": note_name(note.pitch),
                            "velocity": note.velocity,
                        }
                        labels.write(json.dumps(label) + "\n")
                    bar.update(1)
                bar.close()
        if written == 0:
            raise DataError(f"fluidsynth rendered only silence with {sf2}")
    log.info("wrote %d notes to %s; %d silent notes left out", written, out, silent)
    return written


def _write_clip(path: Path, clip: np.ndarray, rate: int) -> None:
    import soundfile as sf

    sf.write(path, np.clip(clip, -1, 1), rate, subtype="PCM_16")


def read_labels(folder: str | os.PathLike[str]) -> dict[str, dict[str, object]]:
    """labels.jsonl of a notes set: file name -> its labels."""
    path = Path(folder) / "labels.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the audio classifier needs labelled notes (build them with: "
            "artforge data notes --out DIR)"
        )
    out: dict[str, dict[str, object]] = {}
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[str(rec["file"])] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{path}:{k}: not a labels line with a 'file'") from None
    return out

"""FluidSynth as a renderer of single notes: one run, many notes, each clip independent of the others.

:func:`render_slots` writes a Standard MIDI File that plays the notes one per
1.28 s slot (441 FluidSynth blocks of 64 samples at 22,050 Hz, so every slot
starts on a block) after a discarded pre-roll note, runs the ``fluidsynth``
program on it (reverb and chorus off, 32-bit float output: no dither), and
cuts the mono clips out of the slots.  The rules are in :mod:`.instruments`.

Why the pre-roll: FluidSynth renders the first block (3 ms) of a note
differently on a fresh voice than on a reused one (whatever the previous note
was); after one discarded note every voice is a reused one, so each clip is
the same whatever other notes the run holds.  An All Sound Off ends every
slot, so no release tail reaches the next.  16-bit output is avoided because
FluidSynth dithers it with a running noise table (position-dependent).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .debian import ensure_debian_package
from ._gm import standard_midi_file

__all__ = [
    "CLIP",
    "DEFAULT_SOUNDFONT",
    "FLUIDSYNTH_OPTIONS",
    "SAMPLE_RATE",
    "check_soundfont",
    "file_sha256",
    "find_fluidsynth",
    "fluidsynth_version",
    "render_slots",
    "to_pcm16",
]

SOUNDFONT_PACKAGE = "fluid-soundfont-gm"
FLUIDSYNTH_PACKAGE = "fluidsynth"
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
SAMPLE_RATE = 22050
SLOT_MS = 1280  # 28,224 samples = 441 blocks of 64 at 22,050 Hz: every slot starts on a block
SLOT = SLOT_MS * SAMPLE_RATE // 1000
CLIP = 1250 * SAMPLE_RATE // 1000  # kept samples of a slot (1.25 s)
FADE = 50 * SAMPLE_RATE // 1000
SOUND_OFF_MS = 1270  # All Sound Off: after the clip, before the next slot
GAIN = 1.0  # the loudest FluidR3 GM clip peaks at ~0.63
RENDER_TIMEOUT = 300.0
FLUIDSYNTH_OPTIONS = (
    "-R", "0", "-C", "0", "-g", str(GAIN), "-r", str(SAMPLE_RATE),
    "-o", "synth.dynamic-sample-loading=1", "-o", "synth.cpu-cores=1", "-o", "audio.period-size=64",
    "-o", "synth.lock-memory=0", "-T", "wav", "-O", "float",
)  # fmt: skip
_FAILED = re.compile(r"error|instrument not found|no preset found|not a soundfont", re.I)


def slot_midi(channel: int, program: int, notes: Sequence[tuple[int, int, int]]) -> bytes:
    """The MIDI file of :func:`render_slots`: ``notes`` are ``(pitch, velocity, length in ms)``."""
    ch = channel
    events = [(0, bytes([0xC0 | ch, program]))]
    for k, (pitch, vel, ms) in enumerate([(60, 64, 100), *notes]):  # slot 0: the discarded pre-roll note
        t = k * SLOT_MS
        events += [
            (t, bytes([0x90 | ch, pitch, vel])),  # note on
            (t + ms, bytes([0x80 | ch, pitch, 0])),  # note off
            (t + SOUND_OFF_MS, bytes([0xB0 | ch, 120, 0])),  # all sound off: no tail into the next slot
        ]
    events.append(((len(notes) + 1) * SLOT_MS, bytes([0xB0 | ch, 121, 0])))  # reset controllers, end
    return standard_midi_file(events)


def render_slots(
    channel: int,
    program: int,
    notes: Sequence[tuple[int, int, int]],
    soundfont: Path,
    fluidsynth: str,
    what: str,
) -> np.ndarray:
    """Render ``(pitch, velocity, ms)`` notes in one fluidsynth run: float32 mono clips, ``(n, CLIP)``.

    A clip does not depend on the other notes of the run.  Raises
    :class:`DataError` starting with ``what`` when fluidsynth fails, reports an
    error or a missing preset (it would substitute another one), or writes no
    or too little audio.
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="anybind-fluid-") as td:
        mid, wav = Path(td) / "in.mid", Path(td) / "out.wav"
        mid.write_bytes(slot_midi(channel, program, notes))
        cmd = [fluidsynth, "-n", "-i", "-q", *FLUIDSYNTH_OPTIONS, "-F", str(wav), str(soundfont), str(mid)]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, errors="replace", timeout=RENDER_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise DataError(f"{what}: timed out after {RENDER_TIMEOUT:g} s") from None
        except OSError as e:
            raise DataError(f"{what}: cannot run {fluidsynth} ({e.strerror or e})") from None
        said = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if _FAILED.search(ln)]
        if proc.returncode != 0 or said:
            why = said[-1] if said else f"exit {proc.returncode}"
            raise DataError(f"{what}: {why.replace(str(soundfont), soundfont.name)}")
        try:
            audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError on a missing or bad file
            raise DataError(f"{what}: wrote no readable audio ({type(e).__name__})") from None
    need = (len(notes) + 1) * SLOT
    if sr != SAMPLE_RATE or len(audio) < need:
        raise DataError(f"{what}: wrote {len(audio)} samples at {sr} Hz, expected {need} at {SAMPLE_RATE} Hz")
    mono = audio.mean(axis=1, dtype=np.float32)
    clips = np.stack([mono[(k + 1) * SLOT : (k + 1) * SLOT + CLIP] for k in range(len(notes))])
    clips[:, CLIP - FADE :] *= np.linspace(1.0, 0.0, FADE, dtype=np.float32)
    return clips


def to_pcm16(clip: np.ndarray) -> tuple[np.ndarray, int]:
    """16-bit samples of a float clip (``round(x * 32767)``, clipped to [-1, 1]) and how many were clipped."""
    return np.round(np.clip(clip, -1.0, 1.0) * 32767.0).astype(np.int16), int(np.sum(np.abs(clip) > 1.0))


def check_soundfont(path: Path, install: bool) -> Path:
    """``path`` once it is a SoundFont 2 file (the default one installed first with ``install``)."""
    if install and not path.exists() and path.absolute() == Path(DEFAULT_SOUNDFONT):
        ensure_debian_package(SOUNDFONT_PACKAGE, DEFAULT_SOUNDFONT)
    if not path.is_file():
        raise DataError(
            f"soundfont {path} does not exist: install the Debian package {SOUNDFONT_PACKAGE!r} "
            f"(`sudo apt-get install -y {SOUNDFONT_PACKAGE}`) or pass another General MIDI .sf2"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise DataError(f"soundfont {path}: unreadable ({e.strerror or e})") from None
    if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise DataError(f"soundfont {path}: not a SoundFont 2 file (no RIFF sfbk header)")
    return path


def find_fluidsynth(fluidsynth: str, install: bool) -> str:
    """The fluidsynth program's path (the Debian package installed first with ``install``), else DataError."""
    found = shutil.which(fluidsynth)
    if found is None and install and fluidsynth == "fluidsynth":
        ensure_debian_package(FLUIDSYNTH_PACKAGE, "/usr/bin/fluidsynth")
        found = shutil.which(fluidsynth)
    if found is None:
        raise DataError(
            f"{fluidsynth} is not installed: install the Debian package {FLUIDSYNTH_PACKAGE!r} "
            f"(`sudo apt-get install -y {FLUIDSYNTH_PACKAGE}`)"
        )
    return found


def fluidsynth_version(exe: str) -> str:
    """``FluidSynth runtime version 2.3.1`` (the first line of ``--version`` naming a version), or unknown."""
    try:
        proc = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, errors="replace", timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [ln.strip() for ln in (proc.stdout or "").splitlines() if "version" in ln.lower()]
    return lines[0] if proc.returncode == 0 and lines else "unknown"


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

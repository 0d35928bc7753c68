"""espeak-ng for the speech corpus: which voices speak a caption (split-disjoint accents), speaking one to
a WAV under a timeout, finding and checking espeak-ng and its voices (:mod:`anybind.corpora.speech` builds
the corpus)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..data.manifest import SPLITS
from ..errors import DataError
from .debian import ensure_debian_package

ESPEAK_PACKAGE = "espeak-ng"
SAMPLE_RATE = 16000

#: seconds one espeak-ng call may take
ESPEAK_TIMEOUT = 60.0


def _caption_key(text: str) -> str:
    return " ".join(text.casefold().split())


def voices_for(text: str, voices: Sequence[str], n: int) -> list[str]:
    """The ``n`` voices (of ``voices``) that speak ``text``: a hash of the caption picks the first."""
    if not voices:
        return []
    h = int.from_bytes(hashlib.sha256(_caption_key(text).encode("utf-8")).digest()[:8], "big")
    return [voices[(h + j) % len(voices)] for j in range(min(n, len(voices)))]


def slug(voice: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in voice)


def speak(text: str, voice: str, dest: Path, espeak: str = "espeak-ng", timeout: float = ESPEAK_TIMEOUT) -> float:
    """Speak ``text`` with espeak-ng into ``dest`` (16 kHz 16-bit mono wav); return its duration in seconds.

    Raises :class:`DataError` naming the voice and text when espeak-ng fails,
    writes nothing decodable, or writes digital silence (message starts with ``silent``).
    """
    import soundfile as sf

    from ..data.media import load_audio, resample

    what = f"espeak-ng -v {voice} {text!r}"
    with tempfile.TemporaryDirectory(prefix="anybind-espeak-") as td:
        raw = Path(td) / "raw.wav"
        try:
            proc = subprocess.run(
                [espeak, "-v", voice, "--stdin", "-w", str(raw)],
                input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise DataError(f"{what}: timed out after {timeout:g} s") from None
        except OSError as e:
            raise DataError(f"{what}: cannot run {espeak} ({e.strerror or e})") from None
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout or b"").decode("utf-8", "replace").strip().splitlines()
            raise DataError(f"{what}: exit {proc.returncode}" + (f" ({msg[-1]})" if msg else ""))
        if not raw.is_file():
            raise DataError(f"{what}: wrote no file")
        try:
            wav, sr = load_audio(raw)
        except DataError as e:
            raise DataError(f"{what}: {str(e).replace(str(raw), 'output')}") from None
    if not np.any(np.abs(wav) > 1e-4):
        raise DataError(f"silent: {what} produced {len(wav) / sr:.2f} s of digital silence")
    if sr != SAMPLE_RATE:
        wav = resample(wav, sr, SAMPLE_RATE)
    wav = np.clip(wav, -1.0, 1.0)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dest), wav, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return len(wav) / SAMPLE_RATE


def check_voices(voices: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    bad = sorted(set(voices) - set(SPLITS))
    if bad:
        raise DataError(f"voices: unknown split(s) {bad}; use {', '.join(SPLITS)}")
    out = {s: tuple(dict.fromkeys(str(v).strip() for v in voices.get(s, ()) if str(v).strip())) for s in SPLITS}
    if not out["train"]:
        raise DataError("voices: the train split needs at least one voice")
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            both = sorted(set(out[a]) & set(out[b]))
            if both:
                raise DataError(
                    f"voices {both} are in both the {a} and the {b} split: each split needs its own voices "
                    "(a model must be measured on voices it never heard)"
                )
    return out



def ensure_espeak(espeak: str, install: bool) -> str:
    found = shutil.which(espeak)
    if found:
        return found
    if install and espeak == "espeak-ng":
        ensure_debian_package(ESPEAK_PACKAGE, "/usr/bin/espeak-ng")
        found = shutil.which(espeak)
        if found:
            return found
    raise DataError(f"{espeak} is not installed: `sudo apt-get install -y {ESPEAK_PACKAGE}`")


def known_voices(espeak: str) -> tuple[set[str], set[str]] | None:
    """(languages and voice names, variant names) that ``espeak`` knows, lowercased; None when it cannot say."""
    langs: set[str] = set()
    variants: set[str] = set()
    for arg, into in (("--voices", langs), ("--voices=variant", variants)):
        try:
            proc = subprocess.run([espeak, arg], capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = (proc.stdout or "").splitlines()[1:]
        if proc.returncode != 0 or not lines:
            return None
        for line in lines:
            cols = line.split()
            if len(cols) < 5:
                continue
            if into is langs:
                into.update({cols[1].lower(), cols[1].split("-")[0].lower(), cols[3].lower(),
                             cols[4].rsplit("/", 1)[-1].lower()})
                into.update(c.strip("()").lower() for c in cols[5::2])  # "Other Languages": (en 2)(en-gb 3)
            else:
                into.update({cols[3].lower(), cols[4].rsplit("/", 1)[-1].lower()})
    return langs, variants


def voice_problem(voice: str, known: tuple[set[str], set[str]] | None) -> str | None:
    """Why espeak-ng would not speak in ``voice`` (``accent+variant``), or None.

    espeak-ng does not refuse every unknown name: ``no-such-voice`` silently
    speaks Norwegian (``no``), so voices are checked against its lists first.
    """
    if known is None:
        return None
    accent, _, variant = voice.partition("+")
    if accent.lower() not in known[0]:
        return f"unknown espeak-ng voice {accent!r} (see `espeak-ng --voices`)"
    if variant and variant.lower() not in known[1]:
        return f"unknown espeak-ng voice variant {variant!r} (see `espeak-ng --voices=variant`)"
    return None


def espeak_version(espeak: str) -> str:
    try:
        proc = subprocess.run([espeak, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    line = (proc.stdout or "").strip().splitlines()
    return line[0].split("Data at:")[0].strip() if proc.returncode == 0 and line else "unknown"

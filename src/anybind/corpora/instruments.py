"""General MIDI instruments rendered by FluidSynth: sound <-> text, labelled with instrument and family.

Sources
-------

* Debian ``fluid-soundfont-gm`` -- ``/usr/share/sounds/sf2/FluidR3_GM.sf2``,
  Frank Wen's Fluid (R3) General MIDI SoundFont (MIT license).
* Debian ``fluidsynth`` (LGPL-2.1+), run as a program on tiny Standard MIDI
  Files this module writes (:func:`anybind.corpora._gm.standard_midi_file`).
  No Python binding is needed.

Rules
-----

**Classes.**  The 128 General MIDI programs (names and 16 families: the GM
Level 1 table in :mod:`anybind.corpora._gm`) and, with ``drums`` (default),
the GM drum kit of channel 10 as one more class (instrument and family
``Drum Kit``).

**Notes.**  Each program plays ``pitches`` notes (default 5) spread evenly
over its usual range (``low``..``high`` in the table), each at every velocity
of ``velocities`` (``soft`` 48, ``loud`` 112) and for every note length of
``durations`` (``short`` 0.3 s, ``long`` 1.0 s): 20 clips per program.  The
drum kit plays the 5 sounds of :data:`~anybind.corpora._gm.DRUM_NOTES` at
each velocity, short notes only.  The register word of a note is its place
in the instrument's own range (``very low`` .. ``very high``).

**Records.**  ``id`` = ``<instrument slug>/<note>-<length>-<dynamics>``
(``violin/G4-long-loud``); ``audio`` = ``media/<id>.flac`` (``#`` written
``s``); ``text`` = a caption from the spoken name and the note
("a violin playing a long high note, loudly", "tremolo strings playing ...",
"a choir singing ...", "the sound of a helicopter, low-pitched, short and
soft", "a drum kit playing a snare drum, loudly"); ``labels`` =
``{"instrument": <GM name>, "family": <GM family>}``; ``meta`` = program,
MIDI note, note name, velocity, note length, register (or drum sound),
dynamics, spoken name.

**Audio.**  One ``fluidsynth`` run per class (:mod:`._fluidsynth`: reverb
and chorus off, float output, each note in its own block-aligned slot after a
discarded pre-roll note, so a clip does not depend on the other notes of the
run); mono, the first 1.25 s of each slot, faded out over its last 50 ms,
16-bit FLAC at 22,050 Hz (``round(x * 32767)``, clipped samples counted in
``problems``).  The same soundfont and fluidsynth give byte-identical files.

**Dropped** (counted, ids and messages in ``corpus.json``): every clip of a
class whose render fails (``render_failed``: fluidsynth exits non-zero, times
out, reports an error or a missing preset -- it would silently substitute
another instrument -- or writes no or too little audio), and clips whose peak
is under -60 dBFS (``silent``).  A missing soundfont or fluidsynth is a
one-line error naming the Debian package to install (installed first with
``install`` when running as root); a build where no clip renders is an error.

**Split.**  Stratified by hash: the unit is a (class, pitch) pair with all
its velocities and lengths, so near-identical clips never straddle splits.
Within each class the units are ordered by ``sha256("<slug>/<note>")``: the
first is ``test``, the second ``val`` (when the class has 3 or more pitches),
the rest ``train``.  Every instrument is in train, val and test (zero-shot
instrument recognition is scored on test, a linear probe trains on train),
and each is tested on a pitch it was not trained on.  Defaults: 3 train
pitches, 1 val, 1 test per program; 3 / 1 / 1 drum sounds.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license
from .debian import debian_copyright_path, debian_package_version
from ._fluidsynth import (
    CLIP,
    DEFAULT_SOUNDFONT,
    FADE,
    FLUIDSYNTH_OPTIONS,
    FLUIDSYNTH_PACKAGE,
    SAMPLE_RATE,
    SOUND_OFF_MS,
    SOUNDFONT_PACKAGE,
    check_soundfont,
    file_sha256,
    find_fluidsynth,
    fluidsynth_version,
    render_slots,
    to_pcm16,
)
from ._gm import DRUM_CHANNEL, DRUM_NOTES, GM_FAMILIES, GM_PROGRAMS, caption, note_name, spread_pitches

__all__ = [
    "CLIP",
    "DEFAULT_DURATIONS",
    "DEFAULT_SOUNDFONT",
    "DEFAULT_VELOCITIES",
    "DRUM_KIT",
    "SAMPLE_RATE",
    "build_instruments",
    "caption",
    "plan_notes",
    "render_class",
    "splits_for",
]

NAME = "instruments"
BUILDER_VERSION = "1"
SILENT_PEAK = 1e-3  # -60 dBFS
DEFAULT_PITCHES = 5
DEFAULT_VELOCITIES: dict[str, int] = {"soft": 48, "loud": 112}
DEFAULT_DURATIONS: dict[str, int] = {"short": 300, "long": 1000}  # ms
#: the drum kit as a class: (instrument, family)
DRUM_KIT = ("Drum Kit", "Drum Kit")


@dataclass(frozen=True)
class Note:
    """One clip to render: a class (GM program or the drum kit) playing one note."""

    id: str
    cls: str  # labels.instrument
    family: str
    slug: str
    program: int | None  # None: the drum kit (channel 10)
    note: int
    velocity: int
    dynamics: str
    length: str
    ms: int
    register: str  # "very low".."very high", or the drum sound
    text: str
    unit: str  # the split unit: "<slug>/<note>"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def plan_notes(
    programs: Sequence[int] | None = None,
    pitches: int = DEFAULT_PITCHES,
    velocities: Mapping[str, int] | None = None,
    durations: Mapping[str, int] | None = None,
    drums: bool = True,
) -> list[Note]:
    """Every clip of the corpus, class by class (see the module docstring)."""
    vel = dict(DEFAULT_VELOCITIES if velocities is None else velocities)
    dur = dict(DEFAULT_DURATIONS if durations is None else durations)
    progs = list(range(128)) if programs is None else list(dict.fromkeys(programs))
    bad = [p for p in progs if not (isinstance(p, int) and 0 <= p <= 127)]
    if bad:
        raise DataError(f"programs: {bad} are not General MIDI programs (0-127)")
    if pitches < 1:
        raise DataError(f"pitches must be at least 1, got {pitches}")
    if not vel or any(not 1 <= v <= 127 for v in vel.values()):
        raise DataError(f"velocities must be 1-127, got {vel}")
    if not dur or any(not 10 <= d <= SOUND_OFF_MS - 10 for d in dur.values()):
        raise DataError(f"durations must be 10-{SOUND_OFF_MS - 10} ms, got {dur}")
    out: list[Note] = []
    for i in progs:
        p = GM_PROGRAMS[i]
        slug = _slug(p.name)
        for note, reg in spread_pitches(p, pitches):
            nn = note_name(note).replace("#", "s")
            for length, ms in dur.items():
                for dyn, v in vel.items():
                    out.append(Note(f"{slug}/{nn}-{length}-{dyn}", p.name, p.family, slug, i, note, v, dyn,
                                    length, ms, reg, caption(p, reg, length, dyn), f"{slug}/{nn}"))
    if drums:
        slug = _slug(DRUM_KIT[0])
        length, ms = min(dur.items(), key=lambda kv: kv[1])
        for note, sound in DRUM_NOTES.items():
            unit = f"{slug}/{_slug(sound)}"
            for dyn, v in vel.items():
                out.append(Note(f"{unit}-{dyn}", *DRUM_KIT, slug, None, note, v, dyn, length, ms, sound,
                                caption(None, sound, length, dyn), unit))
    return out


def _unit_rank(unit: str) -> bytes:
    return hashlib.sha256(unit.encode("utf-8")).digest()


def splits_for(notes: Sequence[Note]) -> dict[str, str]:
    """Split of every split unit: per class, by hash rank, first test, second val (3+ units), rest train."""
    units: dict[str, list[str]] = {}
    for n in notes:
        if n.unit not in units.setdefault(n.cls, []):
            units[n.cls].append(n.unit)
    out: dict[str, str] = {}
    for us in units.values():
        for rank, u in enumerate(sorted(us, key=_unit_rank)):
            out[u] = "test" if rank == 0 and len(us) > 1 else "val" if rank == 1 and len(us) > 2 else "train"
    return out


def render_class(notes: Sequence[Note], soundfont: Path, fluidsynth: str = "fluidsynth") -> np.ndarray:
    """Render the notes of one class in one fluidsynth run: float32 mono clips, ``(len(notes), CLIP)``."""
    ch = DRUM_CHANNEL if notes[0].program is None else 0
    return render_slots(ch, notes[0].program or 0, [(n.note, n.velocity, n.ms) for n in notes], soundfont,
                        fluidsynth, f"fluidsynth {notes[0].cls!r}")  # fmt: skip


def build_instruments(
    out_dir: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] = DEFAULT_SOUNDFONT,
    programs: Sequence[int] | None = None,
    pitches: int = DEFAULT_PITCHES,
    velocities: Mapping[str, int] | None = None,
    durations: Mapping[str, int] | None = None,
    drums: bool = True,
    fluidsynth: str = "fluidsynth",
    jobs: int = 2,
    install: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Build the instruments corpus into ``out_dir`` (see the module docstring).

    ``programs``: only these GM programs (0-127; default all); ``pitches``:
    notes per program; ``velocities`` / ``durations``: word -> MIDI velocity /
    note length in ms; ``drums``: add the drum kit class; ``jobs``: fluidsynth
    processes at once; ``install``: ``apt-get install`` a missing soundfont or
    fluidsynth (as root).
    """
    notes = plan_notes(programs, pitches, velocities, durations, drums)
    if not notes:
        raise DataError("instruments: nothing to render (no programs and no drums)")
    sf2 = check_soundfont(Path(soundfont), install)
    exe = find_fluidsynth(fluidsynth, install)

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, notes, sf2, exe, jobs, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path, out_dir: Path, notes: list[Note], sf2: Path, exe: str, jobs: int, prog: Any
) -> CorpusSummary:
    import soundfile as sf

    by_class: dict[str, list[Note]] = {}
    for n in notes:
        by_class.setdefault(n.cls, []).append(n)
    task = None if prog is None else prog.add_task("rendering instruments (fluidsynth)", total=len(by_class))

    def run(cls: str) -> tuple[str, np.ndarray | DataError]:
        try:
            return cls, render_class(by_class[cls], sf2, exe)
        except DataError as e:
            return cls, e

    rendered: dict[str, np.ndarray | DataError] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for cls, res in pool.map(run, list(by_class)):
            rendered[cls] = res
            if prog is not None:
                prog.advance(task)

    split_of = splits_for(notes)
    skipped: dict[str, list[str]] = {}
    problems: Counter[str] = Counter()
    errors: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    for cls, group in by_class.items():
        res = rendered[cls]
        if isinstance(res, DataError):
            errors[cls] = stable_message(str(res), tmp)
            skipped.setdefault("render_failed", []).extend(n.id for n in group)
            continue
        for n, clip in zip(group, res):
            if float(np.max(np.abs(clip))) < SILENT_PEAK:
                skipped.setdefault("silent", []).append(n.id)
                continue
            pcm, clipped = to_pcm16(clip)
            if clipped:
                problems["clipped_clips"] += 1
                problems["clipped_samples"] += clipped
            rel = f"media/{n.id}.flac"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(tmp / rel), pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
            records.append(_record(n, rel, split_of[n.unit]))
    if not records:
        first = next(iter(errors.values()), "every clip was silent")
        raise DataError(f"instruments: no clip rendered from {sf2} ({len(notes)} planned; {first})")
    return _finish(tmp, out_dir, notes, records, skipped, problems, errors, sf2, exe)


def _record(n: Note, rel: str, split: str) -> dict[str, Any]:
    spoken = GM_PROGRAMS[n.program].spoken if n.program is not None else "drum kit"
    return {
        "id": n.id,
        "split": split,
        "text": n.text,
        "audio": rel,
        "labels": {"instrument": n.cls, "family": n.family},
        "meta": {
            "program": n.program,
            "channel": (DRUM_CHANNEL if n.program is None else 0) + 1,
            "note": n.note,
            "note_name": note_name(n.note),
            "velocity": n.velocity,
            "note_ms": n.ms,
            "register": n.register if n.program is not None else None,
            "drum": n.register if n.program is None else None,
            "dynamics": n.dynamics,
            "length": n.length,
            "spoken": spoken,
            "seconds": round(CLIP / SAMPLE_RATE, 3),
        },
    }


def _finish(
    tmp: Path,
    out_dir: Path,
    notes: list[Note],
    records: list[dict[str, Any]],
    skipped: dict[str, list[str]],
    problems: Counter[str],
    errors: dict[str, str],
    sf2: Path,
    exe: str,
) -> CorpusSummary:
    default = sf2.absolute() == Path(DEFAULT_SOUNDFONT)
    classes: dict[str, Any] = {}
    for n in notes:
        c = classes.setdefault(n.cls, {"family": n.family, "program": n.program, "notes": []})
        if n.program is not None:
            p = GM_PROGRAMS[n.program]
            c.update(spoken=p.spoken, range=[note_name(p.low), note_name(p.high)])
        else:
            c["spoken"] = "drum kit"
        if note_name(n.note) not in c["notes"]:
            c["notes"].append(note_name(n.note))
    families = [f for f in (*GM_FAMILIES, DRUM_KIT[1]) if any(c["family"] == f for c in classes.values())]
    kept = Counter(r["labels"]["instrument"] for r in records)
    meta = {
        "description": "General MIDI instruments (FluidR3 GM soundfont) rendered by FluidSynth at several "
        "pitches, lengths and velocities, each clip captioned and labelled with its instrument and family.",
        "source": {
            "soundfont": {
                "package": SOUNDFONT_PACKAGE if default else "unknown",
                "version": debian_package_version(SOUNDFONT_PACKAGE) if default else "unknown",
                "file": str(sf2),
                "sha256": file_sha256(sf2),
                "license": "MIT (Fluid R3 GM, Frank Wen)" if default else "see the soundfont",
            },
            "fluidsynth": {
                "package": FLUIDSYNTH_PACKAGE,
                "version": debian_package_version(FLUIDSYNTH_PACKAGE),
                "program": fluidsynth_version(exe),
                "options": " ".join(FLUIDSYNTH_OPTIONS),
                "license": "LGPL-2.1-or-later (the program; its output is not covered)",
            },
        },
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "audio": f"{SAMPLE_RATE} Hz mono 16-bit FLAC, {CLIP} samples ({CLIP / SAMPLE_RATE:.2f} s) per clip, "
        f"faded out over the last {FADE} samples ({FADE / SAMPLE_RATE * 1000:.0f} ms)",
        "split": "stratified hash: unit = (class, pitch) with all its velocities and lengths; per class the "
        "unit with the smallest sha256('<slug>/<note>') is test, the next val (3+ units), the rest train",
        "families": families,
        "classes": classes,
        "kept_per_class": dict(kept),
        "render_errors": dict(sorted(errors.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(
        tmp,
        {SOUNDFONT_PACKAGE: debian_copyright_path(SOUNDFONT_PACKAGE),
         FLUIDSYNTH_PACKAGE: debian_copyright_path(FLUIDSYNTH_PACKAGE)},
        fallback="Audio rendered from the Fluid (R3) General MIDI SoundFont by Frank Wen (MIT license), "
        "with FluidSynth (LGPL-2.1-or-later; its license does not cover its output).",
        source_md=(
            "# General MIDI instruments\n\n"
            f"* Samples: the soundfont {sf2}"
            + (f" (Debian `{SOUNDFONT_PACKAGE}`, MIT)" if default else "")
            + "; every clip is a rendering of its samples.\n"
            f"* Rendered with FluidSynth (Debian `{FLUIDSYNTH_PACKAGE}`, LGPL-2.1-or-later): "
            f"`fluidsynth -n -i -q {' '.join(FLUIDSYNTH_OPTIONS)} -F out.wav SF2 in.mid`.\n"
            "* Instrument names and families: the General MIDI Level 1 Sound Set (MMA).\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
        texts={
            "Note": "The audio is derived from the Fluid (R3) GM SoundFont samples (MIT license, Copyright "
            "Frank Wen): keep its copyright notice and license with the clips. FluidSynth is "
            "LGPL-2.1-or-later; that license covers the program, not the audio it renders."
        },
    )
    return summary

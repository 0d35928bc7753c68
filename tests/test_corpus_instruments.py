"""The instruments corpus: GM table, MIDI writer, split rule, then real FluidSynth renders of a subset."""

from __future__ import annotations

import json
import shutil
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora import instruments as ins
from anybind.corpora._gm import GM_FAMILIES, GM_PROGRAMS, note_name, standard_midi_file
from anybind.data.manifest import SPLITS, load_manifest
from anybind.data.media import load_audio
from anybind.errors import DataError

from corpus_checks import folder_files, read_jsonl

SF2 = Path(ins.DEFAULT_SOUNDFONT)
needs_fluid = pytest.mark.skipif(
    not SF2.is_file() or shutil.which("fluidsynth") is None,
    reason=f"apt-get install -y {ins.SOUNDFONT_PACKAGE} {ins.FLUIDSYNTH_PACKAGE}",
)
#: 6 programs from 6 families x 2 pitches x 2 velocities x 2 lengths, + the drum kit (5 sounds x 2 velocities)
SUBSET = dict(programs=[0, 24, 40, 56, 73, 118], pitches=2)
N_SUBSET = 6 * 2 * 2 * 2 + 5 * 2


# --------------------------------------------------------------------------- rules, no rendering


def test_gm_table():
    assert len(GM_PROGRAMS) == 128 and [p.program for p in GM_PROGRAMS] == list(range(128))
    assert Counter(p.family for p in GM_PROGRAMS) == {f: 8 for f in GM_FAMILIES} and len(GM_FAMILIES) == 16
    assert len({p.name for p in GM_PROGRAMS}) == 128 and len({p.spoken for p in GM_PROGRAMS}) == 128
    assert (GM_PROGRAMS[0].name, GM_PROGRAMS[40].name, GM_PROGRAMS[127].name) == (
        "Acoustic Grand Piano", "Violin", "Gunshot")  # fmt: skip
    assert (GM_PROGRAMS[40].family, GM_PROGRAMS[73].family, GM_PROGRAMS[118].family) == (
        "Strings", "Pipe", "Percussive")  # fmt: skip
    assert all(0 <= p.low < p.high <= 127 for p in GM_PROGRAMS)
    assert (note_name(60), note_name(61), note_name(21)) == ("C4", "C#4", "A0")


def test_captions():
    p = GM_PROGRAMS
    assert ins.caption(p[40], "high", "long", "loud") == "a violin playing a long high note, loudly"
    assert ins.caption(p[60], "low", "short", "soft") == "a French horn playing a short low note, softly"
    assert ins.caption(p[68], "middle", "short", "soft").startswith("an oboe playing")
    assert ins.caption(p[44], "low", "long", "loud") == "tremolo strings playing a long low note, loudly"
    assert ins.caption(p[52], "high", "long", "soft") == "a choir singing a long high note, softly"
    heli = "the sound of a helicopter, low-pitched, short and soft"
    assert ins.caption(p[125], "low", "short", "soft") == heli
    assert ins.caption(None, "snare drum", "short", "loud") == "a drum kit playing a snare drum, loudly"


def _vlq_decode(data: bytes, i: int) -> tuple[int, int]:
    n = 0
    while True:
        b = data[i]
        n, i = (n << 7) | (b & 0x7F), i + 1
        if not b & 0x80:
            return n, i


def test_standard_midi_file_round_trip():
    times = [0, 5, 127, 128, 16383, 16384, 300000]
    msgs = [bytes([0x90, 60 + k, 100]) for k in range(len(times))]
    data = standard_midi_file(list(zip(reversed(times), reversed(msgs))))  # sorted by time on write
    assert data[:4] == b"MThd" and data[8:10] == b"\x00\x00" and int.from_bytes(data[12:14], "big") == 1000
    assert data[14:18] == b"MTrk" and int.from_bytes(data[18:22], "big") == len(data) - 22
    i, now, got = 22, 0, []
    while i < len(data):
        dt, i = _vlq_decode(data, i)
        now += dt
        if data[i] == 0xFF:  # meta: tempo, end of track
            got.append((now, data[i : i + 3 + data[i + 2]]))
            i += 3 + data[i + 2]
        else:
            got.append((now, data[i : i + 3]))
            i += 3
    assert got[0] == (0, b"\xff\x51\x03\x0f\x42\x40") and got[-1] == (times[-1], b"\xff\x2f\x00")
    assert got[1:-1] == list(zip(times, msgs))
    with pytest.raises(ValueError):
        standard_midi_file([(-1, b"\x90\x3c\x40")])


def test_plan_defaults():
    notes = ins.plan_notes()
    assert len(notes) == 128 * 5 * 2 * 2 + 5 * 2 and len({n.id for n in notes}) == len(notes)
    per_class = Counter(n.cls for n in notes)
    assert len(per_class) == 129 and per_class["Violin"] == 20 and per_class[ins.DRUM_KIT[0]] == 10
    violin = sorted({n.note for n in notes if n.cls == "Violin"})
    assert violin[0] == GM_PROGRAMS[40].low and violin[-1] == GM_PROGRAMS[40].high and len(violin) == 5
    with pytest.raises(DataError, match="0-127"):
        ins.plan_notes([128])
    with pytest.raises(DataError, match="velocities"):
        ins.plan_notes([0], velocities={"loud": 200})


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 127), min_size=1, max_size=12, unique=True),
    st.integers(1, 7),
    st.booleans(),
)
def test_split_rule(programs, pitches, drums):
    """Every class is in train; in test from 2 pitches, in val from 3; a (class, pitch) is in one split."""
    notes = ins.plan_notes(programs, pitches, drums=drums)
    split = ins.splits_for(notes)
    assert set(split) == {n.unit for n in notes} and set(split.values()) <= set(SPLITS)
    units: dict[str, set[str]] = {}
    for n in notes:
        units.setdefault(n.cls, set()).add(n.unit)
    for us in units.values():
        got = Counter(split[u] for u in us)
        assert got["train"] >= 1
        assert got["test"] == (1 if len(us) >= 2 else 0) and got["val"] == (1 if len(us) >= 3 else 0)
    # the rule only looks at a class's own units: adding other programs changes nothing
    alone = ins.splits_for(ins.plan_notes(programs[:1], pitches, drums=False))
    assert all(split[u] == s for u, s in alone.items())


# --------------------------------------------------------------------------- missing inputs


def test_missing_soundfont_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as e:
        ins.build_instruments(tmp_path / "out", soundfont=tmp_path / "nope.sf2", programs=[0], progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "nope.sf2" in msg and "apt-get install -y fluid-soundfont-gm" in msg
    (tmp_path / "fake.sf2").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    with pytest.raises(DataError, match="not a SoundFont 2 file"):
        ins.build_instruments(tmp_path / "out", soundfont=tmp_path / "fake.sf2", programs=[0], progress=False)
    assert not (tmp_path / "out").exists()


@needs_fluid
def test_missing_fluidsynth_is_a_clear_error(tmp_path):
    with pytest.raises(DataError) as e:
        ins.build_instruments(tmp_path / "out", programs=[0], fluidsynth="no-such-fluidsynth", progress=False)
    assert "\n" not in str(e.value) and "apt-get install -y fluidsynth" in str(e.value)


@needs_fluid
def test_corrupt_soundfont_renders_nothing(tmp_path):
    """fluidsynth exits 0 and writes silence when it cannot load the soundfont: its message is caught."""
    bad = tmp_path / "cut.sf2"
    with open(SF2, "rb") as f:
        bad.write_bytes(f.read(100_000))  # a valid header, the rest missing
    with pytest.raises(DataError, match="no clip rendered") as e:
        ins.build_instruments(tmp_path / "o", soundfont=bad, programs=[0], pitches=1, drums=False,
                              progress=False)  # fmt: skip
    assert "SoundFont" in str(e.value) and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- real renders


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    if not SF2.is_file() or shutil.which("fluidsynth") is None:
        pytest.skip(f"apt-get install -y {ins.SOUNDFONT_PACKAGE} {ins.FLUIDSYNTH_PACKAGE}")
    out = tmp_path_factory.mktemp("instruments") / "inst"
    summary = ins.build_instruments(out, progress=False, **SUBSET)
    return out, summary


def test_subset_build(subset):
    out, summary = subset
    recs = read_jsonl(out / "manifest.jsonl")
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert summary.records == len(recs) == meta["kept"] == N_SUBSET and meta["dropped"] == 0
    assert meta["name"] == "instruments"
    assert meta["counts"]["modalities"] == {"audio": N_SUBSET, "text": N_SUBSET}
    assert (out / "LICENSE").read_text().count("=====") >= 4 and "MIT" in (out / "LICENSE").read_text()
    assert (out / "SOURCE.md").is_file() and meta["source"]["soundfont"]["package"] == "fluid-soundfont-gm"
    assert len(meta["classes"]) == 7 and meta["families"][-1] == "Drum Kit"
    by_class: dict[str, set[str]] = {}
    for r in recs:
        assert set(r) == {"id", "split", "text", "audio", "labels", "meta"}
        assert set(r["labels"]) == {"instrument", "family"} and r["text"]
        by_class.setdefault(r["labels"]["instrument"], set()).add(r["split"])
    drums = by_class.pop(ins.DRUM_KIT[0])
    assert drums == set(SPLITS)  # 5 drum sounds
    assert all(s == {"train", "test"} for s in by_class.values())  # 2 pitches
    v = next(r for r in recs if r["labels"]["instrument"] == "Violin" and r["meta"]["note"] == 93
             and r["meta"]["dynamics"] == "loud" and r["meta"]["length"] == "long")  # fmt: skip
    assert v["id"] == "violin/A6-long-loud" and v["audio"] == "media/violin/A6-long-loud.flac"
    assert v["text"] == "a violin playing a long very high note, loudly"
    assert v["labels"]["family"] == "Strings"
    assert v["meta"]["register"] == "very high" and v["meta"]["drum"] is None
    d = next(r for r in recs if r["id"] == "drum-kit/snare-drum-soft")
    assert d["text"] == "a drum kit playing a snare drum, softly" and d["meta"]["drum"] == "snare drum"
    assert d["meta"]["channel"] == 10 and d["meta"]["note"] == 38
    assert d["labels"] == {"instrument": "Drum Kit", "family": "Drum Kit"}


def test_subset_clips_decode_and_sound(subset):
    out, _ = subset
    man = load_manifest(out / "manifest.jsonl", check_media=True, check_cache=False)
    assert not man.bad and len(man.records) == N_SUBSET
    for r in man.records:
        wav, sr = load_audio(r.values["audio"])
        assert sr == ins.SAMPLE_RATE and len(wav) == ins.CLIP
        assert np.abs(wav).max() > ins.SILENT_PEAK and np.abs(wav[-5:]).max() < 1e-3  # faded out
    loud, soft = (load_audio(out / f"media/violin/G3-long-{d}.flac")[0] for d in ("loud", "soft"))
    assert np.sqrt(np.mean(loud**2)) > 2 * np.sqrt(np.mean(soft**2))


def test_rebuild_is_byte_identical(subset, tmp_path):
    out, _ = subset
    before = folder_files(out)
    ins.build_instruments(out, progress=False, **SUBSET)  # over the previous build
    assert folder_files(out) == before
    # a clip does not depend on the other notes of its fluidsynth run
    other = tmp_path / "other"
    ins.build_instruments(other, programs=[40], pitches=2, velocities={"loud": 112}, durations={"long": 1000},
                          drums=False, progress=False)  # fmt: skip
    for rel, data in folder_files(other).items():
        if rel.startswith("media/"):
            assert before[rel] == data, rel


@needs_fluid
def test_failing_render_and_silent_clip_are_counted(tmp_path, monkeypatch):
    real = ins.render_class

    def flaky(notes, soundfont, fluidsynth="fluidsynth"):
        if notes[0].cls == "Trumpet":
            raise DataError("fluidsynth 'Trumpet': exit 1 (boom)")
        clips = real(notes, soundfont, fluidsynth)
        if notes[0].cls == "Violin":
            clips[0] = 0.0  # digital silence
        return clips

    monkeypatch.setattr(ins, "render_class", flaky)
    out = tmp_path / "out"
    summary = ins.build_instruments(out, programs=[40, 56], pitches=1, drums=False, progress=False)
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert summary.records == 3 and meta["skipped"] == {"render_failed": 4, "silent": 1}
    assert meta["render_errors"] == {"Trumpet": "fluidsynth 'Trumpet': exit 1 (boom)"}
    assert meta["skipped_ids"]["silent"] == ["violin/D5-short-soft"]
    assert sorted(p.name for p in (out / "media").rglob("*.flac")) == [
        "D5-long-loud.flac", "D5-long-soft.flac", "D5-short-loud.flac"]  # fmt: skip


@needs_fluid
def test_fluidsynth_substituting_a_preset_is_a_failed_render(tmp_path):
    """fluidsynth exits 0 when a preset is missing and plays another instrument: that class is dropped."""
    fake = tmp_path / "fake-fluidsynth"
    real = shutil.which("fluidsynth")
    fake.write_text(
        "#!/bin/sh\n"
        'case "$*" in --version) exec ' + real + ' "$@";; esac\n'
        'for a in "$@"; do last="$a"; done\n'
        # program change 56 (trumpet) on channel 1: say what fluidsynth says when the preset is missing
        'if od -An -tx1 "$last" | tr -d " \\n" | grep -q c038; then\n'
        '  echo "fluidsynth: warning: Instrument not found on channel 0 [bank=0 prog=56]" >&2; fi\n'
        'exec ' + real + ' "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "out"
    summary = ins.build_instruments(out, programs=[40, 56], pitches=1, drums=False, fluidsynth=str(fake),
                                    progress=False)  # fmt: skip
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert summary.records == 4 and meta["skipped"] == {"render_failed": 4}
    assert "Instrument not found" in meta["render_errors"]["Trumpet"]


@needs_fluid
def test_cli_instruments(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["corpus", "instruments", "--help"])
    assert res.exit_code == 0 and "anybind corpus instruments --out" in res.output
    res = runner.invoke(app, ["corpus", "instruments", "--out", str(tmp_path / "i"), "-p", "73", "-p", "24",
                              "--pitches", "1", "--no-drums", "--no-install"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "instruments: 8 records" in res.output and "2 instruments in 2 families" in res.output
    res = runner.invoke(app, ["corpus", "instruments", "--out", str(tmp_path / "j"), "--soundfont",
                              str(tmp_path / "none.sf2"), "--no-install"])  # fmt: skip
    assert res.exit_code == 2 and "apt-get install -y fluid-soundfont-gm" in res.output

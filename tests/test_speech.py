"""The speech modality: Whisper's log-mel front end, speech:whisper-tiny on real espeak-ng speech, the corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.encoders import speech as S
from anybind.errors import DataError, EncoderError

SR = S.SAMPLE_RATE
CAPTIONS = ("A big red apple.", "A dog barking at the moon.")
VOICES = ("en-us+m3", "en-gb+f3")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _tone(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ----------------------------------------------------------------------------- front end


def test_mel_scale_is_slaney():
    assert S.hz_to_mel(1000.0) == pytest.approx(15.0)  # 1 kHz = 15 mels, linear below (200/3 Hz per mel)
    assert S.hz_to_mel(500.0) == pytest.approx(7.5)
    assert S.hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # 27 mels per factor 6.4 above 1 kHz


@given(st.floats(min_value=0.0, max_value=8000.0))
def test_mel_scale_round_trip(f):
    assert float(S.mel_to_hz(S.hz_to_mel(f))) == pytest.approx(f, abs=1e-6)


def test_mel_filters_shape_and_area():
    fb = S.mel_filters()
    assert fb.shape == (80, 201) and fb.dtype == np.float32 and (fb >= 0).all()
    # Slaney normalisation: every triangle has unit area on the Hz axis (bins are 40 Hz apart)
    area = fb.sum(1) * (8000 / 200)
    assert np.allclose(area, 1.0, atol=0.08)
    peaks = S.mel_to_hz(np.linspace(0, S.hz_to_mel(8000.0), 82))[1:-1]
    assert np.all(np.abs(fb.argmax(1) * 40.0 - peaks) <= 20.0 + 1e-9)  # each peaks at its centre frequency


def test_mel_filters_match_librosa():
    librosa = pytest.importorskip("librosa")  # what Whisper's mel_filters.npz was made with
    ref = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert np.abs(S.mel_filters() - ref).max() < 1e-6


def test_log_mel_matches_whisper_reference():
    """Whisper's own code (whisper.audio.log_mel_spectrogram after pad_or_trim), written with torch, on a noisy chirp."""
    import torch

    rng = np.random.default_rng(0)
    t = np.arange(int(2.3 * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    audio = torch.zeros(S.N_SAMPLES)
    audio[: len(x)] = torch.from_numpy(x)
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel_spec = torch.from_numpy(S.mel_filters()) @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    ref = ((log_spec + 4.0) / 4.0).numpy()
    ours = S.log_mel(x)
    assert ours.shape == (80, 3000) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 2e-4


@settings(max_examples=8, deadline=None)
@given(st.floats(min_value=150.0, max_value=7500.0))
def test_pure_tone_lands_in_its_mel_band(freq):
    m = S.log_mel(_tone(freq, 0.5))
    band = int(m[:, 5:45].mean(1).argmax())
    fb = S.mel_filters()
    lo, hi = np.flatnonzero(fb[band])[[0, -1]] * 40.0  # the band's pass range on the FFT grid
    assert lo - 40.0 <= freq <= hi + 40.0
    # value range: the window maximum maps to max, everything is floored 2 (= 8 decades / 4) below it
    assert m.max() - m.min() <= 2.0 + 1e-5 and -1.5 < m.min() and m.max() < 2.5
    # the zero padding after the 0.5 s of tone is the floor, exactly
    assert np.all(m[:, 60:] == pytest.approx(m.max() - 2.0, abs=1e-5))


def test_voiced_mask_excludes_padding_and_silence():
    x = np.concatenate([_tone(440.0, 0.5), np.zeros(SR // 2, np.float32), _tone(440.0, 0.5)])
    prep = S.prepare(x)
    assert prep.mels.shape == (1, 80, 3000) and prep.mask.shape == (1, 1500)
    # 0.1 s lead added by the trimming + 1.5 s + 0.1 s: 1.7 s of real audio = 85 encoder frames (20 ms each)
    assert S.real_frames(int(1.7 * SR)) == 85 and np.flatnonzero(prep.mask[0])[-1] < 85
    on = np.flatnonzero(prep.mask[0])
    # only the tones' frames (0.1-0.6 s and 1.1-1.6 s = encoder frames 5..30 and 55..80), give or take one
    expect = np.r_[5:30, 55:80]
    assert set(expect[1:-1]) <= set(on) and len(set(on) - set(expect)) <= 4
    silent = S.prepare(np.zeros(SR, np.float32))  # digital silence: every real-audio frame
    assert silent.mask[0].sum() == S.real_frames(SR) == 50


def test_silence_is_trimmed_to_a_fixed_lead():
    tone = _tone(440.0, 1.0)[1:]  # starts at sin(2 pi 440 / 16000) > 0
    margin = int(S.TRIM_MARGIN * SR)
    trimmed = []
    for lead in (0, SR // 20, SR // 2 + 7, 3 * SR):  # less than the margin, then more
        x = np.concatenate([np.zeros(lead, np.float32), tone, np.zeros(SR + lead, np.float32)])
        trimmed.append(S.trim_silence(x))
    for y in trimmed:  # the same samples whatever the silence around the tone
        assert np.array_equal(y, trimmed[0])
    y = trimmed[0]
    assert np.array_equal(y[:margin], np.zeros(margin, np.float32)) and y[margin] != 0.0
    assert abs(len(y) - (margin + len(tone) + margin)) <= 2
    noisy = np.concatenate([np.zeros(SR, np.float32), tone, np.zeros(SR, np.float32)])
    noisy += 0.003 * np.random.default_rng(1).standard_normal(len(noisy)).astype(np.float32)
    assert abs(len(S.trim_silence(noisy)) - len(y)) <= 2 * S.HOP  # the noise floor is not speech
    silence = np.zeros(SR, np.float32)
    assert np.array_equal(S.trim_silence(silence), silence)


def test_long_clip_is_split_into_30s_windows():
    x = np.tile(_tone(300.0, 1.0), 35)  # 35 s
    prep = S.prepare(x)
    assert prep.mels.shape == (2, 80, 3000)
    lead = int(S.TRIM_MARGIN * SR) // (2 * S.HOP)  # the 0.1 s the trimming puts before the speech: 5 frames
    assert not prep.mask[0, : lead - 1].any() and prep.mask[0, lead + 1 :].all()
    # the second: 5 s of tone + the 0.1 s lead the trimming added at the start of the clip
    assert prep.mask[1].sum() == S.real_frames(5 * SR + int(S.TRIM_MARGIN * SR)) == 255
    assert not prep.mask[1, 255:].any()


def test_pooling_averages_voiced_frames_over_windows(monkeypatch):
    """The pooling arithmetic, with a fake model: the mean over every voiced frame of every window."""
    enc = S.WhisperEncoder()

    class Fake:
        def encode(self, sv, to_cpu=True):
            x = np.asarray(sv)
            out = np.zeros((len(x), 1500, 384), np.float32)
            out[:, :, 0] = np.arange(1500)[None, :]  # feature 0 = the frame index
            out[:, :, 1] = np.arange(len(x))[:, None]  # feature 1 = the window index (both windows in one call)
            return out

    enc._model = (("cpu", 0), Fake())  # the model() of a CPU runtime (kept with its device)
    item = S.prepare(np.tile(_tone(300.0, 1.0), 35))
    v = enc.encode_loaded([item])[0]
    frames = [np.flatnonzero(m) for m in item.mask]
    assert v[0] == pytest.approx(np.concatenate(frames).mean())
    assert v[1] == pytest.approx(len(frames[1]) / (len(frames[0]) + len(frames[1])))  # windows weighted by frames


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def enc():
    from anybind.encoders.base import get_encoder

    return get_encoder("speech:whisper-tiny")


def test_registry_and_identity(enc):
    from anybind.encoders.base import default_spec, get_encoder

    assert default_spec("speech") == "speech:whisper-tiny" and default_spec("speech_fr") == "speech:whisper-tiny"
    assert get_encoder("speech") is enc and enc.dim == 384 and enc.modality == "speech"
    assert S.PREP_VERSION in enc.identity and "weights=" in enc.identity and "ct2=float32" in enc.identity
    assert get_encoder("speech:whisper-tiny-int8", cached=False).identity != enc.identity
    with pytest.raises(EncoderError, match="whisper-tiny"):
        get_encoder("speech:whisper-huge", cached=False)


def test_bad_audio_is_a_clear_data_error(enc, tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(200)))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for p, why in ((garbage, "corrupt"), (empty, "empty"), (tmp_path / "missing.wav", "does not exist")):
        with pytest.raises(DataError, match=why) as e:
            enc.encode([p])
        assert p.name in str(e.value)
    with pytest.raises(DataError, match="not speech audio"):
        enc.load(42)
    with pytest.raises(DataError, match="non-finite"):
        enc.load(np.array([0.0, np.nan], np.float32))


# ----------------------------------------------------------------------------- real speech


def _espeak(text: str, voice: str, dest: Path) -> Path:
    from anybind.corpora.speech import speak

    speak(text, voice, dest)
    return dest


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (scripts/bootstrap-debian.sh)")
    d = tmp_path_factory.mktemp("espeak")
    return {(c, v): _espeak(c, v, d / f"{i}-{j}.wav") for i, c in enumerate(CAPTIONS) for j, v in enumerate(VOICES)}


@pytest.mark.slow
def test_same_caption_in_other_voice_is_closer(enc, clips):
    keys = list(clips)
    E = _unit(enc.encode([clips[k] for k in keys]))
    sim = E @ E.T
    for a, ka in enumerate(keys):
        for b, kb in enumerate(keys):
            for c, kc in enumerate(keys):
                if ka[0] == kb[0] and ka[1] != kb[1] and kc[0] != ka[0]:
                    assert sim[a, b] > sim[a, c] + 0.02, (ka, kb, kc, sim)


@pytest.mark.slow
def test_voiced_pooling_ignores_padding(enc, clips):
    from anybind.data.media import load_audio

    x, _ = load_audio(clips[(CAPTIONS[0], VOICES[0])], SR)
    other, _ = load_audio(clips[(CAPTIONS[1], VOICES[0])], SR)
    pad = np.zeros(SR, np.float32)
    noise = 0.003 * np.random.default_rng(0).standard_normal(len(x) + 2 * SR).astype(np.float32)  # -50 dBFS
    v = _unit(enc.encode([x, np.concatenate([x, pad, pad]), np.concatenate([pad[: SR // 2], x, pad]), other,
                          np.concatenate([pad, x, pad]) + noise]))
    assert v[0] @ v[1] > 0.9999  # trailing silence: neither pooled nor changing the (zero-padded) input
    assert v[0] @ v[2] > 0.999  # leading silence is trimmed: the speech starts where it did
    assert v[0] @ v[4] > 0.97  # background noise is neither speech to pool nor a reason not to trim
    assert min(v[0] @ v[2], v[0] @ v[4]) > v[0] @ v[3] + 0.05
    # pooling every one of the 1500 frames instead would drown the speech in padding
    import ctranslate2

    prep = [enc.load(a) for a in (x, other)]
    out = np.asarray(enc.model().encode(ctranslate2.StorageView.from_array(np.concatenate([p.mels for p in prep]))))
    naive = _unit(out.mean(1))
    assert naive[0] @ naive[1] > v[0] @ v[3]


@pytest.mark.slow
def test_whisper_decoder_reads_our_log_mel(clips):
    """The front end is what Whisper was trained on: its own decoder transcribes our log-mel of espeak speech."""
    import ctranslate2
    import tokenizers

    from anybind.data.media import load_audio

    tok = tokenizers.Tokenizer.from_file(str(S.model_dir() / "tokenizer.json"))
    prompt = tok.encode("<|startoftranscript|><|notimestamps|>", add_special_tokens=False).ids
    model = ctranslate2.models.Whisper(str(S.model_dir()), device="cpu", intra_threads=2)
    x, _ = load_audio(clips[(CAPTIONS[0], VOICES[0])], SR)
    res = model.generate(ctranslate2.StorageView.from_array(S.log_mel(x)[None]), [prompt], max_length=32)
    text = tok.decode(res[0].sequences_ids[0]).lower()
    assert "apple" in text and ("red" in text or "big" in text), text


# ----------------------------------------------------------------------------- corpus


def test_speech_corpus_on_a_subset(tmp_path):
    from anybind.corpora.speech import build_speech
    from anybind.data.manifest import load_manifest

    tux_stamps = Path("/usr/share/tuxpaint/stamps")
    if not tux_stamps.is_dir():
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    # an espeak-ng that fails on frogs, and a val voice espeak-ng does not have
    fake = tmp_path / "espeak-frogless"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in --voices*) exec espeak-ng "$@";; esac\n'
        'text=$(cat)\n'
        'case "$text" in *rog*) echo "Error: no frogs today" >&2; exit 3;; esac\n'
        'printf "%s" "$text" | exec espeak-ng "$@"\n'
    )
    fake.chmod(0o755)
    voices = {"train": ["en-us+m3", "en-gb+f3"], "val": ["zz-nosuchvoice"], "test": ["en-gb-x-rp+m7"]}
    out = tmp_path / "speech"
    summary = build_speech(out, voices=voices, train_voices=2, limit=4, espeak=str(fake), progress=False)
    meta = json.loads((out / "corpus.json").read_text())
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    # failures are counted and reported with their reason, and the build goes on
    errors = meta["espeak_errors"]
    unknown = {k for k, m in errors.items() if "unknown espeak-ng voice 'zz-nosuchvoice'" in m}
    frogs = {k for k, m in errors.items() if "exit 3 (Error: no frogs today)" in m}
    assert len(unknown) == 4 and frogs and unknown | frogs == set(errors)
    assert summary.skipped == {"espeak_failed": len(errors)} and meta["skipped_ids"]["espeak_failed"] == sorted(errors)
    assert all("rog" not in r["text"] for r in recs)
    n_train = sum(r["split"] == "train" for r in recs)
    assert summary.splits == {"train": n_train, "val": 0, "test": 4} and n_train + len(frogs) == 8  # 4 x 2 voices
    by_split = {s: {r["labels"]["voice"] for r in recs if r["split"] == s} for s in ("train", "test")}
    assert by_split["train"] == {"en-us+m3", "en-gb+f3"} and by_split["test"] == {"en-gb-x-rp+m7"}
    assert not by_split["train"] & by_split["test"]
    man = load_manifest(out / "manifest.jsonl", strict=True)  # every wav and image decodes
    import soundfile as sf

    for r in man.records:
        assert sf.info(r.values["speech"]).samplerate == 16000
        assert r.id.endswith("@" + r.labels["voice"]) and r.labels["stamp"] in r.id
    lic = (out / "LICENSE").read_text()
    assert "GPL" in lic and "espeak-ng" in lic and "does not extend to its output" in lic
    # the same inputs give the same files; overlapping voice sets are refused
    from anybind.corpora.tuxpaint import build_tuxpaint

    build_tuxpaint(tmp_path / "tux", copy_media=False, progress=False)  # this time from a built Tux Paint corpus
    again = tmp_path / "again"
    build_speech(again, tmp_path / "tux", voices=voices, train_voices=2, limit=4, espeak=str(fake), progress=False)
    assert (again / "manifest.jsonl").read_bytes() == (out / "manifest.jsonl").read_bytes()
    with pytest.raises(DataError, match="both the train and the test split"):
        build_speech(tmp_path / "x", voices={"train": ["en-us+m3"], "test": ["en-us+m3"]}, progress=False)


def test_speech_corpus_cli(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["corpus", "speech", "--help"])
    assert res.exit_code == 0 and "anybind corpus speech --out" in res.output
    res = runner.invoke(app, ["corpus", "speech", "--out", str(tmp_path / "s"), "--limit", "1", "--no-install"])
    assert res.exit_code == 0, res.output
    assert "speech: 3 records" in res.output and "test voices: en-gb-x-rp+m7, en-us-nyc+f5" in res.output


def test_speech_bench_task_is_registered():
    from anybind.bench import load_tasks

    t = load_tasks()["speech-retrieval"]
    assert "held-out" in t.description

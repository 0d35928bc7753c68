"""One audio decoding for every audio encoder: ``anybind.data.media.as_audio`` (a path, mono or multichannel
samples, integer PCM, or ``(samples, rate)`` resampled to the encoder's rate).  The encoders' own ``load`` goes
through it and gives, bit for bit, what its old copy gave (decode to mono float32, then resample)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from anybind.data.media import as_audio, as_mono, load_audio, resample
from anybind.errors import DataError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (scripts/bootstrap-debian.sh)")
    from anybind.corpora.speech import speak

    dest = tmp_path_factory.mktemp("clip") / "hello.wav"
    speak("hello there", "en", dest)
    return dest


def _items(clip):
    """The item forms a user passes: the file, stereo int16 PCM at 22.05 kHz as (samples, rate), float mono."""
    mono, rate = load_audio(clip, 16000)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    pcm = np.round(resample(stereo[:, 0], rate, 22050) * 20000).astype(np.int16)
    return [str(clip), (np.stack([pcm, pcm // 2], axis=1), 22050), (mono, rate), mono]


def _old(item, sr: int) -> np.ndarray:
    """What the encoders' own copies did: the file decoded at ``sr``; arrays made mono, then resampled."""
    if isinstance(item, str):
        return load_audio(item, sr)[0]
    if isinstance(item, tuple):
        s = as_mono(item[0], "audio array")
        return resample(s, int(item[1]), sr) if int(item[1]) != sr else s
    return as_mono(item, "audio array")


@pytest.mark.parametrize("sr", [16000, 44100])
def test_as_audio_decodes_every_form_the_encoders_took(clip, sr):
    for item in _items(clip):
        got = as_audio(item, sr)
        assert got.dtype == np.float32 and got.ndim == 1
        assert np.array_equal(got, _old(item, sr))


def test_the_audio_encoders_load_through_as_audio_bit_for_bit(clip):
    from anybind.encoders import audio, speech

    aisfx = audio.AisfxEncoder.__new__(audio.AisfxEncoder)  # load() needs no model
    whisper = speech.WhisperEncoder.__new__(speech.WhisperEncoder)
    for item in _items(clip):
        assert np.array_equal(aisfx.load(item).spec, audio.logmel(_old(item, audio.SAMPLE_RATE)))
        got, want = whisper.load(item), speech.prepare(_old(item, speech.SAMPLE_RATE))
        assert np.array_equal(got.mels, want.mels) and np.array_equal(got.mask, want.mask)
    assert not hasattr(audio, "resample") and not hasattr(speech, "resample")  # no copy of the decoding left


@pytest.mark.parametrize("bad, why", [((np.ones(10, np.float32), 0), "bad sample rate"),
                                      ((np.ones((2, 2, 2), np.float32), 16000), "expected shape"),
                                      (np.array([0.0, np.nan], np.float32), "non-finite"),
                                      ({"a": 1}, "not audio")])
def test_as_audio_refuses_in_one_line(bad, why):
    with pytest.raises(DataError, match=why) as e:
        as_audio(bad, 16000)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arr", [np.zeros((2, 48000), np.float32), np.zeros((1, 16000), np.int16)])
def test_a_channels_first_array_is_refused_not_averaged_into_a_few_samples(arr):
    """(channels, n), torchaudio's layout, read as (n, channels) became 1 or 2 "samples" (the mean over the clip), an
    embedding of nothing said nowhere; the CLAP/wav2vec encoders (hf, ort), which refused any 2-D array before they
    decoded through as_audio, now took it too."""
    for item in (arr, (arr, 16000)):
        with pytest.raises(DataError, match=r"\(channels, n\).*transpose") as e:
            as_audio(item, 16000)
        assert "\n" not in str(e.value)
    assert as_audio(np.ascontiguousarray(arr.T), 16000).shape == (arr.shape[1],)  # (n, channels): its n samples

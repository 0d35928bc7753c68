"""What one audio file may cost (issue 14, part of 15): errors name the file, and an absurd declared sample rate is
refused before resampling."""

import os

import numpy as np
import pytest
from media_helpers import _write

from anybind.data.media import load_audio
from anybind.errors import DataError


# ----------------------------------------------------------------------------- item 15: audio errors
def test_audio_errors_name_the_file_not_a_buffer(tmp_path):
    p = _write(tmp_path / "noise.wav", b"RIFF" + os.urandom(400))
    with pytest.raises(DataError) as e:
        load_audio(p)
    assert str(e.value).startswith(f"{p}: corrupt or unsupported audio") and "BytesIO" not in str(e.value)


def test_an_audio_file_declaring_an_absurd_sample_rate_is_refused_before_resampling(tmp_path):
    """A 444-byte WAV declaring 5 MHz cost 4.6 GB in the resampler (H12); 2^31-1 Hz was a 500."""
    import struct

    from anybind.data.media import LIMITS, load_audio, resample

    for rate in (5_000_011, 2**31 - 1):
        d = bytes(400)
        fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
        wav = tmp_path / f"sr{rate}.wav"
        wav.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(d)) + b"WAVE" + b"fmt " + fmt + b"data"
                        + struct.pack("<I", len(d)) + d)
        with pytest.raises(DataError, match="sample rate") as e:
            load_audio(wav, sample_rate=16000)
        assert str(wav) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="sample rate"):
        resample(np.zeros(10, np.float32), LIMITS.max_sample_rate + 1, 16000)
    assert resample(np.zeros(441, np.float32), 44100, 16000).shape == (160,)

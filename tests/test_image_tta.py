"""Test-time augmentation of the image encoders (``image:efficientnet-lite0@tta=flip``, issue 16): the features of an
item are the mean of the bare encoder's on the image and on its horizontal mirror, each item on its own; the option is
part of the spec and the identity (the feature cache, spaces and indexes keep the two apart); with the label bridge it
goes on the base encoder (``...@tta=flip+bridge``) and the bridge reads the mean features."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.encoders.registry import get_encoder
from anybind.errors import EncoderError

BARE, FLIP = "image:efficientnet-lite0", "image:efficientnet-lite0@tta=flip"
STAMPS = Path("/usr/share/tuxpaint/stamps")
#: real Tux Paint stamps that are not mirror-symmetric (a side view, a profile, text on a coin)
NAMES = ("animals/amphibians/frog.png", "symbols/money/us/coins/005nickel.png", "animals/birds/adelaide-rosella.png")


@pytest.fixture(scope="module")
def images():
    from PIL import Image

    from anybind.data.media import as_rgb_image

    paths = [STAMPS / n for n in NAMES if (STAMPS / n).is_file()]
    if len(paths) < 2:
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    small = []
    for p in paths:  # real stamps, made small: the test is about the views, not the size
        img = as_rgb_image(str(p))
        img.thumbnail((160, 160), Image.Resampling.LANCZOS)
        small.append(img)
    return small


def test_flip_features_are_the_mean_over_the_image_and_its_mirror(images):
    from PIL import ImageOps

    bare, flip = get_encoder(BARE), get_encoder(FLIP)
    plain = bare.encode(images)
    mirrored = bare.encode([ImageOps.mirror(im) for im in images])
    got = flip.encode(images)
    assert got.shape == plain.shape == (len(images), 1280) and got.dtype == np.float32
    np.testing.assert_allclose(got, (plain + mirrored) / 2, rtol=1e-4, atol=1e-4)
    assert np.abs(plain - mirrored).max() > 1e-2  # the stamps are not symmetric: the test can tell the views apart
    assert np.abs(got - plain).max() > 1e-3
    # inductive: an item's features do not depend on the batch it came in
    np.testing.assert_allclose(flip.encode(images[:1]), got[:1], rtol=1e-4, atol=1e-4)
    # a mirrored image has the same TTA features (the two views swap)
    np.testing.assert_allclose(flip.encode([ImageOps.mirror(images[0])]), got[:1], rtol=1e-4, atol=1e-4)


def test_the_option_is_in_the_spec_and_the_identity(images):
    bare, flip = get_encoder(BARE), get_encoder(FLIP)
    assert flip.spec == FLIP and flip.tta == "flip" and bare.tta is None
    assert flip.identity != bare.identity and "tta=flip" in flip.identity and "tta" not in bare.identity
    bb, fb = get_encoder(BARE + "+bridge"), get_encoder(FLIP + "+bridge")
    assert fb.base_encoder is flip and fb.identity != bb.identity and f"base=[{flip.identity}]" in fb.identity
    assert fb.dim == bb.dim == 1280 + 384


def test_the_feature_cache_keeps_them_apart(images, tmp_path):
    from anybind.cache import FeatureCache

    fc = FeatureCache(tmp_path / "fc")
    bare, flip = get_encoder(BARE), get_encoder(FLIP)
    a = fc.encode(bare, images, progress=False)
    b = fc.encode(flip, images, progress=False)  # the bare features are cached: they must not be served here
    assert fc.last_stats.hits == 0
    np.testing.assert_allclose(b, flip.encode(images), rtol=1e-5, atol=1e-5)
    assert np.abs(a - b).max() > 1e-3
    assert fc.folder(bare.identity) != fc.folder(flip.identity)


def test_the_bridge_reads_the_mean_features(images, shared_cache, monkeypatch):
    """The bridge's ImageNet logits are those of the mean pooled features (= the mean of the two views' logits: the
    head is linear), one softmax after: ``derive`` of the TTA base features."""
    from PIL import ImageOps

    from anybind.encoders.bridge import classifier_head

    monkeypatch.setenv("ANYBIND_CACHE", str(shared_cache))  # the 1,000 class prompts are kept beside the cache
    flip, fb = get_encoder(FLIP), get_encoder(FLIP + "+bridge")
    base = flip.encode(images)
    got = fb.encode(images)
    np.testing.assert_allclose(got[:, :1280], base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, fb.derive(base), rtol=1e-4, atol=1e-4)
    W, b = classifier_head(flip)
    logits = base @ W.T + b
    views = [get_encoder(BARE).encode(images), get_encoder(BARE).encode([ImageOps.mirror(im) for im in images])]
    np.testing.assert_allclose(logits, np.mean([v @ W.T + b for v in views], axis=0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("spec, problem", [
    ("image:efficientnet-lite0@tta=bogus", "tta='bogus' is not one of flip"),
    ("image:efficientnet-lite0@tta=", "option 'tta' needs a value"),
    ("image:efficientnet-lite0@scale=2", "unknown option 'scale'"),
    ("image:efficientnet-lite0@", "'@' needs options"),
    ("image:efficientnet-lite0@tta=flip,tta=flip", "option 'tta' given twice"),
    ("image:efficientnet-lite0+bridge@tta=flip", "before the suffix: image:efficientnet-lite0@tta=flip+bridge"),
    ("image:efficientnet-lite0@size=224", "size=224 is efficientnet-lite0's own input size"),
    ("image:efficientnet-lite0@size=32", "size='32' is not a whole number of pixels from 64 to 1024"),
    ("image:efficientnet-lite0@size=2.5", "size='2.5' is not a whole number"),
])
def test_a_bad_option_is_refused_in_one_line_naming_the_spec(spec, problem):
    with pytest.raises(EncoderError) as e:
        get_encoder(spec, cached=False)
    msg = str(e.value)
    assert problem in msg and "\n" not in msg
    assert f"'{spec}'" in msg or f"'{spec.removesuffix('+bridge')}'" in msg


def test_size_feeds_the_model_that_many_pixels(images):
    """``@size=N``: the image is resized to N x N instead of the model's own 224 (FixRes: test larger than train)."""
    bare, big = get_encoder(BARE), get_encoder("image:efficientnet-lite0@size=288")
    both = get_encoder("image:efficientnet-lite0@tta=flip,size=288")
    assert big.load(images[0]).shape == (3, 288, 288) and bare.load(images[0]).shape == (3, 224, 224)
    assert "resize288x288" in big.identity and big.identity != bare.identity != both.identity
    a, b = bare.encode(images), big.encode(images)
    assert b.shape == a.shape and np.isfinite(b).all() and np.abs(a - b).max() > 1e-2
    from PIL import ImageOps

    mirrored = big.encode([ImageOps.mirror(im) for im in images])
    np.testing.assert_allclose(both.encode(images), (b + mirrored) / 2, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=12))
def test_only_known_tta_values_are_taken(value):
    spec = f"image:efficientnet-lite0@tta={value}"
    if value == "flip":
        assert get_encoder(spec, cached=False).tta == "flip"
        return
    with pytest.raises(EncoderError, match=r"is not one of flip"):
        get_encoder(spec, cached=False)


@pytest.mark.parametrize("spelling, canonical", [
    ("image:efficientnet-lite0@size=288,tta=flip", "image:efficientnet-lite0@tta=flip,size=288"),
    ("image:efficientnet-lite0@ tta=flip", "image:efficientnet-lite0@tta=flip"),
    ("image:efficientnet-lite0@tta = flip", "image:efficientnet-lite0@tta=flip"),
    ("image:efficientnet-lite0 @tta=flip", "image:efficientnet-lite0@tta=flip"),
    ("image:efficientnet-lite0@size=0288", "image:efficientnet-lite0@size=288"),
    ("image:efficientnet-lite0@tta=flip,", "image:efficientnet-lite0@tta=flip"),
    ("image: efficientnet-lite0@tta=flip", "image:efficientnet-lite0@tta=flip"),
    ("image:efficientnet-lite0@tta=flip+bridge", None),
])
def test_one_encoder_has_one_spelling(spelling, canonical):
    """The spec is the identity's first part: two spellings of the same options (their order, spaces, a leading
    zero) would be two identities for the same features (the feature cache encodes the corpus again, a space fit with
    one spelling refuses features of the other).  Only the canonical one is taken; the others are refused in one
    line that gives it."""
    if canonical is None:  # the canonical spelling with a suffix: taken
        assert get_encoder(spelling, cached=False).base_encoder.spec == spelling.removesuffix("+bridge")
        return
    assert get_encoder(canonical, cached=False).spec == canonical
    with pytest.raises(EncoderError) as e:
        get_encoder(spelling, cached=False)
    msg = str(e.value)
    assert "\n" not in msg and f"'{spelling}'" in msg and f"write it as {canonical}" in msg, msg

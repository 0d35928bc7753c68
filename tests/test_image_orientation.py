"""Photos are decoded upright: a JPEG's EXIF orientation tag (how a camera held on its side records the picture) is
applied by :func:`anybind.data.media.load_image`, so a photo and its upright copy get the same features.  Every
image encoder's identity says so (``|decode=exif-upright``): features cached before are not reused, and a space
saved before still loads (with one warning: only tagged photos change)."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from anybind.data.media import load_image

# how to store an upright picture U so that a viewer applying EXIF orientation o shows U (EXIF 2.3, tag 0x0112)
STORED = {
    1: lambda u: u,
    2: lambda u: u[:, ::-1],  # mirrored left-right
    3: lambda u: u[::-1, ::-1],  # turned 180
    4: lambda u: u[::-1],  # mirrored top-bottom
    5: lambda u: u.swapaxes(0, 1),  # mirrored along the main diagonal
    6: lambda u: np.rot90(u, 1),  # the viewer turns it 90 degrees clockwise
    7: lambda u: np.rot90(u, 2).swapaxes(0, 1),  # mirrored along the other diagonal
    8: lambda u: np.rot90(u, -1),  # the viewer turns it 90 degrees anticlockwise
}


def upright(h: int = 48, w: int = 80) -> np.ndarray:
    """A picture no turn or mirror maps onto itself: four coloured quadrants of different sizes, a gradient."""
    u = np.zeros((h, w, 3), np.uint8)
    u[: h // 3, : w // 4] = (220, 30, 30)
    u[: h // 3, w // 4:] = (30, 200, 40)
    u[h // 3:, : w // 2] = (30, 40, 210)
    u[h // 3:, w // 2:] = (240, 220, 40)
    u[..., 2] = np.clip(u[..., 2].astype(int) + np.linspace(0, 15, w).astype(int), 0, 255)
    return u


def jpeg(pixels: np.ndarray, orientation: int | None) -> bytes:
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "JPEG", quality=95, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_a_jpeg_is_decoded_upright_by_its_exif_orientation(tmp_path, orientation):
    u = upright()
    p = tmp_path / f"photo-{orientation}.jpg"
    p.write_bytes(jpeg(STORED[orientation](u), orientation))
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (u.shape[1], u.shape[0])
    err = np.abs(np.asarray(img).astype(int) - u).mean()
    assert err < 6, err  # JPEG's loss only (a wrong turn or mirror is off by ~100)


def test_a_jpeg_without_orientation_is_decoded_as_stored(tmp_path):
    u = upright()
    for name, orientation in (("none", None), ("bad", 0), ("odd", 9)):  # no tag, or one no viewer knows
        (tmp_path / f"{name}.jpg").write_bytes(jpeg(u, orientation))
        assert np.abs(np.asarray(load_image(tmp_path / f"{name}.jpg")).astype(int) - u).mean() < 6


@pytest.fixture(scope="module")
def effnet():
    from anybind.encoders.image import make_image_encoder

    return make_image_encoder("efficientnet-lite0")


def test_a_tagged_photo_gets_the_features_of_its_upright_copy(effnet, tmp_path):
    u = upright(240, 320)
    (tmp_path / "upright.png").write_bytes(_png(u))
    (tmp_path / "tagged.jpg").write_bytes(jpeg(STORED[6](u), 6))
    (tmp_path / "as-stored.png").write_bytes(_png(STORED[6](u)))
    X = effnet.encode([str(tmp_path / f) for f in ("upright.png", "tagged.jpg", "as-stored.png")])
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert X[0] @ X[1] > 0.97 and X[0] @ X[1] > X[0] @ X[2] + 0.05, X @ X.T


def test_the_identity_changes_and_a_space_saved_before_still_loads(effnet, caplog):
    """The identity (the feature cache's key) tells the decoding: features cached before this are not reused;
    a space recorded with the identity from before is still accepted, with one warning naming the encoder."""
    ident = effnet.identity
    assert ident.endswith("|decode=exif-upright")
    before = ident[: -len("|decode=exif-upright")]
    with caplog.at_level(logging.WARNING, logger="anybind.encoders"):
        assert effnet.matches_identity(before) and effnet.matches_identity(before) and effnet.matches_identity(ident)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "EXIF orientation" in said[0] and effnet.spec in said[0] and "\n" not in said[0]
    assert not effnet.matches_identity(before.replace("weights=", "weights=0"))


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, "PNG")
    return buf.getvalue()


def test_a_bridge_space_saved_before_still_loads(caplog):
    """The label bridge's identity holds its base image encoder's inside brackets, so the decoding tag is not at
    its end: a bridge space recorded with the identity from before is still accepted, with one warning."""
    from anybind.encoders.registry import get_encoder

    bridge = get_encoder("image:efficientnet-lite0+bridge")
    ident = bridge.identity
    assert "|decode=exif-upright]" in ident
    before = ident.replace("|decode=exif-upright", "")
    with caplog.at_level(logging.WARNING, logger="anybind.encoders"):
        assert bridge.matches_identity(before) and bridge.matches_identity(before)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "EXIF orientation" in said[0] and bridge.spec in said[0]
    assert not bridge.matches_identity(before.replace("bridge-v1", "bridge-v0"))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_tagged_photo_in_memory_is_keyed_and_encoded_as_its_upright_picture(effnet, tmp_path, orientation):
    """A photo opened with PIL and passed in memory is turned upright by its EXIF tag as the same file passed by path
    is: it gets the path's features, and the cache key of its upright picture (the key of the image
    :func:`load_image` returns), so the upright picture in memory is served from the cache."""
    from anybind.cache import FeatureCache

    u = upright(120, 160)
    p = tmp_path / "tagged.jpg"
    p.write_bytes(jpeg(STORED[orientation](u), orientation))
    tagged, shown = Image.open(p), load_image(p)
    assert effnet.content_key(tagged) == effnet.content_key(shown)
    cache = FeatureCache(tmp_path / "cache")
    X = cache.encode(effnet, [tagged], progress=False)
    np.testing.assert_array_equal(X, effnet.encode([str(p)]))
    np.testing.assert_array_equal(cache.encode(effnet, [shown], progress=False), X)
    assert cache.last_stats.hits == 1 and cache.last_stats.encoded == 0


def test_an_untagged_image_in_memory_keeps_its_key(tmp_path):
    """Features cached for in-memory images before stay valid: an image with no orientation tag (or tag 1) is keyed
    by its pixels as before, and a tagged one by the pixels that are now encoded (its upright picture)."""
    import hashlib

    from anybind.encoders.base import content_key

    u = upright()
    for name, orientation in (("none", None), ("one", 1)):
        (tmp_path / f"{name}.jpg").write_bytes(jpeg(u, orientation))
        img = Image.open(tmp_path / f"{name}.jpg")
        h = hashlib.sha256(f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode())
        h.update(img.tobytes())
        assert content_key(img) == "p:" + h.hexdigest()
    (tmp_path / "six.jpg").write_bytes(jpeg(STORED[6](u), 6))
    tagged = Image.open(tmp_path / "six.jpg")
    turned = Image.fromarray(np.asarray(tagged.transpose(Image.Transpose.ROTATE_270)))  # its pixels, with no tag
    assert content_key(tagged) == content_key(turned) != content_key(Image.fromarray(np.asarray(tagged)))


def test_an_in_memory_image_with_a_damaged_exif_block_is_used_as_stored(caplog):
    """An orientation that cannot be read: the pixels as stored, keyed by them, and a warning line naming the image
    (PIL reads a damaged block once per image: the key's reading warns, the decoding's finds no tag)."""
    from anybind.data.media import as_rgb_image
    from anybind.encoders.base import content_key

    u = upright()
    img = Image.fromarray(u)
    img.info["exif"] = b"garbage"  # what a truncated upload can carry
    with caplog.at_level(logging.WARNING, logger="anybind.data"):
        key = content_key(img)
        np.testing.assert_array_equal(np.asarray(as_rgb_image(img)), u)
    assert key == content_key(Image.fromarray(u))
    said = [r.getMessage() for r in caplog.records]
    assert 1 <= len(said) <= 2 and "\n" not in "".join(said), said
    assert all("EXIF orientation unreadable" in s and "PIL.Image.Image image mode=RGB" in s for s in said), said


def corner_colour(batch):
    """A callable encoder's function: each image's top-left 4x4 mean colour (what a turn moves elsewhere)."""
    return [np.asarray(im.convert("RGB"), np.float32)[:4, :4].mean((0, 1)) / 255 for im in batch]


def test_a_callable_encoder_sees_the_upright_picture_its_cache_key_names(tmp_path):
    """A tagged photo in memory is keyed by its upright picture, so a callable encoder is handed that picture:
    the cache never serves the tagged photo's features for its upright copy (or the other way round)."""
    from anybind.cache import FeatureCache
    from anybind.encoders.registry import get_encoder

    enc = get_encoder("callable:test_image_orientation:corner_colour", cached=False)
    (tmp_path / "six.jpg").write_bytes(jpeg(STORED[6](upright()), 6))
    tagged = Image.open(tmp_path / "six.jpg")
    turned = Image.fromarray(np.asarray(tagged.transpose(Image.Transpose.ROTATE_270)))  # its pixels, with no tag
    assert enc.content_key(tagged) == enc.content_key(turned)
    cache = FeatureCache(tmp_path / "cache")
    X = cache.encode(enc, [tagged], progress=False)
    np.testing.assert_array_equal(X, enc.encode([turned]))
    np.testing.assert_array_equal(cache.encode(enc, [turned], progress=False), enc.encode([turned]))

"""What one raster image may cost (issue 14, item 9): decompression bombs and images over ``max_pixels`` are refused
by a limit in one line naming the file, the limit and how to raise it, and every caller reports them so, never as
corrupt files."""

import json

import pytest
from media_helpers import _write, bounded, png_header, refused_by_every_caller
from PIL import Image

from anybind.data.manifest import load_manifest
from anybind.data.media import LIMITS, MediaLimits, load_image
from anybind.errors import DataError


# ----------------------------------------------------------------------------- item 9: decompression bombs
def test_decompression_bombs_are_a_clear_per_record_error(tmp_path, monkeypatch):
    """PIL's own decompression-bomb refusal is a refusal by a limit (it was "image too large to decode", counted
    as a corrupt file: the audit scored it 1.0 and `audit --fix` dropped it), one line naming the file and both
    limits to raise; every caller that reports a skipped record says so."""
    from anybind.errors import LimitRefused

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    bomb = _write(tmp_path / "bomb.png", png_header(20000, 10000))  # 200 M pixels, PIL's threshold is 179 M
    assert bomb.stat().st_size < 100
    refusal = (r"bomb.png: an image of 200,000,000 pixels; at most 178,956,970 are decoded \(the limit, max_pixels\); "
               r"not decoded: refused before decoding \(to decode it, raise max_pixels and PIL.Image.MAX_IMAGE_PIXELS "
               r"\(PIL refuses images of over twice it\): anybind.data.limits.using_limits\(MediaLimits\(max_pixels="
               r"...\)\), or in the service anybind serve --max-pixels, ServeConfig.max_pixels\)$")
    with bounded(seconds=5, mb=60), pytest.raises(LimitRefused, match=refusal) as e:
        load_image(bomb)
    assert "\n" not in str(e.value)
    # over PIL's limit where a caller's max_pixels is higher still: PIL's is the one named (it binds)
    with pytest.raises(LimitRefused, match=r"bomb.png: an image of 200,000,000 pixels; at most 178,956,970 are"):
        load_image(bomb, limits=MediaLimits(max_pixels=10**9))
    refused_by_every_caller(tmp_path, LIMITS, "bomb.png", "decode refused by a limit for image: ",
                            "PIL.Image.MAX_IMAGE_PIXELS", "an image of 200,000,000 pixels")
    # 100 M pixels: over a caller's limit, refused from the header (PIL only warns)
    with pytest.raises(DataError, match="10000x10000 pixels; at most 40,000,000"):
        big = _write(tmp_path / "big.png", png_header(10000, 10000))
        load_image(big, limits=MediaLimits(max_pixels=40_000_000))
    # in a manifest: that record is bad, the others are kept
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    lines = [{"id": "a", "image": "ok.png", "text": "fine"}, {"id": "b", "image": "bomb.png", "text": "bomb"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    man = load_manifest(tmp_path / "m.jsonl")
    assert [r.id for r in man.records] == ["a"] and len(man.bad) == 1
    assert "refused before decoding" in str(man.bad[0]) and "bomb.png" in str(man.bad[0])


def test_a_raster_over_a_media_limit_is_refused_not_corrupt(tmp_path, monkeypatch):
    """A PNG over max_pixels was "corrupt file for image: big.png: an image of 300x300 pixels; ..." (the audit scored
    it 1.0 and `audit --fix` dropped it) while an SVG over a limit was refused by a limit.  It is a refusal too, one line
    naming the file, the limit and how to raise it, and every caller that reports a skipped record says so."""
    from anybind.errors import LimitRefused

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    Image.new("RGB", (300, 300), (9, 90, 200)).save(tmp_path / "big.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    low = MediaLimits(max_pixels=1000)
    with pytest.raises(LimitRefused, match=r"big.png: an image of 300x300 pixels; at most 1,000 are decoded \(the limit, "
                                           r"max_pixels\); not decoded: refused before decoding \(to decode it, raise "
                                           r"max_pixels: anybind.data.limits.using_limits\(MediaLimits\(max_pixels=...\)\), "
                                           r"or in the service anybind serve --max-pixels, ServeConfig.max_pixels\)$") as e:
        load_image(tmp_path / "big.png", limits=low)
    assert "\n" not in str(e.value) and load_image(tmp_path / "big.png").size == (300, 300)  # fine under the default
    refused_by_every_caller(tmp_path, low, "big.png", "decode refused by a limit for image: ", "max_pixels=",
                            "an image of 300x300")

"""What kind of failure an unusable file is (corrupt, over a limit, past its rendering budget, not read for want of a
renderer) is read from the error's class -- carried with the reason's text where only text travels (a feature cache's
per-item reasons, the audit's image prints, Ray Data rows) -- never from words in the message, which holds the file's
name: a corrupt file named like a refusal was counted as refused (the audit scored it 0.5, `--fix` kept it)."""

import json
import pickle

import numpy as np
import pytest
from media_helpers import _ImageLoader
from PIL import Image

from anybind.audit_leak import NOT_READ_SCORE, unreadable_finding
from anybind.cache import FeatureCache
from anybind.data.limits import MediaLimits, using_limits
from anybind.data.manifest import load_manifest
from anybind.duplicates import image_prints
from anybind.errors import (
    DataError,
    LimitRefused,
    RendererUnavailable,
    RenderRefused,
    RenderTimeout,
    render_refused,
    renderer_unavailable,
    unusable_file,
)

#: words each refusal's message holds, as a file name could hold them
MARKS = ["to render (the time budget", "; not rendered: refused before rendering",
         "; not decoded: refused before decoding", "; not decoded: stopped while decoding",
         "not rendered: the SVG renderer process"]


@pytest.mark.parametrize("mark", MARKS)
def test_a_corrupt_file_named_like_a_refusal_is_counted_corrupt(tmp_path, monkeypatch, mark):
    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    name = f"x{mark}.png"
    (tmp_path / name).write_bytes(b"garbage!" * 40)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    items = [str(tmp_path / "ok.png"), str(tmp_path / name)]
    corrupt = "corrupt file for image: "
    bad: dict[int, str] = {}
    X = FeatureCache(tmp_path / "cache").encode(_ImageLoader(), items, progress=False, bad=bad)
    assert list(bad) == [1] and name in bad[1] and np.isfinite(X[0]).all()
    assert unusable_file("image", bad[1]).startswith(corrupt)
    assert not render_refused(bad[1]) and not renderer_unavailable(bad[1])
    assert unreadable_finding("image", bad[1]).score == 1.0
    prints_bad: dict[int, str] = {}  # the audit's image prints: the same
    image_prints(items, bad=prints_bad)
    assert list(prints_bad) == [1] and unreadable_finding("image", prints_bad[1]).score == 1.0
    e = DataError(f"{tmp_path / name}: corrupt or unsupported image")  # the error itself (the service's 400 or 503)
    assert unusable_file("image", e).startswith(corrupt) and not render_refused(e) and not renderer_unavailable(e)
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "image": name, "text": "a"}) + "\n")
    man = load_manifest(tmp_path / "m.jsonl")  # the manifest check and its count by reason
    assert man.bad[0].reason.startswith(corrupt) and "by reason: corrupt file for image x1" in man.report()


def test_a_refusal_keeps_its_kind_as_text_and_across_processes(tmp_path):
    """The reason's text is the message; its kind survives pickling (Ray) and a round trip through the kind's name
    (a Ray Data column of text); plain text tells nothing and counts as corrupt."""
    from anybind.errors import Reason

    cases = [(RenderTimeout("a.svg: SVG took more than 1 s to render"), "render timed out for image: ", NOT_READ_SCORE),
             (RenderRefused("a.svg: too costly"), "render refused by a limit for image: ", NOT_READ_SCORE),
             (LimitRefused("a.png: too big"), "decode refused by a limit for image: ", NOT_READ_SCORE),
             (RendererUnavailable("a.svg: no process"), "SVG renderer unavailable for image: ", NOT_READ_SCORE),
             (DataError("a.png: corrupt or unsupported image"), "corrupt file for image: ", 1.0)]
    for e, prefix, score in cases:
        for why in (e, Reason.of(e), pickle.loads(pickle.dumps(Reason.of(e))), Reason(str(e), Reason.of(e).kind)):
            assert why == str(e) or why is e
            assert unusable_file("image", why) == prefix + str(e) and unreadable_finding("image", why).score == score
    assert unusable_file("image", "a.png: x; not decoded: refused before decoding").startswith("corrupt file")
    with using_limits(MediaLimits(max_pixels=10)):  # a real refusal through the cache
        Image.new("RGB", (8, 8)).save(tmp_path / "big.png")
        bad: dict[int, str] = {}
        FeatureCache(tmp_path / "c").encode(_ImageLoader(), [str(tmp_path / "big.png")], progress=False, bad=bad)
    assert isinstance(bad[0], Reason) and bad[0].error is LimitRefused and render_refused(bad[0])

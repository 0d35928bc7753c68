"""Feature cache: encode once, resume after a kill, invalidate on identity change."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder


def test_second_encode_encodes_nothing_and_returns_same_vectors(tmp_path):
    enc = get_encoder("callable:helper_encoders:hashed_text")
    cache = FeatureCache(tmp_path, chunk_size=5)
    items = [f"item {i}" for i in range(23)] + ["item 3"]  # a duplicate is encoded once
    X1 = cache.encode(enc, items, progress=False)
    assert cache.last_stats.encoded == 23 and cache.last_stats.hits == 0
    assert np.array_equal(X1[3], X1[-1])
    # a fresh cache object (a new process) sees everything on disk
    cache2 = FeatureCache(tmp_path)
    X2 = cache2.encode(enc, items, progress=False)
    assert cache2.last_stats.encoded == 0 and cache2.last_stats.hits == 23
    assert np.array_equal(X1, X2)
    assert np.allclose(X1, enc.encode(items))  # the cache returns what the encoder returns


def test_new_items_only_are_encoded(tmp_path):
    enc = get_encoder("callable:helper_encoders:hashed_text")
    cache = FeatureCache(tmp_path)
    cache.encode(enc, ["a", "b"], progress=False)
    cache.encode(enc, ["a", "b", "c"], progress=False)
    assert cache.last_stats.encoded == 1


def test_identity_change_invalidates(tmp_path):
    enc = get_encoder("callable:helper_encoders:hashed_text", cached=False)
    cache = FeatureCache(tmp_path)
    cache.encode(enc, ["a", "b"], progress=False)
    enc._identity += "|prep=changed"
    cache.encode(enc, ["a", "b"], progress=False)
    assert cache.last_stats.encoded == 2
    assert len(list(tmp_path.iterdir())) == 2  # two identities, two folders


def test_file_items_are_keyed_by_content_not_path(tmp_path):
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    c.write_bytes(b"other")
    enc = get_encoder("callable:helper_encoders:file_size")
    cache = FeatureCache(tmp_path / "cache")
    cache.encode(enc, [str(a), str(b), str(c)], progress=False)
    assert cache.last_stats.encoded == 2
    c.write_bytes(b"changed!")  # edited file -> re-encoded
    cache.encode(enc, [str(a), str(c)], progress=False)
    assert cache.last_stats.encoded == 1


SCRIPT = """
import sys
from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder
enc = get_encoder("callable:helper_encoders:slow_text")
cache = FeatureCache(sys.argv[1], chunk_size=8)
cache.encode(enc, [f"t{i}" for i in range(40)], progress=False)
print("encoded", cache.last_stats.encoded, "hits", cache.last_stats.hits, flush=True)
"""


def test_killed_encode_resumes_without_redoing_finished_items(tmp_path):
    cache_dir = tmp_path / "cache"
    log = tmp_path / "calls.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "ANYBIND_TEST_CALL_LOG": str(log), "ANYBIND_TEST_SLEEP": "0.15"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(cache_dir)], env=env, stdout=subprocess.PIPE, text=True)
    # wait until at least two shards (16 items) are committed, then kill -9 mid-chunk
    deadline = time.time() + 60
    while time.time() < deadline:
        shards = list(cache_dir.glob("*/shards/*.safetensors"))
        if len(shards) >= 2:
            break
        assert proc.poll() is None, "the encoding process died on its own"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(cache_dir.glob("*/shards/*.safetensors"))
    assert len(shards) >= 2, "the first chunks must be on disk before the kill"
    done_before = 8 * len(shards)
    assert done_before < 40, "the kill came too late to test resumption"
    env.pop("ANYBIND_TEST_CALL_LOG")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cache_dir)], env={**env, "ANYBIND_TEST_SLEEP": "0"},
                         capture_output=True, text=True, check=True).stdout
    encoded = int(out.split()[1])
    hits = int(out.split()[3])
    assert hits == done_before and encoded == 40 - done_before


def test_encoder_returning_wrong_shape_is_a_clear_error(tmp_path):
    from anybind.encoders.base import Encoder
    from anybind.errors import EncoderError

    class Bad(Encoder):
        spec, modality, dim, input_kind = "bad:x", "text", 4, "text"
        identity = "bad"

        def encode_loaded(self, batch):
            return np.zeros((len(batch), 3))

    with pytest.raises(EncoderError, match=r"returned shape \(2, 3\), expected \(2, 4\)"):
        FeatureCache(tmp_path).encode(Bad(), ["a", "b"], progress=False)


def test_check_output_is_the_encoders_public_output_check():
    """``Encoder.check_output``: what every encode path checks a forward pass with, public for callers of
    ``encode_loaded`` (the encode-overhead bench times bare forward passes through it)."""
    from anybind.errors import EncoderError

    enc = get_encoder("callable:helper_encoders:hashed_text")
    out = enc.check_output(enc.encode_loaded(["a", "b"]).astype(np.float64), 2)
    assert out.dtype == np.float32 and np.array_equal(out, enc.encode(["a", "b"]))
    bad = np.ones((2, enc.dim))
    bad[1, 3] = np.nan
    for arr, n, msg in ((np.ones((2, enc.dim + 1)), 2, rf"returned shape \(2, {enc.dim + 1}\), expected \(2, {enc.dim}\)"),
                        (np.ones((3, enc.dim)), 2, r"returned shape \(3, "), (np.ones(enc.dim), 1, r"returned shape"),
                        (bad, 2, r"returned non-finite values$")):
        with pytest.raises(EncoderError, match=r"^encoder 'callable:helper_encoders:hashed_text' " + msg):
            enc.check_output(arr, n)


def test_vectors_are_every_cached_vector_of_an_identity_as_lookups_serve_them(tmp_path):
    """``FeatureCache.vectors(identity)``: every cached key's vector (the first shard holding a key serves it, as
    ``cached`` does); a fresh cache object reads them from disk; another identity's stay apart."""
    enc = get_encoder("callable:helper_encoders:hashed_text")
    cache = FeatureCache(tmp_path, chunk_size=3)
    items = [f"item {i}" for i in range(8)]
    X = cache.encode(enc, items, progress=False)
    keys = [enc.content_key(x) for x in items]
    FeatureCache(tmp_path).write_shard(enc.identity, keys[:2] + ["s:other"], np.full((3, enc.dim), 7, np.float32))
    got = FeatureCache(tmp_path).vectors(enc.identity)
    assert set(got) == set(keys) | {"s:other"}
    assert all(np.array_equal(got[k], x) for k, x in zip(keys, X))  # the first shards serve the first two keys
    assert np.array_equal(got["s:other"], np.full(enc.dim, 7, np.float32))
    assert FeatureCache(tmp_path).vectors("no such identity") == {}


def test_in_memory_arrays_are_keyed_by_their_bytes_not_their_repr(tmp_path):
    """numpy's repr elides the middle of a large array: two arrays differing there once shared one vector."""
    enc = get_encoder("callable:helper_encoders:array_stats")
    a = np.zeros(5000, np.float32)
    b = a.copy()
    b[2500] = 7.0
    assert str(a) == str(b)  # what the old key hashed
    cache = FeatureCache(tmp_path)
    X = cache.encode(enc, [a, b], progress=False)
    assert cache.last_stats.encoded == 2
    assert not np.allclose(X[0], X[1])
    assert np.allclose(X, enc.encode([a, b]))
    # same values, another dtype or shape: another item
    keys = {enc.content_key(x) for x in (a, a.astype(np.float64), a.reshape(50, 100), b)}
    assert len(keys) == 4
    # an equal copy (a new object) is a hit
    cache.encode(enc, [a.copy(), b.copy()], progress=False)
    assert cache.last_stats.hits == 2 and cache.last_stats.encoded == 0


def test_pil_images_hit_the_cache_by_content(tmp_path):
    """A PIL image's repr holds its memory address: it never hit and added a shard every time."""
    from PIL import Image

    enc = get_encoder("callable:helper_encoders:array_stats")
    cache = FeatureCache(tmp_path)
    img = Image.new("RGB", (16, 16), (10, 20, 30))
    cache.encode(enc, [img], progress=False)
    shards = sorted((tmp_path).rglob("*.safetensors"))
    for _ in range(3):
        cache.encode(enc, [img.copy()], progress=False)
        assert cache.last_stats.hits == 1 and cache.last_stats.encoded == 0
    assert sorted(tmp_path.rglob("*.safetensors")) == shards
    other = img.copy()
    other.putpixel((8, 8), (10, 20, 31))
    assert enc.content_key(other) != enc.content_key(img)
    assert enc.content_key(img.convert("L")) != enc.content_key(img)


def test_items_that_cannot_be_keyed_by_content_are_refused(tmp_path):
    from anybind.errors import DataError

    enc = get_encoder("callable:helper_encoders:array_stats")
    with pytest.raises(DataError, match="by its content"):
        enc.content_key(object())
    with pytest.raises(DataError, match="object array"):
        enc.content_key(np.array([object(), object()]))


@given(
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=300),
    st.integers(min_value=0, max_value=299),
    st.floats(allow_nan=False, width=32),
)
@settings(max_examples=60, deadline=None)
def test_array_keys_differ_whenever_bytes_differ(values, pos, new):
    enc = get_encoder("callable:helper_encoders:array_stats")
    a = np.asarray(values, np.float32)
    b = a.copy()
    b[pos % len(b)] = new
    same = a.tobytes() == b.tobytes()
    assert (enc.content_key(a) == enc.content_key(b)) == same
    assert enc.content_key(list(map(float, a))) == enc.content_key(a.astype(np.float64))


def test_an_svg_files_key_names_its_rendering_version(tmp_path, monkeypatch):
    """Features cached from an older SVG rendering of the same bytes must not be read back: an SVG file's key holds
    the renderer's version (6b25dde changed 34 of Tux Paint's 164 renders; the old keys would have served them)."""
    import gzip

    import anybind.encoders.keys as base
    from anybind.encoders.base import content_key, file_digest, sha256_file

    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'
    (tmp_path / "a.svg").write_bytes(svg)
    (tmp_path / "a.svgz").write_bytes(gzip.compress(svg))
    (tmp_path / "named.png").write_bytes(svg)  # sniffed from the content, not the name
    (tmp_path / "text.svg").write_bytes(b"not a picture")
    png = tmp_path / "b.png"
    from PIL import Image

    Image.new("RGB", (4, 4), (200, 10, 10)).save(png)
    for name in ("a.svg", "a.svgz", "named.png"):
        key = content_key(tmp_path / name)
        assert key == f"f:{sha256_file(tmp_path / name)};svg-render={base.RENDER_VERSION}"
        assert file_digest(key) == sha256_file(tmp_path / name)
    for p in (png, tmp_path / "text.svg"):
        assert content_key(p) == "f:" + sha256_file(p) and file_digest(content_key(p)) == sha256_file(p)
    before = content_key(tmp_path / "a.svg")
    monkeypatch.setattr(base, "RENDER_VERSION", base.RENDER_VERSION + 1)
    assert content_key(tmp_path / "a.svg") != before  # a new rendering is a new key
    assert content_key(png) == "f:" + sha256_file(png)  # rasters are not re-encoded
    assert file_digest("s:" + "0" * 64) is None and file_digest(None) is None and file_digest("f:abc") is None


def test_a_fresh_encode_serves_what_a_later_run_reads_when_another_process_wrote_the_same_items(tmp_path):
    """Two processes encoding the same items into one cache (two bench runs side by side, each with the index it
    loaded before the other wrote) both write them; encoders are not bit-reproducible across processes (thread
    counts, batch composition: 1,132 lite0 rows of a shared cache differed by up to 7e-6).  The run that encoded
    must then serve the values every later run reads, or its numbers differ from the cached reruns'."""
    from media_helpers import STAMPS

    paths = sorted(STAMPS.glob("animals/*/*.png"))[:6]
    if len(paths) < 6:
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    enc = get_encoder("image:efficientnet-lite0")
    mine = FeatureCache(tmp_path)
    assert mine.count(enc.identity) == 0  # this process's index is loaded now, before the other one writes
    other = enc.encode([str(p) for p in paths[:4]])
    other = other + np.float32(1e-6) * np.sign(other)  # the other process's kernels round a little differently
    FeatureCache(tmp_path).write_shard(enc.identity, [enc.content_key(str(p)) for p in paths[:4]], other)
    fresh = mine.encode(enc, [str(p) for p in paths], progress=False)
    assert mine.last_stats.encoded == 6  # its index did not see the other shard: it encoded everything
    later = FeatureCache(tmp_path).encode(enc, [str(p) for p in paths], progress=False)
    assert np.array_equal(fresh, later)
    assert np.array_equal(fresh[:4], other)  # the shard written first is what every run serves

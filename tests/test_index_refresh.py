"""Stale indexes (issue 19): an index built with a space that was since updated says so on open, and
`anybind index --refresh` re-embeds it from cached features (no encoder call), keeping ids and labels,
the old version readable until the new one commits."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cache import FeatureCache
from anybind.cli import app
from anybind.errors import SpaceError
from anybind.index import Index, IndexError_, refresh_index
from anybind.index import refresh as refresh_mod
from anybind.space import Space
from index_helpers import make_space, write_corpus


@pytest.fixture
def stale(tmp_path):
    """An index built with a space, and an update of that space (trained on the same records)."""
    space = make_space()
    m = write_corpus(tmp_path, n=30)
    Index.build(space, m, tmp_path / "ix", cache=tmp_path / "cache")
    space2 = space.update(m, cache=tmp_path / "cache", method="naive", epochs=3, lr=1e-2)
    assert space2.identity() != space.identity()
    return space, space2, m, tmp_path


def rows(index: Index) -> dict:
    t = index.table.search().limit(None).to_arrow()
    cols = {c: t.column(c).to_pylist() for c in ("id", "modality", "source", "labels", "key")}
    vecs = np.asarray(t.column("vector").to_pylist(), np.float32)
    return {(i, m): (s, lb, k, v) for i, m, s, lb, k, v in zip(cols["id"], cols["modality"], cols["source"],
                                                               cols["labels"], cols["key"], vecs)}


def no_encoding(monkeypatch, space):
    """Any encoder call (or any cache miss being encoded) fails the test."""
    def boom(*a, **k):
        raise AssertionError("an encoder was called")

    monkeypatch.setattr(FeatureCache, "_encode_missing", boom)
    for m in space.modalities:
        monkeypatch.setattr(type(space.encoder(m)), "encode_loaded", boom)


def test_open_with_the_updated_space_says_the_index_is_stale_and_how_to_refresh(stale):
    space, space2, m, tmp = stale
    with pytest.raises(SpaceError) as ei:
        Index.open(tmp / "ix", space2)
    msg = str(ei.value)
    assert "\n" not in msg and "is stale" in msg and "(update)" in msg
    assert space.identity() in msg and space2.identity() in msg
    assert f"anybind index --refresh {tmp / 'ix'} --space" in msg


def test_refresh_reembeds_from_cached_features_only_keeping_ids_and_labels(stale, monkeypatch):
    space, space2, m, tmp = stale
    before = rows(Index.open(tmp / "ix", space))
    no_encoding(monkeypatch, space2)
    stats = refresh_index(tmp / "ix", space2, cache=tmp / "cache", cached_only=True)
    assert (stats.rows, stats.from_cache, stats.encoded) == (60, 60, {})
    assert (stats.old_identity, stats.new_identity) == (space.identity(), space2.identity())
    index = Index.open(tmp / "ix", space2)  # the refreshed index belongs to the new space
    after = rows(index)
    assert set(after) == set(before)
    fc = FeatureCache(tmp / "cache")
    for (rid, mod), (src, labels, key, vec) in after.items():
        assert (src, labels, key) == before[(rid, mod)][:3]
        X, missing = fc.cached(space2.encoder(mod), [key])
        assert not missing and np.allclose(vec, space2.project(mod, X)[0], atol=1e-6)
        assert not np.allclose(vec, before[(rid, mod)][3], atol=1e-3)  # re-embedded, not copied
    assert index.meta["refreshed"]["from"] == space.identity()
    monkeypatch.undo()  # a query is encoded, of course
    hits = index.search(text="stamp number 3", modality="text", k=1, cache=tmp / "cache")
    assert hits[0].id == "r3"
    with pytest.raises(SpaceError, match="identity"):
        Index.open(tmp / "ix", space)  # and the old space no longer matches it


def test_the_old_version_stays_readable_until_the_refresh_commits(stale, monkeypatch):
    space, space2, m, tmp = stale
    before = rows(Index.open(tmp / "ix", space))
    seen = []
    real = refresh_mod.write_json_atomic

    def check_then_write(path, obj):  # the new index.json is the last thing written before the swap
        old = Index.open(tmp / "ix", space)
        seen.append(len(old))
        assert rows(old).keys() == before.keys()
        real(path, obj)

    monkeypatch.setattr(refresh_mod, "write_json_atomic", check_then_write)
    refresh_index(tmp / "ix", space2, cache=tmp / "cache")
    assert seen == [60]
    # a refresh that fails half-way leaves the old version as it was
    space3 = space2.update(m, cache=tmp / "cache", method="naive", epochs=2, lr=1e-2, seed=5)
    calls = []

    def fail_second(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("killed")
        return real_rows(*a, **k)

    real_rows = refresh_mod.rows_table
    monkeypatch.setattr(refresh_mod, "rows_table", fail_second)
    with pytest.raises(RuntimeError, match="killed"):
        refresh_index(tmp / "ix", space3, cache=tmp / "cache", chunk_size=16)
    index = Index.open(tmp / "ix", space2)
    assert len(index) == 60 and index.identity == space2.identity()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".ix.")]  # no leftovers of the failed write


def test_rows_without_cached_features_are_encoded_or_refused(stale):
    space, space2, m, tmp = stale
    with pytest.raises(IndexError_, match=r"have no cached features .* --cached-only"):
        refresh_index(tmp / "ix", space2, cache=tmp / "empty-cache", cached_only=True)
    assert Index.open(tmp / "ix", space).identity == space.identity()  # nothing was replaced
    stats = refresh_index(tmp / "ix", space2, cache=tmp / "empty-cache")
    assert stats.from_cache == 0 and stats.encoded == {"image": 30, "text": 30}


def test_cli_refresh(stale):
    space, space2, m, tmp = stale
    space2.save(tmp / "s2")
    r = CliRunner().invoke(app, ["index", "--refresh", str(tmp / "ix"), "--space", str(tmp / "s2"),
                                 "--cache", str(tmp / "cache")])
    assert r.exit_code == 0, r.output
    assert r.output.count("refreshed 60 rows (60 from cached features, 0 encoded)") == 1, r.output  # said once
    assert json.loads((tmp / "ix" / "index.json").read_text())["identity"] == space2.identity()
    r = CliRunner().invoke(app, ["index", "--refresh", str(tmp / "ix")])
    assert r.exit_code == 2 and "--space" in r.output
    # options of a build are refused, not dropped without a word, and nothing is refreshed
    before = (tmp / "ix" / "index.json").read_bytes()
    r = CliRunner().invoke(app, ["index", "--refresh", str(tmp / "ix"), "--space", str(tmp / "s2"),
                                 "--memory-ann-recall", "0.9", "--quantize", "int8"])
    said = " ".join(r.output.split())
    assert r.exit_code == 2 and "--memory-ann-recall, --quantize apply to `anybind index SPACE MANIFEST" in said, said
    assert (tmp / "ix" / "index.json").read_bytes() == before
    s3 = Space(space.encoders, {m: p for m, p in make_space(seed=4).projectors.items()})
    s3.projectors.pop("image")
    s3.encoders.pop("image")
    s3.save(tmp / "s3")
    r = CliRunner().invoke(app, ["index", "--refresh", str(tmp / "ix"), "--space", str(tmp / "s3")])
    assert r.exit_code == 2 and "error:" in r.output and "does not bind" in r.output


def test_an_svg_rows_features_from_an_older_rendering_are_not_reused(tmp_path, monkeypatch):
    """A refresh reads each row's features by the key stored at build time; an SVG's key names the renderer's
    version, and a row keyed by an older renderer (or before keys named it) is encoded again, not read back."""
    import anybind.encoders.keys as base

    space = make_space()
    m = write_corpus(tmp_path, n=30)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="12" height="9"><rect width="6" height="9" fill="red"/></svg>'
    (tmp_path / "img" / "3.png").write_bytes(svg)  # sniffed from the content, as the loader does
    Index.build(space, m, tmp_path / "ix", cache=tmp_path / "cache")
    space2 = space.update(m, cache=tmp_path / "cache", method="naive", epochs=3, lr=1e-2)
    stats = refresh_index(tmp_path / "ix", space2, cache=tmp_path / "cache", cached_only=True)
    assert stats.from_cache == 60 and not stats.encoded  # same renderer: every row from the cache
    space3 = space2.update(m, cache=tmp_path / "cache", method="naive", epochs=1, lr=1e-2)
    monkeypatch.setattr(base, "RENDER_VERSION", base.RENDER_VERSION + 1)  # the renderer changed since
    with pytest.raises(IndexError_, match=r"1 image row\(s\) \(first: source .*3\.png'\) have no cached features"):
        refresh_index(tmp_path / "ix", space3, cache=tmp_path / "cache", cached_only=True)
    stats = refresh_index(tmp_path / "ix", space3, cache=tmp_path / "cache")
    assert stats.encoded == {"image": 1} and stats.from_cache == 59
    keys = {k for (_, mod), (_, _, k, _) in rows(Index.open(tmp_path / "ix", space3)).items() if mod == "image"}
    assert sum(k.endswith(f";svg-render={base.RENDER_VERSION}") for k in keys) == 1  # the new key is stored


def test_current_key_upgrades_only_svg_file_keys(tmp_path):
    from anybind.encoders.base import content_key, current_key, sha256_file

    svg, png = tmp_path / "a.svg", tmp_path / "b.png"
    svg.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    old = "f:" + sha256_file(svg)  # keyed before SVG keys named their renderer
    assert current_key(old, svg) == content_key(svg) != old
    assert current_key(content_key(svg), svg) == content_key(svg)
    assert current_key("f:" + sha256_file(png), png) == "f:" + sha256_file(png)
    assert current_key("s:abc", svg) == "s:abc"
    assert current_key(old, svg, sniff=False) == old  # an index whose SVG keys name their renderer: not read
    assert current_key(old, tmp_path / "gone.svg") is None  # unreadable: the caller keeps the stored key, says so
    svg.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="5" height="4"/>')
    assert current_key(old, svg) == old  # other bytes now: not this row's content


def test_a_refresh_reads_no_source_unless_the_index_predates_svg_keys(stale, caplog):
    """An index built since SVG keys name their renderer needs no source read to refresh from cached features; an
    older one has each untagged file row sniffed, and a row whose source is gone is said, not silently kept."""
    space, space2, m, tmp = stale
    (tmp / "img" / "0.png").unlink()
    stats = refresh_index(tmp / "ix", space2, cache=tmp / "cache", cached_only=True)
    assert stats.from_cache == 60 and "could not be read" not in caplog.text
    meta = json.loads((tmp / "ix" / "index.json").read_text())
    assert meta["svg_keys_named"] is True
    del meta["svg_keys_named"]  # as an index built before this version wrote it
    (tmp / "ix" / "index.json").write_text(json.dumps(meta))
    stats = refresh_index(tmp / "ix", space, cache=tmp / "cache", cached_only=True, chunk_size=7)
    assert stats.from_cache == 60 and len(stats.unread) == 1 and stats.unread[0].endswith("0.png")
    assert caplog.text.count("could not be read") == 1  # one line for the refresh, not one per batch
    assert "1 row(s) (first: source" in caplog.text and "0.png" in caplog.text
    # a row it could not read may be an SVG keyed by an older renderer: the next refresh reads the sources again
    assert json.loads((tmp / "ix" / "index.json").read_text())["svg_keys_named"] is False
    (tmp / "img" / "0.png").write_bytes(b"\x89PNG back")  # readable again (not an SVG)
    stats = refresh_index(tmp / "ix", space2, cache=tmp / "cache", cached_only=True)
    assert not stats.unread and json.loads((tmp / "ix" / "index.json").read_text())["svg_keys_named"] is True

"""The search index: build, incremental add, delete, identity, label and modality filters, fused and Query-object
searches, bad queries, rerank inside search, and batched, cached zero-shot classification over thousands of classes."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import rerank as rr
from anybind.errors import OutputError, SpaceError
from anybind.index import Index, IndexError_, Query, QueryError

from index_helpers import make_space, write_corpus


@pytest.fixture
def built(tmp_path):
    space = make_space()
    m = write_corpus(tmp_path)
    index = Index.build(space, m, tmp_path / "ix", cache=tmp_path / "cache")
    return space, index, tmp_path


# ----------------------------------------------------------------------------- build and search
def test_build_then_search_any_to_any(built):
    space, index, root = built
    assert len(index) == 48 and index.counts() == {"image": 24, "text": 24}
    assert index.identity == space.identity() and index.modalities == ["image", "text"]
    hits = index.search(text="stamp number 5", k=3)
    assert hits[0].id == "r5" and hits[0].modality == "text" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3] and hits[0].score >= hits[1].score >= hits[2].score
    assert hits[0].labels == {"group": "odd", "tens": "0"} and hits[0].source == "stamp number 5"
    img = index.search(image=root / "img" / "7.png", modality="image", k=2)
    assert img[0].id == "r7" and all(h.modality == "image" for h in img)
    assert Path(img[0].source).is_absolute() and Path(img[0].source).is_file()
    # text -> image: hits are images only; a path string as `query` is recognised as an image
    assert {h.modality for h in index.search("stamp number 1", modality="image", k=5)} == {"image"}
    assert index.search(str(root / "img" / "3.png"), modality="image", k=1)[0].id == "r3"
    # reopened from disk, with the space copy stored inside the index: same answers
    again = Index.open(root / "ix")
    assert again.search(text="stamp number 5", k=3) == hits
    assert Index.open(root / "ix", space).search(text="stamp number 5", k=3) == hits
    assert hits[0].to_dict()["id"] == "r5"


def test_incremental_add_embeds_only_new_or_changed_content(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    space = make_space()
    Index.build(space, write_corpus(tmp_path, n=20), tmp_path / "ix", cache=tmp_path / "c1")
    assert sum(int(x) for x in log.read_text().split()) == 20
    log.write_text("")
    # 5 new records, one caption edited (r3), one record relabelled (r4): a *fresh* feature cache,
    # so anything re-embedded would show up in the encoder's call log
    m = write_corpus(
        tmp_path, n=25, name="m2.jsonl", text=lambda i: "an edited caption" if i == 3 else f"stamp number {i}"
    )
    lines = [json.loads(x) for x in m.read_text().splitlines()]
    lines[4]["labels"]["group"] = "special"
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    index = Index.open(tmp_path / "ix", space)
    stats = index.add(m, cache=tmp_path / "c2")
    assert sum(int(x) for x in log.read_text().split()) == 6  # 5 new captions + the edited one
    assert stats.embedded == {"image": 5, "text": 6}
    assert (stats.added, stats.updated, stats.relabelled) == (10, 1, 2)
    assert stats.unchanged == 40 - 1 - 2  # 20 records x 2 rows, minus r3's caption, minus r4's 2 rows
    assert len(index) == 50
    assert index.search(text="an edited caption", k=1)[0].id == "r3"
    assert index.search(text="stamp number 4", k=1, labels={"group": "special"})[0].id == "r4"
    # nothing left to do: a rerun embeds nothing at all
    log.write_text("")
    stats = index.add(m, cache=tmp_path / "c3")
    assert stats.total_embedded == 0 and stats.unchanged == 50 and stats.commits == 0
    assert log.read_text() == ""


def test_delete_by_id_and_by_modality(built):
    _, index, _ = built
    assert index.delete(["r5", "r6", "missing"]) == 4
    assert len(index) == 44
    assert all(h.id not in ("r5", "r6") for h in index.search(text="stamp number 5", k=44))
    assert index.delete(["r7"], modality="image") == 1
    assert [h.modality for h in index.search(text="stamp number 7", k=44) if h.id == "r7"] == ["text"]
    assert index.delete(["it's"]) == 0  # quotes are escaped, not SQL


def test_index_is_tied_to_its_space(built):
    space, index, root = built
    other = make_space(seed=1)
    assert other.identity() != space.identity()
    with pytest.raises(
        SpaceError, match=f"built with space identity {space.identity()}.*has identity {other.identity()}"
    ):
        Index.open(root / "ix", other)
    with pytest.raises(SpaceError, match="identity"):
        Index.build(other, root / "m.jsonl", root / "ix")
    with pytest.raises(IndexError_, match="not an anybind index"):
        Index.open(root / "img")
    with pytest.raises(OutputError, match="already holds an index; pass --overwrite"):
        Index.create(root / "ix", space=space)
    fresh = Index.build(other, root / "m.jsonl", root / "ix", overwrite=True, cache=root / "cache")
    assert fresh.identity == other.identity() and len(fresh) == 48


def test_label_and_modality_filters(built):
    _, index, _ = built
    odd = index.search(text="stamp number 4", k=50, labels={"group": "odd"})
    assert len(odd) == 24 and all(h.labels["group"] == "odd" for h in odd)
    both = index.search(text="stamp number 4", k=50, labels=["group=odd", "tens=1"], modality="image")
    assert sorted(h.id for h in both) == [f"r{i}" for i in (11, 13, 15, 17, 19)]
    anyof = index.search(text="x", k=50, labels={"tens": ["0", "2"]}, modality="text")
    assert sorted(int(h.id[1:]) for h in anyof) == list(range(10)) + list(range(20, 24))
    assert index.search(text="x", k=5, labels={"group": "none"}) == []


def test_fused_query_is_the_normalised_weighted_mean(built):
    space, index, root = built
    t = space.embed("text", ["stamp number 2"], cache=root / "cache")[0]
    i = space.embed("image", [str(root / "img" / "9.png")], cache=root / "cache")[0]
    q, mods = index.embed_query(text="stamp number 2", image=root / "img" / "9.png", weights=[1.0, 3.0])
    want = (t + 3 * i) / np.linalg.norm(t + 3 * i)
    assert mods == ["image", "text"] and np.allclose(q, want, atol=1e-6)
    fused = index.search(text="stamp number 2", image=root / "img" / "9.png", weights=[1.0, 3.0], k=5)
    assert [h.id for h in fused] == [h.id for h in index.search_vectors(want[None], k=5)[0]]
    tup = index.embed_query([("text", "stamp number 2", 1.0), ("image", str(root / "img" / "9.png"), 3.0)])[0]
    assert np.allclose(tup, want, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text("abc ", min_size=1, max_size=6), min_size=1, max_size=3),
    images=st.lists(st.sampled_from(["a.png", "b.jpg"]), max_size=2),
    weights=st.one_of(st.none(), st.just("ones")),
)
def test_every_query_form_parses_to_one_query(texts, images, weights):
    w = [1.0] * (len(texts) + len(images)) if weights == "ones" else None
    items = tuple([("text", t) for t in texts] + [("image", p) for p in images])
    by_keywords = Query.of(dim=16, text=texts, image=images or None, weights=w)
    by_inputs = Query.of(dim=16, inputs={"text": texts, **({"image": images} if images else {})}, weights=w)
    by_tuples = Query.of([(m, x, 1.0) if w else (m, x) for m, x in items], dim=16)
    for q in (by_keywords, by_inputs, by_tuples):
        assert q.items == items and q.weights == (tuple(w) if w else None) and not q.has_vector
        assert q.modalities == sorted({m for m, _ in items}) and len(q) == len(items)
    assert Query.of(by_keywords, dim=16) is by_keywords


def test_a_query_object_searches_as_its_keywords_do(built):
    _, index, root = built
    q = Query.of(dim=index.dim, text="stamp number 2", image=root / "img" / "9.png", weights=[1.0, 3.0])
    by_kw = index.search(text="stamp number 2", image=root / "img" / "9.png", weights=[1.0, 3.0], k=5)
    assert [(h.id, h.modality, h.score) for h in index.search(q, k=5)] == [(h.id, h.modality, h.score) for h in by_kw]
    assert np.allclose(index.embed_query(q)[0], index.embed_query(text="stamp number 2", image=root / "img" / "9.png",
                                                                   weights=[1.0, 3.0])[0])
    with pytest.raises(QueryError, match="give a Query, or its inputs as keywords, not both"):
        index.search(q, text="more")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text="   "), "empty text query"),
        (dict(text=""), "empty text query"),
        (dict(image="nowhere.png"), "cannot read image query nowhere.png: file does not exist"),
        (dict(image="CORRUPT"), "cannot use image query: .*corrupt or unsupported image"),
        (dict(image="DIR"), "not a regular file"),
        (dict(text="a dog", modality="video"), "unknown modality 'video'"),
        (dict(inputs={"smell": "x"}), "unknown query modality 'smell'"),
        (dict(text="a dog", k=0), "k must be a positive integer, got 0"),
        (dict(text="a dog", k=-3), "k must be a positive integer"),
        (dict(text="a dog", k=2.5), "k must be a positive integer"),
        (dict(), "empty query"),
        (dict(text=["a", "b"], weights=[1.0]), "1 weights for 2 query inputs"),
        (dict(text=["a", "a"], weights=[1.0, -1.0]), "the fused query vector is zero"),
        (dict(text="a dog", labels=["group"]), "expected KEY=VALUE"),
        (dict(text="a dog", rerank="magic"), "unknown rerank method 'magic'"),
        (dict(query=np.ones(3)), "this index holds 16-d vectors"),
        (
            dict(query="song.wav"),
            "unknown query modality 'audio'",
        ),  # a sound file, but no audio in this space
    ],
)
def test_bad_queries_get_clear_errors(built, kwargs, message):
    _, index, root = built
    for key in ("image",):
        if kwargs.get(key) == "CORRUPT":
            (root / "corrupt.png").write_bytes(b"not a png at all")
            kwargs = {**kwargs, key: root / "corrupt.png"}
        elif kwargs.get(key) == "DIR":
            kwargs = {**kwargs, key: root / "img"}
    with pytest.raises(QueryError, match=message):
        index.search(**kwargs)


def test_rerank_in_search_matches_the_direct_computation(built):
    space, index, root = built
    snap = index.snapshot()
    V = snap.vectors
    text_rows = np.nonzero(snap.modality == "text")[0]
    img_rows = np.nonzero(snap.modality == "image")[0]
    ids = snap.meta.column("id").to_pylist()
    ids_arr = np.array(ids, dtype=object)
    q = index.embed_query(text="stamp number 11")[0]
    for method in rr.RERANKERS:
        hits = index.search(text="stamp number 11", modality="image", k=5, rerank=method)
        # the index leaves each item's own record out of its bank statistics: so does the reference
        S = rr.apply_rerank(
            method,
            q[None],
            V[img_rows],
            query_bank=V[text_rows],
            gallery_bank=V[img_rows],
            gallery_ids=ids_arr[img_rows],
            query_bank_ids=ids_arr[text_rows],
            gallery_bank_ids=ids_arr[img_rows],
        )[0]
        want = [ids[img_rows[j]] for j in np.argsort(-S, kind="stable")[:5]]
        assert [h.id for h in hits] == want, method
        assert np.allclose([h.score for h in hits], np.sort(S)[::-1][:5], atol=1e-5)
    with pytest.raises(QueryError, match="needs a query bank"):
        index.search_vectors(q[None], modality="image", rerank="csls")  # a bare vector has no modality


def test_zero_shot_over_thousands_of_classes_is_batched_and_cached(tmp_path, monkeypatch):
    space = make_space()
    m = write_corpus(tmp_path, n=12, skip_images=True, text=lambda i: f"class {i * 97}")
    index = Index.build(space, m, tmp_path / "ix", cache=tmp_path / "c")
    classes = [f"class {i}" for i in range(3000)]
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ANYBIND_TEST_CALL_LOG", str(log))
    out = index.classify(
        classes, modality="text", templates=("{}",), k=3, cache=tmp_path / "c", batch_size=500
    )
    assert len(out) == 12
    for r in out:
        i = int(r["id"][1:])
        assert r["classes"][0][0] == f"class {i * 97}" and r["classes"][0][1] == pytest.approx(1.0, abs=1e-5)
        assert len(r["classes"]) == 3
    first = sum(int(x) for x in log.read_text().split())
    assert first == 3000 - 12  # the 12 stored captions were already in the feature cache
    log.write_text("")
    index.classify(classes, modality="text", templates=("{}",), k=3, cache=tmp_path / "c", batch_size=500)
    assert log.read_text() == ""  # second pass: every prompt served from the feature cache

"""Fast search for serving (issue 21): the in-memory HNSW graph beside the LanceDB table (recall, never
stale, deletes and filters respected) and quantised codes with exact rescoring (recall, memory)."""

from __future__ import annotations

import inspect
import json
import logging
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from anybind.bench.search_util import clustered_vectors
from anybind.index import Index, IndexError_
from anybind.index.core_ann import AnnManager
from anybind.index.memann import MEMANN_DIR, MemoryAnn
from anybind.index.quant import hamming
from anybind.index.store import rows_table

pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")

SLOW = settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def make(tmp, n, d=32, seed=0, clusters=None, nq=50):
    rng = np.random.default_rng(seed)
    X, C = clustered_vectors(n, d, clusters or max(4, n // 50), rng)
    Q, _ = clustered_vectors(nq, d, len(C), rng, centers=C)
    ix = Index.create(tmp / f"i{seed}-{n}-{d}", dim=d, identity=f"t{d}", ann_threshold=0, overwrite=True)
    ix.add_vectors([str(i) for i in range(n)], X, "v")
    return ix, X, Q


def recall(got, want) -> float:
    return float(np.mean([len({h.id for h in a} & {h.id for h in b}) / max(1, len(b)) for a, b in zip(got, want)]))


@SLOW
@given(n=st.integers(300, 3000), seed=st.integers(0, 1000))
def test_memory_ann_recall_against_exact(tmp_path, n, seed):
    ix, X, Q = make(tmp_path, n, seed=seed)
    ix.create_memory_ann()
    exact = ix.search_vectors(Q, k=10, exact=True)
    got = ix.search_vectors(Q, k=10)  # above ann_threshold (0): the graph answers
    assert recall(got, exact) >= 0.95
    for g, e in zip(got[:5], exact[:5]):  # exact scores of what it found
        assert g[0].score == pytest.approx(e[0].score, abs=1e-5) or g[0].id != e[0].id


def test_memory_ann_is_used_and_never_answers_stale(tmp_path, caplog):
    ix, X, Q = make(tmp_path, 1500)
    info = ix.create_memory_ann()
    assert info["version"] == ix.table.version and (tmp_path / ix.path.name / MEMANN_DIR / "graph.bin").is_file()
    other = Index.open(ix.path)  # another writer: the saved graph now covers an older version
    other.delete([str(i) for i in range(200)])
    other.add_vectors(["new"], Q[:1], "v")
    reader = Index.open(ix.path)  # loads the saved (stale) graph
    with caplog.at_level(logging.INFO, logger="anybind.index.fast"):
        hits = reader.search_vectors(Q, k=10)
    assert "brought to table version" in caplog.text and "+1 rows, -200" in caplog.text
    assert hits[0][0].id == "new" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    gone = {str(i) for i in range(200)}
    assert not any(h.id in gone for row in hits for h in row)  # deletes respected
    assert recall(hits, reader.search_vectors(Q, k=10, exact=True)) >= 0.95
    # the writer's update saves the graph at the new version
    added, deleted = other.update_memory_ann()
    assert (added, deleted) == (1, 200)
    assert Index.open(ix.path).meta["memory_ann"]["version"] == other.table.version


def test_memory_ann_respects_filters(tmp_path):
    ix, X, Q = make(tmp_path, 1200)
    ix.add_vectors([str(i) for i in range(300)], X[:300], "w", labels=[{"c": "a" if i % 2 else "b"} for i in range(300)])
    ix.create_memory_ann()
    hits = ix.search_vectors(Q, k=10, modality="w")
    assert hits and all(h.modality == "w" for row in hits for h in row)
    assert recall(hits, ix.search_vectors(Q, k=10, modality="w", exact=True)) >= 0.95
    few = ix.search_vectors(Q, k=10, labels={"c": "a"})  # 150 of 1500 rows: answered exactly
    assert all(h.labels == {"c": "a"} for row in few for h in row)
    assert [h.id for h in few[0]] == [h.id for h in ix.search_vectors(Q[:1], k=10, labels={"c": "a"}, exact=True)[0]]


def test_a_damaged_graph_falls_back_to_exact_with_a_warning(tmp_path, caplog):
    ix, X, Q = make(tmp_path, 800)
    ix.create_memory_ann()
    (ix.path / MEMANN_DIR / "graph.bin").write_bytes(b"not a graph")
    reader = Index.open(ix.path)
    with caplog.at_level(logging.WARNING):
        got = reader.search_vectors(Q[:5], k=10)
    assert "in-memory ANN not usable" in caplog.text and "searching exactly" in caplog.text
    assert [[h.id for h in r] for r in got] == [[h.id for h in r] for r in reader.search_vectors(Q[:5], k=10, exact=True)]
    reader.update_memory_ann()  # the writer rebuilds it
    assert recall(Index.open(ix.path).search_vectors(Q, k=10), reader.search_vectors(Q, k=10, exact=True)) >= 0.95


# ----------------------------------------------------------------------------- quantised codes
@SLOW
@given(n=st.integers(500, 2500), seed=st.integers(0, 1000))
def test_quantised_recall_after_rescoring(tmp_path, n, seed):
    ix, X, Q = make(tmp_path, n, d=256, seed=seed, clusters=max(8, n // 100), nq=60)
    exact = ix.search_vectors(Q, k=10, exact=True)
    ix.quantize("int8")
    assert recall(ix.search_vectors(Q, k=10), exact) >= 0.99
    assert ix.quant_memory()["ratio"] == pytest.approx(4.0)
    ix.quantize("binary")
    assert recall(ix.search_vectors(Q, k=10), exact) >= 0.95
    mem = ix.quant_memory()
    assert mem["ratio"] == pytest.approx(32.0) and mem["code_bytes"] == len(ix) * 256 / 8


def test_quantised_codes_follow_the_table(tmp_path):
    ix, X, Q = make(tmp_path, 600, d=64)
    ix.quantize("binary")
    assert ix.search_vectors(Q[:1], k=1)[0][0].id != "new"
    other = Index.open(ix.path)
    other.add_vectors(["new"], Q[:1], "v")
    other.delete(["1", "2"])
    ix.table.checkout_latest()
    top = ix.search_vectors(Q[:1], k=10)
    assert top[0][0].id == "new" and top[0][0].score == pytest.approx(1.0, abs=1e-5)
    mem = ix.quant_memory()  # the codes were made again for the table now: 600 + 1 - 2 rows of 64 bits
    assert len(mem) == 3 and mem["code_bytes"] == len(ix) * 64 / 8 == 599 * 8
    assert not {"1", "2"} & {h.id for h in ix.search_vectors(X[1:3], k=5)[0]}
    ix.quantize(None)
    assert ix.meta["quantize"] is None
    with pytest.raises(IndexError_, match="keeps no quantised codes"):
        ix.quant_memory()



def test_the_index_holds_its_ann_part_and_its_methods_are_the_part_s(tmp_path):
    """Issue 15: the index holds the part that builds, tunes and warms its approximate search (``index.ann``, an
    :class:`~anybind.index.core_ann.AnnManager`), no forwarding mixin; settings made through the part are the ones
    the index's searches use, and the index's methods of the same names call it (same signature and docstring)."""
    ix, X, Q = make(tmp_path, 600, d=64)
    assert Index.__mro__ == (Index, object) and isinstance(ix.ann, AnnManager)
    exact = ix.search_vectors(Q, k=10, exact=True)
    assert ix.ann.quantize("binary", rescore=8) == ix.meta["quantize"] == {"kind": "binary", "rescore": 8}
    assert recall(ix.search_vectors(Q, k=10), exact) >= 0.95
    assert ix.quant_memory() == ix.ann.quant_memory() and ix.quant_memory()["code_bytes"] == 600 * 64 / 8
    ix.ann.create_memory_ann()
    ix.set_memory_ann_ef(80)  # through the index: the part's graph and index.json follow
    assert ix.ann.fast._memory_ann().params["ef"] == ix.meta["memory_ann"]["ef"] == 80
    assert Index.open(ix.path).meta["memory_ann"]["ef"] == 80
    for name in ("create_ann", "uses_ann", "ann_recall", "tune_ann", "create_memory_ann", "update_memory_ann",
                 "set_memory_ann_ef", "quantize", "quant_memory", "warm_fast"):
        ours, part = getattr(Index, name), getattr(AnnManager, name)
        assert inspect.signature(ours) == inspect.signature(part) and ours.__doc__ == part.__doc__, name

# ----------------------------------------------------------------------------- refusal, loading, threads
def test_a_graph_never_answers_for_another_table_version(tmp_path):
    ix, X, Q = make(tmp_path, 400)
    ix.create_memory_ann()
    old = Index.open(ix.path)
    ann = MemoryAnn.load(ix.path / MEMANN_DIR, ix.identity, ix.dim)
    assert ann.graph.ef == 64  # the saved search breadth, not hnswlib's default of 10
    other = Index.open(ix.path)
    other.add_vectors(["late"], Q[:1], "v")
    old.table.checkout_latest()
    with pytest.raises(IndexError_, match=f"covers table version {ann.version}, not {old.table.version}"):
        ann.search(Q[:1], 10, old.snapshot())
    assert old.search_vectors(Q[:1], k=1)[0][0].id == "late"  # the index brings it up to date first


def test_searches_in_threads_while_another_writer_adds_rows(tmp_path):
    ix, X, Q = make(tmp_path, 1000)
    ix.create_memory_ann()
    reader = Index.open(ix.path)
    reader.warm_fast()  # loads the graph before the first search
    errors: list[BaseException] = []

    def search(i):
        try:
            for j in range(8):
                reader.search_vectors(Q[(i * 8 + j) % len(Q)][None], k=10)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    writer = Index.open(ix.path)
    for b in range(3):
        writer.add_vectors([f"new{b}-{i}" for i in range(5)], Q[b * 5 : b * 5 + 5], "v")
        reader.table.checkout_latest()
    for t in threads:
        t.join()
    assert not errors
    hits = reader.search_vectors(Q[:15], k=1)
    assert [h[0].id for h in hits] == [f"new{i // 5}-{i % 5}" for i in range(15)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=5, max_size=5), min_size=1, max_size=20), st.binary(min_size=5, max_size=5))
def test_hamming_counts_differing_bits(rows, q):
    C = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), 5)
    qq = np.frombuffer(q, np.uint8)
    want = np.unpackbits(C ^ qq, axis=1).sum(1)
    assert hamming(C, qq).tolist() == want.tolist()


def test_cli_index_keeps_the_graph_and_codes(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app
    from index_helpers import make_space, write_corpus

    make_space().save(tmp_path / "space")
    runner = CliRunner()
    base = ["index", str(tmp_path / "space"), "--out", str(tmp_path / "ix"), "--cache", str(tmp_path / "c"),
            "--ann", "never", "--ann-threshold", "0"]
    res = runner.invoke(app, [*base[:2], str(write_corpus(tmp_path, n=30)), *base[2:], "--memory-ann"])
    assert res.exit_code == 0, res.output
    assert "in-memory ANN (hnswlib, M=16) over 60 rows" in res.output
    more = write_corpus(tmp_path, n=10, start=30, name="more.jsonl")
    res = runner.invoke(app, [*base[:2], str(more), *base[2:]])  # a later build keeps the saved graph current
    assert res.exit_code == 0 and "over 80 rows" in res.output, res.output
    ix = Index.open(tmp_path / "ix")
    assert ix.meta["memory_ann"]["version"] == ix.table.version
    assert MemoryAnn.load(ix.path / MEMANN_DIR, ix.identity, ix.dim).live == 80
    for kind in ("binary", "none"):
        res = runner.invoke(app, [*base[:2], str(more), *base[2:], "--quantize", kind])
        assert res.exit_code == 0, res.output
        assert ("searches use binary codes" in res.output) == (kind == "binary")
    assert Index.open(tmp_path / "ix").meta["quantize"] is None
    q = ["search", str(tmp_path / "ix"), "--text", "stamp number 33", "-k", "5", "--json", "--cache", str(tmp_path / "c")]
    fast, exact = (json.loads(runner.invoke(app, q + extra).output) for extra in ([], ["--exact"]))
    assert [h["id"] for h in fast] == [h["id"] for h in exact] and fast[0]["id"] == "r33"


def test_the_search_breadth_is_saved_with_the_index(tmp_path):
    ix, X, Q = make(tmp_path, 500)
    ix.create_memory_ann(ef=16)
    ix.set_memory_ann_ef(200)
    assert Index.open(ix.path).meta["memory_ann"]["ef"] == 200
    reader = Index.open(ix.path)
    assert recall(reader.search_vectors(Q, k=10), reader.search_vectors(Q, k=10, exact=True)) >= 0.99
    with pytest.raises(IndexError_, match="ef must be a positive integer"):
        ix.set_memory_ann_ef(0)


def test_more_rescored_candidates_find_more_of_the_true_neighbours(tmp_path):
    ix, X, Q = make(tmp_path, 2000, d=128, clusters=20, nq=40)
    exact = ix.search_vectors(Q, k=10, exact=True)
    got = {}
    for r in (1, 5, 100):
        ix.quantize("binary", rescore=r)
        got[r] = recall(ix.search_vectors(Q, k=10), exact)
    assert got[1] < got[5] < got[100] and got[100] >= 0.95, got
    assert Index.open(ix.path).meta["quantize"] == {"kind": "binary", "rescore": 100}
    with pytest.raises(IndexError_, match="rescore must be a positive integer"):
        ix.quantize("int8", rescore=0)


@pytest.mark.parametrize("kind", ["graph", "int8", "exact"])
def test_writes_through_the_table_itself_are_seen_by_the_next_search(tmp_path, kind):
    # the index keeps the table's version between searches; a write or checkout on index.table (a LanceDB call
    # the index did not make) must still be seen: the graph, the codes and exact search never answer stale
    ix, X, Q = make(tmp_path, 400)
    if kind == "graph":
        ix.create_memory_ann()
    elif kind == "int8":
        ix.quantize("int8")
    exact = True if kind == "exact" else None
    assert ix.search_vectors(Q[:1], k=1, exact=exact)[0][0].id != "direct"
    ix.table.add(rows_table(ix.dim, ["direct"], ["v"], ["direct"], [{}], ["k"], Q[:1]))
    top = ix.search_vectors(Q[:1], k=1, exact=exact)[0][0]
    assert top.id == "direct" and top.score == pytest.approx(1.0, abs=1e-5) and len(ix) == 401
    away = rows_table(ix.dim, ["direct"], ["v"], ["direct"], [{}], ["k2"], -Q[:1])  # through a merge_insert builder
    ix.table.merge_insert(["id", "modality"]).when_matched_update_all().when_not_matched_insert_all().execute(away)
    assert "direct" not in {h.id for h in ix.search_vectors(Q[:1], k=5, exact=exact)[0]} and len(ix) == 401
    other = Index.open(ix.path)  # another writer; this index sees it after a checkout on its table
    other.delete(["direct"])
    ix.table.checkout_latest()
    assert len(ix) == 400 and ix.counts() == {"v": 400}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_recall_bound_is_the_mean_less_two_standard_errors(n, frac, seed):
    """The tuning rule's bound: per-query recall@k's mean, less 2 sample standard errors (numpy's own)."""
    from anybind.index.tuning import recall_bound

    rng = np.random.default_rng(seed)
    truth = np.arange(n * 10).reshape(n, 10)
    found = np.where(rng.random((n, 10)) < frac, truth, -1)  # a random share of each query's true ids found
    per = (found >= 0).mean(1)
    mean, low = recall_bound(found, truth)
    assert mean == pytest.approx(per.mean()) and low <= mean + 1e-12
    assert low == pytest.approx(per.mean() - 2 * per.std(ddof=1) / np.sqrt(n))


def test_tune_ef_wants_the_bound_not_the_mean_at_the_target():
    """ef is the smallest of the grid whose tuning recall less 2 standard errors reaches the target: a mean
    just at the target is not enough, and the largest ef comes back when none reaches."""
    from anybind.index.tuning import recall_bound, tune_ef

    truth = np.arange(4000).reshape(400, 10)
    miss = np.random.default_rng(0).random((400, 10))

    def search(share):  # ef -> found ids with this share of misses
        return lambda ef: np.where(miss < share[ef], -1, truth)

    share = {16: 0.10, 32: 0.04, 64: 0.02, 128: 0.0}
    t = tune_ef(search(share), truth, 0.96, grid=(16, 32, 64, 128))
    ef, mean, low = t.ef, t.recall, t.recall_low
    assert ef == 64 and low >= 0.96 and mean > low and t.reached  # 32's mean (~0.96) falls short once its error
    assert [e for e, _, _ in t.tried] == [16, 32, 64]  # is counted
    none = tune_ef(search(share), truth, 1.0, grid=(16, 32, 64))
    assert none.ef == 64 and not none.reached  # none reaches: the largest
    mean32, low32 = recall_bound(search(share)(32), truth)
    assert abs(mean32 - 0.96) < 0.01 and low32 < 0.96


def test_the_same_rows_build_the_same_graph(tmp_path):
    """Same command twice, same numbers: two builds of the same rows (and the same additions synced into them)
    give byte-identical graph files and the same hits.  hnswlib's multi-threaded insert is not deterministic (the
    order threads link nodes in varies run to run: CI's machine built a graph other than ours), so the graph is
    built and synced on one thread unless ``threads`` says otherwise; the choice is saved with the index."""
    rng = np.random.default_rng(3)
    X, C = clustered_vectors(900, 16, 8, rng)
    Q, _ = clustered_vectors(40, 16, len(C), rng, centers=C)
    runs = []
    for name in ("a", "b"):
        ix = Index.create(tmp_path / name, dim=16, identity="t16", ann_threshold=0)
        ix.add_vectors([f"r{i}" for i in range(600)], X[:600], "v")
        info = ix.create_memory_ann(M=4, ef_construction=16, ef=8)  # narrow: hits depend on the graph's shape
        assert info["threads"] == 1 and Index.open(ix.path).meta["memory_ann"]["threads"] == 1
        built = (ix.path / MEMANN_DIR / "graph.bin").read_bytes()
        ix.add_vectors([f"n{i}" for i in range(300)], X[600:], "v")  # synced into the saved graph
        ix.update_memory_ann()
        runs.append((built, (ix.path / MEMANN_DIR / "graph.bin").read_bytes(),
                     [[(h.id, h.score) for h in row] for row in ix.search_vectors(Q, k=10)]))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]
    with pytest.raises(IndexError_, match="threads must be -1 .all cores. or a positive integer"):
        ix.create_memory_ann(threads=0)


def test_cli_index_builds_the_graph_on_the_threads_asked(tmp_path):
    """``anybind index --memory-ann --memory-ann-threads N`` builds the graph on N threads (saved with it and shown);
    a graph already there is rebuilt when asked for another count; a count hnswlib cannot take is one line."""
    from typer.testing import CliRunner

    from anybind.cli import app
    from index_helpers import make_space, write_corpus

    make_space().save(tmp_path / "space")
    runner = CliRunner()
    corpus = str(write_corpus(tmp_path, n=20))
    base = ["index", str(tmp_path / "space"), corpus, "--out", str(tmp_path / "ix"), "--cache", str(tmp_path / "c"),
            "--ann", "never", "--ann-threshold", "0", "--memory-ann"]
    res = runner.invoke(app, base)
    assert res.exit_code == 0 and "1 thread" in res.output, res.output
    assert Index.open(tmp_path / "ix").meta["memory_ann"]["threads"] == 1
    res = runner.invoke(app, [*base, "--memory-ann-threads", "2"])
    assert res.exit_code == 0 and "2 threads" in res.output, res.output
    assert Index.open(tmp_path / "ix").meta["memory_ann"]["threads"] == 2
    res = runner.invoke(app, [*base, "--memory-ann-threads", "0"])
    assert res.exit_code == 2 and "threads must be -1 (all cores) or a positive integer" in res.output, res.output
    res = runner.invoke(app, [*base[:-1], "--memory-ann-threads", "2", "--out", str(tmp_path / "ix2")])
    assert res.exit_code == 2 and "--memory-ann-threads needs --memory-ann" in res.output, res.output


@pytest.mark.parametrize("threads", ["many", 0, True, 2.5])
def test_a_graph_saved_with_a_bad_thread_count_is_not_used(tmp_path, caplog, threads):
    """A graph whose saved ``threads`` hnswlib cannot take (a damaged info.json) is refused on load like any other
    damage (one warning naming the folder, exact search meanwhile), not a ValueError when rows come to sync."""
    ix, X, Q = make(tmp_path, 300)
    ix.create_memory_ann()
    p = ix.path / MEMANN_DIR / "info.json"
    info = json.loads(p.read_text())
    info["params"]["threads"] = threads
    p.write_text(json.dumps(info))
    ix.add_vectors(["new"], X[:1], "v")  # the graph must sync this row before it is searched
    reader = Index.open(ix.path)
    with caplog.at_level(logging.WARNING):
        got = reader.search_vectors(Q[:5], k=10)
    assert "in-memory ANN not usable" in caplog.text and "threads" in caplog.text, caplog.text
    assert [[h.id for h in r] for r in got] == [[h.id for h in r] for r in reader.search_vectors(Q[:5], k=10, exact=True)]

"""Tuning the in-memory graph's search breadth (``Index.tune_memory_ann``, ``anybind index --memory-ann-recall``):
the recall it reports is recall@10 against exact search, the smallest ``ef`` of the grid reaching the target (less
two standard errors) is kept, saved with the index and searched at after a reopen; bad inputs are one line."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anybind.bench.search_util import clustered_vectors
from anybind.index import EF_GRID, EfTuning, Index, IndexError_

pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")

GRID = (8, 16, 32, 64, 128)


def narrow(tmp, n=2000, d=32, seed=0):
    """An index whose graph is narrow (M=4): recall grows with ef over the grid, so the choice is visible."""
    rng = np.random.default_rng(seed)
    X, C = clustered_vectors(n, d, 40, rng)
    Q, _ = clustered_vectors(150, d, len(C), rng, centers=C)  # held-out tuning queries of the same distribution
    ix = Index.create(tmp / f"ix{seed}", dim=d, identity=f"t{d}", ann_threshold=0, overwrite=True)
    ix.add_vectors([str(i) for i in range(n)], X, "v")
    ix.create_memory_ann(M=4, ef_construction=16)
    return ix, Q


def recall_of(ix, Q) -> float:
    got, want = ix.search_vectors(Q, k=10), ix.search_vectors(Q, k=10, exact=True)
    return float(np.mean([len({h.id for h in a} & {h.id for h in b}) / 10 for a, b in zip(got, want)]))


def test_the_tuned_ef_is_the_smallest_reaching_the_target_and_its_recall_is_against_exact(tmp_path):
    ix, Q = narrow(tmp_path)
    t = ix.tune_memory_ann(0.85, queries=Q, grid=GRID)
    assert isinstance(t, EfTuning) and t.reached and t.k == 10 and t.n_queries == len(Q)
    assert [e for e, _, _ in t.tried] == list(GRID[: GRID.index(t.ef) + 1])
    assert all(low < 0.85 for _, _, low in t.tried[:-1]) and t.recall_low >= 0.85 > t.tried[0][2]
    assert t.ef not in (GRID[0], GRID[-1])  # a choice was made inside the grid (else the test shows nothing)
    # the recall reported is what Index.search_vectors gives against exact search at that ef
    assert ix.meta["memory_ann"]["ef"] == t.ef
    assert recall_of(ix, Q) == pytest.approx(t.recall, abs=1e-9)
    for ef, rec, _ in t.tried:
        ix.set_memory_ann_ef(ef)
        assert recall_of(ix, Q) == pytest.approx(rec, abs=1e-9)


def test_the_tuned_ef_is_saved_and_searched_at_after_a_reopen(tmp_path):
    ix, Q = narrow(tmp_path)
    t = ix.tune_memory_ann(0.85, queries=Q, grid=GRID)
    default = ix.meta["memory_ann"]  # the build's ef (64) differs from the tuned one
    reader = Index.open(ix.path)
    assert reader.meta["memory_ann"]["ef"] == t.ef != 64
    assert default["tuned"]["recall@10"] == pytest.approx(t.recall) and default["tuned"]["reached"]
    assert recall_of(reader, Q) == pytest.approx(t.recall, abs=1e-9)  # a fresh object searches at the tuned ef
    ix.set_memory_ann_ef(64)
    assert recall_of(Index.open(ix.path), Q) != pytest.approx(t.recall, abs=1e-9)  # ... and at 64 it differs


def test_an_open_reader_searches_at_the_ef_another_process_tuned(tmp_path):
    """A reader whose graph was loaded (a running service) kept searching at the ef it loaded: a tuning saved by
    another process (``anybind index --memory-ann-recall`` beside ``anybind serve``) reached it only on a restart,
    though its refresh had read the new ef from index.json (the codes' rescore factor is taken as set now)."""
    ix, Q = narrow(tmp_path)
    reader = Index.open(ix.path)
    at_64 = recall_of(reader, Q)  # the graph loaded, at the build's ef
    t = Index.open(ix.path).tune_memory_ann(0.85, queries=Q, grid=GRID)  # another process
    assert t.ef != 64 and t.recall != pytest.approx(at_64, abs=1e-9)
    reader.refresh()
    assert reader.meta["memory_ann"]["ef"] == t.ef
    assert recall_of(reader, Q) == pytest.approx(t.recall, abs=1e-9)


def test_queries_default_to_the_index_own_rows_by_a_seed_and_save_false_keeps_the_ef(tmp_path):
    ix, Q = narrow(tmp_path)
    before = recall_of(ix, Q)
    a = ix.tune_memory_ann(0.9, save=False, n_queries=100)
    b = ix.tune_memory_ann(0.9, save=False, n_queries=100)
    c = ix.tune_memory_ann(0.9, save=False, n_queries=100, seed=1)
    assert a == b and a.n_queries == 100 and a.tried != c.tried  # same seed, same numbers; another seed, others
    assert ix.meta["memory_ann"]["ef"] == 64 and "tuned" not in ix.meta["memory_ann"]
    assert recall_of(ix, Q) == before  # the graph searches at its saved ef again
    assert ix.tune_memory_ann(1.0, grid=(8, 16), n_queries=50).reached is False  # none reaches: the largest kept
    assert Index.open(ix.path).meta["memory_ann"]["ef"] == 16


@pytest.mark.parametrize("target", [0, 0.0, -0.1, 1.01, 2, math.nan, True, "0.9", None])
def test_a_target_outside_0_1_is_one_line(tmp_path, target):
    ix, Q = narrow(tmp_path, n=300)
    with pytest.raises(IndexError_, match=r"^target_recall must be in \(0, 1\], got .*$") as e:
        ix.tune_memory_ann(target)
    assert "\n" not in str(e.value)


def test_other_bad_inputs_are_one_line(tmp_path):
    ix, Q = narrow(tmp_path, n=300)
    cases = [
        (dict(k=0), r"^k must be a positive integer, not 0$"),
        (dict(n_queries=2.5), r"^n_queries must be a positive integer, not 2.5$"),
        (dict(z=-1), r"^z \(standard errors of margin\) must be >= 0, got -1$"),
        (dict(grid=(32, 16)), r"^the ef grid must be positive integers, ascending, not \(32, 16\)$"),
        (dict(grid=()), r"^the ef grid must be positive integers, ascending"),
        (dict(grid=("a", 32)), r"^the ef grid must be positive integers, ascending, not \('a', 32\)$"),  # was int()'s
        (dict(grid=(16.5, 32)), r"^the ef grid must be positive integers, ascending, not \(16.5, 32\)$"),  # was 16
        (dict(queries=Q[:, :16]), r"^queries are 16-d: this index holds 32-d vectors$"),
        (dict(queries=np.zeros((0, 32))), r"^no tuning queries given$"),
        # a NaN query row (or noise) was taken in: its recall counted 0, and the largest ef saved as "not reached"
        (dict(queries=np.where(np.arange(32) == 5, np.nan, Q[:3])), r"^query 0 is not finite \(NaN or infinite\)$"),
        (dict(noise=math.nan), r"^noise must be a finite number >= 0, not nan$"),
    ]
    for kw, msg in cases:
        with pytest.raises(IndexError_, match=msg):
            ix.tune_memory_ann(0.9, **kw)
    plain = Index.create(tmp_path / "plain", dim=8, identity="t8")
    plain.add_vectors(["a"], np.ones((1, 8), np.float32), "v")
    with pytest.raises(IndexError_, match=r"plain: no in-memory ANN to tune: build one with Index.create_memory_ann"):
        plain.tune_memory_ann(0.9)
    empty = Index.create(tmp_path / "empty", dim=8, identity="t8")
    empty.create_memory_ann()
    with pytest.raises(IndexError_, match=r"empty: the index is empty: no rows to tune the in-memory ANN on$"):
        empty.tune_memory_ann(0.9)


def test_the_grid_is_ascending_from_k_up():
    assert list(EF_GRID) == sorted(set(EF_GRID)) and EF_GRID[0] >= 10


def test_cli_index_tunes_the_graph_and_refuses_a_bad_target_before_embedding(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app
    from index_helpers import make_space, write_corpus

    make_space().save(tmp_path / "space")
    runner = CliRunner()
    corpus = str(write_corpus(tmp_path, n=20))
    base = ["index", str(tmp_path / "space"), corpus, "--out", str(tmp_path / "ix"), "--cache", str(tmp_path / "c"),
            "--ann", "never", "--ann-threshold", "0", "--memory-ann"]
    res = runner.invoke(app, [*base, "--memory-ann-recall", "1.5"])
    assert res.exit_code == 2 and "target_recall must be in (0, 1], got 1.5" in res.output, res.output
    assert not (tmp_path / "ix").exists()  # refused before anything was embedded
    res = runner.invoke(app, [*base, "--memory-ann-recall", "0.9"])
    assert res.exit_code == 0, res.output
    ix = Index.open(tmp_path / "ix")
    tuned = ix.meta["memory_ann"]["tuned"]
    assert f"in-memory ANN search breadth: ef {ix.meta['memory_ann']['ef']} (recall@10 {tuned['recall@10']:.3f}" \
        in res.output and tuned["target"] == 0.9
    res = runner.invoke(app, [*base[:-1], "--memory-ann-recall", "0.9", "--out", str(tmp_path / "ix2")])
    assert res.exit_code == 2 and "no in-memory ANN to tune" in " ".join(res.output.split()), res.output


def test_cli_rebuilding_the_graph_for_another_thread_count_keeps_its_ef(tmp_path):
    """``anybind index --memory-ann --memory-ann-threads N`` on an index whose graph was built on another count
    rebuilds it -- at create_memory_ann's default ef 64: an ef tuned (``--memory-ann-recall``) or set before was
    dropped without a word.  The rebuilt graph searches at the ef the index had."""
    from typer.testing import CliRunner

    from anybind.cli import app
    from index_helpers import make_space, write_corpus

    make_space().save(tmp_path / "space")
    corpus = str(write_corpus(tmp_path, n=20))
    base = ["index", str(tmp_path / "space"), corpus, "--out", str(tmp_path / "ix"), "--cache", str(tmp_path / "c"),
            "--ann", "never", "--ann-threshold", "0", "--memory-ann"]
    assert CliRunner().invoke(app, base).exit_code == 0
    Index.open(tmp_path / "ix").set_memory_ann_ef(24)
    res = CliRunner().invoke(app, [*base, "--memory-ann-threads", "2"])
    assert res.exit_code == 0, res.output
    graph = Index.open(tmp_path / "ix").meta["memory_ann"]
    assert graph["threads"] == 2 and graph["ef"] == 24


def _pairs(I) -> list[list[tuple[str, str]]]:
    return [[(str(j), "v") for j in row] for row in I]


def test_given_exact_neighbours_give_the_same_choice_without_a_second_exact_search(tmp_path, monkeypatch):
    """The search-scale bench has the tuning queries' exact top-k already: passed as ``truth`` ((id, modality)
    pairs, as ``tune_ann`` takes them), the library does not compute them again, and chooses as it would."""
    import anybind.index.fast as fast
    from anybind.index.exact import exact_topk

    ix, Q = narrow(tmp_path)
    _, I = exact_topk(Q / np.linalg.norm(Q, axis=1, keepdims=True), ix.snapshot().vectors, 10)
    computed = ix.tune_memory_ann(0.85, queries=Q, grid=GRID, save=False)

    def no_exact(*a, **kw):
        raise AssertionError("exact top-k computed again")

    monkeypatch.setattr(fast, "exact_topk", no_exact)
    given = ix.tune_memory_ann(0.85, queries=Q, grid=GRID, save=False, truth=_pairs(I))
    assert given == computed and given.ef not in (GRID[0], GRID[-1])
    # the truth is what the recall is measured against: other rows' truth measures (near) nothing
    other = ix.tune_memory_ann(0.85, queries=Q, grid=GRID, save=False, truth=_pairs(np.roll(I, 7, axis=0)))
    assert not other.reached and other.recall < 0.2


def test_a_wrong_truth_is_one_line(tmp_path):
    from anybind.index.exact import exact_topk

    ix, Q = narrow(tmp_path, n=300)
    _, I = exact_topk(Q / np.linalg.norm(Q, axis=1, keepdims=True), ix.snapshot().vectors, 10)
    cases = [
        (dict(truth=_pairs(I)), r"^truth needs the queries it belongs to, one top-k list per query$"),
        (dict(queries=Q, truth=_pairs(I[:-1])), r"^truth holds 149 top-k lists for 150 tuning queries: one per query$"),
        (dict(queries=Q, truth=_pairs(I[:, :5])), r"^truth of query 0 lists 5 rows: the exact top-10 expected$"),
        (dict(queries=Q, truth=I), r"^truth of query 0: entry 0 is .*, not an \(id, modality\) pair of strings$"),
        (dict(queries=Q, truth=[[(str(j), "w") for j in r] for r in I]),
         r"^truth of query 0 names id '\d+' \(w\), which this index does not hold$"),
        (dict(queries=Q, truth=[[("nope", "v")] + _pairs(I[:1])[0][1:]] + _pairs(I[1:])),
         r"^truth of query 0 names id 'nope' \(v\), which this index does not hold$"),
        # a row listed twice would count twice as found: recall inflated, the cheapest breadth chosen
        (dict(queries=Q, truth=_pairs(I[:3]) + [_pairs(I[3:4])[0][:9] + [(str(I[3, 0]), "v")]] + _pairs(I[4:])),
         rf"^truth of query 3 lists id '{I[3, 0]}' \(v\) twice: the exact top-10 names each row once$"),
    ]
    for kw, msg in cases:
        with pytest.raises(IndexError_, match=msg) as e:
            ix.tune_memory_ann(0.9, **kw)
        assert "\n" not in str(e.value)

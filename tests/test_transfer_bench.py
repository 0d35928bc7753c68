"""The transfer bench's pieces (issue 16): train sets, seeded bootstrap intervals, per-query ranks, subsampling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.bench.tasks_transfer import bootstrap, subsample_train, train_sets
from anybind.data.manifest import Manifest, Record
from anybind.errors import AnybindError
from anybind.metrics import pair_recalls, query_ranks


def test_transfer_task_is_registered():
    from anybind.bench import load_tasks

    assert "transfer" in load_tasks()


def test_train_sets_each_all_leave_one_out_and_explicit():
    cs = ["tuxpaint", "emoji", "openclipart"]
    got = train_sets("each,all,loo,emoji+openclipart", cs)
    assert got["tuxpaint"] == ["tuxpaint"] and got["all"] == cs
    assert got["all-tuxpaint"] == ["emoji", "openclipart"] == got["emoji+openclipart"]
    assert len(got) == 3 + 1 + 3 + 1
    assert "all-emoji" not in train_sets("loo", ["a", "b"])  # with two corpora, leave-one-out is "each"
    with pytest.raises(AnybindError, match="nope not among the corpora"):
        train_sets("emoji+nope", cs)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(0, 40), n=st.integers(1, 40), seed=st.integers(0, 100))
def test_bootstrap_interval_holds_the_mean_and_is_seeded(k, n, seed):
    k = min(k, n)
    hits = np.r_[np.ones(k), np.zeros(n - k)]
    mean, (lo, hi), diff = bootstrap(hits, n=200, seed=seed)
    assert mean == k / n and lo <= mean <= hi and diff is None
    assert bootstrap(hits, n=200, seed=seed)[1] == (lo, hi)
    # paired against itself: the difference is exactly zero in every resample
    _, _, d = bootstrap(hits, [hits], n=200, seed=seed)
    assert d == (0.0, 0.0)


def test_paired_difference_sees_a_consistent_gain():
    rng = np.random.default_rng(0)
    base = (rng.random(300) < 0.3).astype(float)
    better = np.maximum(base, (rng.random(300) < 0.2).astype(float))  # never worse on any query
    _, _, (lo, hi) = bootstrap(better, [base], n=500)
    assert 0 < lo <= hi


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), n=st.integers(2, 12))
def test_query_ranks_agree_with_pair_recalls(seed, n):
    rng = np.random.default_rng(seed)
    Q, G = rng.normal(size=(n, 3)), rng.normal(size=(n, 3))
    keys = [str(int(x)) for x in rng.integers(0, 4, n)]  # duplicates: interchangeable
    r = query_ranks(Q @ G.T, query_keys=keys, gallery_keys=keys)
    res = pair_recalls(Q, G, query_keys=keys, gallery_keys=keys)
    assert res["R@1"] == float((r == 1).mean()) and res["R@5"] == float((r <= 5).mean())


def test_subsample_train_keeps_val_and_test_whole():
    recs = [Record(id=f"r{i}", split=["train", "train", "val", "test"][i % 4], values={"text": "x"}) for i in range(40)]
    man = Manifest(path=None, records=recs, bad=[], kinds={})
    sub = subsample_train(man, 5, seed=1)
    assert sum(r.split == "train" for r in sub.records) == 5
    assert [r.id for r in sub.records if r.split != "train"] == [r.id for r in recs if r.split != "train"]
    assert [r.id for r in subsample_train(man, 5, seed=1).records] == [r.id for r in sub.records]
    assert subsample_train(man, 0, seed=1) is man and len(man.records) == 40


def test_system_names_compose_levers():
    from anybind.bench.tasks_transfer import system_kwargs

    assert system_kwargs("recipe") == {"lock": "text", "init": "ridge"}
    assert system_kwargs("recipe+bridge+wise+lr1e-4") == {"lock": "text", "init": "ridge", "ridge_prior": "bridge",
                                                          "wise": "auto", "lr": 1e-4}
    assert system_kwargs("recipe+start+wise0.5") == {"lock": "text", "init": "ridge", "epochs": 0, "wise": 0.5}
    assert system_kwargs("defaults") == {}
    assert system_kwargs("defaults+mixup") == {"mixup": 0.5}
    assert system_kwargs("defaults+mixup0.2+select") == {"mixup": 0.2, "select_data": "held-out"}
    assert system_kwargs("defaults+noguard+selectown") == {"start_guard": False, "select_data": "own+held-out"}
    assert system_kwargs("recipe+bridge+guard")["start_guard"] is True
    assert system_kwargs("defaults+se0.5+select") == {"ridge_se": 0.5, "select_data": "held-out"}  # not "se"+"lect"
    with pytest.raises(AnybindError, match="unknown lever 'bogus'"):
        system_kwargs("recipe+bogus")
    with pytest.raises(AnybindError, match="starts with one of"):
        system_kwargs("plain+wise")


def test_selection_corpus_must_lie_outside_the_measured_corpora(tmp_path):
    from anybind.bench.transfer_systems import selection_corpus, system_kwargs

    builders = {"tuxpaint": None, "emoji": None, "openclipart": None}
    kw = {"defaults+select": system_kwargs("defaults+select")}
    assert selection_corpus("", ["tuxpaint"], builders, {"defaults": {}}, tmp_path) == []
    with pytest.raises(AnybindError, match="give --opt select=NAME"):
        selection_corpus("", ["tuxpaint", "emoji"], builders, kw, tmp_path)
    with pytest.raises(AnybindError, match="defaults\\+selectown select on another corpus"):
        selection_corpus("", ["tuxpaint"], builders, {"defaults+selectown": system_kwargs("defaults+selectown")},
                         tmp_path)
    with pytest.raises(AnybindError, match="outside the measured corpora"):
        selection_corpus("emoji", ["tuxpaint", "emoji"], builders, kw, tmp_path)
    with pytest.raises(AnybindError, match="outside the measured corpora"):
        selection_corpus("nope", ["tuxpaint", "emoji"], builders, kw, tmp_path)


def _retrieval_hits_before(space, man, split, cache):
    """``retrieval_hits`` as it was before it called ``lifecycle.pair_hits`` (issue 19's h171): the reference."""
    from anybind.evaluate import embed_records
    from anybind.metrics import paired_rows

    embs = embed_records(space, man.split(split), ["image", "text"], cache=cache)
    out = {}
    for a, b, ia, ib in paired_rows(embs, [("text", "image")]):
        rows = {a: ia, b: ib}
        for q, g, name in (("text", "image", "t->i"), ("image", "text", "i->t")):
            Q, G = embs[q][1][rows[q]], embs[g][1][rows[g]]
            r = query_ranks(Q @ G.T, query_keys=[embs[q][2][i] for i in rows[q]],
                            gallery_keys=[embs[g][2][i] for i in rows[g]])
            out[name] = (r == 1).astype(np.float64)
    return out


def test_retrieval_hits_are_what_they_were_before_pair_hits(tmp_path):
    """On a real (helper-encoder) text + image space: the same per-query hits, in order, as the former code, with
    records that share a caption or an image (interchangeable), a record without its image (no query), and a split
    with a single pair (no direction scored: nothing, as before, not a KeyError)."""
    import json

    from index_helpers import make_space, write_corpus

    from anybind.bench.tasks_transfer import retrieval_hits
    from anybind.data.manifest import load_manifest

    path = write_corpus(tmp_path, n=30, text=lambda i: f"stamp number {i % 11}")  # 30 captions, 11 distinct
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    for i, r in enumerate(recs):
        r["split"] = "test" if i < 24 else ("val" if i < 25 else "train")
    recs[3]["image"] = recs[2]["image"]  # the same image twice
    del recs[5]["image"]  # a caption without its image
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    man = load_manifest(path)
    space = make_space(seed=3)
    got = retrieval_hits(space, man, "test", tmp_path / "c")
    want = _retrieval_hits_before(space, man, "test", tmp_path / "c")
    assert sorted(got) == sorted(want) == ["i->t", "t->i"]
    for d in want:
        assert got[d].dtype == want[d].dtype and np.array_equal(got[d], want[d])
        assert len(got[d]) == 23 and 0 < got[d].sum() < 23  # 24 test records, one without its image; not all alike
    assert retrieval_hits(space, man, "val", tmp_path / "c") == _retrieval_hits_before(space, man, "val",
                                                                                       tmp_path / "c") == {}


def _never_built():
    """Corpus builders that fail the test if called: an option refused before any work."""
    return {"tuxa": lambda w: pytest.fail("built a corpus"), "tuxb": lambda w: pytest.fail("built a corpus")}


@pytest.mark.parametrize("boot", ["0", "-3", "x", "1.5"])
def test_boot_below_one_is_refused_before_any_work(boot, tmp_path, monkeypatch):
    """boot=0 gave an IndexError from np.percentile of no resamples, after every fit: refused first, in one line
    naming the option (an interval needs at least one resample); bootstrap itself refuses n < 1 too."""
    from anybind.bench import tasks_transfer

    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: _never_built())
    with pytest.raises(AnybindError, match=rf"^transfer: boot={boot!r}: a whole number of bootstrap resamples, "
                                           r"at least 1$"):
        tasks_transfer.transfer(tmp_path, corpora="tuxa,tuxb", systems="defaults", fm="0", boot=boot)
    with pytest.raises(ValueError, match=r"^bootstrap: n=0 resamples; need at least 1$"):
        bootstrap(np.ones(3), n=0)


@pytest.mark.parametrize("systems, named", [("defaults,defaults", "defaults"),
                                            ("recipe, defaults,recipe ,defaults", "recipe, defaults")])
def test_a_system_given_twice_is_refused_before_any_work(systems, named, tmp_path, monkeypatch):
    """A system given twice pooled both fits into one row's per-seed list (mislabelled /seedK values): refused
    first, in one line naming the systems given twice."""
    from anybind.bench import tasks_transfer

    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: _never_built())
    with pytest.raises(AnybindError,
                       match=rf"^transfer: systems={systems!r} names {named} twice: one row each, give it once$"):
        tasks_transfer.transfer(tmp_path, corpora="tuxa,tuxb", systems=systems, fm="0")


@pytest.mark.parametrize("opts, says", [
    ({"corpora": ","}, "transfer: corpora=',': no corpus named"),
    ({"systems": ", "}, "transfer: systems=', ': no system named"),
    ({"max_train": "abc"}, "transfer: max_train='abc': a whole number >= 0"),
    ({"fm": "-1"}, "transfer: fm='-1': a whole number >= 0"),
    ({"center": "yes"}, "transfer: center='yes': 1 or 0"),
    ({"l2sp_grid": "0.1,x", "systems": "defaults+l2sp"}, "transfer: l2sp_grid='0.1,x': comma-separated numbers"),
    ({"select": "tuxc"}, "transfer: select='tuxc' is used only by the +select / +selectown systems"),
    ({"l2sp_grid": "0.1", "systems": "defaults,recipe+wise"},  # read by +l2sp systems alone: unused, silently
     "transfer: l2sp_grid='0.1' is used only by the +l2sp systems; none is among defaults, recipe+wise"),
])
def test_a_bad_option_is_one_line_before_any_work(opts, says, tmp_path, monkeypatch):
    """corpora=',' failed after building Fashion-MNIST ("no field 'image' in  (fields: none)"), max_train=abc was a
    traceback, systems=',' / center=yes / select=NAME with no +select system ran silently on the defaults, and a bad
    l2sp_grid failed only after the first fits: each refused first, in one line naming the option."""
    from anybind.bench import tasks_transfer

    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: _never_built())
    kw = {"corpora": "tuxa,tuxb", "systems": "defaults", "fm": "0", **opts}
    with pytest.raises(AnybindError) as e:
        tasks_transfer.transfer(tmp_path, **kw)
    assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("center, on", [("1", True), (" 1", True), ("0", False), ("0 ", False)])
def test_center_is_read_as_it_is_checked(center, on):
    """The check stripped center (' 1' passed) while the bench compared the raw string (center == '1'): ' 1' ran no
    +center rows, silently.  The checked value is the one the bench reads."""
    from anybind.bench.transfer_systems import number_options

    assert number_options("tuxa", ["tuxa"], "0", "0", center, "0.1") == (0, 0, [0.1], on)


def test_l2sp_grid_unset_is_the_default_grid_and_given_reaches_the_l2sp_systems():
    from anybind.bench.transfer_systems import L2SP_GRID, l2sp_grid_option, number_options

    assert l2sp_grid_option("", ["recipe", "defaults"]) == L2SP_GRID  # not given: nothing to refuse
    assert l2sp_grid_option("0.1,1", ["recipe", "recipe+bridge+l2sp"]) == "0.1,1"
    assert number_options("tuxa", ["tuxa"], "0", "0", "1", l2sp_grid_option("", ["recipe+l2sp"]))[2] == [1e-4, 1e-3, 1e-2]

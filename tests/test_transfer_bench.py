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

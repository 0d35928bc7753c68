"""Captioning's metrics (BLEU-4, CIDEr-D) and the pure parts of decoding: the memory projection, and the
choice of projection and temperature when a val NLL is NaN.  No language model here (anybind.caption)."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.caption import bleu, cider_d, tokenize
from anybind.caption.scores import cider_d_items
from anybind.caption.memory import build_memory, project


def test_bleu_matches_hand_computed_values():
    # precisions 5/6, 4/5, 3/4, 2/3, equal lengths: BLEU-4 = (1/3) ** (1/4)
    assert bleu(["a big red dog runs fast"], [["a big red dog runs slowly"]]) == pytest.approx((1 / 3) ** 0.25, rel=1e-6)
    # every n-gram right but 4 words for a 6-word reference: brevity penalty exp(1 - 6/4)
    assert bleu(["a big red dog"], [["a big red dog runs slowly"]]) == pytest.approx(np.exp(-0.5), rel=1e-6)
    # the closest reference length counts, and clipping: "the the the the" against "the cat"
    assert bleu(["a big red dog"], [["a big red dog runs slowly", "a big red dog"]]) == pytest.approx(1.0, rel=1e-6)
    assert bleu(["the the the the"], [["the cat sat on the mat"]]) < 1e-3


def test_cider_d_perfect_penalised_and_clipped():
    refs = [["a red circle today"], ["two blue stars shine"], ["one green square sits"]]
    hyps = [r[0] for r in refs]
    assert cider_d(hyps, refs) == pytest.approx(10.0, rel=1e-6)
    # no 4-grams in 3-word captions: that order scores 0, as in the reference (3 of 4 orders)
    assert cider_d([h.rsplit(" ", 1)[0] for h in hyps], [[h.rsplit(" ", 1)[0]] for h in hyps]) == pytest.approx(7.5)
    # right words, wrong item: 0; repeated words (CIDEr-D's clipping) and a longer caption score lower than exact
    assert cider_d([hyps[1], hyps[2], hyps[0]], refs) == pytest.approx(0.0, abs=1e-9)
    assert cider_d(["a red red red circle circle today", hyps[1], hyps[2]], refs) < 10.0
    assert cider_d(["a red circle today on a table with a cat and a dog", hyps[1], hyps[2]], refs) < \
        cider_d(["a red circle today on a table", hyps[1], hyps[2]], refs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "red", "blue", "dog", "cat", "runs", "big"]), min_size=1, max_size=7),
                min_size=2, max_size=6))
def test_metrics_bounded_and_best_on_the_references(caps):
    refs = [[" ".join(c)] for c in caps]
    rnd = random.Random(len(caps))
    hyps = [" ".join(rnd.sample(c, len(c))) for c in caps]  # the same words, shuffled
    for h in (hyps, [r[0] for r in refs]):
        assert 0.0 <= bleu(h, refs) <= 1.0 + 1e-9
        assert 0.0 <= cider_d(h, refs) <= 10.0 + 1e-9
    assert cider_d([r[0] for r in refs], refs) >= cider_d(hyps, refs) - 1e-9
    assert bleu([r[0] for r in refs], refs) >= bleu(hyps, refs) - 1e-9


def test_cider_d_items_are_each_items_score_within_the_corpus():
    """What a paired bootstrap resamples: one score per item, their mean the corpus CIDEr-D; the document frequencies
    are the whole corpus', so an item's score depends on the other items' references."""
    refs = [["a red circle today"], ["two blue stars shine"], ["one green square sits"]]
    hyps = ["a red circle today", "two blue cats", "nothing at all"]
    got = cider_d_items(hyps, refs)
    assert len(got) == 3 and np.mean(got) == pytest.approx(cider_d(hyps, refs))
    assert got[0] == pytest.approx(10.0) and 0.0 < got[1] < 10.0 and got[2] == 0.0
    assert cider_d_items(hyps[:1], refs[:1]) != pytest.approx(got[:1])  # one document: every idf 0
    assert cider_d_items([], []) == [] and np.isnan(cider_d([], []))


def test_metric_inputs_checked():
    assert tokenize("A Tamworth pig.") == ["a", "tamworth", "pig"]
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="item 0 has no reference"):
        cider_d(["a"], [[]])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(2, 6), st.integers(0, 10_000))
def test_projection_is_a_unit_convex_mix_of_the_memory(n, d, seed):
    rng = np.random.default_rng(seed)
    caps = [f"c{i % (n - 1)}" for i in range(n)]  # one caption repeated: the memory keeps it once
    M = build_memory(rng.normal(size=(n, d)), caps, max_size=100)
    assert len(M) == n - 1
    X = rng.normal(size=(5, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    P = project(X, M, 0.05, chunk=2)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1.0, rtol=1e-5)
    # a cold softmax picks the most similar memory row; a hot one tends to the normalised mean
    cold, S = project(X, M, 1e-4), np.sort(X @ M.T, axis=1)
    clear = S[:, -1] - S[:, -2] > 0.005 if len(M) > 1 else np.ones(len(X), bool)  # no near-tie for the top
    np.testing.assert_allclose(cold[clear], M[np.argmax(X @ M.T, axis=1)][clear], atol=1e-3)
    mean = M.mean(0) / np.linalg.norm(M.mean(0))
    if np.linalg.norm(M.mean(0)) > 0.1:
        np.testing.assert_allclose(project(X, M, 1e4), np.tile(mean, (5, 1)), atol=1e-3)
    assert len(build_memory(rng.normal(size=(n, d)), [str(i) for i in range(n)], max_size=2, seed=seed)) == 2


def test_a_nan_scored_projection_or_temperature_is_never_chosen():
    """choose_projection: a NaN val NLL (a diverged decode) counts as +inf, wherever it sits in the grid."""
    from anybind.caption.memory import choose_projection

    rng = np.random.default_rng(0)
    memory = rng.normal(size=(20, 8)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    Xv = rng.normal(size=(5, 8)).astype(np.float32)
    temps = (0.005, 0.02, 0.1)
    by_t = {float(project(Xv, memory, t).sum()): t for t in temps}

    def score(nan_on=()):
        def f(Z):  # "raw" (the embeddings as they are) or temperatures in nan_on score NaN, the others 2 + t
            t = by_t.get(float(Z.sum()), "raw")
            return float("nan") if t in nan_on else 2.0 + (1.0 if t == "raw" else t)
        return f

    assert choose_projection(score(), Xv, memory, grid=temps)[:2] == ("memory", 0.005)
    assert choose_projection(score((0.005,)), Xv, memory, grid=temps)[:2] == ("memory", 0.02)
    kind, t, scores = choose_projection(score((0.005,)), Xv, memory, grid=temps, projection="none")
    assert kind == "none" and scores == {"none": 3.0}
    # the raw embeddings score NaN (they sit first among the candidates): a finite projection wins
    assert choose_projection(score(("raw",)), Xv, memory, grid=temps)[:2] == ("memory", 0.005)
    assert choose_projection(score(("raw", 0.005)), Xv, memory, grid=temps)[:2] == ("memory", 0.02)

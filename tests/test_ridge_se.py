"""The ridge start's standard-error rule (issue 16, helper h190): ``ridge_se=k`` keeps the most shrunk alpha of the
path whose val score is within k standard errors (of the best's per-pair scores) of the best; ``0`` is the plain
best.  Scored on real Tux Paint pairs the rule's pick and its record are checked against a hand computation."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, load_manifest
from anybind.loop import GUARD_ALPHAS, RIDGE_ALPHAS, ridge_select

PATH = RIDGE_ALPHAS + GUARD_ALPHAS


@settings(max_examples=30, deadline=None)
@given(means=st.lists(st.floats(0, 1), min_size=len(PATH), max_size=len(PATH)), k=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       seed=st.integers(0, 2**16))
def test_the_rule_keeps_the_most_shrunk_alpha_within_k_standard_errors_of_the_best(means, k, seed):
    rng = np.random.default_rng(seed)
    n, d = 12, 3
    Z, T = torch.from_numpy(rng.normal(size=(n, d))), torch.from_numpy(rng.normal(size=(n, 2)))
    G, R = Z.T @ Z, Z.T @ T
    items = {a: m + rng.normal(scale=0.3, size=20) for a, m in zip(PATH, means)}  # per-pair scores at each alpha
    calls = iter(PATH)
    record: dict = {}
    alpha, W = ridge_select(G, R, n, lambda W: items[next(calls)], alphas=PATH, se=k, record=record)
    score = {a: float(v.mean()) for a, v in items.items()}
    best = max(PATH, key=lambda a: (score[a], -a))  # the first best
    err = float(items[best].std(ddof=1) / math.sqrt(20))
    want = max(a for a in PATH if score[a] >= score[best] - k * err) if k else best
    assert alpha == want
    assert torch.allclose((G + alpha * n * torch.eye(d, dtype=torch.float64)) @ W, R, atol=1e-8)
    assert (record == {}) if k == 0 else (record["best_alpha"] == best and record["rule"] == f"{k:g}se"
                                          and record["best_se"] == pytest.approx(err, abs=1e-6))


def test_the_rule_needs_an_ascending_path():
    G, R = torch.eye(2, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="ascending"):
        ridge_select(G, R, 4, lambda W: np.ones(3), alphas=(10.0, 1.0), se=1.0)
    assert ridge_select(G, R, 4, lambda W: np.ones(3), alphas=(10.0, 1.0))[0] == 10.0  # the plain best: any order


@pytest.fixture(scope="module")
def tux_small(tux_dir, tmp_path_factory):
    """60 real Tux Paint stamps (image, text), one in four a val record."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "audio" in r][:60]
    rows = [{"id": r["id"], "split": "val" if i % 4 == 0 else "train", "text": r["text"],
             "image": str(tux_dir / r["image"])} for i, r in enumerate(recs)]
    out = tmp_path_factory.mktemp("ridge-se") / "manifest.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_on_real_pairs_the_rule_shrinks_at_least_as_far_and_stays_within_its_standard_errors(tux_small, shared_cache,
                                                                                               monkeypatch):
    from anybind import ridge as loop  # the ridge start lives in anybind.ridge (loop re-exports it)

    man = load_manifest(tux_small, modalities=["image", "text"])
    kw = dict(modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    seen: list[dict] = []
    real = loop.ridge_select

    def spy(G, R, n, score, **k):  # every alpha's per-pair val scores, as the library computed them
        seen.append({a: np.asarray(score(torch.linalg.solve(G.double() + a * n * torch.eye(G.shape[0], dtype=torch.float64),
                                                             R.double() + a * n * k["prior"].double())))
                     for a in k["alphas"]})
        return real(G, R, n, score, **k)

    monkeypatch.setattr(loop, "ridge_select", spy)
    plain = Space.fit(man, select_se=0.0, **kw)  # no rule (recipe auto takes select_se=1 on a val this small)
    ruled = Space.fit(man, ridge_se=1.0, select_se=0.0, **kw)
    scores = seen[-1]
    prec, rec = (s.info["lineage"][-1]["ridge_start"]["image"] for s in (plain, ruled))
    assert "se_rule" not in prec
    rule = rec["se_rule"]
    best = max(scores, key=lambda a: (scores[a].mean(), -a))
    err = scores[best].std(ddof=1) / math.sqrt(len(scores[best]))
    assert len(scores[best]) == len(man.split("val"))  # one score per val pair (both directions averaged)
    assert prec["alpha"] == rule["best_alpha"] == best  # no rule: the plain best
    want = max(a for a in scores if scores[a].mean() >= scores[best].mean() - err)
    assert want > best and rule["best_se"] == pytest.approx(err, abs=1e-6)  # 15 val pairs: a wide margin
    guard = rec["guard"]  # then the start guard: the label bridge where it scores at least the rule's pick
    assert guard["ridge_val"] == pytest.approx(scores[want].mean(), abs=1e-6)
    assert (rec["alpha"], guard["kept"]) == ((None, "start") if guard["start_val"] >= guard["ridge_val"] else (want, "ridge"))
    assert not torch.equal(plain.projectors["image"].linear.weight, ruled.projectors["image"].linear.weight)
    with pytest.raises(Exception, match="ridge_se must be a non-negative number"):
        Space.fit(man, ridge_se=-1, **kw)


def test_without_val_scores_the_rule_records_no_made_up_score():
    """No val pairs (every score NaN): the least shrunk alpha, as without the rule, and a note; not the stand-in
    ``-alpha`` the path is ordered by as if it were a val score (it was recorded as ``best_val: -0.1``)."""
    G, R = torch.eye(2, dtype=torch.float64), torch.ones(2, 1, dtype=torch.float64)
    record: dict = {}
    alpha, _ = ridge_select(G, R, 4, lambda W: np.array(np.nan), alphas=PATH, se=1.0, record=record)
    assert alpha == PATH[0] == ridge_select(G, R, 4, lambda W: float("nan"), alphas=PATH)[0]
    assert record["rule"] == "1se" and record["best_alpha"] == PATH[0] and "best_val" not in record
    assert "no val" in record["note"]


@pytest.mark.parametrize("init", ["random", "procrustes", "cca"])
def test_the_rule_without_a_ridge_start_is_refused_not_ignored(init):
    from anybind.errors import DataError
    from anybind.robust import check_robust
    from anybind.train import TrainConfig

    with pytest.raises(DataError, match=f"ridge_se=1.0 .*use init='ridge' \\(got init='{init}'\\)"):
        check_robust(TrainConfig(ridge_se=1.0, init=init))
    check_robust(TrainConfig(ridge_se=0.0, init=init))  # off: nothing to refuse
    check_robust(TrainConfig(ridge_se=1.0, init="ridge", lock="text"))

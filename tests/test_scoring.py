"""The space owns its scoring (issue 15): cosine, or Symile's multilinear inner product, chosen once by
the space and used by Space.similarity, evaluate, zero-shot, Index.search / classify and the service.

The Symile space here has three modalities a, b, c of stored vectors and learnt "missing" embeddings
with strong sign patterns, so that the MIP ranking differs from the cosine one; every check compares
with the MIP computed by hand (anybind.multilinear.mip_scores)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, load_manifest
from anybind.evaluate import evaluate, zero_shot
from anybind.index import Index
from anybind.multilinear import mip_retrieval_from_embeddings, mip_scores
from anybind.projectors import Projector, ProjectorConfig
from anybind.scoring import Scorer

D, N = 16, 30
MODS = ("a", "b", "c")


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(0)
    vecs = {m: _unit(rng.normal(size=(N, D))) for m in MODS}
    ids = [f"r{i}" for i in range(N)]
    for m in MODS:
        np.savez(root / f"{m}.npz", ids=np.array(ids), vectors=vecs[m])
    lines = [{"id": i, "split": "test", **{m: True for m in MODS}, "labels": {"kind": f"k{j % 3}"}}
             for j, i in enumerate(ids)]
    (root / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    missing = {m: (np.where(rng.random(D) < 0.5, -1.0, 1.0) * rng.uniform(0.2, 2.0, D)).astype(np.float32)
               for m in MODS}
    return root, vecs, ids, missing


def _space(root, missing=None):
    ident = {m: Projector(ProjectorConfig(in_dim=D, out_dim=D, kind="identity", standardize=False)) for m in MODS}
    info = {"missing_embeddings": {m: v.tolist() for m, v in missing.items()}} if missing else {}
    return Space({m: f"vectors:{root / (m + '.npz')}" for m in MODS}, ident, info=info)


def test_the_space_chooses_its_scorer(corpus):
    root, _, _, missing = corpus
    assert _space(root).scorer.kind == "cosine"
    sym = _space(root, missing)
    assert sym.scorer.kind == "mip" and set(sym.scorer.missing) == set(MODS)


def test_similarity_is_the_spaces_score(corpus):
    root, vecs, ids, missing = corpus
    cos = _space(root).similarity("a", ids[:5], "b", ids)
    assert np.allclose(cos, vecs["a"][:5] @ vecs["b"].T, atol=1e-5)
    sym = _space(root, missing).similarity("a", ids[:5], "b", ids)
    want = mip_scores(vecs["b"], [vecs["a"][:5], missing["c"]])  # MIP(a, b, missing_c)
    assert np.allclose(sym, want, atol=1e-5)
    assert not np.allclose(sym.argsort(1), cos.argsort(1))  # the two rules rank differently here


def test_evaluate_scores_a_symile_space_by_mip(corpus, tmp_path):
    root, vecs, ids, missing = corpus
    sym = _space(root, missing)
    man = load_manifest(root / "m.jsonl", kinds={m: "key" for m in MODS})
    got = evaluate(sym, man, split="test", cache=tmp_path / "c")
    embs = {m: (ids, vecs[m], ids) for m in MODS}
    want = mip_retrieval_from_embeddings(embs, missing)
    assert all(abs(got[k] - v) < 1e-9 for k, v in want.items() if not np.isnan(v))
    cos = evaluate(_space(root), man, split="test", cache=tmp_path / "c")
    assert got != cos


@pytest.mark.parametrize("target", ["b", None])
def test_index_search_ranks_by_mip_in_a_symile_space(corpus, tmp_path, target):
    """One query modality; target one modality, or any (one search per modality, merged by MIP score)."""
    root, vecs, ids, missing = corpus
    sym = _space(root, missing)
    ix = Index.build(sym, load_manifest(root / "m.jsonl", kinds={m: "key" for m in MODS}), tmp_path / "ix",
                     cache=tmp_path / "c", ann=False)
    hits = ix.search(inputs={"a": ["r3"]}, modality=target, k=8, cache=tmp_path / "c")
    cands = [(t, i) for t in ([target] if target else MODS) for i in range(N)]
    scores = []
    for t, i in cands:
        others = [missing[m] for m in MODS if m not in ("a", t)]
        scores.append(float(mip_scores(vecs[t][i : i + 1], [vecs["a"][3], *others])[0, 0]))
    order = np.argsort(-np.asarray(scores), kind="stable")[:8]
    assert [(h.modality, h.id) for h in hits] == [(cands[j][0], ids[cands[j][1]]) for j in order]
    assert np.allclose([h.score for h in hits], np.asarray(scores)[order], atol=1e-4)
    assert [h.rank for h in hits] == list(range(1, 9))


def test_a_two_modality_query_multiplies_in_a_symile_space(corpus, tmp_path):
    """"The c that goes with this a and this b" is MIP(a, b, c): the product, not the mean."""
    root, vecs, ids, missing = corpus
    sym = _space(root, missing)
    ix = Index.build(sym, load_manifest(root / "m.jsonl", kinds={m: "key" for m in MODS}), tmp_path / "ix",
                     cache=tmp_path / "c", ann=False)
    hits = ix.search(inputs={"a": ["r1"], "b": ["r2"]}, modality="c", k=N, cache=tmp_path / "c")
    want = mip_scores(vecs["c"], [vecs["a"][1], vecs["b"][2]])[0]
    assert [h.id for h in hits] == [ids[j] for j in np.argsort(-want, kind="stable")]
    assert np.allclose([h.score for h in hits], np.sort(want)[::-1], atol=1e-4)
    # the cosine index of the same vectors fuses by the mean
    cix = Index.build(_space(root), load_manifest(root / "m.jsonl", kinds={m: "key" for m in MODS}),
                      tmp_path / "cix", cache=tmp_path / "c", ann=False)
    chits = cix.search(inputs={"a": ["r1"], "b": ["r2"]}, modality="c", k=N, cache=tmp_path / "c")
    q = _unit(vecs["a"][1] + vecs["b"][2])
    assert [h.id for h in chits] == [ids[j] for j in np.argsort(-(vecs["c"] @ q), kind="stable")]


def test_index_classify_agrees_with_zero_shot_in_a_symile_space(tmp_path):
    """Index.classify and evaluate.zero_shot both score MIP(item, prompt, missing...), on a space with
    a real text encoder, whose photos are scrambled by the missing sound embedding's sign pattern."""
    from anybind.encoders.base import get_encoder

    classes = ["dog", "bicycle", "violin", "mountain", "teapot"]
    E = get_encoder("text:minilm").encode([f"a {c}." for c in classes])
    d = E.shape[1]
    rng = np.random.default_rng(2)
    w = np.where(rng.random(d) < 0.5, -1.0, 1.0) / np.sqrt(d)
    ids = [f"p{i}" for i in range(20)]
    vecs = [E[i % 5] * np.sign(w) + 0.01 * rng.normal(size=d) for i in range(20)]
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    lines = [{"id": i, "split": "test", "photo": True, "labels": {"kind": classes[j % 5]}} for j, i in enumerate(ids)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False))
             for m in ("text", "photo")}
    sym = Space({"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"}, ident,
                info={"missing_embeddings": {"sound": w.tolist(), "photo": w.tolist(), "text": w.tolist()}})
    man = load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})
    zs = zero_shot(sym, man.records, "photo", "kind", classes=classes, cache=tmp_path / "c")
    assert zs["accuracy"] == 1.0
    ix = Index.build(sym, man, tmp_path / "ix", modalities=["photo"], cache=tmp_path / "c", ann=False)
    got = {r["id"]: r["classes"][0][0] for r in ix.classify(classes, modality="photo", k=1, cache=tmp_path / "c")}
    assert got == {i: classes[j % 5] for j, i in enumerate(ids)}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.randoms(use_true_random=False))
def test_the_query_rule_matches_the_mip_by_hand(n_items, n_mods, rnd):
    """Scorer.query: items of one modality averaged (weighted), modalities multiplied, the rest stand in."""
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    missing = {m: rng.normal(size=D).astype(np.float32) for m in "pqrs"}
    sc = Scorer(missing)
    mods = list("pqr")[:n_mods]
    parts = [(m, _unit(rng.normal(size=D))) for m in mods for _ in range(n_items)]
    w = rng.uniform(0.1, 2.0, len(parts))
    q = sc.query(parts, "s", w)
    want = np.ones(D, np.float32)
    for m in mods:
        rows = [i for i, (pm, _) in enumerate(parts) if pm == m]
        want = want * sum(w[i] * parts[i][1] for i in rows) / w[rows].sum()
    for m in "pqr":
        if m not in mods:
            want = want * missing[m]
    assert np.allclose(q, want, atol=1e-5)
    cos = Scorer().query(parts, "s", w)
    assert np.allclose(cos, sum(wi * v for wi, (_, v) in zip(w, parts)), atol=1e-5)


def test_the_trainers_val_score_is_the_spaces_score_in_a_symile_space(corpus, tmp_path):
    """Early stopping reads the space's own scorer: the trainer's val score of a Symile space is the mean of
    (R@1 + R@5 + R@10) / 3 that ``evaluate`` gives by MIP, both directions of every pair (not a copy of the product)."""
    from anybind.cache import FeatureCache
    from anybind.featureset import FeatureSet
    from anybind.train import val_score

    root, _, _, missing = corpus
    sym = _space(root, missing)
    man = load_manifest(root / "m.jsonl", kinds={m: "key" for m in MODS})
    fs = FeatureSet.from_manifests([man], sym.encoders, FeatureCache(tmp_path / "c"), progress=False)
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    got = val_score(sym.projectors, fs, fs.split_idx("test"), pairs, sym.scorer)
    res = evaluate(sym, man, split="test", cache=tmp_path / "c")
    want = np.mean([sum(res[f"{q}->{g}/R@{k}"] for k in (1, 5, 10)) / 3 for a, b in pairs for q, g in ((a, b), (b, a))])
    assert got == pytest.approx(want, abs=1e-12)
    cos = val_score(sym.projectors, fs, fs.split_idx("test"), pairs)  # no scorer: cosine
    assert cos != pytest.approx(got)

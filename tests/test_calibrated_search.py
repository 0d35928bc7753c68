"""Probabilities on search / classify results and fair mixed-modality ranking (issue 20)."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from anybind.calibrators import Calibration, fit_pair, pair_key
from anybind.cli import app
from anybind.index import Hit, Index, QueryError
from anybind.index.calibrated import rank_hits
from anybind.space import Space


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


def _planted(pos, neg, rng, n_pos=400, n_neg=4000):
    s = np.concatenate([rng.normal(pos, 0.05, n_pos), rng.normal(neg, 0.05, n_neg)])
    return fit_pair(s, np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)]))


class _Calibrated:
    def __init__(self, cal):
        self.calibration = cal


def test_rank_by_probability_undoes_a_planted_modality_gap():
    rng = np.random.default_rng(0)
    # the gap: text-text_fr pairs (translations) score high whether they match or not, text-image pairs low even
    # when they match
    cal = Calibration({pair_key("text", "text_fr"): _planted(0.85, 0.55, rng),
                       pair_key("text", "image"): _planted(0.40, 0.10, rng)})
    texts = [Hit(f"t{i}", "text_fr", 0.60 - 0.005 * i, "") for i in range(10)]  # unrelated texts
    images = [Hit(f"i{i}", "image", 0.42 - 0.02 * i, "") for i in range(10)]  # the matching images first
    by_score = rank_hits(_Calibrated(cal), texts + images, "text", 5)
    assert [h.modality for h in by_score] == ["text_fr"] * 5  # texts crowd out every image
    fair = rank_hits(_Calibrated(cal), texts + images, "text", 5, "probability")
    assert [h.id for h in fair[:3]] == ["i0", "i1", "i2"] and [h.rank for h in fair] == [1, 2, 3, 4, 5]
    probs = [h.probability for h in fair]
    assert probs == sorted(probs, reverse=True) and probs[0] > 0.9
    # a hit of a pair without calibration follows the calibrated ones
    odd = rank_hits(_Calibrated(cal), [Hit("a", "audio", 0.99, "")] + images[:2], "text", 3, "probability")
    assert [h.id for h in odd] == ["i0", "i1", "a"] and odd[2].probability is None


def test_calibrated_index_gives_probabilities_and_ranks_by_them(data):
    index = Index.open(data["index"])  # the space copy inside was calibrated by its fit
    assert index.space.calibration is not None
    hits = index.search(text="a dog", k=8, modality=["image", "audio"])
    assert all(0 < h.probability < 1 for h in hits)
    assert all("probability" in h.to_dict() for h in hits)
    # text hits of a text query: no calibrated pair, so no probability (never a made-up one)
    assert all(h.probability is None for h in index.search(text="a dog", k=3, modality="text"))
    fair = index.search(text="a dog", k=8, rank_by="probability", modality=["image", "audio"])
    probs = [h.probability for h in fair]
    assert probs == sorted(probs, reverse=True)
    # each hit's probability is the calibrator's reading of its score
    for h in fair:
        want = index.space.calibration.probability("text", h.modality, np.array([h.score]))[0]
        assert h.probability == pytest.approx(want)
    # classify: each class's probability beside its score (image items against text prompts)
    rows = index.classify(["dog", "cat", "flower"], modality="image", k=2)
    assert rows and all(len(r["probabilities"]) == 2 for r in rows)
    # no probability where it would be meaningless: a re-scored (rerank) search, a raw vector query
    assert all(h.probability is None for h in index.search(text="a dog", k=3, rerank="csls", modality="image"))
    assert all(h.probability is None for h in index.search(np.ones(index.dim, np.float32), k=3))
    with pytest.raises(QueryError, match="one modality"):
        index.search(np.ones(index.dim, np.float32), k=3, rank_by="probability")
    with pytest.raises(QueryError, match="rank_by"):
        index.search(text="a dog", k=3, rank_by="loudness")


def test_uncalibrated_space_has_no_probability_field(data, tmp_path):
    space = Space.load(data["space"])
    space.calibration = None
    index = Index.open(data["index"], space)
    hits = index.search(text="a dog", k=5, modality="image")
    assert hits and all("probability" not in h.to_dict() for h in hits)
    assert all("probabilities" not in r for r in index.classify(["dog", "cat"], modality="image", k=2))
    with pytest.raises(QueryError, match="not calibrated"):
        index.search(text="a dog", k=5, rank_by="probability")


def test_cli_json_and_service_carry_the_probability(data, tmp_path):
    res = CliRunner().invoke(app, ["search", str(data["index"]), "--text", "a dog", "-k", "4", "--json",
                                   "--rank-by", "probability", "-m", "image,audio"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert len(hits) == 4 and all(0 < h["probability"] < 1 for h in hits)
    bad = CliRunner().invoke(app, ["search", str(data["index"]), "--text", "a dog", "--rank-by", "loud"])
    assert bad.exit_code == 2
    from anybind.serve import create_app

    with TestClient(create_app(data["space"], data["index"])) as client:
        r = client.post("/search", json={"text": "a dog", "k": 4, "rank_by": "probability",
                                         "modality": ["image", "audio"]})
        assert r.status_code == 200, r.text
        ps = [h["probability"] for h in r.json()["hits"]]
        assert all(0 < p < 1 for p in ps) and ps == sorted(ps, reverse=True)
        assert "image-text" in client.get("/health").json()["calibrated"]  # the page offers 'rank by P(match)'
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        assert "probability" in schema["HitOut"]["properties"] and "rank_by" in schema["SearchRequest"]["properties"]


def test_the_upload_route_ranks_by_probability_too(data):
    from anybind.serve import create_app

    img = next(json.loads(line)["image"] for line in open(data["manifest"]) if "image" in json.loads(line))
    with TestClient(create_app(data["space"], data["index"])) as client:
        def post(**form):
            with open(img, "rb") as f:
                return client.post("/search/upload", files=[("files", ("q.png", f.read(), "image/png"))],
                                   data={"k": "6", "modality": ["text", "audio"], **form})

        fair, plain = post(rank_by="probability"), post()
        assert fair.status_code == 200 and plain.status_code == 200, (fair.text, plain.text)
        ps = [h["probability"] for h in fair.json()["hits"]]
        assert len(ps) == 6 and all(0 < p < 1 for p in ps) and ps == sorted(ps, reverse=True)
        scores = [h["score"] for h in plain.json()["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert post(rank_by="loudness").status_code == 422
        props = client.get("/openapi.json").json()["components"]["schemas"]
        upload = next(v for k, v in props.items() if k.startswith("Body_search_upload"))
        assert "rank_by" in upload["properties"]

"""Calibrated match probabilities (issue 20): the calibrators on synthetic scores, and a real small space."""

import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from anybind.calibration import calibrate, fit_calibration, measure_calibration
from anybind.calibrators import (
    balanced_weights,
    ece,
    fit_isotonic,
    fit_pair,
    fit_platt,
    pair_key,
    raw_probability,
)
from anybind.errors import SpaceError
from anybind.space import Space


def _logistic_sample(a, b, n, seed):
    rng = np.random.default_rng(seed)
    s = rng.uniform(-1, 1, n)
    y = rng.random(n) < 1 / (1 + np.exp(-(a * s + b)))
    return s, y


@settings(max_examples=15, deadline=None)
@given(a=st.floats(2, 12), b=st.floats(-3, 3), seed=st.integers(0, 1000))
def test_platt_recovers_a_known_logistic_link(a, b, seed):
    s, y = _logistic_sample(a, b, 40_000, seed)
    fa, fb = fit_platt(s, y)
    assert fa == pytest.approx(a, rel=0.12, abs=0.25)
    assert fb == pytest.approx(b, abs=0.25)


def test_balanced_fit_states_the_probability_at_prior_one_half():
    # class reweighting shifts a well-specified logistic intercept by log(w_pos / w_neg) exactly
    s, y = _logistic_sample(8.0, -4.0, 60_000, 1)
    a0, b0 = fit_platt(s, y)
    a1, b1 = fit_platt(s, y, balanced_weights(y))
    n_pos, n_neg = y.sum(), (~y).sum()
    assert a1 == pytest.approx(a0, rel=0.05)
    assert b1 - b0 == pytest.approx(np.log(n_neg / n_pos), abs=0.05)
    cal = fit_pair(s, y)
    # re-stated at the data's own base rate it gives back the unweighted fit
    p = cal.probability(np.array([-0.5, 0.0, 0.5]), prior=n_pos / len(y))
    want = 1 / (1 + np.exp(-(a0 * np.array([-0.5, 0.0, 0.5]) + b0)))
    np.testing.assert_allclose(p, want, atol=0.01)


def test_isotonic_is_monotone_and_calibrated():
    s, y = _logistic_sample(6.0, 0.0, 20_000, 2)
    xs, ys = fit_isotonic(s, y)
    assert np.all(np.diff(ys) >= 0) and np.all(np.diff(xs) >= 0)
    cal = fit_pair(s, y, "isotonic")
    s2, y2 = _logistic_sample(6.0, 0.0, 20_000, 3)
    w = balanced_weights(y2)
    assert ece(cal.probability(s2), y2, w) < 0.03


def test_threshold_for_precision_holds_on_fresh_data():
    rng = np.random.default_rng(0)

    def sample(n_pos, n_neg):
        s = np.concatenate([rng.normal(0.55, 0.12, n_pos), rng.normal(0.15, 0.12, n_neg)])
        return s, np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])

    cal = fit_pair(*sample(3000, 30_000))
    th = cal.threshold_for_precision(0.9)
    assert th is not None and 0.9 <= th["precision"] and 0 < th["recall"] < 1
    s, y = sample(3000, 3000)  # balanced: precision at the stated prior 0.5
    sel = s >= th["score"]
    assert (y[sel]).mean() >= 0.87
    rare = cal.threshold_for_precision(0.9, prior=0.05)  # a lower base rate needs a stricter threshold
    assert rare is not None and rare["score"] > th["score"] and rare["recall"] < th["recall"]
    with pytest.raises(ValueError):
        cal.threshold_for_precision(0.0)


@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


def test_fit_calibrates_on_the_val_split_and_the_space_keeps_it(data):
    space = Space.load(data["space"])  # fitted by Space.fit on a manifest with a val split
    assert space.calibration is not None and space.calibration.split == "val"
    assert set(space.calibration.pairs) >= {pair_key("image", "text"), pair_key("audio", "text")}
    texts = [r.values["text"] for r in data["records"][:4]]
    images = [r.values["image"] for r in data["records"][:4]]
    P = space.match_probability("text", texts, "image", images)
    assert P.shape == (4, 4) and np.all((P > 0) & (P < 1))
    assert np.diag(P).mean() > P[~np.eye(4, dtype=bool)].mean()


def test_calibration_lowers_the_ece_on_real_test_pairs(data, shared_cache):
    space = calibrate(Space.load(data["space"]), data["manifest"], cache=shared_cache)
    res = measure_calibration(space, data["manifest"], split="test", cache=shared_cache)
    it = res[pair_key("image", "text")]
    assert it["n_pos"] >= 5 and it["n_neg"] > it["n_pos"]
    assert it["ece"] < it["ece_raw"] - 0.05, it
    assert it["brier"] < it["brier_raw"], it


def test_save_load_round_trip_and_checks(data, shared_cache, tmp_path):
    space = Space.load(data["space"])
    space.calibration = fit_calibration(space, data["manifest"], method="isotonic", cache=shared_cache)
    space.save(tmp_path / "s")
    back = Space.load(tmp_path / "s")
    s = np.linspace(-0.2, 0.9, 12)
    for k, c in space.calibration.pairs.items():
        np.testing.assert_allclose(back.calibration.pairs[k].probability(s), c.probability(s))
    assert space.identity() == back.identity()  # the calibration does not change the embeddings
    cal_p = tmp_path / "s" / "calibration.json"
    doc = json.loads(cal_p.read_text())
    # an edit is caught by the digest
    doc["pairs"][pair_key("image", "text")]["ys"][-1] = 0.0
    cal_p.write_text(json.dumps(doc))
    with pytest.raises(SpaceError, match="digest"):
        Space.load(tmp_path / "s")
    # a calibration fitted for another space is refused
    doc = json.loads(cal_p.read_text())
    doc["space_identity"] = "0" * 24
    cal_p.write_text(json.dumps(doc))
    with pytest.raises(SpaceError, match="fitted for space"):
        Space.load(tmp_path / "s")
    # an uncalibrated space: no file, no calibration, match_probability refused in one line
    cal_p.unlink()
    bare = Space.load(tmp_path / "s")
    assert bare.calibration is None
    with pytest.raises(SpaceError, match="not calibrated"):
        bare.match_probability("text", ["a dog"], "image", [data["records"][0].values["image"]])
    # overwriting a calibrated space with a save is allowed (calibration.json is part of a space)
    space.save(tmp_path / "s2")
    space.save(tmp_path / "s2")
    shutil.rmtree(tmp_path / "s2")


def test_raw_probability_is_the_clipped_score():
    np.testing.assert_allclose(raw_probability(np.array([-0.3, 0.4, 1.2])), [0.0, 0.4, 1.0])


def test_a_pair_calibrated_on_few_positives_is_called_rough(data, shared_cache, caplog, monkeypatch):
    """A pair that few val records hold (Tux Paint's spoken descriptions: 2) is still calibrated, with a warning
    naming the manifest, the pair and the count; a pair with enough positives gets none."""
    import logging

    from anybind import calibration
    from anybind.data.manifest import load_manifest

    space = Space.load(data["space"])
    man = load_manifest(data["manifest"])
    n_pos = {k: c.n_pos for k, c in calibration.fit_calibration(space, man, cache=shared_cache).pairs.items()}
    few = sorted(set(n_pos.values()))[-1]  # the best-held pair is not rough, the others are
    monkeypatch.setattr(calibration, "FEW_POSITIVES", few)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anybind.calibration"):
        cal = calibration.fit_calibration(space, man, cache=shared_cache)
    rough = {k for k, c in cal.pairs.items() if c.n_pos < few}
    assert rough and rough != set(cal.pairs), n_pos
    warned = [r.getMessage() for r in caplog.records if "rough" in r.getMessage()]
    assert len(warned) == len(rough)
    for k in rough:
        assert any(k in w and str(man.path) in w and "\n" not in w for w in warned)


def test_val_records_whose_pairs_all_match_are_said_so_not_called_unshared(data, shared_cache, tux_dir, tmp_path):
    """Val records that share image and text but whose captions are all the same: every pair of them is a match
    (identical content), none a non-match to calibrate against; the one-line refusal says that and names the pair,
    not that no two modalities share 2 records (they share 3)."""
    from anybind.errors import DataError

    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:3]
    man = tmp_path / "same.jsonl"
    man.write_text("".join(json.dumps({"id": r["id"], "split": "val", "text": "A thing.",
                                       "image": str(tux_dir / r["image"])}) + "\n" for r in recs))
    with pytest.raises(DataError) as e:
        fit_calibration(Space.load(data["space"]), man, modalities=["image", "text"], cache=shared_cache)
    msg = str(e.value)
    assert "\n" not in msg and str(man) in msg and pair_key("image", "text") in msg and "match" in msg, msg
    assert "share 2 or more" not in msg, msg


def test_a_pair_left_out_for_all_matches_is_said_when_others_calibrate(data, shared_cache, tux_dir, tmp_path, caplog):
    """Val records holding image, audio and one caption for all: image|audio calibrates, image|text and audio|text
    (every pair a match) cannot; the calibration keeps the one and one warning line names the two, not a silent skip."""
    import logging

    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "audio" in r][:3]
    man = tmp_path / "same.jsonl"
    man.write_text("".join(json.dumps({"id": r["id"], "split": "val", "text": "A thing.", "audio": str(tux_dir / r["audio"]),
                                       "image": str(tux_dir / r["image"])}) + "\n" for r in recs))
    with caplog.at_level(logging.WARNING, logger="anybind.calibration"):
        cal = fit_calibration(Space.load(data["space"]), man, modalities=["image", "text", "audio"], cache=shared_cache)
    assert set(cal.pairs) == {pair_key("image", "audio")}
    said = [r.getMessage() for r in caplog.records if "is a match" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and str(man) in said[0], said
    assert pair_key("image", "text") in said[0] and pair_key("audio", "text") in said[0], said

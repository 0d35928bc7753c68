"""The label bridge's class anchors in progressive binding's ridge start (issue 16; BindConfig.bridge_anchors,
progressive_fit.ridge_start's ``anchors``): an image encoder with a label bridge (real EfficientNet-Lite0 + its
bridge) bound into a text-locked space of real Tux Paint stamps fits the bridge's 1000 class anchors as Space.fit's
start does, records them, and leaves every existing projector bit for bit as it was."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind import Space
from anybind.cache import FeatureCache
from anybind.cli import app
from anybind.errors import DataError
from anybind.recipe import ANCHOR_WEIGHT

from test_bridge_anchors import class_readings
from test_progressive_guard import BRIDGED, photo_pairs, text_locked_space

START = dict(epochs=0, hidden=16, seed=0, kernel_start=False, select_se=0)  # the start alone, linear, no SE rule


@pytest.fixture(scope="module")
def photos(tux_dir, tmp_path_factory):
    """60 real Tux Paint stamps (true pairs), each image as ``image`` and ``photo``, every fifth in val."""
    return photo_pairs(tux_dir, tmp_path_factory.mktemp("anchors-bind"), 60)


@pytest.fixture(scope="module")
def base(photos, shared_cache):
    """A text-locked image+text space (plain image encoder: no bridge) fitted on the stamps."""
    return text_locked_space(photos, shared_cache)


def add(base, photos, shared_cache, **kw):
    return base.add_modality("photo", BRIDGED, str(photos / "manifest.jsonl"), anchors=["text"], cache=shared_cache,
                             **{**START, **kw})


def photo_items(photos):
    rows = [json.loads(x) for x in (photos / "manifest.jsonl").read_text().splitlines()]
    return [r["photo"] for r in rows if r["split"] == "train"]


def assert_frozen(base, grown):
    """The progressive contract: every projector of ``base`` bit-identical in ``grown``."""
    for m, p in base.projectors.items():
        q = grown.projectors[m].state_dict()
        assert all(torch.equal(v, q[k]) for k, v in p.state_dict().items()), m


@pytest.fixture()
def never_encoded(monkeypatch):
    """Every feature encoding refused and recorded: a refusal comes before any."""
    calls = []

    def refuse(self, *a, **k):
        calls.append(a)
        raise RuntimeError("encoded")

    monkeypatch.setattr(FeatureCache, "encode", refuse)
    return calls


def test_add_modality_fits_the_anchors_with_the_bridge_prior_and_records_them(base, photos, shared_cache):
    anchored = add(base, photos, shared_cache, start_guard=False)
    plain = add(base, photos, shared_cache, start_guard=False, bridge_anchors=0.0)
    e, p = anchored.info["lineage"][-1], plain.info["lineage"][-1]
    assert e["ridge_start"]["photo"]["prior"] == "bridge"
    assert {k: e["ridge_start"]["photo"]["anchors"][k] for k in ("weight", "count")} == {"weight": ANCHOR_WEIGHT, "count": 1000}
    assert e["config"]["bridge_anchors"] == ANCHOR_WEIGHT  # None resolved: the recipe's weight with the bridge
    assert "anchors" not in p["ridge_start"]["photo"] and p["config"]["bridge_anchors"] == 0.0
    assert not torch.equal(anchored.projectors["photo"].linear.weight, plain.projectors["photo"].linear.weight)
    assert_frozen(base, anchored)
    assert_frozen(base, plain)


def test_anchors_keep_what_the_frozen_classifier_knew(base, photos, shared_cache, monkeypatch):
    """At a forced weak shrinkage the 48 pairs move the bridge block's map; the anchored start keeps each ImageNet
    class's reading nearer its prompt (and retrieves it at least as often), as Space.fit's does."""
    from anybind import ridge

    real = ridge.ridge_select
    monkeypatch.setattr(ridge, "ridge_select", lambda *a, **k: real(*a, **{**k, "alphas": (0.1,)}))
    anchored = add(base, photos, shared_cache, start_guard=False)
    plain = add(base, photos, shared_cache, start_guard=False, bridge_anchors=0.0)
    assert anchored.info["lineage"][-1]["ridge_start"]["photo"]["alpha"] == 0.1
    assert anchored.info["lineage"][-1]["ridge_start"]["photo"]["anchors"]["in_start"] is True  # the anchored ridge
    items = photo_items(photos)
    (r_a, cos_a), (r_p, cos_p) = (class_readings(s, shared_cache, items, "photo") for s in (anchored, plain))
    assert r_a >= r_p and cos_a > cos_p + 0.02, (r_a, cos_a, r_p, cos_p)


def test_a_replaced_encoder_fits_anchors_only_with_the_locked_text_among_its_targets(base, photos, shared_cache,
                                                                                   caplog):
    """replace_encoder's own targets are the old image embeddings, not the locked text the bridge maps into: no
    anchors, recorded with a note and said in one line; with ``anchors=["text"]`` they are fitted."""
    data = str(photos / "manifest.jsonl")
    with caplog.at_level("INFO", logger="anybind"):
        own = base.replace_encoder("image", BRIDGED, data, cache=shared_cache, **START)
    rec = own.info["lineage"][-1]["ridge_start"]["image"]
    assert rec["prior"] == "bridge" and rec["anchors"]["count"] == 0 and "'text'" in rec["anchors"]["note"]
    assert rec["anchors"]["in_start"] is False
    assert any("'image'" in r.getMessage() and "no class anchors" in r.getMessage() for r in caplog.records)
    both = base.replace_encoder("image", BRIDGED, data, ["text"], cache=shared_cache, **START)
    assert {k: both.info["lineage"][-1]["ridge_start"]["image"]["anchors"][k] for k in ("weight", "count")} == {
        "weight": ANCHOR_WEIGHT, "count": 1000}
    assert torch.equal(both.projectors["text"].linear.weight, base.projectors["text"].linear.weight)


@pytest.mark.parametrize("how", ["replace", "add-anchors", "add-data"])
def test_a_weight_given_for_anchors_the_targets_cannot_take_is_refused_before_any_encoding(base, photos, tmp_path,
                                                                                           how, never_encoded):
    """A weight the user gives (not the recipe's, which gets a note) for anchors whose targets hold no locked 'text'
    embeddings -- replace_encoder's own old image embeddings; anchors without 'text'; data without text -- is
    refused in one line naming what to do, before any feature is encoded (as init='random' is)."""
    data = str(photos / "manifest.jsonl")
    if how == "replace":
        call = lambda: base.replace_encoder("image", BRIDGED, data, bridge_anchors=5, **START)  # noqa: E731
    elif how == "add-anchors":
        call = lambda: base.add_modality("photo", BRIDGED, data, anchors=["image"], bridge_anchors=5)  # noqa: E731
    else:
        rows = [{k: v for k, v in json.loads(x).items() if k != "text"} for x in open(data).read().splitlines()]
        data = tmp_path / "no-text.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        call = lambda: base.add_modality("photo", BRIDGED, str(data), bridge_anchors=5)  # noqa: E731
    with pytest.raises(DataError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg and never_encoded == [], msg
    assert "bridge_anchors=5" in msg and "'text'" in msg and "anchors=['text']" in msg, msg
    if how == "add-data":
        assert str(data) in msg, msg


def test_the_cli_refuses_a_replace_with_anchors_it_cannot_fit(base, photos, tmp_path, never_encoded):
    base.save(tmp_path / "base")
    res = CliRunner().invoke(app, ["bind", str(tmp_path / "base"), "--replace", f"image={BRIDGED}", "--data",
                                   str(photos / "manifest.jsonl"), "--bridge-anchors", "5", "--epochs", "0",
                                   "--out", str(tmp_path / "r")], env={"COLUMNS": "250"})
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    said = [x for x in res.output.splitlines() if "bridge_anchors=5" in x]
    assert len(said) == 1 and "--anchors text" in said[0], res.output
    assert not (tmp_path / "r").exists() and never_encoded == []


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "3"])
def test_a_weight_that_is_not_a_non_negative_number_is_refused_in_one_line(base, photos, bad, never_encoded):
    with pytest.raises(DataError, match="BindConfig.bridge_anchors must be a non-negative number") as e:
        add(base, photos, None, bridge_anchors=bad)
    assert "\n" not in str(e.value) and never_encoded == []


@pytest.mark.parametrize("kw, words", [
    ({"ridge_prior": "zero"}, "bridge_anchors=2.0 fits the label bridge's class anchors.*ridge_prior='zero'"),
    ({"init": "random"}, "bridge_anchors > 0 are the ridge start's: use init='ridge'"),
])
def test_anchors_that_cannot_apply_are_refused_not_ignored(base, photos, kw, words, never_encoded):
    with pytest.raises(DataError, match=words) as e:
        add(base, photos, None, bridge_anchors=2.0, **kw)
    assert "\n" not in str(e.value) and never_encoded == []


def test_anchors_for_an_encoder_without_a_bridge_are_refused(base, photos, never_encoded):
    with pytest.raises(DataError, match="bridge_anchors > 0 need a label bridge, and image:efficientnet-lite0 has "
                                        "none into the locked 'text' encoder") as e:
        base.add_modality("photo", "image:efficientnet-lite0", str(photos / "manifest.jsonl"), anchors=["text"],
                          bridge_anchors=1.0)
    assert "\n" not in str(e.value) and never_encoded == []


def test_the_cli_flag_reaches_the_record(base, photos, shared_cache, tmp_path):
    base.save(tmp_path / "base")
    cmd = ["bind", str(tmp_path / "base"), "--add", f"photo={BRIDGED}", "--data", str(photos / "manifest.jsonl"),
           "--anchors", "text", "--epochs", "0", "--seed", "0", "--no-kernel-start", "--cache", str(shared_cache)]
    res = CliRunner().invoke(app, cmd + ["--bridge-anchors", "1.5", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    e = Space.load(tmp_path / "a").info["lineage"][-1]
    assert {k: e["ridge_start"]["photo"]["anchors"][k] for k in ("weight", "count")} == {"weight": 1.5, "count": 1000}
    res = CliRunner().invoke(app, cmd + ["--bridge-anchors", "-1", "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "--bridge-anchors" in res.output and not (tmp_path / "b").exists()
    # the flag's refusal names what the flag takes: a number (left out is the recipe's choice; "None" parses as none)
    assert "non-negative number" in res.output and "None" not in res.output, res.output


def test_a_frame_pooling_projector_gets_no_anchors_and_a_note(monkeypatch):
    """A clip of a label-bridge image encoder pooled by attention: its input is a frame sequence, not one feature
    row, so no class anchors -- recorded with a note (said by train_projector), the normal equations untouched."""
    from anybind.bridge_start import bridge_anchors
    from anybind.progressive_fit import Target, anchor_equations
    from anybind.projectors import Projector, ProjectorConfig
    from video_helpers import fake_bridge

    fake_bridge(monkeypatch)
    x = np.random.default_rng(0).normal(size=(20, 3 * 17)).astype(np.float32)
    pr = Projector(ProjectorConfig(in_dim=3 * 17, out_dim=6, frames=3, kind="linear")).fit_stats(x)
    spec = "video:frames(image:fake+bridge)@fps=1,max=3,pool=attn"
    rows = np.arange(20)
    text = Target("text", rows, rows, np.zeros((20, 6), np.float32), x)
    Ga, Ra, rec = anchor_equations(pr, [x], torch.zeros(6, dtype=torch.float64),
                                   lambda p: bridge_anchors(spec, "text:fake", p), ANCHOR_WEIGHT, "text", {"text": text})
    assert Ga == Ra == 0.0 and rec == {"weight": ANCHOR_WEIGHT, "count": 0, "note": "a frame-pooling projector"}

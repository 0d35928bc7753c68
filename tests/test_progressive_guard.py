"""Progressive binding's ridge start is Space.fit's (issue 16, "training never loses to the training-free start"):
an image encoder whose label bridge maps into the space's locked text encoder is shrunk towards that bridge, and the
start guard keeps the bridge itself when the training pairs do not beat it on val; where no bridge exists the start
is the one progressive binding always had, weight for weight."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from anybind import Space, load_manifest
from anybind import progressive_fit
from anybind.cli import app
from anybind.errors import DataError
from anybind.loop import GUARD_ALPHAS, RIDGE_ALPHAS, ridge_select
from anybind.metrics import pair_recalls
from anybind.ridge import start_line

from test_progressive import BIND_FAST, FAST, three_views

BRIDGED = "image:efficientnet-lite0+bridge"
TINY = dict(epochs=4, patience=4, hidden=16, seed=0, select_se=0)  # select_se=0: the best val choices, fine-tuned


@pytest.fixture(scope="module")
def tux_photos(tux_dir, tmp_path_factory):
    """40 real Tux Paint stamps, each image twice: ``image`` (bound in the base space) and ``photo`` (bound later,
    through text); every train record's text is another's (a derangement), so the training pairs teach nothing;
    val keeps its true pairs."""
    return photo_pairs(tux_dir, tmp_path_factory.mktemp("pguard"), 40, shuffle=True, audio=True)


def photo_pairs(tux_dir, folder, n: int, shuffle: bool = False, audio: bool = False):
    """``folder`` with a manifest of the first ``n`` Tux Paint stamps (those with a sound: ``audio``), each image as
    ``image`` and ``photo``, every fifth in val; ``shuffle``: every train text another's (7 places on)."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "audio" in r or not audio][:n]
    rows = [{"id": r["id"], "split": "val" if i % 5 == 0 else "train", "text": r["text"],
             "image": str(tux_dir / r["image"]), "photo": str(tux_dir / r["image"])} for i, r in enumerate(recs)]
    train = [r for r in rows if r["split"] == "train"]
    texts = [r["text"] for r in train]
    for i, r in enumerate(train if shuffle else ()):
        r["text"] = texts[(i + 7) % len(texts)]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def text_locked_space(folder, cache, **kw):
    """A text-locked image+text space (plain image encoder: no bridge) fitted on ``folder``'s manifest."""
    man = load_manifest(folder / "manifest.jsonl", modalities=["image", "text"])
    return Space.fit(man, modalities=["image", "text"], encoders={"image": "image:efficientnet-lite0"}, lock="text",
                     init="ridge", recipe="plain", cache=cache, progress=False, epochs=4, hidden=16, seed=0, **kw)


@pytest.fixture(scope="module")
def text_locked(tux_photos, shared_cache):
    """A text-locked image+text space (plain image encoder) fitted on the shuffled pairs."""
    return text_locked_space(tux_photos, shared_cache, patience=4)


def photo_val_score(space, tux_photos, cache) -> float:
    """progressive binding's val score (photo<->text, both directions), recomputed from the saved-able space."""
    rows = [json.loads(x) for x in (tux_photos / "manifest.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    fp = space.features("photo", [r["photo"] for r in val], cache=cache)
    ft = space.features("text", [r["text"] for r in val], cache=cache)
    e = F.normalize(torch.from_numpy(space.project("photo", fp)), dim=-1).numpy()
    g = space.project("text", ft).astype(np.float32)
    r1, r2 = pair_recalls(e, g, query_keys=fp, gallery_keys=ft), pair_recalls(g, e, query_keys=ft, gallery_keys=fp)
    return float(np.mean([(r["R@1"] + r["R@5"] + r["R@10"]) / 3 for r in (r1, r2)]))


def test_shuffled_pairs_the_guarded_add_modality_never_ends_below_the_bridge(text_locked, tux_photos, shared_cache,
                                                                              tmp_path):
    data = str(tux_photos / "manifest.jsonl")
    guarded = text_locked.add_modality("photo", BRIDGED, data, anchors=["text"], cache=shared_cache, **TINY)
    e = guarded.info["lineage"][-1]
    assert e["config"]["ridge_prior"] == "bridge" and e["config"]["start_guard"] is True  # the default here
    rec = e["ridge_start"]["photo"]
    assert rec["prior"] == "bridge" and (rec["alpha"] is None or rec["alpha"] in GUARD_ALPHAS)
    assert (rec["alpha"] is None) == (rec["guard"]["kept"] == "start")
    start = rec["guard"]["start_val"]
    assert photo_val_score(guarded, tux_photos, shared_cache) >= start - 1e-6
    # the CLI's knob: the ridge start (still towards the bridge) whatever val says, which ends below the bridge (the
    # kernel start off too: its linear map is the bridge itself, which it would keep where it beats the ridge)
    base = tmp_path / "base"
    text_locked.save(base)
    res = CliRunner().invoke(app, ["bind", str(base), "--add", f"photo={BRIDGED}", "--data", data, "--anchors", "text",
                                   "--no-start-guard", "--no-kernel-start", "--epochs", "4",
                                   "--cache", str(shared_cache),
                                   "--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    plain = Space.load(tmp_path / "plain")
    p = plain.info["lineage"][-1]
    assert p["config"]["start_guard"] is False and "guard" not in p["ridge_start"]["photo"]
    assert p["ridge_start"]["photo"]["prior"] == "bridge" and p["ridge_start"]["photo"]["alpha"] in RIDGE_ALPHAS
    assert photo_val_score(plain, tux_photos, shared_cache) < start
    # a zero prior is progressive binding's old start: no guard to record
    zero = text_locked.add_modality("photo", BRIDGED, data, anchors=["text"], cache=shared_cache, ridge_prior="zero",
                                    **TINY)
    assert zero.info["lineage"][-1]["ridge_start"]["photo"] == {"alpha": zero.info["lineage"][-1]["training"]["ridge_alpha"],
                                                                "prior": "zero"}


@pytest.mark.parametrize("n", [300, 20])  # 300: the primal system; 20 records (14 train pairs < 20 dims): the dual
def test_without_a_bridge_the_weights_are_mains_bit_for_bit(tmp_path, monkeypatch, n):
    mans, specs = three_views(tmp_path, n=n)
    space = Space.fit(mans["ab"], encoders={"sa": specs["sa"], "sb": specs["sb"]}, cache=tmp_path / "c", seed=0, **FAST)

    def bind(sp):
        added = sp.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=tmp_path / "c", **BIND_FAST)
        return added, sp.replace_encoder("sb", specs["sb2"], mans["b"], cache=tmp_path / "c", **BIND_FAST)

    new = bind(space)
    calls = []

    def main_start(G, R, pairs, score, *, W0=None, guard=False, back=None, **kw):
        """main's start before it shared Space.fit's (d0963dd): ridge_select over RIDGE_ALPHAS, nothing else"""
        assert W0 is None and not guard
        calls.append(back is None)  # the primal system, or the dual where there are more features than pairs
        return (*ridge_select(G, R, pairs, score, back=back), None)

    monkeypatch.setattr(progressive_fit, "prior_ridge", main_start)
    ref = bind(space)
    assert calls == [n == 300] * 2  # main chose the smaller system: primal at 300 records, dual at 20
    for a, b, m in ((new[0], ref[0], "sc"), (new[1], ref[1], "sb")):
        sa, sb = a.projectors[m].state_dict(), b.projectors[m].state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items()), m
        assert a.info["lineage"][-1]["ridge_start"] == {m: {"alpha": b.info["lineage"][-1]["training"]["ridge_alpha"],
                                                            "prior": "zero"}}
        assert a.info["lineage"][-1]["config"]["start_guard"] is False


def test_without_a_prior_the_start_is_ridge_select_on_the_old_grid_guard_or_not():
    """prior_ridge with no prior is main's ridge_select over RIDGE_ALPHAS (primal or dual), weight for weight: a score
    that prefers the strongest shrinkage still stops at the grid's top, never on the guard's path."""
    from anybind.loop import prior_ridge

    g = torch.Generator().manual_seed(0)
    Z, T = torch.randn(12, 30, generator=g, dtype=torch.float64), torch.randn(12, 4, generator=g, dtype=torch.float64)
    for G, R, back in ((Z.T @ Z, Z.T @ T, None), (Z @ Z.T, T, lambda S: Z.T @ S)):  # 30 features > 12 pairs: dual
        for guard in (False, True):
            seen = []

            def score(W):
                seen.append(W)
                return -float(W.norm())

            alpha, W, rec = prior_ridge(G, R, 12, score, guard=guard, back=back)
            ref_alpha, ref_W = ridge_select(G, R, 12, lambda W: -float(W.norm()), back=back)
            assert rec is None and len(seen) == len(RIDGE_ALPHAS) and alpha == ref_alpha == RIDGE_ALPHAS[-1]
            assert torch.equal(W, ref_W)


def test_a_guard_or_bridge_with_no_bridge_is_refused_in_one_line(tmp_path):
    mans, specs = three_views(tmp_path, n=60)
    space = Space.fit(mans["ab"], encoders={"sa": specs["sa"], "sb": specs["sb"]}, cache=tmp_path / "c", seed=0, **FAST)
    for kw in ({"start_guard": True}, {"ridge_prior": "bridge"}):
        with pytest.raises(DataError, match="has none into this space .no locked modality.") as e:
            space.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=tmp_path / "c", **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="start_guard=True falls back on the label bridge"):
        space.add_modality("sc", specs["sc"], mans["cb"], ridge_prior="zero", start_guard=True)
    with pytest.raises(DataError, match="use init='ridge'"):
        space.add_modality("sc", specs["sc"], mans["cb"], init="random", start_guard=True)
    res = CliRunner().invoke(app, ["bind", "--help"], env={"COLUMNS": "200"})  # at 80 columns rich cuts the names
    assert all(f in res.output for f in ("--start-guard", "--no-start-guard", "--kernel-start", "--no-kernel-start"))


def test_the_refusal_names_why_the_space_has_no_lock_to_bridge_into(tmp_path):
    """Where the space has a locked modality but not one the new encoder could bridge into, the one-line refusal
    says which case it is (the replaced lock itself; two locked modalities), not "no locked modality"."""
    import copy

    from anybind.progressive_start import start_prior
    from anybind.progressive_fit import BindConfig

    mans, specs = three_views(tmp_path, n=60)
    space = Space.fit(mans["ab"], encoders={"sa": specs["sa"], "sb": specs["sb"]}, lock="sb", init="ridge",
                      cache=tmp_path / "c", seed=0, **{**FAST, "epochs": 2})
    assert space.projectors["sb"].cfg.kind == "identity"
    with pytest.raises(DataError, match="its only locked modality is 'sb', the one replaced") as e:
        space.replace_encoder("sb", specs["sb2"], mans["b"], cache=tmp_path / "c", start_guard=True)
    assert "\n" not in str(e.value)
    two = copy.copy(space)  # a pair of towers in one space (anybind.pairs): both locked
    two.projectors = {**space.projectors, "sa": space.projectors["sb"]}
    with pytest.raises(DataError, match="locked modalities 'sa', 'sb': not a single one"):
        start_prior(two, "sc", specs["sc"], BindConfig(ridge_prior="bridge"))


def test_with_no_val_pairs_the_unchecked_guard_is_said(text_locked, tux_photos, shared_cache, tmp_path, caplog):
    """No val pairs: the guard cannot check the ridge against the bridge; binding says so (as Space.fit does),
    the lineage records it, and the ridge start is kept."""
    rows = [json.loads(x) for x in (tux_photos / "manifest.jsonl").read_text().splitlines()]
    data = tmp_path / "all_train.jsonl"
    data.write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="anybind"):
        sp = text_locked.add_modality("photo", BRIDGED, str(data), anchors=["text"], cache=shared_cache, **TINY)
    rec = sp.info["lineage"][-1]["ridge_start"]["photo"]
    assert rec["guard"]["kept"] == "ridge" and "no val pairs" in rec["guard"]["note"]
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "start guard" in r.getMessage()]
    assert len(said) == 1 and "'photo'" in said[0] and "no val pairs" in said[0] and "\n" not in said[0]


def test_binding_logs_space_fits_start_line(text_locked, tux_photos, shared_cache, caplog):
    """add_modality with a label bridge says what the start finally is in Space.fit's one line (ridge.start_line),
    never the old "start guard: ... starts at its label bridge" line beside it."""
    with caplog.at_level("INFO", logger="anybind"):
        sp = text_locked.add_modality("photo", BRIDGED, str(tux_photos / "manifest.jsonl"), anchors=["text"],
                                      cache=shared_cache, **TINY)
    rec = sp.info["lineage"][-1]["ridge_start"]["photo"]
    lines = [r.getMessage() for r in caplog.records]
    assert [x for x in lines if x.startswith("start: 'photo' ")] == [
        "start: 'photo' " + start_line(rec["guard"], rec.get("kernel"))]
    assert rec["guard"]["kept"] == "start" and "its label bridge (val" in start_line(rec["guard"], rec.get("kernel"))
    assert not [x for x in lines if x.startswith("start guard: 'photo' starts")]

"""Progressive binding: add a modality to a frozen space, swap an encoder; bit-identical guarantee, lineage, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from anybind import Space, load_manifest
from anybind.cli import app
from anybind.errors import DataError, SpaceError
from anybind.evaluate import evaluate

SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
FAST = dict(epochs=40, patience=10, hidden=64, dim=32, progress=False)
BIND_FAST = dict(epochs=30, patience=8, hidden=64, select_se=0)  # select_se=0: fine-tuned, its best val epoch (as before the small-val rule)


def three_views(tmp_path, n=300, seed=0):
    """Three 'modalities' as noisy views of one latent (vectors: encoders) and a 4th view to swap in for b."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for name, d in (("sa", 40), ("sb", 30), ("sc", 20), ("sb2", 24)):
        X = z @ rng.normal(size=(12, d)) + 0.8 * rng.normal(size=(n, d))
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"

    def manifest(fname, fields):
        with open(tmp_path / fname, "w") as f:
            for i, rid in enumerate(ids):
                f.write(json.dumps({"id": str(rid), "split": SPLIT_CYCLE[i % 10], **{k: True for k in fields}}) + "\n")
        return tmp_path / fname

    return {
        "ab": manifest("ab.jsonl", ["sa", "sb"]),  # the original space's data
        "cb": manifest("cb.jsonl", ["sc", "sb"]),  # the new modality, paired with b only
        "c": manifest("c.jsonl", ["sc"]),  # the new modality alone
        "abc": manifest("abc.jsonl", ["sa", "sb", "sc"]),  # evaluation: every pair
        "b": manifest("b.jsonl", ["sb"]),  # b alone (to swap its encoder)
    }, specs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prog")
    mans, specs = three_views(tmp)
    space = Space.fit(mans["ab"], encoders={"sa": specs["sa"], "sb": specs["sb"]}, cache=tmp / "c", seed=0, **FAST)
    return tmp, mans, specs, space


def _kinds(specs):
    return {k: "key" for k in specs}


def test_add_modality_leaves_existing_projectors_bit_identical(base):
    tmp, mans, specs, space = base
    ids = [f"r{i}" for i in range(300)]
    before = {m: space.embed(m, ids, cache=tmp / "c") for m in ("sa", "sb")}
    space.save(tmp / "sp1")
    space2 = space.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=tmp / "c", **BIND_FAST)
    assert space.modalities == ["sa", "sb"]  # the original is not modified
    assert space2.modalities == ["sa", "sb", "sc"] and space2.dim == space.dim
    space2.save(tmp / "sp2")
    loaded = Space.load(tmp / "sp2")
    for m in ("sa", "sb"):
        assert np.array_equal(before[m], space2.embed(m, ids, cache=tmp / "c"))
        assert np.array_equal(before[m], loaded.embed(m, ids, cache=tmp / "c"))
    # the saved tensors of every old projector (and the temperature) are identical, byte for byte
    w1 = load_file(str(tmp / "sp1" / "projectors.safetensors"))
    w2 = load_file(str(tmp / "sp2" / "projectors.safetensors"))
    assert set(w1) < set(w2) and any(k.startswith("sc.") for k in w2)
    for k, v in w1.items():
        assert v.dtype == w2[k].dtype and torch.equal(v, w2[k]), k
    assert space2.encoders["sc"] == specs["sc"] and space2.identities["sc"].startswith("vectors|sha256=")


def test_lineage_records_what_was_added_from_which_data(base):
    tmp, mans, specs, space = base
    space2 = space.add_modality("sc", specs["sc"], mans["cb"], cache=tmp / "c", **BIND_FAST)
    space2.save(tmp / "sp-lin")
    lin = json.loads((tmp / "sp-lin" / "space.json").read_text())["info"]["lineage"]
    assert [e["event"] for e in lin] == ["fit", "add_modality"]
    e = lin[-1]
    assert e["modality"] == "sc" and e["encoder"] == specs["sc"]
    assert e["anchors"] == ["sb"]  # the default: every bound modality the data pairs with it
    assert e["pairs"]["sb"] == {"train": 210, "val": 30}
    man = load_manifest(mans["cb"], kinds=_kinds(specs))
    assert e["data"] == [{"manifest": str(mans["cb"]), "fingerprint": man.fingerprint(["sb", "sc"]), "records": 300}]
    assert e["base_space"] == space.identity() and e["frozen"] == ["sa", "sb"]
    assert e["training"]["best_epoch"] >= 0 and e["config"]["init"] == "ridge" and e["time"]
    # a second addition appends; the first entries are kept
    space3 = space2.replace_encoder("sb", specs["sb2"], mans["b"], cache=tmp / "c", **BIND_FAST)
    assert [x["event"] for x in space3.info["lineage"]] == ["fit", "add_modality", "replace_encoder"]
    assert space3.info["lineage"][-1]["previous_encoder"] == specs["sb"]
    assert len(space2.info["lineage"]) == 2  # space2 itself is not modified


def test_emergent_retrieval_through_the_anchor(base):
    """c was paired only with b; a<->c (never paired) retrieves far above chance on the test split."""
    tmp, mans, specs, space = base
    space2 = space.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=tmp / "c", **BIND_FAST)
    res = evaluate(space2, load_manifest(mans["abc"], kinds=_kinds(specs)), cache=tmp / "c")
    n = res["sa->sc/n"]
    assert n == 60
    for d in ("sa->sc", "sc->sa", "sc->sb"):
        assert res[f"{d}/R@1"] > 8 / n and res[f"{d}/R@10"] > 0.6, (d, res[f"{d}/R@1"], res[f"{d}/R@10"])


def test_data_sharing_no_modality_is_a_clear_error(base):
    tmp, mans, specs, space = base
    with pytest.raises(DataError, match="shares no modality with the space"):
        space.add_modality("sc", specs["sc"], mans["c"], cache=tmp / "c")
    with pytest.raises(SpaceError, match="already bound"):
        space.add_modality("sb", specs["sc"], mans["cb"], cache=tmp / "c")
    with pytest.raises(SpaceError, match="not bound"):
        space.add_modality("sc", specs["sc"], mans["cb"], anchors=["nope"], cache=tmp / "c")
    with pytest.raises(SpaceError, match="not bound"):
        space.replace_encoder("sc", specs["sc"], mans["cb"], cache=tmp / "c")
    with pytest.raises(TypeError, match="unknown option"):
        space.add_modality("sc", specs["sc"], mans["cb"], cache=tmp / "c", lock="sb")


def test_replace_encoder_lands_where_the_old_space_was(base):
    tmp, mans, specs, space = base
    man = load_manifest(mans["ab"], kinds=_kinds(specs))
    before = evaluate(space, man, cache=tmp / "c")
    ids = [f"r{i}" for i in range(300)]
    new = space.replace_encoder("sb", specs["sb2"], mans["b"], cache=tmp / "c", **BIND_FAST)
    assert new.encoders["sb"] == specs["sb2"] and space.encoders["sb"] == specs["sb"]
    assert np.array_equal(space.embed("sa", ids, cache=tmp / "c"), new.embed("sa", ids, cache=tmp / "c"))
    # the new b embeddings sit near the old ones of the same items (test split: never trained on)
    test_ids = [r.id for r in man.split("test")]
    old_b, new_b = space.embed("sb", test_ids, cache=tmp / "c"), new.embed("sb", test_ids, cache=tmp / "c")
    assert np.mean(np.sum(old_b * new_b, 1)) > 0.5
    after = evaluate(new, man, cache=tmp / "c")
    # a never saw b2 paired with a, yet retrieves through it far above chance (1/60)
    assert after["sa->sb/R@10"] > 0.5 and after["sa->sb/R@10"] > 0.6 * before["sa->sb/R@10"]


def test_cli_bind_add_and_errors(base):
    tmp, mans, specs, space = base
    space.save(tmp / "sp-cli")
    runner = CliRunner()
    r = runner.invoke(app, ["bind", str(tmp / "sp-cli"), "--add", f"sc={specs['sc']}", "--data", str(mans["cb"]),
                            "--anchors", "sb", "--out", str(tmp / "sp-cli2"), "--epochs", "5", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    assert "add_modality sc=" in r.output
    loaded = Space.load(tmp / "sp-cli2")
    assert loaded.modalities == ["sa", "sb", "sc"] and loaded.info["lineage"][-1]["anchors"] == ["sb"]
    r = runner.invoke(app, ["bind", str(tmp / "sp-cli"), "--add", f"sc={specs['sc']}", "--data", str(mans["c"]),
                            "--out", str(tmp / "sp-cli3"), "--cache", str(tmp / "c")])
    assert r.exit_code == 2 and "shares no modality" in r.output and "Traceback" not in r.output
    assert not (tmp / "sp-cli3").exists()


def test_training_free_dim_chosen_on_val_and_svd_reuse_is_exact(tmp_path):
    """Item 2 of the issue: Procrustes / CCA pick their subspace width on val; reusing one SVD per k changes nothing."""
    from anybind.align import _fit_maps
    from anybind.cache import FeatureCache
    from anybind.train import FeatureSet

    mans, specs = three_views(tmp_path)
    man = load_manifest(mans["abc"], kinds=_kinds(specs))
    fs = FeatureSet.from_manifests([man], {m: specs[m] for m in ("sa", "sb", "sc")}, FeatureCache(tmp_path / "c"), progress=False)
    train = fs.split_idx("train")
    for method in ("procrustes", "cca"):
        sp = Space.fit(man, encoders={m: specs[m] for m in ("sa", "sb", "sc")}, cache=tmp_path / "c", method=method,
                       dims=(4, 8, 16), progress=False)
        by_dim = sp.info["training"]["val_score_by_dim"]
        assert set(by_dim) == {"4", "8", "16"}
        best = max(by_dim, key=lambda k: (by_dim[k], -int(k)))
        assert sp.config["dim"] == sp.dim <= int(best)
        res = evaluate(sp, man, cache=tmp_path / "c")
        assert res["sa->sc/R@1"] > 10 / res["sa->sc/n"]
        memo: dict = {}
        for k in (16, 4, 8):
            a = _fit_maps(fs, train, "sa", fs.modalities, method, k, 0.1, memo)
            b = _fit_maps(fs, train, "sa", fs.modalities, method, k, 0.1, None)
            assert all(np.array_equal(a[m].W, b[m].W) for m in a)


def test_cli_training_free_honours_dim_when_given(tmp_path):
    """`anybind fit --method procrustes`: the width is chosen on val unless --dim names one."""
    mans, specs = three_views(tmp_path)
    enc = [x for m in ("sa", "sb", "sc") for x in ("-e", f"{m}={specs[m]}")]
    runner = CliRunner()
    for dim, out in ((None, "auto"), (8, "fixed")):
        args = ["fit", str(mans["abc"]), *enc, "--method", "procrustes", "--out", str(tmp_path / out),
                "--cache", str(tmp_path / "c")] + (["--dim", str(dim)] if dim else [])
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    auto, fixed = Space.load(tmp_path / "auto"), Space.load(tmp_path / "fixed")
    assert fixed.dim == 8 and set(fixed.info["training"]["val_score_by_dim"]) == {"8"}
    assert auto.dim == 16 and set(auto.info["training"]["val_score_by_dim"]) == {"16"}  # 16..256, capped by 20-d features


@pytest.fixture(scope="module")
def tux_sounds(tux_dir, tmp_path_factory):
    """The 40 stamps with a sound that test_end_to_end's slice starts with (one session encodes them once)."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    out = tmp_path_factory.mktemp("psounds") / "manifest.jsonl"
    with open(out, "w") as f:
        for r in [r for r in recs if "audio" in r][:40]:
            keep = {k: v for k, v in r.items() if k in ("id", "text", "image", "audio")}
            for k in ("image", "audio"):
                keep[k] = str(tux_dir / keep[k])
            keep["split"] = "val" if len(keep["id"]) % 7 == 0 else "train"
            f.write(json.dumps(keep) + "\n")
    return out


def test_real_tuxpaint_add_audio_through_text(tux_sounds, shared_cache):
    """Real encoders: image+text space, then sound bound from sound<->text pairs only; image<->sound emerges."""
    man = load_manifest(tux_sounds, modalities=["image", "text", "audio"])
    base = Space.fit(man, modalities=["image", "text"], encoders={"image": "image:efficientnet-lite0+bridge"},
                     lock="text", init="ridge", cache=shared_cache, epochs=5, progress=False)
    prog = base.add_modality("audio", "audio:aisfx", man, anchors=["text"], cache=shared_cache, epochs=20)
    imgs = [r.values["image"] for r in man.records]
    texts = [r.values["text"] for r in man.records]
    assert np.array_equal(base.embed("image", imgs, cache=shared_cache), prog.embed("image", imgs, cache=shared_cache))
    assert np.array_equal(base.embed("text", texts, cache=shared_cache), prog.embed("text", texts, cache=shared_cache))
    e = prog.info["lineage"][-1]
    assert e["anchors"] == ["text"] and e["pairs"]["text"]["train"] + e["pairs"]["text"]["val"] == 40
    res = evaluate(prog, man, split="all", cache=shared_cache)
    n = res["image->audio/n"]
    assert n == 40
    # never paired in training, yet far above chance (R@1 = 0.025, R@10 = 0.25 here)
    for d in ("image->audio", "audio->image"):
        assert res[f"{d}/R@1"] > 0.25 and res[f"{d}/R@10"] > 0.5, res


def test_adding_a_modality_to_a_symile_space_trains_the_multilinear_score(tmp_path):
    """In a Symile space the new modality is scored against an anchor by MIP(new, anchor, missing...):
    binding trains that score (retrieval far above chance with it), and the old modalities' MIP scores
    are unchanged (the new modality's stand-in is the all-ones vector)."""
    from anybind.multilinear import mip_retrieval_from_embeddings, missing_embeddings

    mans, specs = three_views(tmp_path)
    enc = {m: specs[m] for m in ("sa", "sb", "sc")}
    space = Space.fit(mans["abc"], encoders=enc, cache=tmp_path / "c", seed=0, loss="symile", dim=16, epochs=40, progress=False)
    miss = missing_embeddings(space)
    assert set(miss) == {"sa", "sb", "sc"}
    man = load_manifest(mans["abc"], kinds=_kinds(specs))
    ids = [r.id for r in man.split("test")]
    before = {m: space.embed(m, ids, cache=tmp_path / "c") for m in ("sa", "sb", "sc")}
    pairs = tmp_path / "a-b2.jsonl"  # the new view, paired with sa only
    pairs.write_text("".join(json.dumps({"id": r.id, "split": r.split, "sa": True, "sb2": True}) + "\n" for r in man.records))
    added = space.add_modality("sb2", specs["sb2"], pairs, anchors=["sa"], cache=tmp_path / "c", epochs=30)
    miss2 = missing_embeddings(added)
    assert np.array_equal(miss2["sb2"], np.ones(16, np.float32))
    assert all(np.array_equal(miss2[m], miss[m]) for m in miss)
    embs = {m: (ids, added.embed(m, ids, cache=tmp_path / "c"), ids) for m in ("sa", "sb", "sc", "sb2")}
    for m in ("sa", "sb", "sc"):
        assert np.array_equal(embs[m][1], before[m])
    old = mip_retrieval_from_embeddings({m: embs[m] for m in ("sa", "sb", "sc")}, miss)
    new = mip_retrieval_from_embeddings(embs, miss2)
    assert new["sa->sb/R@1"] == old["sa->sb/R@1"] and new["sb->sc/R@10"] == old["sb->sc/R@10"]
    chance10 = 10 / len(ids)
    assert new["sb2->sa/R@10"] > 5 * chance10 and new["sa->sb2/R@10"] > 5 * chance10
    # the same projector scored without the missing-embedding weights (the cosine it was not trained for) is worse
    cos = mip_retrieval_from_embeddings(embs, {m: np.ones(16, np.float32) for m in miss2})
    assert new["sb2->sa/R@10"] > cos["sb2->sa/R@10"]


def test_symile_targets_are_the_anchor_weighed_by_the_spaces_scorer(tmp_path, monkeypatch):
    """The new modality's targets in a Symile space: the anchor's embeddings times every other bound modality's
    missing embedding (the space's scorer, Scorer.weigh); replacing an encoder targets the plain embeddings.
    Checked on the targets handed to the trainer (stopped there: no training needed)."""
    import anybind.progressive as progressive
    from anybind.multilinear import missing_embeddings

    mans, specs = three_views(tmp_path, n=100)
    enc = {m: specs[m] for m in ("sa", "sb", "sc")}
    space = Space.fit(mans["abc"], encoders=enc, cache=tmp_path / "c", seed=0, loss="symile", dim=8, epochs=2,
                      hidden=16, progress=False)
    miss = missing_embeddings(space)
    assert set(miss) == {"sa", "sb", "sc"} and not any(np.allclose(v, 1) for v in miss.values())
    seen = {}

    class Stop(Exception):
        pass

    def spy(space_, feats, row_of, targets, *a, **kw):
        seen.update(targets)
        raise Stop

    monkeypatch.setattr(progressive, "train_projector", spy)
    man = load_manifest(mans["abc"], kinds=_kinds(specs))
    pairs = tmp_path / "ab-b2.jsonl"
    pairs.write_text("".join(json.dumps({"id": r.id, "split": r.split, "sa": True, "sb": True, "sb2": True}) + "\n"
                             for r in man.records))
    with pytest.raises(Stop):
        space.add_modality("sb2", specs["sb2"], pairs, anchors=["sa", "sb"], cache=tmp_path / "c")
    assert sorted(seen) == ["sa", "sb"]
    for a, t in seen.items():
        ids = [man.records[i].id for i in t.records]
        want = space.embed(a, ids, cache=tmp_path / "c")
        for m in sorted(set(miss) - {a}):  # the other two bound modalities stand in (the new one is not bound)
            want = want * miss[m]
        assert np.allclose(t.targets, want, rtol=1e-6, atol=1e-7)
        assert not np.allclose(t.targets, space.embed(a, ids, cache=tmp_path / "c"), atol=1e-3)  # weighed indeed
    seen.clear()
    with pytest.raises(Stop):
        space.replace_encoder("sb", specs["sb2"], mans["b"], cache=tmp_path / "c")
    ids = [man.records[i].id for i in seen["sb"].records]
    assert sorted(seen) == ["sb"] and np.array_equal(seen["sb"].targets, space.embed("sb", ids, cache=tmp_path / "c"))

"""Space: fit, embed, save/load exactly, refuse changed encoders, determinism, partial records."""

import json

import numpy as np
import pytest

from anybind import Space, load_manifest
from anybind.encoders.base import get_encoder
from anybind.errors import DataError, SpaceError


def make_vectors(tmp_path, n=300, seed=0, missing_b_every=0):
    """Three 'modalities' as noisy views of one latent: a, b, c precomputed vector files."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for name, d in (("sa", 40), ("sb", 30), ("sc", 20)):
        X = z @ rng.normal(size=(12, d)) + 0.8 * rng.normal(size=(n, d))
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            rec = {"id": str(rid), "split": SPLIT_CYCLE[i % 10], "sa": True, "sc": True}
            if not (missing_b_every and i % missing_b_every == 0):
                rec["sb"] = True
            f.write(json.dumps(rec) + "\n")
    return tmp_path / "m.jsonl", specs


SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
FAST = dict(epochs=40, patience=10, hidden=64, dim=32, progress=False)


def test_fit_learns_alignment_far_above_chance(tmp_path):
    m, specs = make_vectors(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)
    from anybind.evaluate import evaluate

    res = evaluate(space, load_manifest(m, kinds={k: "key" for k in specs}), cache=tmp_path / "c")
    n = res["sa->sb/n"]
    assert n == 60
    assert res["sa->sb/R@1"] > 10 / n and res["sc->sb/R@10"] > 0.5  # chance R@10 is 1/6
    emb = space.embed("sa", ["r0", "r1"], cache=tmp_path / "c")
    assert emb.shape == (2, 32) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_same_seed_same_space_other_seed_differs(tmp_path):
    m, specs = make_vectors(tmp_path)
    a = Space.fit(m, encoders=specs, cache=tmp_path / "c", seed=1, **FAST)
    b = Space.fit(m, encoders=specs, cache=tmp_path / "c", seed=1, **FAST)
    c = Space.fit(m, encoders=specs, cache=tmp_path / "c", seed=2, **FAST)
    assert a.identity() == b.identity()
    assert a.identity() != c.identity()


def test_save_load_roundtrip_is_exact(tmp_path):
    m, specs = make_vectors(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)
    ids = [f"r{i}" for i in range(50)]
    before = {k: space.embed(k, ids, cache=tmp_path / "c") for k in specs}
    space.save(tmp_path / "sp")
    meta = json.loads((tmp_path / "sp" / "space.json").read_text())
    assert set(meta["modalities"]) == {"sa", "sb", "sc"}
    assert meta["info"]["lineage"][0]["data"][0]["fingerprint"]
    assert meta["config"]["epochs"] == 40 and "metrics" in meta["info"]
    loaded = Space.load(tmp_path / "sp")
    for k in specs:
        assert np.array_equal(before[k], loaded.embed(k, ids, cache=tmp_path / "c"))
    assert loaded.identity() == space.identity()
    # saving over an existing space replaces it atomically, no temp folders left
    loaded.save(tmp_path / "sp")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_load_refuses_changed_encoder(tmp_path, monkeypatch):
    m, specs = make_vectors(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)
    space.save(tmp_path / "sp")
    saved = (tmp_path / "sp" / "space.json").read_text()
    # an edited encoder identity in space.json no longer matches the space identity: refused on load
    meta = json.loads(saved)
    meta["modalities"]["sa"]["identity"] = meta["modalities"]["sa"]["identity"].replace("sha256=", "sha256=0")
    (tmp_path / "sp" / "space.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match="space.json: saved identity .* does not match its content"):
        Space.load(tmp_path / "sp")
    # the file intact but the encoder changed under the same spec (other vectors): refused when it is built
    (tmp_path / "sp" / "space.json").write_text(saved)
    old = space.identities["sa"]
    with np.load(tmp_path / "sa.npz") as z:
        np.savez(tmp_path / "sa.npz", ids=z["ids"], vectors=z["vectors"] + 1.0)
    monkeypatch.setattr("anybind.space_core.get_encoder", lambda spec: get_encoder(spec, cached=False))  # a new process
    loaded = Space.load(tmp_path / "sp")
    with pytest.raises(SpaceError, match="encoder for 'sa'") as e:
        loaded.embed("sa", ["r0"], cache=tmp_path / "c")
    msg = str(e.value)
    assert "\n" not in msg and old in msg and get_encoder(specs["sa"], cached=False).identity in msg
    loaded.embed("sb", ["r0"], cache=tmp_path / "c")  # the other modalities still work


def test_load_rejects_non_space(tmp_path):
    with pytest.raises(SpaceError, match="not a saved space"):
        Space.load(tmp_path)
    (tmp_path / "space.json").write_text("{")
    (tmp_path / "projectors.safetensors").write_bytes(b"")
    with pytest.raises(SpaceError, match="corrupt JSON"):
        Space.load(tmp_path)


def test_records_missing_a_modality_still_serve_their_pairs(tmp_path):
    m, specs = make_vectors(tmp_path, missing_b_every=3)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)
    pairs = space.info["training"]["pairs"]
    assert sorted(map(tuple, pairs)) == [("sa", "sb"), ("sa", "sc"), ("sb", "sc")]


def test_unbound_modality_and_empty_text_errors(tmp_path):
    m, specs = make_vectors(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)
    with pytest.raises(SpaceError, match="not bound"):
        space.embed("image", ["x.png"])


def test_training_free_methods(tmp_path):
    m, specs = make_vectors(tmp_path)
    for method in ("procrustes", "cca"):
        sp = Space.fit(m, encoders=specs, cache=tmp_path / "c", method=method, progress=False)
        assert sp.config["method"] == method
        e = sp.embed("sb", ["r1", "r2"], cache=tmp_path / "c")
        assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
        sp.save(tmp_path / method)
        assert np.array_equal(Space.load(tmp_path / method).embed("sb", ["r1", "r2"], cache=tmp_path / "c"), e)


def test_no_training_split_is_clear(tmp_path):
    m, specs = make_vectors(tmp_path)
    lines = [json.loads(x) for x in m.read_text().splitlines()]
    for r in lines:
        r["split"] = "test"
    m.write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(DataError, match="at least 2 training records"):
        Space.fit(m, encoders=specs, cache=tmp_path / "c", **FAST)


def test_a_modality_whose_training_features_never_vary_is_named_in_a_warning(tmp_path, caplog):
    """Features that are the same for every training item (an encoder that tells none of them apart) leave the
    standardisation at its floor, which magnifies any later difference a million times: never silent."""
    import logging

    m, specs = make_vectors(tmp_path, n=60)
    ids = np.array([f"r{i}" for i in range(60)])
    np.savez(tmp_path / "flat.npz", ids=ids, vectors=np.tile(np.arange(20, dtype=np.float32), (60, 1)))
    specs["sc"] = f"vectors:{tmp_path / 'flat.npz'}"
    with caplog.at_level(logging.WARNING, logger="anybind"):
        Space.fit(m, encoders=specs, cache=tmp_path / "c", **{**FAST, "epochs": 2})
    flat = [r.getMessage() for r in caplog.records if "do not vary" in r.getMessage()]
    assert len(flat) == 1 and "'sc'" in flat[0] and "\n" not in flat[0], caplog.text
    caplog.clear()
    specs2 = {k: v for k, v in specs.items() if k != "sc"}  # features that vary: no such warning
    with caplog.at_level(logging.WARNING, logger="anybind"):
        Space.fit(m, encoders=specs2, modalities=["sa", "sb"], cache=tmp_path / "c", **{**FAST, "epochs": 2})
    assert not [r for r in caplog.records if "do not vary" in r.getMessage()]


@pytest.mark.parametrize("size", [0.5, 30.0, 2000.0])
def test_features_that_never_vary_are_named_whatever_their_size(size, tmp_path, caplog):
    """The same (non-integer) features for every training item, of any size: the float rounding of their mean
    leaves a spread of about 1e-7 of their size (above the absolute 1e-6 floor for features of size 30), which the
    standardisation still magnifies 1e5 times: the in-memory and the streaming trainer both name the modality;
    features that vary around a large offset are not named."""
    import logging

    from anybind.scale.sharded import fit_sharded

    m, specs = make_vectors(tmp_path, n=60)
    ids = np.array([f"r{i}" for i in range(60)])
    row = (np.random.default_rng(1).normal(size=20) * size).astype(np.float32)
    np.savez(tmp_path / "flat.npz", ids=ids, vectors=np.tile(row, (60, 1)))
    np.savez(tmp_path / "offset.npz", ids=ids,  # varying features around an offset 1e3 times their spread
             vectors=(row * 1000 / size + np.random.default_rng(2).normal(size=(60, 20))).astype(np.float32))
    kw = dict(modalities=["sa", "sc"], cache=tmp_path / "c", **{**FAST, "epochs": 2})
    for spec, named in ((f"vectors:{tmp_path / 'flat.npz'}", True), (f"vectors:{tmp_path / 'offset.npz'}", False)):
        for fit in (Space.fit, fit_sharded):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="anybind"):
                fit(m, encoders={**specs, "sc": spec}, **kw)
            flat = [r.getMessage() for r in caplog.records if "do not vary" in r.getMessage()]
            assert len(flat) == named and all("'sc'" in f for f in flat), (fit.__name__, spec, caplog.text)

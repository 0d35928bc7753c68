"""Robust fine-tuning (issue 16): WiSE-FT, L2-SP and inductive centring (anybind.robust)."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, load_manifest
from anybind.errors import DataError, SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.robust import WISE_GRID, centred, interpolate, snapshot
from anybind.train import FeatureSet, val_score
from anybind.cache import FeatureCache

SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2


def make_pairs(tmp_path, n=600, seed=0, val=True):
    """'tx' (locked, linear in a latent) and 'im' (a non-linear view of it): ridge is a start, not the end."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 12))
    ids = np.array([f"r{i}" for i in range(n)])
    views = {"tx": z @ rng.normal(size=(12, 16)) + 1.5 * rng.normal(size=(n, 16)),
             "im": np.tanh(3 * z @ rng.normal(size=(12, 24))) + 1.5 * rng.normal(size=(n, 24))}
    specs = {}
    for name, X in views.items():
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    splits = SPLITS if val else [s if s != "val" else "train" for s in SPLITS]
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": str(rid), "split": splits[i % 10], "tx": True, "im": True}) + "\n")
    return tmp_path / "m.jsonl", specs


FAST = dict(epochs=30, patience=30, hidden=64, lock="tx", init="ridge", progress=False, recipe="plain")


def fit(tmp_path, m, specs, **kw):
    return Space.fit(m, encoders=specs, cache=tmp_path / "c", **{**FAST, **kw})


def weights(space):
    return {f"{m}.{k}": v.clone() for m, p in space.projectors.items() for k, v in p.state_dict().items()}


def same(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_wise_endpoints_are_the_start_and_the_fine_tuned_weights(tmp_path):
    m, specs = make_pairs(tmp_path)
    start = fit(tmp_path, m, specs, epochs=0)  # no epoch: the training-free (ridge) start itself
    plain = fit(tmp_path, m, specs)
    assert plain.info["training"]["best_epoch"] >= 1  # fine-tuning beat the start on val: the endpoints differ
    w0 = fit(tmp_path, m, specs, wise=0.0)
    w1 = fit(tmp_path, m, specs, wise=1.0)
    assert same(weights(w0), weights(start))
    assert same(weights(w1), weights(plain))  # the best fine-tuned epoch, the one early stopping kept
    assert not same(weights(start), weights(plain))
    half = fit(tmp_path, m, specs, wise=0.5)
    for k, v in weights(half).items():
        assert torch.allclose(v, 0.5 * (weights(start)[k] + weights(plain)[k]), atol=1e-6)
    assert half.info["training"]["robust"]["wise_alpha"] == 0.5
    man = load_manifest(m, kinds={k: "key" for k in specs})  # the recorded val score is the mixture's own
    fs = FeatureSet.from_manifests([man], half.encoders, FeatureCache(tmp_path / "c"), progress=False)
    want = val_score(half.projectors, fs, fs.split_idx("val"), [("im", "tx")])
    assert half.info["metrics"]["val/score"] == pytest.approx(want, abs=1e-9)


def test_wise_auto_chooses_the_val_argmax(tmp_path):
    m, specs = make_pairs(tmp_path)
    sp = fit(tmp_path, m, specs, wise="auto")
    rec = sp.info["training"]["robust"]
    scores = {float(a): s for a, s in rec["wise_val"].items()}
    assert sorted(scores) == list(WISE_GRID)
    best = max(scores.values())
    assert rec["wise_alpha"] == min(a for a, s in scores.items() if s == best)  # first best: closest to the start
    assert rec["wise_val_chosen"] == best >= max(scores[0.0], scores[1.0])
    assert sp.info["metrics"]["val/score"] == best
    # the space returned is the chosen mixture: its val score, recomputed from scratch, is the recorded one
    man = load_manifest(m, kinds={k: "key" for k in specs})
    fs = FeatureSet.from_manifests([man], sp.encoders, FeatureCache(tmp_path / "c"), progress=False)
    assert val_score(sp.projectors, fs, fs.split_idx("val"), [("im", "tx")]) == pytest.approx(best, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(alpha=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_interpolate_is_exact_at_the_ends_and_between_them(alpha, seed):
    g = torch.Generator().manual_seed(seed)
    a = {"p": {"w": torch.randn(3, 4, generator=g), "n": torch.tensor(3)}}
    b = {"p": {"w": torch.randn(3, 4, generator=g), "n": torch.tensor(3)}}
    assert torch.equal(interpolate(a, b, 0.0)["p"]["w"], a["p"]["w"])
    assert torch.equal(interpolate(a, b, 1.0)["p"]["w"], b["p"]["w"])
    mid = interpolate(a, b, alpha)["p"]["w"]
    assert torch.allclose(mid, (1 - alpha) * a["p"]["w"] + alpha * b["p"]["w"], atol=1e-6)
    assert torch.equal(interpolate(a, b, alpha)["p"]["n"], a["p"]["n"])


def test_wise_and_l2sp_need_a_training_free_start_and_valid_values(tmp_path):
    m, specs = make_pairs(tmp_path)
    with pytest.raises(DataError, match="training-free start"):
        fit(tmp_path, m, specs, wise="auto", init="random", lock=None)
    with pytest.raises(DataError, match="wise must be"):
        fit(tmp_path, m, specs, wise=1.5)
    with pytest.raises(DataError, match="l2sp must be"):
        fit(tmp_path, m, specs, l2sp=-1.0)


def test_l2sp_with_a_huge_lambda_keeps_the_weights_at_the_start(tmp_path):
    m, specs = make_pairs(tmp_path, val=False)  # no val split: every epoch runs and the last one is kept
    start = weights(fit(tmp_path, m, specs, wise=0.0))  # the start (wise=0: see the endpoint test)
    free = weights(fit(tmp_path, m, specs))
    held = weights(fit(tmp_path, m, specs, l2sp=1e6))

    def dist(w):
        return float(sum((w[k] - start[k]).pow(2).sum() for k in start)) ** 0.5

    assert dist(free) > 1.0
    assert dist(held) < 0.02 * dist(free)


def test_centring_is_stored_saved_loaded_and_applied_at_embed_time(tmp_path):
    m, specs = make_pairs(tmp_path)
    plain = fit(tmp_path, m, specs)
    cen = fit(tmp_path, m, specs, center=True)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    train = [r.id for r in man.split("train")]
    test = [r.id for r in man.split("test")]
    for mod in ("im", "tx"):
        c = cen.projectors[mod].center.numpy()
        # the centre is the mean unit embedding of the modality's training items, in the uncentred space
        assert np.allclose(c, plain.embed(mod, train, cache=tmp_path / "c").mean(0), atol=1e-5)
        e = plain.embed(mod, test, cache=tmp_path / "c") - c
        want = e / np.linalg.norm(e, axis=1, keepdims=True)
        assert np.allclose(cen.embed(mod, test, cache=tmp_path / "c"), want, atol=1e-5)
    cen.save(tmp_path / "sp")
    meta = json.loads((tmp_path / "sp" / "space.json").read_text())
    assert meta["format_version"] == 3 and meta["modalities"]["im"]["projector"]["center"] is True
    back = Space.load(tmp_path / "sp")
    assert back.identity() == cen.identity() != plain.identity()
    for mod in ("im", "tx"):
        assert np.array_equal(back.embed(mod, test, cache=tmp_path / "c"), cen.embed(mod, test, cache=tmp_path / "c"))
    # an uncentred space is still written as format 2 (an older anybind reads it), without the key
    plain.save(tmp_path / "plain")
    meta2 = json.loads((tmp_path / "plain" / "space.json").read_text())
    assert meta2["format_version"] == 2 and "center" not in meta2["modalities"]["im"]["projector"]
    # format 2 cannot state a centre
    meta["format_version"] = 2
    (tmp_path / "sp" / "space.json").write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match="center needs format_version 3"):
        Space.load(tmp_path / "sp")


def test_centred_copies_a_space_with_its_train_means(tmp_path):
    m, specs = make_pairs(tmp_path)
    plain = fit(tmp_path, m, specs)
    cen = fit(tmp_path, m, specs, center=True)
    man = load_manifest(m, kinds={k: "key" for k in specs})
    post = centred(plain, man, cache=tmp_path / "c")
    assert plain.projectors["im"].cfg.center is False  # the original is left alone
    for mod in ("im", "tx"):
        assert np.allclose(post.projectors[mod].center.numpy(), cen.projectors[mod].center.numpy(), atol=1e-6)
    assert post.info["lineage"][-1]["event"] == "centre"
    again = centred(post, man, cache=tmp_path / "c")  # re-centring measures from the uncentred map
    assert np.allclose(again.projectors["im"].center.numpy(), post.projectors["im"].center.numpy(), atol=1e-6)
    with pytest.raises(DataError, match="no nosuch record"):
        centred(plain, man, split="nosuch", cache=tmp_path / "c")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 6))
def test_a_centred_projector_measures_from_its_centre(seed, n):
    rng = np.random.default_rng(seed)
    p = Projector(ProjectorConfig(in_dim=5, out_dim=4, kind="linear", dropout=0, input_dropout=0)).eval()
    x = torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32))
    y = torch.nn.functional.normalize(p(x), dim=-1)
    c = rng.normal(size=4).astype(np.float32) * 0.3
    p.set_center(c)
    got = torch.nn.functional.normalize(p(x), dim=-1)
    want = torch.nn.functional.normalize(y - torch.from_numpy(c), dim=-1)
    assert torch.allclose(got, want, atol=1e-5)
    assert "center" in p.state_dict() and p.cfg.to_dict()["center"] is True
    with pytest.raises(ValueError, match="finite"):
        p.set_center(np.full(4, np.nan))


def test_snapshot_is_detached_from_later_training():
    p = Projector(ProjectorConfig(in_dim=3, out_dim=2, kind="linear"))
    s = snapshot({"a": p})
    with torch.no_grad():
        p.linear.weight.add_(1.0)
    assert not torch.equal(s["a"]["linear.weight"], p.linear.weight)


def test_the_streaming_trainer_refuses_centring_in_one_line(tmp_path):
    from anybind.scale.sharded import fit_sharded

    m, specs = make_pairs(tmp_path, n=60)
    with pytest.raises(DataError, match="center=True .* needs the in-memory fit") as e:
        fit_sharded(m, encoders=specs, cache=tmp_path / "c", **{**FAST, "center": True})
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="training-free start"):  # the same checks as in memory
        fit_sharded(m, encoders=specs, cache=tmp_path / "c", progress=False, dim=8, wise="auto")


def test_the_streaming_trainer_applies_wise_and_l2sp_and_records_its_ridge_start(tmp_path):
    """The shared loop's hooks: WiSE-FT's endpoints and L2-SP behave in the streaming trainer as in memory."""
    from anybind.scale.sharded import fit_sharded

    m, specs = make_pairs(tmp_path, n=300)
    kw = dict(encoders=specs, cache=tmp_path / "c", **{**FAST, "epochs": 8, "patience": 8})
    start = fit_sharded(m, **{**kw, "epochs": 0})
    w0 = fit_sharded(m, wise=0.0, **kw)
    assert same(weights(w0), weights(start))
    auto = fit_sharded(m, wise="auto", l2sp=1e-3, **kw)
    rob = auto.info["training"]["robust"]
    assert rob["l2sp"] == 1e-3 and rob["wise_alpha"] in WISE_GRID
    assert auto.info["metrics"]["val/score"] == rob["wise_val_chosen"] == max(rob["wise_val"].values())
    assert rob["ridge"]["im"] == auto.info["lineage"][-1]["ridge_start"]["im"]
    assert rob["ridge"]["im"]["prior"] == "zero"


def test_cli_fit_takes_the_robust_levers(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    m, specs = make_pairs(tmp_path, n=200)
    args = ["fit", str(m), "--epochs", "5", "--lock", "tx", "--init", "ridge", "--cache", str(tmp_path / "c")]
    for k, spec in specs.items():
        args += ["-e", f"{k}={spec}"]
    res = CliRunner().invoke(app, args + ["--wise", "auto", "--l2sp", "0.01", "--center", "--finetune",  # 20 val pairs
                                          "--out", str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    sp = Space.load(tmp_path / "sp")
    rob = sp.info["training"]["robust"]
    assert rob["wise"] == "auto" and rob["l2sp"] == 0.01 and "wise_alpha" in rob and sp.projectors["im"].cfg.center
    res = CliRunner().invoke(app, args + ["--wise", "2", "--out", str(tmp_path / "sp2")])
    assert res.exit_code == 2 and "--wise takes 'auto', a number in [0, 1] or 'off'" in res.output


class _FakeBridge:
    """Stands in for a label-bridge encoder: [base block | bridge block in the text encoder's space]."""

    def __init__(self, d_base, text_spec, d_text):
        self.base_encoder = type("B", (), {"dim": d_base})()
        self.text_encoder = type("T", (), {"spec": text_spec, "dim": d_text})()
        self.dim = d_base + d_text


def bridged_features(monkeypatch, n=400, n_train=20, seed=0, bridge_noise=1.0):
    """Text targets T; images = [noise-ish base block | a noisy copy of T as the bridge block]."""
    from anybind.data.manifest import Record
    from anybind.encoders import bridge, registry

    class Fake(_FakeBridge, bridge.LabelBridgeEncoder):
        pass

    real = registry.get_encoder
    monkeypatch.setattr(registry, "get_encoder",
                        lambda spec, *a, **k: Fake(100, "text:fake", 24) if spec == "image:fake+bridge" else real(spec, *a, **k))
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(n, 24))
    base = T @ rng.normal(size=(24, 100)) * 0.1 + rng.normal(size=(n, 100))
    X = np.hstack([base, T + bridge_noise * rng.normal(size=(n, 24))]).astype(np.float32)
    splits = ["train"] * n_train + ["val"] * 60 + ["test"] * (n - n_train - 60)
    recs = [Record(id=f"r{i}", split=s, values={"image": f"i{i}", "text": f"t{i}"}) for i, s in enumerate(splits)]
    return FeatureSet(records=recs, specs={"image": "image:fake+bridge", "text": "text:fake"},
                      identities={"image": "fake-i", "text": "fake-t"}, feats={"image": X, "text": T.astype(np.float32)},
                      rows={"image": np.arange(n), "text": np.arange(n)}, corpus=np.zeros(n, dtype=np.int64))


def _r1(space, fs, split):
    idx = fs.split_idx(split)
    from anybind.metrics import pair_recalls

    q = space.project("text", fs.get("text", idx))
    g = space.project("image", fs.get("image", idx))
    return pair_recalls(q, g)["R@1"]


def test_bridge_prior_falls_back_on_the_bridge_not_on_zero(monkeypatch):
    from anybind import ridge as loop  # the ridge start lives in anybind.ridge (loop re-exports it)
    from anybind.train import TrainConfig, train_space

    fs = bridged_features(monkeypatch)
    cfg = dict(lock="text", init="ridge", epochs=0, hidden=16)
    zero = train_space(fs, TrainConfig(**cfg), progress=False)
    prior = train_space(fs, TrainConfig(ridge_prior="bridge", **cfg), progress=False)
    assert _r1(prior, fs, "test") > _r1(zero, fs, "test") + 0.05  # 20 pairs: shrinking to the bridge wins
    assert prior.info["training"]["robust"]["ridge"]["image"]["prior"] == "bridge"
    # infinite shrinkage: the start *is* the (centred) bridge, where shrinking to zero leaves nothing
    real_select = loop.ridge_select
    monkeypatch.setattr(loop, "ridge_select", lambda *a, **k: real_select(*a, **{**k, "alphas": (1e9,)}))
    sp = train_space(fs, TrainConfig(ridge_prior="bridge", **cfg), progress=False)
    idx = fs.split_idx("test")
    X = fs.get("image", idx)
    Xb = X[:, 100:] - sp.projectors["image"].mean.numpy()[100:]
    e = sp.project("image", X)
    cos = (e * Xb).sum(1) / np.linalg.norm(Xb, axis=1)
    assert cos.min() > 0.999
    assert np.abs(train_space(fs, TrainConfig(**cfg), progress=False).projectors["image"].linear.weight.detach().numpy()).max() < 1e-6


def test_bridge_prior_needs_a_ridge_start_and_falls_back_to_zero_without_a_bridge(monkeypatch, tmp_path, caplog):
    from anybind import ridge as loop  # the ridge start lives in anybind.ridge (loop re-exports it)
    from anybind.train import TrainConfig, train_space

    fs = bridged_features(monkeypatch)
    with pytest.raises(DataError, match="use init='ridge'"):
        train_space(fs, TrainConfig(lock="text", init="random", ridge_prior="bridge", epochs=1), progress=False)
    with pytest.raises(DataError, match="ridge_prior must be one of"):
        train_space(fs, TrainConfig(lock="text", init="ridge", ridge_prior="nope", epochs=0), progress=False)
    m, specs = make_pairs(tmp_path, n=100)  # plain vectors: no label bridge anywhere
    with caplog.at_level("WARNING", logger="anybind.robust"):
        sp = fit(tmp_path, m, specs, ridge_prior="bridge", epochs=0)
    assert "no bound modality's encoder has a label bridge" in caplog.text
    assert sp.info["training"]["robust"]["ridge"]["im"]["prior"] == "zero"  # recorded, like its alpha
    assert sp.info["lineage"][-1]["ridge_start"]["im"] == sp.info["training"]["robust"]["ridge"]["im"]
    assert sp.info["lineage"][-1]["ridge_start"]["im"]["alpha"] in loop.RIDGE_ALPHAS
    assert same(weights(sp), weights(fit(tmp_path, m, specs, epochs=0)))


def test_recipe_auto_bridges_the_ridge_start_and_fine_tunes_gently():
    from anybind.recipe import FINE_TUNE_LR, resolve_recipe

    specs, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {})
    assert specs["image"].endswith("+bridge")
    assert cfg["ridge_prior"] == "bridge" and cfg["wise"] == "auto" and cfg["lr"] == FINE_TUNE_LR
    assert chosen["ridge_prior"] == "bridge" and chosen["wise"] == "auto"
    # explicit choices win; plain image encoders have no bridge to shrink towards
    _, cfg, chosen = resolve_recipe("auto", ["image", "text"], {"image": "image:efficientnet-lite0"},
                                    {"lr": 1e-3, "wise": None})
    assert "ridge_prior" not in cfg and cfg["lr"] == 1e-3 and cfg["wise"] is None and "wise" not in chosen
    # no ridge start (random init, or recipe plain): nothing to mix back, the bare defaults
    _, cfg, _ = resolve_recipe("auto", ["image", "text"], None, {"init": "random"})
    assert "wise" not in cfg and "lr" not in cfg and "ridge_prior" not in cfg
    _, cfg, chosen = resolve_recipe("plain", ["image", "text"], None, {})
    assert cfg == {} and chosen == {}


@pytest.mark.parametrize("bad", [0, -1e-3, float("nan"), float("inf"), True, "fast"])
def test_attn_lr_is_refused_in_one_line_before_any_work_by_both_trainers(tmp_path, bad):
    """A bad attention rate is a config error for every space (not a torch ValueError deep in a video fit, nor
    silently ignored for a space without a frame-pooling projector)."""
    from anybind.scale.sharded import fit_sharded

    m, specs = make_pairs(tmp_path, n=60)
    for trainer in (fit, lambda t, m, s, **kw: fit_sharded(m, encoders=s, cache=t / "c", **{**FAST, **kw})):
        with pytest.raises(DataError, match="attn_lr must be a positive number") as e:
            trainer(tmp_path, m, specs, attn_lr=bad)
        assert "\n" not in str(e.value)
    for bad_epochs in (-1, 1.5, True):
        with pytest.raises(DataError, match="attn_epochs must be a whole number >= 0"):
            fit_sharded(m, encoders=specs, cache=tmp_path / "c", **{**FAST, "attn_epochs": bad_epochs})


def test_a_fit_without_a_frame_pooling_projector_ignores_the_attention_options(tmp_path):
    """The attention's own rate and phase touch nothing else: the same weights whatever they are."""
    m, specs = make_pairs(tmp_path, n=300)
    kw = dict(epochs=4, patience=4, wise="auto", l2sp=1e-3)
    a = fit(tmp_path, m, specs, **kw)
    b = fit(tmp_path, m, specs, attn_lr=0.5, attn_epochs=7, **kw)
    c = fit(tmp_path, m, specs, attn_lr=None, attn_epochs=0, **kw)
    assert same(weights(a), weights(b)) and same(weights(a), weights(c))
    assert json.dumps(a.info["training"]["history"]) == json.dumps(b.info["training"]["history"])  # NaN: epoch 0
    assert "attention_phase" not in a.info["training"]["robust"]

"""The kernel start (issue 16): kernel ridge on the label-bridge prior's residual as a fixed kernel branch of the
projector, chosen on val beside the linear ridge path and the bridge itself; saved with the space (format 5)."""

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space, load_manifest
from anybind.errors import SpaceError
from anybind.projectors import Projector, ProjectorConfig
from anybind.robust import interpolate, snapshot


@pytest.fixture(scope="module")
def tux_small(tux_dir, tmp_path_factory):
    """60 real Tux Paint stamps (image, text), every fifth in val: a small real set with a label bridge."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:60]
    rows = [{"id": r["id"], "split": "val" if i % 5 == 0 else "train", "text": r["text"],
             "image": str(tux_dir / r["image"])} for i, r in enumerate(recs)]
    out = tmp_path_factory.mktemp("kernel") / "manifest.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_manifest(out, modalities=["image", "text"])


@pytest.fixture(scope="module")
def fitted(tux_small, shared_cache):
    """The start alone (epochs 0) with and without the kernel family: defaults otherwise (recipe auto)."""
    kw = dict(modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    return Space.fit(tux_small, **kw), Space.fit(tux_small, kernel_start=False, **kw)


def _val(space, man, cache):
    from anybind.cache import FeatureCache
    from anybind.featureset import selection_set
    from anybind.train import val_score

    vs = selection_set([man], space.encoders, FeatureCache(cache), split="val", progress=False)
    return val_score(space.projectors, vs, vs.split_idx("val"), [("image", "text")])


def test_the_kernel_start_is_chosen_on_val_and_never_below_the_linear_start(fitted, tux_small, shared_cache):
    kern, lin = fitted
    lineage = kern.info["lineage"][-1]
    assert lineage["recipe"]["chosen"]["kernel_start"] is True  # the recipe turns it on with the bridge prior
    rec = lineage["ridge_start"]["image"]["kernel"]
    assert set(rec["grid"]) == {f"{t:g}/{a:g}" for t in (0.3, 0.5, 1.0) for a in (1e-6, 1e-5, 1e-4)}
    assert rec["support"] == rec["pairs"] == 48
    assert "kernel" not in lin.info["lineage"][-1]["ridge_start"]["image"]
    assert not any(k.startswith("kernel_") for k in lin.projectors["image"].state_dict())
    assert _val(kern, tux_small, shared_cache) >= _val(lin, tux_small, shared_cache) - 1e-9
    # the base the grid was compared with is the linear start's own val score
    assert rec["base_val"] == pytest.approx(_val(lin, tux_small, shared_cache), abs=1e-3)
    if rec["kept"]:
        assert rec["val"] > rec["base_val"] and kern.projectors["image"].cfg.kernel == 48
        assert lineage["ridge_start"]["image"]["alpha"] is None  # the linear map is the scaled bridge prior
    else:
        assert kern.projectors["image"].cfg.kernel == 0


def test_a_kernel_space_saves_loads_and_embeds_identically(fitted, tmp_path):
    kern = _with_kernel(fitted)
    pr = kern.projectors["image"]
    kern.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "space.json").read_text())
    assert meta["format_version"] == 5 and meta["modalities"]["image"]["projector"]["kernel"] == pr.cfg.kernel
    back = Space.load(tmp_path / "s")
    assert back.identity() == kern.identity()
    x = np.random.default_rng(0).normal(size=(7, pr.cfg.in_dim)).astype(np.float32)
    assert np.array_equal(back.project("image", x), kern.project("image", x))


def test_a_space_without_a_kernel_stays_format_2(fitted, tmp_path):
    _, lin = fitted
    lin.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "space.json").read_text())
    assert meta["format_version"] == 2 and "kernel" not in meta["modalities"]["image"]["projector"]
    assert Space.load(tmp_path / "s").identity() == lin.identity()


def _with_kernel(fitted):
    """The kernel-start space (a copy), given a small kernel branch where val did not keep one on this slice."""
    kern = copy.deepcopy(fitted[0])
    pr = kern.projectors["image"]
    if not pr.cfg.kernel:
        pr.set_kernel(torch.randn(5, pr.cfg.feat_dim), torch.randn(5, pr.cfg.out_dim) * 0.01, 0.5)
    return kern


def _kernel_space(fitted, tmp_path):
    return _with_kernel(fitted).save(tmp_path / "s")


def test_a_damaged_kernel_buffer_is_refused_in_one_line_naming_the_file(fitted, tmp_path):
    from safetensors.torch import load_file, save_file

    path = _kernel_space(fitted, tmp_path)
    w = path / "projectors.safetensors"
    sd = load_file(str(w))
    sd["image.kernel_coef"][0, 0] = float("nan")
    save_file(sd, str(w))
    with pytest.raises(SpaceError, match=r"projectors\.safetensors.*kernel_coef.*non-finite"):
        Space.load(path)
    sd["image.kernel_coef"] = sd["image.kernel_coef"][:-1].nan_to_num()  # a support row fewer than space.json says
    save_file(sd, str(w))
    with pytest.raises(SpaceError, match=r"projectors\.safetensors.*kernel_coef.*shape") as e:
        Space.load(path)
    assert "\n" not in str(e.value)


def test_a_kernel_in_an_older_format_or_without_a_temperature_is_refused(fitted, tmp_path):
    path = _kernel_space(fitted, tmp_path)
    meta_p = path / "space.json"
    meta = json.loads(meta_p.read_text())
    old = {**meta, "format_version": 4}
    meta_p.write_text(json.dumps(old))
    with pytest.raises(SpaceError, match=r"space\.json.*kernel needs format_version 5"):
        Space.load(path)
    meta["modalities"]["image"]["projector"]["kernel_tau"] = 0.0
    meta_p.write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match=r"space\.json.*kernel_tau"):
        Space.load(path)


def test_wise_keeps_the_kernel_branch_as_it_is():
    pr = Projector(ProjectorConfig(in_dim=6, out_dim=3, kind="linear"))
    pr.set_kernel(torch.randn(4, 6), torch.randn(4, 3), 0.3)
    start = snapshot({"image": pr})
    trained = snapshot({"image": pr})
    trained["image"]["linear.weight"] += 1.0
    trained["image"]["kernel_coef"] += 1.0  # never happens (buffers are not trained), but WiSE must not mix it
    mid = interpolate(start, trained, 0.5)["image"]
    assert torch.equal(mid["kernel_coef"], trained["image"]["kernel_coef"])
    assert torch.allclose(mid["linear.weight"], start["image"]["linear.weight"] + 0.5)


def test_fine_tuning_does_not_train_the_kernel_branch():
    pr = Projector(ProjectorConfig(in_dim=6, out_dim=3, kind="mlp", hidden=4))
    pr.set_kernel(torch.randn(4, 6), torch.randn(4, 3), 0.3)
    names = {n for n, _ in pr.named_parameters()}
    assert not any(n.startswith("kernel_") for n in names)
    assert {"kernel_support", "kernel_coef"} <= set(dict(pr.named_buffers()))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), d=st.integers(2, 12), out=st.integers(1, 7), b=st.integers(1, 5),
       tau=st.floats(0.05, 3.0))
def test_the_kernel_branch_adds_its_term_to_the_linear_map(n, d, out, b, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    pr = Projector(ProjectorConfig(in_dim=d, out_dim=out, kind="linear", input_dropout=0.0)).eval()
    x = torch.randn(b, d, generator=g)
    lin = pr(x)
    S, A = torch.randn(n, d, generator=g), torch.randn(n, out, generator=g)
    pr.set_kernel(S, A, tau)
    Sn = S / S.norm(dim=1, keepdim=True)
    want = lin + torch.exp((x / x.norm(dim=1, keepdim=True) @ Sn.T - 1) / tau) @ A
    assert pr(x).shape == (b, out)
    assert torch.allclose(pr(x), want, atol=1e-4)
    assert torch.allclose(pr(S[:1] * 3.0) - pr.linear(S[:1] * 3.0), A.T @ torch.exp((Sn @ Sn[0] - 1) / tau),
                          atol=1e-4)  # at a support item its own weight is exp(0) = 1
    pr.set_kernel(None)
    assert pr.cfg.kernel == 0 and torch.equal(pr(x), lin)
    with pytest.raises(ValueError, match="kernel"):
        pr.set_kernel(S, torch.randn(n + 1, out), tau)


def concept_features(monkeypatch, seed=0, n=400, n_train=150):
    """Synthetic bridged features (the fake label bridge of tests/test_robust.py) where the kernel has something to
    add: 30 concepts, each image its concept's look plus noise beside a noisy bridge block; texts near the concept."""
    from test_robust import bridged_features

    fs = bridged_features(monkeypatch, n=n, n_train=n_train)  # the fake bridge, the splits; features replaced
    rng = np.random.default_rng(seed)
    concepts = rng.normal(size=(30, 24))
    lab = rng.integers(0, 30, n)
    T = concepts[lab] + 0.3 * rng.normal(size=(n, 24))
    looks = rng.normal(size=(30, 100))
    base = looks[lab] + 0.5 * rng.normal(size=(n, 100))
    X = np.hstack([base, T + 2.0 * rng.normal(size=(n, 24))])
    fs.feats.update(image=X.astype(np.float32), text=T.astype(np.float32))
    return fs


def test_the_kernel_family_is_kept_where_it_wins_on_val_and_off_means_linear(monkeypatch):
    """The grid is scored, the kept start is the best on val (here the kernel: concepts a linear map reads only
    roughly), and kernel_start=False gives the linear start bit for bit (the family touches nothing when off)."""
    from anybind.train import TrainConfig, train_space, val_score

    fs = concept_features(monkeypatch)
    cfg = dict(lock="text", init="ridge", ridge_prior="bridge", start_guard=True, epochs=0, hidden=16)
    on = train_space(fs, TrainConfig(kernel_start=True, **cfg), progress=False)
    off = train_space(fs, TrainConfig(kernel_start=False, **cfg), progress=False)
    again = train_space(fs, TrainConfig(**cfg), progress=False)  # not given, no recipe: the plain default, off
    assert same_state(off, again) and not any("kernel" in k for k in off.projectors["image"].state_dict())
    rec = on.info["training"]["robust"]["ridge"]["image"]["kernel"]
    assert len(rec["grid"]) == 9 and rec["support"] == 150 and rec["kept"] is True
    idx = fs.split_idx("val")
    v_on = val_score(on.projectors, fs, idx, [("image", "text")])
    v_off = val_score(off.projectors, fs, idx, [("image", "text")])
    assert v_on >= v_off - 1e-9 and rec["base_val"] == pytest.approx(v_off, abs=1e-6)
    assert on.projectors["image"].cfg.kernel == 150 and on.info["training"]["robust"]["ridge"]["image"]["alpha"] is None
    assert v_on == pytest.approx(rec["val"], abs=1e-6) and v_on > v_off
    assert max(rec["grid"].values()) == rec["val"]


def test_a_seeded_subset_is_the_support_above_the_cap(monkeypatch):
    from anybind import ridge_kernel

    monkeypatch.setattr(ridge_kernel, "MAX_SUPPORT", 30)
    g = torch.Generator().manual_seed(0)
    Z, T, W0 = torch.randn(50, 6, generator=g), torch.randn(50, 3, generator=g), torch.zeros(6, 3)
    seen = []
    branch, rec = ridge_kernel.kernel_start(Z, T, W0, lambda b: seen.append(b[0]) or float(b[1].abs().sum()),
                                            -1.0, seed=3)
    assert rec["support"] == 30 and rec["pairs"] == 50 and branch[0].shape == (30, 6)
    again, _ = ridge_kernel.kernel_start(Z, T, W0, lambda b: float(b[1].abs().sum()), -1.0, seed=3)
    assert torch.equal(branch[0], again[0]) and torch.equal(branch[1], again[1])  # seeded: the same subset


def test_kernel_start_needs_the_bridge_prior(tmp_path):
    """(The streaming / Ray trainer's kernel start: tests/test_kernel_start_trainers.py.)"""
    from anybind.errors import DataError
    from test_robust import FAST, make_pairs

    m, specs = make_pairs(tmp_path, n=120)
    with pytest.raises(DataError, match="kernel_start=True .* ridge_prior='bridge'") as e:
        Space.fit(m, encoders=specs, cache=tmp_path / "c", **{**FAST, "epochs": 0, "kernel_start": True})
    assert "\n" not in str(e.value)


def test_cli_fit_turns_the_kernel_start_off(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app
    from test_robust import make_pairs

    m, specs = make_pairs(tmp_path, n=100)
    args = ["fit", str(m), "--epochs", "0", "--lock", "tx", "--init", "ridge", "--cache", str(tmp_path / "c"),
            "--no-kernel-start", "--out", str(tmp_path / "sp")]
    for k, spec in specs.items():
        args += ["-e", f"{k}={spec}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert Space.load(tmp_path / "sp").config["kernel_start"] is False


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_a_merge_rotates_the_kernel_branch_with_the_rest():
    from anybind.merge import rotated

    pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="mlp", hidden=5, input_dropout=0.0)).eval()
    pr.set_kernel(torch.randn(7, 6), torch.randn(7, 4), 0.5)
    R = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))[0]
    x = torch.randn(3, 6)
    assert torch.allclose(rotated(pr, R)(x), pr(x) @ torch.as_tensor(R, dtype=torch.float32), atol=1e-5)


def test_the_kernel_term_keeps_float32_under_autocast():
    """Training under --precision bf16/fp16 runs the projector in autocast: a kernel branch fitted where an image has
    several captions (duplicate support rows: large coefficients that cancel) must still add its float32 term, not a
    bf16 one several times off (before: relative error ~3)."""
    from anybind.ridge_kernel import kernel_start

    g = torch.Generator().manual_seed(0)
    Zi = torch.randn(200, 16, generator=g)
    Z, T = Zi.repeat_interleave(5, 0), torch.randn(1000, 8, generator=g)  # five captions per image
    (S, A, tau), _ = kernel_start(Z, T, torch.zeros(16, 8), lambda b: -b[2], -99.0)  # tau 0.3, alpha 1e-6
    pr = Projector(ProjectorConfig(in_dim=16, out_dim=8, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    pr.fit_stats(np.zeros((1, 16), np.float32)).set_kernel(S, A, tau)
    x = Zi[:32] * pr.scale + pr.mean
    with torch.no_grad():
        want = pr(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = pr(x).float()
    assert torch.allclose(got, want, rtol=0.02, atol=0.02 * float(want.abs().max()))


def _eigh_grid(Z, T, W0):
    """The grid as main solved it: one eigendecomposition of the kernel per tau (the reference)."""
    import torch.nn.functional as F

    from anybind.ridge_kernel import KERNEL_ALPHAS, KERNEL_TAUS

    Z, T = Z.double(), T.double()
    E, S = T - Z @ W0.double(), F.normalize(Z.double(), dim=-1)
    for tau in KERNEL_TAUS:
        s, U = torch.linalg.eigh(torch.exp((S @ S.T - 1) / tau))
        for alpha in KERNEL_ALPHAS:
            yield tau, alpha, U @ ((U.T @ E) / (s.clamp_min(0) + alpha * len(Z)).unsqueeze(1))


@pytest.fixture(scope="module")
def tux_inputs(tux_small, shared_cache):
    """The kernel start's inputs on real Tux Paint features (image onto the locked text space), as Space.fit gives."""
    import anybind.ridge as ridge

    got, real = [], ridge.kernel_start
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ridge, "kernel_start", lambda *a, **k: got.append((a, k)) or real(*a, **k))
        Space.fit(tux_small, modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    return got[0]


@pytest.mark.parametrize("factorise", [True, False], ids=["cholesky", "fallback"])
def test_the_cholesky_grid_gives_the_eigh_coefficients_and_choice(tux_inputs, factorise, monkeypatch):
    import anybind.ridge_kernel as rk

    (Z, T, W0, score, base), kw = tux_inputs
    if not factorise:  # a kernel not positive definite to rounding: the eigendecomposition it falls back on
        monkeypatch.setattr(torch.linalg, "cholesky_ex", lambda M: (M, torch.tensor(1)))
    ref = list(_eigh_grid(Z, T, W0))
    new = list(rk.kernel_grid(Z, T, W0))
    assert [(t, a) for t, a, _ in new] == [(t, a) for t, a, _ in ref]
    for (_, _, A), (_, _, B) in zip(new, ref):
        assert torch.allclose(A, B, rtol=1e-6, atol=1e-8 * float(B.abs().max()))
    branch, rec = rk.kernel_start(Z, T, W0, score, base, **kw)
    monkeypatch.setattr(rk, "kernel_grid", _eigh_grid)
    branch_ref, rec_ref = rk.kernel_start(Z, T, W0, score, base, **kw)
    assert rec == rec_ref  # the same grid scores, the same choice
    assert (branch is None) == (branch_ref is None)
    if branch is not None:
        assert branch[2] == branch_ref[2] and torch.allclose(branch[1], branch_ref[1], rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8), cap=st.integers(1, 40), seed=st.integers(0, 9))
def test_the_support_taken_block_by_block_is_the_seeded_subset_of_every_row(sizes, cap, seed):
    from anybind import ridge_kernel

    g = torch.Generator().manual_seed(seed)
    held = [(torch.randn(k, 3, generator=g), torch.randn(k, 2, generator=g)) for k in sizes]
    Z, T = torch.cat([z for z, _ in held]), torch.cat([t for _, t in held])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ridge_kernel, "MAX_SUPPORT", cap)
        keep = ridge_kernel.support_rows(len(Z), seed)
        sample = ridge_kernel.SupportSample(seed)
        for z, t in held:
            sample.add(z, t)
        Zs, Ts = sample.rows()
    rows = torch.arange(len(Z)) if keep is None else torch.from_numpy(keep)
    assert len(rows) == min(cap, len(Z)) and torch.equal(Zs, Z[rows]) and torch.equal(Ts, T[rows])


def test_val_scoring_holds_the_kernel_rows_in_chunks_with_identical_scores(fitted, tux_small, shared_cache, monkeypatch):
    import anybind.projectors as projectors

    kern = _with_kernel(fitted)
    whole = _val(kern, tux_small, shared_cache)
    x = np.random.default_rng(0).normal(size=(23, kern.projectors["image"].cfg.in_dim)).astype(np.float32)
    once = kern.project("image", x)
    rows, exp = [], torch.exp
    monkeypatch.setattr(projectors, "KERNEL_ROWS", 5)
    monkeypatch.setattr(torch, "exp", lambda t: rows.append(len(t)) or exp(t))
    assert _val(kern, tux_small, shared_cache) == whole  # 12 val pairs, 5 at a time: the same score
    assert np.allclose(kern.project("image", x), once, atol=1e-6)
    assert rows and max(rows) <= 5


def test_a_kernel_projector_maps_one_unbatched_input_as_its_batched_row(fitted, monkeypatch):
    """The kernel term chunks the inputs, never the feature axis: an unbatched (d,) input (d > KERNEL_ROWS) and a
    (B, T, d) batch map as their rows in a 2-D batch do, the kernel rows still held at most KERNEL_ROWS at a time."""
    import anybind.projectors as projectors

    pr = _with_kernel(fitted).projectors["image"].eval()
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(6, pr.cfg.in_dim)).astype(np.float32))
    with torch.no_grad():
        want = pr(x)
        assert pr(x[:0]).shape == (0, pr.cfg.out_dim)  # no input: no kernel row, an empty output
        rows, exp = [], torch.exp
        monkeypatch.setattr(projectors, "KERNEL_ROWS", 4)
        monkeypatch.setattr(torch, "exp", lambda t: rows.append(t.shape[:-1].numel()) or exp(t))
        assert torch.allclose(pr(x[0]), want[0], atol=1e-6)
        assert torch.allclose(pr(x.reshape(2, 3, -1)), want.reshape(2, 3, -1), atol=1e-6)
    assert rows and max(rows) <= 4

"""Objectives: Symile against a naive loop and the official package, SigLIP, uniformity/alignment,
the intra-modal term, m^2-mix, the loss spec, and the trainer's multimodal path."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybind.losses import (
    Alignment,
    CombinedLoss,
    InfoNCE,
    IntraModal,
    M2Mix,
    SigLIP,
    Symile,
    Uniformity,
    build_loss,
    parse_loss_spec,
    slerp,
    uniformity,
)


def unit(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


def naive_symile_n2(embs, s):
    """Textbook definition: every anchor, every row, every combination of the others, one at a time."""
    M, n = len(embs), embs[0].shape[0]
    total = 0.0
    for m in range(M):
        others = [k for k in range(M) if k != m]
        for i in range(n):
            scores, pos = [], None
            for combo in itertools.product(range(n), repeat=M - 1):
                vec = embs[m][i].clone()
                for k, j in zip(others, combo):
                    vec = vec * embs[k][j]
                val = s * vec.sum()
                scores.append(val)
                if all(j == i for j in combo):
                    pos = val
            total = total + (torch.logsumexp(torch.stack(scores), 0) - pos)
    return total / (M * n)


def naive_symile_n(embs, s, perms):
    """O(N) negatives with given permutations perms[m][k] (anchor m, other modality k)."""
    M, n = len(embs), embs[0].shape[0]
    total = 0.0
    for m in range(M):
        for i in range(n):
            scores = []
            for j in range(n):
                vec = embs[m][i].clone()
                for k in range(M):
                    if k != m:
                        vec = vec * (embs[k][i] if j == i else embs[k][perms[m][k][j]])
                scores.append(s * vec.sum())
            total = total + (torch.logsumexp(torch.stack(scores), 0) - scores[i])
    return total / (M * n)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 5),
    d=st.integers(1, 6),
    M=st.integers(3, 4),
    log_scale=st.floats(-1.0, 4.6),
    seed=st.integers(0, 10_000),
)
def test_symile_n2_equals_naive_loop_values_and_gradients(n, d, M, log_scale, seed):
    embs = [unit(n, d, seed + k).requires_grad_() for k in range(M)]
    ref_embs = [e.detach().clone().requires_grad_() for e in embs]
    ls = torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)
    ls_ref = ls.detach().clone().requires_grad_()
    loss = Symile("n2").forward_multi(embs, ls)["symile"]
    ref = naive_symile_n2(ref_embs, ls_ref.exp())
    assert abs(loss.item() - ref.item()) < 1e-9
    loss.backward()
    ref.backward()
    for a, b in zip(embs, ref_embs):
        assert torch.allclose(a.grad, b.grad, atol=1e-9)
    assert abs(float(ls.grad) - float(ls_ref.grad)) < 1e-9


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 6), d=st.integers(1, 5), M=st.integers(3, 4), seed=st.integers(0, 10_000))
def test_symile_n_equals_naive_loop_with_the_same_permutations(n, d, M, seed):
    embs = [unit(n, d, seed + k) for k in range(M)]
    s = torch.tensor(0.7, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    loss = Symile("n").forward_multi(embs, s, generator=g)["symile"]
    g = torch.Generator().manual_seed(seed)  # replay: anchor by anchor, the other modalities in order
    perms = [{k: torch.randperm(n, generator=g) for k in range(M) if k != m} for m in range(M)]
    ref = naive_symile_n(embs, s.exp(), perms)
    assert abs(loss.item() - ref.item()) < 1e-9


def test_symile_n2_large_scale_takes_the_exact_path_and_stays_finite():
    embs = [unit(24, 3, k, torch.float32) for k in range(3)]
    ls = torch.tensor(math.log(100.0))
    loss = Symile("n2").forward_multi(embs, ls)["symile"]
    assert torch.isfinite(loss)
    exact = (Symile._lse_exact(embs, ls.exp()) - ls.exp() * (embs[0] * embs[1] * embs[2]).sum(1)).mean()
    assert abs(float(loss) - float(exact)) < 1e-4 * max(1.0, abs(float(exact)))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 7), M=st.integers(2, 4), tile=st.integers(1, 60), seed=st.integers(0, 10_000))
def test_symile_n2_tiles_give_the_same_loss_and_gradients_as_one_tile(n, M, tile, seed):
    embs = [unit(n, 3, seed + k).requires_grad_() for k in range(M)]
    ls = torch.tensor(1.5, dtype=torch.float64)
    whole = Symile("n2", tile_bytes=1 << 30).forward_multi(embs, ls)["symile"]
    g_whole = torch.autograd.grad(whole, embs)
    tiled = Symile("n2", tile_bytes=tile * n * 8).forward_multi(embs, ls)["symile"]  # `tile` rows of float64
    g_tiled = torch.autograd.grad(tiled, embs)
    assert abs(whole.item() - tiled.item()) < 1e-12
    for a, b in zip(g_whole, g_tiled):
        assert torch.allclose(a, b, atol=1e-12)


def test_symile_n2_refuses_a_cube_beyond_max_cube_with_advice():
    embs = [unit(20, 4, k) for k in range(3)]
    with pytest.raises(ValueError, match="lower the batch size or use negatives='n'"):
        Symile("n2", max_cube=1000).forward_multi(embs, torch.tensor(1.0, dtype=torch.float64))


def test_symile_matches_the_official_package():
    symile = pytest.importorskip("symile")
    embs = [unit(16, 8, k) for k in range(3)]
    ls = torch.tensor(1.2, dtype=torch.float64)
    ours = Symile("n2").forward_multi(embs, ls)["symile"]
    theirs = symile.Symile("n_squared")(embs, ls.exp())
    assert abs(float(ours) - float(theirs)) < 1e-10
    torch.manual_seed(3)
    theirs = symile.Symile("n")(embs, ls.exp())
    torch.manual_seed(3)
    ours = Symile("n").forward_multi(embs, ls)["symile"]
    assert abs(float(ours) - float(theirs)) < 1e-10


def test_symile_on_two_modalities_is_clip():
    a, b = unit(10, 6, 1), unit(10, 6, 2)
    ls = torch.tensor(2.0, dtype=torch.float64)
    clip = InfoNCE()(a, b, ls)["contrastive"]
    assert abs(float(Symile("n2").forward_multi([a, b], ls)["symile"]) - float(clip)) < 1e-10


def test_siglip_prefers_aligned_pairs_and_learns_its_bias():
    a = unit(32, 16, 0, torch.float32)
    noisy = F.normalize(a + 0.05 * unit(32, 16, 1, torch.float32), dim=-1)
    shuffled = noisy[torch.randperm(32, generator=torch.Generator().manual_seed(0))]
    loss = SigLIP()
    ls = torch.tensor(math.log(10.0))
    aligned, random = loss(a, noisy, ls)["sigmoid"], loss(a, shuffled, ls)["sigmoid"]
    assert aligned < random
    # a few steps on free embeddings lower the loss, and the bias moves
    x = unit(16, 8, 3, torch.float32).requires_grad_()
    y = unit(16, 8, 4, torch.float32).requires_grad_()
    opt = torch.optim.SGD([x, y, *loss.parameters()], lr=0.5)
    first = None
    for _ in range(30):
        opt.zero_grad()
        v = loss(F.normalize(x, dim=-1), F.normalize(y, dim=-1), ls)["sigmoid"]
        first = v.item() if first is None else first
        v.backward()
        opt.step()
    assert v.item() < first
    assert loss.bias.item() != -10.0


def test_uniformity_of_a_collapsed_set_is_higher_than_of_spread_points():
    spread = unit(64, 8, 0)
    collapsed = F.normalize(unit(1, 8, 1) + 0.05 * unit(64, 8, 2), dim=-1)
    assert uniformity(collapsed) > uniformity(spread) + 1.0
    u = Uniformity()
    # joint uniformity sees two far-apart clouds as less uniform than one mixed cloud
    c1 = F.normalize(unit(1, 8, 5) + 0.3 * unit(32, 8, 6), dim=-1)
    c2 = F.normalize(-unit(1, 8, 5) + 0.3 * unit(32, 8, 7), dim=-1)
    assert u(c1, c2, torch.tensor(0.0))["uniformity"] < Uniformity(joint=False)(c1, c2, torch.tensor(0.0))["uniformity"]


def test_alignment_is_zero_for_identical_pairs_and_grows_with_distance():
    a = unit(20, 5, 0)
    assert float(Alignment()(a, a, torch.tensor(0.0))["alignment"]) == 0.0
    near = F.normalize(a + 0.1 * unit(20, 5, 1), dim=-1)
    far = F.normalize(a + 1.0 * unit(20, 5, 1), dim=-1)
    al = Alignment()
    assert al(a, near, torch.tensor(0.0))["alignment"] < al(a, far, torch.tensor(0.0))["alignment"]


def test_intra_term_is_zero_when_the_projection_preserves_similarities():
    xa, xb = torch.randn(20, 12, dtype=torch.float64), torch.randn(20, 7, dtype=torch.float64)
    qa, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    qb, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))
    ea, eb = F.normalize(xa, dim=-1) @ qa, F.normalize(xb, dim=-1) @ qb  # rotations keep every cosine
    term = IntraModal()
    assert abs(float(term(ea, eb, torch.tensor(0.0), feats=(xa, xb))["intra"])) < 1e-12
    scrambled = ea[torch.randperm(20)]
    assert float(term(scrambled, eb, torch.tensor(0.0), feats=(xa, xb))["intra"]) > 0.1
    with pytest.raises(ValueError, match="frozen features"):
        term(ea, eb, torch.tensor(0.0))


def test_slerp_stays_on_the_sphere_and_hits_its_endpoints():
    a, b = unit(10, 6, 0), unit(10, 6, 1)
    for lam in (0.0, 0.3, 0.5, 1.0):
        m = slerp(a, b, lam)
        assert torch.allclose(m.norm(dim=-1), torch.ones(10, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 0.0), b, atol=1e-6)
    # the midpoint is equidistant (geodesically) from both ends
    mid = slerp(a, b, 0.5)
    assert torch.allclose((mid * a).sum(-1), (mid * b).sum(-1), atol=1e-6)
    # identical rows do not produce NaNs
    assert torch.isfinite(slerp(a, a, 0.5)).all()


def test_m2mix_is_finite_and_harder_than_plain_infonce():
    torch.manual_seed(0)
    a = unit(32, 16, 0, torch.float32)
    b = F.normalize(a + 0.3 * unit(32, 16, 1, torch.float32), dim=-1)
    ls = torch.tensor(math.log(20.0))
    mix = M2Mix()(a, b, ls)["m2mix"]
    assert torch.isfinite(mix)
    assert float(mix) > float(InfoNCE()(a, b, ls)["contrastive"])  # mixed negatives sit closer than random ones
    assert torch.isfinite(M2Mix()(a, a.clone(), ls)["m2mix"])


def test_loss_spec_parsing_and_combination():
    assert parse_loss_spec("infonce+uniformity:0.1+intra:0.5") == [("infonce", 1.0), ("uniformity", 0.1), ("intra", 0.5)]
    assert isinstance(build_loss("infonce", label_smoothing=0.1), InfoNCE)
    combo = build_loss("infonce+uniformity:0.1+alignment:2", label_smoothing=0.1)
    assert isinstance(combo, CombinedLoss) and not combo.multimodal
    a, b = unit(8, 4, 0), unit(8, 4, 1)
    ls = torch.tensor(1.0, dtype=torch.float64)
    terms = combo(a, b, ls)
    assert set(terms) == {"contrastive", "uniformity", "alignment"}
    assert torch.isclose(terms["uniformity"], 0.1 * Uniformity()(a, b, ls)["uniformity"])
    assert torch.isclose(terms["alignment"], 2 * Alignment()(a, b, ls)["alignment"])
    sym = build_loss("symile-n2+intra:0.5")
    assert sym.multimodal and sym.needs_features and sym.parts[0].negatives == "n2"
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        build_loss("infonce+nope")
    with pytest.raises(ValueError, match="bad weight"):
        build_loss("infonce+uniformity:lots")


def test_combined_multimodal_call_applies_pairwise_terms_on_observed_rows_only():
    embs = [unit(6, 4, k) for k in range(3)]
    feats = [torch.randn(6, 5, dtype=torch.float64) for _ in range(3)]
    observed = torch.ones(6, 3, dtype=torch.bool)
    observed[:3, 2] = False  # the first three rows lack modality 2
    loss = build_loss("symile+alignment:1")
    terms = loss.forward_multi(embs, torch.tensor(0.5, dtype=torch.float64), observed=observed, feats=feats)
    al = Alignment()
    z = torch.tensor(0.0)
    want = (
        al(embs[0], embs[1], z)["alignment"]
        + al(embs[0][3:], embs[2][3:], z)["alignment"]
        + al(embs[1][3:], embs[2][3:], z)["alignment"]
    ) / 3
    assert torch.isclose(terms["alignment"], want)
    assert "symile" in terms


# -- the trainer ----------------------------------------------------------------------
def tri_modal(tmp_path, n=150, seed=0, missing_c_every=3):
    """Three noisy views of one latent; modality sc is missing from every third record."""
    import json

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    ids = np.array([f"r{i}" for i in range(n)])
    specs = {}
    for name, d in (("sa", 24), ("sb", 16), ("sc", 12)):
        X = z @ rng.normal(size=(8, d)) + 0.5 * rng.normal(size=(n, d))
        np.savez(tmp_path / f"{name}.npz", ids=ids, vectors=X)
        specs[name] = f"vectors:{tmp_path / f'{name}.npz'}"
    cyc = ["train"] * 7 + ["val"] + ["test"] * 2
    with open(tmp_path / "m.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            rec = {"id": str(rid), "split": cyc[i % 10], "sa": True, "sb": True}
            if i % missing_c_every:
                rec["sc"] = True
            f.write(json.dumps(rec) + "\n")
    return tmp_path / "m.jsonl", specs


QUICK = dict(epochs=12, patience=12, hidden=32, dim=16, progress=False, batch_size=32)


def test_trainer_symile_path_learns_and_saves_missing_embeddings(tmp_path):
    from anybind import Space
    from anybind.evaluate import embed_records
    from anybind.multilinear import mip_retrieval_from_embeddings, missing_embeddings

    m, specs = tri_modal(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", loss="symile-n2", **QUICK)
    miss = missing_embeddings(space)
    assert set(miss) == {"sa", "sb", "sc"} and space.info["scoring"] == "mip"
    assert all(abs(np.linalg.norm(v) - 1) < 1e-4 for v in miss.values())
    reloaded = Space.load(space.save(tmp_path / "space"))
    assert missing_embeddings(reloaded).keys() == miss.keys()
    man = __import__("anybind").load_manifest(m, kinds={k: "key" for k in specs})
    embs = embed_records(space, man.split("test"), space.modalities, cache=tmp_path / "c")
    res = mip_retrieval_from_embeddings(embs, miss)
    n = res["sa->sb/n"]
    assert res["sa->sb/R@1"] > 5 / n  # chance is 1/n
    assert res["sc->sa/R@10"] > 0.5


def test_trainer_accepts_combined_pairwise_objectives(tmp_path):
    from anybind import Space

    m, specs = tri_modal(tmp_path)
    space = Space.fit(m, encoders=specs, cache=tmp_path / "c", loss="siglip+intra:0.5+m2mix:0.2", **{**QUICK, "epochs": 6})
    assert any(k.endswith("bias") for k in space.info["training"]["loss_parameters"])
    assert space.info["training"]["best_val"] > 0.3
    with pytest.raises(ValueError, match="unknown loss"):
        Space.fit(m, encoders=specs, cache=tmp_path / "c", loss="triplet", **QUICK)


def test_fit_cli_takes_a_loss_spec(tmp_path):
    import json

    from typer.testing import CliRunner

    from anybind.cli import app

    m, specs = tri_modal(tmp_path, n=80)
    args = ["fit", str(m), "--out", str(tmp_path / "sp"), "--epochs", "3", "--batch-size", "16", "--dim", "8",
            "--loss", "symile+uniformity:0.1", "--missing", "mean", "--cache", str(tmp_path / "c")]
    for mod, spec in specs.items():
        args += ["--encoder", f"{mod}={spec}"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "sp" / "space.json").read_text())
    assert meta["config"]["loss"] == "symile+uniformity:0.1" and meta["config"]["missing"] == "mean"
    assert set(meta["info"]["missing_embeddings"]) == {"sa", "sb", "sc"}
    bad = CliRunner().invoke(app, [a if a != "symile+uniformity:0.1" else "infonce+bogus" for a in args])
    assert bad.exit_code == 2 and "unknown loss 'bogus'" in bad.output


def test_mip_scoring_matches_the_official_similarity_and_reduces_to_cosine():
    from anybind.evaluate import retrieval_from_embeddings
    from anybind.multilinear import mip_predict, mip_retrieval_from_embeddings, mip_scores

    rng = np.random.default_rng(0)
    cands, q1, q2 = (rng.normal(size=(n, 8)).astype(np.float32) for n in (5, 7, 7))
    s = mip_scores(cands, [q1, q2])
    assert s.shape == (7, 5)
    assert np.allclose(s[2, 3], np.sum(q1[2] * q2[2] * cands[3]), atol=1e-5)
    assert (mip_predict(cands, [q1, q2]) == s.argmax(1)).all()
    symile = pytest.importorskip("symile")
    theirs = symile.MIPSimilarity()(torch.from_numpy(cands), [torch.from_numpy(q1), torch.from_numpy(q2)]).numpy()
    assert np.allclose(s, theirs, atol=1e-5)
    ids = [f"r{i}" for i in range(7)]
    embs = {"a": (ids, q1), "b": (ids, q2)}
    assert mip_retrieval_from_embeddings(embs, {}) == retrieval_from_embeddings(embs)  # no third modality: cosine

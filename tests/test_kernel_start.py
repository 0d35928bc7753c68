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

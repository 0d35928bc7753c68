"""The gated kernel branch (issue 16, helper h204): the kernel start's term times the input's kernel value to its
nearest support item, so it is unchanged on the training inputs and fades faster away from them; saved as format 6."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.errors import SpaceError
from anybind.projectors import Projector, ProjectorConfig, kernel_branch
from test_kernel_start import tux_small  # noqa: F401 -- the real Tux Paint fixture


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), d=st.integers(2, 12), out=st.integers(1, 7), b=st.integers(1, 5),
       tau=st.floats(0.05, 3.0))
def test_the_gate_is_the_nearest_support_items_kernel_value(n, d, out, b, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    x, S, A = torch.randn(b, d, generator=g), torch.randn(n, d, generator=g), torch.randn(n, out, generator=g)
    Sn = S / S.norm(dim=1, keepdim=True)
    k = torch.exp((x / x.norm(dim=1, keepdim=True) @ Sn.T - 1) / tau)
    plain, gated = kernel_branch(x, Sn, A, tau), kernel_branch(x, Sn, A, tau, gate=True)
    assert torch.allclose(plain, k @ A, atol=1e-4)
    assert torch.allclose(gated, (k @ A) * k.max(dim=1, keepdim=True).values, atol=1e-4)
    assert (gated.abs() <= plain.abs() + 1e-5).all()  # the gate is at most 1
    # on a support item (at any scale) the gate is exp(0) = 1: the kernel ridge fit is the same gated or not
    assert torch.allclose(kernel_branch(S * 2.5, Sn, A, tau, gate=True), kernel_branch(S * 2.5, Sn, A, tau), atol=1e-4)
    pr = Projector(ProjectorConfig(in_dim=d, out_dim=out, kind="linear", input_dropout=0.0)).eval()
    lin = pr(x)
    pr.set_kernel(S, A, tau, gate=True)
    assert pr.cfg.kernel_gate and torch.allclose(pr(x), lin + gated, atol=1e-4)
    pr.set_kernel(None)
    assert not pr.cfg.kernel_gate and pr.cfg.to_dict() == ProjectorConfig(d, out, "linear", input_dropout=0.0).to_dict()


@pytest.fixture(scope="module")
def gated(tux_small, shared_cache):  # noqa: F811 -- the imported fixture
    kw = dict(modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0)
    return Space.fit(tux_small, kernel_gate=True, **kw), Space.fit(tux_small, **kw)


def test_a_gated_fit_on_real_tux_paint_records_the_gate_and_fades_off_the_support(gated, tux_small, shared_cache):  # noqa: F811
    from anybind.cache import FeatureCache

    sp, plain = gated
    rec = sp.info["lineage"][-1]["ridge_start"]["image"]["kernel"]
    assert rec["gate"] is True and plain.info["lineage"][-1]["ridge_start"]["image"]["kernel"]["gate"] is False
    assert sp.config["kernel_gate"] is True and plain.config["kernel_gate"] is False
    pr = _kernelled(sp).projectors["image"]
    assert pr.cfg.kernel_gate
    enc = sp.encoder("image")
    val = [r.values["image"] for r in tux_small.split("val")]
    train = [r.values["image"] for r in tux_small.split("train")]
    fc = FeatureCache(shared_cache)
    with torch.no_grad():
        zv = pr.standardized(torch.from_numpy(fc.encode(enc, val, progress=False)))
        zt = pr.standardized(torch.from_numpy(fc.encode(enc, train, progress=False)))
        S, A, tau = pr.kernel_support, pr.kernel_coef, pr.cfg.kernel_tau
        gv, pv = kernel_branch(zv, S, A, tau, gate=True), kernel_branch(zv, S, A, tau)
        if len(S) == len(train):  # the kept branch: its support is the training images, where the gate is 1
            assert torch.allclose(kernel_branch(zt, S, A, tau, gate=True), kernel_branch(zt, S, A, tau), atol=1e-3)
    # a val image is no training image: its kernel term is shrunk, by its nearest training image's kernel value
    assert float(gv.norm(dim=1).mean()) < float(pv.norm(dim=1).mean())


def _kernelled(sp):
    """The gated space, given a small gated branch where val did not keep one on this slice."""
    import copy

    sp = copy.deepcopy(sp)
    pr = sp.projectors["image"]
    if not pr.cfg.kernel:
        pr.set_kernel(torch.randn(5, pr.cfg.feat_dim), torch.randn(5, pr.cfg.out_dim) * 0.01, 0.5, gate=True)
    return sp


def test_a_gated_space_saves_as_format_6_and_an_older_format_or_a_bad_flag_is_refused(gated, tmp_path):
    sp = _kernelled(gated[0])
    path = sp.save(tmp_path / "s")
    meta_p = path / "space.json"
    meta = json.loads(meta_p.read_text())
    assert meta["format_version"] == 6 and meta["modalities"]["image"]["projector"]["kernel_gate"] is True
    back = Space.load(path)
    assert back.identity() == sp.identity() and back.projectors["image"].cfg.kernel_gate
    x = np.random.default_rng(0).normal(size=(4, sp.projectors["image"].cfg.in_dim)).astype(np.float32)
    assert np.array_equal(back.project("image", x), sp.project("image", x))
    meta_p.write_text(json.dumps({**meta, "format_version": 5}))
    with pytest.raises(SpaceError, match=r"space\.json.*kernel_gate needs format_version 6") as e:
        Space.load(path)
    assert "\n" not in str(e.value)
    meta["modalities"]["image"]["projector"]["kernel_gate"] = "yes"
    meta_p.write_text(json.dumps(meta))
    with pytest.raises(SpaceError, match=r"space\.json.*kernel_gate is 'yes', expected true or false"):
        Space.load(path)

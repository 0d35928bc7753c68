"""The ridge start's label-bridge prior on training pairs that carry no signal (hostile data, issue 16): every
training caption the same, so the locked targets, centred, are all zero.  The prior's scale cannot be read off such
pairs; the start is then the bridge in its own units -- never a zero map, whose val score is a tie-break and whose
embeddings are all alike -- and the same training-free start in memory and streaming, whatever the shard size.
And a class-anchor weight so large the ridge start overflows: never NaN or infinite weights saved."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.errors import DataError
from anybind.ridge_kernel import scaled_prior


@settings(max_examples=30, deadline=None)
@given(d_in=st.integers(1, 6), d_out=st.integers(1, 5), seed=st.integers(0, 2**31), zero_g=st.booleans())
def test_a_prior_scaled_onto_targets_with_no_signal_is_the_prior_itself(d_in, d_out, seed, zero_g):
    """No training targets' spread (R = 0, ||T||^2 = 0): ``c`` is 1, the prior as it is (it reads the bridge back in
    the locked encoder's units), not 0."""
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(d_in, d_out, generator=g, dtype=torch.float64)
    Z = torch.randn(8, d_in, generator=g, dtype=torch.float64)
    G = torch.zeros(d_in, d_in, dtype=torch.float64) if zero_g else Z.T @ Z
    W0 = scaled_prior(G, torch.zeros(d_in, d_out, dtype=torch.float64), P, 0.0)
    assert torch.isfinite(W0).all() and torch.allclose(W0, P)


def test_a_prior_scaled_onto_real_targets_keeps_its_least_squares_scale():
    """Targets that do carry signal: ``c = <Z P, T> / ||Z P||^2`` as before (positive), untouched by the fallback."""
    g = torch.Generator().manual_seed(0)
    P = torch.randn(4, 3, generator=g, dtype=torch.float64)
    Z = torch.randn(20, 4, generator=g, dtype=torch.float64)
    T = 2.5 * (Z @ P)
    W0 = scaled_prior(Z.T @ Z, Z.T @ T, P, float(T.pow(2).sum()))
    assert torch.allclose(W0, 2.5 * P)


@pytest.fixture(scope="module")
def same_captions(tux_subset):
    """4 real Tux Paint stamps in train, every caption the same, and 3 in val with their own captions."""
    man = tux_subset(7, 100, "same-captions")
    out = man.path.with_name("same-captions.jsonl")
    out.write_text("".join(json.dumps({"id": r.id, "split": "train" if i < 4 else "val", "image": r.values["image"],
                                       "text": "A thing." if i < 4 else r.values["text"]}) + "\n"
                           for i, r in enumerate(man.records)))
    return out


def test_the_label_bridge_start_is_the_bridge_in_memory_and_in_one_row_shards(same_captions, shared_cache,
                                                                              monkeypatch):
    """The training-free start (the label bridge, scaled) is a non-zero map in both trainers, in one-row and two-row
    shards too, and scores the same on the same val pairs (before: zero targets scaled the prior to a zero map,
    every image embedded alike, its val score a tie-break)."""
    import anybind.ridge as ridge
    from anybind.scale.sharded import fit_sharded

    scaled, real = [], ridge.scaled_prior
    monkeypatch.setattr(ridge, "scaled_prior", lambda *a: scaled.append(real(*a)) or scaled[-1])
    common = dict(modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, kernel_start=False)
    mem = Space.fit(same_captions, select_se=0.0, **common)
    starts = [mem.info["lineage"][-1]["ridge_start"]["image"]["guard"]["start_val"]]
    for rows in (1, 2):
        sp = fit_sharded(same_captions, rows_per_shard=rows, **common)
        starts.append(sp.info["lineage"][-1]["ridge_start"]["image"]["guard"]["start_val"])
    assert len(scaled) == 3 and all(float(W0.abs().max()) > 0 for W0 in scaled)
    assert all(torch.allclose(W0, scaled[0]) for W0 in scaled[1:])
    assert len(set(starts)) == 1, starts


ANCHOR_KW = dict(modalities=["image", "text"], epochs=0, progress=False, seed=0, kernel_start=False)


@pytest.fixture(scope="module")
def anchors_tux(tux_subset):
    """60 real Tux Paint stamps, every fifth in val: 48 training pairs (test_bridge_anchors' data)."""
    return tux_subset(60, 5, "anchors-overflow")


@pytest.mark.parametrize("stream", [False, True])
def test_a_weight_so_large_the_anchors_overflow_is_refused_not_saved_as_nan(anchors_tux, shared_cache, stream):
    """bridge_anchors=1e308 passes the weight check (a finite number >= 0) but x the training pairs overflows the
    ridge start's normal equations: refused in one line naming the anchors, in memory and streaming (before: the
    NaN map scored a perfect val, was kept, and saved with NaN weights)."""
    with pytest.raises(DataError, match="bridge_anchors") as e:
        _fit(stream)(anchors_tux, cache=shared_cache, bridge_anchors=1e308, start_guard=False, **ANCHOR_KW)
    assert "\n" not in str(e.value) and "overflow" in str(e.value), str(e.value)


@pytest.mark.parametrize("stream", [False, True])
def test_a_weight_whose_maps_overflow_some_alphas_saves_a_finite_start(anchors_tux, shared_cache, stream):
    """bridge_anchors=1e150: the normal equations are finite but the maps solved at some alphas are not (in float32);
    those score last on val (never a perfect R@1 as before), a finite alpha is chosen, and the space holds no NaN or
    infinity (before: NaN / infinite image weights saved)."""
    sp = _fit(stream)(anchors_tux, cache=shared_cache, bridge_anchors=1e150, start_guard=False, **ANCHOR_KW)
    assert all(torch.isfinite(v).all() for p in sp.projectors.values() for v in p.state_dict().values())
    assert sp.info["training"]["robust"]["ridge"]["image"]["alpha"] is not None


def _fit(stream: bool):
    from anybind.scale.sharded import fit_sharded

    return (lambda m, **k: fit_sharded(m.path, **k)) if stream else Space.fit

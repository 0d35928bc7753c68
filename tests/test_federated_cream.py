"""CreamFL's pieces (issue 19): the relational distillation ignores a rotation of the ensemble that the feature
regression pays for; the ensemble weights the client that agrees with the global model; clients that start each
round from the global projectors (``client_init="global"``) do so, pay for it in training bytes, and still send
nothing private; the MOON negative (``intra="moon"``: the client's previous-round projectors) is live where the
round-start one is inert, moves training, stays on the client and is deterministic."""

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import load_manifest
from anybind.federated import federate, federated_config
from anybind.errors import FederationError
from anybind.federated_cream import CreamBinder, KDBinder, ensemble
from anybind.federated_parties import embed_public
from anybind.losses import build_loss
from anybind.projectors import Projector, ProjectorConfig

from federated_helpers import only_public_rows, public_embeddings, watching
from federated_helpers import CFG, KINDS, world  # noqa: F401  (the fixture)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def _binder(kd: str, targets, public, projs):
    return KDBinder(projs, torch.nn.Parameter(torch.tensor(np.log(20.0))), build_loss("infonce"), public, targets,
                    1.0, kd=kd, temperature=0.1)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_relational_distillation_ignores_a_rotation_the_feature_one_pays_for(seed):
    g = torch.Generator().manual_seed(seed)
    public = {m: torch.randn(24, 10, generator=g) for m in ("a", "b")}
    projs = {m: Projector(ProjectorConfig(in_dim=10, out_dim=8, kind="linear")).eval() for m in ("a", "b")}
    idx = torch.arange(24)
    with torch.no_grad():
        emb = {m: _unit(projs[m](public[m])) for m in ("a", "b")}
        q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
        rotated = {m: e @ q for m, e in emb.items()}  # the same space, turned
        other = {m: _unit(torch.randn(24, 8, generator=g)) for m in ("a", "b")}  # a different space
        rel = {name: float(_binder("relation", t, public, projs).distillation(emb, idx))
               for name, t in (("same", emb), ("rotated", rotated), ("other", other))}
        feat = {name: float(_binder("feature", t, public, projs).distillation(emb, idx))
                for name, t in (("same", emb), ("rotated", rotated))}
        both = float(_binder("both", rotated, public, projs).distillation(emb, idx))
    assert rel["same"] == pytest.approx(0, abs=1e-5) and rel["rotated"] == pytest.approx(0, abs=1e-4)
    assert rel["other"] > 0.05
    assert feat["same"] == pytest.approx(0, abs=1e-6) and feat["rotated"] > 0.1
    assert both == pytest.approx(feat["rotated"] + rel["rotated"], rel=1e-4, abs=1e-4)


def test_kd_binder_trains_towards_the_relations_of_its_targets():
    g = torch.Generator().manual_seed(0)
    public = {m: torch.randn(32, 10, generator=g) for m in ("a", "b")}
    projs = {m: Projector(ProjectorConfig(in_dim=10, out_dim=8, kind="linear")) for m in ("a", "b")}
    teacher = {m: Projector(ProjectorConfig(in_dim=10, out_dim=8, kind="linear")).eval() for m in ("a", "b")}
    with torch.no_grad():
        targets = {m: _unit(teacher[m](public[m])) for m in ("a", "b")}
    kd = _binder("relation", targets, public, projs)
    kd.weight = 10.0
    opt = torch.optim.Adam([p for m in projs.values() for p in m.parameters()], lr=1e-2)
    idx = np.arange(32)

    def gap() -> float:
        with torch.no_grad():
            emb = {m: _unit(p.eval()(public[m])) for m, p in projs.items()}
            return float(kd.distillation(emb, torch.as_tensor(idx)))

    before = gap()
    for _ in range(150):
        for p in projs.values():
            p.train()
        opt.zero_grad()
        kd(idx).backward()
        opt.step()
    assert gap() < 0.5 * before


def test_ensemble_weights_the_client_that_agrees_with_the_global_model():
    g = torch.Generator().manual_seed(1)
    glob = {m: _unit(torch.randn(40, 8, generator=g)) for m in ("a", "b")}
    agree = glob["b"].clone()  # retrieves each item's global b-embedding first
    noise = _unit(torch.randn(40, 8, generator=g))
    out = ensemble({"a": [agree, noise], "b": []}, glob, temperature=0.1)
    assert set(out) == {"a"}  # nobody sent b: no target for it
    w_agree = ((out["a"] - noise) * (agree - noise)).sum(-1) / (agree - noise).pow(2).sum(-1)  # the weight on agree
    assert (w_agree > 0.5).float().mean() > 0.9
    same = ensemble({"a": [agree, agree.clone()]}, glob, temperature=0.1)  # equal clients: their plain mean
    assert torch.allclose(same["a"], agree, atol=1e-6)


def test_a_bad_creamfl_option_is_one_line():
    for bad in ({"kd": "logits"}, {"client_init": "fedavg"}, {"intra": "previous"}):
        with pytest.raises(ValueError) as ei:
            federated_config(bad)
        assert "\n" not in str(ei.value) and next(iter(bad.values())) in str(ei.value)
    # a temperature of 0 or less, or a negative or NaN weight, would train NaN projectors: refused, named
    for bad in ({"kd_temperature": 0.0}, {"reg_temperature": -0.5}, {"kd_weight": -1.0}, {"reg_weight": float("nan")}):
        with pytest.raises(ValueError) as ei:
            federated_config(bad)
        (name, value), = bad.items()
        assert "\n" not in str(ei.value) and name in str(ei.value) and repr(value) in str(ei.value)


@pytest.mark.parametrize("init", ["own", "global"])
def test_clients_start_each_round_from_the_global_model_only_when_asked(world, init):  # noqa: F811
    tmp, path, specs, cpaths, ppath, row_of, feats = world
    starts: list[bool] = []  # per client and round: its projectors equal the global ones after a global message
    public_only: list[bool] = []  # per client and round: its public-embeddings reply recomputed from public rows
    held: list = []

    def watch(i, c, msg, handle):
        reply = handle(msg)
        if msg.kind == "global":
            starts.append(all(np.array_equal(v.numpy(), msg.arrays[f"{m}.{k}"])
                              for m in c.modalities for k, v in c.projectors[m].state_dict().items()))
        if reply.kind == "public-embeddings":  # what it sent is its projectors on the public rows only
            public_only.append(only_public_rows(c, reply))
        return reply

    seen = []
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="creamfl", client_init=init,
                  runner=watching(watch, held),
                  on_message=lambda way, i, msg: seen.append((way, i, msg)), **{**CFG, "rounds": 3, "patience": 3})
    n = len(held)
    assert all(starts[:n])  # round 0: every client starts from the global model
    assert all(starts[n:]) if init == "global" else not any(starts[n:])
    b = sp.info["lineage"][-1]["bytes"]
    glob = sum(m.nbytes() for way, _, m in seen if m.kind == "global")
    val = sum(m.nbytes() for way, _, m in seen if m.kind == "val")
    assert b["evaluation"] == (val if init == "global" else val + glob)  # the weights they start from are training
    up = [m for way, _, m in seen if way == "up"]
    assert {m.kind for m in up} == {"val", "public-embeddings"}
    private = [r.id for p in cpaths for r in load_manifest(p, kinds=KINDS).records]
    assert not any(pid in json.dumps([[m.kind, sorted(m.arrays), sorted(m.counts)] for m in up]) for pid in private)
    # (no private feature row can cross: the embeddings are 16-d, the features 40-d and 30-d, and check_message
    # refuses any other shape; what does cross is each client's projectors applied to the public rows, nothing else)
    assert len(public_only) == 3 * len(held) and all(public_only)


def test_mixes_of_public_pairs_cross_as_public_rows_only(world):  # noqa: F811
    tmp, path, specs, cpaths, ppath, row_of, feats = world
    seen = []
    k = 30
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="creamfl", kd_mix=k,
                  on_message=lambda way, i, msg: seen.append((way, i, msg)), **{**CFG, "rounds": 2, "patience": 2})
    n_pub = len(load_manifest(ppath, kinds=KINDS).records)
    train = [m for way, _, m in seen if m.kind == "train"]
    pairs = [m.arrays["mix.pairs"] for m in train]
    assert all(p.shape == (k, 2) and p.min() >= 0 and p.max() < n_pub for p in pairs)
    assert not np.array_equal(pairs[0], pairs[-1])  # fresh mixes each round
    emb = [m for way, _, m in seen if m.kind == "public-embeddings"]
    assert emb and all(a.shape == (n_pub + k, 16) for m in emb for a in m.arrays.values())
    assert sp.info["lineage"][-1]["config"]["kd_mix"] == k
    # a mix naming a row outside the public set is refused at the boundary
    from anybind.federated_parties import Message, check_message

    bad = Message("server", "train", {"mix.pairs": np.array([[0, n_pub]]), "mix.weights": np.array([0.5])})
    with pytest.raises(FederationError) as ei:
        check_message(bad, shapes={}, n_public=n_pub, dim=16, n_mix=1)
    assert "outside the public set" in str(ei.value) and "\n" not in str(ei.value)
    up = emb[0].arrays["sa"]  # unit embeddings, no feature row of the client's
    assert np.isfinite(up).all() and np.allclose(np.linalg.norm(up, axis=1), 1, atol=1e-4)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 12), k=st.integers(0, 20), seed=st.integers(0, 1000))
def test_a_mix_is_the_same_blend_of_the_same_two_pairs_in_every_modality(n, k, seed):
    from anybind.federated_parties import mixed

    rng = np.random.default_rng(seed)
    public = {"a": rng.normal(size=(n, 5)).astype(np.float32), "b": rng.normal(size=(n, 3)).astype(np.float32)}
    mix = {"mix.pairs": rng.integers(0, n, (k, 2)), "mix.weights": rng.uniform(0, 1, k).astype(np.float32)}
    out = mixed(public, mix)
    for m, x in public.items():
        assert out[m].shape == (n + k, x.shape[1]) and np.array_equal(out[m][:n], x)
        for r, ((i, j), w) in enumerate(zip(mix["mix.pairs"], mix["mix.weights"])):
            assert np.allclose(out[m][n + r], w * x[i] + (1 - w) * x[j], atol=1e-5)
    assert mixed(public, None) == public


def _watched(held: list, sent: list):
    """A runner keeping the in-process clients (``held``) and, per client reply, ``(client, kind, reply, the
    client's current public embeddings, its kept previous-round ones or None)`` (``sent``)."""

    def watch(i, c, msg, handle):
        prev = None if c._prev is None else public_embeddings(c, c._prev)
        reply = handle(msg)
        sent.append((i, reply.kind, reply, public_embeddings(c), prev))
        return reply

    return watching(watch, held)


def _moon(world, intra, rounds=3, **kw):  # noqa: F811
    tmp, _, specs, cpaths, ppath, *_ = world
    held, sent, seen = [], [], []
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="creamfl", client_init="global", intra=intra,
                  runner=_watched(held, sent), on_message=lambda way, i, msg: seen.append((way, i, msg)),
                  **{**CFG, "rounds": rounds, "patience": rounds, **kw})
    return sp, held, sent, seen


def test_the_moon_negative_is_live_where_the_round_start_one_is_inert(world):  # noqa: F811
    _, held, _, seen = _moon(world, "moon", rounds=2)
    c = held[0]
    assert c._prev is not None  # the client kept its last round's projectors
    glob_msg = [m for way, _, m in seen if m.kind == "global"][-1]
    glob = {m: torch.from_numpy(v) for m, v in embed_public(c._projectors_like(glob_msg), {
        m: v.numpy() for m, v in c.public.items()}).items()}
    mine = {m: c.projectors[m] for m in c.modalities}  # the global model: clients start the next round from it
    idx = torch.arange(len(next(iter(c.public.values()))))

    def term(old):
        b = CreamBinder(mine, old, c.logit_scale, c.loss_fn, c.public, glob, weight=1.0, temperature=0.5)
        for p in mine.values():
            p.zero_grad()
        e = torch.nn.functional.normalize(mine["sa"](c.public["sa"][idx]), dim=-1)
        loss = b.intra("sa", e, idx)
        loss.backward()
        grad = sum(float(p.grad.norm()) for p in mine["sa"].parameters() if p.grad is not None)
        return float(loss.detach()), grad

    start = {m: copy.deepcopy(p).eval() for m, p in mine.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loss_start, grad_start = term(start)
        torch.manual_seed(0)
        loss_moon, grad_moon = term(c._prev)
    assert loss_start == pytest.approx(np.log(2), abs=1e-5) and grad_start < 1e-5  # contrasts the global with itself
    assert abs(loss_moon - np.log(2)) > 1e-3 and grad_moon > 1e-3  # the previous round's model differs: a pull


def test_the_moon_negative_moves_training_from_the_second_round_on(world):  # noqa: F811
    _, held_s, sent_s, _ = _moon(world, "start")
    _, _, sent_m, _ = _moon(world, "moon")
    emb_s = [r for _, k, r, *_ in sent_s if k == "public-embeddings"]
    emb_m = [r for _, k, r, *_ in sent_m if k == "public-embeddings"]
    n = len(held_s)
    assert len(emb_s) == len(emb_m) == 3 * n
    same = [all(np.array_equal(a.arrays[m], b.arrays[m]) for m in a.arrays) for a, b in zip(emb_s, emb_m)]
    assert all(same[:n])  # round 1: no previous round, the negative is the start (as in MOON)
    assert not any(same[n:])  # then the previous local model pulls every client elsewhere
    assert all(c._prev is None for c in held_s)  # intra="start" keeps nothing


def test_the_previous_local_model_stays_on_the_client(world):  # noqa: F811
    cpaths = world[3]
    sp_s, _, _, seen_s = _moon(world, "start")
    sp_m, held, sent, seen_m = _moon(world, "moon")
    shape = [(way, i, m.kind, {k: a.shape for k, a in m.arrays.items()}, sorted(m.counts)) for way, i, m in seen_m]
    assert shape == [(way, i, m.kind, {k: a.shape for k, a in m.arrays.items()}, sorted(m.counts))
                     for way, i, m in seen_s]  # the same messages cross, array for array
    assert sp_m.info["lineage"][-1]["bytes"] == sp_s.info["lineage"][-1]["bytes"]
    n = len(held)
    emb = [(i, r, now, prev) for i, k, r, now, prev in sent if k == "public-embeddings"]
    for j, (i, r, now, prev) in enumerate(emb):
        assert all(np.array_equal(r.arrays[m], now[m]) for m in now)  # what it sends: its current model, public rows
        if j >= n:  # the negative it trained against (last round's model) is not what it sends
            assert prev is not None and not any(np.allclose(r.arrays[m], prev[m], atol=1e-4) for m in prev)
    private = [r.id for p in cpaths for r in load_manifest(p, kinds=KINDS).records]
    assert not any(pid in json.dumps([[m.kind, sorted(m.arrays), sorted(m.counts)] for way, _, m in seen_m
                                      if way == "up"]) for pid in private)
    assert sp_m.info["lineage"][-1]["config"]["intra"] == "moon"


def test_the_moon_negative_is_deterministic(world):  # noqa: F811
    a, *_ = _moon(world, "moon")
    b, *_ = _moon(world, "moon")
    for m in a.projectors:
        sa, sb = a.projectors[m].state_dict(), b.projectors[m].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.info["training"]["history"] == b.info["training"]["history"]

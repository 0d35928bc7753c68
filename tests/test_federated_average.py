"""CreamFL with FedAvg's step (issue 19, ``average=True``): the clients send their projector weights beside their
public embeddings (nothing else: no private row, no record id), the server starts each round's distillation from
their training-pair-weighted average, and a weight array is refused in a public-embeddings message otherwise."""

import json

import numpy as np
import pytest
from federated_helpers import public_embeddings, watching
from federated_helpers import CFG, KINDS, world  # noqa: F401  (the fixture)

from anybind import load_manifest
from anybind.errors import FederationError
from anybind.federated import federate
from anybind.federated_parties import Message, Server, check_message


def test_average_sends_weights_beside_public_embeddings_and_distils_from_their_mean(world, monkeypatch):  # noqa: F811
    tmp, _, specs, cpaths, ppath, *_ = world
    seen: list[tuple[str, int, Message]] = []
    sent_ok: list[bool] = []  # each reply: its embeddings are the client's projectors on the public rows, its
    # weights the client's own parameters
    starts: list[dict[str, np.ndarray]] = []  # the server's parameters as each distillation begins
    real = Server.distil

    def distil(self, epochs):
        starts.append({f"{m}.{k}": v.detach().numpy().copy() for m, p in self.projectors.items()
                       for k, v in p.named_parameters()})
        return real(self, epochs)

    def watch(i, c, msg, handle):
        reply = handle(msg)
        if reply.kind == "public-embeddings":
            emb = public_embeddings(c)
            params = {f"{m}.{k}": v.detach().numpy() for m in c.modalities for k, v in c.projectors[m].named_parameters()}
            sent_ok.append(set(reply.arrays) == set(emb) | set(params) | {"logit_scale"}
                           and all(np.array_equal(reply.arrays[k], v) for k, v in {**emb, **params}.items()))
        return reply

    monkeypatch.setattr(Server, "distil", distil)
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="creamfl", average=True, runner=watching(watch),
                  on_message=lambda way, i, msg: seen.append((way, i, msg)), **{**CFG, "rounds": 2, "patience": 2})
    up = [m for way, _, m in seen if way == "up" and m.kind == "public-embeddings"]
    assert len(up) == 2 * len(cpaths) and len(sent_ok) == len(up) and all(sent_ok)
    private = [r.id for p in cpaths for r in load_manifest(p, kinds=KINDS).records]
    assert not any(pid in json.dumps([[m.kind, sorted(m.arrays), sorted(m.counts)] for m in up]) for pid in private)
    # starts[0] is the server's start on the public pairs; each round's distillation starts from the clients' mean
    assert len(starts) == 3
    for r in range(2):
        replies = up[r * len(cpaths):(r + 1) * len(cpaths)]
        n = np.asarray([float(m.counts["n"]) for m in replies])
        for k, v in starts[r + 1].items():
            assert np.allclose(v, sum(w * m.arrays[k] for w, m in zip(n / n.sum(), replies)), atol=1e-6), (r, k)
    assert sp.info["lineage"][-1]["config"]["average"] is True
    assert sp.info["lineage"][-1]["bytes"]["up"] == sum(m.nbytes() for m in up)


def test_weights_cross_in_public_embeddings_only_when_averaging():
    shapes = {"sa.linear.weight": (16, 40), "logit_scale": ()}
    msg = Message("client", "public-embeddings", {"sa": np.zeros((5, 16), np.float32),
                                                  "sa.linear.weight": np.zeros((16, 40), np.float32)})
    check_message(msg, shapes=shapes, n_public=5, dim=16, weights_too=True)
    with pytest.raises(FederationError) as ei:
        check_message(msg, shapes=shapes, n_public=5, dim=16)
    assert "\n" not in str(ei.value) and "sa.linear.weight" in str(ei.value)
    wrong = Message("client", "public-embeddings", {"sa.linear.weight": np.zeros((40, 16), np.float32)})
    with pytest.raises(FederationError):  # a weight of the wrong shape (a private feature block would be one)
        check_message(wrong, shapes=shapes, n_public=5, dim=16, weights_too=True)


def test_average_is_a_creamfl_option_refused_elsewhere_in_one_line(world):  # noqa: F811
    tmp, _, specs, cpaths, ppath, *_ = world
    for bad, err in (({"method": "fedavg", "average": True}, ValueError), ({"average": 1}, TypeError)):
        with pytest.raises(err) as ei:
            federate(cpaths, ppath, encoders=specs, cache=tmp / "c", **{**CFG, **bad})
        assert "\n" not in str(ei.value) and "average" in str(ei.value)


def test_bench_average_sets_the_creamfl_rows_only(monkeypatch, tmp_path):
    import anybind.data.manifest as manifest_mod
    import anybind.federated_study as study
    from anybind.bench import tasks_keep

    calls = []

    def fake_study(man, *, methods=("fedavg", "creamfl"), variants=None, config=None, **kw):
        calls.append((tuple(methods), dict(variants or {}), dict(config or {})))
        names = ["public set alone", *methods, *(variants or {}), "centralised (union + public)"]
        return [{"name": n, "test R@1": 0.1, "val": 0.5, "records": 1, "best/run": "1/1", "bytes/round": 1,
                 "hits": [0.0, 1.0]} for n in names]

    monkeypatch.setattr(study, "federated_study", fake_study)
    monkeypatch.setattr(tasks_keep, "prepare_tuxpaint", lambda work: tmp_path / "m.jsonl")
    monkeypatch.setattr(manifest_mod, "load_manifest", lambda *a, **k: None)
    for opt, want in (({}, False), ({"average": "1"}, True), ({"average": "0"}, False)):
        tasks_keep.federated(tmp_path, fit="0", intra="start,moon", **opt)
        methods, variants, config = calls[-1]
        assert methods == ("fedavg",) and "average" not in config  # FedAvg and the baselines refuse it
        creams = {n: v for n, v in variants.items() if n.startswith("creamfl") and n != "creamfl (session 8)"}
        assert set(creams) == {"creamfl", "creamfl (intra=moon)"}
        assert all(v.get("average", False) is want and v["method"] == "creamfl" for v in creams.values()), opt
        assert "average" not in variants[tasks_keep.FEDAVG_PUBLIC_ROW]


def test_cli_federate_average(world, tmp_path, monkeypatch):  # noqa: F811
    from typer.testing import CliRunner

    from anybind import Space
    from anybind.cli import app

    tmp, path, specs, *_ = world
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    args = ["federate", "--data", str(path), "--clients", "3", "--public-fraction", "0.1", *enc, "--cache",
            str(tmp / "c"), "--rounds", "1", "--dim", "16", "--hidden", "32"]
    r = CliRunner().invoke(app, [*args, "--average", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    sp = Space.load(tmp_path / "s")
    e = sp.info["lineage"][-1]
    # the flag reaches the library: a creamfl federation whose clients sent their projector weights up with their
    # public embeddings (plain creamfl sends the embeddings alone, far fewer bytes than the weights here)
    assert e["method"] == "creamfl" and e["config"]["average"] is True and "FedAvg step" in r.output
    weights = sum(p.numel() * 4 for m in sp.projectors for p in sp.projectors[m].parameters())
    assert e["bytes"]["by_kind"]["public-embeddings"] > e["rounds_run"] * e["clients"] * weights
    # --no-average (the default) asks the library for plain creamfl
    import anybind.space

    asked = []
    monkeypatch.setattr(anybind.space.Space, "federate", classmethod(lambda cls, *a, **kw: asked.append(kw) or sp))
    for flags in ([], ["--no-average"]):
        r = CliRunner().invoke(app, [*args, *flags, "--out", str(tmp_path / f"s{len(flags)}")])
        assert r.exit_code == 0 and asked[-1]["average"] is False and "FedAvg step" not in r.output, r.output
    monkeypatch.undo()
    r = CliRunner().invoke(app, [*args, "--average", "--method", "fedavg", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "average applies to method 'creamfl'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_bench_average_both_runs_plain_and_averaging_creamfl_side_by_side(monkeypatch, tmp_path):
    import anybind.data.manifest as manifest_mod
    import anybind.federated_study as study
    from anybind.bench import tasks_keep

    calls = []

    def fake_study(man, *, methods=("fedavg", "creamfl"), variants=None, config=None, **kw):
        calls.append(dict(variants or {}))
        names = ["public set alone", *methods, *(variants or {}), "centralised (union + public)"]
        return [{"name": n, "test R@1": 0.1, "val": 0.5, "records": 1, "best/run": "1/1", "bytes/round": 1,
                 "hits": [0.0, 1.0]} for n in names]

    monkeypatch.setattr(study, "federated_study", fake_study)
    monkeypatch.setattr(tasks_keep, "prepare_tuxpaint", lambda work: tmp_path / "m.jsonl")
    monkeypatch.setattr(manifest_mod, "load_manifest", lambda *a, **k: None)
    # average=0,1: the creamfl row plain (the first value), a row "creamfl (average=1)" beside it, one run
    res = tasks_keep.federated(tmp_path, fit="0", before="0", average="0,1")
    v = calls[-1]
    assert v["creamfl"] == {"method": "creamfl"} and v["creamfl (average=1)"] == {"method": "creamfl", "average": True}
    assert {r["name"] for r in res.table} >= {"creamfl", "creamfl (average=1)"}
    tasks_keep.federated(tmp_path, fit="0", before="0", average="1,0")
    assert calls[-1]["creamfl"]["average"] is True and calls[-1]["creamfl (average=0)"] == {"method": "creamfl"}
    # anything but 0/1 (once each) is refused in one line, before any work
    monkeypatch.setattr(tasks_keep, "prepare_tuxpaint", lambda work: calls.append("built"))
    n = len(calls)
    for bad in ("2", "1,1", "yes,0"):
        with pytest.raises(ValueError) as ei:
            tasks_keep.federated(tmp_path, fit="0", average=bad)
        assert "\n" not in str(ei.value) and "average" in str(ei.value) and len(calls) == n

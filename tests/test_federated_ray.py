"""Federated clients as Ray actors (issue 19): on real Tux Paint stamps, the space bound with 2 client actors on a
local Ray equals the one bound in-process for the same seed, message for message, and only the protocol's messages
leave a client (no private record id, no row of a private feature matrix); ``anybind federate --ray`` too.

One test (a local Ray takes 20-60 s to start here)."""


import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind import Space
from anybind.cache import FeatureCache
from anybind.cli import app
from anybind.errors import AnybindError
from anybind.federated import federate
from anybind.federated_study import split_clients
from anybind.train import FeatureSet
from federated_helpers import nothing_private_left, small_tux, write_manifest

# under pytest-xdist the Ray modules run on one worker, one after the other (conftest.py): one local Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

ENC = {"image": "image:efficientnet-lite0", "text": "text:minilm"}
CFG = dict(dim=16, hidden=32, rounds=2, patience=2, lr=3e-3, batch_size=16, seed=3)


def test_ray_client_actors_bind_the_same_space_and_send_only_the_protocol(tux_dir, shared_cache, tmp_path,
                                                                          monkeypatch):
    ray = pytest.importorskip("ray")
    from anybind.scale import federated_ray, free_cpus, init_ray, reserve, shutdown_ray
    from anybind.scale.federated_ray import federate_on_ray

    man = small_tux(tux_dir, tmp_path)
    FeatureSet.from_manifests([man], ENC, FeatureCache(shared_cache), progress=False)  # encoded once, here
    clients, public = split_clients(man, 2, by=None, public_fraction=0.25, seed=0)
    cpaths = [write_manifest(c, tmp_path / f"client{i}.jsonl") for i, c in enumerate(clients)]
    ppath = write_manifest(public, tmp_path / "public.jsonl")

    def run(method, on_ray):
        seen = []
        kw = dict(encoders=ENC, cache=shared_cache, method=method, on_message=lambda *a: seen.append(a), **CFG)
        sp = federate_on_ray(cpaths, ppath, **kw) if on_ray else federate(cpaths, ppath, **kw)
        return sp, seen

    # the local node holds client 1's data: its actor is pinned there (as on a cluster, test_federated_cluster)
    started = init_ray(num_cpus=2, resources={"anybind_client_1": 1})
    try:
        assert ray.cluster_resources().get("anybind_client_1") == 1.0  # this test's own Ray
        for method in ("creamfl", "fedavg"):
            (here, seen_here), (there, seen_there) = run(method, False), run(method, True)
            for m in ENC:
                a, b = here.projectors[m].state_dict(), there.projectors[m].state_dict()
                assert all(torch.equal(a[k], b[k]) for k in a), (method, m)
            assert here.logit_scale == there.logit_scale
            assert type(there) is Space  # the public class, as every entry point above the trainers hands out
            assert here.info["training"]["history"] == there.info["training"]["history"]
            assert there.info["lineage"][-1]["clients_ran"] == "ray" != here.info["lineage"][-1]["clients_ran"]
            assert [(w, i, m.kind) for w, i, m in seen_here] == [(w, i, m.kind) for w, i, m in seen_there]
            for (_, _, x), (_, _, y) in zip(seen_here, seen_there):
                assert x.counts == y.counts and x.arrays.keys() == y.arrays.keys()
                assert all(np.array_equal(x.arrays[k], y.arrays[k]) for k in x.arrays)
            # what left a client actor: only the protocol's kinds, numbers, no private id or feature row
            up = [(i, m) for w, i, m in seen_there if w == "up"]
            assert {m.kind for _, m in up} == {"val", "public-embeddings" if method == "creamfl" else "weights"}
            nothing_private_left(clients, up, ENC, shared_cache)
        with pytest.raises(AnybindError) as ei:  # a client's own error, raised in its actor, reaches the driver
            federate_on_ray([cpaths[0], tmp_path / "gone.jsonl"], ppath, encoders=ENC, cache=shared_cache, **CFG)
        assert "\n" not in str(ei.value) and "gone.jsonl" in str(ei.value)
        assert free_cpus(wait=60, at_least=2.0) == pytest.approx(2.0)  # every client actor gone: its CPUs back
        # a client Ray cannot place waited forever, silently: now refused after a bounded wait, in one line naming
        # the client and what it asked for beside what the cluster has (pinned clients are placed first)
        monkeypatch.setattr(federated_ray, "PLACE_WAIT_S", 1.0)
        monkeypatch.setattr(reserve, "PROBE_S", 0.3)
        for cpus, message, has in [
            (3, "federated client 1 (pinned by the Ray resource anybind_client_1): the Ray cluster did not give 1 x "
                "(3 CPU, 0.01 anybind_client_1) within 1 s (no node has that much: the node(s) with anybind_client_1 "
                "have ", "2 CPU, 1 anybind_client_1"),
            (1.5, "federated client 0: the Ray cluster did not give 1 x 1.5 CPU within 1 s (",
             "of 2 CPUs free; held by other actors or tasks)"),  # client 1's 1.5 taken first: it fits, but not now
        ]:
            with pytest.raises(AnybindError) as ei:
                federate_on_ray(cpaths, ppath, encoders=ENC, cache=shared_cache, cpus_per_client=cpus, **CFG)
            assert str(ei.value).startswith(message) and has in str(ei.value), str(ei.value)
            assert "\n" not in str(ei.value)
            assert free_cpus(wait=60, at_least=2.0) == pytest.approx(2.0)  # nothing held after the refusal
        r = CliRunner().invoke(app, ["federate", *[x for p in cpaths for x in ("--client", str(p))],
                                     "--public", str(ppath), *[x for m, s in ENC.items() for x in ("-e", f"{m}={s}")],
                                     "--cache", str(shared_cache), "--rounds", "1", "--dim", "16", "--hidden", "32",
                                     "--method", "fedavg", "--ray", "--out", str(tmp_path / "s")])
        assert r.exit_code == 0, r.output
        assert "on Ray" in r.output
        assert Space.load(tmp_path / "s").info["lineage"][-1]["clients_ran"] == "ray"
    finally:
        if started:
            shutdown_ray()  # and what Ray set in os.environ (RAY_AUTH_MODE=token) put back

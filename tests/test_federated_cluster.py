"""``--ray-address`` against a real Ray cluster (issue 19): a head started apart with ``ray start --head`` (its own
temp folder and port, 2 CPUs), the federated clients as actors on it, through the library and the CLI; the space is
bit for bit the one bound in-process (which tests/test_federated_ray.py shows equals a local Ray session's), what
leaves a client is logged and is only the protocol (no private record id, no row of a private feature matrix), and
the cluster is stopped after, pass or fail (the ``ray_head`` fixture, tests/ray_cluster.py).  A wrong or unreachable
address is refused in one line naming it, within seconds."""

import json
import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind import Space
from anybind.cache import FeatureCache
from anybind.cli import app
from anybind.federated import federate
from anybind.federated_study import split_clients
from anybind.train import FeatureSet
from federated_helpers import nothing_private_left, small_tux, write_manifest

# under pytest-xdist the Ray modules run on one worker, one after the other (conftest.py): one local Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

ENC = {"image": "image:efficientnet-lite0", "text": "text:minilm"}
CFG = dict(dim=16, hidden=32, rounds=2, patience=2, lr=3e-3, batch_size=16, seed=3)


def test_clients_run_on_a_cluster_started_apart_and_bind_the_in_process_space(ray_head, tux_dir, shared_cache,
                                                                               tmp_path, caplog, monkeypatch):
    import ray

    from anybind.scale.federated_ray import federate_on_ray

    address, temp = ray_head
    man = small_tux(tux_dir, tmp_path)
    FeatureSet.from_manifests([man], ENC, FeatureCache(shared_cache), progress=False)  # encoded once, here
    clients, public = split_clients(man, 2, by=None, public_fraction=0.25, seed=0)
    cpaths = [write_manifest(c, tmp_path / f"client{i}.jsonl") for i, c in enumerate(clients)]
    ppath = write_manifest(public, tmp_path / "public.jsonl")
    seen_here, seen_there = [], []
    kw = dict(encoders=ENC, cache=shared_cache, method="fedavg", **CFG)
    here = federate(cpaths, ppath, on_message=lambda *a: seen_here.append(a), **kw)
    assert not ray.is_initialized()
    pinned = []  # while the actors live: how much of client 1's node resource is free

    def watch(*a):
        seen_there.append(a)
        pinned.append(ray.available_resources().get("anybind_client_1", 0.0))

    with caplog.at_level(logging.DEBUG, logger="anybind"):
        there = federate_on_ray(cpaths, ppath, address=address, on_message=watch, **kw)
    assert not ray.is_initialized()  # the driver left the cluster; the cluster itself is the fixture's to stop
    for m in ENC:
        a, b = here.projectors[m].state_dict(), there.projectors[m].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), m
    assert here.logit_scale == there.logit_scale
    assert here.info["training"]["history"] == there.info["training"]["history"]
    assert there.info["lineage"][-1]["clients_ran"] == "ray"
    assert [(w, i, m.kind) for w, i, m in seen_here] == [(w, i, m.kind) for w, i, m in seen_there]
    for (_, _, x), (_, _, y) in zip(seen_here, seen_there):
        assert x.counts == y.counts and all(np.array_equal(x.arrays[k], y.arrays[k]) for k in x.arrays)
    # client 1's actor held its share of the node resource that pins it (client 0 has none: placed anywhere)
    assert pinned and all(p == pytest.approx(0.99) for p in pinned), pinned
    notes = [r.getMessage() for r in caplog.records]
    assert any("client 1 runs on a node with the Ray resource anybind_client_1" in n for n in notes)
    assert not any("client 0 runs on a node" in n for n in notes)
    # the client actors ran in the cluster's workers (their logs are in its session folder)
    logs = [p for p in temp.glob("session_2*/logs/worker-*") if "ClientActor" in p.read_text(errors="replace")]
    assert len(logs) >= 2
    # what left a client: logged, one line each; only the protocol's kinds; no private id, no private feature row
    up = [(i, m) for w, i, m in seen_there if w == "up"]
    logged = [r.getMessage() for r in caplog.records
              if r.name == "anybind.federated" and r.getMessage().startswith("from client")]
    assert len(logged) == len(up) and all(f"from client {i}:" in line for (i, _), line in zip(up, logged))
    assert {m.kind for _, m in up} == {"val", "weights"}
    assert not any(r.id in line for c in clients for r in c.records for line in logged)
    nothing_private_left(clients, up, ENC, shared_cache)

    # the CLI, relative paths given from another folder than the one the cluster started in
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["federate", "--client", "client0.jsonl", "--client", "client1.jsonl",
                                 "--public", "public.jsonl", *[x for m, s in ENC.items() for x in ("-e", f"{m}={s}")],
                                 "--cache", str(shared_cache), "--rounds", "1", "--dim", "16", "--hidden", "32",
                                 "--method", "fedavg", "--ray-address", address,
                                 "--out", "s"])
    assert r.exit_code == 0, r.output
    assert "on Ray" in r.output
    cli = Space.load(tmp_path / "s")
    assert cli.info["lineage"][-1]["clients_ran"] == "ray" and not ray.is_initialized()


def test_an_address_is_joined_as_it_was_checked(ray_head):
    """Ray is given the address the check read: ``HOST:PORT/`` (a trailing slash, as pasted from a URL) joins the
    cluster instead of passing the check and then failing inside Ray on the port ``PORT/``."""
    import ray

    from anybind.scale import init_ray, shutdown_ray

    address, _ = ray_head
    try:
        assert init_ray(address + "/") is True
        assert ray.cluster_resources().get("anybind_client_1") == 1.0  # the test's own cluster
    finally:
        shutdown_ray()


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.5:6379", "10.0.0.5:6379"), ("head", "head:6379"), ("head:6379/", "head:6379"),
    ("ray://head", "ray://head:10001"), ("ray://head:10002/", "ray://head:10002"), ("[::1]", "[::1]:6379"),
    ("[::1]:7000/", "[::1]:7000"), ("auto", "auto")])
def test_ray_is_given_the_address_with_its_port_explicit(address, expected):
    """Ray itself refuses ``head`` and ``[::1]`` (no port) and ``head:6379/``, and connects ``ray://head`` to gRPC's
    port 443: what it is given names the port the check probed."""
    from anybind.scale.ray_connect import canonical_address

    assert canonical_address(address) == expected


@pytest.mark.timeout(120)  # no hang: Ray alone retries such an address for minutes
@pytest.mark.parametrize("kind", ["nothing listens", "not Ray"])
def test_a_wrong_address_is_refused_in_one_line_naming_it(kind, tmp_path):
    pytest.importorskip("ray")
    import ray

    from anybind.scale import init_ray
    from anybind.scale.ray_connect import RayConnectError

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        if kind == "not Ray":  # a port that answers, as a web server does, but not as a Ray head
            srv.listen(1)

            def answer():  # every connection, until the socket closes
                while True:
                    try:
                        conn, _ = srv.accept()
                    except OSError:
                        return
                    with conn:
                        if conn.recv(64):
                            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

            threading.Thread(target=answer, daemon=True).start()
        else:
            srv.close()  # the port is free: nothing listens there
        why = "nothing listens" if kind == "nothing listens" else "not a Ray head"
        # the CLI: before any data is read (the manifests named here do not exist)
        r = CliRunner().invoke(app, ["federate", "--client", str(tmp_path / "a.jsonl"), "--public",
                                     str(tmp_path / "p.jsonl"), "--ray-address", address, "--out", str(tmp_path / "s")])
        assert r.exit_code != 0 and not ray.is_initialized()
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and address in lines[0] and why in lines[0] and "Traceback" not in r.output, r.output
        if kind == "not Ray":  # the library (every --ray-address command joins through it)
            with pytest.raises(RayConnectError) as ei:
                init_ray(address)
            assert address in str(ei.value) and why in str(ei.value) and "\n" not in str(ei.value)
            assert not ray.is_initialized()


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("head", ("head", 6379)), ("ray://head", ("head", 10001)),
    ("ray://head:10002/", ("head", 10002)), ("[::1]:7000", ("::1", 7000)), ("[::1]", ("::1", 6379))])
def test_ray_addresses_are_read_as_ray_reads_them(address, expected):
    from anybind.scale.ray_connect import split_address

    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["head:port", ":6379", "head:0", "head:70000", "::1:6379", "[::1]x",
                                     "http://127.0.0.1:8265"])  # the dashboard's (job submission) address
def test_a_malformed_ray_address_is_refused_in_one_line(address):
    from anybind.scale.ray_connect import RayConnectError, check_ray_address

    with pytest.raises(RayConnectError) as ei:
        check_ray_address(address)
    assert repr(address) in str(ei.value) and "\n" not in str(ei.value)


def test_client_paths_reach_an_actor_absolute_and_unresolved(tmp_path, monkeypatch):
    """A worker's folder is not the driver's: the manifest and cache paths a client actor gets are absolute, taken
    in the driver's folder, and links are kept (shared storage is mounted under the same name on every node)."""
    from anybind.data.manifest import Manifest
    from anybind.federated_clients import portable

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    assert portable("link/a.jsonl") == str(tmp_path / "link" / "a.jsonl")
    assert portable(Path("cache")) == str(tmp_path / "cache")
    man = Manifest(Path("link/a.jsonl"), [], [], {})
    assert portable(man).path == tmp_path / "link" / "a.jsonl" and man.path == Path("link/a.jsonl")
    whole = Manifest(tmp_path / "b.jsonl", [], [], {})
    assert portable(whole) is whole


def test_client_paths_keep_the_link_the_driver_stands_in(tmp_path, monkeypatch):
    """Run from a folder reached through a link (``cd /shared/proj`` where /shared links to the driver's own mount
    of the storage), relative paths are made absolute under the name the shell gives that folder ($PWD, as
    ``pwd`` shows it): the name the nodes share, not the driver's resolution of it.  A $PWD naming another folder
    is not trusted."""
    from anybind.data.manifest import Manifest
    from anybind.federated_clients import portable

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path / "link")
    monkeypatch.setenv("PWD", str(tmp_path / "link"))
    assert portable("a.jsonl") == str(tmp_path / "link" / "a.jsonl")
    assert portable(Manifest(Path("a.jsonl"), [], [], {})).path == tmp_path / "link" / "a.jsonl"
    monkeypatch.setenv("PWD", str(tmp_path))  # stale: not this folder
    assert portable("a.jsonl") == os.path.join(os.path.realpath(tmp_path / "real"), "a.jsonl")


def test_relative_encoder_paths_read_on_a_cluster_as_on_the_driver(ray_head, tmp_path, monkeypatch):
    """An encoder spec naming a file relative to the driver's folder (``vectors:a.npz``; an ONNX or local HF model
    likewise) reads the same file in a client actor, whose process runs in the folder its node's ``ray start`` ran
    in: the actor works in the driver's folder (the same path on a node sharing the storage)."""
    import ray

    from anybind.scale.federated_ray import federate_on_ray
    from scale_helpers import synthetic_corpus

    manifest, _ = synthetic_corpus(tmp_path / "syn", n=200)
    monkeypatch.chdir(tmp_path / "syn")
    enc = {"a": "vectors:a.npz", "b": "vectors:b.npz"}  # vectors looked up by record id
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    public = [r for i, r in enumerate(rows) if r["split"] == "train" and i % 4 == 0]
    private = [r for r in rows if r not in public]

    def write(recs, path):
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        return path

    cpaths = [write(private[i::2], tmp_path / f"client{i}.jsonl") for i in range(2)]
    ppath = write(public, tmp_path / "public.jsonl")
    kw = dict(encoders=enc, cache=tmp_path / "cache", method="fedavg", **CFG)
    here = federate(cpaths, ppath, **kw)
    there = federate_on_ray(cpaths, ppath, address=ray_head[0], **kw)
    assert not ray.is_initialized()
    for m in enc:
        a, b = here.projectors[m].state_dict(), there.projectors[m].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), m

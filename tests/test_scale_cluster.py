"""The scale commands with ``--ray-address`` on a Ray cluster started apart (issue 19; the ``ray_head`` fixture,
tests/ray_cluster.py): a driver in another folder than the one the cluster started in, its manifest and cache given
by relative paths, the manifest's media by paths relative to it.  The encoders' tasks and actors and the index's
embedding actors work in the driver's folder (``anybind.scale.work_in``): they read the files the driver means and
write the cache the driver reads, so the features and the index are those built in one process.

Each command runs as a user runs it: ``python -m anybind`` in a fresh process (the driver), with the head's
``RAY_AUTH_MODE=disabled``: a plain local ``ray.init`` earlier in the pytest process leaves ``RAY_AUTH_MODE=token`` in
``os.environ`` (Ray's own doing; anybind's own local sessions put it back, test_ray_auth_env.py), and a driver that
inherits it on this token-less cluster is refused (its actors would die before they start)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from anybind import Space
from anybind.cache import FeatureCache
from anybind.encoders.device import cache_identity
from anybind.encoders.registry import get_encoder

ENC = {"image": "callable:helper_encoders:image_stats", "text": "callable:helper_encoders:hashed_text"}


def _project(d, n: int = 24):
    """``n`` small real PNGs under ``d/img`` and a manifest naming them relative to it, with a caption each."""
    rng = np.random.default_rng(0)
    (d / "img").mkdir(parents=True)
    with open(d / "m.jsonl", "w") as f:
        for i in range(n):
            colour = rng.integers(0, 256, size=3)
            px = np.clip(colour + rng.normal(0, 30, size=(16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(d / "img" / f"{i}.png")
            f.write(json.dumps({"id": f"r{i}", "split": ("train", "train", "val", "test")[i % 4],
                                "image": f"img/{i}.png", "text": f"a patch of colour {colour.tolist()}"}) + "\n")


def _anybind(*args: str, cwd, head=None) -> str:
    """``python -m anybind ARGS`` in ``cwd``, a fresh driver process; its output (it must succeed).

    With ``head`` (a Ray Client run): when the head could not start the per-client server ("Initialization failure
    from server", seen twice in ~6 runs on the loaded 2-core test machine, its log gone with the head's folder), the
    server logs are attached and the command is run once more, as a user would."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # as the head's (ray_head): a local ray.init earlier in this process set 'token'
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))  # this anybind, the helpers
    seen = ""
    for _ in range(2 if head is not None else 1):
        r = subprocess.run([sys.executable, "-m", "anybind", *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=600)
        if r.returncode == 0 or "Initialization failure from server" not in r.stderr:
            break
        seen += r.stderr[-1500:] + "".join(f"\n== {f.name}: {f.read_text(errors='replace')[-1500:]}"
                                           for f in sorted(head[1].glob("session_*/logs/ray_client_server*.err")))
    assert r.returncode == 0, (seen + r.stdout + r.stderr)[-6000:]
    return r.stdout + r.stderr


def test_encode_and_index_on_a_cluster_read_the_drivers_relative_paths(ray_head, tmp_path, monkeypatch):
    from anybind.index import Index

    address, _ = ray_head
    _project(tmp_path / "proj")
    monkeypatch.chdir(tmp_path / "proj")  # not the folder the cluster started in
    out = _anybind("encode", "m.jsonl", "-e", f"image={ENC['image']}", "--ray-address", address, "--cache", "cache",
                   cwd=tmp_path / "proj")
    assert "24 encoded" in out and "failed" not in out, out
    enc, files = get_encoder(ENC["image"]), [f"img/{i}.png" for i in range(24)]
    cached = FeatureCache(tmp_path / "proj" / "cache").vectors(cache_identity(enc))  # the actors wrote the driver's
    got = np.stack([cached[enc.content_key(f)] for f in files])
    np.testing.assert_allclose(got, enc.encode(files), atol=1e-6)

    space = Space.fit("m.jsonl", encoders=ENC, cache="cache", progress=False, epochs=2, dim=8, hidden=16,
                      recipe="plain", seed=0)
    space.save("space")
    plain = Index.build(space, "m.jsonl", "plain", cache="cache", ann=False)
    _anybind("index", "space", "m.jsonl", "--out", "idx", "--ray-address", address, "--cache", "cache",
             cwd=tmp_path / "proj")
    on_ray = Index.open("idx")

    def table(ix):
        t = ix.table.to_arrow().to_pydict()
        order = sorted(range(len(t["id"])), key=lambda i: (t["modality"][i], t["id"][i]))
        return {c: [t[c][i] for i in order] for c in ("id", "modality", "vector")}

    a, b = table(plain), table(on_ray)
    assert len(a["id"]) == 48 and a["id"] == b["id"] and a["modality"] == b["modality"]
    np.testing.assert_allclose(np.array(a["vector"]), np.array(b["vector"]), atol=1e-6)


def test_through_ray_client_federate_binds_the_in_process_space_and_ray_data_is_refused_in_one_line(ray_head,
                                                                                                    tmp_path):
    """``--ray-address ray://HOST:PORT`` (the head's Ray Client server): ``federate``'s client actors run there and
    bind, bit for bit, the space bound in one process; ``encode`` (Ray Data, whose executor Ray 2.60 runs only in a
    real driver) is refused in one line naming the GCS address to give instead, not with Ray's traceback."""
    from safetensors.numpy import load_file

    if ray_head.client is None:
        pytest.skip("no Ray Client here (grpcio, from ray[client]): pip install 'anybind[scale]'")
    _project(tmp_path)
    for m, spec in ENC.items():  # the features, in this process: federate reads them from the cache
        _anybind("encode", "m.jsonl", "-e", f"{m}={spec}", "--cache", "cache", cwd=tmp_path)
    recs = (tmp_path / "m.jsonl").read_text().splitlines()
    for i, part in enumerate((recs[:8], recs[8:16], recs[16:])):
        (tmp_path / f"c{i}.jsonl").write_text("\n".join(part) + "\n")
    args = ["federate", "--client", "c0.jsonl", "--client", "c1.jsonl", "--public", "c2.jsonl", "--cache", "cache",
            *[x for m, spec in ENC.items() for x in ("-e", f"{m}={spec}")], "--rounds", "1", "--dim", "8",
            "--hidden", "16", "--method", "fedavg"]
    _anybind(*args, "--out", "here", cwd=tmp_path)
    out = _anybind(*args, "--ray-address", ray_head.client, "--out", "there", cwd=tmp_path, head=ray_head)
    assert "2 clients on Ray" in out, out
    here, there = (sorted((tmp_path / d).glob("*.safetensors")) for d in ("here", "there"))
    assert [p.name for p in here] == [p.name for p in there] and here
    for a, b in zip(here, there):
        wa, wb = load_file(a), load_file(b)
        assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa), a.name

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.pathsep.join(
        p for p in sys.path if p and os.path.isdir(p))}
    r = subprocess.run([sys.executable, "-m", "anybind", "encode", "m.jsonl", "-e", f"image={ENC['image']}",
                        "--cache", "fresh", "--ray-address", ray_head.client], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert r.returncode != 0 and len(errors) == 1, r.stderr[-3000:]
    assert "cannot run through Ray Client" in errors[0] and "HOST:PORT" in errors[0], errors


def test_a_ray_client_address_without_ray_client_is_refused_in_one_line_naming_the_extra(tmp_path, monkeypatch):
    """Where grpcio is missing (Ray Client's one dependency), a ``ray://`` address is refused before any connection,
    in one line naming the extra that installs it; Ray's own message names ``pip install ray[client]`` in three."""
    from anybind.scale import init_ray
    from anybind.scale.ray_connect import RayConnectError

    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` raises ImportError
    with pytest.raises(RayConnectError) as e:
        init_ray("ray://127.0.0.1:1")  # nothing listens there: refused for the missing client first
    msg = str(e.value)
    assert "\n" not in msg and "ray://127.0.0.1:1" in msg and "pip install 'anybind[scale]'" in msg, msg
    _project(tmp_path)
    r = subprocess.run([sys.executable, "-c", "import sys; sys.modules['grpc'] = None; from anybind.cli import main; "
                        "main()", "encode", "m.jsonl", "-e", f"image={ENC['image']}",
                        "--ray-address", "ray://127.0.0.1:1", "--cache", "cache"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           p for p in sys.path if p and os.path.isdir(p))})
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "pip install 'anybind[scale]'" in lines[0], r.stderr[-2000:]

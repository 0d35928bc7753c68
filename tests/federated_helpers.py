"""The federated tests' shared set-up: the categories world (two vector views of a latent, each category varying
along its own dimensions, so a client holding some categories is non-IID; ``world``: it split between 3 clients and a
public set, a module fixture imported by name by the modules that use it), the training config and the R@1 they
compare (tests/test_federated*.py, tests/test_space_public.py); a ``federate``
runner whose in-process clients are kept and have every message they handle watched, and the check that a
public-embeddings reply is the client's own projectors applied to the public rows only; the small real Tux Paint
corpus of the Ray tests (tests/test_federated_ray.py, tests/test_federated_cluster.py)."""

import contextlib
import json

import numpy as np
import pytest

from anybind import load_manifest
from anybind.data.manifest import Manifest
from anybind.evaluate import evaluate
from anybind.federated_clients import local_clients
from anybind.federated_parties import Message, embed_public
from anybind.federated_study import split_clients

SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
KINDS = {"sa": "key", "sb": "key"}
CFG = dict(dim=16, hidden=32, rounds=6, patience=6, lr=3e-3, batch_size=64)


def categories(tmp, n_cat=6, per=100, seed=0, noise=0.6):
    """Two views (sa, sb) of a 12-d latent; category c sits at its own mean and varies along its own two latent
    dimensions only, so a client holding some categories never sees how the others vary (non-IID)."""
    rng = np.random.default_rng(seed)
    k = 12
    Ma, Mb = rng.normal(size=(k, 40)), rng.normal(size=(k, 30))
    mus = rng.normal(size=(n_cat, k)) * 0.7
    ids, zs, recs = [], [], []
    for c in range(n_cat):
        v = np.full(k, 0.1)
        v[2 * c: 2 * c + 2] = 1.5
        for i in range(per):
            rid = f"c{c}-{i}"
            ids.append(rid)
            zs.append(mus[c] + rng.normal(size=k) * v)
            recs.append({"id": rid, "split": SPLIT_CYCLE[i % 10], "sa": True, "sb": True, "labels": {"top": f"cat{c}"}})
    z = np.asarray(zs)
    specs, feats = {}, {}
    for name, M in (("sa", Ma), ("sb", Mb)):
        feats[name] = (z @ M + noise * rng.normal(size=(len(z), M.shape[1]))).astype(np.float32)
        np.savez(tmp / f"{name}.npz", ids=np.asarray(ids), vectors=feats[name])
        specs[name] = f"vectors:{tmp / f'{name}.npz'}"
    path = tmp / "all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, specs, dict(zip(ids, range(len(ids)))), feats


def write(man: Manifest, path):
    path.write_text("".join(json.dumps({"id": r.id, "split": r.split, "sa": True, "sb": True,
                                        "labels": r.labels}) + "\n" for r in man.records))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed")
    path, specs, row_of, feats = categories(tmp)
    man = load_manifest(path, kinds=KINDS)
    clients, public = split_clients(man, 3, by="top", public_fraction=0.1, seed=0)
    cpaths = [write(c, tmp / f"client{i}.jsonl") for i, c in enumerate(clients)]
    ppath = write(public, tmp / "public.jsonl")
    return tmp, path, specs, cpaths, ppath, row_of, feats


def r1(space, path, cache) -> float:
    res = evaluate(space, load_manifest(path, kinds=KINDS), split="test", cache=cache)
    return (res["sa->sb/R@1"] + res["sb->sa/R@1"]) / 2


def watching(watch, held: list | None = None):
    """A runner for ``federate(runner=...)``: the in-process clients (:func:`~anybind.federated_clients.local_clients`), each
    client ``c`` (the ``i``-th) answering a message ``msg`` through ``watch(i, c, msg, handle)``, where ``handle`` is
    its own handler (``watch`` calls it and returns its reply); with ``held``, the clients are appended to it."""

    @contextlib.contextmanager
    def runner(sp, pub):
        with local_clients(sp, pub) as parties:
            for i, c in enumerate(parties.clients):
                if held is not None:
                    held.append(c)

                def watched(msg, i=i, c=c, handle=c.handle):
                    return watch(i, c, msg, handle)

                c.handle = watched
            yield parties

    return runner


def public_embeddings(c, projectors=None) -> dict[str, np.ndarray]:
    """Client ``c``'s public rows embedded by ``projectors`` (by default its current ones)."""
    projectors = {m: c.projectors[m] for m in c.modalities} if projectors is None else projectors
    return embed_public(projectors, {m: v.numpy() for m, v in c.public.items()})


def only_public_rows(c, reply: Message) -> bool:
    """Whether a public-embeddings ``reply`` of client ``c`` is exactly its projectors applied to the public rows
    (an embedding of a private record, or any other row, makes it False)."""
    want = public_embeddings(c)
    return set(reply.arrays) == set(want) and all(np.array_equal(reply.arrays[m], want[m]) for m in want)


def small_tux(tux_dir, out) -> Manifest:
    """60 real stamps with image and text, splits cycling train x3 / val / test, written with absolute paths."""
    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text"])
    recs = [r for r in man.records if r.has("image") and r.has("text")][:60]
    path = out / "small.jsonl"
    with open(path, "w") as f:
        for i, r in enumerate(recs):
            image = str(r.values["image"])
            f.write(json.dumps({"id": r.id, "split": ("train", "train", "train", "val", "test")[i % 5],
                                "image": image if image.startswith("/") else str((tux_dir / image).resolve()),
                                "text": r.values["text"], "labels": r.labels}) + "\n")
    return load_manifest(path, modalities=["image", "text"])


def write_manifest(man: Manifest, path):
    """``man``'s records as a JSONL manifest at ``path``."""
    path.write_text("".join(json.dumps({"id": r.id, "split": r.split, **dict(r.values), "labels": r.labels}) + "\n"
                            for r in man.records))
    return path


def nothing_private_left(clients, up, encoders, cache) -> None:
    """Assert that the messages ``up`` (``(client, Message)`` sent by clients) hold no private record id (in their
    kinds, array names or counts) and no row of a private feature matrix (to 1e-6)."""
    from anybind.cache import FeatureCache
    from anybind.train import FeatureSet

    private = [r.id for c in clients for r in c.records]
    shown = json.dumps([[m.kind, sorted(m.arrays), sorted(m.counts)] for _, m in up])
    assert not any(pid in shown for pid in private)
    fs = FeatureSet.from_manifests(clients, encoders, FeatureCache(cache), progress=False)
    for mod in encoders:
        rows = fs.feats[mod]
        for _, m in up:
            for a in m.arrays.values():
                if a.ndim == 2 and a.shape[1] == rows.shape[1]:
                    assert not (np.abs(a[:, None, :] - rows[None]).max(-1) < 1e-6).any()

"""The federated tests' shared set-up (tests/test_federated.py, tests/test_federated_cream.py): a ``federate``
runner whose in-process clients are kept and have every message they handle watched, and the check that a
public-embeddings reply is the client's own projectors applied to the public rows only; the small real Tux Paint
corpus of the Ray tests (tests/test_federated_ray.py, tests/test_federated_cluster.py)."""

import contextlib
import json

import numpy as np

from anybind import load_manifest
from anybind.data.manifest import Manifest
from anybind.federated_clients import local_clients
from anybind.federated_parties import Message, embed_public


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

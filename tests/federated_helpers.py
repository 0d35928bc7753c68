"""The federated tests' shared set-up (tests/test_federated.py, tests/test_federated_cream.py): a ``federate``
runner whose in-process clients are kept and have every message they handle watched, and the check that a
public-embeddings reply is the client's own projectors applied to the public rows only."""

import contextlib

import numpy as np

from anybind.federated import local_clients
from anybind.federated_parties import Message, embed_public


def watching(watch, held: list | None = None):
    """A runner for ``federate(runner=...)``: the in-process clients (:func:`~anybind.federated.local_clients`), each
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

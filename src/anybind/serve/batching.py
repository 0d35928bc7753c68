"""Dynamic batching of the service's encoder calls: concurrent requests that need the same encoder
are encoded together in one call.

Continuous batching, per encoder identity: one request at a time *leads* (runs the encoder).  A
request that arrives while the encoder is busy queues; when the leader is done it hands the lead
to the oldest queued request, which takes every request queued meanwhile (up to ``max_batch``
items, or the encoder's own limit, ``limits``) into the next call.  So under load the batches
grow with the queue by themselves, and a request arriving at an idle encoder is encoded at once:
``wait`` (seconds, 0 by default) only lets a new leader gather requests for a little longer first
(it stops early once that many items wait).  Each encoder has its own leader, so the image and the
text encoder's batches run at the same time, in two worker threads.

The leader encodes the union of the missing items once (the feature cache's usual path:
undecodable items are reported per item, and an encoder that fails a whole batch is retried item
by item, so one bad upload never fails its batch-mates) and hands each request its own result.
If the combined call itself raises, each request is encoded on its own, so an error reaches only
the requests it belongs to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import ServeConfig


@dataclass
class _Ask:
    keys: list[str]
    first: dict[str, Any]
    wake: threading.Event = field(default_factory=threading.Event)  # done, or handed the lead
    done: bool = False
    failed: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None


class Batcher:
    """Gathers encoder calls per encoder identity (see the module docs).  ``limits``: ``{identity: n}``, that
    encoder's maximum batch instead of ``max_batch``.  ``calls`` counts the combined encoder calls made, ``asks``
    the requests they served and ``largest`` the most requests one call served."""

    def __init__(self, wait: float = 0.0, max_batch: int = ServeConfig.max_batch,
                 limits: dict[str, int] | None = None):
        self.wait = max(0.0, float(wait))
        self.max_batch = max(1, int(max_batch))
        self.limits = {k: max(1, int(v)) for k, v in (limits or {}).items()}
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Ask]] = {}  # queued asks per identity (the leader's not among them)
        self._arrived: dict[str, threading.Condition] = {}  # a leader gathering waits on it
        self._busy: set[str] = set()  # identities with a leader
        self.calls = 0
        self.asks = 0
        self.largest = 0

    def run(self, identity: str, missing: list[str], first: dict[str, Any],
            encode: Callable[[list[str], dict[str, Any]], dict[str, str]]) -> dict[str, str]:
        """``encode(keys, first)`` for ``missing``, batched with other threads' calls for ``identity``;
        returns ``{key: why}`` for this call's items that could not be encoded."""
        ask = _Ask(list(missing), {k: first[k] for k in missing})
        with self._lock:
            if identity in self._busy:
                self._pending.setdefault(identity, []).append(ask)
                self._arrived.setdefault(identity, threading.Condition(self._lock)).notify()
                lead = False
            else:
                self._busy.add(identity)
                lead = True
        if not lead:
            ask.wake.wait()
            lead = not ask.done  # woken without a result: the lead was handed over
        if lead:
            self._lead(identity, ask, encode)
        if ask.error is not None:
            raise ask.error
        return ask.failed

    def queued(self, identity: str) -> int:
        """Requests waiting for ``identity``'s encoder (not counting the one running it)."""
        with self._lock:
            return len(self._pending.get(identity, []))

    def limit(self, identity: str) -> int:
        """Items in one call of ``identity``'s encoder at most (its own limit, else ``max_batch``)."""
        return self.limits.get(identity, self.max_batch)

    def _take(self, identity: str, own: _Ask) -> list[_Ask]:
        """Under the lock: the leader's ask and the queued ones (oldest first) that fit in the identity's limit."""
        queue = self._pending.get(identity, [])
        asks, n, most = [own], len(own.keys), self.limit(identity)
        while queue and n + len(queue[0].keys) <= most:
            n += len(queue[0].keys)
            asks.append(queue.pop(0))
        return asks

    def _gather(self, identity: str, own: _Ask) -> None:
        """Under the lock: wait up to ``wait`` for more asks, or until the identity's limit of items is queued."""
        if self.wait <= 0:
            return
        deadline = time.monotonic() + self.wait
        cond = self._arrived.setdefault(identity, threading.Condition(self._lock))
        most = self.limit(identity)
        while sum(len(a.keys) for a in self._pending.get(identity, [])) + len(own.keys) < most:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            cond.wait(left)

    def _lead(self, identity: str, own: _Ask, encode) -> None:
        asks = [own]
        try:
            with self._lock:
                self._gather(identity, own)
                asks = self._take(identity, own)
                self.calls += 1
                self.asks += len(asks)
                self.largest = max(self.largest, len(asks))
            first: dict[str, Any] = {}
            for a in asks:
                first.update(a.first)
            try:
                failed = encode(list(first), first)
            except Exception:  # noqa: BLE001 - the combined call failed: each request on its own
                for a in asks:
                    try:
                        a.failed = encode(a.keys, a.first)
                    except Exception as e:  # noqa: BLE001 - handed to the request it belongs to
                        a.error = e
            else:
                for a in asks:
                    a.failed = {k: failed[k] for k in a.keys if k in failed}
        except BaseException as e:  # interrupted: nobody is left waiting
            for a in asks:
                if a.error is None:
                    a.error = e
            raise
        finally:
            for a in asks:
                a.done = True
                if a is not own:
                    a.wake.set()
            with self._lock:  # the lead goes to the oldest queued ask, or the encoder is idle again
                queue = self._pending.get(identity)
                if queue:
                    queue.pop(0).wake.set()
                else:
                    self._pending.pop(identity, None)
                    self._arrived.pop(identity, None)
                    self._busy.discard(identity)

"""Dynamic batching of the service's encoder calls: concurrent requests that need the same encoder
are gathered for up to ``wait`` seconds (or until ``max_batch`` items wait) and encoded in one call.

The first request to arrive for an encoder leads: it waits out the window, takes every request
queued for that encoder, encodes the union of their missing items once (the feature cache's usual
path: undecodable items are reported per item, and an encoder that fails a whole batch is retried
item by item, so one bad upload never fails its batch-mates) and hands each request its own
result.  Requests arriving after the leader took the queue start the next batch.  If the combined
call itself raises, each request is encoded on its own, so an error reaches only the requests it
belongs to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Ask:
    keys: list[str]
    first: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    failed: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None


class Batcher:
    """Gathers encoder calls per encoder identity (see the module docs).  ``calls`` counts the
    combined encoder calls made and ``asks`` the requests they served."""

    def __init__(self, wait: float, max_batch: int = 64):
        self.wait = float(wait)
        self.max_batch = max(1, int(max_batch))
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Ask]] = {}
        self.calls = 0
        self.asks = 0

    def run(self, identity: str, missing: list[str], first: dict[str, Any],
            encode: Callable[[list[str], dict[str, Any]], dict[str, str]]) -> dict[str, str]:
        """``encode(keys, first)`` for ``missing``, batched with other threads' calls for ``identity``;
        returns ``{key: why}`` for this call's items that could not be encoded."""
        ask = _Ask(list(missing), {k: first[k] for k in missing})
        with self._lock:
            queue = self._pending.setdefault(identity, [])
            queue.append(ask)
            lead = len(queue) == 1
        if lead:
            self._lead(identity, queue, encode)
        else:
            ask.done.wait()
        if ask.error is not None:
            raise ask.error
        return ask.failed

    def _lead(self, identity: str, queue: list[_Ask], encode) -> None:
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:
            with self._lock:
                if sum(len(a.keys) for a in queue) >= self.max_batch:
                    break
            time.sleep(min(0.0005, max(0.0, deadline - time.monotonic())))
        with self._lock:
            asks = self._pending.pop(identity)  # later arrivals start the next batch
            self.calls += 1
            self.asks += len(asks)
        try:
            first: dict[str, Any] = {}
            for a in asks:
                first.update(a.first)
            try:
                failed = encode(list(first), first)
            except Exception:  # the combined call failed: each request on its own
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
                a.done.set()

"""Access control of the service: API keys (hashed, with a scope and a rate limit), the
``Authorization: Bearer`` check, per-key rate limits, and the bind-address rule.

The key file (``anybind serve --api-keys FILE``; written by ``anybind keys add / revoke``) is JSON::

    {"format": "anybind.api-keys", "keys": [
        {"name": "alice", "sha256": "<hex of sha256(key)>", "scope": "read", "rate_per_minute": 600,
         "burst": 600, "revoked": false, "created": "2026-12-05T09:00:00+0000"}]}

* **Only hashes are stored.**  A key is 32 random bytes (``ab_`` + URL-safe base64), shown once
  when it is made; the file holds its SHA-256 (a fast hash is right for random keys: there is no
  password to guess).  A presented key is hashed and compared with *every* stored hash with
  :func:`hmac.compare_digest`, so the time taken says nothing about which stored hash (or how much
  of one) it matched.
* **Scopes.**  ``read`` may call every route that reads; ``write`` also those in
  :data:`WRITE_ROUTES` (none today: no route changes the index); a read key there gets **403**.
* **Rate limits.**  A token bucket per key (``rate_per_minute``, up to ``burst`` at once); an empty
  bucket gets **429** with ``Retry-After`` (whole seconds until the tokens are there).  A request costs
  one token; a route whose work depends on its body (captions: inputs x beams x tokens) charges the rest
  of its cost once the body is parsed (:meth:`KeyStore.charge`, :func:`charge_request`), whole: a cost over
  ``burst`` needs a full bucket and leaves the key in debt, paid back at the rate before its next request.
* **Revocation is live.**  The file is re-read when it changes (checked at most every
  ``reload_seconds``); a file that cannot be read then closes the service (every key 401) until
  it can: a broken revocation never leaves a revoked key working.
* **Open paths.**  ``/health`` and the page's static shell (``/``, ``/static/...``: the same files
  for everyone, no data) need no key; every other path, ``/docs`` and ``/openapi.json`` included,
  does.  The page asks for the key on its first 401 and keeps it in ``sessionStorage``; images and
  sounds are then fetched with the header and shown from ``blob:`` URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AnybindError

log = logging.getLogger(__name__)

KEYS_FORMAT = "anybind.api-keys"
SCOPES = ("read", "write")
KEY_PREFIX = "ab_"
#: paths any client may call without a key (exact paths, then prefixes)
OPEN_PATHS = frozenset({"/health", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)
#: (method, path prefix) of routes that change something: they need a ``write`` key
WRITE_ROUTES: tuple[tuple[str, str], ...] = ()
LOCAL_HOSTS = ("localhost",)


class AuthConfigError(AnybindError, ValueError):
    """A key file that cannot be used, or a bind address that needs keys."""


def hash_key(key: str) -> str:
    """The hex SHA-256 of an API key (what the key file stores)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key: ``ab_`` + 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class ApiKey:
    name: str
    sha256: str
    scope: str = "read"
    rate_per_minute: float | None = None
    burst: float | None = None
    revoked: bool = False
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _check_entry(path: Path, i: int, e: Any) -> ApiKey:
    where = f"{path}: key {i}"
    if not isinstance(e, dict):
        raise AuthConfigError(f"{where}: expected an object, got {type(e).__name__}")
    name = e.get("name")
    if not isinstance(name, str) or not name:
        raise AuthConfigError(f"{where}: no 'name'")
    h = e.get("sha256")
    if not isinstance(h, str) or len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise AuthConfigError(f"{where} ({name!r}): 'sha256' must be 64 lower-case hex digits")
    scope = e.get("scope", "read")
    if scope not in SCOPES:
        raise AuthConfigError(f"{where} ({name!r}): scope {scope!r} is not one of {', '.join(SCOPES)}")
    rate, burst = e.get("rate_per_minute"), e.get("burst")
    for label, v in (("rate_per_minute", rate), ("burst", burst)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                              or not math.isfinite(v)):
            raise AuthConfigError(f"{where} ({name!r}): {label} must be a positive number, got {v!r}")
    return ApiKey(name, h, scope, rate, burst, bool(e.get("revoked", False)), str(e.get("created", "")))


def read_keys(path: str | Path) -> list[ApiKey]:
    """The keys in a key file (checked: :class:`AuthConfigError` naming the file and entry)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuthConfigError(f"{path}: no such key file (make one with `anybind keys add {path} NAME`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AuthConfigError(f"{path}: not a readable key file ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != KEYS_FORMAT or not isinstance(doc.get("keys"), list):
        raise AuthConfigError(f"{path}: not an anybind key file (expected {{\"format\": \"{KEYS_FORMAT}\", "
                              "\"keys\": [...]}})")
    keys = [_check_entry(path, i, e) for i, e in enumerate(doc["keys"])]
    names = [k.name for k in keys]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise AuthConfigError(f"{path}: key name(s) {', '.join(map(repr, dup))} appear more than once")
    return keys


def write_keys(path: str | Path, keys: Iterable[ApiKey]) -> None:
    """Write a key file atomically, readable by its owner only."""
    from ..io import atomic_write_bytes

    body = json.dumps({"format": KEYS_FORMAT, "keys": [k.to_dict() for k in keys]}, indent=2).encode()
    atomic_write_bytes(Path(path), body)
    os.chmod(path, 0o600)


def add_key(path: str | Path, name: str, scope: str = "read", rate_per_minute: float | None = None,
            burst: float | None = None) -> str:
    """Make a key named ``name`` in the key file (created if missing); returns the key (shown once)."""
    path = Path(path)
    keys = read_keys(path) if path.exists() else []
    if any(k.name == name for k in keys):
        raise AuthConfigError(f"{path}: a key named {name!r} is already there (revoke it, or pick another name)")
    key = new_key()
    entry = _check_entry(path, len(keys), {"name": name, "sha256": hash_key(key), "scope": scope,
                                           "rate_per_minute": rate_per_minute, "burst": burst,
                                           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_keys(path, [*keys, entry])
    return key


def revoke_key(path: str | Path, name: str) -> None:
    """Mark the key ``name`` revoked (kept in the file, so the name is not reused by accident)."""
    keys = read_keys(path)
    hit = [k for k in keys if k.name == name]
    if not hit:
        raise AuthConfigError(f"{path}: no key named {name!r} (keys: {', '.join(k.name for k in keys) or 'none'})")
    hit[0].revoked = True
    write_keys(path, keys)


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    h = host.strip().strip("[]").lower()
    if h in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_keys: str | Path | None, insecure: bool = False) -> None:
    """Refuse to listen on a non-loopback address without API keys, unless ``insecure``."""
    if api_keys is None and not insecure and not is_local(host):
        raise AuthConfigError(
            f"binding {host} without --api-keys would let anyone who reaches it search the index and read its "
            "files: give --api-keys FILE (`anybind keys add FILE NAME`), bind 127.0.0.1, or pass --insecure "
            "(e.g. behind a proxy that authenticates)"
        )


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Decision:
    """The outcome of one request's check: ``status`` 0 = let it through."""

    status: int = 0
    detail: str = ""
    retry_after: int = 0
    key: str | None = None


@dataclass
class KeyStore:
    """The keys of one key file, re-read when it changes; checks requests and keeps the rate buckets."""

    path: Path
    reload_seconds: float = 1.0
    clock: Any = time.monotonic
    _keys: list[ApiKey] = field(default_factory=list)
    _stamp: tuple | None = None
    _checked: float = -math.inf
    _broken: str | None = None
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._keys = read_keys(self.path)  # a bad file fails at start-up, naming it
        self._stamp = self._stat()

    def _stat(self) -> tuple | None:
        try:
            st = self.path.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = self.clock()
        if now - self._checked < self.reload_seconds:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp and self._broken is None:
            return
        try:
            self._keys, self._broken = read_keys(self.path), None
            self._stamp = stamp
            log.info("%s: re-read (%d keys)", self.path, len(self._keys))
        except AuthConfigError as e:
            if self._broken is None:
                log.error("%s; every request needs a key that can be checked: refusing all until it is fixed", e)
            self._broken, self._keys = str(e), []

    def _match(self, presented: str) -> ApiKey | None:
        h = hash_key(presented).encode()
        found = None
        for k in self._keys:  # every entry compared, in constant time each: no early exit
            if hmac.compare_digest(h, k.sha256.encode()):
                found = k
        return found

    def check(self, authorization: str | None, method: str, path: str, cost: float = 1.0) -> Decision:
        """The decision for one request (its ``Authorization`` header, method and path) that costs ``cost``
        tokens of its key's rate limit."""
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return Decision()
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Decision(401, "an API key is required: send 'Authorization: Bearer <key>'")
        with self._lock:
            self._maybe_reload()
            key = self._match(token.strip())
            if key is None:
                return Decision(401, "unknown API key")
            if key.revoked:
                return Decision(401, f"API key {key.name!r} was revoked")
            if key.scope != "write" and any(method == m and path.startswith(p) for m, p in WRITE_ROUTES):
                return Decision(403, f"API key {key.name!r} is read-only: {method} {path} needs a write key",
                                key=key.name)
            wait = self._take(key, cost)
        return _limited(key, wait, "") if wait > 0 else Decision(key=key.name)

    def charge(self, name: str, cost: float, what: str = "", paid: float = 1.0) -> Decision:
        """Charge a request of the key ``name`` that :meth:`check` let through for ``paid`` tokens and whose
        whole ``cost`` is known once its body is read (``what``: how it was reckoned, for the 429's message).
        Refused, it keeps what it paid (a refused request costs its one token, as any request: refusals are
        never free) and ``retry_after`` is when the bucket holds what admission needs (see :meth:`_take`)."""
        with self._lock:
            key = next((k for k in self._keys if k.name == name), None)
            wait = self._take(key, cost, paid) if key is not None and cost > paid else 0.0
        return _limited(key, wait, what) if wait > 0 else Decision(key=name)

    def _take(self, key: ApiKey, cost: float = 1.0, paid: float = 0.0) -> float:
        """Take ``cost`` tokens (``paid`` of them taken before) from the key's bucket; 0, or the seconds until
        the bucket holds what admission needs.

        Admission needs the whole cost in the bucket, or a full bucket for a cost over its size (the burst), and
        then takes the whole cost: a request dearer than the burst leaves the bucket in debt, which the rate
        pays back before the key's next request (a cost is never capped: a key's work over any time is at most
        the burst plus the rate over that time, plus one request's overshoot).  Refused, nothing more is taken
        and nothing paid is given back."""
        if key.rate_per_minute is None:
            return 0.0
        rate = key.rate_per_minute / 60.0
        cap = float(key.burst or key.rate_per_minute)
        cost = float(cost)
        now = self.clock()
        b = self._buckets.get(key.sha256)
        if b is None:
            b = self._buckets[key.sha256] = _Bucket(cap, now)
        b.tokens = min(cap, b.tokens + (now - b.at) * rate)
        b.at = now
        need = min(cost, cap)  # what the bucket must hold, with what was paid, to let it in
        if b.tokens + paid >= need - 1e-9:  # a client that waited its Retry-After gets in despite clock rounding
            b.tokens -= cost - paid  # may go below zero: the debt of a request over the burst
            return 0.0
        return (need - b.tokens) / rate  # a retry pays its check's token again, so the bucket must hold all of need


def _limited(key: ApiKey, wait: float, what: str) -> Decision:
    cost = f": this request costs {what}" if what else ""
    return Decision(429, f"rate limit of API key {key.name!r} ({key.rate_per_minute:g}/min) reached{cost}; "
                    f"retry in {math.ceil(wait)} s", retry_after=max(1, math.ceil(wait)), key=key.name)


class RateLimited(AnybindError):
    """A request over its key's rate limit, found by its route (429 with ``Retry-After``)."""

    def __init__(self, detail: str, retry_after: int):
        super().__init__(detail)
        self.retry_after = int(retry_after)


def charge_request(state: Any, cost: float, what: str = "") -> None:
    """Charge a request let through by :class:`ApiKeyAuth` (which took one token) for the rest of its
    ``cost`` (:meth:`KeyStore.charge`); :class:`RateLimited` when its key's bucket does not hold it.
    ``state``: the request's ``request.state``; nothing happens in a service without keys."""
    store, name = getattr(state, "key_store", None), getattr(state, "api_key", None)
    if store is None or name is None or cost <= 1:
        return
    d = store.charge(name, cost, what, paid=1.0)
    if d.status:
        raise RateLimited(d.detail, d.retry_after)


class ApiKeyAuth:
    """Pure ASGI middleware: every HTTP request but the open paths needs a valid key (401 / 403 / 429)."""

    def __init__(self, app, store: KeyStore):
        self.app = app
        self.store = store

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        d = self.store.check(auth, scope["method"], scope["path"])
        if d.status == 0:
            scope.setdefault("state", {}).update(api_key=d.key, key_store=self.store)
            return await self.app(scope, receive, send)
        from .middleware import send_json

        headers = []
        if d.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="anybind"'))
        if d.retry_after:
            headers.append((b"retry-after", str(d.retry_after).encode()))
        await send_json(send, d.status, d.detail, headers)


def check_keys_file(path: str | Path) -> None:
    """Raise :class:`AuthConfigError` unless ``path`` is a usable key file holding a key that is not revoked."""
    keys = read_keys(path)
    if not any(not k.revoked for k in keys):
        raise AuthConfigError(f"{path}: no key that is not revoked: nobody could use the service "
                        f"(`anybind keys add {path} NAME`)")

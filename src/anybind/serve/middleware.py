"""Pure ASGI middleware of the service: the upload cap (413), the JSON nesting bound (400) and the security
headers."""

import json

import numpy as np
from fastapi.exceptions import HTTPException

from ..errors import serve_limit
from .schemas import MAX_JSON_DEPTH

_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)

PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
ITEM_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


async def send_json(send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    import json

    body = json.dumps({"detail": detail}).encode()
    hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in the JSON text ``body`` (brackets inside strings do not count), counted
    without parsing it (Python's parser gives up past ~1,000 levels, with a RecursionError FastAPI answers as a bare
    "error parsing the body"); a body holding no more brackets than :data:`MAX_JSON_DEPTH` gets their number (a bound
    on its depth: enough to pass it); a malformed text gets some number and its parse fails later.  A UTF-16 or
    UTF-32 body (which the parser reads) is counted as its UTF-8 text."""
    opened = body.count(b"[") + body.count(b"{")
    if opened <= MAX_JSON_DEPTH:  # the usual body: fewer brackets than the bound, so no deeper (a bound is enough)
        return opened
    enc = json.detect_encoding(body)  # as the parser (json.loads) reads it: UTF-16 and UTF-32 too
    if enc not in ("utf-8", "utf-8-sig"):  # their escapes' backslash and quote are not adjacent bytes: as UTF-8
        try:
            body = body.decode(enc, "surrogatepass").encode("utf-8", "surrogatepass")
        except UnicodeError:  # not text the parser reads either: its parse fails
            return opened
    # escaped backslashes first (so that the quote of ``\\"`` still ends its string), then escaped quotes; the
    # pieces between quotes at even places are outside every string
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    a = np.frombuffer(outside, np.uint8)
    step = np.isin(a, _OPEN).astype(np.int32) - np.isin(a, _CLOSE)
    return int(np.cumsum(step).max(initial=0))


class BodyLimit:
    """Pure ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed); a body that is not a
    multipart upload (JSON) over ``max_json_bytes`` (``None``: ``max_bytes``), and 400 for one the app parses as JSON
    whose arrays and objects nest deeper than :data:`~anybind.serve.schemas.MAX_JSON_DEPTH` (checked once it is all received, before
    the app parses it; it is held meanwhile, at most ``max_json_bytes``)."""

    def __init__(self, app, max_bytes: int, max_json_bytes: int | None = None):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.max_json_bytes = self.max_bytes if max_json_bytes is None else min(self.max_bytes, int(max_json_bytes))

    def _message(self, cap: int) -> str:
        kind, field = ("JSON", "max_json_bytes") if cap < self.max_bytes else ("upload", "max_upload_bytes")
        return f"request body over the {kind} cap of {cap} bytes ({cap / 2**20:.1f} MiB; {serve_limit(field)})"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        raw = scope.get("headers") or []
        # an upload only when every Content-Type says so: the app reads a body by its first one, this by any other
        types = [v for k, v in raw if k == b"content-type"]
        upload = bool(types) and all(t.strip().lower().startswith(b"multipart/form-data") for t in types)
        # the app parses a body as JSON by its first Content-Type (none, or application/json or .../...+json): only
        # such a body can nest too deep for the parser
        first = types[0].split(b";")[0].strip().lower() if types else b""
        as_json = not first or first == b"application/json" or (first.startswith(b"application/")
                                                                and first.endswith(b"+json"))
        cap = self.max_bytes if upload else self.max_json_bytes
        declared = dict(raw).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > cap):
            return await send_json(send, 413, self._message(cap), [(b"connection", b"close")])
        seen = 0
        held: list[bytes] = []

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                chunk = msg.get("body", b"")
                seen += len(chunk)
                if seen > cap:
                    raise HTTPException(413, self._message(cap))
                if as_json and not upload:
                    held.append(chunk)
                    if not msg.get("more_body", False):
                        depth = json_depth(b"".join(held))
                        held.clear()
                        if depth > MAX_JSON_DEPTH:
                            raise HTTPException(400, f"JSON body nested {depth} levels deep: arrays and objects may "
                                                     f"nest at most {MAX_JSON_DEPTH}")
            return msg

        await self.app(scope, limited, send)


class SecurityHeaders:
    """Pure ASGI middleware: nosniff everywhere; a strict CSP on the page and on stored items."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if path == "/" or path.startswith("/static/"):
            extra.append((b"content-security-policy", PAGE_CSP.encode()))
        elif path.startswith(("/items/", "/thumbs/")):
            extra.append((b"content-security-policy", ITEM_CSP.encode()))

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *extra]}
            await send(msg)

        await self.app(scope, receive, send_with_headers)


"""Pure ASGI middleware of the service: the upload cap (413) and the security headers."""

from fastapi.exceptions import HTTPException

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


class BodyLimit:
    """Pure ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed); a body that is not a
    multipart upload (JSON) over ``max_json_bytes`` (``None``: ``max_bytes``)."""

    def __init__(self, app, max_bytes: int, max_json_bytes: int | None = None):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.max_json_bytes = self.max_bytes if max_json_bytes is None else min(self.max_bytes, int(max_json_bytes))

    def _message(self, cap: int) -> str:
        if cap < self.max_bytes:
            return f"request body over the JSON cap of {cap} bytes ({cap / 2**20:.1f} MiB; ServeConfig.max_json_bytes)"
        return f"request body over the upload cap of {cap} bytes ({cap / 2**20:.1f} MiB)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        raw = scope.get("headers") or []
        # an upload only when every Content-Type says so: the app reads a body by its first one, this by any other
        types = [v for k, v in raw if k == b"content-type"]
        upload = bool(types) and all(t.strip().lower().startswith(b"multipart/form-data") for t in types)
        cap = self.max_bytes if upload else self.max_json_bytes
        declared = dict(raw).get(b"content-length")
        if declared is not None and (not declared.strip().isdigit() or int(declared) > cap):
            return await send_json(send, 413, self._message(cap), [(b"connection", b"close")])
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > cap:
                    raise HTTPException(413, self._message(cap))
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


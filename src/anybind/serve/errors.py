"""The service's error answers: every error is JSON ``{"detail": ...}`` that can always be written.

A request body may hold what JSON can say but a response cannot carry: ``NaN`` and
``Infinity`` (Python's JSON reader takes them, strict JSON writing refuses them) and lone
UTF-16 surrogates (``"\\ud800"``, not encodable as UTF-8).  FastAPI's 422 answer echoes
the bad input, so such a body once turned a 422 into a 500.  Every error answer here goes
through :func:`json_safe` first: non-finite numbers become the strings ``"NaN"`` /
``"Infinity"`` / ``"-Infinity"``, lone surrogates their ``\\udXXX`` escape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..data.svg_pool import REMEMBERED_MARK, start_failure_left
from ..errors import AnybindError, renderer_unavailable
from .auth import RateLimited
from .gate import Busy
from .state import Changed, NotFound, UploadError


def json_safe(obj: Any) -> Any:
    """``obj`` (JSON-like: dicts, lists, str, numbers) with nothing strict JSON / UTF-8 cannot write."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {json_safe(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"detail": detail}`` with status ``status``, made writable by :func:`json_safe`."""
    return JSONResponse({"detail": json_safe(detail)}, status_code=status, headers=headers)


#: the status of each error anybind raises on purpose (the most specific class applies)
STATUS: tuple[tuple[type[Exception], int], ...] = (
    (UploadError, 415),  # an upload that is no image or sound this service reads
    (NotFound, 404),  # no such item, or its file cannot be served
    (Changed, 409),  # the item's file changed since it was indexed
    (AnybindError, 400),  # an unusable query
)


#: errors a 422 lists at most (the rest are counted in one more entry): a body of many unknown keys has one error
#: each, and writing them all took longer than the body took to send
MAX_LISTED_ERRORS = 20
#: an echoed input larger than this (characters, or items and characters in a container, counted as they are met) is
#: shown by its type and size instead
MAX_ECHO = 200


#: seconds a client is told to wait before it sends a file again that a busy machine could not render (503)
RENDER_RETRY_AFTER = 5


def render_retry_after(exc: BaseException) -> int:
    """The ``Retry-After`` seconds for a file no renderer could be started for: while a failed start is remembered
    (this one, or the one ``exc`` was told of) no start is tried, so what is left of it (at least 1); else (a start
    that took too long, not remembered) :data:`RENDER_RETRY_AFTER`."""
    left = start_failure_left()
    if left is not None or REMEMBERED_MARK in str(exc):
        return max(1, math.ceil(left or 0))
    return RENDER_RETRY_AFTER


def _answer(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        if renderer_unavailable(exc):  # the upload was not read (no renderer started): the client's file is fine
            return json_error(503, str(exc), headers={"Retry-After": str(render_retry_after(exc))})
        return json_error(status, str(exc))

    return handler


def listed_errors(errors: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """A 422's errors, bounded whatever the body held: the first :data:`MAX_LISTED_ERRORS`, each input echoed only
    when small (:data:`MAX_ECHO`; else its type and size) and each key in its location cut at :data:`MAX_ECHO`
    characters, and one more entry counting those not listed."""
    out = []
    for e in errors[:MAX_LISTED_ERRORS]:
        e = dict(e)
        e["loc"] = [x[:MAX_ECHO] + "..." if isinstance(x, str) and len(x) > MAX_ECHO else x for x in e.get("loc", ())]
        if "input" in e and not _small(e["input"], [MAX_ECHO]):
            x = e["input"]
            e["input"] = f"({type(x).__name__} of {len(x) if hasattr(x, '__len__') else '?'} "\
                f"{'characters' if isinstance(x, (str, bytes)) else 'items'}: not echoed)"
        out.append(e)
    if len(errors) > MAX_LISTED_ERRORS:
        out.append({"type": "too_many_errors", "loc": ["body"],
                    "msg": f"{len(errors) - MAX_LISTED_ERRORS} more errors not listed (at most {MAX_LISTED_ERRORS} are)"})
    return out


def _small(x: Any, budget: list[int]) -> bool:
    """Whether ``x`` holds at most ``budget[0]`` characters and items, counting as it goes (stops at the budget)."""
    if isinstance(x, (str, bytes)):
        budget[0] -= len(x)
    elif isinstance(x, dict):
        budget[0] -= len(x)
        return budget[0] >= 0 and all(_small(k, budget) and _small(v, budget) for k, v in x.items())
    elif isinstance(x, (list, tuple)):
        budget[0] -= len(x)
        return budget[0] >= 0 and all(_small(v, budget) for v in x)
    else:
        budget[0] -= 1
    return budget[0] >= 0


def add_error_handlers(app: FastAPI) -> None:
    """The app's error answers: :data:`STATUS`, 503 busy or a file no renderer could be started for (a
    :class:`~anybind.errors.RendererUnavailable`, also where re-raised under another message:
    :func:`~anybind.errors.not_read_kind`), 429 over a
    key's rate limit (all with ``Retry-After``) and FastAPI's 422 for a
    request-schema violation (the echoed input made writable)."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return json_error(422, jsonable_encoder(listed_errors(exc.errors())))

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return json_error(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(RateLimited)
    async def _limited(request: Request, exc: RateLimited):  # a route's cost over its key's rate limit
        return json_error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})

    for cls, status in STATUS:
        app.add_exception_handler(cls, _answer(status))

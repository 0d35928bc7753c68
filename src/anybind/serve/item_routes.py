"""``GET /items/{id}`` and ``GET /thumbs/{id}``: a stored item (by its id in the index, never by path) and a
thumbnail of a stored image or video, checked against what was indexed (404 when gone, 409 when changed)."""

from __future__ import annotations

from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.background import BackgroundTask

from ..errors import AnybindError, not_read_kind
from .schemas import ITEM_TYPES, ErrorOut
from .sniff import SNIFF_BYTES, sniff
from .state import Changed, NotFound, Service

router = APIRouter()


# -- stored items --------------------------------------------------------------------
@router.get(
    "/items/{item_id:path}",
    response_class=Response,
    responses={
        200: {"content": ITEM_TYPES, "description": "The stored file (type sniffed from its bytes), or the text."},
        404: {"model": ErrorOut, "description": "No such item (or its file is gone, or leads outside the indexed "
              "folders)."},
        409: {"model": ErrorOut, "description": "The item's file changed since it was indexed: not served."},
    },
    summary="A stored item, by its id in the index (never by path)",
)
def item(
    request: Request,
    item_id: Annotated[str, PathParam(description="The record id, as in search results.")],
    modality: Annotated[str | None, Query(max_length=100, description="Which of the record's items.")] = None,
) -> Response:
    svc: Service = request.state.svc
    it = svc.item(item_id, modality)
    if it.media == "text":
        return PlainTextResponse(it.source)
    f = svc.open_item(it)  # checked: inside the indexed folders, the indexed content (404 / 409)
    s = sniff(f.head(SNIFF_BYTES))
    return FileResponse(f.path, stat_result=f.stat, media_type=s.mime if s else "application/octet-stream",
                        background=BackgroundTask(f.close))

@router.get(
    "/thumbs/{item_id:path}",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG at most `size` pixels a side."},
        404: {"model": ErrorOut, "description": "No such image item, or it cannot be read."},
        409: {"model": ErrorOut, "description": "The item's file changed since it was indexed."},
        503: {"model": ErrorOut, "description": "A stored SVG not rendered: no renderer process could start (the "
              "file was not read; try again after `Retry-After` seconds)."},
    },
    summary="A thumbnail of a stored image",
)
async def thumb(
    request: Request,
    item_id: Annotated[str, PathParam(description="The record id, as in search results.")],
    modality: Annotated[str | None, Query(max_length=100)] = None,
    size: Annotated[int, Query(ge=16, le=512)] = 160,
) -> Response:
    svc: Service = request.state.svc
    it = await anyio.to_thread.run_sync(svc.item, item_id, modality)  # may reload the index: off the event loop
    if it.media not in ("image", "video"):
        raise NotFound(f"item {item_id!r} ({it.modality}) is not an image or a video: no thumbnail")
    try:
        data = await anyio.to_thread.run_sync(svc.thumbnail, it, size, limiter=request.state.thumbs)
    except (NotFound, Changed):
        raise
    except AnybindError as e:
        # an SVG no renderer could start for was not read: 503 and retry, not 404
        raise not_read_kind(e, NotFound)(f"cannot make a thumbnail of item {item_id!r}: "
                                         f"{str(e).replace(it.source, 'its file')}") from None
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

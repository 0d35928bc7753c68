"""Request plumbing shared by the routes: query parts from texts and uploads, hits as ``HitOut``."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Request, UploadFile

from ..data.strings import is_blank
from ..encoders.custom import feature_vector
from ..errors import DataError, serve_limit
from ..index import Hit, QueryError
from .budget import upload_pixels
from .schemas import MAX_TEXT, HitOut, QueryInput
from .state import Service


def _quote_id(item_id: str) -> str:
    """An item id as URL path segments: every segment percent-encoded, dot segments too."""
    segs = []
    for s in item_id.split("/"):
        q = quote(s, safe="")
        segs.append(q.replace(".", "%2E") if s in (".", "..") else q)
    return "/".join(segs)


def hit_out(svc: Service, h: Hit) -> HitOut:
    media = svc.media.get(h.modality, "other")
    url = thumb = text = None
    if media == "text":
        text = h.source
    else:
        ref = f"{_quote_id(h.id)}?modality={quote(h.modality, safe='')}"
        url = f"/items/{ref}"
        if media in ("image", "video"):
            thumb = f"/thumbs/{ref}"
    return HitOut(
        rank=h.rank, id=h.id, modality=h.modality, media=media, score=h.score, labels=h.labels, text=text,
        url=url, thumb_url=thumb, probability=h.probability,
    )


def text_parts(svc: Service, text: str | None, inputs: list[QueryInput]) -> list[tuple[str, Any, float]]:
    """The parts of a JSON query: its texts, and the features given for ``vectors:`` modalities."""
    parts: list[tuple[str, Any, float]] = []
    if text is not None:
        if is_blank(text):
            raise QueryError("empty text query: give some text")
        parts.append(("text", text, 1.0))
    for j, i in enumerate(inputs):
        if i.features is None:
            parts.append((svc.check_text_modality(i.modality), i.text, float(i.weight)))
        else:
            parts.append((i.modality, features_part(svc, i.modality, i.features, f"inputs[{j}]"), float(i.weight)))
    return parts


def features_part(svc: Service, m: str, features: list[float], what: str) -> np.ndarray:
    """A ``vectors:`` modality's features given in JSON, checked as an uploaded ``.npy`` of them is (the
    service's ``max_array_values``; one vector of the encoder's width, finite): what its encoder takes for a key."""
    if m not in svc.space.modalities:
        raise QueryError(f"{what}: unknown modality {m!r}: this space binds {', '.join(svc.space.modalities)}")
    takes = [t for t in svc.array_modalities if svc.input_kind[t] == "key"]
    if m not in takes:
        raise QueryError(f"{what}: modality {m!r} takes no features, only the modalities of precomputed features "
                         f"(vectors: encoders) do: {', '.join(takes) or 'this space binds none'}")
    if len(features) > svc.config.max_array_values:
        raise QueryError(f"{what}: {len(features)} features; this service takes at most {svc.config.max_array_values} "
                         f"values (the limit, {serve_limit('max_array_values')})")
    try:
        return feature_vector(np.asarray(features, np.float64), svc.space.encoder(m).dim, f"{what}: features")
    except DataError as e:
        raise QueryError(str(e)) from None


async def read_uploads(svc: Service, files: list[UploadFile]) -> list[tuple[bytes, str]]:
    if len(files) > svc.config.max_files:
        raise QueryError(f"{len(files)} files in one request: at most {svc.config.max_files}")
    out = []
    for f in files:
        out.append((await f.read(), f.filename or "upload"))
    return out


async def run_upload(request: Request, uploads: list[tuple[bytes, str]], work: Callable[[], Any]) -> Any:
    """Run an upload route's ``work`` through the admission gate once the pixels its files declare are
    reserved in the service's budget (released when ``work`` has returned or failed: its items encoded,
    its staged files removed); see :mod:`~anybind.serve.budget`."""
    svc: Service = request.state.svc
    pixels = await anyio.to_thread.run_sync(upload_pixels, uploads, svc.config)  # header reads: off the event loop
    async with request.state.budget.hold(pixels):
        return await request.state.gate.run(work)


def upload_parts(
    svc: Service,
    uploads: list[tuple[bytes, str]],
    texts: list[str],
    weights: list[float],
    file_modality: list[str],
    text_modality: str,
) -> tuple[list[tuple[str, Any, float]], list[tuple[Path | None, str]]]:
    """Stage uploads (sniffed, written to private temporary files) and build the fused query's parts.

    Weights follow the order texts, then files; returns the parts and, per file, its staged path (to delete; None
    for a ``vectors:`` modality's features, kept in memory) and its name as shown."""
    n = len(texts) + len(uploads)
    if weights and len(weights) != n:
        raise QueryError(f"{len(weights)} weights for {n} query inputs (texts first, then files)")
    if file_modality and len(file_modality) != len(uploads):
        raise QueryError(f"{len(file_modality)} file_modality values for {len(uploads)} files")
    w = list(weights) if weights else [1.0] * n
    parts: list[tuple[str, Any, float]] = []
    if texts:
        svc.check_text_modality(text_modality)
    for t, wt in zip(texts, w):
        if is_blank(t):
            raise QueryError("empty text query: give some text")
        if len(t) > MAX_TEXT:  # form fields are not validated by the JSON schemas: the same caps here
            raise QueryError(f"a text query of {len(t)} characters: at most {MAX_TEXT}")
        parts.append((text_modality, t, wt))
    staged: list[tuple[Path | None, str]] = []
    try:
        for j, (data, name) in enumerate(uploads):
            m, item, path, shown = svc.stage(data, name, file_modality[j] if file_modality else None)
            staged.append((path, shown))
            parts.append((m, item, w[len(texts) + j]))
    except BaseException:
        unstage(staged)
        raise
    return parts, staged


def unstage(staged: list[tuple[Path | None, str]]) -> None:
    for p, _ in staged:
        if p is not None:
            p.unlink(missing_ok=True)


def named_files(e: Exception, staged: list[tuple[Path | None, str]]) -> str:
    """An error message with the private temporary paths replaced by the uploads' names."""
    msg = str(e)
    for p, shown in staged:
        if p is not None:
            msg = msg.replace(str(p), shown)
    return msg


def to_ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)

"""``POST /classify`` and ``POST /classify/upload``: zero-shot classification of a text, or of uploaded images and
sounds (optionally fused with text), over given labels, with the calibrated P(match) when the space has one."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile

from ..data.strings import is_blank
from ..data.templates import templates_for
from ..errors import AnybindError
from ..index import QueryError
from ..index.calibrated import probabilities, query_modality
from .queries import named_files, read_uploads, run_upload, text_parts, to_ms, unstage, upload_parts
from .schemas import (
    ERRORS,
    MAX_LABEL,
    MAX_LABELS,
    MAX_TEMPLATE,
    MAX_TEMPLATES,
    UPLOAD_ERRORS,
    ClassifyOut,
    ClassifyRequest,
    ClassOut,
)
from .state import Service

router = APIRouter()


# -- classify ------------------------------------------------------------------------
def classify_out(svc, parts, labels, templates, t0, staged=()):
    try:
        scores, probs, qmods = svc.classify(parts, labels, templates)
    except AnybindError as e:
        raise type(e)(named_files(e, list(staged))) from None
    order = sorted(range(len(labels)), key=lambda i: -float(scores[i]))
    qmod = query_modality(svc.space, qmods, False, None)  # issue 20: calibrated P(match), when there is one
    match = probabilities(svc.space, qmod, "text", scores) if qmod is not None else None
    return ClassifyOut(
        results=[
            ClassOut(label=labels[i], score=float(scores[i]), probability=min(1.0, max(0.0, float(probs[i]))),
                     match_probability=None if match is None else float(match[i]))
            for i in order
        ],
        query_modalities=qmods,
        templates=templates_for(svc.space, templates or None),  # what was used (checked by classify)
        took_ms=to_ms(t0),
    )

@router.post(
    "/classify", response_model=ClassifyOut, responses=ERRORS, summary="Zero-shot classify a text over given labels"
)
async def classify(body: ClassifyRequest, request: Request) -> ClassifyOut:
    svc: Service = request.state.svc

    def work():
        t0 = time.perf_counter()
        parts = text_parts(svc, body.text, body.inputs)
        if not parts:
            raise QueryError("nothing to classify: give text, or inputs")
        return classify_out(svc, parts, body.labels, body.templates, t0)

    return await request.state.gate.run(work)

@router.post(
    "/classify/upload",
    response_model=ClassifyOut,
    responses=UPLOAD_ERRORS,
    summary="Zero-shot classify uploaded images / sounds (optionally fused with text)",
)
async def classify_upload(
    request: Request,
    files: Annotated[list[UploadFile], File(description="Images or sounds (type sniffed from the content).")],
    labels: Annotated[list[str], Form(description="Candidate class names (repeat the field).")],
    templates: Annotated[list[str], Form(
        description="Prompt templates with '{}' (default: the space's own, else 'a {}.')."
    )] = [],  # noqa: B006
    text: Annotated[list[str], Form(description="Texts fused with the files.")] = [],  # noqa: B006
    weights: Annotated[list[float], Form(description="One per input: texts first, then files.")] = [],  # noqa: B006
    file_modality: Annotated[list[str], Form(description="Per file, the modality to embed it as.")] = [],  # noqa: B006
) -> ClassifyOut:
    svc: Service = request.state.svc
    uploads = await read_uploads(svc, files)
    names = [x for x in labels if not is_blank(x)]
    if not names:
        raise QueryError("no labels given: repeat the 'labels' field, one class name each")
    if len(names) > MAX_LABELS:
        raise QueryError(f"{len(names)} labels: at most {MAX_LABELS}")
    if len(templates) > MAX_TEMPLATES:
        raise QueryError(f"{len(templates)} templates: at most {MAX_TEMPLATES}")
    # form fields get the caps the JSON route's schema gives (a 40 KB form once built a 200 MB prompt)
    if any(len(x) > MAX_LABEL for x in names):
        raise QueryError(f"a label of {max(map(len, names))} characters: at most {MAX_LABEL}")
    if any(len(x) > MAX_TEMPLATE for x in templates):
        raise QueryError(f"a template of {max(map(len, templates))} characters: at most {MAX_TEMPLATE}")

    def work():
        t0 = time.perf_counter()
        parts, staged = upload_parts(svc, uploads, text, weights, file_modality, "text")
        try:
            return classify_out(svc, parts, names, templates, t0, staged)
        finally:
            unstage(staged)

    return await run_upload(request, uploads, work)

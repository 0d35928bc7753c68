"""``POST /classify`` and ``POST /classify/upload``: zero-shot classification of a text, or of uploaded images and
sounds (optionally fused with text), over given labels, with the calibrated P(match) when the space has one.

A request may name a balanced :class:`~anybind.zeroshot.ZeroShotClassifier` the service serves (``anybind serve
--classifier NAME=DIR``, :func:`load_classifiers`): its labels must then be the classifier's classes in its order and
its query of the modality the classifier's offsets were balanced on; the query is scored against the classifier's own
class vectors (refined on unlabelled items when it was refined; else its prompt names in its templates) and the
classes ranked by score + offset, each query on its own (as ``ZeroShotClassifier.predict_proba``)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile

from ..data.strings import is_blank
from ..data.templates import templates_for
from ..errors import AnybindError, DataError, SpaceError
from ..index import QueryError
from ..index.calibrated import probabilities, query_modality
from ..zeroshot import ZeroShotClassifier
from .config import ServeConfigError
from .queries import named_files, read_uploads, run_upload, text_parts, to_ms, unstage, upload_parts
from .schemas import (
    ERRORS,
    MAX_CLASSIFIER_NAME,
    MAX_LABEL,
    MAX_LABELS,
    MAX_TEMPLATE,
    MAX_TEMPLATES,
    UPLOAD_ERRORS,
    ClassifierInfo,
    ClassifyOut,
    ClassifyRequest,
    ClassOut,
)
from .state import Service

router = APIRouter()
CLASSIFIER_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_CLASSIFIER_NAME - 1}}}")


# -- classifiers ---------------------------------------------------------------------
def load_classifiers(specs: Mapping[str, Any] | None, svc: Service) -> dict[str, ZeroShotClassifier]:
    """``{name: ZeroShotClassifier or its folder}`` loaded for the served space: one of another space is refused in
    one line (:class:`SpaceError`, the artefact's own check), as is a name that is not a short plain word or one whose
    classes no request could give as labels (:func:`check_nameable`)."""
    out: dict[str, ZeroShotClassifier] = {}
    for name, c in (specs or {}).items():
        if not isinstance(name, str) or not CLASSIFIER_NAME.fullmatch(name):
            raise ServeConfigError(f"classifier name {name!r}: give letters, digits, '_', '.' or '-' (at most "
                                   f"{MAX_CLASSIFIER_NAME})")
        if isinstance(c, ZeroShotClassifier):
            if c.space.identity() != svc.space.identity():
                raise SpaceError(f"classifier {name!r} was fitted with space {c.space.identity()}, but this service "
                                 f"serves space {svc.space.identity()}; balance one for it (anybind balance)")
            out[name] = c
        else:
            out[name] = ZeroShotClassifier.load(Path(c), svc.space)
        check_nameable(name, out[name])
    return out


def check_nameable(name: str, clf: ZeroShotClassifier) -> None:
    """A request naming the classifier gives its classes as labels: more than a request may give, or one longer than
    a label may be, and no request could name it (refused in one line, :class:`ServeConfigError`)."""
    if len(clf.classes) > MAX_LABELS:
        raise ServeConfigError(f"classifier {name!r} has {len(clf.classes)} classes: a request takes at most "
                               f"{MAX_LABELS} labels")
    longest = max(map(len, clf.classes))
    if longest > MAX_LABEL:
        raise ServeConfigError(f"classifier {name!r} has a class of {longest} characters: a label may have at most "
                               f"{MAX_LABEL}")


def classifiers_info(classifiers: Mapping[str, ZeroShotClassifier]) -> dict[str, ClassifierInfo]:
    return {n: ClassifierInfo(modality=c.modality, classes=c.classes, templates=c.templates,
                              temperature=c.temperature, prior=c.prior_spec) for n, c in classifiers.items()}


def classifier_settings(request: Request, name: str | None, parts, labels, templates) -> dict[str, Any]:
    """What :meth:`Service.classify` takes for the classifier ``name`` (nothing without one); an unknown name, labels
    or templates that are not its own, a query of another modality: one line (:class:`QueryError`)."""
    if name is None:
        return {}
    served: dict[str, ZeroShotClassifier] = request.state.classifiers
    if name not in served:
        have = (f"it serves: {', '.join(sorted(served))}" if served
                else "it serves none: anybind serve --classifier NAME=DIR")
        raise QueryError(f"no classifier {name!r} in this service ({have})")
    clf = served[name]
    mods = sorted({p[0] for p in parts})
    if mods != [clf.modality]:
        raise QueryError(f"classifier {name!r} classifies {clf.modality} items (its offsets were balanced on them); "
                         f"this query is {' + '.join(mods)}")
    try:
        use = clf.settings_for(request.state.svc.space, labels, templates=templates or None,
                               cache=request.state.svc.cache)
    except DataError as e:
        raise QueryError(f"classifier {name!r}: {str(e).removeprefix('bias: ')}") from None
    return {"names": use["names"], "templates": use["templates"], "offsets": use["offsets"],
            "temperature": clf.temperature, "text_modality": use["text_modality"], "vectors": use["vectors"]}


# -- classify ------------------------------------------------------------------------
def classify_out(svc, parts, labels, templates, t0, staged=(), use=None, name=None):
    use = use or {}
    try:
        scores, probs, qmods = svc.classify(parts, use.get("names", labels), use.get("templates", templates),
                                            offsets=use.get("offsets"), temperature=use.get("temperature"),
                                            text_modality=use.get("text_modality"), vectors=use.get("vectors"))
    except AnybindError as e:
        raise type(e)(named_files(e, list(staged))) from None
    off = use.get("offsets")
    ranked = scores if off is None else scores + off
    order = sorted(range(len(labels)), key=lambda i: -float(ranked[i]))
    qmod = query_modality(svc.space, qmods, False, None)  # issue 20: calibrated P(match), when there is one
    match = probabilities(svc.space, qmod, "text", scores) if qmod is not None else None
    return ClassifyOut(
        results=[
            ClassOut(label=labels[i], score=float(scores[i]), probability=min(1.0, max(0.0, float(probs[i]))),
                     match_probability=None if match is None else float(match[i]),
                     offset=None if off is None else float(off[i]))
            for i in order
        ],
        query_modalities=qmods,
        # what was used (checked by classify)
        templates=use.get("templates") or templates_for(svc.space, templates or None),
        took_ms=to_ms(t0),
        classifier=name if use else None,
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
        use = classifier_settings(request, body.classifier, parts, body.labels, body.templates)
        return classify_out(svc, parts, body.labels, body.templates, t0, use=use, name=body.classifier)

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
    classifier: Annotated[str | None, Form(
        max_length=MAX_CLASSIFIER_NAME, description="A balanced zero-shot classifier the service serves (as in "
        "/classify)."
    )] = None,
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
            use = classifier_settings(request, classifier, parts, names, templates)
            return classify_out(svc, parts, names, templates, t0, staged, use=use, name=classifier)
        finally:
            unstage(staged)

    return await run_upload(request, uploads, work)

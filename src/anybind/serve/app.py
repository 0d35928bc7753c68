"""The search service: ``anybind serve SPACE --index INDEX`` (FastAPI + uvicorn).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``)::

    GET  /                      the web page (static/index.html, vanilla JS, no build step)
    GET  /health                space, index, limits, load
    POST /embed                 texts -> vectors               POST /embed/upload     files -> vectors
    POST /search                text(s), features, a vector    POST /search/upload    image/sound/.npy (+ text), fused
    POST /classify              zero-shot over given labels    POST /classify/upload  the same for a file
                                (or with a served balanced classifier: --classifier NAME=DIR)
    POST /explain               why a stored item matches a text (word drops, nearest words; serve/explain_route)
    GET  /items/{id}            a stored item (image, sound or text), looked up in the index by id
    GET  /thumbs/{id}           a JPEG thumbnail of a stored image (a video's first frame)

Guarantees:

* **Loaded once.**  The space, the index and every encoder are loaded (and the
  encoders run once) in the app's lifespan, before the first request.
* **Bounded work.**  Embedding and search run in worker threads, at most
  ``concurrency`` at once; up to ``max_queue`` more requests wait (at most
  ``queue_timeout`` seconds) for a slot, and any beyond that get **503** with
  ``Retry-After``.  Requests that need the same encoder share its calls (dynamic
  batching, :mod:`~anybind.serve.batching`).  Thumbnails have their own threads (at
  most ``concurrency``, and no more than the cores); file
  serving is plain I/O.
* **Bounded uploads.**  A request body over ``max_upload_bytes`` gets **413**
  (from ``Content-Length`` before anything is read, or as soon as the stream
  passes the cap), a JSON body over ``max_json_bytes`` too; more than ``max_files`` files in one request get
  **400**, as does a JSON body whose arrays and objects nest deeper than ``schemas.MAX_JSON_DEPTH`` (32; checked
  before it is parsed).  A **422** lists at most 20 errors, each input echoed only when small; more than a few unknown
  fields are one error.
  The uploads being decoded and encoded hold at most ``max_inflight_pixels``
  pixels together, whatever ``concurrency`` is: each reserves what its files'
  headers declare before anything is decoded, and waits its turn as a request
  waits for a slot (503 beyond); see :mod:`~anybind.serve.budget`.
* **Sniffed, not trusted.**  An upload's type comes from its first bytes (PNG,
  JPEG, GIF, WebP, SVG; WAV, OGG, FLAC, MP3), never from its name or declared
  content type: anything else gets **415**; a file of a known type that does not
  decode gets **400**, naming the file and the decoder's complaint (an SVG for which no renderer
  process could be started on a busy machine was not read: **503** with ``Retry-After``).
* **No paths from clients.**  ``/items`` and ``/thumbs`` take an item id, look it
  up in the index loaded at start-up and serve the file the index recorded for
  it; results carry URLs, never server paths.  The file is served only if it still
  lies in the folders the index's files came from (no link leading out: 404) and
  holds the content that was indexed (409); see :mod:`~anybind.serve.files`.
* **Loopback by default; keys beyond it.**  ``anybind serve`` binds 127.0.0.1, and refuses any
  other address without ``--api-keys`` (unless ``--insecure``); with keys, every route but
  ``/health`` and the page's static files needs ``Authorization: Bearer`` (401 / 429 with
  ``Retry-After``); see :mod:`~anybind.serve.auth`.  CORS is closed unless origins are given.

Errors are JSON ``{"detail": "..."}`` (400 bad query, 404 unknown item, 409 item
changed since indexing, 413 too large, 415 not an image or sound, 503 busy or no SVG renderer);
request-schema violations are FastAPI's 422 (also for ``NaN`` / ``Infinity`` and
lone surrogates, see :mod:`~anybind.serve.errors`).

Layout: the search routes, error handlers and lifespan are here (:func:`create_app`); classify, stored items,
explain and caption are routers of their own (``*_routes``, ``explain_route``); the request / response models in :mod:`~anybind.serve.schemas`, the admission gate in
:mod:`~anybind.serve.gate`, the ASGI middleware in :mod:`~anybind.serve.middleware`,
the request plumbing (query parts, uploads, hits) in :mod:`~anybind.serve.queries`.
"""

import os
import time
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..data.strings import is_blank
from ..errors import AnybindError
from ..index import QueryError
from ..index.query import query_vector
from ..space_core import per_modality
from ..version import __version__
from .auth import ApiKeyAuth, KeyStore
from .budget import PixelBudget
from .caption_routes import add_caption_routes
from .classify_routes import classifiers_info, load_classifiers
from .classify_routes import router as classify_router
from .errors import add_error_handlers
from .explain_route import router as explain_router
from .gate import Busy, Gate  # noqa: F401 - Busy: imported from here by callers
from .item_routes import router as items_router
from .middleware import BodyLimit, SecurityHeaders
from .queries import hit_out, named_files, read_uploads, run_upload, text_parts, to_ms, unstage, upload_parts
from .schemas import (
    ERRORS,
    MAX_K,
    RANK_BY,
    RERANK,
    UPLOAD_ERRORS,
    EmbeddedOut,
    EmbedOut,
    EmbedRequest,
    HealthOut,
    IndexInfo,
    LimitsInfo,
    LoadInfo,
    SearchOut,
    SearchRequest,
    SpaceInfo,
)
from .state import ServeConfig, Service

if TYPE_CHECKING:
    from ..zeroshot import ZeroShotClassifier

STATIC = Path(__file__).parent / "static"


def _swagger_dir() -> str | None:
    """Swagger UI's files from the ``swagger-ui-bundle`` wheel (FastAPI's default /docs loads them from a CDN)."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return str(swagger_ui_bundle.swagger_ui_path)


_SWAGGER_DIR = _swagger_dir()


# ---------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------
def create_app(
    space_dir: str | Path | None = None,
    index_dir: str | Path | None = None,
    *,
    service: Service | None = None,
    cache: str | Path | None = None,
    config: ServeConfig | None = None,
    warm: bool = True,
    api_keys: "str | Path | KeyStore | None" = None,
    cors_origins: Sequence[str] = (),
    captioner: "str | Path | object | None" = None,
    classifiers: "Mapping[str, str | Path | ZeroShotClassifier] | None" = None,
) -> FastAPI:
    """The FastAPI app serving ``index_dir`` (searched with ``space_dir``, which it must have been built with).

    The space, index and encoders are loaded in the app's lifespan (start-up), or
    taken from a ready ``service`` (tests, benchmarks: several apps may share one).
    ``config``: limits, see :class:`~anybind.serve.state.ServeConfig`.
    ``api_keys``: a key file (or a :class:`~anybind.serve.auth.KeyStore`): every route but ``/health`` and
    the page's static files then needs ``Authorization: Bearer <key>`` (see :mod:`~anybind.serve.auth`).
    ``cors_origins``: origins allowed to call the API from a browser (none by default: same origin only).
    ``captioner``: a captioner (or its folder) of the served space adds ``/caption`` (:mod:`.caption_routes`).
    ``classifiers``: ``{name: balanced ZeroShotClassifier or its folder}`` of the served space, which ``/classify``
    requests may name (:mod:`.classify_routes`); loaded now with ``service``, else at start-up.
    """
    if service is None and index_dir is None:
        raise ValueError("create_app needs index_dir (and the space it was built with), or service=")
    cfg = config or (service.config if service is not None else ServeConfig())
    served = load_classifiers(classifiers, service) if service is not None else None  # refused before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service
        if svc is None:
            svc = await anyio.to_thread.run_sync(
                lambda: Service.load(space_dir, index_dir, cache=cache, config=cfg, warm=warm)
            )
        try:
            clfs = served if served is not None else await anyio.to_thread.run_sync(load_classifiers, classifiers, svc)
        except BaseException:
            if service is None:
                svc.close()
            raise
        gate = Gate(cfg.concurrency, cfg.max_queue, cfg.queue_timeout)
        # the decoded uploads in flight, bounded whatever the concurrency (serve/budget)
        budget = PixelBudget(cfg.max_inflight_pixels, cfg.max_queue, cfg.queue_timeout, lambda: gate.waiting)
        # thumbnails decode and resize on the CPU: no more at once than cores (nor than request slots)
        thumbs = anyio.CapacityLimiter(max(1, min(cfg.concurrency, os.cpu_count() or 1)))
        try:
            yield {"svc": svc, "gate": gate, "budget": budget, "thumbs": thumbs, "classifiers": clfs}
        finally:
            if service is None:
                svc.close()

    app = FastAPI(
        title="anybind search",
        version=__version__,
        description=(
            "Search one shared embedding space with text, images and sounds; zero-shot classify; fetch stored "
            "items. Errors are JSON {\"detail\": ...}."
        ),
        lifespan=lifespan,
        docs_url=None if _SWAGGER_DIR else "/docs",
    )
    if _SWAGGER_DIR:  # the Swagger UI from the swagger-ui-bundle wheel: /docs works offline
        from fastapi.openapi.docs import get_swagger_ui_html

        app.mount("/docs-assets", StaticFiles(directory=_SWAGGER_DIR), name="docs-assets")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")

    app.add_middleware(BodyLimit, max_bytes=cfg.max_upload_bytes, max_json_bytes=cfg.max_json_bytes)
    if api_keys is not None:  # inside CORS (a preflight carries no key), outside everything that reads a body
        app.add_middleware(ApiKeyAuth, store=api_keys if isinstance(api_keys, KeyStore) else KeyStore(api_keys))
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type"], max_age=600)
    app.add_middleware(SecurityHeaders)

    add_error_handlers(app)
    app.include_router(explain_router)  # POST /explain (issue 20)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health", response_model=HealthOut, summary="Space, index, limits and current load")
    async def health(request: Request) -> HealthOut:
        svc: Service = request.state.svc
        gate: Gate = request.state.gate
        budget: PixelBudget = request.state.budget
        await anyio.to_thread.run_sync(svc.refresh)  # current counts; off the event loop (it may reload)
        sp = svc.space
        ups = {k: m for k in ("image", "audio", "video", "array") if (m := svc.upload_modality(k))}
        return HealthOut(
            status="ok",
            anybind_version=__version__,
            space=SpaceInfo(identity=sp.identity(), dim=sp.dim, encoders=sp.encoders, temperature=sp.temperature),
            index=IndexInfo(rows=sum(svc.counts.values()), counts=svc.counts),
            text_modalities=[m for m in sp.modalities if svc.input_kind[m] == "text"],
            upload_modalities=ups,
            media=svc.media,
            calibrated=sorted(k.replace("|", "-") for k in sp.calibration.pairs) if sp.calibration is not None else [],
            limits=LimitsInfo(
                max_upload_bytes=cfg.max_upload_bytes, max_json_bytes=min(cfg.max_json_bytes, cfg.max_upload_bytes),
                max_files=cfg.max_files, concurrency=gate.concurrency,
                max_queue=gate.max_queue, queue_timeout=gate.timeout, max_k=MAX_K,
                max_inflight_pixels=budget.capacity,
            ),
            load=LoadInfo(running=gate.running, waiting=gate.waiting + budget.waiting,
                          reserved_pixels=budget.reserved, peak_reserved_pixels=budget.peak),
            uptime_s=round(time.time() - svc.started, 1),
            classifiers=classifiers_info(request.state.classifiers),
        )

    # -- embed ---------------------------------------------------------------------------
    @app.post("/embed", response_model=EmbedOut, responses=ERRORS, summary="Embed texts into the space")
    async def embed(body: EmbedRequest, request: Request) -> EmbedOut:
        svc: Service = request.state.svc

        def work():
            t0 = time.perf_counter()
            m = svc.check_text_modality(body.modality)
            for i, t in enumerate(body.texts):
                if is_blank(t):
                    raise QueryError(f"text {i} is empty")
            X = svc.embed_items(m, body.texts)
            items = [EmbeddedOut(modality=m, vector=v.tolist()) for v in X]
            return EmbedOut(dim=svc.space.dim, items=items, took_ms=to_ms(t0))

        return await request.state.gate.run(work)

    @app.post(
        "/embed/upload", response_model=EmbedOut, responses=UPLOAD_ERRORS, summary="Embed uploaded images / sounds"
    )
    async def embed_upload(
        request: Request,
        files: Annotated[list[UploadFile], File(description="Images or sounds (type sniffed from the content).")],
        file_modality: Annotated[
            list[str], Form(description="Per file, the bound modality to embed it as (default by its type).")
        ] = [],  # noqa: B006 - FastAPI copies defaults
    ) -> EmbedOut:
        svc: Service = request.state.svc
        uploads = await read_uploads(svc, files)

        def work():
            t0 = time.perf_counter()
            parts, staged = upload_parts(svc, uploads, [], [], file_modality, "text")
            try:  # the files of one modality in one encoder call
                vecs = per_modality([(m, p) for m, p, _ in parts], svc.embed_items)
                items = [EmbeddedOut(modality=m, name=shown.strip("'\""), vector=v.tolist())
                         for (m, _, _), (_, shown), v in zip(parts, staged, vecs)]
            except AnybindError as e:
                raise type(e)(named_files(e, staged)) from None
            finally:
                unstage(staged)
            return EmbedOut(dim=svc.space.dim, items=items, took_ms=to_ms(t0))

        return await run_upload(request, uploads, work)

    # -- search --------------------------------------------------------------------------
    @app.post("/search", response_model=SearchOut, responses=ERRORS, summary="Search with text (one or several, fused)")
    async def search(body: SearchRequest, request: Request) -> SearchOut:
        svc: Service = request.state.svc

        def work():
            t0 = time.perf_counter()
            parts = text_parts(svc, body.text, body.inputs)
            vector = None if body.vector is None else query_vector(np.asarray(body.vector), svc.space.dim, "vector")
            if not parts and vector is None:
                raise QueryError("empty query: give text, inputs or a vector")
            mods = [body.modality] if isinstance(body.modality, str) else (body.modality or None)
            hits, qmods = svc.search(parts, k=body.k, modality=mods, labels=body.labels, rerank=body.rerank,
                                     rank_by=body.rank_by, vector=vector)
            return SearchOut(hits=[hit_out(svc, h) for h in hits], query_modalities=qmods, took_ms=to_ms(t0))

        return await request.state.gate.run(work)

    @app.post(
        "/search/upload",
        response_model=SearchOut,
        responses=UPLOAD_ERRORS,
        summary="Search with uploaded images / sounds, optionally fused with text",
    )
    async def search_upload(
        request: Request,
        files: Annotated[list[UploadFile], File(description="Images or sounds (type sniffed from the content).")],
        text: Annotated[list[str], Form(description="Texts fused with the files.")] = [],  # noqa: B006
        text_modality: Annotated[str, Form(max_length=100)] = "text",
        weights: Annotated[list[float], Form(description="One per input: texts first, then files.")] = [],  # noqa: B006
        file_modality: Annotated[list[str], Form(description="Per file, the modality to embed it as.")] = [],  # noqa: B006
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        modality: Annotated[list[str], Form(description="Only return items of these modalities.")] = [],  # noqa: B006
        label: Annotated[list[str], Form(description="KEY=VALUE label filters (all must match).")] = [],  # noqa: B006
        rerank: Annotated[RERANK | None, Form()] = None,
        rank_by: Annotated[Literal["score", "probability"], Form(description=RANK_BY)] = "score",
    ) -> SearchOut:
        svc: Service = request.state.svc
        uploads = await read_uploads(svc, files)

        def work():
            t0 = time.perf_counter()
            parts, staged = upload_parts(svc, uploads, text, weights, file_modality, text_modality)
            try:
                hits, qmods = svc.search(parts, k=k, modality=modality or None, labels=label, rerank=rerank,
                                         rank_by=rank_by)
            except AnybindError as e:
                raise type(e)(named_files(e, staged)) from None
            finally:
                unstage(staged)
            return SearchOut(hits=[hit_out(svc, h) for h in hits], query_modalities=qmods, took_ms=to_ms(t0))

        return await run_upload(request, uploads, work)

    app.include_router(classify_router)  # POST /classify, /classify/upload (serve/classify_routes)
    app.include_router(items_router)  # GET /items/{id}, /thumbs/{id} (serve/item_routes)

    if captioner is not None:
        add_caption_routes(app, captioner, service)
    return app

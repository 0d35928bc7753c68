"""Captions in the service: ``anybind serve SPACE --index INDEX --captioner DIR`` (issue 18).

Routes, present only when the app is given a captioner (:func:`add_caption_routes`; without one the OpenAPI
schema is the same as before)::

    GET  /caption           the captioner: its language model, projection, noise and the decoding limits
    POST /caption           JSON: stored items by id (decoded from their vectors in the index, no file read)
                            and texts -> one caption each
    POST /caption/upload    uploaded images / sounds (sniffed, size-checked, as /search/upload) -> one caption each

Decoding options: ``method`` (greedy, beam, sample), ``max_tokens`` (at most :data:`MAX_CAPTION_TOKENS`, the
service's cap: generation is the costliest work it does), ``beams`` (at most :data:`MAX_BEAMS`), sampling
``temperature`` / ``top_p`` / ``seed``, ``projection`` (none / memory, see :mod:`anybind.caption.memory`;
default: the captioner's own) and ``mode`` (``auto``: each modality by the mode chosen on val, as
``Captioner.caption``; or mapper / prompt / nearest, see :mod:`anybind.caption.choice`).  The same limits as the other routes apply: the upload cap (413), ``max_files``
items or files per request (400), the worker gate (503), API keys and their rate limits -- where a caption
request costs its decoding work, not one token (:func:`caption_cost`; 429 with ``Retry-After`` when its key's
bucket does not hold it).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from ..data.strings import is_blank
from ..errors import AnybindError, SpaceError
from ..index import QueryError
from ..space_core import per_modality
from .auth import charge_request
from .files import NotFound
from .queries import named_files, read_uploads, run_upload, to_ms, unstage, upload_parts
from .schemas import ERRORS, MAX_TEXT, UPLOAD_ERRORS, ErrorOut, RequestModel
from .state import Service

MAX_CAPTION_TOKENS = 64
MAX_BEAMS = 8
MAX_CAPTION_INPUTS = 16  # JSON schema cap on items + texts; the service's max_files applies as well
METHOD = Literal["greedy", "beam", "sample"]
PROJECTION = Literal["none", "memory"]
MODE = Literal["auto", "mapper", "prompt", "nearest"]


class DecodeOptions(RequestModel):
    method: METHOD = Field("greedy", description="Greedy decoding, beam search, or nucleus sampling.")
    max_tokens: int = Field(24, ge=1, le=MAX_CAPTION_TOKENS, description="At most this many tokens per caption.")
    beams: int = Field(3, ge=1, le=MAX_BEAMS, description="Beams kept (method 'beam').")
    temperature: float = Field(1.0, ge=0.05, le=5.0, description="Sampling temperature (method 'sample').")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus mass (method 'sample').")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Sampling seed (the same seed, the same captions).")
    projection: PROJECTION | None = Field(
        None, description="'memory': decode each vector projected onto the training captions' embeddings (DeCap); "
        "'none': as it is; default: the captioner's own.")
    mode: MODE = Field("auto", description="What decodes: 'auto' (per modality, the mode chosen on val when the "
                       "captioner was trained), 'mapper' (the trained prefix mapper), 'prompt' (the frozen language "
                       "model prompted with the nearest training captions, no mapper) or 'nearest' (the nearest "
                       "training caption itself).")


class CaptionItemRef(RequestModel):
    id: str = Field(min_length=1, max_length=1000, description="A stored item's id, as in search results.")
    modality: str | None = Field(None, max_length=100, description="Which of the record's items (default: its "
                                 "image, video or sound before its text).")


class CaptionRequest(DecodeOptions):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={
        "examples": [{"items": [{"id": "animals/bear", "modality": "image"}], "method": "beam"}]})
    items: list[CaptionItemRef] = Field(default_factory=list, max_length=MAX_CAPTION_INPUTS,
                                        description="Stored items, decoded from their vectors in the index.")
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] = Field(
        default_factory=list, max_length=MAX_CAPTION_INPUTS, description="Texts, decoded from their embeddings.")
    text_modality: str = Field("text", max_length=100, description="The bound text modality `texts` are embedded as.")


class CaptionedOut(BaseModel):
    modality: str
    id: str | None = Field(None, description="The stored item's id (items).")
    name: str | None = Field(None, description="The uploaded file's name (uploads).")
    text: str | None = Field(None, description="The text given (texts).")
    caption: str
    mode: str = Field(description="What decoded it: mapper, prompt or nearest.")
    projection: str = Field("none", description="The projection its vector was decoded with (none / memory): "
                            "always none for modes prompt and nearest, which use the vector as it is.")


class CaptionOut(BaseModel):
    captions: list[CaptionedOut] = Field(description="One per input: items, then texts (or the files, in order).")
    method: str
    projection: str = Field(description="The projection used (none / memory): the mapper's, where the mapper "
                            "decoded a caption; none where every caption was decoded by prompt or nearest.")
    took_ms: float


class CaptionLimits(BaseModel):
    max_tokens: int
    max_beams: int
    max_inputs: int


class CaptionModeOut(BaseModel):
    mode: str = Field(description="mapper, prompt or nearest.")
    val_cider_d: dict[str, float] = Field(description="Each mode's CIDEr-D on the val items that chose it.")
    n_val: int


class CaptionInfoOut(BaseModel):
    space_identity: str
    text_modality: str
    lm: str = Field(description="The frozen language model: its name (smollm2), or the name of its .gguf file or "
                    "folder (never the server's path).")
    lm_identity: str
    prefix_len: int
    noise_std: float
    projection: str = Field(description="The default projection (none / memory), chosen on val.")
    memory_temperature: float
    memory_size: int
    retrieval_k: int = Field(description="Nearest training captions put in the language model's prompt (0: the "
                             "prefix alone), chosen on val.")
    modes: dict[str, CaptionModeOut] = Field(description="Per modality, the mode 'auto' decodes it by, chosen on "
                                             "val (a modality not listed: the mapper).")
    limits: CaptionLimits


def caption_cost(inputs: int, opts: DecodeOptions) -> tuple[int, str]:
    """What a caption request costs of its key's rate limit, and how that was reckoned: one token per
    :data:`MAX_CAPTION_TOKENS` decoded tokens of every beam (inputs x beams x max_tokens, rounded up; at least
    one, as any request).  Greedy decoding and sampling keep one beam.  The largest request the schema allows
    (16 inputs x 8 beams x 64 tokens) costs 128; one greedy caption of up to 64 tokens costs 1."""
    beams = opts.beams if opts.method == "beam" else 1
    work = inputs * beams * opts.max_tokens
    return max(1, math.ceil(work / MAX_CAPTION_TOKENS)), f"{inputs} input(s) x {beams} beam(s) x {opts.max_tokens} tokens"


def _charge(request: Request, inputs: int, opts: DecodeOptions) -> None:
    cost, what = caption_cost(inputs, opts)
    charge_request(request.state, cost, f"{cost} ({what})")


def _check_space(cap: Any, svc: Service) -> None:
    if cap.space.identity() != svc.space.identity():
        raise SpaceError(f"the captioner was trained on space {cap.space.identity()}, but this service serves space "
                         f"{svc.space.identity()}; give a captioner trained for it (anybind caption-fit)")


class _StoredRows:
    """(id, modality) -> row of the index snapshot, rebuilt when the snapshot changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: int | None = None
        self._rows: dict[tuple[str, str], int] = {}

    def vectors(self, svc: Service, refs: list[CaptionItemRef]) -> list[tuple[str, str, np.ndarray]]:
        items = [svc.item(r.id, r.modality) for r in refs]  # 404 for an unknown id / modality (refreshes first)
        snap = svc.index.snapshot()
        with self._lock:
            if self._version != snap.version:
                ids = snap.meta.column("id").to_pylist()
                self._rows = {(i, m): n for n, (i, m) in enumerate(zip(ids, snap.modality.tolist()))}
                self._version = snap.version
            rows = [self._rows.get((it.id, it.modality)) for it in items]
        out = []
        for it, row in zip(items, rows):
            if row is None:
                raise NotFound(f"item {it.id!r} ({it.modality}) is no longer in this index")
            out.append((it.id, it.modality, snap.vectors[row]))
        return out


def add_caption_routes(app: FastAPI, captioner: Any, service: Service | None = None) -> Any:
    """Add the caption routes to ``app``; ``captioner``: a :class:`~anybind.caption.Captioner` or a saved one's
    folder (loaded now, with its own copy of the space).  Its space must be the served one: checked now when
    ``service`` is given, else on the first request (then every caption request is refused in one line)."""
    from ..caption import Captioner

    cap = captioner if isinstance(captioner, Captioner) else Captioner.load(Path(captioner))
    if service is not None:
        _check_space(cap, service)
    checked: "weakref.WeakSet[Service]" = weakref.WeakSet()  # by object: a new service never reuses a check
    stored = _StoredRows()
    router = APIRouter()

    def captioner_for(svc: Service) -> Any:
        if svc not in checked:
            _check_space(cap, svc)
            checked.add(svc)
        return cap

    def decode(svc: Service, X: np.ndarray, mods: list[str], opts: DecodeOptions) -> tuple[list[str], list[str], str]:
        """Captions of the vectors ``X`` of modalities ``mods``, decoded per modality by its mode (as
        ``Captioner.caption`` does): ``(captions, modes, projection)``, the projection being the mapper's where
        it decoded any (prompt and nearest decode the vector as it is), else none."""
        c = captioner_for(svc)
        proj = opts.projection or c.projection
        caps, modes = [""] * len(X), [""] * len(X)
        X = np.asarray(X, np.float32)
        for m in dict.fromkeys(mods):
            rows = [i for i, x in enumerate(mods) if x == m]
            mode = c.mode_for(m) if opts.mode == "auto" else opts.mode
            got = c.decode(X[rows], method=opts.method, max_tokens=opts.max_tokens, beams=opts.beams,
                           temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed, projection=proj, mode=mode,
                           modality=m)
            for i, g in zip(rows, got):
                caps[i], modes[i] = g, mode
        return caps, modes, proj if "mapper" in modes else "none"

    @router.get("/caption", response_model=CaptionInfoOut, summary="The captioner: its language model and limits")
    async def caption_info(request: Request) -> CaptionInfoOut:
        c = captioner_for(request.state.svc)
        return CaptionInfoOut(
            space_identity=c.space.identity(), text_modality=c.text, lm=Path(str(c.lm.spec)).name or str(c.lm.spec), lm_identity=c.lm.identity,
            prefix_len=c.mapper.cfg.prefix_len, noise_std=c.noise_std, projection=c.projection,
            memory_temperature=c.memory_temperature, memory_size=0 if c.memory is None else len(c.memory),
            retrieval_k=c.retrieval_k,
            modes={m: CaptionModeOut(mode=v["mode"], val_cider_d=v.get("val_cider_d", {}), n_val=v.get("n_val", 0))
                   for m, v in c.modes.items()},
            limits=CaptionLimits(max_tokens=MAX_CAPTION_TOKENS, max_beams=MAX_BEAMS,
                                 max_inputs=min(MAX_CAPTION_INPUTS, request.state.svc.config.max_files)),
        )

    @router.post("/caption", response_model=CaptionOut, responses={**ERRORS, 404: {"model": ErrorOut, "description":
                 "No such stored item."}}, summary="Caption stored items (by id) and texts")
    async def caption(body: CaptionRequest, request: Request) -> CaptionOut:
        svc: Service = request.state.svc
        n = len(body.items) + len(body.texts)
        if n == 0:
            raise QueryError("nothing to caption: give items (stored ids) or texts")
        if n > svc.config.max_files:
            raise QueryError(f"{n} inputs in one request: at most {svc.config.max_files}")
        _charge(request, n, body)  # 429 when the key's bucket does not hold the request's work

        def work():
            t0 = time.perf_counter()
            rows = stored.vectors(svc, body.items)
            outs = [CaptionedOut(modality=m, id=i, caption="", mode="") for i, m, _ in rows]
            vecs = [v for _, _, v in rows]
            if body.texts:
                m = svc.check_text_modality(body.text_modality)
                if any(is_blank(t) for t in body.texts):
                    raise QueryError("an empty text: give some text")
                vecs += list(svc.embed_items(m, body.texts))
                outs += [CaptionedOut(modality=m, text=t, caption="", mode="") for t in body.texts]
            caps, modes, proj = decode(svc, np.stack(vecs), [o.modality for o in outs], body)
            for o, c, md in zip(outs, caps, modes):
                o.caption, o.mode, o.projection = c, md, proj if md == "mapper" else "none"
            return CaptionOut(captions=outs, method=body.method, projection=proj, took_ms=to_ms(t0))

        return await request.state.gate.run(work)

    @router.post("/caption/upload", response_model=CaptionOut, responses=UPLOAD_ERRORS,
                 summary="Caption uploaded images / sounds")
    async def caption_upload(
        request: Request,
        files: Annotated[list[UploadFile], File(description="Images or sounds (type sniffed from the content).")],
        file_modality: Annotated[list[str], Form(description="Per file, the modality to embed it as.")] = [],  # noqa: B006
        method: Annotated[METHOD, Form()] = "greedy",
        max_tokens: Annotated[int, Form(ge=1, le=MAX_CAPTION_TOKENS)] = 24,
        beams: Annotated[int, Form(ge=1, le=MAX_BEAMS)] = 3,
        temperature: Annotated[float, Form(ge=0.05, le=5.0, allow_inf_nan=False)] = 1.0,
        top_p: Annotated[float, Form(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.9,
        seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
        projection: Annotated[PROJECTION | None, Form()] = None,
        mode: Annotated[MODE, Form()] = "auto",
    ) -> CaptionOut:
        svc: Service = request.state.svc
        opts = DecodeOptions(method=method, max_tokens=max_tokens, beams=beams, temperature=temperature,
                             top_p=top_p, seed=seed, projection=projection, mode=mode)
        if len(files) > svc.config.max_files:  # refused before it is charged (a cost for files never captioned)
            raise QueryError(f"{len(files)} files in one request: at most {svc.config.max_files}")
        _charge(request, len(files), opts)  # 429 before the uploads are read into memory when the key cannot pay
        uploads = await read_uploads(svc, files)

        def work():
            t0 = time.perf_counter()
            parts, staged = upload_parts(svc, uploads, [], [], file_modality, "text")
            try:
                X = np.stack(per_modality([(m, p) for m, p, _ in parts], svc.embed_items))  # one call a modality
            except AnybindError as e:
                raise type(e)(named_files(e, staged)) from None
            finally:
                unstage(staged)
            caps, modes, proj = decode(svc, X, [m for m, _, _ in parts], opts)
            outs = [CaptionedOut(modality=m, name=shown.strip("'\""), caption=c, mode=md,
                                 projection=proj if md == "mapper" else "none")
                    for (m, _, _), (_, shown), c, md in zip(parts, staged, caps, modes)]
            return CaptionOut(captions=outs, method=method, projection=proj, took_ms=to_ms(t0))

        return await run_upload(request, uploads, work)

    app.include_router(router)
    app.state.captioner = cap
    return cap

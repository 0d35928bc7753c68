"""``POST /explain``: why a stored item matches a text (issue 20) -- each word's leave-one-word-out drop and
the vocabulary words nearest to the item (see :mod:`anybind.explain`).

The item's embedding is the one the index holds.  The vocabulary is the one stored in the space when it has
one for the text modality (:mod:`anybind.vocabulary`, ``anybind explain --build-vocab``: embedded once, when it
was built); else the words of the index's own texts (its text items), gathered once per loaded index snapshot
and encoded through the service's feature cache.  A route of its own (an :class:`APIRouter` the app includes):
the app module stays the search service's routes.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import NamedTuple

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ..data.strings import is_blank
from ..errors import AnybindError
from ..explain import nearest_words, word_drops, words_of
from ..vocabulary import stored_vocabulary
from ..index import QueryError
from .queries import to_ms
from .schemas import ERRORS, MAX_TEXT, ErrorOut, RequestModel
from .state import NotFound, Service

router = APIRouter()
_LOOKUP: "weakref.WeakKeyDictionary[Service, _Lookup]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


class ExplainRequest(RequestModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="The query text whose words are weighed.")
    id: str = Field(min_length=1, max_length=1000, description="A stored item's id, as in search results.")
    modality: str | None = Field(None, max_length=100, description="Which of the record's items (default: the "
                                 "one search results show: an image, else a video, a sound, a text).")
    text_modality: str = Field("text", max_length=100)
    k: int = Field(5, ge=0, le=50, description="Nearest vocabulary words of the item (0: none).")


class WordDropOut(BaseModel):
    word: str
    start: int = Field(ge=0, description="Character offset of the word in the text.")
    end: int = Field(ge=0)
    drop: float = Field(description="The match score minus the score without this word (negative: the match is "
                        "better without it).")


class NearWordOut(BaseModel):
    word: str
    score: float


class ExplainOut(BaseModel):
    id: str
    modality: str
    score: float = Field(description="The text's score with the item.")
    drops: list[WordDropOut] = Field(description="Each word of the text, in order.")
    words: list[NearWordOut] = Field(description="The vocabulary words nearest to the item, best first.")
    vocabulary: int = Field(ge=0, description="Words in the vocabulary.")
    vocabulary_source: str = Field(description="'space': the vocabulary stored with the space; 'index': the "
                                   "words of the index's texts; 'none' (k=0).")
    took_ms: float


#: at most this many vocabulary words (the most frequent of the index's texts): embedded once per snapshot
MAX_VOCABULARY = 20_000


class Vocab(NamedTuple):
    words: list[str]
    vectors: np.ndarray  # the words' embeddings in the text modality
    source: str  # "space" or "index"


class _Lookup:
    """Per loaded index snapshot: the vocabulary per text modality (the space's, else the index's texts'
    words, embedded once, on first use) and the row of each (id, modality)."""

    def __init__(self, svc: Service):
        snap = svc.index.snapshot()
        self.snap, self.items = snap, svc.items
        self.rows = {(i, m): r for r, (i, m) in enumerate(zip(snap.meta.column("id").to_pylist(),
                                                               snap.modality.tolist()))}
        self.embedded: dict[str, Vocab] = {}
        self.lock = threading.Lock()

    def vocabulary(self, svc: Service, text_modality: str) -> Vocab:
        """The vocabulary in ``text_modality``, found (and embedded) once for this snapshot."""
        with self.lock:
            if text_modality not in self.embedded:
                st = stored_vocabulary(svc.space, text_modality)
                if st is not None:
                    self.embedded[text_modality] = Vocab(list(st.words), st.vectors, "space")
                else:
                    words = words_of((it.source for rows in self.items.values() for it in rows.values()
                                      if it.media == "text"), max_words=MAX_VOCABULARY)
                    V = (svc.space.embed(text_modality, words, cache=svc.cache) if words
                         else np.zeros((0, svc.space.dim), np.float32))
                    self.embedded[text_modality] = Vocab(words, V, "index")
            return self.embedded[text_modality]


def lookup(svc: Service) -> _Lookup:
    """The service's current :class:`_Lookup` (rebuilt when the service has reloaded its index)."""
    with _LOCK:
        have = _LOOKUP.get(svc)
        if have is None or have.items is not svc.items:
            have = _LOOKUP[svc] = _Lookup(svc)
        return have


EXPLAIN_ERRORS = {**ERRORS, 404: {"model": ErrorOut, "description": "No such item (or the record has no such "
                                                                 "modality)."}}


@router.post("/explain", response_model=ExplainOut, responses=EXPLAIN_ERRORS,
             summary="Why a stored item matches a text: word drops and the item's nearest vocabulary words")
async def explain(body: ExplainRequest, request: Request) -> ExplainOut:
    svc: Service = request.state.svc

    def work():
        t0 = time.perf_counter()
        tm = svc.check_text_modality(body.text_modality)
        if is_blank(body.text):
            raise QueryError("empty text: nothing to explain")
        it = svc.item(body.id, body.modality)  # 404 for an unknown id or modality
        lk = lookup(svc)
        row = lk.rows.get((it.id, it.modality))
        if row is None:  # the index changed between the two look-ups
            raise NotFound(f"item {body.id!r} ({it.modality}) is no longer in this index")
        x = lk.snap.vectors[[row]]  # the item's embedding as indexed
        try:
            score, drops = word_drops(svc.space, tm, body.text, it.modality, x[0], cache=svc.cache)
        except AnybindError as e:
            raise QueryError(str(e)) from None
        voc = lk.vocabulary(svc, tm) if body.k else Vocab([], np.zeros((0, x.shape[1]), np.float32), "none")
        near = nearest_words(svc.space, it.modality, x, voc.words, k=body.k, text_modality=tm,
                             embedded_words=voc.vectors)[0] if voc.words else []
        return ExplainOut(id=it.id, modality=it.modality, score=score,
                          drops=[WordDropOut(**d.to_dict()) for d in drops],
                          words=[NearWordOut(word=w, score=round(s, 4)) for w, s in near],
                          vocabulary=len(voc.words), vocabulary_source=voc.source, took_ms=to_ms(t0))

    return await request.state.gate.run(work)


__all__ = ["ExplainOut", "ExplainRequest", "lookup", "router"]

"""Why two items match (issue 20): which words of a text drove a match, and a lexical view of any embedding.

* :func:`word_drops` -- leave-one-word-out grounding (in the spirit of HAMMER's token grounding): the text is
  embedded once whole and once without each word; a word's ``drop`` is how much the match score falls without
  it (negative: the match is better without it).  A one-word text's word carries the whole score.
* :func:`nearest_words` -- the vocabulary words whose text embeddings score highest against an embedding of
  any modality (a lexical view of the space, in the spirit of LexVLA).  :func:`vocabulary` gathers one from a
  manifest's texts and labels; the feature cache keeps the words' features, so a vocabulary is encoded once.
  A space may keep an embedded vocabulary of its own (:mod:`anybind.vocabulary`, ``anybind explain
  --build-vocab``); explanations use it when no other vocabulary is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .data.manifest import Record
    from .space_core import SpaceCore

WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
MAX_WORDS = 128
#: words too common to say anything about a match (English; a vocabulary leaves them out)
STOPWORDS = frozenset(
    "a an the and or of in on at to for with by from is are was were be been it its this that these those as "
    "into onto over under up down out off some any no not his her their our your my".split()
)


@dataclass(frozen=True)
class WordDrop:
    word: str
    start: int  # character offsets in the text
    end: int
    drop: float  # score(text) - score(text without the word)

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end, "drop": round(float(self.drop), 4)}


def _one(space: "SpaceCore", modality: str, item: Any, cache) -> np.ndarray:
    x = np.asarray(item, np.float32) if isinstance(item, np.ndarray) else space.embed(modality, [item], cache=cache)
    return x.reshape(1, -1)


def word_drops(
    space: "SpaceCore", text_modality: str, text: str, other_modality: str, other: Any, *,
    cache: "FeatureCache | str | Path | None" = None,
) -> tuple[float, list[WordDrop]]:
    """The match score of ``text`` with ``other`` (an item of ``other_modality``, or its embedding) and each
    word's drop, in the text's order (see the module doc)."""
    if not isinstance(text, str):
        raise DataError(f"word_drops needs a text, got {type(text).__name__}")
    spans = [(m.start(), m.end()) for m in WORD.finditer(text)]
    if not spans:
        raise DataError(f"no words in the text {text!r}")
    if len(spans) > MAX_WORDS:
        raise DataError(f"the text has {len(spans)} words; explanations take at most {MAX_WORDS}")
    without = [" ".join((text[:s] + text[e:]).split()) for s, e in spans]
    variants = [text] + [w for w in without if WORD.search(w)]
    T = space.embed(text_modality, variants, cache=cache)
    scores = space.scorer.pair_scores(T, text_modality, _one(space, other_modality, other, cache), other_modality)[:, 0]
    full, rest = float(scores[0]), iter(scores[1:])
    out = [WordDrop(text[s:e], s, e, full - float(next(rest)) if WORD.search(w) else full)
           for (s, e), w in zip(spans, without)]
    return full, out


def vocabulary(records: Iterable["Record"], text_modalities: Sequence[str] = ("text",), *, labels: bool = True,
               min_count: int = 1, min_length: int = 3) -> list[str]:
    """The distinct lower-cased words of the records' texts (and, with ``labels``, their label values' words),
    stopwords and words shorter than ``min_length`` left out, sorted."""
    return words_of(_texts(records, text_modalities, labels), min_count=min_count, min_length=min_length)


def _texts(records: Iterable["Record"], text_modalities: Sequence[str], labels: bool) -> Iterable[str]:
    for r in records:
        yield from (str(r.values[m]) for m in text_modalities if r.has(m))
        if labels:
            yield from (str(v).replace("/", " ").replace("_", " ") for v in (r.labels or {}).values())


def words_of(texts: Iterable[str], *, min_count: int = 1, min_length: int = 3,
             max_words: int | None = None) -> list[str]:
    """The distinct lower-cased words of ``texts`` (stopwords, digits and words shorter than ``min_length``
    left out; at least ``min_count`` times), sorted; with ``max_words``, only that many of the most frequent."""
    counts: dict[str, int] = {}
    for t in texts:
        for w in WORD.findall(str(t).lower()):
            if len(w) >= min_length and w not in STOPWORDS and not w.isdigit():
                counts[w] = counts.get(w, 0) + 1
    kept = [w for w, c in counts.items() if c >= min_count]
    if max_words is not None and len(kept) > max_words:
        kept = sorted(kept, key=lambda w: (-counts[w], w))[:max_words]
    return sorted(kept)


def read_vocabulary(path: str | Path, text_modalities: Sequence[str] = ("text",), *,
                    max_words: int | None = None) -> list[str]:
    """A vocabulary from a manifest (``.jsonl``: :func:`vocabulary` of its records; with ``max_words``, only
    that many of its most frequent words) or a words file (one word or phrase a line; blank lines and ``#``
    comments left out; all of them)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such vocabulary file (a manifest .jsonl or a words file, one a line)")
    if p.suffix == ".jsonl":
        from .data.manifest import load_manifest

        man = load_manifest(p, modalities=list(text_modalities), check_media=False)
        if max_words is None:
            return vocabulary(man.records, text_modalities)
        return words_of(_texts(man.records, text_modalities, True), max_words=max_words)
    words = sorted({w.strip() for w in p.read_text(encoding="utf-8").splitlines()
                    if w.strip() and not w.strip().startswith("#")})
    if not words:
        raise DataError(f"{p}: the vocabulary file has no words")
    return words


def nearest_words(
    space: "SpaceCore", modality: str, items: Any, words: Sequence[str], *, k: int = 5, text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None, embedded_words: np.ndarray | None = None,
) -> list[list[tuple[str, float]]]:
    """Per item (a list of items of ``modality``, or their embeddings as a 2-D array) the ``k`` vocabulary
    words scoring highest against it, best first, with their scores.  ``embedded_words``: the words'
    embeddings in ``text_modality`` when the caller keeps them (a service), else they are embedded here."""
    if not words:
        raise DataError("nearest_words needs a non-empty vocabulary")
    X = np.asarray(items, np.float32) if isinstance(items, np.ndarray) else space.embed(modality, list(items),
                                                                                        cache=cache)
    V = embedded_words if embedded_words is not None else space.embed(text_modality, list(words), cache=cache)
    if len(V) != len(words):
        raise DataError(f"nearest_words: {len(V)} word embeddings for {len(words)} words")
    S = space.scorer.pair_scores(X.reshape(len(X), -1), modality, V, text_modality)
    k = min(k, len(words))
    top = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return [[(words[j], float(S[i, j])) for j in row] for i, row in enumerate(top)]


__all__ = ["WordDrop", "nearest_words", "read_vocabulary", "vocabulary", "word_drops", "words_of"]

"""A query and its embedding: :class:`Query` (the query's inputs, parsed and checked once from every form
the :class:`~anybind.index.Index` methods take) and :class:`QueryEmbedder` (its inputs embedded with the
index's space and fused by the space's scorer), plus ``k`` and query-vector checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.files import open_regular
from ..data.strings import is_blank
from ..data.video import VIDEO_SUFFIXES
from ..errors import AnybindError, DataError, not_read_kind
from ..scoring import Scorer
from ..space_core import per_modality
from .errors import QueryError
from .exact import renormed as _renormed
from .exact import unit_rows

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..space import Space

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".svg"}
_AUDIO_SUFFIXES = {".wav", ".ogg", ".oga", ".flac", ".mp3", ".aiff", ".aif", ".m4a"}


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise QueryError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise QueryError(f"k must be a positive integer, got {k}")
    return int(k)


def _looks_like_file(s: str) -> bool:
    suf = Path(s).suffix.lower()
    known = suf in _IMAGE_SUFFIXES or suf in _AUDIO_SUFFIXES or suf in VIDEO_SUFFIXES
    return known and "\n" not in s and len(s) < 4096


def _modality_of_file(p: str | Path) -> str:
    suf = Path(p).suffix.lower()
    if suf in _IMAGE_SUFFIXES:
        return "image"
    if suf in _AUDIO_SUFFIXES:
        return "audio"
    if suf in VIDEO_SUFFIXES:
        return "video"
    raise QueryError(
        f"cannot tell the modality of {p} from its suffix: pass image=..., audio=... or inputs={{modality: path}}"
    )


def query_vector(x: np.ndarray, dim: int, what: str = "query vector") -> np.ndarray:
    """A query given as a vector, checked: real numbers, one vector of width ``dim`` (``(dim,)`` or
    ``(1, dim)``), finite, not zero.  Returns it as float32 ``(dim,)`` (divided by its largest magnitude where
    its norm over- or underflows float32, as for 1e20s or 1e-30s: a query is a direction)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
        raise QueryError(f"{what} holds {x.dtype} values: give real numbers (float)")
    q = x[0] if x.ndim == 2 and x.shape[0] == 1 else x
    if q.shape != (dim,):
        raise QueryError(
            f"{what} of shape {x.shape}: this index holds {dim}-d vectors, give one of shape ({dim},)"
        )
    if q.dtype == np.float32:
        q = q.astype(np.float32)  # a copy (nothing to overflow: no errstate, which costs more than the rest)
    else:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
            q = q.astype(np.float32)
    if not np.logical_and.reduce(np.isfinite(q)):  # .all() / np.any without their Python layers
        raise QueryError(f"{what} holds NaN or infinite values")
    if not np.logical_or.reduce(q):
        raise QueryError(f"{what} is all zeros: it has no direction to search in")
    m = float(np.maximum.reduce(np.abs(q)))
    if not 1e-11 <= m <= 1e16:  # its norm may over- or underflow float32 (1e20s, 1e-30s): the same direction, scaled
        with np.errstate(over="ignore", under="ignore"):  # the norm raw_direction's fast lane takes it by
            n = np.sqrt(np.add.reduce(q * q, axis=-1, keepdims=True)).item()
        if not 1e-12 <= n < float("inf"):
            q = q / np.float32(m)
    return q


def one_raw_vector(query: Any, *inputs: Any) -> bool:
    """``Index.search(query)`` with nothing but one raw vector (no other inputs, no weights): the searcher takes
    it as it is (see :func:`raw_direction`) rather than as a :class:`Query`."""
    return type(query) is np.ndarray and all(x is None for x in inputs)


def raw_direction(x: Any, dim: int) -> np.ndarray:
    """What ``Index.search`` makes of one raw query vector in a cosine space, as a ``(1, dim)`` row: the same
    checks and errors as :func:`query_vector`, then :meth:`QueryEmbedder.direction`, then
    :func:`~.exact.renormed`, to the same bits, in about half the numpy calls (it runs on every search).

    One sum of squares stands for the finiteness, zero and tiny-norm checks: when its root is finite and
    at least 1e-12, every element is finite, one is not zero and :func:`unit_rows` would not refuse it;
    otherwise the checked steps run one by one (they raise the same errors as ever)."""
    x = np.asarray(x)
    if (x.dtype != np.float32 or not (x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1)) or x.shape[-1] != dim
            or not x.flags.c_contiguous):  # (strided rows might be summed in another order)
        return _renormed(_direction(query_vector(x, dim))[None])
    q = x[0] if x.ndim == 2 else x  # float32 already: no copy needed, nothing below writes to it
    with np.errstate(over="ignore"):  # huge finite entries (1e20s) overflow it to inf: the checked steps take over
        n = np.sqrt(np.add.reduce(q * q, axis=-1, keepdims=True))  # unit_rows' norm, by the same reduction
    nv = n.item()
    if not 1e-12 <= nv < float("inf"):  # also false for NaN: the checks one by one name what is wrong
        return _renormed(_direction(query_vector(x, dim))[None])
    u = q / n
    norm = float(np.sqrt(u @ u))
    if norm < 1e-6:
        raise QueryError("the fused query vector is zero (the inputs cancel out): change the inputs or weights")
    v = (u / norm).astype(np.float32, copy=False)[None]  # float32 already (a Python float does not widen it)
    n2 = np.sqrt(np.add.reduce(v * v, axis=-1, keepdims=True))  # renormed's, inlined
    return v if n2.item() == 1.0 else v / n2


def _direction(x: np.ndarray) -> np.ndarray:
    """:meth:`QueryEmbedder.direction` (see there)."""
    u = unit_rows(x)
    norm = float(np.sqrt(u @ u))
    if norm < 1e-6:
        raise QueryError("the fused query vector is zero (the inputs cancel out): change the inputs or weights")
    return (u / norm).astype(np.float32, copy=False)  # float32 already (a Python float does not widen it)


@dataclass(frozen=True, eq=False)
class Query:
    """One search query: its inputs, in order, and their fusion weights.

    ``items``: ``(modality, item)`` pairs (a text, a file path, any bound modality's input);
    ``vectors``: raw query vectors (checked, float32); ``weights``: one per input, vectors first
    (``None``: equal weights).  Build it with :meth:`of` from the forms the index methods take."""

    items: tuple[tuple[str, Any], ...] = ()
    vectors: tuple[np.ndarray, ...] = ()
    weights: tuple[float, ...] | None = None

    @property
    def modalities(self) -> list[str]:
        """The input modalities (a raw vector has none)."""
        return sorted({m for m, _ in self.items})

    @property
    def has_vector(self) -> bool:
        return bool(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors) + len(self.items)

    @classmethod
    def of(
        cls,
        query: Any = None,
        *,
        dim: int,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        text_modality: str = "text",
    ) -> "Query":
        """The query of these inputs, checked (see :meth:`Index.embed_query <anybind.index.Index.embed_query>`
        for the forms); ``dim`` is the index's vector width.  A :class:`Query` given as ``query`` is returned
        as it is (and may not be combined with other inputs)."""
        if isinstance(query, Query):
            if any(x is not None for x in (text, image, audio, inputs, weights)):
                raise QueryError("give a Query, or its inputs as keywords, not both")
            return query
        items: list[tuple[str, Any]] = []
        vectors: list[np.ndarray] = []
        tuple_weights: list[float | None] = []

        def as_list(x):
            return list(x) if isinstance(x, (list, tuple)) else [x]

        if query is not None:
            if isinstance(query, np.ndarray):
                vectors.append(query_vector(query, dim))
            elif isinstance(query, str) and not _looks_like_file(query):
                items.append((text_modality, query))
            elif isinstance(query, (str, Path)):
                items.append((_modality_of_file(query), query))
            elif isinstance(query, (list, tuple)):
                for t in query:
                    if not isinstance(t, tuple) or len(t) not in (2, 3):
                        raise QueryError(f"query list items must be (modality, item[, weight]) tuples, got {t!r}")
                    items.append((t[0], t[1]))
                    tuple_weights.append(t[2] if len(t) == 3 else None)
            else:
                raise QueryError(f"unsupported query of type {type(query).__name__}")
        for m, v in ((text_modality, text), ("image", image), ("audio", audio)):
            if v is not None:
                items += [(m, x) for x in as_list(v)]
        if inputs is not None:
            for m, v in inputs.items() if isinstance(inputs, Mapping) else inputs:
                items += [(m, x) for x in as_list(v)]
        n_inputs = len(vectors) + len(items)
        if n_inputs == 0:
            raise QueryError("empty query: give a text, an image or audio path, or a vector")
        if weights is None and any(w is not None for w in tuple_weights):
            weights = (
                [1.0] * len(vectors)
                + [w if w is not None else 1.0 for w in tuple_weights]
                + [1.0] * (len(items) - len(tuple_weights))
            )
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != n_inputs:
                raise QueryError(f"{len(weights)} weights for {n_inputs} query inputs")
            if not all(np.isfinite(weights)) or sum(abs(w) for w in weights) == 0:
                raise QueryError("query weights must be finite and not all zero")
        return cls(tuple(items), tuple(vectors), tuple(weights) if weights is not None else None)


class QueryEmbedder:
    """Embeds a :class:`Query` with the index's space (``None``: raw-vector queries only) and fuses its
    inputs with the space's scorer."""

    def __init__(self, space: "Space | None", dim: int) -> None:
        self.space = space
        self.dim = dim

    def parts(
        self, q: Query, cache: "FeatureCache | str | Path | None" = None
    ) -> tuple[list[tuple[str | None, np.ndarray]], list[float] | None, list[str]]:
        """The query's inputs embedded: ``(modality or None for a vector, unit vector)`` each, their
        weights (or None) and the input modalities."""
        embedded: list[tuple[str | None, np.ndarray]] = [(None, unit_rows(v)) for v in q.vectors]
        items = [(m, self._checked(m, item)) for m, item in q.items]  # every input checked before any is encoded
        embedded += zip([m for m, _ in items], per_modality(items, lambda m, xs: self._embed(m, xs, cache)))
        return embedded, (list(q.weights) if q.weights is not None else None), q.modalities

    def direction(self, x: np.ndarray) -> np.ndarray:
        """What :meth:`parts` then :meth:`fuse` make of one raw query vector in a cosine space, by the same
        arithmetic (the same bits), without the lists and the scorer."""
        return _direction(x)

    def fuse(
        self, parts: list[tuple[str | None, np.ndarray]], weights: list[float] | None, target: str | None
    ) -> tuple[np.ndarray, float]:
        """The unit direction of the scorer's query for candidates of ``target``, and the factor that turns
        its inner products into the space's scores (1 in a cosine space; the query's length in a Symile
        space, where scores are multilinear inner products)."""
        scorer = self.space.scorer if self.space is not None else Scorer()
        fused = scorer.query(parts, target, weights)
        norm = float(np.sqrt(fused @ fused))  # np.linalg.norm of a vector, without its checks
        if norm < 1e-6:
            raise QueryError("the fused query vector is zero (the inputs cancel out): change the inputs or weights")
        return (fused / norm).astype(np.float32), (1.0 if scorer.kind == "cosine" else norm)

    def embed_one(self, modality: str, item: Any, cache) -> np.ndarray:
        """One query input, checked and embedded."""
        return self._embed(modality, [self._checked(modality, item)], cache)[0]

    def _checked(self, modality: str, item: Any) -> Any:
        """``item`` as the modality's encoder takes it (a file: its resolved path), or :class:`QueryError`."""
        space = self.space
        if space is None:
            raise QueryError("this index has no space to embed queries with: pass a query vector")
        if modality not in space.modalities:
            raise QueryError(
                f"unknown query modality {modality!r}: this index's space binds {', '.join(space.modalities)}"
            )
        kind = getattr(space.encoder(modality), "input_kind", "file")
        if kind == "text":
            if not isinstance(item, str) or is_blank(item):
                raise QueryError(f"empty {modality} query: give some text")
        elif kind == "file":
            p = Path(item)
            try:
                open_regular(p).close()  # the check every file read makes: no folder, FIFO or device
            except DataError as e:
                raise QueryError(f"cannot read {modality} query {e}") from None
            item = str(p.resolve())
        return item

    def _embed(self, modality: str, items: list[Any], cache) -> np.ndarray:
        """Checked inputs of one modality, embedded in one call."""
        try:
            return self.space.embed(modality, items, cache=cache)
        except AnybindError as e:
            raise not_read_kind(e, QueryError)(f"cannot use {modality} query: {e}") from None

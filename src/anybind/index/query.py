"""Turning a query into one unit vector: file/modality sniffing, ``k`` and target checks, and
the :class:`~anybind.index.Index` methods :meth:`~QueryMixin.embed_query`, ``_embed_one``,
``_check_targets``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.files import open_regular
from ..data.strings import is_blank
from ..data.video import VIDEO_SUFFIXES
from ..errors import AnybindError, DataError
from ..scoring import Scorer
from .errors import QueryError
from .exact import unit_rows

if TYPE_CHECKING:
    from ..cache import FeatureCache

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
    ``(1, dim)``), finite, not zero.  Returns it as float32 ``(dim,)``."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
        raise QueryError(f"{what} holds {x.dtype} values: give real numbers (float)")
    q = x[0] if x.ndim == 2 and x.shape[0] == 1 else x
    if q.shape != (dim,):
        raise QueryError(
            f"{what} of shape {x.shape}: this index holds {dim}-d vectors, give one of shape ({dim},)"
        )
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        q = q.astype(np.float32)
    if not np.isfinite(q).all():
        raise QueryError(f"{what} holds NaN or infinite values")
    if not np.any(q):
        raise QueryError(f"{what} is all zeros: it has no direction to search in")
    return q


class QueryMixin:
    """:class:`~anybind.index.Index` methods that embed queries (mixed into ``Index``)."""

    def embed_query(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        text_modality: str = "text",
        target: str | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """One unit query vector from one or several inputs, and the input modalities.

        ``query`` may be a text, a file path (modality from its suffix), a vector,
        or a list of ``(modality, item)`` / ``(modality, item, weight)`` tuples.
        ``text=``, ``image=``, ``audio=`` take one item or a list; ``inputs`` maps
        any bound modality (``"text_fr"``, ``"speech"``...) to items.  Several
        inputs are fused by the space's scorer (:mod:`anybind.scoring`): in a cosine space
        the weighted mean of their unit vectors, renormalised (``weights`` follow the order
        query, text, image, audio, inputs); in a Symile space their multilinear product,
        for candidates of modality ``target``.
        """
        parts, weights, mods = self.query_parts(
            query, text=text, image=image, audio=audio, inputs=inputs, weights=weights, cache=cache,
            text_modality=text_modality,
        )
        return self.fuse_query(parts, weights, target)[0], mods

    def fuse_query(
        self, parts: list[tuple[str | None, np.ndarray]], weights: list[float] | None, target: str | None
    ) -> tuple[np.ndarray, float]:
        """The unit direction of the scorer's query for candidates of ``target`` (see :meth:`embed_query`),
        and the factor that turns its inner products into the space's scores (1 in a cosine space; the
        query's length in a Symile space, where scores are multilinear inner products)."""
        scorer = self.space.scorer if self.space is not None else Scorer()
        fused = scorer.query(parts, target, weights)
        norm = float(np.linalg.norm(fused))
        if norm < 1e-6:
            raise QueryError(
                "the fused query vector is zero (the inputs cancel out): change the inputs or weights"
            )
        return (fused / norm).astype(np.float32), (1.0 if scorer.kind == "cosine" else norm)

    def query_parts(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        text_modality: str = "text",
    ) -> tuple[list[tuple[str | None, np.ndarray]], list[float] | None, list[str]]:
        """The query's inputs embedded: ``(modality or None for a vector, unit vector)`` each, their
        checked weights (or None) and the input modalities."""
        parts: list[tuple[str, Any]] = []
        vec_parts: list[np.ndarray] = []
        tuple_weights: list[float | None] = []

        def as_list(x):
            return list(x) if isinstance(x, (list, tuple)) else [x]

        if query is not None:
            if isinstance(query, np.ndarray):
                vec_parts.append(query_vector(query, self.dim))
            elif isinstance(query, str) and not _looks_like_file(query):
                parts.append((text_modality, query))
            elif isinstance(query, (str, Path)):
                parts.append((_modality_of_file(query), query))
            elif isinstance(query, (list, tuple)):
                for t in query:
                    if not isinstance(t, tuple) or len(t) not in (2, 3):
                        raise QueryError(
                            f"query list items must be (modality, item[, weight]) tuples, got {t!r}"
                        )
                    parts.append((t[0], t[1]))
                    tuple_weights.append(t[2] if len(t) == 3 else None)
            else:
                raise QueryError(f"unsupported query of type {type(query).__name__}")
        for m, v in ((text_modality, text), ("image", image), ("audio", audio)):
            if v is not None:
                parts += [(m, x) for x in as_list(v)]
        if inputs is not None:
            items = inputs.items() if isinstance(inputs, Mapping) else inputs
            for m, v in items:
                parts += [(m, x) for x in as_list(v)]
        n_inputs = len(vec_parts) + len(parts)
        if n_inputs == 0:
            raise QueryError("empty query: give a text, an image or audio path, or a vector")
        if weights is None and any(w is not None for w in tuple_weights):
            weights = (
                [1.0] * len(vec_parts)
                + [w if w is not None else 1.0 for w in tuple_weights]
                + [1.0] * (len(parts) - len(tuple_weights))
            )
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != n_inputs:
                raise QueryError(f"{len(weights)} weights for {n_inputs} query inputs")
            if not all(np.isfinite(weights)) or sum(abs(w) for w in weights) == 0:
                raise QueryError("query weights must be finite and not all zero")
        embedded: list[tuple[str | None, np.ndarray]] = [(None, unit_rows(v)) for v in vec_parts]
        embedded += [(m, self._embed_one(m, item, cache)) for m, item in parts]
        return embedded, weights, sorted({m for m, _ in parts})

    def _embed_one(self, modality: str, item: Any, cache) -> np.ndarray:
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
        try:
            return space.embed(modality, [item], cache=cache)[0]
        except AnybindError as e:
            raise QueryError(f"cannot use {modality} query: {e}") from None

    def _check_targets(self, modality: str | Sequence[str] | None) -> list[str] | None:
        if modality is None:
            return None
        mods = [modality] if isinstance(modality, str) else list(modality)
        known = set(self.modalities) | set(self.space.modalities if self.space else [])
        for m in mods:
            if m not in known:
                raise QueryError(
                    f"unknown modality {m!r}: this index holds {', '.join(sorted(known)) or 'nothing'}"
                )
        return mods

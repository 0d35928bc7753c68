"""The :class:`Index` a user holds, made of parts given the state they work on (an :class:`~.table.IndexTable`):
:class:`~.write.Writer`, :class:`~.ann.LanceAnn`, :class:`~.fast.FastSearch` (in-memory graph, codes),
:class:`~.query.QueryEmbedder`, :class:`~.search.Searcher`, :class:`~.classify.Classifier`; the folder is :mod:`.build`.
Index's methods check their arguments and hand the work to the parts (on-disk layout: :mod:`anybind.index`); the
approximate-search methods go to the :class:`~.core_ann.AnnManager` it holds as ``ann``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import build as _build
from .ann import LanceAnn
from .append import append_vector_batches
from .classify import Classifier
from .core_ann import AnnManager
from .fast import FastSearch
from .query import Query, QueryEmbedder, check_k, one_raw_vector
from .results import AddStats, Hit
from .search import Searcher
from .store import DEFAULT_ANN_THRESHOLD, Snapshot, label_filter
from .table import IndexTable
from .write import Writer

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..data.manifest import Manifest, Record
    from ..space import Space
    from ..zeroshot import ZeroShotClassifier


def _forward(name: str, doc: str) -> property:
    """A read-only property of the index that is its table handle's ``name``."""
    return property(lambda self: getattr(self._t, name), doc=doc)


def _via_ann(fn: Callable) -> Callable:
    """A method of the index that calls its :class:`~.core_ann.AnnManager`'s ``fn`` (same signature and docstring)."""
    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        return fn(self.ann, *args, **kwargs)
    return method


class Index:
    """A persistent LanceDB index of one space's embeddings.  Build with :meth:`build`, reopen with :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any], space: "Space | None", table):
        self._t = t = IndexTable(Path(path), meta, space, table)
        self._writer = Writer(t)
        self._ann = LanceAnn(t)
        self._fast = FastSearch(t)
        self.ann = AnnManager(self._ann, self._fast)  # builds, tunes and warms the approximate search
        self._embedder = QueryEmbedder(space, t.dim)
        self._searcher = Searcher(t, self._embedder, self._fast, self._ann)
        self._classifier = Classifier(t)
        self._made_dir: bool | None = None  # set by create(): this object made the index (and the folder?)
        self.last_add: AddStats | None = None  # what the last add / add_vectors through this object did

    # -- state (the table handle's) --------------------------------------------------------------
    path = _forward("path", "The index folder.")
    meta = _forward("meta", "``index.json`` as last read (:meth:`refresh` re-reads it).")
    space = _forward("space", "The space the index embeds with (``None``: raw vectors only).")
    table = _forward("table", "The LanceDB table (the store of record).")
    identity = _forward("identity", "The identity of the space the index was built with.")
    dim = _forward("dim", "The width of the stored vectors.")
    modalities = _forward("modalities", "The modalities it embeds from records (set at build, extended by add).")
    ann_threshold = _forward("ann_threshold", "Rows from which searches use an approximate index.")
    lance_ann = property(lambda self: self._ann, doc="The LanceDB ANN part (search, tune, set_search_defaults).")

    # -- approximate search (:class:`.core_ann.AnnManager`, ``self.ann``) -----------------------
    create_ann = _via_ann(AnnManager.create_ann)
    uses_ann = _via_ann(AnnManager.uses_ann)
    ann_recall = _via_ann(AnnManager.ann_recall)
    tune_ann = _via_ann(AnnManager.tune_ann)
    create_memory_ann = _via_ann(AnnManager.create_memory_ann)
    update_memory_ann = _via_ann(AnnManager.update_memory_ann)
    set_memory_ann_ef = _via_ann(AnnManager.set_memory_ann_ef)
    tune_memory_ann = _via_ann(AnnManager.tune_memory_ann)
    quantize = _via_ann(AnnManager.quantize)
    quant_memory = _via_ann(AnnManager.quant_memory)
    warm_fast = _via_ann(AnnManager.warm_fast)

    def __len__(self) -> int:
        return self._t.count()

    def __repr__(self) -> str:
        return f"<Index {self.path} rows={len(self)} dim={self.dim} identity={self.identity}>"

    def counts(self) -> dict[str, int]:
        """Rows per modality (from the in-memory snapshot when it is current, else one column read)."""
        return self._t.counts()

    def snapshot(self) -> Snapshot:
        """The table in memory (vectors + metadata), reloaded only when the table changed."""
        return self._t.snapshot()

    def refresh(self) -> bool:
        """See other processes' writes since this index was opened (rows, ``index.json``); the snapshot is
        reloaded only if the table's version moved.  Returns whether it did.  A damaged ``index.json`` is
        refused as :meth:`open` refuses it (:class:`~.errors.IndexError_` in one line naming the file; nothing
        is adopted and the table is not moved, so a later refresh sees the rows written meanwhile)."""
        return self._t.refresh()

    # -- creation / opening ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        space: "Space | None" = None,
        dim: int | None = None,
        identity: str | None = None,
        modalities: Iterable[str] = (),
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        overwrite: bool = False,
        exist_ok: bool = False,
    ) -> "Index":
        """An empty index: tied to ``space`` (saved inside it), or to a bare ``dim`` + ``identity`` for raw vectors.

        Holds the folder's writer lock, so concurrent creators serialise.  exist_ok: if an index is there (or
        another process creates one meanwhile), open it instead; it must have the same space identity (else
        :class:`~anybind.errors.SpaceError`)."""
        index, made_dir = _build.create(cls, Path(path), space=space, dim=dim, identity=identity,
                                        modalities=modalities, ann_threshold=ann_threshold, overwrite=overwrite,
                                        exist_ok=exist_ok)
        index._made_dir = made_dir
        return index

    @classmethod
    def open(cls, path: str | Path, space: "Space | None" = None) -> "Index":
        """Open an index; with ``space``, refuse it unless it is the space the index was built with."""
        meta, space, table = _build.read_meta(Path(path), space)
        return cls(Path(path), meta, space, table)

    @classmethod
    def build(
        cls,
        space: "Space",
        manifest: "str | Path | Manifest | Sequence[Record]",
        path: str | Path,
        modalities: Iterable[str] | None = None,
        *,
        cache: "FeatureCache | str | Path | None" = None,
        split: str | None = None,
        ann: str | bool = "auto",
        ann_type: str = "ivf_hnsw_sq",
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        chunk_size: int = 1024,
        overwrite: bool = False,
        progress: bool = False,
        embedder=None,
        chunk_rows: bool = False,
    ) -> "Index":
        """Embed a corpus into a new index at ``path`` (or update the index already there, incrementally).

        modalities: the manifest fields to index (default: every field bound in the space).
        split: only this split's records (default: all).
        ann: ``"auto"`` builds an ANN index when the table reaches ``ann_threshold`` rows;
            ``True`` always; ``False`` never.
        embedder: see :meth:`add` (e.g. :func:`anybind.scale.encode_ray.ray_index_embedder`).
        chunk_rows: a long text gives one row per chunk (passage-level search, :mod:`.passages`).
        """
        mods = sorted(set(modalities)) if modalities is not None else None
        index = _build.open_or_create(cls, space, Path(path), mods, ann_threshold, overwrite)
        _build.fill(index, index._writer, index._t, manifest, mods, made_dir=index._made_dir, split=split,
                    cache=cache, ann=ann, ann_type=ann_type, chunk_size=chunk_size, progress=progress,
                    embedder=embedder, chunk_rows=chunk_rows)
        return index

    # -- writing (:mod:`.write`) ----------------------------------------------------------------
    def add(
        self,
        records: "str | Path | Manifest | Sequence[Record]",
        *,
        modalities: Iterable[str] | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        chunk_size: int = 1024,
        progress: bool = False,
        embedder=None,
    ) -> AddStats:
        """Add (or update) records; only new or changed content is embedded.

        A row is (record id, modality).  Unchanged content (same content key) is skipped without embedding;
        a changed label or source is rewritten with the stored vector; changed content is re-embedded.  Rows
        are committed every ``chunk_size`` items, so an interrupted add keeps what it committed and a rerun
        continues from there.

        ``embedder(modality, items, chunk_size)`` replaces the in-process embedding: it yields ``(chunk,
        vectors)`` with ``chunk`` a list of the given items (any order, at most ``chunk_size``) and ``vectors``
        their unit embeddings; each is committed as it arrives (:func:`anybind.scale.encode_ray.ray_index_embedder`).
        """
        self.last_add = self._writer.add(records, modalities=modalities, cache=cache, chunk_size=chunk_size,
                                         progress=progress, embedder=embedder)
        return self.last_add

    def add_vectors(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        modality: str,
        *,
        sources: Sequence[str] | None = None,
        labels: Sequence[Mapping[str, Any]] | None = None,
        keys: Sequence[str] | None = None,
        chunk_size: int = 100_000,
    ) -> AddStats:
        """Add precomputed vectors of one modality (normalised here); existing (id, modality) rows are replaced."""
        self.last_add = self._writer.add_vectors(ids, vectors, modality, sources=sources, labels=labels, keys=keys,
                                                 chunk_size=chunk_size)
        return self.last_add

    def append_vector_batches(self, batches: Iterable[tuple], modality: str, *, progress: bool = False,
                              total: int | None = None) -> AddStats:
        """Append new rows batch by batch in bounded memory (a table larger than memory); an id already stored
        raises :class:`~anybind.errors.DataError` (see :func:`.append.append_vector_batches`)."""
        self.last_add = append_vector_batches(self._t, batches, modality, progress=progress, total=total)
        return self.last_add

    def delete(self, ids: Iterable[str], modality: str | None = None) -> int:
        """Delete every row of these record ids (only ``modality``'s rows when given); returns rows deleted."""
        return self._writer.delete(ids, modality)

    def optimize(self) -> None:
        """Compact small fragments, fold new rows into the ANN index, drop versions older than a week."""
        self._writer.optimize()

    def repair(self) -> int:
        """Remove duplicate rows (one (record id, modality) stored more than once, as concurrent writers
        before the writer lock could leave), keeping the newest of each; returns how many rows were removed."""
        return self._writer.repair()

    # -- queries (:mod:`.query`) ----------------------------------------------------------------
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

        ``query`` may be a text, a file path (modality from its suffix), a vector, a :class:`~.query.Query`, or
        a list of ``(modality, item)`` / ``(modality, item, weight)`` tuples.  ``text=``, ``image=``, ``audio=``
        take one item or a list; ``inputs`` maps any bound modality (``"text_fr"``, ``"speech"``...) to items.
        Several inputs are fused by the space's scorer (:mod:`anybind.scoring`): in a cosine space the weighted
        mean of their unit vectors, renormalised (``weights`` follow the order query, text, image, audio,
        inputs); in a Symile space their multilinear product, for candidates of modality ``target``.
        """
        parts, w, mods = self.query_parts(query, text=text, image=image, audio=audio, inputs=inputs,
                                          weights=weights, cache=cache, text_modality=text_modality)
        return self._embedder.fuse(parts, w, target)[0], mods

    def fuse_query(
        self, parts: list[tuple[str | None, np.ndarray]], weights: list[float] | None, target: str | None
    ) -> tuple[np.ndarray, float]:
        """The unit direction of the scorer's query for candidates of ``target`` (see :meth:`embed_query`), and
        the factor that turns its inner products into the space's scores (1 in a cosine space; the query's
        length in a Symile space, where scores are multilinear inner products)."""
        return self._embedder.fuse(parts, weights, target)

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
        q = Query.of(query, dim=self.dim, text=text, image=image, audio=audio, inputs=inputs, weights=weights,
                     text_modality=text_modality)
        return self._embedder.parts(q, cache)

    # -- searching (:mod:`.search`, :mod:`.classify`) -------------------------------------------
    def search(
        self,
        query: Any = None,
        *,
        text: str | Sequence[str] | None = None,
        image: str | Path | Sequence[str | Path] | None = None,
        audio: str | Path | Sequence[str | Path] | None = None,
        inputs: Mapping[str, Any] | Sequence[tuple] | None = None,
        weights: Sequence[float] | None = None,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        cache: "FeatureCache | str | Path | None" = None,
        rank_by: str = "score",
        **ann_params,
    ) -> list[Hit]:
        """Search with one (possibly fused) query (the forms of :meth:`embed_query`); up to ``k`` hits, best first.

        modality: only return items of this modality (or these); default any.
        labels: ``{"category": "animals"}`` or ``["category=animals"]``; every key must match (a list of values
            matches any of them).
        rerank: ``"csls"``, ``"qbnorm"`` or ``"invgc"`` (see :mod:`anybind.rerank`).  The query bank is the
            indexed items of the query's modalities (or ``query_bank``: vectors, or modality names); the
            gallery bank is the searched items.
        exact: force exact (``True``) or ANN (``False``) search; default: ANN when the index has one and at
            least ``ann_threshold`` rows.
        rank_by: ``"score"``, or ``"probability"`` (a calibrated space, a one-modality query): hits of every
            modality ranked by their calibrated ``P(match)`` (see :mod:`anybind.index.calibrated`).
        ann_params: ``nprobes``, ``refine_factor``, ``ef`` overrides for ANN search.
        """
        k = check_k(k)
        targets = self._t.check_targets(modality)
        lab = label_filter(labels)
        q = query if one_raw_vector(query, text, image, audio, inputs, weights) else Query.of(
            query, dim=self.dim, text=text, image=image, audio=audio, inputs=inputs, weights=weights)
        return self._searcher.search(q, targets=targets, k=k, labels=lab, rerank=rerank, rerank_params=rerank_params,
                                     query_bank=query_bank, exact=exact, cache=cache, rank_by=rank_by, **ann_params)

    def search_vectors(
        self,
        queries: np.ndarray,
        *,
        modality: str | Sequence[str] | None = None,
        k: int = 10,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        rerank: str | None = None,
        rerank_params: Mapping[str, Any] | None = None,
        query_bank: np.ndarray | str | Sequence[str] | None = None,
        exact: bool | None = None,
        rerank_pool: int = 1000,
        bank_size: int = 4096,
        **ann_params,
    ) -> list[list[Hit]]:
        """Search with a batch of query vectors (n, dim); one hit list per query."""
        return self._searcher.search_vectors(queries, modality=modality, k=k, labels=labels, rerank=rerank,
                                             rerank_params=rerank_params, query_bank=query_bank, exact=exact,
                                             rerank_pool=rerank_pool, bank_size=bank_size, **ann_params)

    def classify(
        self,
        classes: Sequence[str],
        *,
        modality: str | None = None,
        templates: Sequence[str] | None = None,
        k: int = 5,
        labels: Mapping[str, Any] | Sequence[str] | None = None,
        text_modality: str = "text",
        cache: "FeatureCache | str | Path | None" = None,
        batch_size: int = 4096,
        bias: "Sequence[float] | Mapping[str, float] | ZeroShotClassifier | None" = None,
    ) -> list[dict[str, Any]]:
        """Zero-shot classify the indexed items (of ``modality``) over any number of class names.

        Nothing stored is re-embedded; class prompts go through the feature cache in batches (see
        :func:`~anybind.index.class_embeddings`).  Returns, per item, ``{"id", "modality", "classes": [(name,
        score), ...]}`` (top ``k``), and in a calibrated space ``"probabilities"``: each class's ``P(match)``.
        ``bias``: per-class offsets the classes are ranked by (score + offset; the scores shown stay raw): a
        :class:`~anybind.zeroshot.ZeroShotClassifier` (its classes, in its order, with its prompts and modality), a
        ``{class: offset}`` mapping, or bare numbers in the classes' order; a mismatch is refused in one line
        (:func:`~anybind.index.classify.class_bias`)."""
        return self._classifier.classify(classes, modality=modality, templates=templates, k=k, labels=labels,
                                         text_modality=text_modality, cache=cache, batch_size=batch_size, bias=bias)

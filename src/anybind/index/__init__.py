"""A persistent any-to-any search index over a bound space (LanceDB, embedded, on disk).

An index is a folder::

    index.json      format, the space identity it is tied to, dim, modalities, ANN settings
    space/          a copy of the space the vectors were made with (so queries embed the same way)
    items.lance/    the LanceDB table: one row per (record id, modality)
    memann/         optional: the in-memory HNSW graph for serving and the table version it covers
    .anybind-write.lock   the writer lock (an empty file; see below)

Table columns: ``id``, ``modality``, ``source`` (the text itself, or the
absolute file path, or the lookup key), ``labels`` (the record's labels as a
JSON string), ``label_pairs`` (the same as ``"key=value"`` strings, for
filters), ``key`` (the encoder's content key: a hash of the text or of the
file's bytes) and ``vector`` (``fixed_size_list<float32>[dim]``, unit norm).

::

    index = Index.build(space, "data/tux/manifest.jsonl", "indexes/tux")
    index.search(text="a barking dog", modality="image", k=10)
    index.search(image="dog.png", text="at night", modality="audio")       # fused query
    index.add(load_manifest("more.jsonl"))    # embeds only what is new or changed
    index.delete(["badger"])

Guarantees:

* **Tied to the space.**  ``index.json`` stores ``space.identity()``;
  :meth:`Index.open` with a space of another identity raises
  :class:`~anybind.errors.SpaceError` naming both.
* **Incremental.**  A row is keyed by (record id, modality) and carries the
  content key of what was embedded; :meth:`Index.add` embeds only rows that are
  new or whose content changed (a label-only change rewrites the labels and
  reuses the stored vector).
* **Crash-safe.**  Rows are committed in chunks; each commit is a new LanceDB
  version written atomically, so a killed insert leaves the last committed
  version readable and a rerun embeds only what is missing.
* **Concurrent writers take turns.**  Every write (create, each committed chunk of
  :meth:`Index.add`, delete, optimize, the ANN build) holds an exclusive ``flock`` on
  ``.anybind-write.lock`` in the folder (:mod:`.lock`; released by the kernel if the writer
  dies) and decides append-or-replace against the table's latest version, so concurrent runs
  never store a (record id, modality) twice; a second creator of a new index opens the first
  one's.  Readers never take the lock.  :meth:`Index.repair` removes duplicates that older
  versions could leave.
* **Exact or approximate.**  Exact search is one batched matmul + top-k per
  block of the stored vectors (bounded memory for the score blocks); above
  ``ann_threshold`` rows an ANN index (LanceDB IVF-HNSW-SQ or IVF-PQ) is used,
  and :meth:`Index.ann_recall` reports its recall@k against exact search.
* **Fast for serving (optional).**  :meth:`Index.create_memory_ann` keeps an hnswlib HNSW graph
  beside the table (``memann/``, saved with the table version it covers; searches from
  ``ann_threshold`` rows use it, after bringing it to the table's version: it never answers
  stale); :meth:`Index.quantize` searches int8 or binary codes in memory and rescores the top
  candidates with the float vectors.  The LanceDB table stays the store of record.
* **Larger than memory.**  :meth:`Index.append_vector_batches` writes new rows batch by batch
  (one batch in memory, 8 bytes an id to refuse duplicates), :class:`RunningTopK` accumulates exact
  top-k over blocks, and :meth:`Index.tune_ann` takes that truth instead of loading the table; the
  LanceDB ANN is built and searched from disk (``anybind bench --task search-scale --opt only=lance``).

Modules: :mod:`.core` (the :class:`Index` class, made of the parts below, each given the
:class:`~.table.IndexTable` handle it works on), :mod:`.build` (create / open / build the folder),
:mod:`.table` (the handle: folder, ``index.json``, space, LanceDB table, snapshot), :mod:`.write`
(add, add_vectors, delete, optimize, repair), :mod:`.append` (the streamed append), :mod:`.query` (:class:`Query`: a query's inputs parsed
once; turning them into a query vector), :mod:`.search` (search, search_vectors), :mod:`.banks`
(re-ranking), :mod:`.ann` (the LanceDB ANN index and its recall), :mod:`.fast` / :mod:`.memann` /
:mod:`.quant` (the in-memory graph and quantised codes), :mod:`.classify` (zero-shot over many
classes), :mod:`.stale` (an index of another space), :mod:`.refresh` (re-embedding with an updated
space), :mod:`.lock` (the writer lock), :mod:`.exact` (exact top-k), :mod:`.store` (format
constants, LanceDB/Arrow helpers), :mod:`.errors` (QueryError, IndexError_), :mod:`.results`
(Hit, AddStats), :mod:`.tuning` (a search breadth tuned to a recall target: :class:`EfTuning`).
Inside the package the modules form layers (``.importlinter``): refresh above core, core above build, build
above the parts, the parts above table, table above the rest.
"""

from .classify import class_embeddings, zero_shot_topk
from .core import Index
from .errors import IndexError_, QueryError
from .refresh import RefreshStats, refresh_index
from .exact import RunningTopK, exact_topk
from .query import Query
from .results import AddStats, Hit
from .tuning import EF_GRID, EfTuning, tune_ef
from .store import (
    ANN_TYPES,
    DEFAULT_ANN_THRESHOLD,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    SPACE_DIR,
    TABLE,
)

__all__ = [
    "ANN_TYPES",
    "AddStats",
    "DEFAULT_ANN_THRESHOLD",
    "EF_GRID",
    "EfTuning",
    "FORMAT",
    "FORMAT_VERSION",
    "Hit",
    "Index",
    "IndexError_",
    "META_FILE",
    "Query",
    "QueryError",
    "RefreshStats",
    "RunningTopK",
    "SPACE_DIR",
    "TABLE",
    "class_embeddings",
    "exact_topk",
    "refresh_index",
    "tune_ef",
    "zero_shot_topk",
]

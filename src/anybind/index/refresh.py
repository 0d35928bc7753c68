"""Stale indexes and their refresh: an index built with a space that was since updated (``anybind update``,
``bind``, ``merge``) is re-embedded with the new space from the feature cache, without re-encoding.

An index opened with a space of another identity is refused with :func:`~.stale.stale_error` (:mod:`.stale`).

:func:`refresh_index` (CLI ``anybind index --refresh INDEX --space NEW``) reads every row's content
key (the encoder's hash of the text or file it embedded), takes the frozen features of that key from
the :class:`~anybind.cache.FeatureCache` (the encoders are never called for them) and projects them
with the new space.  Ids, modalities, sources and labels are kept.  The new version of the index
(table, space copy, ``index.json``) is written whole in a temporary folder under the index's writer
lock and swapped in (:func:`anybind.io.atomic_write_dir`): until then readers see the old version,
complete; a killed refresh leaves it as it was.  Rows whose features are not cached are encoded from
their source (counted) unless ``cached_only``; an ANN index is rebuilt over the new vectors.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..encoders.base import current_key
from ..errors import SpaceError
from .core import Index
from .errors import IndexError_
from .lock import relock, writer_lock
from .stale import descent
from .store import META_FILE, SPACE_DIR, TABLE, rows_table, table_schema, write_json_atomic

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..space import Space

log = logging.getLogger(__name__)


@dataclass
class RefreshStats:
    """What :func:`refresh_index` did."""

    rows: int = 0
    from_cache: int = 0  # rows re-embedded from cached features (no encoder call)
    encoded: dict[str, int] = field(default_factory=dict)  # modality -> rows whose features had to be encoded
    old_identity: str = ""
    new_identity: str = ""
    seconds: float = 0.0
    unread: list[str] = field(default_factory=list)  # sources not readable to tell if an SVG's key is current

    def summary(self) -> str:
        enc = sum(self.encoded.values())
        return (f"refreshed {self.rows} rows ({self.from_cache} from cached features, {enc} encoded): "
                f"space {self.old_identity} -> {self.new_identity}")


def refresh_index(path: str | Path, space: "Space", *, cache: "FeatureCache | str | Path | None" = None,
                  cached_only: bool = False, chunk_size: int = 4096) -> RefreshStats:
    """Re-embed the index at ``path`` with ``space`` (see the module doc); returns what it did."""
    from ..cache import FeatureCache

    t0 = time.perf_counter()
    path = Path(path)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    stats = RefreshStats(new_identity=space.identity())
    with writer_lock(path):
        old = Index.open(path)
        stats.old_identity = old.identity
        if old.space is None:
            raise IndexError_(f"{path}: holds raw vectors (no space): it cannot be re-embedded; add them again")
        mods = sorted(old.counts())
        unbound = [m for m in mods if m not in space.modalities]
        if unbound:
            raise SpaceError(f"index {path} holds {', '.join(unbound)} rows, which the space given does not bind "
                             f"(bound: {', '.join(space.modalities)}): it cannot refresh this index")
        if descent(space, old.identity) is None and old.identity != space.identity():
            log.info("%s: the space given does not descend from the index's (%s); re-embedding every row with it",
                     path, old.identity)

        def write(tmp: Path) -> None:
            import lancedb

            space.save(tmp / SPACE_DIR)
            table = lancedb.connect(str(tmp)).create_table(TABLE, schema=table_schema(space.dim))
            cols = ["id", "modality", "source", "labels", "key"]
            for batch in old.table.search().select(cols).limit(None).to_batches(chunk_size):
                rows = {c: batch.column(c).to_pylist() for c in cols}
                mod = np.asarray(rows["modality"], dtype=object)
                V = np.zeros((len(mod), space.dim), np.float32)
                for m in sorted(set(rows["modality"])):
                    sel = np.flatnonzero(mod == m)
                    V[sel], keys = _vectors(space, m, [rows["key"][i] for i in sel],
                                            [rows["source"][i] for i in sel], fc, cached_only, stats,
                                            bool(old.meta.get("svg_keys_named")))
                    for i, k in zip(sel, keys):
                        rows["key"][i] = k
                table.add(rows_table(space.dim, rows["id"], rows["modality"], rows["source"],
                                     [json.loads(lb) for lb in rows["labels"]], rows["key"], V))
                stats.rows += len(mod)
            if stats.unread:
                log.warning("%s: %d row(s) (first: source %r) could not be read to tell whether they are SVGs keyed "
                            "by an older renderer: their cached features are used as stored; refresh again when "
                            "they can be read", path, len(stats.unread), stats.unread[0])
            meta = {**old.meta, "svg_keys_named": not stats.unread,  # every file key current (_vectors), or not yet
                    "identity": space.identity(), "dim": space.dim, "encoders": dict(space.encoders),
                    "space": SPACE_DIR, "ann": None,
                    "refreshed": {"from": old.identity, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
            write_json_atomic(tmp / META_FILE, meta)  # last: its presence marks a complete index

        from ..io import atomic_write_dir

        atomic_write_dir(path, write, kind="index", overwrite=True)
        relock(path)  # the folder was swapped: hold the lock of the one there now
        ann = old.meta.get("ann")
        if ann:  # the old ANN index was over the old vectors: build it again over the new ones
            Index.open(path, space).create_ann(str(ann.get("type", "ivf_hnsw_sq")))
    stats.seconds = round(time.perf_counter() - t0, 2)
    log.debug("%s: %s", path, stats.summary())  # the caller reports it (the CLI prints it once, with the time)
    return stats


def _vectors(space: "Space", m: str, keys: list[str], sources: list[str], fc: "FeatureCache", cached_only: bool,
             stats: RefreshStats, svg_keys_named: bool) -> tuple[np.ndarray, list[str]]:
    """``space``'s unit vectors of one modality's rows from their content keys' cached features (and their keys);
    a row whose features are not cached is encoded from its source, or refused with ``cached_only``."""
    enc = space.encoder(m)  # checked against the identity the space recorded; not called for cached features
    if enc.input_kind == "file":  # an SVG's features from an older rendering (encoders.base.current_key): not read
        now = [current_key(k, s, sniff=not svg_keys_named) for k, s in zip(keys, sources)]
        stats.unread += [s for s, k in zip(sources, now) if k is None]  # said once, after every batch
        keys = [k if n is None else n for k, n in zip(keys, now)]
    X, missing = fc.cached(enc, keys)
    if missing:
        if cached_only:
            raise IndexError_(f"{len(missing)} {m} row(s) (first: source {sources[missing[0]]!r}) have no cached "
                              f"features for {space.encoders[m]}: encode them first (`anybind encode`), or refresh "
                              "without --cached-only")
        X[missing] = space.features(m, [sources[i] for i in missing], cache=fc)
        keys = list(keys)
        for i in missing:
            keys[i] = enc.content_key(sources[i])
        stats.encoded[m] = stats.encoded.get(m, 0) + len(missing)
    stats.from_cache += len(keys) - len(missing)
    return space.project(m, X), keys

"""What the service loads once at start-up: the space, its index, warm encoders, lookups, a query cache.

:class:`Service` holds no request state; the FastAPI app (:mod:`anybind.serve.app`)
calls it from worker threads, at most ``concurrency`` at a time.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data.limits import LIMITS, MediaLimits, using_limits
from ..data.templates import templates_for
from ..errors import AnybindError, DataError, not_read_kind
from ..index import Hit, Index, IndexError_, QueryError, class_embeddings
from ..space import Space
from .blas import one_blas_thread
from .config import ServeConfig, encoder_limits
from .files import Changed, ItemFiles, NotFound, OpenItemFile, indexed_folders  # noqa: F401 - re-exported
from .memcache import MemoryFeatureCache
from .sniff import SNIFF_BYTES, sniff
from .uploads import UploadError, check_size, display_name, tiny_npy, tiny_png, tiny_wav  # noqa: F401 - UploadError re-exported
from .uploads import upload_features

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One stored row the service may serve: its source (text, or an absolute file path), media kind,
    content key (``"f:" + sha256`` of a file's bytes when it was indexed) and indexed file size."""

    id: str
    modality: str
    source: str
    media: str  # "image" | "audio" | "text" | "other"
    key: str | None = None
    size: int | None = None  # a file's size in bytes when it was indexed (None: not recorded)


class Service:
    """The loaded space + index, the item lookup table and the query cache, shared by all requests."""

    def __init__(
        self,
        space: Space,
        index: Index,
        *,
        cache: str | Path | None = None,
        config: ServeConfig | None = None,
        space_dir: str | Path | None = None,
    ):
        self.space = space
        self.index = index
        self.config = config or ServeConfig()
        self.space_dir = str(space_dir) if space_dir is not None else None
        self.cache = MemoryFeatureCache(cache, max_items=self.config.query_cache,
                                        batch_wait=max(0.0, self.config.batch_wait_ms) / 1000,
                                        max_batch=self.config.max_batch, limits=encoder_limits(space, self.config),
                                        torch_threads=self.config.torch_threads)
        self.tmp = Path(tempfile.mkdtemp(prefix="anybind-serve-")).resolve()
        # staged uploads live here; removed by close(), or at exit if close() was never called
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.tmp), True)
        self.started = time.time()
        # what each bound modality reads ("text" or "file") and what its media are
        self.input_kind = {m: getattr(space.encoder(m), "input_kind", "file") for m in space.modalities}
        self.media = {m: self._media_of(m) for m in space.modalities}
        # the modalities whose encoders read .npy arrays (a time series, a plugin's; a vectors: modality's features
        # in place of a key): what a .npy upload is for
        self.array_modalities = [m for m in space.modalities if self.input_kind[m] in ("file", "key")
                                 and getattr(space.encoder(m), "reads_arrays", False)]
        self.files = ItemFiles()
        self._load_items()
        self._refresh_lock = threading.Lock()
        self._checked = time.monotonic()
        self._bad_header: str | None = None  # the last refusal of index.json warned of (see refresh)
        self._thumbs: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._thumb_lock = threading.Lock()
        # last, once nothing above can fail (a failed constructor is never closed); given back by close(), or when
        # the service is dropped unclosed
        one_blas_thread()
        self._blas = weakref.finalize(self, one_blas_thread, False)

    def _load_items(self) -> None:
        """The id -> items lookup and the per-modality counts, from the index's current snapshot."""
        snap = self.index.snapshot()
        ids = snap.meta.column("id").to_pylist()
        srcs = snap.meta.column("source").to_pylist()
        keys = snap.meta.column("key").to_pylist()
        # an index written before sizes were recorded has no such column: its files are checked by hash alone
        sizes = snap.meta.column("size").to_pylist() if "size" in snap.meta.column_names else [None] * len(ids)
        items: dict[str, dict[str, Item]] = {}
        for i, m, s, k, n in zip(ids, snap.modality.tolist(), srcs, keys, sizes):
            items.setdefault(i, {})[m] = Item(i, m, s, self.media.get(m, "other"), k, n)
        file_mods = [m for m, kind in self.input_kind.items() if kind == "file"]
        folders = indexed_folders(snap.meta.column("source"), snap.modality, file_mods)
        self.items, self.counts = items, self.index.counts()  # swapped whole: readers see old or new
        self.files.set_folders(folders)

    def refresh(self, force: bool = False) -> bool:
        """Pick up writes other processes made to the index, at most every ``refresh_seconds``
        (every call with ``force``).  Returns whether anything changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.config.refresh_seconds:
            return False
        with self._refresh_lock:
            if not force and now - self._checked < self.config.refresh_seconds:
                return False  # another request refreshed meanwhile
            self._checked = now
            try:
                moved = self.index.refresh()
            except IndexError_ as e:  # index.json rewritten badly: serve with the header read before
                if str(e) != self._bad_header:  # warned once per damage, not on every refresh
                    self._bad_header = str(e)
                    log.warning("%s; serving with the header read before", e)
                return False
            self._bad_header = None
            if not moved:
                return False
            self._load_items()
            with self._thumb_lock:
                self._thumbs.clear()
            return True

    @classmethod
    def load(
        cls,
        space_dir: str | Path | None,
        index_dir: str | Path,
        *,
        cache: str | Path | None = None,
        config: ServeConfig | None = None,
        warm: bool = True,
    ) -> "Service":
        """Open the index with the space (refused unless the index was built with it); warm the encoders."""
        space = Space.load(space_dir) if space_dir is not None else None
        index = Index.open(index_dir, space)
        if index.space is None:
            raise DataError(f"{index_dir}: this index holds no space; pass the space it was built with")
        svc = cls(index.space, index, cache=cache, config=config, space_dir=space_dir)
        if warm:
            try:
                svc.warm_up()
            except BaseException:
                svc.close()
                raise
        return svc

    @property
    def media_limits(self) -> MediaLimits:
        """The limits uploads are checked and rendered under (see :class:`ServeConfig`)."""
        cfg = self.config
        return MediaLimits(
            max_pixels=cfg.max_pixels, max_svg_work=cfg.max_svg_work, max_svg_seconds=cfg.max_svg_seconds,
            max_video_pixels=min(cfg.max_pixels, LIMITS.max_video_pixels), max_video_seconds=cfg.max_video_seconds,
        )

    def _media_of(self, modality: str) -> str:
        if self.input_kind[modality] == "text":
            return "text"
        if self.input_kind[modality] != "file":
            return "other"
        kind = getattr(self.space.encoder(modality), "modality", None)
        if kind not in ("image", "audio", "video"):  # a custom encoder: go by the field's name (image_hd, speech...)
            kind = {"speech": "audio", "sound": "audio"}.get(modality.split("_")[0], modality.split("_")[0])
        return kind if kind in ("image", "audio", "video") else "other"

    def upload_modality(self, kind: str) -> str | None:
        """The bound modality an uploaded image / sound / video is embedded as: ``image`` / ``audio`` /
        ``video``, else the only bound file modality of that media kind (an ``array``: the only one whose encoder
        reads arrays)."""
        cands = self.takes(kind)
        if kind in cands:
            return kind
        return cands[0] if len(cands) == 1 else None

    def takes(self, kind: str) -> list[str]:
        """The bound modalities an upload of this kind (image, audio, video, array) may be embedded as."""
        if kind == "array":
            return self.array_modalities
        return [m for m in self.space.modalities if self.media.get(m) == kind]

    def warm_up(self) -> None:
        """Build every encoder's model and the query cache's index now, not on the first request."""
        blobs = {"image": (tiny_png(), ".png"), "audio": (tiny_wav(), ".wav"), "array": (tiny_npy(), ".npy")}
        for m in self.space.modalities:
            kind = "array" if m in self.array_modalities and self.input_kind[m] == "file" else self.media[m]
            if self.input_kind[m] == "text":
                self.space.embed(m, ["warm up"], cache=self.cache)
            elif kind in blobs:
                data, ext = blobs[kind]
                p = self.tmp / f"warm-{m}{ext}"
                p.write_bytes(data)
                try:
                    self.space.embed(m, [str(p)], cache=self.cache)
                except AnybindError as e:
                    if kind != "array":
                        raise
                    # a plugin's arrays may need another shape than the sample series: built on first use instead
                    log.warning("%s: not warmed up with a sample series (%s); its first query builds it", m, e)
                finally:
                    p.unlink(missing_ok=True)
        self.index.snapshot()
        self.index.warm_fast()  # the in-memory ANN graph / quantised codes, when the index keeps them

    def close(self) -> None:
        """Remove the folder of staged uploads; give the process its BLAS threads back."""
        self._cleanup()
        self._blas()  # a finalizer: runs once, however often close() is called

    # -- queries -------------------------------------------------------------
    def check_text_modality(self, m: str) -> str:
        if m not in self.space.modalities:
            raise QueryError(f"unknown modality {m!r}: this space binds {', '.join(self.space.modalities)}")
        if self.input_kind[m] != "text":
            if m in self.array_modalities:
                key = self.input_kind[m] == "key"
                raise QueryError(f"modality {m!r} does not read text (it reads {'features' if key else 'files'}): "
                                 "upload a .npy array to /search/upload (or /embed/upload, /classify/upload) with "
                                 f"file_modality={m}" + (", or give an input's 'features'" if key else ""))
            raise QueryError(f"modality {m!r} does not read text (it reads {self.input_kind[m]}s): upload a file")
        return m

    def stage(self, data: bytes, name: str, modality: str | None) -> tuple[str, Any, Path | None, str]:
        """Check an upload's content and write it to a private temporary file (a ``vectors:`` modality's
        features: kept in memory, as the array its encoder takes in place of a key).

        Returns ``(modality, item, path or None, display_name)``; raises :class:`UploadError`
        (415) when the bytes are no image or sound this service reads, and
        :class:`QueryError` (400) when the modality does not fit.
        """
        shown = display_name(name)
        if not data:
            raise QueryError(f"{shown}: the file is empty")
        s = sniff(data[:SNIFF_BYTES])
        if s is None:
            from .sniff import ACCEPTED

            raise UploadError(
                f"{shown}: not an image, a sound or a video this service reads (the content was checked, not the name): "
                f"send {ACCEPTED}"
            )
        what = f"{'an' if s.kind in ('image', 'array') else 'a'} {s.kind} ({s.mime})"
        if modality is None:
            modality = self.upload_modality(s.kind)
            if modality is None and s.kind == "array":
                takes = self.takes("array")
                raise QueryError(f"{shown} is {what}, but " + (
                    f"several modalities read arrays ({', '.join(takes)}); name one with file_modality" if takes
                    else f"no modality of this space reads arrays (bound: {', '.join(self.space.modalities)})"))
            if modality is None:
                raise QueryError(
                    f"{shown} is {'an' if s.kind == 'image' else 'a'} {s.kind} ({s.mime}), but this space binds no "
                    f"single {s.kind} modality (bound: {', '.join(self.space.modalities)}); name one with file_modality"
                )
        elif modality not in self.space.modalities:
            raise QueryError(f"unknown modality {modality!r}: this space binds {', '.join(self.space.modalities)}")
        elif modality not in self.takes(s.kind):
            reads = "arrays" if modality in self.array_modalities else f"{self.media.get(modality)} input"
            raise QueryError(f"{shown} is {what}, but modality {modality!r} reads {reads}")
        check_size(data, s, shown, self.config, self.media_limits)
        if self.input_kind[modality] == "key":
            return modality, upload_features(data, shown, self.space.encoder(modality).dim), None, shown
        path = self.tmp / f"{uuid.uuid4().hex}{s.ext}"
        path.write_bytes(data)
        return modality, str(path), path, shown

    def search(
        self,
        parts: Sequence[tuple[str, Any, float]],
        *,
        k: int,
        modality: Sequence[str] | None,
        labels: Any,
        rerank: str | None,
        rank_by: str = "score",
        vector: np.ndarray | None = None,
    ) -> tuple[list[Hit], list[str]]:
        """Hits of the fused query of ``parts`` (and of a raw query ``vector``, checked, at weight 1)."""
        self.refresh()
        query: Any = list(parts)
        kw: dict[str, Any] = {}
        if vector is not None:  # the vector, then the inputs: a Query's order of weights
            ws = [1.0] + [float(w) for _, _, w in parts]
            query, kw = vector, {"inputs": [p[:2] for p in parts] or None,
                                 "weights": ws if any(w != 1 for w in ws) else None}
        with using_limits(self.media_limits):  # uploads decoded under the service's limits
            hits = self.index.search(query, **kw, modality=modality, k=k, labels=labels, rerank=rerank,
                                     cache=self.cache, rank_by=rank_by)
        return hits, sorted({p[0] for p in parts})

    def classify(
        self, parts: Sequence[tuple[str, Any, float]], names: Sequence[str], templates: Sequence[str] | None,
        offsets: np.ndarray | None = None, temperature: float | None = None, text_modality: str | None = None,
        vectors: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The space's score (cosine, or MIP in a Symile space) of the (fused) query with each class's
        prompt-ensemble embedding, and the softmax at the space's temperature (``templates`` empty or None:
        the space's own prompts).  ``offsets`` (a balanced classifier's, one per class): the softmax is of
        score + offset at ``temperature``; ``text_modality``: the prompts' (default 'text'); ``vectors``: the class
        vectors to score against (one row per name: a classifier's own, e.g. refined) instead of embedding the names."""
        try:
            templates = templates_for(self.space, templates or None)  # before anything is filled or embedded
        except DataError as e:
            raise QueryError(str(e)) from None
        text_mod = text_modality or ("text" if "text" in self.space.modalities else None)
        if text_mod is None or self.input_kind[text_mod] != "text":
            raise QueryError("zero-shot classification needs a bound 'text' modality to embed class names")
        with using_limits(self.media_limits):
            qparts, w, qmods = self.index.query_parts(list(parts), cache=self.cache)
        q, scale = self.index.fuse_query(qparts, w, text_mod)  # the space's scorer: cosine, or MIP in Symile
        try:
            C = (class_embeddings(self.space, list(names), list(templates), text_modality=text_mod, cache=self.cache)
                 if vectors is None else np.asarray(vectors, np.float32))
        except AnybindError as e:
            raise QueryError(str(e)) from None
        scores = (C @ q) * scale
        if offsets is None:
            logits = scores * float(np.exp(self.space.logit_scale))
        else:
            logits = (scores + offsets) * float(temperature)
        p = np.exp(logits - logits.max())
        return scores, p / p.sum(), qmods

    def embed_items(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        try:
            with using_limits(self.media_limits):  # as search and classify
                return self.space.embed(modality, list(items), cache=self.cache)
        except AnybindError as e:
            raise not_read_kind(e, QueryError)(f"cannot embed {modality} input: {e}") from None

    # -- stored items ---------------------------------------------------------
    def item(self, item_id: str, modality: str | None) -> Item:
        self.refresh()
        rows = self.items.get(item_id)
        if not rows:
            raise NotFound(f"no item {item_id!r} in this index")
        if modality is not None:
            if modality not in rows:
                raise NotFound(f"item {item_id!r} has no {modality!r} (it has {', '.join(sorted(rows))})")
            return rows[modality]
        order = {"image": 0, "video": 1, "audio": 2, "other": 3, "text": 4}
        return min(rows.values(), key=lambda it: (order.get(it.media, 9), it.modality))

    def open_item(self, it: Item) -> OpenItemFile:
        """The item's stored file, open and checked: inside the indexed folders (else :class:`NotFound`)
        and holding the content that was indexed (else :class:`Changed`); see :mod:`anybind.serve.files`."""
        return self.files.open(it.id, it.modality, it.source, it.key, it.size)

    def thumbnail(self, it: Item, size: int) -> bytes:
        """A JPEG of at most ``size`` pixels a side (LRU-cached), made from the checked file; the file is
        checked on every call (cheap once its version is verified), so a cached thumbnail is not served
        for a file that changed since it was indexed."""
        from ..data.media import load_image, to_rgb

        key = (it.id, it.modality, size)
        budget = self.config.max_svg_seconds
        with self.open_item(it) as f:
            with self._thumb_lock:
                if key in self._thumbs:
                    self._thumbs.move_to_end(key)
                    return self._thumbs[key]
            try:
                # an indexed SVG passed the library's limits when it was indexed; its rendering here is
                # still bounded by the service's time budget
                if it.media == "video":  # its poster frame: the first, decoded under the service's limits
                    from PIL import Image

                    from ..data.video import poster_frame

                    img = to_rgb(Image.fromarray(poster_frame(f.path, limits=self.media_limits)))
                else:
                    img = load_image(f.path, size=max(size, 64), limits=replace(LIMITS, max_svg_seconds=budget))
            except AnybindError as e:
                raise type(e)(str(e).replace(f.path, it.source)) from None
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        with self._thumb_lock:
            self._thumbs[key] = data
            while len(self._thumbs) > self.config.thumb_cache:
                self._thumbs.popitem(last=False)
        return data

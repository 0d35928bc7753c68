"""A vocabulary stored with a space (issue 20): words embedded by the space's text modality, for explanations.

``anybind explain`` and ``POST /explain`` name the vocabulary words nearest to an embedding (a lexical view of
the space, :func:`anybind.explain.nearest_words`).  Embedding a vocabulary of thousands of words takes the text
encoder a while, so a space may keep one, built once (``anybind explain SPACE --build-vocab --vocab WORDS``):

    vocabulary.json          {"format": "anybind.vocabulary", "format_version": 1, "text_modality",
                              "modality_identity", "source", "count", "dim", "words": [...], "digest"}
    vocabulary.safetensors   "vectors": float32 (count, dim), the words' embeddings (unit norm)

It is an optional part of the space folder, written with it in the same atomic save and read by
:meth:`Space.load`; like ``calibration.json`` it is not part of the space identity (it changes no embedding, so
indexes and fusion models stay valid) and an older anybind, which does not know it, loads the space without it.

**In an index.**  An index keeps a copy of the space it was built with (``INDEX/space``), and the copy keeps the
vocabulary: a service started from the index alone (``create_app(None, INDEX)``) explains with the stored words
too.  That is kept on purpose (an index is self-contained) and costs ``count x dim x 4`` bytes once more: 20 000
words at dim 512 are 41 MB, as much as the vectors of 20 000 indexed rows.  ``anybind serve SPACE --index INDEX``
serves the ``SPACE`` folder's space, so its vocabulary, also one built after the index (not in the index's copy).

**Never stale.**  The vocabulary records the identity of the text modality it was embedded by
(:func:`modality_identity`: the encoder spec and identity, projector config and weights of that one modality).
:func:`stored_vocabulary` answers it only while the space's text modality still has that identity, a save
leaves out one that no longer fits, a load refuses one that does not fit the space it is in (an edited or
copied file), and :func:`carry_vocabulary` hands it to a space derived by ``replace_encoder`` / ``update`` /
``add_modality`` / centring / ``merge``: kept when the text modality is unchanged, re-embedded (same words) when
it changed.  A space made afresh (``Space.fit``) has none.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .artefact_meta import read_meta
from .errors import DataError, SpaceError
from .space_config import read_weights, space_identity

if TYPE_CHECKING:
    from .cache import FeatureCache

log = logging.getLogger(__name__)

#: a :class:`anybind.space_core.SpaceCore` (not imported, even for annotations: the core imports this module)
SpaceCore = Any

WORDS_FILE = "vocabulary.json"
VECTORS_FILE = "vocabulary.safetensors"
FORMAT = "anybind.vocabulary"
FORMAT_VERSION = 1
#: the most words a stored vocabulary may hold (checked before anything of that size is read)
MAX_STORED = 200_000
MAX_WORD = 200  # characters of one word or phrase


@dataclass(frozen=True)
class Vocabulary:
    """Words and their embeddings in ``text_modality`` of the space whose text modality had ``modality_identity``."""

    words: tuple[str, ...]
    vectors: np.ndarray  # float32 (len(words), dim)
    text_modality: str
    modality_identity: str
    source: str = ""  # where the words came from (a manifest or words file), for the record

    def fits(self, space: SpaceCore) -> bool:
        """Whether ``space``'s text modality is still the one that embedded these words."""
        return (self.text_modality in space.projectors and self.vectors.shape[1] == space.dim
                and modality_identity(space, self.text_modality) == self.modality_identity)


def modality_identity(space: SpaceCore, modality: str) -> str:
    """A hash of what decides one modality's embeddings: its encoder spec and identity, projector config and
    weights (the space identity restricted to that modality)."""
    return space_identity(space.format_version, {modality: space.encoders[modality]},
                          {modality: space.identities.get(modality, "")}, {modality: space.projectors[modality]})


def embed_vocabulary(space: SpaceCore, words: Sequence[str], text_modality: str = "text", *,
                     cache: "FeatureCache | str | Path | None" = None, progress: bool = False,
                     source: str = "") -> Vocabulary:
    """Embed ``words`` (distinct, non-blank) with the space's ``text_modality``."""
    words = tuple(str(w) for w in words)
    if not words:
        raise DataError("a vocabulary needs at least one word")
    if len(words) > MAX_STORED:
        raise DataError(f"a vocabulary of {len(words)} words; a space keeps at most {MAX_STORED}")
    if len(set(words)) != len(words):
        raise DataError("the vocabulary repeats words")
    long = next((w for w in words if len(w) > MAX_WORD), None)
    if long is not None:
        raise DataError(f"vocabulary word {long[:40]!r}... is over {MAX_WORD} characters")
    if text_modality not in space.modalities:
        raise SpaceError(f"the space binds no {text_modality!r} modality (bound: {', '.join(space.modalities)})")
    V = space.embed(text_modality, list(words), cache=cache, progress=progress)
    return Vocabulary(words, np.ascontiguousarray(V, np.float32), text_modality,
                      modality_identity(space, text_modality), source)


def stored_vocabulary(space: SpaceCore, text_modality: str = "text") -> Vocabulary | None:
    """The space's vocabulary in ``text_modality`` when it has one that still fits it, else ``None``."""
    v = getattr(space, "vocabulary", None)
    if v is None or v.text_modality != text_modality:
        return None
    if not v.fits(space):
        log.warning("the space's vocabulary was embedded by another %r modality (its encoder or projector "
                    "changed): not used; rebuild it with `anybind explain SPACE --build-vocab`", text_modality)
        return None
    return v


def carry_vocabulary(old: SpaceCore, new: SpaceCore, *, cache: "FeatureCache | str | Path | None" = None,
                     progress: bool = False) -> SpaceCore:
    """Give ``new`` (derived from ``old``) ``old``'s vocabulary: the same one when the text modality did not
    change, its words embedded again when it did; ``new`` is returned."""
    v = getattr(old, "vocabulary", None)
    if v is None or not v.fits(old):
        return new
    if v.text_modality not in new.projectors:
        log.info("the vocabulary was dropped: the new space binds no %r modality", v.text_modality)
    elif modality_identity(new, v.text_modality) == v.modality_identity:
        new.vocabulary = v
    else:
        log.info("the %r modality changed: embedding its vocabulary of %d words again", v.text_modality, len(v.words))
        new.vocabulary = embed_vocabulary(new, v.words, v.text_modality, cache=cache, progress=progress,
                                          source=v.source)
    return new


# -- the files ----------------------------------------------------------------------------------
def _digest(doc: dict[str, Any], vectors: np.ndarray) -> str:
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode())
    h.update(np.ascontiguousarray(vectors, np.float32).tobytes())
    return h.hexdigest()[:24]


def write_vocabulary_part(folder: str | Path, space: SpaceCore) -> None:
    """Write the space's vocabulary (``vocabulary.json`` + ``vocabulary.safetensors``) into its folder being
    saved (before its marker ``space.json``); nothing when it has none, and a warning (nothing written) when
    its text modality changed since the words were embedded."""
    from safetensors.numpy import save_file

    v = getattr(space, "vocabulary", None)
    if v is None:
        return
    if not v.fits(space):
        log.warning("the space's vocabulary was embedded by another %r modality (its encoder or projector "
                    "changed): not saved; rebuild it with `anybind explain SPACE --build-vocab`", v.text_modality)
        return
    folder = Path(folder)
    vec = np.ascontiguousarray(v.vectors, np.float32)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "text_modality": v.text_modality,
           "modality_identity": v.modality_identity, "source": v.source, "count": len(v.words),
           "dim": int(vec.shape[1]), "words": list(v.words)}
    save_file({"vectors": vec}, str(folder / VECTORS_FILE), metadata={"format": FORMAT})
    (folder / WORDS_FILE).write_text(json.dumps({**doc, "digest": _digest(doc, vec)}, ensure_ascii=False))


def read_vocabulary_part(folder: str | Path, space: SpaceCore) -> Vocabulary | None:
    """The vocabulary saved in a space folder (``None`` when it has none), checked: its format, its size
    against the weights file's header, its digest, and that it was embedded by this space's text modality."""
    folder = Path(folder)
    p, w = folder / WORDS_FILE, folder / VECTORS_FILE
    if not p.exists() and not w.exists():
        return None
    fix = f"delete {WORDS_FILE} and {VECTORS_FILE} or run `anybind explain {folder} --build-vocab`"
    if not p.is_file() or not w.is_file():
        raise SpaceError(f"{folder}: {WORDS_FILE} without {VECTORS_FILE} or the other way round; {fix}")
    doc = read_meta(folder, WORDS_FILE, VECTORS_FILE, fmt=FORMAT, version=FORMAT_VERSION, what="vocabulary",
                    error=SpaceError, fix=fix)
    n, dim, words, tm = doc.get("count"), doc.get("dim"), doc.get("words"), doc.get("text_modality")
    if (not isinstance(n, int) or not 0 < n <= MAX_STORED or dim != space.dim or not isinstance(words, list)
            or len(words) != n or not all(isinstance(x, str) for x in words) or not isinstance(tm, str)):
        raise SpaceError(f"{p}: malformed vocabulary (count, dim {dim!r} vs the space's {space.dim}, words or "
                         f"text_modality); {fix}")
    vec = read_weights(w, {"vectors": (n, dim)}, WORDS_FILE)["vectors"].float().numpy()
    body = {k: v for k, v in doc.items() if k != "digest"}
    if doc.get("digest") != _digest(body, vec):
        raise SpaceError(f"{p}: the vocabulary does not match its digest (edited or damaged); {fix}")
    v = Vocabulary(tuple(words), vec, tm, str(doc.get("modality_identity")), str(doc.get("source", "")))
    if not v.fits(space):
        raise SpaceError(f"{p}: the vocabulary was embedded by another {tm!r} modality than this space's "
                         f"(copied from another space?); {fix}")
    return v


__all__ = ["Vocabulary", "carry_vocabulary", "embed_vocabulary", "modality_identity", "read_vocabulary_part",
           "stored_vocabulary", "write_vocabulary_part"]

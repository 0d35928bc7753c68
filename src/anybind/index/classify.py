"""Zero-shot classification over many class names: :class:`Classifier` (the indexed items) and :func:`zero_shot_topk`; prompt-ensemble class vectors come from
:func:`anybind.evaluate.class_embeddings` (re-exported here).  Scored by the space's scorer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.templates import templates_for
from ..errors import DataError
from ..evaluate import check_offsets, class_embeddings
from ..zeroshot import ZeroShotClassifier
from .calibrated import with_class_probabilities
from .errors import IndexError_
from .exact import unit_rows, exact_topk
from .query import check_k
from .store import label_filter
from .table import IndexTable

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..space import Space


class Classifier:
    """Zero-shot classification of one index's items."""

    def __init__(self, t: IndexTable) -> None:
        self.t = t

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

        Nothing stored is re-embedded; class prompts go through the feature cache
        in batches (see :func:`class_embeddings`).  Returns, per item,
        ``{"id", "modality", "classes": [(name, score), ...]}`` (top ``k``), and in a calibrated space
        ``"probabilities"``: each class's ``P(match)`` (:mod:`anybind.index.calibrated`).  ``bias``: one offset
        per class (see :func:`class_bias`); classes are ranked by score + offset (each item on its own), the scores
        returned stay raw.
        """
        if self.t.space is None:
            raise IndexError_("this index has no space to embed class names with")
        k = check_k(k)
        use = class_bias(self.t.space, classes, bias, templates=templates, modality=modality,
                         text_modality=text_modality, cache=cache, batch_size=batch_size)
        off, text_modality, C = use["offsets"], use["text_modality"], use["vectors"]
        targets = self.t.check_targets(use["modality"])
        scorer = self.t.space.scorer
        snap = self.t.snapshot()
        rows = snap.rows_where(targets, label_filter(labels))
        idx = np.arange(len(snap.vectors)) if rows is None else rows
        out = []
        ids = snap.meta.column("id").to_pylist()
        for c0 in range(0, len(idx), 65536):
            part = idx[c0 : c0 + 65536]
            X = snap.vectors[part]
            if scorer.kind != "cosine":  # each item scored as the space scores its modality against text
                X = np.array(X, np.float32)
                for m in set(snap.modality[part]):
                    sel = snap.modality[part] == m
                    X[sel] = scorer.weigh(X[sel], str(m), text_modality)
            S, top = biased_topk(X, C, k, off)
            for r, s, i in zip(part, S, top):
                row = {"id": ids[r], "modality": str(snap.modality[r]),
                       "classes": [(classes[j], float(v)) for v, j in zip(s, i)]}
                out.append(with_class_probabilities(self.t.space, row, text_modality))
        return out


def class_bias(space: "Space", classes: Sequence[str], bias: Any, *, templates: Sequence[str] | None = None,
               modality: str | None = None, text_modality: str = "text",
               cache: "FeatureCache | str | Path | None" = None, batch_size: int = 4096) -> dict[str, Any]:
    """How to score ``classes``: the class ``vectors`` to score against, the ``offsets`` (None without a bias), the
    items' ``modality`` and the ``text_modality`` (and the prompt ``names`` and ``templates``).  ``bias``: bare
    numbers (one per class, in the classes' order: only their count can be checked), a ``{class: offset}`` mapping
    (matched by name) -- the vectors are then the classes' prompt ensembles (:func:`class_embeddings`) -- or a
    :class:`~anybind.zeroshot.ZeroShotClassifier`, whose classes (or prompt names) the classes must be, in its order,
    and whose class vectors (refined ones when it was refined), templates and modality are used (others given are
    refused), so that items rank as its ``predict`` ranks them.  A mismatch: one line (:class:`IndexError_`) naming
    what differs."""
    try:
        if isinstance(bias, ZeroShotClassifier):
            return bias.settings_for(space, classes, templates=templates, modality=modality,
                                     text_modality=text_modality, cache=cache)
        templates = templates_for(space, templates)  # None: the space's own
        off = check_offsets(bias, len(classes), classes)
    except DataError as e:
        raise IndexError_(str(e)) from None
    C = class_embeddings(space, classes, templates, text_modality=text_modality, cache=cache, batch_size=batch_size)
    return {"names": list(classes), "templates": templates, "offsets": off, "modality": modality,
            "text_modality": text_modality, "vectors": C}


def biased_topk(X: np.ndarray, C: np.ndarray, k: int, off: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` classes by ``X @ C.T + off`` (one more coordinate: 1 on the items, the offset on the classes, so the
    search stays exact), their raw scores ``X @ C.T`` returned."""
    if off is None:
        return exact_topk(X, C, k)
    X1 = np.hstack([np.asarray(X, np.float32), np.ones((len(X), 1), np.float32)])
    C1 = np.hstack([np.asarray(C, np.float32), off[:, None].astype(np.float32)])
    S, top = exact_topk(X1, C1, k)
    return S - off[top].astype(np.float32), top


def zero_shot_topk(
    space: "Space",
    vectors: np.ndarray,
    classes: Sequence[str],
    *,
    templates: Sequence[str] | None = None,
    k: int = 5,
    text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None,
    batch_size: int = 4096,
    bias: "Sequence[float] | Mapping[str, float] | ZeroShotClassifier | None" = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` classes (raw scores, class indices) of embedded items over a large label set, ranked by score +
    ``bias`` (one offset per class, see :func:`class_bias`) when given."""
    use = class_bias(space, classes, bias, templates=templates, text_modality=text_modality, cache=cache,
                     batch_size=batch_size)
    return biased_topk(unit_rows(np.atleast_2d(vectors)), use["vectors"], check_k(k), use["offsets"])

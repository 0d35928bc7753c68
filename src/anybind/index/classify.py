"""Zero-shot classification over many class names: :meth:`~ClassifyMixin.classify` (the indexed
items), :func:`class_embeddings` (prompt-ensemble class vectors) and :func:`zero_shot_topk`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.strings import is_blank
from ..data.templates import fill_template, templates_for
from ..errors import DataError
from .errors import IndexError_
from .exact import unit_rows, exact_topk
from .query import check_k
from .store import label_filter

if TYPE_CHECKING:
    from ..cache import FeatureCache
    from ..space import Space


class ClassifyMixin:
    """:class:`~anybind.index.Index` zero-shot classification (mixed into ``Index``)."""

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
    ) -> list[dict[str, Any]]:
        """Zero-shot classify the indexed items (of ``modality``) over any number of class names.

        Nothing stored is re-embedded; class prompts go through the feature cache
        in batches (see :func:`class_embeddings`).  Returns, per item,
        ``{"id", "modality", "classes": [(name, score), ...]}`` (top ``k``).
        """
        if self.space is None:
            raise IndexError_("this index has no space to embed class names with")
        k = check_k(k)
        templates = templates_for(self.space, templates)  # None: the space's own prompts
        targets = self._check_targets(modality)
        C = class_embeddings(
            self.space, classes, templates, text_modality=text_modality, cache=cache, batch_size=batch_size
        )
        snap = self.snapshot()
        rows = snap.rows_where(targets, label_filter(labels))
        idx = np.arange(len(snap.vectors)) if rows is None else rows
        out = []
        ids = snap.meta.column("id").to_pylist()
        for c0 in range(0, len(idx), 65536):
            part = idx[c0 : c0 + 65536]
            S, top = exact_topk(snap.vectors[part], C, k)
            for r, s, i in zip(part, S, top):
                out.append(
                    {
                        "id": ids[r],
                        "modality": str(snap.modality[r]),
                        "classes": [(classes[j], float(v)) for v, j in zip(s, i)],
                    }
                )
        return out


def class_embeddings(
    space: "Space",
    names: Sequence[str],
    templates: Sequence[str] | None = None,
    *,
    text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Prompt-ensemble embeddings (n_classes, dim) of many class names, in batches through the feature cache.

    Each class is the renormalised mean of its templates' embeddings; prompts are
    embedded ``batch_size`` at a time (so thousands of classes x templates never
    sit in memory as encoder inputs at once) and every prompt's encoder features
    are cached, so a second call with the same classes encodes nothing.
    """
    from ..cache import FeatureCache

    if not names:
        raise DataError("no class names given")
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or is_blank(n)]
    if bad:
        raise DataError(f"empty class name at position {bad[0]}")
    templates = templates_for(space, templates)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    T = len(templates)
    per = max(1, batch_size // max(1, T))
    out = np.zeros((len(names), space.dim), np.float32)
    for c0 in range(0, len(names), per):
        part = names[c0 : c0 + per]
        prompts = [fill_template(t, n) for n in part for t in templates]
        E = space.embed(text_modality, prompts, cache=fc).reshape(len(part), T, -1).mean(1)
        out[c0 : c0 + len(part)] = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return out


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
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` classes (scores, class indices) of embedded items over a large label set."""
    C = class_embeddings(
        space, classes, templates, text_modality=text_modality, cache=cache, batch_size=batch_size
    )
    return exact_topk(unit_rows(np.atleast_2d(vectors)), C, check_k(k))

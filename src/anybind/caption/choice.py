"""What a modality is captioned by, by default: the trained mapper, the training-free prompt or the nearest caption,
chosen on val.

A captioner can decode a vector three ways (:data:`anybind.caption.model.MODES`): through its prefix mapper (with
its retrieval k), through the frozen LM prompted with the retrieved captions alone (training-free, no mapper), or
by returning the nearest memory caption (retrieval captioning, no LM).  Which one captions a modality best
depends on the modality (on Tux Paint's test split the trained mapper beat the nearest caption on images, not on
speech), so
:func:`choose_modes` captions a seeded sample of each modality's *val* items every way, scores each by CIDEr-D
against their captions, and records the best in the captioner (``Captioner.modes``, saved in ``captioner.json``
with the val scores that chose it).  ``Captioner.caption``, ``anybind caption`` and the service then use it
unless told otherwise (``mode=``).  Ties go to the cheaper mode (nearest, then prompt, then mapper).

Example::

    choose_modes(cap, "data/tux/manifest.jsonl", n=32)       # image, audio: from their val pairs
    choose_modes(cap, "data/speech/manifest.jsonl", ["speech"])
    cap.modes["speech"]   # {"mode": "nearest", "val_cider_d": {"mapper": 0.61, ...}, "n_val": 32,
                          #  "prompt": "Similar recordings say:\n{captions}\nThis one says:\n", ...}

Each choice records the prompt wording the modality's val items were decoded with (``"prompt"``); a captioner
saved before it did (format <= 4) may have chosen its sound and speech modes under the image wording, and
``Captioner.load`` says so: ``anybind caption-modes CAPTIONER MANIFEST`` (this function, then an atomic save)
chooses them again without retraining.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.manifest import Manifest, load_manifest
from ..encoders.kinds import manifest_kinds
from .lm import CaptionError
from .model import MODES, Captioner
from .scores import cider_d

log = logging.getLogger(__name__)

#: the order ties are broken in: the cheapest mode first
CHEAPEST_FIRST = ("nearest", "prompt", "mapper")


def val_items(man: Manifest, modality: str, text: str, n: int, seed: int = 0, split: str = "val") -> list[Any]:
    """``split``'s records holding ``modality`` and a caption, one per distinct item (records sharing a file share
    its caption's weight once), sorted by id, then a seeded sample of ``n`` of them (0: all)."""
    recs = sorted((r for r in man.split(split) if r.has(modality) and r.has(text)), key=lambda r: r.id)
    seen: set = set()
    recs = [r for r in recs if not (str(r.values[modality]) in seen or seen.add(str(r.values[modality])))]
    if n and len(recs) > n:
        keep = np.sort(np.random.default_rng(seed).permutation(len(recs))[:n])
        recs = [recs[i] for i in keep]
    return recs


def choose_modes(cap: Captioner, manifest: str | Path | Manifest, modalities: Sequence[str] | None = None, *,
                 n: int = 32, seed: int = 0, cache: Any = None, split: str = "val", modes: Sequence[str] = MODES,
                 **gen: Any) -> dict[str, dict[str, Any]]:
    """Choose, on ``split`` (val), the mode each of ``modalities`` (default: every bound non-text one with captioned
    records there) is captioned by, record it in ``cap`` (:meth:`Captioner.set_mode`) and return the choices.

    ``n``: the val items captioned per modality (a seeded sample; 0: all); ``**gen``: decoding options
    (:meth:`Captioner.decode`; greedy by default).  Modes the captioner cannot decode by (no memory captions) are
    left out; a modality without val records is skipped with a warning naming it."""
    text = cap.text
    mods = [m for m in (modalities or cap.space.modalities) if m != text]
    unknown = [m for m in mods if m not in cap.space.modalities]
    if unknown:
        raise CaptionError(f"cannot choose a caption mode for {', '.join(map(repr, unknown))}: not bound in this "
                           f"space (bound: {', '.join(cap.space.modalities)})")
    if isinstance(manifest, Manifest):
        man = manifest
    else:
        man = load_manifest(manifest, modalities=[text, *mods], kinds=manifest_kinds(cap.space.encoders),
                            progress=False)
    usable = [m for m in modes if _usable(cap, m)]
    out: dict[str, dict[str, Any]] = {}
    for m in mods:
        recs = val_items(man, m, text, n, seed, split)
        if not recs:  # a warning when asked for by name; an other manifest may hold it (speech, say)
            (log.warning if modalities is not None else log.info)(
                "%s: no %s records with %s and a caption (%s); its caption mode stays %s",
                getattr(man, "path", manifest), split, m, text, cap.mode_for(m))
            continue
        X = cap.space.embed(m, [r.values[m] for r in recs], cache=cache)
        refs = [[r.values[text]] for r in recs]
        scores = {mode: float(cider_d(cap.decode(X, mode=mode, modality=m, **gen), refs)) for mode in usable}
        best = max(CHEAPEST_FIRST, key=lambda k: (scores.get(k, -np.inf), -CHEAPEST_FIRST.index(k)))
        choice = {"mode": best, "val_cider_d": scores, "n_val": len(recs), "split": split, "seed": seed,
                  "prompt_k": cap.prompt_k, "retrieval_k": cap.retrieval_k, "prompt": cap.prompt_for(m),
                  "decoding": {k: v for k, v in gen.items() if k in ("method", "max_tokens", "beams")}}
        cap.set_mode(m, choice)
        out[m] = choice
        log.info("caption mode for %s: %s (val CIDEr-D on %d items: %s)", m, best, len(recs),
                 ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return out


def _usable(cap: Captioner, mode: str) -> bool:
    try:
        cap.check_mode(mode)
    except CaptionError:
        return False
    return True

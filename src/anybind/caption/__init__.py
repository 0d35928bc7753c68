"""Decoding from the space: captions for any bound modality, from a small frozen language model.

A :class:`Captioner` maps one space vector to a few soft tokens of a frozen causal LM (SmolLM2-135M-Instruct
by default, see :mod:`anybind.caption.lm`) that decodes a caption.  It is trained text-only on captions
decoded from their own (noised) text embeddings (:func:`fit_captioner`), so any modality bound to text can
be captioned.  :mod:`anybind.caption.scores` holds BLEU-4 and CIDEr-D.

Example::

    cap = fit_captioner(space, "data/tux/manifest.jsonl")
    cap.save("models/tux-cap")
    Captioner.load("models/tux-cap").caption("image", ["bear.png"], method="beam")
"""

from .fit import CaptionConfig, fit_captioner, fit_captioner_by_k
from .lm import SMOLLM2, CaptionError, FrozenLM, load_lm
from .model import Captioner, MapperConfig, PrefixMapper
from .scores import bleu, cider_d, tokenize

__all__ = ["Captioner", "CaptionConfig", "CaptionError", "FrozenLM", "MapperConfig", "PrefixMapper", "SMOLLM2",
           "bleu", "caption", "cider_d", "fit_captioner", "fit_captioner_by_k", "load_lm", "tokenize"]


def caption(space, captioner, modality, items, **gen):
    """``Space.caption``: captions of ``items`` of ``modality`` by a captioner (object or saved folder) of ``space``."""
    cap = captioner if isinstance(captioner, Captioner) else Captioner.load(captioner, space)
    if cap.space.identity() != space.identity():
        from ..errors import SpaceError

        raise SpaceError(f"the captioner was trained on space {cap.space.identity()}, not {space.identity()}")
    return cap.caption(modality, items, **gen)

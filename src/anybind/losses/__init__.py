"""Alignment objectives, as small modules on batch-first feature tensors.

Modelled on open_clip's ``loss.py``: each loss is an ``nn.Module`` whose
``forward`` takes already-projected (and L2-normalised) embeddings and
returns a dict of named loss terms; the trainer sums the terms.

Two calling conventions:

* **pairwise** losses: ``loss(a, b, logit_scale, feats=(xa, xb))`` on two
  aligned batches (``a[i]`` and ``b[i]`` come from the same record).  ``feats``
  are the frozen (standardised) encoder features of the same rows; only the
  intra-modal term reads them.
* **multimodal** losses (``multimodal = True``, Symile):
  ``loss.forward_multi([e_1, ..., e_M], logit_scale)`` on M aligned batches.

``logit_scale`` is always the *log* inverse temperature (the trainer's learnt
parameter, clamped to ``[0, log 100]``); losses exponentiate it, as in CLIP.

Objectives are combined with weights by :func:`build_loss`::

    build_loss("infonce+uniformity:0.1+intra:0.5")

returns a :class:`CombinedLoss` whose terms are the weighted terms of every
part.  Registered names: ``infonce`` (``clip``), ``siglip``, ``symile``
(O(N) negatives), ``symile-n2`` (O(N^2) negatives), ``uniformity``,
``alignment``, ``intra``, ``m2mix``.
"""

from .pairwise import Alignment, InfoNCE, IntraModal, M2Mix, SigLIP, Uniformity, slerp, uniformity
from .spec import LOSSES, CombinedLoss, build_loss, is_multimodal, parse_loss_spec
from .symile import MissingPlaceholders, Symile, mip

__all__ = [
    "LOSSES",
    "Alignment",
    "CombinedLoss",
    "InfoNCE",
    "IntraModal",
    "M2Mix",
    "MissingPlaceholders",
    "SigLIP",
    "Symile",
    "Uniformity",
    "build_loss",
    "is_multimodal",
    "mip",
    "parse_loss_spec",
    "slerp",
    "uniformity",
]

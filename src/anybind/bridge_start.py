"""The label bridge as the ridge start's prior (issue 16): where an encoder's label bridge maps into the locked
space, :func:`bridge_prior` is the map the ridge shrinks towards and :func:`bridge_anchors` the data-free anchor
pairs it also fits -- the bridge's 1000 class readings paired with the locked encoder's features of the same class
prompts (``TrainConfig.bridge_anchors``; :func:`anybind.ridge.locked_ridge_start`'s ``anchors``).

Why anchors: a few hundred pairs from one domain (icon-theme glyphs, say) move the ridge's map of the bridge block in
directions the training domain never tests; the anchors say, in the frozen classifier's own vocabulary, what those
directions meant before training.  Measured on the five-corpus transfer matrix (BENCHMARKS.md, transfer: the label
bridge's class anchors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .base_gate import finite_number
from .projectors import Projector


def anchor_weight_problem(weight: Any, allow_none: bool = False) -> str | None:
    """What is wrong with a class-anchor weight (``TrainConfig.bridge_anchors``, ``BindConfig.bridge_anchors``,
    ``--bridge-anchors``), in words that follow its name; None when it is a finite number >= 0 (a bool is not one),
    or None where ``allow_none`` (the recipe's choice); a numpy number is one (``np.float32``, ``np.int64``: a
    sweep's).  The one check all three refuse on."""
    if weight is None and allow_none:
        return None
    if not finite_number(weight) or weight < 0:  # np.bool_ is none; an int past a float's range neither
        return (f"must be a non-negative number (the anchors' weight, x the training pairs)"
                f"{' or None' if allow_none else ''}, got {weight!r}")
    return None


def bridge_into(spec: str, lock_spec: str):
    """The label bridge (a :class:`~anybind.encoders.bridge.LabelBridgeEncoder`) of encoder ``spec`` -- or of the
    image encoder of a ``video:frames(...)`` spec -- when it maps into ``lock_spec``'s space; None otherwise."""
    from .encoders.bridge import LabelBridgeEncoder
    from .encoders.registry import get_encoder
    from .encoders.video import VideoFramesEncoder

    enc = get_encoder(spec)
    if isinstance(enc, VideoFramesEncoder):  # a clip's features are its frames' (their mean, or the sequence)
        enc = enc.image
    if not isinstance(enc, LabelBridgeEncoder) or enc.text_encoder.spec != lock_spec:
        return None
    return enc


def bridge_prior(spec: str, lock_spec: str, projector: Projector) -> torch.Tensor | None:
    """The map (in_dim, out_dim) that reads the label-bridge block of ``projector``'s standardised input back
    in the encoder's units (centred): for an encoder ``spec`` whose label bridge maps into ``lock_spec``'s
    space, or a ``video:frames(...)`` of such an image encoder (the block of the frames' mean, or of each frame
    for a frame-pooling projector: ``in_dim`` is then a frame's width); None for any other encoder."""
    enc = bridge_into(spec, lock_spec)
    if enc is None:
        return None
    d_base, d_in, d_out = enc.base_encoder.dim, projector.cfg.feat_dim, projector.cfg.out_dim
    if d_in != d_base + d_out:
        return None
    W = torch.zeros(d_in, d_out, dtype=torch.float64)
    W[d_base:] = torch.diag(projector.scale[d_base:].double())  # z * scale = the centred bridge block
    return W


def bridge_anchors(spec: str, lock_spec: str, projector: Projector) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """The label bridge's class anchors for a projector of encoder ``spec`` locked onto ``lock_spec``'s space:
    ``(directions, lock_features, d_base)`` -- the unit bridge vector of each ImageNet class read with certainty
    (1000 x the lock's width), the lock encoder's features of the same class prompts (1000 x its width: what the
    locked projector reads), and where the bridge block starts in the projector's input.  None where
    :func:`bridge_prior` is None (no label bridge into that space, or the input is not base ++ bridge) or for a
    frame-pooling projector (its input is a frame sequence, not one feature row)."""
    enc = None if projector.cfg.frames else bridge_into(spec, lock_spec)
    if enc is None or projector.cfg.feat_dim != enc.base_encoder.dim + projector.cfg.out_dim:  # as bridge_prior's
        return None
    U = torch.from_numpy(np.asarray(enc.class_directions(), dtype=np.float32))
    L = torch.from_numpy(np.asarray(enc.class_prompt_features(), dtype=np.float32))
    return U, L, enc.base_encoder.dim


def anchors_in_start(guard: Mapping[str, Any] | None, kernel: Mapping[str, Any] | None) -> bool:
    """Whether a modality's final start is the anchored ridge: not where its start guard kept the label bridge itself
    nor where its kernel branch was kept (both ignore the anchors; they were only in the path those were chosen
    against).  ``guard`` / ``kernel``: the records (None: not tried)."""
    return not ((guard or {}).get("kept") == "start" or bool((kernel or {}).get("kept")))

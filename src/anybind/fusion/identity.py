"""A saved fusion model's format and identity: the format name and version of ``fusion.json``, the hash
of what decides its predictions (:func:`fusion_identity`) and its check on load (:func:`check_identity`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import SpaceError

FORMAT = "anybind.fusion"
FORMAT_VERSION = 3  # 2: task (classification | regression), agm, full_weight, dropout_schedule; 3: identity
# (an optional "merged_from", the heads a merged model was built from and its LegoFuse run, needs no new version:
# a merged model is a plain late model, any format-3 reader loads it, and the key is hashed into its identity)
#: keys of fusion.json that do not decide predictions, left out of its identity (and the identity itself)
_NOT_IDENTITY = ("identity", "history", "anybind_version")

log = logging.getLogger(__name__)


def fusion_identity(meta: Mapping[str, Any], weights: Mapping[str, torch.Tensor]) -> str:
    """A hash of what decides a fusion model's predictions: every key of its ``fusion.json`` but
    ``history`` and ``anybind_version`` (task, parameters, label, classes or target scale, space
    identity, ...) and its weights, so that an edit to either (classes reordered, a weight changed)
    is caught on load."""
    h = hashlib.sha256(FORMAT.encode())
    content = {k: v for k, v in meta.items() if k not in _NOT_IDENTITY}
    h.update(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    for k in sorted(weights):
        v = weights[k].detach().cpu().contiguous()
        h.update(f"\0{k}|{v.dtype}|{list(v.shape)}\0".encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:24]


def check_identity(meta: dict[str, Any], sd: Mapping[str, torch.Tensor], meta_p: Path, w_p: Path) -> None:
    """Refuse a model whose saved identity is missing (format 3 on) or not what its content hashes to."""
    saved = meta.get("identity")
    if meta.get("format_version", 0) < 3 and saved is None:
        log.warning("%s: saved before fusion models had an identity (format %s): an edit cannot be detected; "
                    "save it again to add one", meta_p, meta.get("format_version", 0))
        return
    if not isinstance(saved, str) or not saved:
        raise SpaceError(f"{meta_p}: no 'identity' (a hash of the model's content): damaged file")
    recomputed = fusion_identity(meta, sd)
    if recomputed != saved:
        raise SpaceError(
            f"{meta_p}: saved identity {saved} does not match its content (recomputed {recomputed}): "
            f"{meta_p.name} or {w_p.name} was edited or damaged; restore the saved model, or train it again"
        )

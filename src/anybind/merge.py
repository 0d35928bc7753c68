"""Merging two spaces bound separately that share an anchor modality (say image<->text and speech<->text).

:func:`merge_spaces` (CLI ``anybind merge SPACE_A SPACE_B --out S``) keeps every projector of space A
and brings B's other modalities into A's space:

* **exact**: when both spaces embed the anchor identically (same encoder identity, same projector
  config and weights), B's projectors already land in A's space and are taken as they are;
* **procrustes**: otherwise B is aligned to A first: the anchor items given (``anchor_data``) are
  embedded by both spaces, and the orthogonal map ``R = argmin ||E_B R - E_A||`` (SVD of
  ``E_B^T E_A``) rotates B's space onto A's.  Each of B's projectors is then composed with ``R``:
  its output layers are linear (the linear path, and the MLP's last layer), so ``(W, b) -> (R^T W,
  b R)`` composes exactly; a locked (identity) projector becomes a linear one that centres and
  rotates.  A rotation keeps every cosine among B's own modalities, so B's pairs retrieve within
  B's space as before; only their meeting with A's anchor projector depends on the fit.

Modalities bound in both spaces other than the anchor keep A's projector (recorded).  The merged
space's lineage ends with a ``merge`` entry: both identities, the anchor, the method, the anchor
data and how well the rotation fits (mean cosine between the aligned anchor embeddings), plus B's
lineage.  Never-paired modalities (speech and image) then meet through the anchor.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .cache import FeatureCache
from .data.manifest import Manifest
from .errors import DataError, SpaceError
from .projectors import Projector, ProjectorConfig
from .vocabulary import carry_vocabulary

if TYPE_CHECKING:
    from .space_core import SpaceCore

log = logging.getLogger(__name__)


def procrustes_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` (d x d) minimising ``||source R - target||`` (rows: the same items in two spaces)."""
    u, _, vt = np.linalg.svd(source.astype(np.float64).T @ target.astype(np.float64))
    return u @ vt


@torch.no_grad()
def rotated(projector: Projector, R: np.ndarray) -> Projector:
    """A projector whose output is ``projector``'s times ``R`` (exactly: the output layers are linear)."""
    Rt = torch.as_tensor(R, dtype=torch.float32)
    if projector.cfg.kind == "identity":  # x - mean, rotated: a linear projector without standardisation
        d = projector.cfg.in_dim
        out = Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="linear", hidden=0, dropout=0.0,
                                        input_dropout=0.0, standardize=False))
        out.mean.copy_(projector.mean)
        out.linear.weight.copy_(Rt.T)
        out.linear.bias.zero_()
        return out.eval()
    out = copy.deepcopy(projector)
    layers = [out.linear] + ([out.mlp[-1]] if out.mlp is not None else [])
    for layer in layers:
        layer.weight.copy_(Rt.T @ layer.weight)
        layer.bias.copy_(layer.bias @ Rt)
    if out.cfg.kernel:  # the kernel branch's output is linear in its coefficients too
        out.kernel_coef.copy_(out.kernel_coef @ Rt)
    return out.eval()


def _same_anchor(a: "SpaceCore", b: "SpaceCore", m: str) -> bool:
    pa, pb = a.projectors[m], b.projectors[m]
    if a.identities.get(m) != b.identities.get(m) or a.encoders[m] != b.encoders[m] or pa.cfg != pb.cfg:
        return False
    sa, sb = pa.state_dict(), pb.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def merge_spaces(
    a: "SpaceCore",
    b: "SpaceCore",
    *,
    anchor: str | None = None,
    anchor_data: str | Path | Manifest | Sequence[str | Path | Manifest] | None = None,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
) -> "SpaceCore":
    """One space binding the modalities of ``a`` and ``b`` through their shared ``anchor`` (see the module doc).

    ``anchor``: the shared modality (default: the one both bind); ``anchor_data``: manifest(s) whose
    records hold anchor items (any split), needed unless both spaces embed the anchor identically.
    """
    from .manifests import as_manifests
    from .version import __version__

    shared = sorted(set(a.modalities) & set(b.modalities))
    if not shared:
        raise SpaceError(f"the spaces share no modality (A binds {', '.join(a.modalities)}; B binds "
                         f"{', '.join(b.modalities)}): merging needs an anchor modality both bind")
    if anchor is None:
        if len(shared) > 1:
            raise SpaceError(f"the spaces share {', '.join(shared)}: name the anchor to align on (anchor=, --anchor)")
        anchor = shared[0]
    elif anchor not in shared:
        raise SpaceError(f"anchor {anchor!r} is not bound in both spaces (shared: {', '.join(shared)})")
    if a.dim != b.dim:
        raise SpaceError(f"space A is {a.dim}-d and space B {b.dim}-d: only spaces of one width can be merged")
    if a.scorer.kind != "cosine" or b.scorer.kind != "cosine":
        raise SpaceError("a Symile (multilinear) space cannot be merged: both spaces must score by cosine")
    added = [m for m in b.modalities if m not in a.modalities]
    if not added:
        raise SpaceError(f"space B binds nothing space A does not ({', '.join(b.modalities)}): nothing to merge")
    entry: dict[str, Any] = {"event": "merge", "a": a.identity(), "b": b.identity(), "anchor": anchor,
                             "added": added, "kept_from_a": [m for m in shared if m != anchor]}
    if _same_anchor(a, b, anchor):
        R = np.eye(a.dim)
        entry["method"] = "exact"
    else:
        if anchor_data is None:
            raise SpaceError(
                f"the spaces embed the anchor {anchor!r} differently (encoders {a.encoders[anchor]} / "
                f"{b.encoders[anchor]}, projectors trained apart): give anchor items to align B to A "
                f"(anchor_data=, --anchor-data MANIFEST with a {anchor!r} field)")
        items_in = list(anchor_data) if isinstance(anchor_data, (list, tuple)) else [anchor_data]
        mans = as_manifests(items_in, [anchor], {anchor: a.encoders[anchor]}, strict, progress)
        items = list(dict.fromkeys(r.values[anchor] for man in mans for r in man.records if r.has(anchor)))
        where = ", ".join(str(m.path) for m in mans)
        if len(items) < 2:
            raise DataError(f"{where}: {len(items)} distinct {anchor!r} item(s); aligning the spaces needs at least 2")
        if len(items) < a.dim:
            log.warning("%s: %d anchor items for a %d-d space: the rotation is underdetermined; give more",
                        where, len(items), a.dim)
        fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        ea = a.embed(anchor, items, cache=fc, progress=progress)
        eb = b.embed(anchor, items, cache=fc, progress=progress)
        R = procrustes_rotation(eb, ea)
        aligned = eb @ R
        aligned /= np.maximum(np.linalg.norm(aligned, axis=1, keepdims=True), 1e-12)
        entry.update({
            "method": "procrustes",
            "anchor_items": len(items),
            "anchor_data": [{"manifest": str(man.path), "fingerprint": man.fingerprint([anchor]),
                             "records": len(man.records)} for man in mans],
            "alignment": {"cosine_before": round(float((ea * eb).sum(1).mean()), 4),
                          "cosine_after": round(float((ea * aligned).sum(1).mean()), 4)},
        })
    projectors = {m: copy.deepcopy(p) for m, p in a.projectors.items()}
    for m in added:
        projectors[m] = copy.deepcopy(b.projectors[m]).eval() if entry["method"] == "exact" else rotated(b.projectors[m], R)
    info = copy.deepcopy(a.info)
    info.setdefault("lineage", []).append({**entry, "b_lineage": copy.deepcopy(b.info.get("lineage", [])),
                                           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anybind": __version__})
    out = a.derived({**a.encoders, **{m: b.encoders[m] for m in added}}, projectors, a.logit_scale,
                     identities={**a.identities, **{m: b.identities[m] for m in added if m in b.identities}},
                     config=copy.deepcopy(a.config), info=info, format_version=min(a.format_version, b.format_version))
    return carry_vocabulary(a, out, cache=cache)  # A's modalities are A's: its vocabulary stays

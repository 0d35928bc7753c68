"""Training-free alignment in a low-dimensional subspace ("Escaping Plato's Cave").

Both methods start from each modality's standardised features reduced by PCA
(fitted on the training split) and produce plain linear projectors, so the
result is an ordinary :class:`~anybind.space.Space`: saved, loaded, evaluated
and indexed like a trained one.

* ``procrustes``: the orthogonal map ``R = argmin ||Z_m R - Z_anchor||`` (SVD
  of ``Z_m^T Z_anchor``), i.e. rotate one modality's PCA coordinates onto the
  anchor's.
* ``cca``: canonical correlation analysis between the anchor and the
  modality with the most pairs (ridge-regularised covariances); every further
  modality is mapped onto the anchor's canonical space by ridge regression.

The subspace dimension is chosen on the validation split from ``dims``
(unless one ``dim`` is given).  Only a few hundred pairs and seconds of CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .encoders.video import temporal_frames
from .errors import DataError, EncoderError
from .metrics import pair_recalls
from .projectors import Projector, ProjectorConfig


def _std(x: np.ndarray) -> tuple[np.ndarray, float]:
    mean = x.mean(0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(1).mean() / x.shape[1])) or 1.0
    return mean, scale


def _pca(x: np.ndarray, k: int, memo: dict | None = None, key=None) -> np.ndarray:
    """Top-k principal directions (d, k) of centred data.

    ``memo[key]`` keeps the full SVD basis, so trying several ``k`` on the same
    data (the dimension search) decomposes it once.
    """
    if memo is not None and key in memo:
        vt = memo[key]
    else:
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        if memo is not None:
            memo[key] = vt
    return vt[:k].T


def _key(name: str, idx: np.ndarray) -> tuple:
    return (name, len(idx), hash(np.ascontiguousarray(idx).tobytes()))


def _inv_sqrt(c: np.ndarray, eps: float) -> np.ndarray:
    w, v = np.linalg.eigh(c + eps * np.eye(len(c)))
    return (v / np.sqrt(np.clip(w, 1e-12, None))) @ v.T


class _Linear:
    """x -> ((x - mean) / scale) @ W  (W: d x k)."""

    def __init__(self, mean: np.ndarray, scale: float, W: np.ndarray):
        self.mean, self.scale, self.W = mean, scale, W

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = ((x - self.mean) / self.scale) @ self.W
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def projector(self) -> Projector:
        d, k = self.W.shape
        p = Projector(ProjectorConfig(in_dim=d, out_dim=k, kind="linear", dropout=0.0, input_dropout=0.0))
        with torch.no_grad():
            p.mean.copy_(torch.from_numpy(self.mean.astype(np.float32)))
            p.scale.fill_(self.scale)
            p.linear.weight.copy_(torch.from_numpy(self.W.T.astype(np.float32)))
            p.linear.bias.zero_()
        return p


def _fit_maps(fs, train, anchor: str, mods: list[str], method: str, k: int, eps: float, memo: dict | None = None) -> dict[str, _Linear]:
    stats = {}
    for m in mods:
        tr = train[fs.rows[m][train] >= 0]
        stats[m] = _std(fs.get(m, tr))
    maps: dict[str, _Linear] = {}
    others = [m for m in mods if m != anchor]
    counts = {m: len(fs.with_pair(train, m, anchor)) for m in others}
    if method == "procrustes":
        ta = train[fs.rows[anchor][train] >= 0]
        Xa = (fs.get(anchor, ta) - stats[anchor][0]) / stats[anchor][1]
        Pa = _pca(Xa, k, memo, _key(anchor, ta))
        maps[anchor] = _Linear(stats[anchor][0], stats[anchor][1], Pa)
        for m in others:
            sel = fs.with_pair(train, m, anchor)
            Xm = (fs.get(m, sel) - stats[m][0]) / stats[m][1]
            Pm = _pca(Xm, min(k, len(sel) - 1, Xm.shape[1]), memo, _key(m, sel))
            if Pm.shape[1] < k:  # too few pairs for k dims: pad with zero directions
                Pm = np.pad(Pm, ((0, 0), (0, k - Pm.shape[1])))
            Zm = Xm @ Pm
            Za = ((fs.get(anchor, sel) - stats[anchor][0]) / stats[anchor][1]) @ Pa
            u, _, vt = np.linalg.svd(Zm.T @ Za)
            maps[m] = _Linear(stats[m][0], stats[m][1], Pm @ (u @ vt))
        return maps
    # CCA with the best-paired modality, ridge onto the anchor's canonical space for the rest
    first = max(others, key=lambda m: counts[m])
    sel = fs.with_pair(train, first, anchor)
    Xa = (fs.get(anchor, sel) - stats[anchor][0]) / stats[anchor][1]
    Xm = (fs.get(first, sel) - stats[first][0]) / stats[first][1]
    kp = min(2 * k, len(sel) - 1, Xa.shape[1], Xm.shape[1])
    Pa, Pm = _pca(Xa, kp, memo, _key("cca:" + anchor, sel)), _pca(Xm, kp, memo, _key("cca:" + first, sel))
    Za, Zm = Xa @ Pa, Xm @ Pm
    Za0, Zm0 = Za - Za.mean(0), Zm - Zm.mean(0)
    n = len(sel)
    Caa, Cmm, Cam = Za0.T @ Za0 / n, Zm0.T @ Zm0 / n, Za0.T @ Zm0 / n
    eps_a, eps_m = eps * np.trace(Caa) / kp, eps * np.trace(Cmm) / kp
    Wa, Wm = _inv_sqrt(Caa, eps_a), _inv_sqrt(Cmm, eps_m)
    u, s, vt = np.linalg.svd(Wa @ Cam @ Wm)
    kk = min(k, len(s))
    maps[anchor] = _Linear(stats[anchor][0], stats[anchor][1], Pa @ Wa @ u[:, :kk])
    maps[first] = _Linear(stats[first][0], stats[first][1], Pm @ Wm @ vt.T[:, :kk])
    for m in others:
        if m == first:
            continue
        sel = fs.with_pair(train, m, anchor)
        Xm = (fs.get(m, sel) - stats[m][0]) / stats[m][1]
        target = ((fs.get(anchor, sel) - stats[anchor][0]) / stats[anchor][1]) @ maps[anchor].W
        lam = eps * np.trace(Xm.T @ Xm) / Xm.shape[1] + 1e-6
        W = np.linalg.solve(Xm.T @ Xm + lam * np.eye(Xm.shape[1]), Xm.T @ target)
        maps[m] = _Linear(stats[m][0], stats[m][1], W)
    return maps


def _val(fs, maps, idx, anchor, mods) -> float:
    scores = []
    for m in mods:
        if m == anchor:
            continue
        sel = fs.with_pair(idx, m, anchor)
        if len(sel) < 2:
            continue
        fa, fb = fs.get(m, sel), fs.get(anchor, sel)
        a, b = maps[m](fa), maps[anchor](fb)
        for q, g, kq, kg in ((a, b, fa, fb), (b, a, fb, fa)):
            r = pair_recalls(q, g, query_keys=kq, gallery_keys=kg)
            scores.append((r["R@1"] + r["R@5"] + r["R@10"]) / 3)
    return float(np.mean(scores)) if scores else float("nan")


#: the options :func:`fit_training_free` takes (``Space.fit(method="procrustes" | "cca")`` refuses any other)
TRAINING_FREE_OPTIONS = ("anchor", "dim", "dims", "ridge", "seed")


def fit_training_free(
    fs,
    *,
    method: str = "procrustes",
    anchor: str | None = None,
    dim: int | None = None,
    dims: Sequence[int] = (16, 32, 64, 128, 256),
    ridge: float = 0.1,
    seed: int = 0,
):
    """Fit a Procrustes or CCA space from a :class:`~anybind.featureset.FeatureSet` (no gradient steps).

    A building block below the public class: it returns a :class:`~anybind.space_core.SpaceCore`.  Users call
    ``Space.from_features(fs, method="procrustes")`` (or ``Space.fit(..., method="procrustes")``), which hands
    out the public :class:`anybind.Space`."""
    from .space_core import SpaceCore

    mods = fs.modalities
    if len(mods) < 2:
        raise DataError("training-free alignment needs at least two modalities")
    if temporal := [m for m in mods if temporal_frames(fs.specs.get(m, ""))]:
        raise DataError(f"{', '.join(temporal)}: a pool=attn video spec has a learnt frame pooling; "
                        f"{method} is training-free: use pool=mean, or fit with init='ridge'")
    anchor = anchor or ("text" if "text" in mods else mods[0])
    if anchor not in mods:
        raise DataError(f"anchor {anchor!r} is not among the modalities {mods}")
    train, val = fs.split_idx("train"), fs.split_idx("val")
    for m in mods:
        if m != anchor and len(fs.with_pair(train, m, anchor)) < 3:
            raise DataError(f"{method}: modality {m!r} has fewer than 3 training pairs with the anchor {anchor!r}")
    max_k = min(min(fs.feats[m].shape[1] for m in mods), max(len(fs.with_pair(train, m, anchor)) for m in mods if m != anchor) - 1)
    cands = [dim] if dim else [k for k in dims if k <= max_k] or [max_k]
    scored = []
    memo: dict = {}  # one SVD per modality, shared by every candidate dimension
    for k in cands:
        maps = _fit_maps(fs, train, anchor, mods, method, k, ridge, memo)
        scored.append((_val(fs, maps, val, anchor, mods) if len(val) else 0.0, k, maps))
    score, k, maps = max(scored, key=lambda t: (np.nan_to_num(t[0], nan=-1), -t[1]))
    # every projector must share one output width (CCA can return fewer than k canonical directions)
    width = min(mp.W.shape[1] for mp in maps.values())
    for mp in maps.values():
        mp.W = mp.W[:, :width]
    projectors = {m: maps[m].projector() for m in mods}
    space = SpaceCore(
        fs.specs,
        projectors,
        float(np.log(1 / 0.05)),
        identities=fs.identities,
        config={"method": method, "anchor": anchor, "dim": width, "ridge": ridge, "dims_tried": list(cands)},
    )
    space.info["training"] = {
        "val_score_by_dim": {str(kk): (None if np.isnan(s) else s) for s, kk, _ in scored},
        "chosen_dim": width,
        "train_records": int(len(train)),
    }
    return space


def bridge_space(image_spec: str = "image:efficientnet-lite0+bridge", text_spec: str | None = None):
    """The training-free label-bridge space: images by their bridge vector, texts as they are.

    No paired data at all: an image is scored against a caption by the cosine
    between the caption's embedding and the image's class-name mixture.  The
    baseline every trained image<->text space should beat.  ``text_spec`` defaults to the text encoder the
    bridge maps into (``text:minilm`` for a bare ``+bridge``, ``<text spec>`` for ``+bridge(<text spec>)``).

    A building block below the public class: it returns a :class:`~anybind.space_core.SpaceCore`.  Users call
    ``Space.label_bridge(...)``, which hands out the public :class:`anybind.Space`.
    """
    from .encoders.registry import get_encoder
    from .encoders.bridge import SUFFIX, bridge_text
    from .space_core import SpaceCore

    target = bridge_text(image_spec)
    if target is None:
        raise EncoderError(f"bridge_space needs a '{SUFFIX}' image encoder, got {image_spec!r}")
    text_spec = text_spec or target
    img, txt = get_encoder(image_spec), get_encoder(text_spec)
    if img.text_encoder.spec != txt.spec:
        raise EncoderError(f"{image_spec} bridges into {img.text_encoder.spec}, not {text_spec}")
    d_base, d_txt = img.base_encoder.dim, txt.dim
    p_img = Projector(ProjectorConfig(in_dim=img.dim, out_dim=d_txt, kind="linear", dropout=0, input_dropout=0, standardize=False))
    with torch.no_grad():
        p_img.linear.weight.zero_()
        p_img.linear.weight[:, d_base:] = torch.eye(d_txt)
        p_img.linear.bias.zero_()
    p_txt = Projector(ProjectorConfig(in_dim=d_txt, out_dim=d_txt, kind="identity", standardize=False))
    with torch.no_grad():  # unused by an identity projector, but saved and hashed: zero, not random (one identity)
        p_txt.linear.weight.zero_()
        p_txt.linear.bias.zero_()
    return SpaceCore(
        {"image": image_spec, "text": text_spec},
        {"image": p_img, "text": p_txt},
        identities={"image": img.identity, "text": txt.identity},
        config={"method": "label-bridge"},
    )

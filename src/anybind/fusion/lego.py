"""Merging fusion heads trained apart into one model over every modality (MM-Lego's LegoMerge), and
fine-tuning the merged model briefly on paired records (LegoFuse).

MM-Lego (Hemker et al., 2024) wraps each single-modality model in a block with a shared latent, merges
the blocks (mean, sum or harmonic mean of their latents) and the heads, and optionally fine-tunes
the merged model for a few epochs.  In anybind the shared latent is the space itself: every head
reads projected unit vectors of the same width.  :func:`merge_fusion` takes ``late`` fusion heads
bound to one space and one label, each over its own modalities (one modality, or a subset), and
builds one :class:`~anybind.fusion.FusionClassifier` (or regressor) of kind ``late`` over all of
them, by stacking the blocks:

* head ``i``'s branch weights fill rows ``[o_i, o_i + H_i)`` of its modalities' branches in the
  merged model (zeros elsewhere, so ``GELU(0) = 0`` leaves the other blocks empty), and one more row
  per head is a constant unit (zero weight, bias ``c``: ``GELU(c)`` whenever one of the head's
  modalities is present);
* the merged head reads each block through the head's own weights and its bias through the
  constant unit.

Late fusion averages the branch outputs of the present modalities, so on a record the merged model
outputs ``sum_i (n_i / n) * out_i``, where ``out_i`` is head ``i``'s own output given its present
modalities, ``n_i`` how many of them are present and ``n`` how many in all: on one head's
modalities alone the merged model is that head (up to float rounding), on several it is the mean
of the heads' outputs (logits, or standardised predictions rescaled to the first head's target
scale), each weighted by how many of the present modalities it reads.  Heads may know different
classes (a rare modality's head trained on fewer records): the merged model predicts their union,
and a head's logit for a class it never saw is the mean of its other logits (neutral; given that
head's modalities alone, the merged model still predicts that head's class).  Missing modalities are
handled as any late model handles them (the mean over the present ones); the merged model has no
reconstruction decoder.  :func:`lego_fuse` then fine-tunes every weight (the blocks may now mix) on
records holding several modalities, with the number of epochs (0 included) chosen on val.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.manifest import Manifest
from ..errors import DataError, SpaceError
from .base import FusionModel
from .net import FusionNet
from ..wording import counted

log = logging.getLogger(__name__)

#: bias of each head's constant unit in the merged branches (GELU(3) ~ 2.996: well away from 0)
CONSTANT = 3.0


def _name(model: FusionModel, i: int, names: Sequence[str] | None) -> str:
    return str(names[i]) if names is not None else f"head {i + 1} ({'+'.join(model.modalities)})"


def check_mergeable(models: Sequence[FusionModel], names: Sequence[str] | None = None) -> None:
    """Refuse, in one line naming the head, what cannot be merged: fewer than two heads, an
    unfitted one, different spaces, tasks, labels or regression losses, a kind other than ``late``,
    or a modality read by two heads.  Heads that know different classes of the label merge (over
    the union of their classes, see :func:`merge_fusion`)."""
    if len(models) < 2:
        raise DataError(f"merging needs at least two fusion heads, got {len(models)}")
    first = models[0]
    n0 = _name(first, 0, names)
    seen: dict[str, str] = {}
    for i, m in enumerate(models):
        n = _name(m, i, names)
        if m.net is None:
            raise DataError(f"{n}: not fitted; train it (fit or anybind fuse train) before merging")
        if m.space.identity() != first.space.identity():
            raise SpaceError(f"{n} is bound to space {m.space.identity()}, {n0} to {first.space.identity()}: "
                             "heads merge only over one space")
        if m.task != first.task:
            raise DataError(f"{n} is a {m.task} model, {n0} a {first.task} one: merge heads of one task")
        if m.label_key != first.label_key:
            raise DataError(f"{n} predicts label {m.label_key!r}, {n0} {first.label_key!r}: merge heads of one label")
        if getattr(m, "loss", None) != getattr(first, "loss", None):
            raise DataError(f"{n} was trained with loss {m.loss!r}, {n0} with {first.loss!r}")
        if m.kind != "late":
            raise DataError(f"{n} is a {m.kind!r} fusion model; merging stacks 'late' heads only "
                            "(train each with kind='late', anybind fuse train --kind late)")
        for mod in m.modalities:
            if mod in seen:
                raise DataError(f"modality {mod!r} is read by both {seen[mod]} and {n}: merge heads over disjoint modalities")
            seen[mod] = n


def head_temperatures(models: Sequence[FusionModel], val: Sequence[Any], cache=None) -> list[float]:
    """Per classifier head, the temperature (0.25-8, a log grid) that minimises its cross-entropy on
    the ``val`` records holding its modalities (1.0 for a head no val record holds, with a warning)."""
    grid = torch.exp(torch.linspace(math.log(0.25), math.log(8.0), 49))
    out = []
    for m in models:
        recs = m._usable_for_val([r for r in val if any(x in r.values for x in m.modalities)])
        if not recs:
            log.warning("no val record holds %s with a class it knows: its temperature stays 1", "+".join(m.modalities))
            out.append(1.0)
            continue
        X, mask = m.branch_inputs(recs, cache)
        logits, y = torch.from_numpy(m._outputs(X, mask)), torch.from_numpy(m._targets(recs))
        nll = torch.stack([F.cross_entropy(logits / t, y) for t in grid])
        out.append(round(float(grid[int(nll.argmin())]), 4))
    return out


def merge_fusion(models: Sequence[FusionModel], *, names: Sequence[str] | None = None, calibrate: Sequence[Any] | None = None,
                 cache=None, dropout: float = 0.3, seed: int = 0) -> FusionModel:
    """One ``late`` fusion model over the modalities of every head in ``models`` (LegoMerge, see the
    module's docstring): on one head's modalities it predicts what that head predicts; on several,
    the heads' outputs averaged by how many present modalities each reads.  ``names`` name the
    heads in refusals and in ``merged_from`` (their folders, say).  ``calibrate`` (val records,
    classifiers only): divide each head's logits by its temperature on them
    (:func:`head_temperatures`) before averaging, so that a confident but often wrong head does not
    outvote the others; given one head's modalities the merged model still predicts that head's
    class.  ``dropout`` and ``seed`` are the merged model's modality dropout and seed for
    :func:`lego_fuse`.  The merged model records its sources (identities, modalities, temperatures)
    in ``merged_from_``, saved with it."""
    check_mergeable(models, names)
    first = models[0]
    if calibrate is not None and first.task != "classification":
        raise ValueError("calibrate (temperatures on val) applies to classifiers; a regressor's heads merge as they are")
    if calibrate is not None and not len(calibrate):
        raise DataError("calibrate: no val records to fit the heads' temperatures on (None merges them as they are)")
    temps = head_temperatures(models, calibrate, cache) if calibrate is not None else [1.0] * len(models)
    for i, m in enumerate(models):
        if m.reconstruct and len(m.modalities) > 1:
            log.warning("%s fills absent modalities with its decoder; the merged model has none, so on part of its "
                        "modalities it predicts from those present only", _name(m, i, names))
    mods = [mod for m in models for mod in m.modalities]
    hidden = sum(m.hidden + 1 for m in models)
    extra = {"loss": first.loss} if first.task == "regression" else {}
    merged = type(first)(first.space, mods, kind="late", hidden=hidden, reconstruct=False, balance=None,
                         dropout=dropout, seed=seed, **extra)
    merged.label_key = first.label_key
    if first.task == "classification":
        merged.classes_ = sorted({c for m in models for c in m.classes_})
    else:
        merged.target_mean_, merged.target_std_ = first.target_mean_, first.target_std_
    torch.manual_seed(seed)
    net = FusionNet(len(mods), first.space.dim, merged._n_out(), "late", hidden)
    unit = float(F.gelu(torch.tensor(CONSTANT)))
    with torch.no_grad():
        for p in (net.head.weight, net.head.bias, net.missing):
            p.zero_()
        j, off = 0, 0
        for m, t in zip(models, temps):
            src = m._check_fitted()
            scale, shift = _rescale(m, merged)
            scale /= t
            rows = _class_rows(m, merged)
            H = m.hidden
            net.head.weight[:, off : off + H] = rows @ src.head.weight * scale
            net.head.weight[:, off + H] = (rows @ src.head.bias * scale + shift) / unit
            for k in range(len(m.modalities)):
                br, sbr = net.branches[j][0], src.branches[k][0]
                br.weight.zero_()
                br.bias.zero_()
                br.weight[off : off + H] = sbr.weight
                br.bias[off : off + H] = sbr.bias
                br.bias[off + H] = CONSTANT
                uh, suh = net.uni_heads[j], src.uni_heads[k]
                uh.weight.zero_()
                uh.weight[:, off : off + H] = rows @ suh.weight * scale
                uh.bias.copy_(rows @ suh.bias * scale + shift)
                j += 1
            off += H + 1
    net.eval()
    merged.net = net
    merged.merged_from_ = {
        "method": "legomerge (stacked late heads; outputs averaged over the heads by present modalities)",
        "sources": [{"name": _name(m, i, names), "identity": m.identity(), "modalities": list(m.modalities),
                     "hidden": m.hidden, "temperature": t,
                     **({"classes_unseen": [c for c in merged.classes_ if c not in m.classes_]}
                        if m.task == "classification" else {})} for i, (m, t) in enumerate(zip(models, temps))],
        "calibrated_on_val": calibrate is not None,
        "fine_tune": None,
    }
    return merged


def _class_rows(m: FusionModel, merged: FusionModel) -> torch.Tensor:
    """(merged outputs, head outputs) matrix taking head ``m``'s outputs to the merged model's: its
    own classes where they are, and for a class it never saw the mean of its logits (neutral: it
    votes neither for nor against it, and its own argmax stays its argmax)."""
    if m.task != "classification":
        return torch.ones(1, 1)
    k = len(m.classes_)
    rows = torch.full((len(merged.classes_), k), 1.0 / k)
    for i, c in enumerate(merged.classes_):
        if c in m.classes_:
            rows[i] = 0.0
            rows[i, m.classes_.index(c)] = 1.0
    return rows


def _rescale(m: FusionModel, merged: FusionModel) -> tuple[float, float]:
    """(scale, shift) that turn head ``m``'s standardised output into the merged model's target
    scale (regression; 1, 0 for a classifier)."""
    if m.task != "regression":
        return 1.0, 0.0
    return m.target_std_ / merged.target_std_, (m.target_mean_ - merged.target_mean_) / merged.target_std_


def lego_fuse(model: FusionModel, data: Any, *, epochs: int = 20, lr: float = 5e-4, cache=None,
              val: Sequence[Any] | None = None, paired_only: bool = True) -> FusionModel:
    """LegoFuse: fine-tune a merged model (or any fitted fusion model) for up to ``epochs`` epochs on
    ``data`` (a manifest's train split, or records), every weight free, with modality dropout; the
    epoch, 0 (the model as merged) included, is chosen on ``val`` (the manifest's val split by
    default) by the fusion models' selection score.  ``paired_only``: train only on records holding
    at least two of the model's modalities (the small paired set the heads never saw together).
    Returns ``model``, fine-tuned in place; ``merged_from_["fine_tune"]`` records the run."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 to fine-tune, got {epochs}")
    model._check_fitted()
    records = model._records(data)
    if isinstance(data, (str, Path, Manifest)):
        train = [r for r in records if r.split == "train"]
        val = val if val is not None else [r for r in records if r.split == "val"]
    else:
        train = list(records)
    if paired_only:
        train = [r for r in train if sum(m in r.values for m in model.modalities) >= 2]
    if not train:
        raise DataError(f"no training record holds {'two' if paired_only else 'any'} of the modalities "
                        f"{', '.join(model.modalities)}: nothing to fine-tune on")
    if not val:
        log.warning("no val records: LegoFuse keeps the last of its %s (no selection)", counted(epochs, "epoch"))
    model.epochs, model.lr = int(epochs), float(lr)
    model.fit(train, model.label_key, cache=cache, val=val, warm_start=True)
    best = next((h["epoch"] for h in model.history_ if h.get("best")), model.history_[-1]["epoch"])
    trained = len(model._usable_for_val(train))  # fit leaves out (with a warning) a class the model does not know
    run = {"epochs": int(epochs), "best_epoch": int(best), "lr": float(lr), "records": trained,
           "val_records": len(val or []), "paired_only": bool(paired_only)}
    if model.merged_from_ is None:
        model.merged_from_ = {"method": "fine-tuned", "sources": [], "fine_tune": run}
    else:
        model.merged_from_ = {**model.merged_from_, "fine_tune": run}
    log.info("LegoFuse: best epoch %d of %d on %d paired records", best, epochs, trained)
    return model


def merge_summary(model: FusionModel) -> str:
    """One line on a merged model: its sources and fine-tune."""
    mf = model.merged_from_ or {}
    srcs = "; ".join(f"{s['name']} ({'+'.join(s['modalities'])}"
                     + (f", temperature {s['temperature']:g}" if mf.get("calibrated_on_val") else "") + ")"
                     for s in mf.get("sources", []))
    ft = mf.get("fine_tune")
    tail = (f"; LegoFuse: best epoch {ft['best_epoch']} of {ft['epochs']} on {ft['records']} records" if ft else
            "; not fine-tuned")
    return f"merged {len(mf.get('sources', []))} heads: {srcs}{tail}"

"""Scoring a fusion network: the forward with reconstruction, validation scores and epoch selection,
inference and evaluation per subset of present modalities.

:class:`FusionScorer` is a part of :class:`~anybind.fusion.base.FusionModel` (and of its trainer,
:mod:`.training`) given exactly what it works on: the fitted network, the modality names, whether the
model reconstructs absent modalities, and the task's hooks (:class:`TaskHooks`).  It holds no state of
its own and writes nothing back to the model."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .balance import full_outputs, shapley_values, subset_outputs
from .net import FusionNet


def subset_name(mods: Sequence[str]) -> str:
    return "+".join(mods)


@dataclass(frozen=True)
class TaskHooks:
    """What a fusion task (:mod:`.model`: classification, regression) defines, as the scorer and the
    trainer use it: the width of the output, the primary metric's name and its history key (``short``),
    the task loss's history key, and the loss, OGM confidence, metrics and epoch-selection functions."""

    n_out: int
    metric: str
    short: str
    loss_name: str
    loss: Callable[..., torch.Tensor]  # (out, y, reduction="mean") -> loss
    confidence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (out, y) -> per-item confidence in (0, 1]
    metrics: Callable[[np.ndarray, np.ndarray], dict[str, float]]  # (out, y) -> {metric: value}, primary first
    selection: Callable[[list[tuple[np.ndarray, np.ndarray]]], float]  # conditions -> epoch selection score


def forward(net: FusionNet, reconstruct: bool, x: torch.Tensor, mask: torch.Tensor,
            fill: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Outputs, the mask used, and the reconstructions (filled in where absent if ``fill`` and the
    model ``reconstruct``\\ s)."""
    rec = net.reconstruct(x, mask) if reconstruct else x
    if fill and reconstruct:
        x = torch.where(mask[..., None], x, rec.detach())
        mask = torch.ones_like(mask)
    return net.fuse(net.branch(x), mask), mask, rec


class FusionScorer:
    """Validation scores, inference and evaluation of ``net`` (see the module's docstring)."""

    def __init__(self, net: FusionNet, modalities: Sequence[str], reconstruct: bool, task: TaskHooks):
        self.net, self.modalities, self.reconstruct, self.task = net, list(modalities), bool(reconstruct), task

    def forward(self, x: torch.Tensor, mask: torch.Tensor, fill: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """See :func:`forward`."""
        return forward(self.net, self.reconstruct, x, mask, fill)

    def subset_outputs(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return subset_outputs(lambda idx, sub: self.forward(x[idx], sub, fill=True)[0], mask, self.task.n_out)

    @torch.no_grad()
    def val_scores(self, X: np.ndarray, mask: np.ndarray, y: np.ndarray):
        """All-modality score; per modality: unimodal-probe score, the fused model's score given
        that modality only, and the score of its Shapley mono-modal output (``None`` if absent);
        and the epoch selection score over the all-modality and single-modality conditions.
        Leaves the network in training mode (as the trainer, its main caller, wants it)."""
        net, task = self.net, self.task
        net.eval()
        x, m = torch.from_numpy(X), torch.from_numpy(mask)
        outs = self.subset_outputs(x, m)
        full = full_outputs(outs, m)
        score = task.metrics(full.numpy(), y)[task.metric]
        phi = shapley_values(outs, m)
        h = net.branch(x)
        uni: dict[str, float | None] = {}
        single: dict[str, float | None] = {}
        mono: dict[str, float | None] = {}
        conditions = [(full.numpy(), y)]
        for i, name in enumerate(self.modalities):
            sel = mask[:, i]
            if not sel.any():
                uni[name] = single[name] = mono[name] = None
                continue
            uni[name] = task.metrics(net.uni_heads[i](h[sel, i]).numpy(), y[sel])[task.metric]
            conditions.append((outs[1 << i][sel].numpy(), y[sel]))
            single[name] = task.metrics(*conditions[-1])[task.metric]
            mono[name] = task.metrics(phi[sel, i].numpy(), y[sel])[task.metric]
        net.train()
        return score, uni, single, mono, task.selection(conditions)

    @torch.no_grad()
    def outputs(self, X: np.ndarray, mask: np.ndarray, reconstruct: bool | None = None) -> np.ndarray:
        """The network's outputs (n, n_out), in batches; ``reconstruct=False`` uses the masked path even
        in a model that reconstructs (``None``: as the model does)."""
        net = self.net
        net.eval()
        fill = self.reconstruct if reconstruct is None else (reconstruct and self.reconstruct)
        out = []
        for s in range(0, len(X), 4096):
            o, _, _ = self.forward(torch.from_numpy(X[s : s + 4096]), torch.from_numpy(mask[s : s + 4096]), fill=fill)
            out.append(o.numpy())
        return np.concatenate(out) if out else np.zeros((0, self.task.n_out), np.float32)

    def by_subset(self, X: np.ndarray, mask: np.ndarray, y: np.ndarray, missing: str, metric: str,
                  reconstruct: bool | None) -> tuple[dict[str, Any], dict[str, int]]:
        """The scores and record counts of :meth:`FusionModel.evaluate <anybind.fusion.FusionModel.evaluate>`
        (its docstring says what ``missing`` and ``metric`` mean)."""
        metrics = self.task.metrics

        def score(out: np.ndarray, yy: np.ndarray):
            d = metrics(out, yy)
            if metric == "all":
                return d
            if metric not in d:
                raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(d)} or 'all'")
            return d[metric]

        nan = float("nan") if metric != "all" else {k: float("nan") for k in metrics(np.zeros((0, self.task.n_out)), y[:0])}
        if missing == "none":
            return {"available": score(self.outputs(X, mask, reconstruct), y)}, {"available": len(y)}
        if missing != "all-subsets":
            raise ValueError(f"unknown missing={missing!r}: use 'all-subsets' or 'none'")
        res: dict[str, Any] = {}
        cnt: dict[str, int] = {}
        M = len(self.modalities)
        for k in range(1, M + 1):
            for sub in itertools.combinations(range(M), k):
                name = subset_name([self.modalities[i] for i in sub])
                sel = mask[:, list(sub)].all(1)
                cnt[name] = int(sel.sum())
                if not sel.any():
                    res[name] = nan
                    continue
                m2 = np.zeros_like(mask[sel])
                m2[:, list(sub)] = True
                res[name] = score(self.outputs(X[sel] * m2[..., None], m2, reconstruct), y[sel])
        return res, cnt

"""The scoring half of :class:`~anybind.fusion.base.FusionModel`: validation scores and epoch
selection, inference, per-modality contributions and evaluation per subset of present modalities."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .balance import full_outputs, shapley_values
from .net import FusionNet


def subset_name(mods: Sequence[str]) -> str:
    return "+".join(mods)



class ScoringMixin:
    """Validation scoring, inference and evaluation for :class:`~anybind.fusion.base.FusionModel`
    (which holds the parameters, the inputs and the task hooks these use)."""

    def _selection(self, conditions: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Epoch selection score (higher is better) from (outputs, targets) of the all-modality
        condition and each single-modality one: the mean of their primary metric."""
        return float(np.mean([self._metrics(o, y)[self.metric] for o, y in conditions]))

    @torch.no_grad()
    def _val_scores(self, X: np.ndarray, mask: np.ndarray, y: np.ndarray):
        """All-modality score; per modality: unimodal-probe score, the fused model's score given
        that modality only, and the score of its Shapley mono-modal output (``None`` if absent);
        and the epoch selection score over the all-modality and single-modality conditions."""
        net = self._check_fitted()
        net.eval()
        x, m = torch.from_numpy(X), torch.from_numpy(mask)
        outs = self._subset_outputs(x, m)
        full = full_outputs(outs, m)
        score = self._metrics(full.numpy(), y)[self.metric]
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
            uni[name] = self._metrics(net.uni_heads[i](h[sel, i]).numpy(), y[sel])[self.metric]
            conditions.append((outs[1 << i][sel].numpy(), y[sel]))
            single[name] = self._metrics(*conditions[-1])[self.metric]
            mono[name] = self._metrics(phi[sel, i].numpy(), y[sel])[self.metric]
        net.train()
        return score, uni, single, mono, self._selection(conditions)

    # -- inference ----------------------------------------------------------
    def _check_fitted(self) -> FusionNet:
        if self.net is None:
            raise RuntimeError(f"this {type(self).__name__} is not fitted: call fit() or {type(self).__name__}.load()")
        return self.net

    @torch.no_grad()
    def _outputs(self, X: np.ndarray, mask: np.ndarray, reconstruct: bool | None = None) -> np.ndarray:
        net = self._check_fitted()
        net.eval()
        fill = self.reconstruct if reconstruct is None else (reconstruct and self.reconstruct)
        out = []
        for s in range(0, len(X), 4096):
            o, _, _ = self._forward(torch.from_numpy(X[s : s + 4096]), torch.from_numpy(mask[s : s + 4096]), fill=fill)
            out.append(o.numpy())
        return np.concatenate(out) if out else np.zeros((0, self._n_out()), np.float32)

    @torch.no_grad()
    def contributions(self, records: Any, *, cache=None) -> dict[str, float | None]:
        """Per-modality Shapley mono-modal score on ``records`` (each scored on the records that
        hold it): how well a modality's share of the fused output alone predicts the target."""
        self._check_fitted()
        recs = self._records(records)
        X, mask = self.branch_inputs(recs, cache)
        return self._val_scores(X, mask, self._targets(recs))[3]

    def evaluate(
        self,
        records: Any,
        missing: str = "all-subsets",
        *,
        cache=None,
        reconstruct: bool | None = None,
        counts: bool = False,
        metric: str | None = None,
    ):
        """A score per subset of modalities: ``{"image+text": value, ...}``.

        ``missing="all-subsets"``: every non-empty subset (2^M - 1 entries); each is scored on
        the records that hold all of its modalities, with only those modalities given (the
        others are hidden).  ``missing="none"``: one entry, each record with what it has.
        A record with none of the model's modalities is a DataError (filter them out first).
        A subset no record holds gets NaN.  ``metric``: the task's primary metric by default,
        another of its metrics by name, or ``"all"`` for ``{subset: {metric: value}}``.
        ``counts=True`` also returns the record counts.
        """
        self._check_fitted()
        recs = self._records(records)
        X, mask = self.branch_inputs(recs, cache)  # a record with none of the modalities: DataError
        y = self._targets(recs)
        metric = metric or self.metric

        def score(out: np.ndarray, yy: np.ndarray):
            d = self._metrics(out, yy)
            if metric == "all":
                return d
            if metric not in d:
                raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(d)} or 'all'")
            return d[metric]

        nan = float("nan") if metric != "all" else {k: float("nan") for k in self._metrics(np.zeros((0, self._n_out())), y[:0])}
        if missing == "none":
            res, cnt = {"available": score(self._outputs(X, mask, reconstruct), y)}, {"available": len(y)}
        elif missing == "all-subsets":
            res, cnt = {}, {}
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
                    res[name] = score(self._outputs(X[sel] * m2[..., None], m2, reconstruct), y[sel])
        else:
            raise ValueError(f"unknown missing={missing!r}: use 'all-subsets' or 'none'")
        return (res, cnt) if counts else res

"""Training a fusion network: modality dropout (and its schedule) and the training loop with
reconstruction, OGM / OGM-GE / AGM balancing and epoch selection on the validation records.

:class:`FusionTrainer` is a part of :class:`~anybind.fusion.base.FusionModel` given exactly what it
needs: the training settings (:class:`TrainSettings`, from the model's parameters), the modality names,
the width of the inputs and the task's hooks (:class:`~.scoring.TaskHooks`).  It trains a network it
makes (or the one it is given, to fine-tune) and returns it with the history; it sets nothing on the
model, which keeps both (:meth:`FusionModel.fit <anybind.fusion.FusionModel.fit>`).  Validation scores
come from a :class:`~.scoring.FusionScorer` over the network being trained."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .balance import RunningMean, agm_coefficients, ogm_coefficients, scale_grad, shapley_values
from .net import FusionNet
from .scoring import FusionScorer, TaskHooks


@dataclass(frozen=True)
class TrainSettings:
    """The parameters of a fusion model that decide its training (the model's ``params()`` less the
    modalities; see :class:`~anybind.fusion.FusionClassifier` for each)."""

    kind: str
    hidden: int
    epochs: int
    batch_size: int
    dropout: float
    dropout_schedule: str
    reconstruct: bool
    balance: str | None
    alpha: float
    full_weight: float
    lr: float
    weight_decay: float
    recon_weight: float
    optimizer: str
    seed: int

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> TrainSettings:
        """The settings among ``params`` (a model's ``params()``; other keys are left out)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})


def dropout_at(epoch: int, p: float, schedule: str, epochs: int) -> float:
    """Modality dropout probability in ``epoch`` (0-based) of ``epochs``: ``p`` (``constant``); ``ramp``
    0 -> p over the first half of training; ``anneal`` p -> 0 over the second half."""
    half = max(1, epochs // 2)
    if schedule == "ramp":
        return p * min(1.0, epoch / half)
    if schedule == "anneal":
        return p * min(1.0, max(0.0, (epochs - 1 - epoch) / half))
    return p


def drop_modalities(mask: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """Modality dropout: drop each present modality with prob p, keeping at least one."""
    if p <= 0:
        return mask
    drop = (torch.rand(mask.shape, generator=g) < p) & mask
    kept = mask & ~drop
    none = ~kept.any(1)
    if none.any():
        # keep one random originally-present modality of each fully dropped row
        r = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
        pick = F.one_hot(r.argmax(1), mask.shape[1]).bool()
        kept = torch.where(none[:, None], pick, kept)
    return kept


class FusionTrainer:
    """The training loop of a fusion model (see the module's docstring)."""

    def __init__(self, settings: TrainSettings, modalities: Sequence[str], dim: int, task: TaskHooks):
        self.s, self.modalities, self.dim, self.task = settings, list(modalities), int(dim), task

    def train(self, X, mask, y, Xv, mv, yv, on_epoch: Callable[[dict[str, Any]], None] | None = None,
              net: FusionNet | None = None) -> tuple[FusionNet, list[dict[str, Any]]]:
        """Train on (X, mask, y), each epoch scored on (Xv, mv, yv) when given, the best epoch's weights kept;
        returns the network and the history (one record per epoch, passed to ``on_epoch`` as it ends).
        ``net``: continue training this network (a warm start: as it was, it competes as epoch 0)."""
        s, task = self.s, self.task
        torch.manual_seed(s.seed)
        g = torch.Generator().manual_seed(s.seed)
        M = len(self.modalities)
        warm = net is not None
        if net is None:
            net = FusionNet(M, self.dim, task.n_out, s.kind, s.hidden)
        scorer = FusionScorer(net, self.modalities, s.reconstruct, task)
        uni_params = list(net.uni_heads.parameters())
        main_params = [p for n_, p in net.named_parameters() if not n_.startswith("uni_heads.")]
        groups = [{"params": main_params}, {"params": uni_params, "weight_decay": 0.0}]
        if s.optimizer == "sgd":  # as in the OGM-GE and AGM papers: Adam normalises much of a gradient scale away
            opt = torch.optim.SGD(groups, lr=s.lr, momentum=0.9, weight_decay=s.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=s.lr, weight_decay=s.weight_decay)
        Xt, mt, yt = torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(y)
        n = len(yt)
        best, best_state, best_epoch = -math.inf, None, 0
        running = RunningMean(M)
        history: list[dict[str, Any]] = []
        if warm and Xv is not None:  # the network as it was competes as epoch 0
            score, uni_s, single, mono_s, best = scorer.val_scores(Xv, mv, yv)
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            history.append({"epoch": 0, f"val_{task.short}": score, f"val_single_{task.short}": single,
                            "contribution": uni_s, "shapley": mono_s, "val_select": best})
        for epoch in range(s.epochs):
            net.train()
            p_drop = dropout_at(epoch, s.dropout, s.dropout_schedule, s.epochs)
            perm = torch.randperm(n, generator=g)
            tot = {"loss": 0.0, "task": 0.0, "recon": 0.0}
            outs, ys = [], []
            ratio_acc, coeff_acc, nb = torch.zeros(M), torch.zeros(M), torch.zeros(M)
            mono_acc, nmono = torch.zeros(M), torch.zeros(M)
            nbatches = 0
            for s0 in range(0, n, s.batch_size):
                b = perm[s0 : s0 + s.batch_size]
                xb, mb, yb = Xt[b], mt[b], yt[b]
                kept = drop_modalities(mb, g, p_drop)
                if s.balance == "agm":
                    out, ratios, coeffs, mono = self._agm_outputs(scorer, xb, kept, yb, running)
                    rec = net.reconstruct(xb, kept) if s.reconstruct else xb
                    ok = ~torch.isnan(mono)
                    mono_acc[ok] += mono[ok]
                    nmono[ok] += 1
                else:
                    out, _, rec = scorer.forward(xb, kept, fill=True)
                task_loss = task.loss(out, yb)
                loss = task_loss
                if s.full_weight > 0 and p_drop > 0:
                    # the all-modality path sees every batch whole as well as dropped
                    loss = loss + s.full_weight * task.loss(scorer.forward(xb, mb, fill=True)[0], yb)
                recon = torch.zeros(())
                if s.reconstruct:
                    target = mb & ~kept  # dropped modalities: known truth, hidden from the input
                    if target.any():
                        recon = (1 - (rec * xb).sum(-1))[target].mean()
                        loss = loss + s.recon_weight * recon
                # unimodal probes on detached branch outputs of every originally present modality
                h = net.branch(xb).detach()
                uni = torch.stack([head(h[:, i]) for i, head in enumerate(net.uni_heads)], dim=1)  # (B, M, n_out)
                yM = yb[:, None].expand(-1, M)
                uni_loss = task.loss(uni[mb], yM[mb])
                opt.zero_grad()
                (loss + uni_loss).backward()
                if s.balance in ("ogm", "ogm-ge"):
                    with torch.no_grad():
                        conf = task.confidence(uni, yM)
                        cnt = mb.float().sum(0)
                        scores = torch.where(cnt > 0, (conf * mb).sum(0) / cnt.clamp_min(1), torch.full((M,), float("nan")))
                        ratios, coeffs = ogm_coefficients(scores, s.alpha)
                    self._modulate_branches(net, coeffs, g)
                if s.balance is not None:
                    ok = ~torch.isnan(ratios)
                    ratio_acc[ok] += ratios[ok]
                    coeff_acc += coeffs
                    nb[ok] += 1
                opt.step()
                nbatches += 1
                tot["loss"] += float(loss.detach()) * len(b)
                tot["task"] += float(task_loss.detach()) * len(b)
                tot["recon"] += float(recon.detach()) * len(b)
                outs.append(out.detach().numpy())
                ys.append(yb.numpy())
            ep: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": tot["loss"] / n,
                task.loss_name: tot["task"] / n,
                "recon": tot["recon"] / n,
                f"train_{task.short}": task.metrics(np.concatenate(outs), np.concatenate(ys))[task.metric],
                "dropout": p_drop,
            }
            if s.balance is not None:
                tag = "agm" if s.balance == "agm" else "ogm"
                ep[f"{tag}_ratio"] = {m: (float(ratio_acc[i] / nb[i]) if nb[i] else None) for i, m in enumerate(self.modalities)}
                ep[f"{tag}_coeff"] = {m: float(coeff_acc[i] / nbatches) for i, m in enumerate(self.modalities)}
            if s.balance == "agm":
                ep["agm_mono_loss"] = {m: (float(mono_acc[i] / nmono[i]) if nmono[i] else None) for i, m in enumerate(self.modalities)}
            if Xv is not None:
                score, uni_s, single, mono_s, sel = scorer.val_scores(Xv, mv, yv)
                ep[f"val_{task.short}"] = score
                ep[f"val_single_{task.short}"] = single
                ep["contribution"] = uni_s
                ep["shapley"] = mono_s
                # select for robustness: the all-modality condition and every single-modality one
                # count alike (the task's selection); ties go to the later epoch
                ep["val_select"] = sel
                if sel >= best:
                    best, best_state, best_epoch = sel, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch + 1
            history.append(ep)
            if on_epoch is not None:
                on_epoch(ep)
        if best_state is not None:
            net.load_state_dict(best_state)
            for h_ in history:
                h_["best"] = h_["epoch"] == best_epoch
        net.eval()
        return net, history

    def _agm_outputs(self, scorer: FusionScorer, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor,
                     running: RunningMean):
        """AGM: the fused output as the sum of the Shapley mono-modal outputs (each subset's output
        by masking), each passed through a gradient scale from :func:`agm_coefficients`.
        Returns (output, ratios, coefficients, mono-modal losses); updates ``running``."""
        M = len(self.modalities)
        phi = shapley_values(scorer.subset_outputs(x, mask), mask)  # (B, M, n_out)
        mono = torch.full((M,), float("nan"))
        for i in range(M):
            if mask[:, i].any():
                mono[i] = self.task.loss(phi[mask[:, i], i], y[mask[:, i]]).detach()
        ratios, coeffs = agm_coefficients(mono, running.value, self.s.alpha)
        running.update(mono)
        out = sum(scale_grad(phi[:, i], float(coeffs[i])) for i in range(M))
        return out, ratios, coeffs, mono

    def _modulate_branches(self, net: FusionNet, coeffs: torch.Tensor, g: torch.Generator) -> None:
        """OGM: scale a dominant modality's branch gradients (+ Gaussian noise for OGM-GE)."""
        for i, br in enumerate(net.branches):
            if coeffs[i] >= 1:
                continue
            for prm in br.parameters():
                if prm.grad is None:
                    continue
                gr = prm.grad * coeffs[i]
                if self.s.balance == "ogm-ge":
                    noise = torch.randn(prm.grad.shape, generator=g) * (prm.grad.std().item() + 1e-8)
                    gr = gr + noise * (1 - coeffs[i])  # noise as strong as the modulation
                prm.grad = gr

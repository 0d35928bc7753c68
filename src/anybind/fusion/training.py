"""The training half of :class:`~anybind.fusion.base.FusionModel`: modality dropout (and its
schedule), the forward with reconstruction, ``fit`` and the training loop with OGM / OGM-GE / AGM
balancing and epoch selection on the validation records (scored by :mod:`.scoring`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..cache import FeatureCache
from ..data.manifest import Manifest, Record
from ..errors import DataError
from ..loop import training_threads
from .balance import RunningMean, agm_coefficients, ogm_coefficients, scale_grad, shapley_values, subset_outputs
from .net import FusionNet

log = logging.getLogger(__name__)


class TrainingMixin:
    """Dropout, forward and training for :class:`~anybind.fusion.base.FusionModel` (which holds
    the parameters, the inputs and the task hooks these use)."""

    # -- training -----------------------------------------------------------
    def _dropout_at(self, epoch: int) -> float:
        """Modality dropout probability in ``epoch`` (0-based): constant; ``ramp`` 0 -> p over the
        first half of training; ``anneal`` p -> 0 over the second half."""
        half = max(1, self.epochs // 2)
        if self.dropout_schedule == "ramp":
            return self.dropout * min(1.0, epoch / half)
        if self.dropout_schedule == "anneal":
            return self.dropout * min(1.0, max(0.0, (self.epochs - 1 - epoch) / half))
        return self.dropout

    def _drop(self, mask: torch.Tensor, g: torch.Generator, p: float | None = None) -> torch.Tensor:
        """Modality dropout: drop each present modality with prob p, keeping at least one."""
        p = self.dropout if p is None else p
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

    def _forward(self, x: torch.Tensor, mask: torch.Tensor, fill: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Outputs, the mask used, and the reconstructions (filled in where absent if ``fill``)."""
        assert self.net is not None
        rec = self.net.reconstruct(x, mask) if self.reconstruct else x
        if fill and self.reconstruct:
            x = torch.where(mask[..., None], x, rec.detach())
            mask = torch.ones_like(mask)
        return self.net.fuse(self.net.branch(x), mask), mask, rec

    def _subset_outputs(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        return subset_outputs(lambda idx, sub: self._forward(x[idx], sub, fill=True)[0], mask, self._n_out())

    def fit(self, data: Any, label_key: str, *, cache: FeatureCache | str | Path | None = None,
            val: Sequence[Record] | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
            warm_start: bool = False):
        """Train on the ``train`` split (a manifest) or on every given record; select the best
        epoch on ``val`` (the manifest's val split by default, when it has one) by the mean of the
        all-modality score and every single-modality score.  ``on_epoch`` gets each epoch's
        history record (losses, val scores, per-modality contributions and coefficients).

        ``warm_start=True`` continues from the fitted network (fine-tuning, e.g. LegoFuse of a merged
        model): the classes or target scale stay as they are (a training record of a class the model
        does not know is left out, with a warning; one without the label is refused, as by a fresh
        fit), and the network as it was competes as epoch 0 on ``val``."""
        records = self._records(data)
        if isinstance(data, (str, Path, Manifest)):
            train = [r for r in records if r.split == "train"]
            val = val if val is not None else [r for r in records if r.split == "val"]
        else:
            train = records
        train = [r for r in train if any(m in r.values for m in self.modalities)] or train
        if not train:
            raise DataError("no training records")
        if warm_start:
            self._check_fitted()
            if label_key != self.label_key:
                raise DataError(f"this model predicts label {self.label_key!r}, not {label_key!r}: fine-tune it on its own label")
            self._raw_labels(train)  # a record without the label is refused, named, as by a fresh fit
            usable = self._usable_for_val(train)
            if len(usable) < len(train):
                kept = {id(r) for r in usable}
                left = [r for r in train if id(r) not in kept]
                named = ", ".join(f"{r.id!r} ({r.labels[label_key]!r})" for r in left[:10])
                log.warning("fine-tuning leaves out %d training record(s) of a value of label %r the model does not "
                            "know: %s%s", len(left), label_key, named, " ..." if len(left) > 10 else "")
            train = usable
            if not train:
                raise DataError(f"no training record has a known value of label {label_key!r}")
            y = self._targets(train)
        else:
            self.label_key = label_key
            y = self._fit_targets(train)
        X, mask = self.branch_inputs(train, cache)
        Xv = mv = yv = None
        if val:
            val = self._usable_for_val([r for r in val if any(m in r.values for m in self.modalities)])
            if val:
                Xv, mv = self.branch_inputs(val, cache)
                yv = self._targets(val)
        with training_threads(1):  # a tiny network: more threads only spin (see anybind.loop)
            self._train(X, mask, y, Xv, mv, yv, on_epoch, warm=warm_start)
        return self

    def _train(self, X, mask, y, Xv, mv, yv, on_epoch=None, warm: bool = False) -> None:
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        M = len(self.modalities)
        if warm and self.net is not None:
            net = self.net
        else:
            self.net = net = FusionNet(M, self.space.dim, self._n_out(), self.kind, self.hidden)
        uni_params = list(net.uni_heads.parameters())
        main_params = [p for n_, p in net.named_parameters() if not n_.startswith("uni_heads.")]
        groups = [{"params": main_params}, {"params": uni_params, "weight_decay": 0.0}]
        if self.optimizer == "sgd":  # as in the OGM-GE and AGM papers: Adam normalises much of a gradient scale away
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        else:
            opt = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        Xt, mt, yt = torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(y)
        n = len(yt)
        best, best_state, best_epoch = -math.inf, None, 0
        running = RunningMean(M)
        self.history_ = []
        if warm and Xv is not None:  # the network as it was competes as epoch 0
            score, uni_s, single, mono_s, best = self._val_scores(Xv, mv, yv)
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            self.history_.append({"epoch": 0, f"val_{self.short}": score, f"val_single_{self.short}": single,
                                  "contribution": uni_s, "shapley": mono_s, "val_select": best})
        for epoch in range(self.epochs):
            net.train()
            p_drop = self._dropout_at(epoch)
            perm = torch.randperm(n, generator=g)
            tot = {"loss": 0.0, "task": 0.0, "recon": 0.0}
            outs, ys = [], []
            ratio_acc, coeff_acc, nb = torch.zeros(M), torch.zeros(M), torch.zeros(M)
            mono_acc, nmono = torch.zeros(M), torch.zeros(M)
            nbatches = 0
            for s in range(0, n, self.batch_size):
                b = perm[s : s + self.batch_size]
                xb, mb, yb = Xt[b], mt[b], yt[b]
                kept = self._drop(mb, g, p_drop)
                if self.balance == "agm":
                    out, ratios, coeffs, mono = self._agm_outputs(xb, kept, yb, running)
                    rec = net.reconstruct(xb, kept) if self.reconstruct else xb
                    ok = ~torch.isnan(mono)
                    mono_acc[ok] += mono[ok]
                    nmono[ok] += 1
                else:
                    out, _, rec = self._forward(xb, kept, fill=True)
                task = self._loss(out, yb)
                loss = task
                if self.full_weight > 0 and p_drop > 0:
                    # the all-modality path sees every batch whole as well as dropped
                    loss = loss + self.full_weight * self._loss(self._forward(xb, mb, fill=True)[0], yb)
                recon = torch.zeros(())
                if self.reconstruct:
                    target = mb & ~kept  # dropped modalities: known truth, hidden from the input
                    if target.any():
                        recon = (1 - (rec * xb).sum(-1))[target].mean()
                        loss = loss + self.recon_weight * recon
                # unimodal probes on detached branch outputs of every originally present modality
                h = net.branch(xb).detach()
                uni = torch.stack([head(h[:, i]) for i, head in enumerate(net.uni_heads)], dim=1)  # (B, M, n_out)
                yM = yb[:, None].expand(-1, M)
                uni_loss = self._loss(uni[mb], yM[mb])
                opt.zero_grad()
                (loss + uni_loss).backward()
                if self.balance in ("ogm", "ogm-ge"):
                    with torch.no_grad():
                        conf = self._confidence(uni, yM)
                        cnt = mb.float().sum(0)
                        scores = torch.where(cnt > 0, (conf * mb).sum(0) / cnt.clamp_min(1), torch.full((M,), float("nan")))
                        ratios, coeffs = ogm_coefficients(scores, self.alpha)
                    self._modulate_branches(coeffs, g)
                if self.balance is not None:
                    ok = ~torch.isnan(ratios)
                    ratio_acc[ok] += ratios[ok]
                    coeff_acc += coeffs
                    nb[ok] += 1
                opt.step()
                nbatches += 1
                tot["loss"] += float(loss.detach()) * len(b)
                tot["task"] += float(task.detach()) * len(b)
                tot["recon"] += float(recon.detach()) * len(b)
                outs.append(out.detach().numpy())
                ys.append(yb.numpy())
            ep: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": tot["loss"] / n,
                self.loss_name: tot["task"] / n,
                "recon": tot["recon"] / n,
                f"train_{self.short}": self._metrics(np.concatenate(outs), np.concatenate(ys))[self.metric],
                "dropout": p_drop,
            }
            if self.balance is not None:
                tag = "agm" if self.balance == "agm" else "ogm"
                ep[f"{tag}_ratio"] = {m: (float(ratio_acc[i] / nb[i]) if nb[i] else None) for i, m in enumerate(self.modalities)}
                ep[f"{tag}_coeff"] = {m: float(coeff_acc[i] / nbatches) for i, m in enumerate(self.modalities)}
            if self.balance == "agm":
                ep["agm_mono_loss"] = {m: (float(mono_acc[i] / nmono[i]) if nmono[i] else None) for i, m in enumerate(self.modalities)}
            if Xv is not None:
                score, uni_s, single, mono_s, sel = self._val_scores(Xv, mv, yv)
                ep[f"val_{self.short}"] = score
                ep[f"val_single_{self.short}"] = single
                ep["contribution"] = uni_s
                ep["shapley"] = mono_s
                # select for robustness: the all-modality condition and every single-modality one
                # count alike (see _selection); ties go to the later epoch
                ep["val_select"] = sel
                if sel >= best:
                    best, best_state, best_epoch = sel, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch + 1
            self.history_.append(ep)
            if on_epoch is not None:
                on_epoch(ep)
        if best_state is not None:
            net.load_state_dict(best_state)
            for h_ in self.history_:
                h_["best"] = h_["epoch"] == best_epoch
        net.eval()

    def _agm_outputs(self, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, running: RunningMean):
        """AGM: the fused output as the sum of the Shapley mono-modal outputs (each subset's output
        by masking), each passed through a gradient scale from :func:`agm_coefficients`.
        Returns (output, ratios, coefficients, mono-modal losses); updates ``running``."""
        M = len(self.modalities)
        phi = shapley_values(self._subset_outputs(x, mask), mask)  # (B, M, n_out)
        mono = torch.full((M,), float("nan"))
        for i in range(M):
            if mask[:, i].any():
                mono[i] = self._loss(phi[mask[:, i], i], y[mask[:, i]]).detach()
        ratios, coeffs = agm_coefficients(mono, running.value, self.alpha)
        running.update(mono)
        out = sum(scale_grad(phi[:, i], float(coeffs[i])) for i in range(M))
        return out, ratios, coeffs, mono

    def _modulate_branches(self, coeffs: torch.Tensor, g: torch.Generator) -> None:
        """OGM: scale a dominant modality's branch gradients (+ Gaussian noise for OGM-GE)."""
        assert self.net is not None
        for i, br in enumerate(self.net.branches):
            if coeffs[i] >= 1:
                continue
            for prm in br.parameters():
                if prm.grad is None:
                    continue
                gr = prm.grad * coeffs[i]
                if self.balance == "ogm-ge":
                    noise = torch.randn(prm.grad.shape, generator=g) * (prm.grad.std().item() + 1e-8)
                    gr = gr + noise * (1 - coeffs[i])  # noise as strong as the modulation
                prm.grad = gr

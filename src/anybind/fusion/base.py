"""What every fusion model shares: inputs, modality dropout, the training loop with reconstruction
and balancing, epoch selection, evaluation per subset of present modalities, persistence.  A task
(:mod:`.model`: classification, regression) defines its targets, loss and metrics."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..cache import FeatureCache
from ..data.manifest import Manifest, Record, load_manifest
from ..errors import DataError, SpaceError
from .balance import RunningMean, agm_coefficients, full_outputs, ogm_coefficients, scale_grad, shapley_values, subset_outputs
from .net import KINDS, FusionNet

BALANCE = (None, "none", "ogm", "ogm-ge", "agm")
SCHEDULES = ("constant", "ramp", "anneal")
OPTIMIZERS = ("adamw", "sgd")
FORMAT = "anybind.fusion"
FORMAT_VERSION = 2  # 2: task (classification | regression), agm, full_weight, dropout_schedule


def _subset_name(mods: Sequence[str]) -> str:
    return "+".join(mods)


class FusionModel:
    """What classifier and regressor share; subclasses define the targets, loss and metrics and
    register under their ``task`` name (the saved JSON says which to load)."""

    task = ""
    registry: dict[str, type[FusionModel]] = {}
    metric = ""  # primary metric (higher is better): epoch selection, evaluate() default
    short = ""  # its name in the history keys (train_<short>, val_<short>, ...)

    def __init__(
        self,
        space: Any,
        modalities: Sequence[str],
        *,
        kind: str = "attention",
        dropout: float = 0.3,
        dropout_schedule: str = "constant",
        reconstruct: bool = True,
        balance: str | None = "ogm-ge",
        alpha: float = 0.5,
        full_weight: float = 0.0,
        hidden: int = 128,
        epochs: int = 60,
        batch_size: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        recon_weight: float = 1.0,
        optimizer: str = "adamw",
        seed: int = 0,
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown fusion kind {kind!r}: use one of {', '.join(KINDS)}")
        if balance not in BALANCE:
            raise ValueError(f"unknown balance {balance!r}: use 'ogm-ge', 'ogm', 'agm' or None")
        if dropout_schedule not in SCHEDULES:
            raise ValueError(f"unknown dropout_schedule {dropout_schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if full_weight < 0:
            raise ValueError(f"full_weight must be >= 0, got {full_weight}")
        mods = list(dict.fromkeys(modalities))
        if not mods:
            raise ValueError("no modalities to fuse")
        for m in mods:
            if m not in space.modalities:
                raise SpaceError(f"modality {m!r} is not bound in this space (bound: {', '.join(space.modalities)})")
        self.space = space
        self.modalities = mods
        self.kind, self.dropout, self.reconstruct = kind, float(dropout), bool(reconstruct)
        self.balance = None if balance == "none" else balance
        self.dropout_schedule, self.full_weight = dropout_schedule, float(full_weight)
        self.alpha, self.hidden, self.epochs, self.batch_size = float(alpha), int(hidden), int(epochs), int(batch_size)
        self.lr, self.weight_decay, self.recon_weight, self.seed = float(lr), float(weight_decay), float(recon_weight), int(seed)
        self.optimizer = optimizer
        self.label_key: str | None = None
        self.history_: list[dict[str, Any]] = []
        self.net: FusionNet | None = None

    # -- what a task defines -------------------------------------------------
    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.task:
            FusionModel.registry[cls.task] = cls

    def _n_out(self) -> int:
        raise NotImplementedError

    def _fit_targets(self, records: Sequence[Record]) -> np.ndarray:
        """Targets of the training records in model space; sets the task's state (classes, scale)."""
        raise NotImplementedError

    def _targets(self, records: Sequence[Record]) -> np.ndarray:
        """Targets in model space for fitted state (an unseen class maps to -1)."""
        raise NotImplementedError

    def _usable_for_val(self, records: Sequence[Record]) -> list[Record]:
        return list(records)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def _confidence(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-item confidence in (0, 1] for OGM: out (..., n_out), y (...)."""
        raise NotImplementedError

    def _metrics(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Metrics (primary first) of model outputs against model-space targets."""
        raise NotImplementedError

    def _task_json(self) -> dict[str, Any]:
        return {}

    def _load_task_json(self, meta: dict[str, Any]) -> None:
        pass

    @property
    def loss_name(self) -> str:
        return "loss"

    # -- inputs -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities, "kind": self.kind, "dropout": self.dropout,
            "dropout_schedule": self.dropout_schedule, "reconstruct": self.reconstruct, "balance": self.balance,
            "alpha": self.alpha, "full_weight": self.full_weight, "hidden": self.hidden, "epochs": self.epochs,
            "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "recon_weight": self.recon_weight, "optimizer": self.optimizer, "seed": self.seed,
        }

    def _records(self, data: Any) -> list[Record]:
        if isinstance(data, (str, Path)):
            from ..space import manifest_kinds

            data = load_manifest(data, kinds=manifest_kinds(self.space.encoders), modalities=self.modalities)
        if isinstance(data, Manifest):
            return list(data.records)
        return list(data)

    def _inputs(self, records: Sequence[Record], cache: FeatureCache | str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        """(n, M, dim) projected embeddings (zeros where absent) and the (n, M) presence mask."""
        n, M = len(records), len(self.modalities)
        X = np.zeros((n, M, self.space.dim), np.float32)
        mask = np.zeros((n, M), bool)
        for j, m in enumerate(self.modalities):
            idx = [i for i, r in enumerate(records) if m in r.values]
            if idx:
                feats = self.space.features(m, [records[i].values[m] for i in idx], cache=cache)
                X[idx, j] = self.space.project(m, feats)
                mask[idx, j] = True
        empty = [records[i].id for i in np.flatnonzero(~mask.any(1))]
        if empty:
            raise DataError(
                f"{len(empty)} record(s) have none of the modalities {', '.join(self.modalities)}: "
                f"{', '.join(map(repr, empty[:10]))}{' ...' if len(empty) > 10 else ''}; nothing to predict them from"
            )
        return X, mask

    def _raw_labels(self, records: Sequence[Record]) -> list[Any]:
        key = self.label_key
        missing = [r.id for r in records if key not in r.labels]
        if missing:
            raise DataError(f"{len(missing)} record(s) lack label {key!r}: {', '.join(map(repr, missing[:10]))}")
        return [r.labels[key] for r in records]

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
            val: Sequence[Record] | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None):
        """Train on the ``train`` split (a manifest) or on every given record; select the best
        epoch on ``val`` (the manifest's val split by default, when it has one) by the mean of the
        all-modality score and every single-modality score.  ``on_epoch`` gets each epoch's
        history record (losses, val scores, per-modality contributions and coefficients)."""
        records = self._records(data)
        if isinstance(data, (str, Path, Manifest)):
            train = [r for r in records if r.split == "train"]
            val = val if val is not None else [r for r in records if r.split == "val"]
        else:
            train = records
        train = [r for r in train if any(m in r.values for m in self.modalities)] or train
        if not train:
            raise DataError("no training records")
        self.label_key = label_key
        y = self._fit_targets(train)
        X, mask = self._inputs(train, cache)
        Xv = mv = yv = None
        if val:
            val = self._usable_for_val([r for r in val if any(m in r.values for m in self.modalities)])
            if val:
                Xv, mv = self._inputs(val, cache)
                yv = self._targets(val)
        prev_threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny network: more threads only spin (see train.py)
        torch.set_flush_denormal(True)
        try:
            self._train(X, mask, y, Xv, mv, yv, on_epoch)
        finally:
            torch.set_num_threads(prev_threads)
            torch.set_flush_denormal(False)
        return self

    def _train(self, X, mask, y, Xv, mv, yv, on_epoch=None) -> None:
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        M = len(self.modalities)
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
        X, mask = self._inputs(recs, cache)
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
        X, mask = self._inputs(recs, cache)  # a record with none of the modalities: DataError
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
                    name = _subset_name([self.modalities[i] for i in sub])
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

    # -- persistence --------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anybind_version": __version__,
            "task": self.task,
            "params": self.params(),
            "label_key": self.label_key,
            **self._task_json(),
            "space_identity": self.space.identity(),
            "dim": self.space.dim,
            "history": self.history_,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``fusion.json`` + ``fusion.safetensors`` atomically (temp folder, then rename)."""
        from safetensors.torch import save_file

        from ..cache import atomic_write_dir

        net = self._check_fitted()

        def write(tmp: Path) -> None:
            sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            save_file(sd, str(tmp / "fusion.safetensors"), metadata={"format": FORMAT})
            (tmp / "fusion.json").write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

        return atomic_write_dir(Path(path), write)

    @classmethod
    def load(cls, path: str | Path, space: Any):
        """Load a saved model for ``space``; refuses a space other than the one it was trained on,
        and (called on a subclass) a model of the other task."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_p, w_p = path / "fusion.json", path / "fusion.safetensors"
        if not meta_p.is_file() or not w_p.is_file():
            raise SpaceError(f"{path}: not a saved fusion model (needs fusion.json and fusion.safetensors)")
        try:
            meta = json.loads(meta_p.read_text())
        except json.JSONDecodeError as e:
            raise SpaceError(f"{meta_p}: corrupt JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise SpaceError(f"{meta_p}: not an anybind fusion model")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise SpaceError(f"{path}: saved by a newer anybind (format {meta['format_version']}); upgrade anybind")
        task = meta.get("task", "classification")  # format 1 held classifiers only
        impl = FusionModel.registry.get(task)
        if impl is None:
            raise SpaceError(f"{meta_p}: unknown fusion task {task!r}")
        if cls is not FusionModel and not issubclass(impl, cls):
            raise SpaceError(f"{path}: a fusion {task} model, not a {cls.task} one; load it with {impl.__name__}.load")
        if meta["space_identity"] != space.identity():
            raise SpaceError(
                f"{path}: trained on space {meta['space_identity']}, but the given space is {space.identity()}; "
                "retrain the model on this space"
            )
        p = dict(meta["params"])
        mods = p.pop("modalities")
        model = impl(space, mods, **p)
        model.label_key, model.history_ = meta["label_key"], meta.get("history", [])
        model._load_task_json(meta)
        model.net = FusionNet(len(mods), space.dim, model._n_out(), model.kind, model.hidden)
        model.net.load_state_dict(load_file(str(w_p)))
        model.net.eval()
        return model

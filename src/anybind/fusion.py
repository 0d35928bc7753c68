"""Classification over any subset of a space's modalities: fusion that survives missing ones.

Inputs are the space's projected unit vectors (``space.project(m, space.features(m, ...))``):
every modality then lives in the same ``dim``-wide sphere, so one fusion network can take any
subset of them, the features come from the feature cache, and the classifier is tied to a space
(its identity is checked on load).

Fusion kinds (each modality first goes through its own small branch, ``dim -> hidden``):

* ``late``      mean of the present modalities' branch outputs -> linear head.
* ``concat``    branch outputs concatenated; an absent modality contributes a learned
                "missing" token, and the presence mask is an extra input.
* ``gated``     a learned gate per modality, softmax over the present ones only.
* ``attention`` a one-layer transformer encoder over modality tokens + a CLS token, with a
                key padding mask hiding absent modalities; the head reads the CLS token.

Training adds modality dropout (each present modality dropped with probability ``dropout``,
never all of them), an ActionMAE-style decoder that predicts the embedding of a dropped modality
from the present ones (cosine loss; with ``reconstruct=True`` its predictions fill absent
modalities at train and inference time), and OGM-GE balancing: per-modality confidence is
measured by unimodal heads (trained on detached branch outputs), and the gradient of a dominant
modality's branch is scaled by ``1 - tanh(alpha * (ratio - 1))`` plus Gaussian noise (GE).
Per-epoch history carries each modality's unimodal val accuracy, its mean OGM ratio and coefficient.

Example::

    clf = FusionClassifier(space, ["image", "text", "audio"], kind="attention").fit("m.jsonl", "top")
    clf.evaluate(load_manifest(...).split("test"), missing="all-subsets")   # {"image+text": 0.8, ...}
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import __version__
from .cache import FeatureCache
from .data.manifest import Manifest, Record, load_manifest
from .errors import DataError, SpaceError

KINDS = ("late", "concat", "gated", "attention")
BALANCE = (None, "none", "ogm", "ogm-ge")
FORMAT = "anybind.fusion"
FORMAT_VERSION = 1


class FusionNet(nn.Module):
    """Branches + fusion + head, the reconstruction decoder and the unimodal probe heads."""

    def __init__(self, n_mod: int, dim: int, n_classes: int, kind: str, hidden: int = 128, heads: int = 4):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown fusion kind {kind!r}: use one of {', '.join(KINDS)}")
        self.kind, self.n_mod, self.dim, self.hidden = kind, n_mod, dim, hidden
        self.branches = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU()) for _ in range(n_mod))
        self.missing = nn.Parameter(torch.zeros(n_mod, hidden))
        nn.init.normal_(self.missing, std=0.02)
        if kind == "concat":
            self.head = nn.Linear(n_mod * hidden + n_mod, n_classes)
        else:
            self.head = nn.Linear(hidden, n_classes)
        if kind == "gated":
            self.gates = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(n_mod))
        if kind == "attention":
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
            self.mod_emb = nn.Parameter(torch.zeros(1, n_mod, hidden))
            nn.init.normal_(self.cls, std=0.02)
            nn.init.normal_(self.mod_emb, std=0.02)
            layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout=0.1, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(hidden)
        # ActionMAE-style decoder: (masked embeddings, presence mask) -> every modality's embedding
        self.decoder = nn.Sequential(nn.Linear(n_mod * dim + n_mod, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, n_mod * dim))
        self.uni_heads = nn.ModuleList(nn.Linear(hidden, n_classes) for _ in range(n_mod))

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """(n, M, dim) -> (n, M, hidden)."""
        return torch.stack([b(x[:, i]) for i, b in enumerate(self.branches)], dim=1)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted unit embeddings (n, M, dim) of every modality from the present ones."""
        m = mask.float()
        inp = torch.cat([(x * m[..., None]).flatten(1), m], dim=1)
        return F.normalize(self.decoder(inp).view(len(x), self.n_mod, self.dim), dim=-1)

    def fuse(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits from branch outputs (n, M, hidden) and the presence mask (n, M)."""
        m = mask.float()[..., None]
        if self.kind == "late":
            z = (h * m).sum(1) / m.sum(1).clamp_min(1)
            return self.head(z)
        if self.kind == "concat":
            tok = torch.where(mask[..., None], h, self.missing.expand_as(h))
            return self.head(torch.cat([tok.flatten(1), mask.float()], dim=1))
        if self.kind == "gated":
            g = torch.cat([gate(h[:, i]) for i, gate in enumerate(self.gates)], dim=1)
            w = torch.softmax(g.masked_fill(~mask, float("-inf")), dim=1)
            return self.head((w[..., None] * h).sum(1))
        tok = torch.where(mask[..., None], h, self.missing.expand_as(h)) + self.mod_emb
        seq = torch.cat([self.cls.expand(len(h), -1, -1), tok], dim=1)
        pad = torch.cat([torch.zeros(len(h), 1, dtype=torch.bool, device=h.device), ~mask], dim=1)
        out = self.encoder(seq, src_key_padding_mask=pad)
        return self.head(self.norm(out[:, 0]))

    def gate_weights(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = torch.cat([gate(h[:, i]) for i, gate in enumerate(self.gates)], dim=1)
        return torch.softmax(g.masked_fill(~mask, float("-inf")), dim=1)


def ogm_coefficients(scores: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """OGM coefficients from per-modality confidence scores (M,): ratio to the others' mean.

    ``ratio_m = s_m / mean_{k != m} s_k``; a dominant modality (ratio > 1) gets
    ``1 - tanh(alpha * (ratio - 1))`` (< 1), the others 1.  Modalities with a NaN score
    (absent in the batch) keep coefficient 1 and ratio NaN.
    """
    M = len(scores)
    ratios = torch.full((M,), float("nan"))
    coeffs = torch.ones(M)
    valid = ~torch.isnan(scores)
    if int(valid.sum()) < 2:
        return ratios, coeffs
    for i in range(M):
        if not valid[i]:
            continue
        others = [scores[k] for k in range(M) if k != i and valid[k]]
        r = scores[i] / (torch.stack(others).mean() + 1e-8)
        ratios[i] = r
        if r > 1:
            coeffs[i] = 1 - torch.tanh(alpha * (r - 1))
    return ratios, coeffs


def _subset_name(mods: Sequence[str]) -> str:
    return "+".join(mods)


class FusionClassifier:
    """A classifier over any subset of a space's bound modalities.

    Parameters
    ----------
    space: the :class:`~anybind.Space` whose projected embeddings are the inputs.
    modalities: the bound modalities to fuse (any of them may be absent per record).
    kind: ``late`` | ``concat`` | ``gated`` | ``attention``.
    dropout: modality dropout probability during training (never drops every present one).
    reconstruct: train the reconstruction decoder and use it to fill absent modalities.
    balance: ``"ogm-ge"`` (gradient modulation + Gaussian noise), ``"ogm"`` or ``None``.
    alpha: OGM modulation strength.
    """

    def __init__(
        self,
        space: Any,
        modalities: Sequence[str],
        *,
        kind: str = "attention",
        dropout: float = 0.3,
        reconstruct: bool = True,
        balance: str | None = "ogm-ge",
        alpha: float = 0.5,
        hidden: int = 128,
        epochs: int = 60,
        batch_size: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        recon_weight: float = 1.0,
        seed: int = 0,
    ):
        if kind not in KINDS:
            raise ValueError(f"unknown fusion kind {kind!r}: use one of {', '.join(KINDS)}")
        if balance not in BALANCE:
            raise ValueError(f"unknown balance {balance!r}: use 'ogm-ge', 'ogm' or None")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        mods = list(dict.fromkeys(modalities))
        if not mods:
            raise ValueError("no modalities to fuse")
        for m in mods:
            if m not in space.modalities:
                raise SpaceError(f"modality {m!r} is not bound in this space (bound: {', '.join(space.modalities)})")
        self.space = space
        self.modalities = mods
        self.kind, self.dropout, self.reconstruct, self.balance = kind, float(dropout), bool(reconstruct), balance
        self.alpha, self.hidden, self.epochs, self.batch_size = float(alpha), int(hidden), int(epochs), int(batch_size)
        self.lr, self.weight_decay, self.recon_weight, self.seed = float(lr), float(weight_decay), float(recon_weight), int(seed)
        self.classes_: list[str] = []
        self.label_key: str | None = None
        self.history_: list[dict[str, Any]] = []
        self.net: FusionNet | None = None

    # -- inputs -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities, "kind": self.kind, "dropout": self.dropout, "reconstruct": self.reconstruct,
            "balance": self.balance, "alpha": self.alpha, "hidden": self.hidden, "epochs": self.epochs,
            "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "recon_weight": self.recon_weight, "seed": self.seed,
        }

    def _records(self, data: str | Path | Manifest | Sequence[Record]) -> list[Record]:
        if isinstance(data, (str, Path)):
            from .space import manifest_kinds

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
                f"{', '.join(map(repr, empty[:10]))}{' ...' if len(empty) > 10 else ''}; nothing to classify them from"
            )
        return X, mask

    def _labels(self, records: Sequence[Record], label_key: str) -> list[str]:
        missing = [r.id for r in records if label_key not in r.labels]
        if missing:
            raise DataError(f"{len(missing)} record(s) lack label {label_key!r}: {', '.join(map(repr, missing[:10]))}")
        return [str(r.labels[label_key]) for r in records]

    # -- training -----------------------------------------------------------
    def _drop(self, mask: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Modality dropout: drop each present modality with prob p, keeping at least one."""
        if self.dropout <= 0:
            return mask
        drop = (torch.rand(mask.shape, generator=g) < self.dropout) & mask
        kept = mask & ~drop
        none = ~kept.any(1)
        if none.any():
            # keep one random originally-present modality of each fully dropped row
            r = torch.rand(mask.shape, generator=g).masked_fill(~mask, -1.0)
            pick = F.one_hot(r.argmax(1), mask.shape[1]).bool()
            kept = torch.where(none[:, None], pick, kept)
        return kept

    def _forward(self, x: torch.Tensor, mask: torch.Tensor, fill: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, the mask used, and the reconstructions (filled in where absent if ``fill``)."""
        assert self.net is not None
        rec = self.net.reconstruct(x, mask) if self.reconstruct else x
        if fill and self.reconstruct:
            x = torch.where(mask[..., None], x, rec.detach())
            mask = torch.ones_like(mask)
        return self.net.fuse(self.net.branch(x), mask), mask, rec

    def fit(
        self,
        data: str | Path | Manifest | Sequence[Record],
        label_key: str,
        *,
        cache: FeatureCache | str | Path | None = None,
        val: Sequence[Record] | None = None,
    ) -> FusionClassifier:
        """Train on the ``train`` split (a manifest) or on every given record; select the best
        epoch on ``val`` (the manifest's val split by default, when it has one)."""
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
        ytxt = self._labels(train, label_key)
        self.classes_ = sorted(set(ytxt))
        if len(self.classes_) < 2:
            raise DataError(f"label {label_key!r} has a single class {self.classes_} in the training records")
        cidx = {c: i for i, c in enumerate(self.classes_)}
        X, mask = self._inputs(train, cache)
        y = np.array([cidx[c] for c in ytxt])
        Xv = mv = yv = None
        if val:
            val = [r for r in val if any(m in r.values for m in self.modalities) and str(r.labels.get(label_key)) in cidx]
            if val:
                Xv, mv = self._inputs(val, cache)
                yv = np.array([cidx[str(r.labels[label_key])] for r in val])

        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        M = len(self.modalities)
        self.net = net = FusionNet(M, self.space.dim, len(self.classes_), self.kind, self.hidden)
        uni_params = list(net.uni_heads.parameters())
        main_params = [p for n_, p in net.named_parameters() if not n_.startswith("uni_heads.")]
        opt = torch.optim.AdamW([{"params": main_params}, {"params": uni_params, "weight_decay": 0.0}],
                                lr=self.lr, weight_decay=self.weight_decay)
        Xt, mt, yt = torch.from_numpy(X), torch.from_numpy(mask), torch.from_numpy(y)
        n = len(yt)
        best, best_state, best_epoch = -1.0, None, 0
        self.history_ = []
        for epoch in range(self.epochs):
            net.train()
            perm = torch.randperm(n, generator=g)
            tot = {"loss": 0.0, "ce": 0.0, "recon": 0.0, "correct": 0}
            ratio_acc = torch.zeros(M)
            coeff_acc = torch.zeros(M)
            nb = torch.zeros(M)
            for s in range(0, n, self.batch_size):
                b = perm[s : s + self.batch_size]
                xb, mb, yb = Xt[b], mt[b], yt[b]
                kept = self._drop(mb, g)
                logits, _, rec = self._forward(xb, kept, fill=True)
                ce = F.cross_entropy(logits, yb)
                loss = ce
                recon = torch.zeros(())
                if self.reconstruct:
                    target = mb & ~kept  # dropped modalities: known truth, hidden from the input
                    if target.any():
                        recon = (1 - (rec * xb).sum(-1))[target].mean()
                        loss = loss + self.recon_weight * recon
                # unimodal probes on detached branch outputs of every originally present modality
                h = net.branch(xb).detach()
                uni = torch.stack([head(h[:, i]) for i, head in enumerate(net.uni_heads)], dim=1)  # (B, M, C)
                uni_ce = F.cross_entropy(uni[mb], yb[:, None].expand(-1, M)[mb])
                opt.zero_grad()
                (loss + uni_ce).backward()
                if self.balance in ("ogm", "ogm-ge"):
                    with torch.no_grad():
                        p = torch.softmax(uni, -1).gather(-1, yb[:, None, None].expand(-1, M, 1))[..., 0]
                        cnt = mb.float().sum(0)
                        scores = torch.where(cnt > 0, (p * mb).sum(0) / cnt.clamp_min(1), torch.full((M,), float("nan")))
                        ratios, coeffs = ogm_coefficients(scores, self.alpha)
                    for i, br in enumerate(net.branches):
                        if coeffs[i] < 1:
                            for prm in br.parameters():
                                if prm.grad is None:
                                    continue
                                gr = prm.grad * coeffs[i]
                                if self.balance == "ogm-ge":
                                    noise = torch.randn(prm.grad.shape, generator=g) * (prm.grad.std().item() + 1e-8)
                                    gr = gr + noise * (1 - coeffs[i])  # noise as strong as the modulation
                                prm.grad = gr
                    ok = ~torch.isnan(ratios)
                    ratio_acc[ok] += ratios[ok]
                    coeff_acc += coeffs
                    nb[ok] += 1
                opt.step()
                tot["loss"] += float(loss.detach()) * len(b)
                tot["ce"] += float(ce.detach()) * len(b)
                tot["recon"] += float(recon.detach()) * len(b)
                tot["correct"] += int((logits.argmax(1) == yb).sum())
            rec_ep: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": tot["loss"] / n,
                "ce": tot["ce"] / n,
                "recon": tot["recon"] / n,
                "train_acc": tot["correct"] / n,
            }
            nbatches = math.ceil(n / self.batch_size)
            if self.balance in ("ogm", "ogm-ge"):
                rec_ep["ogm_ratio"] = {m: (float(ratio_acc[i] / nb[i]) if nb[i] else None) for i, m in enumerate(self.modalities)}
                rec_ep["ogm_coeff"] = {m: float(coeff_acc[i] / nbatches) for i, m in enumerate(self.modalities)}
            if Xv is not None:
                acc, uni_acc, single = self._val_scores(Xv, mv, yv)
                rec_ep["val_acc"] = acc
                rec_ep["val_single_acc"] = single
                rec_ep["contribution"] = uni_acc
                # select for robustness: all-modality accuracy and every single-modality one count
                # alike; ties go to the later epoch
                sel = float(np.mean([acc] + [v for v in single.values() if v is not None]))
                rec_ep["val_select"] = sel
                if sel >= best:
                    best, best_state, best_epoch = sel, {k: v.detach().clone() for k, v in net.state_dict().items()}, epoch + 1
            self.history_.append(rec_ep)
        if best_state is not None:
            net.load_state_dict(best_state)
            for h_ in self.history_:
                h_["best"] = h_["epoch"] == best_epoch
        net.eval()
        return self

    @torch.no_grad()
    def _val_scores(self, X: np.ndarray, mask: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, float | None], dict[str, float | None]]:
        """Fused accuracy, unimodal-probe accuracy per modality, fused accuracy given one modality only."""
        assert self.net is not None
        self.net.eval()
        x, m = torch.from_numpy(X), torch.from_numpy(mask)
        logits, _, _ = self._forward(x, m, fill=True)
        acc = float((logits.argmax(1).numpy() == y).mean())
        h = self.net.branch(x)
        uni: dict[str, float | None] = {}
        single: dict[str, float | None] = {}
        for i, name in enumerate(self.modalities):
            sel = mask[:, i]
            if not sel.any():
                uni[name] = single[name] = None
                continue
            uni[name] = float((self.net.uni_heads[i](h[sel, i]).argmax(1).numpy() == y[sel]).mean())
            only = torch.zeros_like(m[sel])
            only[:, i] = True
            lg, _, _ = self._forward(x[sel] * only[..., None], only, fill=True)
            single[name] = float((lg.argmax(1).numpy() == y[sel]).mean())
        self.net.train()
        return acc, uni, single

    # -- inference ----------------------------------------------------------
    def _check_fitted(self) -> FusionNet:
        if self.net is None:
            raise RuntimeError("this FusionClassifier is not fitted: call fit() or FusionClassifier.load()")
        return self.net

    @torch.no_grad()
    def _logits(self, X: np.ndarray, mask: np.ndarray, reconstruct: bool | None = None) -> np.ndarray:
        net = self._check_fitted()
        net.eval()
        fill = self.reconstruct if reconstruct is None else (reconstruct and self.reconstruct)
        out = []
        for s in range(0, len(X), 4096):
            lg, _, _ = self._forward(torch.from_numpy(X[s : s + 4096]), torch.from_numpy(mask[s : s + 4096]), fill=fill)
            out.append(lg.numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), np.float32)

    def predict_proba(self, records: Sequence[Record] | str | Path | Manifest, *, cache=None, reconstruct: bool | None = None) -> np.ndarray:
        X, mask = self._inputs(self._records(records), cache)
        lg = torch.from_numpy(self._logits(X, mask, reconstruct))
        return torch.softmax(lg, -1).numpy()

    def predict(self, records: Sequence[Record] | str | Path | Manifest, *, cache=None, reconstruct: bool | None = None) -> list[str]:
        """Class names; a record with none of the classifier's modalities raises DataError."""
        X, mask = self._inputs(self._records(records), cache)
        return [self.classes_[i] for i in self._logits(X, mask, reconstruct).argmax(1)]

    def evaluate(
        self,
        records: Sequence[Record] | str | Path | Manifest,
        missing: str = "all-subsets",
        *,
        cache=None,
        reconstruct: bool | None = None,
        counts: bool = False,
    ) -> dict[str, float] | tuple[dict[str, float], dict[str, int]]:
        """Accuracy per subset of modalities: ``{"image+text": acc, ...}``.

        ``missing="all-subsets"``: every non-empty subset (2^M - 1 entries); each is scored on
        the records that hold all of its modalities, with only those modalities given (the
        others are hidden).  ``missing="none"``: one entry, each record with what it has.
        A subset no record holds gets NaN.  ``counts=True`` also returns the record counts.
        """
        if self.label_key is None:
            self._check_fitted()
        recs = self._records(records)
        recs = [r for r in recs if any(m in r.values for m in self.modalities)]
        ytxt = self._labels(recs, self.label_key)  # type: ignore[arg-type]
        X, mask = self._inputs(recs, cache)
        y = np.array(ytxt)
        classes = np.array(self.classes_)
        if missing == "none":
            pred = classes[self._logits(X, mask, reconstruct).argmax(1)]
            res, cnt = {"available": float((pred == y).mean())}, {"available": len(y)}
        elif missing == "all-subsets":
            res, cnt = {}, {}
            M = len(self.modalities)
            for k in range(1, M + 1):
                for sub in itertools.combinations(range(M), k):
                    name = _subset_name([self.modalities[i] for i in sub])
                    sel = mask[:, list(sub)].all(1)
                    cnt[name] = int(sel.sum())
                    if not sel.any():
                        res[name] = float("nan")
                        continue
                    m2 = np.zeros_like(mask[sel])
                    m2[:, list(sub)] = True
                    pred = classes[self._logits(X[sel] * m2[..., None], m2, reconstruct).argmax(1)]
                    res[name] = float((pred == y[sel]).mean())
        else:
            raise ValueError(f"unknown missing={missing!r}: use 'all-subsets' or 'none'")
        return (res, cnt) if counts else res

    # -- persistence --------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anybind_version": __version__,
            "params": self.params(),
            "classes": self.classes_,
            "label_key": self.label_key,
            "space_identity": self.space.identity(),
            "dim": self.space.dim,
            "history": self.history_,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``fusion.json`` + ``fusion.safetensors`` atomically (temp folder, then rename)."""
        from safetensors.torch import save_file

        net = self._check_fitted()
        from .cache import atomic_write_dir

        def write(tmp: Path) -> None:
            sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            save_file(sd, str(tmp / "fusion.safetensors"), metadata={"format": FORMAT})
            (tmp / "fusion.json").write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

        return atomic_write_dir(Path(path), write)

    @classmethod
    def load(cls, path: str | Path, space: Any) -> FusionClassifier:
        """Load a saved classifier for ``space``; refuses a space other than the one it was trained on."""
        from safetensors.torch import load_file

        path = Path(path)
        meta_p, w_p = path / "fusion.json", path / "fusion.safetensors"
        if not meta_p.is_file() or not w_p.is_file():
            raise SpaceError(f"{path}: not a saved fusion classifier (needs fusion.json and fusion.safetensors)")
        try:
            meta = json.loads(meta_p.read_text())
        except json.JSONDecodeError as e:
            raise SpaceError(f"{meta_p}: corrupt JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise SpaceError(f"{meta_p}: not an anybind fusion classifier")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise SpaceError(f"{path}: saved by a newer anybind (format {meta['format_version']}); upgrade anybind")
        if meta["space_identity"] != space.identity():
            raise SpaceError(
                f"{path}: trained on space {meta['space_identity']}, but the given space is {space.identity()}; "
                "retrain the classifier on this space"
            )
        p = dict(meta["params"])
        mods = p.pop("modalities")
        clf = cls(space, mods, **p)
        clf.classes_, clf.label_key, clf.history_ = list(meta["classes"]), meta["label_key"], meta.get("history", [])
        clf.net = FusionNet(len(mods), space.dim, len(clf.classes_), clf.kind, clf.hidden)
        clf.net.load_state_dict(load_file(str(w_p)))
        clf.net.eval()
        return clf


def subsets_table(res: Mapping[str, float], cnt: Mapping[str, int] | None = None, title: str = "") -> Any:
    """A Rich table of per-subset accuracy."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("modalities")
    t.add_column("n", justify="right")
    t.add_column("accuracy", justify="right")
    for k, v in sorted(res.items(), key=lambda kv: (kv[0].count("+"), kv[0])):
        t.add_row(k, str((cnt or {}).get(k, "")), "-" if math.isnan(v) else f"{v:.3f}")
    return t

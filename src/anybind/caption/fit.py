"""Training a captioner text-only, the language model frozen.

Each training caption is decoded from its *own* text embedding in the space, with Gaussian noise added to
that embedding (CapDec): at test time an image, sound or speech embedding sits elsewhere (the modality gap)
and the noise teaches the mapper to decode a neighbourhood, not a point.  The noise level is chosen on the
val split: each level of ``noise_grid`` trains a mapper, scored by the LM's mean negative log-likelihood of
val captions given the prefix of their paired ``select_on`` embedding (an image's, when the space binds
images); the lowest wins, and the same score picks each mapper's epoch (early stopping).

Each mapper is also scored with its val embeddings projected onto the memory of the training captions' text
embeddings (DeCap, :mod:`anybind.caption.memory`) at each temperature of ``temperature_grid``: the projection
(``none`` or ``memory``) and temperature with the lowest val NLL are the captioner's default, and the memory
is saved with it.

``lr`` may be a sequence (an lr grid, chosen on the same val score): each rate first trains one mapper at one
noise level (``noise`` when fixed, else the middle of the sorted ``noise_grid``, its upper median), the rate whose mapper has the lowest val
NLL (at its best projection) wins, and the noise grid is then tried at that rate: ``len(lr) + len(noise_grid) - 1``
runs, not their product.  The default is one rate (no extra run).

``paired=True`` trains on the ``select_on`` embeddings of the training records instead of the captions' text
embeddings (the supervised comparison: needs paired data, no noise).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.manifest import Manifest, load_manifest
from ..encoders.kinds import manifest_kinds
from ..errors import DataError
from .lm import SMOLLM2, CaptionError, FrozenLM, load_lm
from .memory import TEMPERATURE_GRID, build_memory, choose_projection
from .model import Captioner, MapperConfig, PrefixMapper, text_modality

log = logging.getLogger(__name__)


@dataclass
class CaptionConfig:
    prefix_len: int = 8
    hidden: int = 512
    epochs: int = 10
    batch_size: int = 32
    #: the learning rate, or a grid of rates chosen on val (see the module's docstring)
    lr: float | tuple[float, ...] = 2e-3
    #: per-dimension std of the Gaussian noise added to the training embeddings; None: chosen on val in noise_grid
    noise: float | None = None
    noise_grid: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1)
    #: the modality whose val embeddings score the mappers (default: the first non-text one with val pairs)
    select_on: str | None = None
    paired: bool = False
    patience: int = 3
    max_caption_tokens: int = 32
    #: "none" | "memory" (DeCap projection at decoding time); None: chosen on val
    projection: str | None = None
    #: the softmax temperature of the memory projection; None: chosen on val in temperature_grid
    memory_temperature: float | None = None
    temperature_grid: tuple[float, ...] = TEMPERATURE_GRID
    #: distinct training captions kept in the memory (a seeded sample beyond it)
    memory_size: int = 50_000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _finite(v: float) -> float:
    """A val NLL as compared: NaN (a diverged run) as +inf, never the best."""
    return v if math.isfinite(v) else math.inf


def _kept_nll(history: list[dict]) -> float:
    """A run's val NLL: its kept epoch's (``min`` would be NaN once any epoch is NaN)."""
    return next(h["val_nll"] for h in history if h["best"])


def _records(manifest: Any, space: Any, mods: list[str]) -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    return load_manifest(manifest, modalities=mods, kinds=manifest_kinds(space.encoders), progress=False)


def _tokens(lm: FrozenLM, captions: Sequence[str], max_tokens: int) -> list[list[int]]:
    enc = lm.tokenizer(list(captions), add_special_tokens=False)["input_ids"]
    return [list(ids)[:max_tokens] + [lm.eos_id] for ids in enc]


def _batch(lm: FrozenLM, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), lm.eos_id, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(s)
    return ids, labels


def caption_loss(lm: FrozenLM, prefix: torch.Tensor, seqs: list[list[int]], reduction: str = "mean") -> torch.Tensor:
    """The LM's cross-entropy of the token sequences given the soft prefixes (n, k, h), teacher-forced."""
    ids, labels = _batch(lm, seqs)
    prefix = lm.with_bos(prefix)
    k = prefix.shape[1]
    inputs = torch.cat([prefix, lm.embed_tokens(ids[:, :-1])], dim=1)
    logits = lm.model(inputs_embeds=inputs).logits[:, k - 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction=reduction)


@torch.no_grad()
def val_nll(lm: FrozenLM, mapper: PrefixMapper, X: np.ndarray, seqs: list[list[int]], batch_size: int = 64) -> float:
    """Mean negative log-likelihood per token of the captions given their embeddings' prefixes."""
    mapper.eval()
    total, n = 0.0, 0
    for i in range(0, len(X), batch_size):
        s = seqs[i : i + batch_size]
        total += float(caption_loss(lm, mapper(torch.from_numpy(X[i : i + batch_size])), s, reduction="sum"))
        n += sum(len(t) for t in s)
    return total / max(n, 1)


def lr_grid(lr: float | Sequence[float]) -> list[float]:
    """The learning rates to try: one number, or a sequence of distinct finite positive ones."""
    lrs = [float(lr)] if np.ndim(lr) == 0 else [float(x) for x in lr]
    if not lrs or any(not np.isfinite(x) or x <= 0 for x in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"learning rates must be distinct numbers > 0, got {lrs}")
    return lrs


def _train_one(lm: FrozenLM, cfg: CaptionConfig, mcfg: MapperConfig, X: np.ndarray, seqs: list[list[int]],
               Xv: np.ndarray, seqs_v: list[list[int]], noise: float, lr: float,
               progress: bool) -> tuple[PrefixMapper, list[dict]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mapper = PrefixMapper(mcfg)
    opt = torch.optim.AdamW(mapper.parameters(), lr=lr, weight_decay=0.01)
    steps = max(1, -(-len(X) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * cfg.epochs, pct_start=0.1)
    Xt = torch.from_numpy(X)
    best: tuple[float, dict, int] | None = None
    history: list[dict] = []
    cols = [TextColumn(f"[bold]caption mapper (noise {noise:g}, lr {lr:g})"), BarColumn(),
            TextColumn("epoch {task.completed}/{task.total} {task.fields[msg]}"), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=False) as prog:
        task = prog.add_task("train", total=cfg.epochs, msg="")
        for epoch in range(1, cfg.epochs + 1):
            mapper.train()
            order = torch.randperm(len(X), generator=gen)
            ep_loss = 0.0
            for b in range(steps):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x = Xt[idx]
                if noise > 0:
                    x = x + noise * torch.randn(x.shape, generator=gen)
                loss = caption_loss(lm, mapper(x), [seqs[i] for i in idx.tolist()])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                ep_loss += float(loss.detach()) / steps
            v = val_nll(lm, mapper, Xv, seqs_v)
            history.append({"epoch": epoch, "loss": ep_loss, "val_nll": v})
            if best is None or _finite(v) < _finite(best[0]):  # a NaN (a diverged rate) is never the best
                best = (v, {k: t.detach().clone() for k, t in mapper.state_dict().items()}, epoch)
            prog.update(task, advance=1, msg=f"loss {ep_loss:.3f} val nll {v:.3f}")
            if epoch - best[2] >= cfg.patience:
                break
    assert best is not None
    mapper.load_state_dict(best[1])
    mapper.eval()
    for h in history:
        h["best"] = h["epoch"] == best[2]
    return mapper, history


def fit_captioner(space: Any, manifest: str | Path | Manifest, lm: str | FrozenLM = SMOLLM2, *,
                  cache: Any = None, progress: bool = True, text: str = "text", **config: Any) -> Captioner:
    """Train a :class:`Captioner` for ``space`` on the captions (``text``) of the manifest's train split.

    ``lm``: an LM spec (see :mod:`anybind.caption.lm`) or a loaded :class:`FrozenLM`; ``**config``:
    :class:`CaptionConfig` fields.  The val split's pairs choose the noise level and the epoch.
    """
    text = text_modality(space, text)
    unknown = set(config) - set(CaptionConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown caption option(s): {', '.join(sorted(unknown))}")
    cfg = CaptionConfig(**config)
    if cfg.prefix_len < 1 or cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("prefix_len, epochs and batch_size must be at least 1")
    others = [m for m in space.modalities if m != text]
    select = cfg.select_on
    if select is not None and select not in space.modalities:
        raise CaptionError(f"select_on {select!r} is not bound in this space (bound: {', '.join(space.modalities)})")
    man = _records(manifest, space, [text, *others])
    train = [r for r in man.split("train") if r.has(text)]
    val = [r for r in man.split("val") if r.has(text)]
    if select is None:
        select = next((m for m in others if any(r.has(m) for r in val)), text)
    if cfg.paired and select == text:
        raise CaptionError("paired training needs a non-text modality paired with captions (select_on)")
    src = select if cfg.paired else text
    train = [r for r in train if r.has(src)]
    val = [r for r in val if r.has(select)]
    if len(train) < 2 or not val:
        raise DataError(f"{getattr(man, 'path', manifest)}: {len(train)} train and {len(val)} val record(s) with "
                        f"captions ({text!r}) and {select!r}; a captioner needs both splits")
    lm = lm if isinstance(lm, FrozenLM) else load_lm(lm)
    t0 = time.perf_counter()
    X = space.embed(src, [r.values[src] for r in train], cache=cache, progress=progress)
    Xv = space.embed(select, [r.values[select] for r in val], cache=cache, progress=progress)
    seqs = _tokens(lm, [r.values[text] for r in train], cfg.max_caption_tokens)
    seqs_v = _tokens(lm, [r.values[text] for r in val], cfg.max_caption_tokens)
    mcfg = MapperConfig(dim=space.dim, lm_hidden=lm.hidden_size, prefix_len=cfg.prefix_len, hidden=cfg.hidden)
    grid = [0.0] if cfg.paired else ([float(cfg.noise)] if cfg.noise is not None else [float(s) for s in cfg.noise_grid])
    if not grid or any(s < 0 for s in grid):
        raise ValueError(f"noise levels must be >= 0, got {grid}")
    lrs = lr_grid(cfg.lr)
    X_text = X if src == text else space.embed(text, [r.values[text] for r in train], cache=cache, progress=progress)
    memory = build_memory(X_text, [r.values[text] for r in train], cfg.memory_size, cfg.seed)
    # (lr, noise) -> (mapper, history, (projection, temperature, val nll by projection))
    runs: dict[tuple[float, float], tuple[PrefixMapper, list[dict], tuple[str, float, dict[str, float]]]] = {}

    def run(lr: float, s: float) -> float:
        """Train (once) the mapper of this rate and noise level; its val NLL at its best projection."""
        if (lr, s) not in runs:
            m, hist = _train_one(lm, cfg, mcfg, X, seqs, Xv, seqs_v, s, lr, progress)
            ps = choose_projection(lambda Z, m=m: val_nll(lm, m, Z, seqs_v), Xv, memory, projection=cfg.projection,
                                   temperature=cfg.memory_temperature, grid=cfg.temperature_grid)
            runs[lr, s] = (m, hist, ps)
            log.info("caption mapper, noise %g, lr %g: best val nll %.4f (%s), by projection %s", s, lr,
                     _kept_nll(hist), select, ps[2])
        return min((_finite(v) for v in runs[lr, s][2][2].values()), default=math.inf)

    lr_at = sorted(grid)[len(grid) // 2] if len(lrs) > 1 else None
    lr_scores = {lr: run(lr, lr_at) for lr in lrs} if lr_at is not None else {}
    if lr_scores and not any(math.isfinite(v) for v in lr_scores.values()):
        raise CaptionError(f"every learning rate of {sorted(lrs)} diverged (no finite val NLL): try smaller ones")
    lr_best = min(lrs, key=lambda lr: (lr_scores.get(lr, 0.0), lr))  # finite scores; a NaN counted as inf
    best = {s: run(lr_best, s) for s in grid}
    if not any(math.isfinite(v) for v in best.values()):
        raise CaptionError(f"learning rate {lr_best:g} diverged at every noise level (no finite val NLL): try a "
                           "smaller one")
    chosen = min(best, key=lambda s: (best[s], s))
    mapper, history, (projection, temperature, pscores) = runs[lr_best, chosen]
    scores = {s: _kept_nll(runs[lr_best, s][1]) for s in grid}
    info = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "selected_on": f"val {select} -> caption nll",
        "noise_val_nll": {str(s): (v if math.isfinite(v) else None) for s, v in scores.items()},  # None: diverged
        "lr": lr_best,
        # each rate's val NLL at its best projection, all at noise lr_selected_at_noise ({} without an lr grid)
        "lr_val_nll": {str(lr): (v if math.isfinite(v) else None) for lr, v in lr_scores.items()},  # None: diverged
        "lr_selected_at_noise": lr_at,
        "projection_val_nll": {k: (v if math.isfinite(v) else None) for k, v in pscores.items()},
        "trained_on": src,
        "n_train": len(train),
        "n_val": len(val),
        "history": history,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return Captioner(space, lm, mapper, text=text, noise_std=chosen, info=info, memory=memory,
                     projection=projection, memory_temperature=temperature)

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

``retrieval_k`` (SmallCap, :mod:`anybind.caption.retrieval`): each caption is decoded with the prompt of its ``k``
nearest *other* training captions, retrieved from its noised text embedding (at test time from the image, sound
or speech embedding).  A grid of ``k`` is chosen on the same val NLL, after lr and noise (which are chosen at the
grid's first ``k``): ``len(retrieval_k) - 1`` more runs.  ``0`` is no retrieval (the mapper alone).
:func:`fit_captioner_by_k` hands out the captioner of every ``k`` tried.

``max_train`` trains the mapper on a seeded sample of the train captions (a lighter setting for a slow CPU); the
memory still holds every distinct train caption.

After training, each non-text modality with val pairs gets its default *mode* chosen on val (``choose_n`` of its
val items captioned by the mapper, the training-free prompt and the nearest caption, scored by CIDEr-D;
:mod:`anybind.caption.choice`), recorded in the captioner.

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
from ..progress import progress_bar
from ..recipe import check_seed
from .lm import SMOLLM2, CaptionError, FrozenLM, load_lm
from .memory import TEMPERATURE_GRID, choose_projection, memory_rows
from .model import Captioner, MapperConfig, PrefixMapper, text_modality
from .retrieval import MAX_RETRIEVAL_K, neighbours, prompt_ids, self_rows

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
    #: the number of nearest training captions put in the LM's prompt, or a grid of them chosen on val (0: none)
    retrieval_k: int | tuple[int, ...] = 0
    #: the mapper trains on a seeded sample of at most this many train captions (0: all); the memory keeps all
    max_train: int = 0
    #: val items per modality captioned to choose its default mode (mapper / prompt / nearest, by CIDEr-D; see
    #: :mod:`anybind.caption.choice`): a seeded sample of at most this many; 0: all; None: no choice (the mapper)
    choose_n: int | None = 32
    #: the greedy decoding's token cap while choosing
    choose_max_tokens: int = 20
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_seed(self)


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


def _batch(lm: FrozenLM, seqs: list[list[int]], prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt + caption, padded on the right; labels only on the caption's tokens."""
    L = max(len(p) + len(s) for p, s in zip(prompts, seqs))
    ids = torch.full((len(seqs), L), lm.eos_id, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    for i, (p, s) in enumerate(zip(prompts, seqs)):
        ids[i, : len(p) + len(s)] = torch.tensor(p + s)
        labels[i, len(p) : len(p) + len(s)] = torch.tensor(s)
    return ids, labels


def caption_loss(lm: FrozenLM, prefix: torch.Tensor | None, seqs: list[list[int]], reduction: str = "mean",
                 prompts: list[list[int]] | None = None) -> torch.Tensor:
    """The LM's cross-entropy of the caption tokens ``seqs`` given the soft prefixes (n, k, h) (``None``: no prefix,
    the frozen LM alone) and the retrieval ``prompts`` (token lists, :mod:`anybind.caption.retrieval`), teacher-forced."""
    prompts = prompts if prompts is not None else [[] for _ in seqs]
    if prefix is None and not all(prompts):
        raise CaptionError("nothing to decode from: no prefix and no retrieved captions (give retrieval_k > 0)")
    ids, labels = _batch(lm, seqs, prompts)
    bos = lm.tokenizer.bos_token_id
    lead = lm.with_bos(prefix) if prefix is not None else (
        None if bos is None else lm.embed_tokens(torch.full((len(seqs), 1), int(bos), dtype=torch.long)))
    if lead is None:  # no bos, no prefix: the prompt's first token leads (its label is masked)
        logits = lm.model(inputs_embeds=lm.embed_tokens(ids)).logits[:, :-1]
        labels = labels[:, 1:]
    else:
        k = lead.shape[1]
        inputs = torch.cat([lead, lm.embed_tokens(ids[:, :-1])], dim=1)
        logits = lm.model(inputs_embeds=inputs).logits[:, k - 1 :]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100,
                           reduction=reduction)


@torch.no_grad()
def val_nll(lm: FrozenLM, mapper: PrefixMapper | None, X: np.ndarray, seqs: list[list[int]], batch_size: int = 64,
            prompts: list[list[int]] | None = None) -> float:
    """Mean negative log-likelihood per token of the captions given their embeddings' prefixes (``mapper`` None: no
    prefix) and their retrieval ``prompts``."""
    if mapper is not None:
        mapper.eval()
    total, n = 0.0, 0
    for i in range(0, len(X), batch_size):
        s = seqs[i : i + batch_size]
        prefix = None if mapper is None else mapper(torch.from_numpy(X[i : i + batch_size]))
        p = None if prompts is None else prompts[i : i + batch_size]
        total += float(caption_loss(lm, prefix, s, reduction="sum", prompts=p))
        n += sum(len(t) for t in s)
    return total / max(n, 1)


def lr_grid(lr: float | Sequence[float]) -> list[float]:
    """The learning rates to try: one number, or a sequence of distinct finite positive ones."""
    lrs = [float(lr)] if np.ndim(lr) == 0 else [float(x) for x in lr]
    if not lrs or any(not np.isfinite(x) or x <= 0 for x in lrs) or len(set(lrs)) != len(lrs):
        raise ValueError(f"learning rates must be distinct numbers > 0, got {lrs}")
    return lrs


def k_grid(k: int | Sequence[int]) -> list[int]:
    """The retrieval k to try: one number, or a sequence of distinct whole numbers >= 0."""
    ks = [k] if np.ndim(k) == 0 else list(k)
    if not ks or len(set(ks)) != len(ks) or any(isinstance(x, bool) or not float(x).is_integer() or x < 0 for x in ks):
        raise ValueError(f"retrieval_k must be distinct whole numbers >= 0, got {ks}")
    if max(ks) > MAX_RETRIEVAL_K:
        raise ValueError(f"retrieval_k {max(ks)}: give at most {MAX_RETRIEVAL_K} (the prompt's bound)")
    return [int(x) for x in ks]


@dataclass
class Retrieval:
    """What retrieval needs in training: the memory, its captions, each training caption's own memory row."""

    memory: np.ndarray
    captions: list[str]
    self_rows: np.ndarray

    def prompts(self, lm: FrozenLM, Q: np.ndarray, k: int, exclude: np.ndarray | None = None) -> list[list[int]]:
        return prompt_ids(lm, neighbours(Q, self.memory, k, exclude), self.captions)


def _train_one(lm: FrozenLM, cfg: CaptionConfig, mcfg: MapperConfig, X: np.ndarray, seqs: list[list[int]],
               Xv: np.ndarray, seqs_v: list[list[int]], noise: float, lr: float,
               progress: bool, k: int = 0, ret: Retrieval | None = None,
               prompts_v: list[list[int]] | None = None) -> tuple[PrefixMapper, list[dict]]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    mapper = PrefixMapper(mcfg)
    opt = torch.optim.AdamW(mapper.parameters(), lr=lr, weight_decay=0.01)
    steps = max(1, -(-len(X) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps * cfg.epochs, pct_start=0.1)
    Xt = torch.from_numpy(X)
    best: tuple[float, dict, int] | None = None
    history: list[dict] = []
    with progress_bar(progress, f"caption mapper (noise {noise:g}, lr {lr:g}, k {k})", cfg.epochs, "steps") as bar:
        for epoch in range(1, cfg.epochs + 1):
            mapper.train()
            order = torch.randperm(len(X), generator=gen)
            ep_loss = 0.0
            for b in range(steps):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x = Xt[idx]
                if noise > 0:
                    x = x + noise * torch.randn(x.shape, generator=gen)
                rows = idx.tolist()
                # the k nearest OTHER captions of the noised embedding: composing, not copying
                prompts = ret.prompts(lm, x.numpy(), k, ret.self_rows[rows]) if k and ret is not None else None
                loss = caption_loss(lm, mapper(x), [seqs[i] for i in rows], prompts=prompts)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                ep_loss += float(loss.detach()) / steps
            v = val_nll(lm, mapper, Xv, seqs_v, prompts=prompts_v)
            history.append({"epoch": epoch, "loss": ep_loss, "val_nll": v})
            if best is None or _finite(v) < _finite(best[0]):  # a NaN (a diverged rate) is never the best
                best = (v, {k: t.detach().clone() for k, t in mapper.state_dict().items()}, epoch)
            bar.advance(msg=f"loss {ep_loss:.3f} val nll {v:.3f}")
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
    :class:`CaptionConfig` fields.  The val split's pairs choose the noise level, the epoch, the lr and the
    retrieval k (when grids are given).
    """
    return fit_captioner_by_k(space, manifest, lm, cache=cache, progress=progress, text=text, **config)[0]


def fit_captioner_by_k(space: Any, manifest: str | Path | Manifest, lm: str | FrozenLM = SMOLLM2, *,
                       cache: Any = None, progress: bool = True, text: str = "text",
                       **config: Any) -> tuple[Captioner, dict[int, Captioner]]:
    """:func:`fit_captioner`, and the captioner of each ``retrieval_k`` tried (at the chosen lr and noise, each with
    its own projection chosen on val): ``(chosen, {k: captioner})``."""
    text = text_modality(space, text)
    unknown = set(config) - set(CaptionConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown caption option(s): {', '.join(sorted(unknown))}")
    cfg = CaptionConfig(**config)
    if cfg.prefix_len < 1 or cfg.epochs < 1 or cfg.batch_size < 1 or cfg.max_train < 0 or (cfg.choose_n or 0) < 0:
        raise ValueError("prefix_len, epochs and batch_size must be at least 1, max_train and choose_n at least 0")
    ks = k_grid(cfg.retrieval_k)
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
    every = train  # the memory's captions: every train caption
    train = [r for r in train if r.has(src)]
    if cfg.max_train and len(train) > cfg.max_train:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train))[: cfg.max_train])
        train = [train[i] for i in keep]
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
    every_caps = [r.values[text] for r in every]
    X_text = space.embed(text, every_caps, cache=cache, progress=progress)
    rows = memory_rows(every_caps, cfg.memory_size, cfg.seed)
    memory = X_text[rows] / np.maximum(np.linalg.norm(X_text[rows], axis=1, keepdims=True), 1e-12)
    mem_caps = [every_caps[i] for i in rows]
    if max(ks) >= len(mem_caps):
        raise CaptionError(f"retrieval_k {max(ks)} needs more than {max(ks)} distinct train captions; the memory has "
                           f"{len(mem_caps)}")
    ret = Retrieval(memory, mem_caps, self_rows([r.values[text] for r in train], mem_caps))
    # the val queries retrieve from their own (select_on) embeddings, across the gap, as test queries do; a val
    # query that is its caption's own text embedding excludes that caption's duplicate, as training does (else it
    # retrieves itself, which no test query can: an optimistic val NLL and a wrong k)
    ex_v = self_rows([r.values[text] for r in val], mem_caps) if select == text else None
    prompts_v = {k: ret.prompts(lm, Xv, k, ex_v) if k else None for k in ks}
    # (lr, noise, k) -> (mapper, history, (projection, temperature, val nll by projection))
    runs: dict[tuple[float, float, int], tuple[PrefixMapper, list[dict], tuple[str, float, dict[str, float]]]] = {}

    def run(lr: float, s: float, k: int) -> float:
        """Train (once) the mapper of this rate, noise level and k; its val NLL at its best projection."""
        if (lr, s, k) not in runs:
            pv = prompts_v[k]
            m, hist = _train_one(lm, cfg, mcfg, X, seqs, Xv, seqs_v, s, lr, progress, k, ret, pv)
            ps = choose_projection(lambda Z, m=m, pv=pv: val_nll(lm, m, Z, seqs_v, prompts=pv), Xv, memory,
                                   projection=cfg.projection, temperature=cfg.memory_temperature,
                                   grid=cfg.temperature_grid)
            runs[lr, s, k] = (m, hist, ps)
            log.info("caption mapper, noise %g, lr %g, k %d: best val nll %.4f (%s), by projection %s", s, lr, k,
                     _kept_nll(hist), select, ps[2])
        return min((_finite(v) for v in runs[lr, s, k][2][2].values()), default=math.inf)

    k0 = ks[0]
    lr_at = sorted(grid)[len(grid) // 2] if len(lrs) > 1 else None
    lr_scores = {lr: run(lr, lr_at, k0) for lr in lrs} if lr_at is not None else {}
    if lr_scores and not any(math.isfinite(v) for v in lr_scores.values()):
        raise CaptionError(f"every learning rate of {sorted(lrs)} diverged (no finite val NLL): try smaller ones")
    lr_best = min(lrs, key=lambda lr: (lr_scores.get(lr, 0.0), lr))  # finite scores; a NaN counted as inf
    best = {s: run(lr_best, s, k0) for s in grid}
    if not any(math.isfinite(v) for v in best.values()):
        raise CaptionError(f"learning rate {lr_best:g} diverged at every noise level (no finite val NLL): try a "
                           "smaller one")
    chosen = min(best, key=lambda s: (best[s], s))
    k_scores = {k: run(lr_best, chosen, k) for k in ks}
    k_best = min(ks, key=lambda k: (k_scores[k], k))
    free = {k: val_nll(lm, None, Xv, seqs_v, prompts=prompts_v[k]) for k in ks if k}
    scores = {s: _kept_nll(runs[lr_best, s, k0][1]) for s in grid}
    seconds = round(time.perf_counter() - t0, 2)

    def captioner(k: int) -> Captioner:
        mapper, history, (projection, temperature, pscores) = runs[lr_best, chosen, k]
        info = {
            "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
            "selected_on": f"val {select} -> caption nll",
            "noise_val_nll": {str(s): (v if math.isfinite(v) else None) for s, v in scores.items()},  # None: diverged
            "lr": lr_best,
            # each rate's val NLL at its best projection, all at noise lr_selected_at_noise ({} without an lr grid)
            "lr_val_nll": {str(lr): (v if math.isfinite(v) else None) for lr, v in lr_scores.items()},
            "lr_selected_at_noise": lr_at,
            "projection_val_nll": {k: (v if math.isfinite(v) else None) for k, v in pscores.items()},
            # lr and noise are chosen at retrieval_selected_at_k, then each k of the grid at them
            "retrieval_val_nll": {str(k): (v if math.isfinite(v) else None) for k, v in k_scores.items()},
            "retrieval_selected_at_k": k0,
            # the frozen LM alone with the k retrieved captions (no prefix): the training-free reference
            "training_free_val_nll": {str(k): (v if math.isfinite(v) else None) for k, v in free.items()},
            "trained_on": src,
            "n_train": len(train),
            "n_val": len(val),
            "history": history,
            "seconds": seconds,
        }
        return Captioner(space, lm, mapper, text=text, noise_std=chosen, info=info, memory=memory,
                         projection=projection, memory_temperature=temperature, retrieval_k=k,
                         memory_captions=mem_caps)

    by_k = {k: captioner(k) for k in ks}
    # the training-free prompt's k: the grid's k > 0 with the lowest val NLL of the frozen LM alone (else the default)
    free_ok = [k for k, v in free.items() if math.isfinite(v)]
    if free_ok:
        for c in by_k.values():
            c.prompt_k = min(free_ok, key=lambda k: (free[k], k))
    if cfg.choose_n is not None:
        from .choice import choose_modes

        t1 = time.perf_counter()
        choose_modes(by_k[k_best], man, n=cfg.choose_n, seed=cfg.seed, cache=cache, method="greedy",
                     max_tokens=cfg.choose_max_tokens)
        by_k[k_best].info["choose_seconds"] = round(time.perf_counter() - t1, 2)
    return by_k[k_best], by_k

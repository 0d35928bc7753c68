"""Bench tasks for the alignment objectives (``anybind.losses``) and the geometry diagnostics.

* ``symile-xor``: the Symile paper's synthetic task (a, b random bits, c = a XOR b).  Every
  pair of modalities is independent, so pairwise InfoNCE cannot do better than chance at
  predicting one modality from the other two; Symile's multilinear inner product can.  In the
  same run: our Symile against the official ``symile`` package (same loss values on the same
  inputs, same accuracy with the same seeds) and the speed of the O(N^2) loss at batch 256.
* ``objectives``: every objective on Tux Paint image + text + sound retrieval and, with the
  same spaces, Fashion-MNIST zero-shot (never trained on), same seeds and budget, with the
  diagnostics of each space beside its numbers.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import Embedded
from . import TaskResult, task

# ------------------------------------------------------------------------------------------
# symile-xor
# ------------------------------------------------------------------------------------------


def xor_data(n: int, bits: int, seed: int) -> list[torch.Tensor]:
    """(a, b, c) float bit vectors with c = a XOR b (the paper's binary task with p_hat = 1)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, size=(n, bits))
    b = rng.integers(0, 2, size=(n, bits))
    return [torch.from_numpy(v.astype(np.float32)) for v in (a, b, a ^ b)]


class _XorEncoders(torch.nn.Module):
    def __init__(self, bits: int, dim: int, logit_scale_init: float):
        super().__init__()
        self.f = torch.nn.ModuleList([torch.nn.Linear(bits, dim) for _ in range(3)])
        self.logit_scale = torch.nn.Parameter(torch.tensor(float(logit_scale_init)))

    def forward(self, vs):
        return [F.normalize(f(v), dim=-1) for f, v in zip(self.f, vs)]


def _train_xor(kind: str, train, bits, dim, epochs, batch, lr, seed, logit_scale_init=-0.3):
    """kind: 'ours-n' | 'ours-n2' | 'official-n' | 'official-n2' | 'clip'."""
    from ..losses import InfoNCE, Symile

    torch.manual_seed(seed)
    model = _XorEncoders(bits, dim, logit_scale_init)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    if kind.startswith("official"):
        import symile

        off = symile.Symile("n" if kind.endswith("-n") else "n_squared")

        def loss_fn(r, ls):
            return off(r, ls.exp())
    elif kind.startswith("ours"):
        ours = Symile("n" if kind.endswith("-n") else "n2")

        def loss_fn(r, ls):
            return ours.forward_multi(r, ls)["symile"]
    else:
        clip = InfoNCE()

        def loss_fn(r, ls):
            return sum(clip(r[i], r[j], ls)["contrastive"] for i, j in ((0, 1), (0, 2), (1, 2))) / 3

    n = len(train[0])
    order_rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.from_numpy(order_rng.permutation(n))
        for k in range(0, n - batch + 1, batch):  # drop the last partial batch, as the paper does
            idx = order[k : k + batch]
            opt.zero_grad()
            loss = loss_fn(model([v[idx] for v in train]), model.logit_scale)
            loss.backward()
            opt.step()
    return model, time.perf_counter() - t0, float(loss.detach())


@torch.no_grad()
def _xor_accuracy(model, test, bits, scoring: str) -> dict[str, float]:
    """Predict each modality from the other two among all 2^bits candidates."""
    cands = torch.tensor([[(i >> k) & 1 for k in range(bits)] for i in range(2**bits)], dtype=torch.float32)
    r = model(test)
    out = {}
    names = "abc"
    for t in range(3):
        q = [r[k] for k in range(3) if k != t]
        rc = F.normalize(model.f[t](cands), dim=-1)
        if scoring == "mip":
            scores = (q[0] * q[1]) @ rc.T
        else:  # the paper's CLIP scoring: sum of the pairwise dot products
            scores = (q[0] * q[1]).sum(1, keepdim=True) + q[0] @ rc.T + q[1] @ rc.T
        label = (test[t] * (2 ** torch.arange(bits, dtype=torch.float32))).sum(1).long()
        out[f"acc/{names[t]}|rest"] = float((scores.argmax(1) == label).float().mean())
    out["acc/mean"] = float(np.mean([out[f"acc/{c}|rest"] for c in names]))
    return out


def _loss_agreement(seed: int) -> dict[str, float]:
    """Max |ours - official| over several random inputs (incl. the timed batch 256), float32, both modes."""
    import symile

    from ..losses import Symile

    worst_n2 = worst_n = worst_grad = 0.0
    g = torch.Generator().manual_seed(seed)
    for M, n, d in ((3, 256, 16), (3, 64, 16), (3, 128, 32), (4, 12, 8), (3, 7, 3)):
        embs = [F.normalize(torch.randn(n, d, generator=g), dim=-1) for _ in range(M)]
        ls = torch.rand((), generator=g) * math.log(100)
        a = [e.clone().requires_grad_() for e in embs]
        b = [e.clone().requires_grad_() for e in embs]
        theirs = symile.Symile("n_squared")(a, ls.exp())
        ours = Symile("n2").forward_multi(b, ls)["symile"]
        theirs.backward()
        ours.backward()
        worst_n2 = max(worst_n2, abs(theirs.item() - ours.item()))
        worst_grad = max(worst_grad, max(float((x.grad - y.grad).abs().max()) for x, y in zip(a, b)))
        torch.manual_seed(seed + n)
        theirs = symile.Symile("n")(embs, ls.exp())
        torch.manual_seed(seed + n)
        ours = Symile("n").forward_multi(embs, ls)["symile"]
        worst_n = max(worst_n, abs(theirs.item() - ours.item()))
    return {"agree/loss_n2_max_abs_diff": worst_n2, "agree/loss_n_max_abs_diff": worst_n, "agree/grad_n2_max_abs_diff": worst_grad}


def _timing(batch: int, dim: int, repeats: int, seed: int, threads: int = 1) -> dict[str, float]:
    """Forward+backward seconds (median of interleaved repeats) of the O(N^2) loss at ``batch``.

    Both run with the same number of torch threads, 1 by default: what anybind's trainer uses
    (``TrainConfig.threads``), and the setting whose ratio swings least with how busy the machine's
    other cores are.  2-core machine, d=16, with the tiled exp2 loss: 17.7x at 1 thread (d=256: 3.6x),
    quiet (the earlier loss over a materialised 256^3 tensor: 8.7x at 1 thread, 9.7x at 2, quiet).
    """
    import symile

    from ..losses import Symile

    g = torch.Generator().manual_seed(seed)
    embs = [F.normalize(torch.randn(batch, dim, generator=g), dim=-1).requires_grad_() for _ in range(3)]
    ls = torch.tensor(math.log(10.0), requires_grad=True)
    ours, theirs = Symile("n2"), symile.Symile("n_squared")

    def run_ours():
        ours.forward_multi(embs, ls)["symile"].backward()

    def run_theirs():
        theirs(embs, ls.exp()).backward()

    times: dict[str, list[float]] = {"ours": [], "official": []}
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_ours()
        run_theirs()
        _interleave(repeats, embs, times, (("ours", run_ours), ("official", run_theirs)))
    finally:
        torch.set_num_threads(before)
    o, t = statistics.median(times["ours"]), statistics.median(times["official"])
    return {f"speed/ours_s_d{dim}": o, f"speed/official_s_d{dim}": t, f"speed/ratio_d{dim}": t / o}


def _interleave(repeats, embs, times, runs) -> None:
    for _ in range(repeats):
        for name, fn in runs:
            for e in embs:
                e.grad = None
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)


@task("symile-xor", "Symile's synthetic XOR task: Symile vs pairwise InfoNCE, and vs the official symile package (values, accuracy, speed)")
def symile_xor(work: Path, cache=None, seed: int = 0, console=None, *, bits: int = 2, dim: int = 16, n_train: int = 10_000,
               n_test: int = 2_000, epochs: int = 8, batch: int = 100, lr: float = 0.1, seeds: int = 3) -> TaskResult:
    try:
        import symile  # noqa: F401
        have_official = True
    except ImportError:
        have_official = False
    train = xor_data(n_train, bits, seed)
    test = xor_data(n_test, bits, seed + 10_000)
    kinds = ["ours-n", "ours-n2", "clip"] + (["official-n"] if have_official else [])
    per: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    for s in range(seed, seed + seeds):
        for kind in kinds:
            model, secs, last = _train_xor(kind, train, bits, dim, epochs, batch, lr, s)
            acc = _xor_accuracy(model, test, bits, "clip" if kind == "clip" else "mip")
            acc["train_seconds"] = secs
            acc["final_train_loss"] = last
            per[kind].append(acc)
            if console:
                console.print(f"  {kind:12s} seed {s}: mean accuracy {acc['acc/mean']:.3f} ({secs:.1f} s)", highlight=False)

    def summary(rows):
        out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        out["acc/mean_std_over_seeds"] = float(np.std([r["acc/mean"] for r in rows]))
        out["acc/chance"] = 1 / 2**bits
        return out

    metrics = summary(per["ours-n"])
    baselines = {"symile O(N^2) (ours)": summary(per["ours-n2"]), "pairwise InfoNCE": summary(per["clip"])}
    notes = [
        f"{bits}-bit a, b ~ Bernoulli(0.5), c = a XOR b; linear encoders to {dim}-d, AdamW lr {lr}, batch {batch}, "
        f"{epochs} epochs of {n_train} triples, {seeds} seeds; test {n_test} triples, predict each modality from the "
        f"other two among {2**bits} candidates (chance {1 / 2**bits:.3f})",
    ]
    if have_official:
        baselines["symile O(N) (official package)"] = summary(per["official-n"])
        diff = [abs(a["acc/mean"] - b["acc/mean"]) for a, b in zip(per["ours-n"], per["official-n"])]
        metrics["agree/acc_max_abs_diff_vs_official"] = float(max(diff))
        metrics.update(_loss_agreement(seed))
        metrics.update(_timing(256, dim, 11, seed))
        metrics.update(_timing(256, 256, 3, seed))
        notes.append(
            f"official symile package: loss |diff| O(N^2) {metrics['agree/loss_n2_max_abs_diff']:.2e}, "
            f"O(N) {metrics['agree/loss_n_max_abs_diff']:.2e} (same inputs, float32); "
            f"O(N^2) forward+backward at batch 256: {metrics[f'speed/ratio_d{dim}']:.1f}x faster at d={dim}, "
            f"{metrics['speed/ratio_d256']:.1f}x at d=256 (median of interleaved repeats, "
            "1 torch thread each, as anybind trains)"
        )
    else:
        notes.append("official `symile` package not installed (pip install symile --no-deps): comparison skipped")
    return TaskResult(metrics=metrics, baselines=baselines,
                      config={"bits": bits, "dim": dim, "n_train": n_train, "n_test": n_test, "epochs": epochs,
                              "batch": batch, "lr": lr, "seeds": seeds}, notes=notes)


# ------------------------------------------------------------------------------------------
# objectives on Tux Paint
# ------------------------------------------------------------------------------------------

OBJECTIVES: dict[str, str] = {
    "infonce": "infonce",
    "siglip": "siglip",
    "infonce+unif+align": "infonce+uniformity:1+alignment:1",
    "infonce+intra": "infonce+intra:0.5",
    "infonce+m2mix": "infonce+m2mix:0.5",
    "symile": "symile",
    "symile-n2": "symile-n2",
}
DIAG_KEYS = (
    "diag/gap/image-text",
    "diag/separability/image-text",
    "diag/alignment/image-text",
    "diag/pos_sim/image-text",
    "diag/neg_sim/image-text",
    "diag/uniformity/all",
    "diag/hubness/text->image",
    "diag/hubness/image->text",
    "diag/erank/image",
    "diag/erank/text",
    "diag/gap/audio-text",
)


def split_embeddings(space, fs, split: str) -> dict[str, Embedded]:
    """Embeddings of a split straight from the cached features (no encoder call).

    Third element: a content key per item (a hash of its frozen features), so that
    identical items (two stamps captioned "A flower.") count as interchangeable, as
    :func:`anybind.evaluate.embed_records` does with the encoders' content keys.
    """
    import hashlib

    idx = fs.split_idx(split)
    out = {}
    for m in space.modalities:
        sel = idx[fs.rows[m][idx] >= 0]
        if len(sel):
            F_ = fs.get(m, sel)
            keys = [hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in F_]
            out[m] = Embedded([fs.records[i].id for i in sel], space.project(m, F_), keys)
    return out


def _summarise(res: dict[str, float]) -> dict[str, float]:
    dirs = sorted({k.rsplit("/", 1)[0] for k in res if "->" in k and not k.startswith("diag/")})
    out = {}
    for k in ("R@1", "R@10"):
        vals = [res[f"{d}/{k}"] for d in dirs if f"{d}/{k}" in res]
        if vals:
            out[f"mean/{k}"] = float(np.mean(vals))
    for d in ("image->text", "text->image", "audio->text", "text->audio", "audio->image", "image->audio"):
        if f"{d}/R@1" in res:
            out[f"{d}/R@1"] = res[f"{d}/R@1"]
    return out


def _fashion_mnist_test(work: Path, limit: int, console=None) -> list:
    """The first ``limit`` Fashion-MNIST test records ([] when ``limit`` is 0 or the data set is
    not installed: the objectives are then compared on Tux Paint alone)."""
    if limit <= 0:
        return []
    from ..corpora.fashion_mnist import build_fashion_mnist
    from ..data.manifest import load_manifest
    from .tasks_corpora import build_once

    try:
        path = build_once(work, "fashion-mnist", build_fashion_mnist)
    except Exception as e:  # noqa: BLE001 -- reported, and the task goes on with Tux Paint alone
        if console:
            console.print(f"  Fashion-MNIST unavailable ({e}); objectives compared on Tux Paint alone")
        return []
    return load_manifest(path, modalities=["image"], check_media=False).split("test")[:limit]


def run_objectives(work: Path, *, cache=None, seeds=(0,), objectives: dict[str, str] | None = None, epochs: int = 200,
                   console=None, modalities=("image", "text", "audio"), split: str = "test",
                   fashion_mnist: int = 10_000) -> dict[str, dict[str, Any]]:
    """Train every objective on the same cached Tux Paint features; retrieval + diagnostics on
    ``split``, and Fashion-MNIST zero-shot on its first ``fashion_mnist`` test images (5-prompt
    ensemble; Symile spaces score with the multilinear inner product)."""
    from ..cache import FeatureCache
    from ..data.manifest import load_manifest
    from ..diagnostics import diagnostics
    from ..encoders.registry import default_spec
    from ..evaluate import retrieval_from_embeddings
    from ..multilinear import mip_retrieval_from_embeddings, missing_embeddings
    from ..train import FeatureSet, TrainConfig, train_space
    from .tuxpaint import prepare_tuxpaint

    manifest = prepare_tuxpaint(work, console)
    man = load_manifest(manifest, modalities=list(modalities), progress=console is not None)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    fs = FeatureSet.from_manifests([man], {m: default_spec(m) for m in modalities}, fc, progress=console is not None)
    fm_test = _fashion_mnist_test(work, fashion_mnist, console) if {"image", "text"} <= set(modalities) else []
    objectives = objectives or OBJECTIVES
    out: dict[str, dict[str, Any]] = {}
    for name, spec in objectives.items():
        runs = []
        for s in seeds:
            t0 = time.perf_counter()
            space = train_space(fs, TrainConfig(loss=spec, seed=s, epochs=epochs), progress=False)
            secs = time.perf_counter() - t0
            embs = split_embeddings(space, fs, split)
            miss = missing_embeddings(space)
            ret = mip_retrieval_from_embeddings(embs, miss) if miss else retrieval_from_embeddings(embs)
            row = _summarise(ret)
            if miss:  # the same space scored with plain cosine, for reference
                row["cosine/mean/R@1"] = _summarise(retrieval_from_embeddings(embs))["mean/R@1"]
            if fm_test:
                from ..evaluate import zero_shot
                from .tasks_corpora import FM_NAMES, FM_TEMPLATES

                for key, center in (("fashion-mnist/accuracy", False), ("fashion-mnist/accuracy_centred", True)):
                    row[key] = zero_shot(space, fm_test, "image", "class", classes=list(FM_NAMES), names=FM_NAMES.get,
                                         templates=FM_TEMPLATES, cache=fc, center=center)["accuracy"]
            diag = diagnostics(embs)
            row.update({k: diag[k] for k in DIAG_KEYS if k in diag})
            row["train_seconds"] = secs
            row["best_epoch"] = float(space.info["training"]["best_epoch"])
            runs.append(row)
            if console:
                console.print(f"  {name:20s} seed {s}: mean R@1 {row['mean/R@1']:.3f}, R@10 {row['mean/R@10']:.3f} "
                              f"(best epoch {row['best_epoch']:.0f}, {secs:.0f} s)", highlight=False)
        keys = runs[0].keys()
        agg = {k: float(np.mean([r[k] for r in runs])) for k in keys}
        if len(runs) > 1:
            for k in ("mean/R@1", "mean/R@10", "image->text/R@1", "text->image/R@1", "fashion-mnist/accuracy"):
                if k in runs[0]:
                    agg[f"{k}_std"] = float(np.std([r[k] for r in runs]))
        out[name] = {"spec": spec, "summary": agg, "runs": runs}
    return out


TABLE_COLUMNS = (
    ("mean/R@1", "mean R@1"), ("mean/R@1_std", "± seeds"), ("mean/R@10", "mean R@10"),
    ("image->text/R@1", "i→t R@1"), ("text->image/R@1", "t→i R@1"), ("fashion-mnist/accuracy", "FM 0-shot"),
    ("diag/gap/image-text", "gap i-t"), ("diag/separability/image-text", "separ. i-t"),
    ("diag/alignment/image-text", "align i-t"), ("diag/uniformity/all", "uniform."),
    ("diag/hubness/text->image", "hub t→i"), ("diag/erank/image", "erank i"), ("diag/erank/text", "erank t"),
    ("best_epoch", "best ep"),
)


def objectives_table(summaries: dict[str, dict[str, float]]):
    """One row per objective: retrieval beside the diagnostics of the space it produced."""
    from rich.table import Table

    t = Table(title="objectives: Tux Paint retrieval (test split), Fashion-MNIST zero-shot")
    t.add_column("objective")
    for _, label in TABLE_COLUMNS:
        t.add_column(label, justify="right")
    for name, m in summaries.items():
        t.add_row(name, *["-" if m.get(k) is None else f"{m[k]:.3f}" for k, _ in TABLE_COLUMNS])
    return t


@task("objectives", "Every alignment objective on Tux Paint image+text+sound retrieval and Fashion-MNIST zero-shot, same "
                    "seeds and budget, diagnostics beside each (--opt fashion_mnist=N test images, 0 to skip)")
def objectives_task(work: Path, cache=None, seed: int = 0, console=None, *, seeds: int = 3, epochs: int = 200,
                    fashion_mnist: int = 10_000) -> TaskResult:
    res = run_objectives(work, cache=cache, seeds=tuple(range(seed, seed + seeds)), epochs=epochs, console=console,
                         fashion_mnist=int(fashion_mnist))
    if console:
        console.print(objectives_table({k: v["summary"] for k, v in res.items()}), width=max(console.width, 190))
    ref = res["infonce"]["summary"]
    baselines = {name: r["summary"] for name, r in res.items() if name != "infonce"}
    notes = [
        f"{seeds} seed(s) per objective, epochs <= {epochs} with early stopping on val (same for all); "
        "retrieval on the test split: mean over the 6 directions of image/text/audio; Symile spaces are scored "
        "with the multilinear inner product (the absent third modality = its learnt 'missing' embedding), "
        "cosine/mean/R@1 shows the same space scored by cosine",
    ]
    if "fashion-mnist/accuracy" in ref:
        notes.append("fashion-mnist: the same spaces (bound on Tux Paint only, plain encoders, no label bridge) classify "
                     f"the first {int(fashion_mnist)} Fashion-MNIST test images among 10 class prompts (5-template "
                     "ensemble; chance 0.100); _centred subtracts the test images' mean embedding first")
    elif int(fashion_mnist) > 0:
        notes.append("fashion-mnist zero-shot SKIPPED: the data set could not be built (Debian package "
                     "dataset-fashion-mnist; the reason is printed above): objectives compared on Tux Paint alone")
    for name, r in res.items():
        if name == "infonce":
            continue
        d = r["summary"]["mean/R@1"] - ref["mean/R@1"]
        noise = max(ref.get("mean/R@1_std", 0.0), r["summary"].get("mean/R@1_std", 0.0))
        it = {k: r["summary"].get(k, float("nan")) - ref.get(k, float("nan")) for k in ("image->text/R@1", "text->image/R@1")}
        fm = r["summary"].get("fashion-mnist/accuracy", float("nan")) - ref.get("fashion-mnist/accuracy", float("nan"))
        notes.append(f"{name} ({r['spec']}): mean R@1 {d:+.3f} vs InfoNCE (seed std {noise:.3f}); "
                     f"image->text R@1 {it['image->text/R@1']:+.3f}, text->image R@1 {it['text->image/R@1']:+.3f}"
                     + (f"; Fashion-MNIST zero-shot {fm:+.3f}" if fm == fm else ""))
    return TaskResult(metrics=ref, baselines=baselines,
                      config={"objectives": {k: v["spec"] for k, v in res.items()}, "seeds": seeds, "epochs": epochs},
                      notes=notes)

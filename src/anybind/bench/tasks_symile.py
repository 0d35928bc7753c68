"""Bench task ``symile-xor``: the Symile paper's synthetic task (a, b random bits, c = a XOR b).  Every
pair of modalities is independent, so pairwise InfoNCE cannot do better than chance at predicting one
modality from the other two; Symile's multilinear inner product can.  In the same run: our Symile against
the official ``symile`` package (same loss values on the same inputs, same accuracy with the same seeds) and
the speed of the O(N^2) loss at batch 256.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..numerics import torch_threads
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
    with torch_threads(threads):
        run_ours()
        run_theirs()
        _interleave(repeats, embs, times, (("ours", run_ours), ("official", run_theirs)))
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

"""The kernel start (issue 16) in the streaming / sharded trainer and the distributed solve: its support drawn in
one pass over the shards (the same rows whatever the shard size, at most MAX_SUPPORT held), the same branch as the
in-memory fit on real Tux Paint features, and every rank holding rank 0's branch."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.projectors import Projector, ProjectorConfig
from anybind.ridge_kernel import SupportSample, row_keys
from test_scale_solve_once_errors import _free_port


@pytest.fixture(scope="module")
def tux200(tux_subset):
    """The first 200 real Tux Paint stamps, every fifth in val (160 training pairs): enough that the kernel beats the
    linear start on val (60 are not)."""
    return tux_subset(200, 5, "tux200")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 90), size=st.integers(1, 40), cuts=st.lists(st.integers(1, 89), max_size=6),
       seed=st.integers(0, 2**32))
def test_the_support_is_the_same_rows_however_the_pairs_are_blocked(n, size, cuts, seed):
    Z = torch.arange(n, dtype=torch.float64).unsqueeze(1).repeat(1, 3)
    T = -Z[:, :2]
    one, blocked = SupportSample(seed, size), SupportSample(seed, size)
    one.add(Z, T)
    edges = [0, *sorted({c for c in cuts if c < n}), n]
    for a, b in zip(edges, edges[1:]):
        blocked.add(Z[a:b], T[a:b])
    (z1, t1), (z2, t2) = one.rows(), blocked.rows()
    assert torch.equal(z1, z2) and torch.equal(t1, t2)
    rows = z1[:, 0].long().numpy()
    assert len(rows) == min(n, size) and np.all(np.diff(rows) > 0)  # kept in row order
    keys = row_keys(seed, np.arange(n))  # the smallest keys: a row outside never has a smaller key than one inside
    assert len(rows) == n or keys[rows].max() <= np.delete(keys, rows).min()


def _fit(man, cache, sharded=True, seed=0, **kw):
    from anybind.scale.sharded import fit_sharded

    common = dict(modalities=["image", "text"], cache=cache, epochs=0, progress=False, seed=seed)
    return fit_sharded(man.path, **common, **kw) if sharded else Space.fit(man, select_se=0.0, **common)  # the
    # streaming trainer has no standard-error rule (recipe auto's on a val this small): compared without it


def test_the_sharded_fit_gets_the_in_memory_kernel_branch_on_real_pairs(tux200, shared_cache, caplog):
    """160 training pairs (<= MAX_SUPPORT): the sharded fit, in one shard or in shards of 7 rows, keeps the kernel
    branch the in-memory fit keeps, chosen on val from the same grid; the lineage records it."""
    mem = _fit(tux200, shared_cache, sharded=False)
    with caplog.at_level("INFO", logger="anybind.robust"):
        one = _fit(tux200, shared_cache, rows_per_shard=4096)
    small = _fit(tux200, shared_cache, rows_per_shard=7)
    assert "start: 'image' starts at its label bridge plus a kernel branch" in caplog.text
    assert "off in this trainer" not in caplog.text
    want = mem.info["lineage"][-1]["ridge_start"]["image"]["kernel"]
    assert want["kept"] is True  # real Tux Paint pairs: the kernel beats the linear start on val (else no test)
    a = mem.projectors["image"]
    for sp in (one, small):
        rec = sp.info["lineage"][-1]["ridge_start"]["image"]["kernel"]
        assert rec["kept"] is True and (rec["tau"], rec["alpha"]) == (want["tau"], want["alpha"])
        assert rec["support"] == rec["pairs"] == want["support"] == 160
        assert rec["grid"] == pytest.approx(want["grid"], abs=1e-4)
        b = sp.projectors["image"]
        assert b.cfg.kernel == a.cfg.kernel == 160 and b.cfg.kernel_tau == a.cfg.kernel_tau
        # the same pairs in the same order (the streamed standardisation agrees with the in-memory one to ~1e-7,
        # not to the bit: tests/test_loop.py), the same coefficients and linear map to float rounding
        assert torch.allclose(b.kernel_support, a.kernel_support, atol=1e-6)
        assert float((b.kernel_coef - a.kernel_coef).norm() / a.kernel_coef.norm()) < 1e-3
        assert float((b.linear.weight - a.linear.weight).norm() / a.linear.weight.norm()) < 1e-4
        x = np.random.default_rng(0).normal(size=(5, a.cfg.in_dim)).astype(np.float32) * a.scale.numpy() + \
            a.mean.numpy()
        assert np.allclose(sp.project("image", x), mem.project("image", x), atol=1e-4)


def test_the_sharded_fit_draws_one_seeded_subset_above_the_cap(tux200, shared_cache, monkeypatch):
    """Above MAX_SUPPORT the support is a seeded subset drawn while the shards are read (what the kernel family is
    fitted on, kept or not): the same rows for the same seed whatever the shard size, the in-memory fit's rows, other
    rows for another seed; never more than MAX_SUPPORT + one shard held."""
    from anybind import ridge, ridge_kernel

    monkeypatch.setattr(ridge_kernel, "MAX_SUPPORT", 20)
    seen, held = {}, []
    real_start, real_add = ridge.kernel_start, ridge_kernel.SupportSample.add

    def spy_start(Z, T, *a, **kw):
        seen[key] = (Z.clone(), T.clone(), kw["n_all"])
        return real_start(Z, T, *a, **kw)

    def spy_add(self, Z, T):
        real_add(self, Z, T)
        held.append(len(self.Z))

    monkeypatch.setattr(ridge, "kernel_start", spy_start)
    monkeypatch.setattr(ridge_kernel.SupportSample, "add", spy_add)
    for key in ((4096, 0), (5, 0), (4096, 1), ("memory", 0)):
        _fit(tux200, shared_cache, sharded=key[0] != "memory", seed=key[1],
             **({"rows_per_shard": key[0]} if key[0] != "memory" else {}))
    (z, t, n), (z5, t5, _), (z1, _, _), (zm, tm, _) = (seen[k] for k in ((4096, 0), (5, 0), (4096, 1), ("memory", 0)))
    assert z.shape[0] == 20 and n == 160
    assert torch.equal(z, z5) and torch.equal(t, t5)  # shards of 5 rows or one shard: the same pairs
    assert torch.allclose(z, zm, atol=1e-6) and torch.allclose(t, tm, atol=1e-6)  # the in-memory fit's pairs
    assert not torch.equal(z, z1)
    assert max(held) <= 20  # the sample never holds more than MAX_SUPPORT rows between blocks


def _worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    import torch.distributed as dist

    from anybind.scale.train import solve_once

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    try:
        torch.manual_seed(rank)  # every worker's weights differ before the solve
        pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
        if case == "drop" or rank == 1:  # rank 1 holds a branch of another size, or rank 0 drops its branch
            pr.set_kernel(torch.randn(3 + rank, 6), torch.randn(3 + rank, 4), 0.3 + rank)

        def solve():  # what the ridge start does on rank 0: new weights, a kernel branch set (or removed)
            g = torch.Generator().manual_seed(7)
            with torch.no_grad():
                pr.linear.weight.copy_(torch.randn(4, 6, generator=g))
            pr.set_kernel(None) if case == "drop" else pr.set_kernel(torch.randn(5, 6, generator=g),
                                                                        torch.randn(5, 4, generator=g), 0.5)
            return "solved"

        got = solve_once(solve if rank == 0 else (lambda: "not me"), {"image": pr}, True)
        y = pr(torch.linspace(-1, 1, 12).reshape(2, 6))
        Path(f"{out}/{rank}.json").write_text(json.dumps({"got": got, "kernel": [pr.cfg.kernel, pr.cfg.kernel_tau],
                                                          "y": y.tolist()}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", ["set", "drop"])
def test_every_rank_holds_rank_0s_kernel_branch_after_a_shared_solve(tmp_path, case):
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path), case), nprocs=2)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1))
    assert r0["got"] == r1["got"] == "solved"
    assert r0["kernel"] == r1["kernel"] == ([5, 0.5] if case == "set" else [0, 0.0])
    assert r0["y"] == r1["y"]  # the same function on both ranks, bit for bit


@pytest.mark.parametrize("refit_does", ["drop", "resize"])
def test_a_refit_dropped_on_val_gives_back_the_kernel_branch_it_replaced(refit_does):
    """The attention phase's ridge refit re-fits every projector's kernel branch (or drops it); when val says the
    refit is worse, the start before it comes back whole, its branch included (before: a load error)."""
    from anybind.attention import refit_after_attention

    pr = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", input_dropout=0.0, dropout=0.0)).eval()
    pr.set_kernel(torch.randn(5, 6), torch.randn(5, 4), 0.3)
    x = torch.randn(3, 6)
    want = pr(x)

    def refit():
        with torch.no_grad():
            pr.linear.weight.add_(1.0)
        pr.set_kernel(None) if refit_does == "drop" else pr.set_kernel(torch.randn(7, 6), torch.randn(7, 4), 1.0)
        return {"refit": True}

    phase = {"best_val": 0.9}
    assert refit_after_attention({"image": pr}, phase, refit, lambda epoch: 0.5) is None
    assert phase["ridge_refit"].startswith("dropped") and (pr.cfg.kernel, pr.cfg.kernel_tau) == (5, 0.3)
    assert torch.equal(pr(x), want)

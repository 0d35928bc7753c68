"""FedAvg given the public pairs too (issue 19): ``server_public=True`` trains the averaged projectors on the public
pairs each round, as CreamFL's server does, so the two compare on the same data; nothing more leaves a client."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from federated_helpers import watching
from test_federated import CFG, KINDS, world  # noqa: F401  (the fixture)

from anybind import load_manifest
from anybind.federated import federate
from anybind.federated_parties import Message
from anybind.projectors import project


def _public_loss(space, world) -> float:  # noqa: F811
    """InfoNCE of ``space`` over all the public pairs at once (both directions, temperature 0.05)."""
    *_, ppath, row_of, feats = world
    ids = [r.id for r in load_manifest(ppath, kinds=KINDS).records if r.split == "train"]
    rows = [row_of[i] for i in ids]
    with torch.no_grad():
        a, b = (F.normalize(project(space.projectors[m].eval(), feats[m][rows]), dim=-1) for m in ("sa", "sb"))
    logits = a @ b.T / 0.05
    target = torch.arange(len(ids))
    return float((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)


def _run(world, seed=0, rounds=3, **kw):  # noqa: F811
    """A federation whose every message is kept, and the global weights each client received, in order."""
    tmp, _, specs, cpaths, ppath, *_ = world
    seen: list[tuple[str, int, Message]] = []
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="fedavg",
                  on_message=lambda way, i, msg: seen.append((way, i, msg)),
                  **{**CFG, "rounds": rounds, "patience": rounds, "seed": seed, **kw})
    return sp, seen


def _average(replies: list[Message]) -> dict[str, np.ndarray]:
    n = np.asarray([float(r.counts["n"]) for r in replies])
    return {k: sum(w * r.arrays[k] for w, r in zip(n / n.sum(), replies)) for k in replies[0].arrays}


def test_fedavg_with_public_pairs_trains_the_average_on_them(world):  # noqa: F811
    plain, plain_seen = _run(world)
    pub, pub_seen = _run(world, server_public=True)
    # the weights differ from plain FedAvg's, and the public pairs are what the server trained on: their loss is lower
    assert any(not torch.equal(plain.projectors[m].state_dict()[k], v)
               for m in ("sa", "sb") for k, v in pub.projectors[m].state_dict().items())
    assert _public_loss(pub, world) < _public_loss(plain, world) - 1.0  # measured: 0.56 vs 3.03
    # where plain FedAvg sends back the average of what the clients sent, this server sends what it made of the
    # average on the public pairs: the next round's global weights are not the average
    for seen, trained in ((plain_seen, False), (pub_seen, True)):
        ups = [m for way, _, m in seen if way == "up" and m.kind == "weights"]
        downs = [m for way, i, m in seen if way == "down" and m.kind == "global" and i == 0]
        assert len(ups) == 3 * 3 and len(downs) == 3 + 1  # round 0 is the start
        for r in range(3):
            avg, glob = _average(ups[3 * r: 3 * r + 3]), downs[r + 1].arrays
            same = all(np.allclose(avg[k], glob[k], atol=1e-6) for k in avg if k != "logit_scale")
            assert same != trained, (r, trained)
    # the start too: plain FedAvg starts untrained, this one from the public pairs
    assert not np.array_equal(plain_seen[0][2].arrays["sa.linear.weight"], pub_seen[0][2].arrays["sa.linear.weight"])
    assert pub.info["lineage"][-1]["config"]["server_public"] is True
    assert plain.info["lineage"][-1]["config"]["server_public"] is False


def test_fedavg_with_public_pairs_sends_nothing_more_from_a_client(world):  # noqa: F811
    tmp, _, specs, cpaths, ppath, *_ = world
    plain, plain_seen = _run(world, rounds=2)
    sp, seen = _run(world, rounds=2, server_public=True)
    up = [m for way, _, m in seen if way == "up"]
    assert {m.kind for m in up} == {"val", "weights"}
    assert [(m.kind, sorted(m.arrays), {k: a.shape for k, a in m.arrays.items()}, sorted(m.counts)) for m in up] == \
        [(m.kind, sorted(m.arrays), {k: a.shape for k, a in m.arrays.items()}, sorted(m.counts))
         for way, _, m in plain_seen if way == "up"]
    assert all(not k.endswith((".mean", ".scale")) for m in up for k in m.arrays if k != "logit_scale")
    private = [r.id for p in cpaths for r in load_manifest(p, kinds=KINDS).records]
    text = json.dumps([[m.kind, sorted(m.arrays), sorted(m.counts)] for m in up]) + json.dumps(sp.info)
    assert not any(pid in text for pid in private) and not any(str(p) in text for p in cpaths)
    assert sp.info["lineage"][-1]["bytes"]["up"] == plain.info["lineage"][-1]["bytes"]["up"]

    # the clients answer the server's messages only: the public pairs' training happens on the server, which holds
    # no client's features (the clients' handlers are called as many times as in plain FedAvg)
    calls: list[str] = []

    def watch(i, c, msg, handle):
        calls.append(msg.kind)
        return handle(msg)

    tmp, _, specs, cpaths, ppath, *_ = world
    federate(cpaths, ppath, encoders=specs, cache=tmp / "c", method="fedavg", server_public=True,
             runner=watching(watch), **{**CFG, "rounds": 2, "patience": 2})
    assert calls == [m.kind for way, _, m in plain_seen if way == "down"]


def test_fedavg_with_public_pairs_is_deterministic_with_a_seed(world):  # noqa: F811
    a, b, c = (_run(world, seed=s, rounds=2, server_public=True)[0] for s in (4, 4, 5))
    assert a.identity() == b.identity() != c.identity()
    assert a.info["training"]["history"] == b.info["training"]["history"]


def test_server_public_is_a_fedavg_option_refused_elsewhere_in_one_line(world):  # noqa: F811
    tmp, _, specs, cpaths, ppath, *_ = world
    for kw, err, what in [({"method": "creamfl", "server_public": True}, ValueError,
                           "server_public applies to method 'fedavg'"),
                          ({"method": "fedavg", "server_public": "yes"}, TypeError, "server_public must be True or False")]:
        with pytest.raises(err, match=what) as e:
            federate(cpaths, ppath, encoders=specs, cache=tmp / "c", **{**CFG, **kw})
        assert "\n" not in str(e.value)


def test_the_study_and_bench_row_of_fedavg_with_public_pairs(world):  # noqa: F811
    from anybind.bench.tasks_keep import FEDAVG_PUBLIC, FEDAVG_PUBLIC_ROW, _goal
    from anybind.federated_study import federated_study

    tmp, path, specs, *_ = world
    rows = federated_study(load_manifest(path, kinds=KINDS), k=3, public_fraction=0.1, pair=("sa", "sb"),
                           encoders=specs, config={**CFG, "rounds": 3}, cache=tmp / "c", fit_too=False,
                           methods=("fedavg",), variants={FEDAVG_PUBLIC_ROW: FEDAVG_PUBLIC})
    by = {r["name"]: r for r in rows}
    avg, pub = by["fedavg"], by[FEDAVG_PUBLIC_ROW]
    # the same clients and the same traffic; the server's work on the public pairs changes the result
    assert pub["records"] == avg["records"] and pub["bytes/round"] == avg["bytes/round"] > 0
    assert (pub["test R@1"], pub["val"]) != (avg["test R@1"], avg["val"])
    # the goal asks CreamFL to be ahead of both FedAvg rows
    both = {"fedavg": 0.12, FEDAVG_PUBLIC_ROW: 0.17}
    assert "not met" in _goal(0.16, both, 0.18, "") and f"{FEDAVG_PUBLIC_ROW} 0.170" in _goal(0.16, both, 0.18, "")
    assert " met (" in _goal(0.18, both, 0.2, "") and "with or without the public pairs" in _goal(0.18, both, 0.2, "")
    assert " met (" in _goal(0.16, {"fedavg": 0.12}, 0.18, "")
    # each row's per-query test hits: 0/1, both directions of every test pair, their mean the row's R@1
    n_test = sum(r.split == "test" for r in load_manifest(path, kinds=KINDS).records)
    for r in rows:
        if r["hits"] is not None:
            assert len(r["hits"]) == 2 * n_test and set(np.unique(r["hits"])) <= {0.0, 1.0}
            assert np.mean(r["hits"]) == pytest.approx(r["test R@1"], abs=1e-12)
    assert by["clients alone (mean)"]["hits"] is None


def test_the_goal_line_calls_ahead_only_when_the_paired_interval_is_above_zero():
    """'Ahead of FedAvg' is a paired bootstrap over the test queries of every seed, not a difference of means: the same
    0.01 lead is 'met' when the per-query differences are consistent and 'not met' when they are noise."""
    from anybind.bench.tasks_keep import _goal, paired_gaps

    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.2).astype(float)

    def seeds(cream_hits):
        return [[{"name": "creamfl", "hits": c}, {"name": "fedavg", "hits": base}] for c in cream_hits]

    steady = base.copy()
    steady[np.flatnonzero(base == 0)[:4]] = 1  # 4 more queries right, none lost, on each of 3 seeds
    noisy = base.copy()
    flip = rng.choice(400, 120, replace=False)  # 120 queries flipped at random: a lead of the same size, by chance
    noisy[flip] = 1 - noisy[flip]
    noisy[np.flatnonzero(noisy == 1)[: int(noisy.sum() - base.sum() - 4)]] = 0  # the same +4 queries overall
    assert noisy.sum() - base.sum() == steady.sum() - base.sum() == 4
    g_steady, g_noisy = (paired_gaps(seeds([h] * 3), "creamfl", ["fedavg"])["fedavg"] for h in (steady, noisy))
    for mean, lo, hi in (g_steady, g_noisy):
        assert mean == pytest.approx(0.01) and lo <= mean <= hi
    assert g_steady[1] > 0 > g_noisy[1]
    met = _goal(0.21, {"fedavg": 0.20}, 0.22, "", {"fedavg": g_steady})
    assert " met (" in met and "95 % paired bootstrap" in met and f"[{g_steady[1]:+.3f}, {g_steady[2]:+.3f}]" in met
    assert "not met" in _goal(0.21, {"fedavg": 0.20}, 0.22, "", {"fedavg": g_noisy})
    assert " met (" in _goal(0.21, {"fedavg": 0.20}, 0.22, "")  # without intervals: the means decide, as before


def test_pair_hits_are_the_queries_behind_pair_r1(world):  # noqa: F811
    from anybind.lifecycle import pair_hits, pair_r1

    tmp, path, specs, cpaths, ppath, *_ = world
    sp = federate(cpaths, ppath, encoders=specs, cache=tmp / "c", **{**CFG, "method": "fedavg", "rounds": 2})
    man = load_manifest(path, kinds=KINDS)
    hits = pair_hits(sp, man, "sa", "sb", cache=tmp / "c")
    n_test = sum(r.split == "test" for r in man.records)
    assert sorted(hits) == ["sa->sb", "sb->sa"] and all(len(h) == n_test for h in hits.values())
    assert (hits["sa->sb"].mean() + hits["sb->sa"].mean()) / 2 == pair_r1(sp, man, "sa", "sb", cache=tmp / "c")
    assert 0 < hits["sa->sb"].sum() < n_test  # neither all right nor all wrong: the test can tell queries apart


def test_cli_federate_server_public(world, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from anybind import Space
    from anybind.cli import app

    tmp, path, specs, *_ = world
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    args = ["federate", "--data", str(path), "--clients", "3", "--public-fraction", "0.1", *enc, "--cache",
            str(tmp / "c"), "--rounds", "2", "--dim", "16", "--hidden", "32", "--server-public"]
    r = CliRunner().invoke(app, [*args, "--method", "fedavg", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    e = Space.load(tmp_path / "s").info["lineage"][-1]
    assert e["method"] == "fedavg" and e["config"]["server_public"] is True
    from anybind.bench.tasks_keep import FEDAVG_PUBLIC

    # the flag is the bench's row: its server epochs a round are the ones chosen on val, not CreamFL's 10
    assert e["config"]["server_epochs"] == FEDAVG_PUBLIC["server_epochs"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s2")])  # the default method, creamfl
    assert r.exit_code == 2 and "server_public applies to method 'fedavg'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "s2").exists()


# ----------------------------------------------------------------------------- a client's file in the public set
def _pictures(folder, names, seed):
    """Small PNGs of random pixels (each its own bytes), one per name; their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for n in names:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / n)
        out.append(folder / n)
    return out


def _manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_manifest(path, modalities=["image", "text"])


def test_a_client_file_copied_under_another_name_into_the_public_set_is_refused(tmp_path):
    import shutil

    from anybind.errors import DataError
    from anybind.federated_study import federated_study, refuse_shared_public

    own_files = _pictures(tmp_path / "own" / "media", [f"p{i}.png" for i in range(6)], seed=0)
    splits = ["train", "train", "train", "val", "test", "test"]
    own = _manifest(tmp_path / "own" / "manifest.jsonl", [
        {"id": f"own-{i}", "split": s, "image": str(f), "text": f"drawing {i}"}
        for i, (f, s) in enumerate(zip(own_files, splits))])
    other_files = _pictures(tmp_path / "other" / "media", [f"q{i}.png" for i in range(4)], seed=1)
    rows = [{"id": f"pub-{i}", "split": "train", "image": str(f), "text": f"picture {i}"}
            for i, f in enumerate(other_files)]
    # a public pair with its own picture and a caption a client record also has: texts repeat across corpora
    rows.append({"id": "pub-caption", "split": "train", "image": str(other_files[0]), "text": "drawing 1"})
    refuse_shared_public(own, [_manifest(tmp_path / "other" / "manifest.jsonl", rows)])
    # a client's test picture, copied into the other corpus's folder under another name, with another caption
    copy = tmp_path / "other" / "media" / "renamed.png"
    shutil.copyfile(own_files[4], copy)
    leaky = _manifest(tmp_path / "other" / "leaky.jsonl",
                      rows + [{"id": "pub-copy", "split": "train", "image": str(copy), "text": "a new caption"}])
    with pytest.raises(DataError) as e:
        refuse_shared_public(own, [leaky])
    msg = str(e.value)
    assert "\n" not in msg and "'pub-copy'" in msg and "'own-4'" in msg
    assert str(copy) in msg and str(own_files[4]) in msg and str(leaky.path) in msg and "line 6" in msg
    # the study refuses it before it trains anything (no encoder is ever built: these specs do not exist)
    with pytest.raises(DataError, match="'pub-copy' holds image file .* record 'own-4'"):
        federated_study(own, k=2, public_fraction=0.0, encoders={"image": "nonesuch", "text": "nonesuch"},
                        extra_public=[leaky], fit_too=False)
    # the same bytes in the other direction: a public file the clients also hold under another name
    shutil.copyfile(other_files[2], tmp_path / "own" / "media" / "extra.png")
    own2 = _manifest(tmp_path / "own" / "more.jsonl", [
        *({"id": r.id, "split": r.split, **r.values} for r in own.records),
        {"id": "own-extra", "split": "train", "image": str(tmp_path / "own" / "media" / "extra.png"), "text": "x"}])
    with pytest.raises(DataError, match="'pub-2' holds image file .* record 'own-extra'"):
        refuse_shared_public(own2, [_manifest(tmp_path / "other" / "manifest.jsonl", rows)])
    # and so does the CLI simulating clients from a corpus, before it builds anything
    from typer.testing import CliRunner

    from anybind.cli import app

    r = CliRunner().invoke(app, ["federate", "--data", str(own.path), "--public-fraction", "0", "--public",
                                 str(leaky.path), "--clients", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "'pub-copy' holds image file" in r.output and "'own-4'" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_the_content_check_reads_each_file_once(tmp_path, key_reads):
    """A file several records share (an image with several captions, on either side, or the very path on both) is
    hashed once: the check reads the clients' files and the public ones once each, never once per record."""
    from anybind.federated_study import refuse_shared_public

    own_files = _pictures(tmp_path / "own", [f"p{i}.png" for i in range(3)], seed=0)
    pub_files = _pictures(tmp_path / "pub", [f"q{i}.png" for i in range(2)], seed=1)
    own = _manifest(tmp_path / "own.jsonl", [
        {"id": f"own-{i}-{j}", "split": "train", "image": str(f), "text": f"drawing {i}, caption {j}"}
        for i, f in enumerate(own_files) for j in range(4)])
    pub = _manifest(tmp_path / "pub.jsonl", [
        {"id": f"pub-{i}-{j}", "split": "train", "image": str(f), "text": f"picture {i}, caption {j}"}
        for i, f in enumerate(pub_files) for j in range(3)])
    once = {str(f): 1 for f in own_files + pub_files}
    refuse_shared_public(own, [pub, pub])  # a public manifest given twice reads its files once too
    assert key_reads == once
    # the very path of a client's file in a public record: refused, and still read once
    from anybind.errors import DataError

    key_reads.clear()
    same = _manifest(tmp_path / "same.jsonl", [{"id": "pub-same", "split": "train", "image": str(own_files[2]),
                                                "text": "another caption"}])
    with pytest.raises(DataError, match="'pub-same' holds image file .* record 'own-2-0'"):
        refuse_shared_public(own, [pub, same])
    assert key_reads == once


def test_server_epochs_default_to_the_val_chosen_ones_of_each_server():
    """CreamFL's server: 10 epochs a round; FedAvg's with the public pairs: 1 (each chosen on the clients' val,
    BENCHMARKS.md); one given is kept, and the lineage records the number used."""
    from anybind.bench.tasks_keep import FEDAVG_PUBLIC
    from anybind.federated import federated_config

    assert federated_config({}).server_epochs == 10
    assert federated_config({"method": "fedavg", "server_public": True}).server_epochs == FEDAVG_PUBLIC["server_epochs"]
    assert federated_config({"method": "fedavg", "server_public": True, "server_epochs": 3}).server_epochs == 3
    assert federated_config({"method": "creamfl", "server_epochs": 2}).to_dict()["server_epochs"] == 2
    with pytest.raises(ValueError, match="server_epochs .* must be >= 1") as e:
        federated_config({"method": "fedavg", "server_public": True, "server_epochs": 0})
    assert "\n" not in str(e.value)


def test_paired_gaps_resample_the_test_queries_not_each_seeds_copy_of_them():
    """Every seed scores the same test queries: the interval is over those queries (each query's difference averaged
    over the seeds, one resample of queries for all seeds), so seeds that agree query by query give the interval of
    one seed, not one sqrt(seeds) narrower as if each seed had drawn queries of its own."""
    from anybind.bench.tasks_keep import paired_gaps

    rng = np.random.default_rng(1)
    fed = (rng.random(300) < 0.3).astype(float)
    cream = np.where(rng.random(300) < 0.15, 1 - fed, fed)

    def run(c):
        return [{"name": "creamfl", "hits": c}, {"name": "fedavg", "hits": fed}]

    one = paired_gaps([run(cream)], "creamfl", ["fedavg"])["fedavg"]
    assert paired_gaps([run(cream)] * 3, "creamfl", ["fedavg"])["fedavg"] == pytest.approx(one)
    other = np.where(rng.random(300) < 0.15, 1 - fed, fed)  # seeds that differ: the mean is the seeds' mean
    mean, lo, hi = paired_gaps([run(cream), run(other)], "creamfl", ["fedavg"])["fedavg"]
    assert mean == pytest.approx((cream.mean() + other.mean()) / 2 - fed.mean()) and lo < mean < hi
    with pytest.raises(ValueError, match="same test queries"):
        paired_gaps([run(cream), [{"name": "creamfl", "hits": cream[1:]}, {"name": "fedavg", "hits": fed[1:]}]],
                    "creamfl", ["fedavg"])

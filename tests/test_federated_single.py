"""Federated clients holding one modality (issue 19: some clients only images with labels, some only texts): they
train on their labels, send only their modality's embeddings of the public set (or its projector's weights), and
have no val pairs to vote with; CreamFL keeps its quality with them where FedAvg, averaging their label-trained
projectors into the paired ones, breaks down; a one-modality client without labels is refused in one line."""

import json

import pytest
from federated_helpers import CFG, KINDS, categories, r1

from anybind import load_manifest
from anybind.errors import DataError
from anybind.federated import federate
from anybind.federated_study import split_clients


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed1")
    path, specs, *_ = categories(tmp)
    man = load_manifest(path, kinds=KINDS)
    clients, public = split_clients(man, 3, by=None, public_fraction=0.1, seed=0, holds=["paired", "sa", "sb"])
    return tmp, path, specs, clients, public


def test_split_gives_one_modality_clients_their_modality_only(mixed):
    tmp, path, specs, clients, public = mixed
    assert all(set(r.values) == {"sa", "sb"} for r in clients[0].records)
    assert all(set(r.values) == {"sa"} for r in clients[1].records)
    assert all(set(r.values) == {"sb"} for r in clients[2].records)
    assert all("top" in r.labels for c in clients[1:] for r in c.records)
    assert all(set(r.values) == {"sa", "sb"} for r in public.records)


def test_one_modality_clients_send_their_modality_only_and_creamfl_copes_with_them(mixed):
    """Measured (seed 0, 30 rounds): CreamFL 0.504 with the two one-modality clients, 0.525 with the paired client
    alone; FedAvg 0.317 with them (seed 1: 0.529, 0.483, 0.242)."""
    tmp, path, specs, clients, public = mixed
    c, cfg = tmp / "c", {**CFG, "rounds": 30, "patience": 30}
    seen = []
    cream = federate(clients, public, encoders=specs, cache=c, method="creamfl",
                     on_message=lambda *a: seen.append(a), **cfg)
    up = {(i, m.kind): m for way, i, m in seen if way == "up"}
    assert set(up[(0, "public-embeddings")].arrays) == {"sa", "sb"}
    assert set(up[(1, "public-embeddings")].arrays) == {"sa"} and set(up[(2, "public-embeddings")].arrays) == {"sb"}
    assert up[(1, "val")].counts["n_val"] == up[(2, "val")].counts["n_val"] == 0 < up[(0, "val")].counts["n_val"]
    assert up[(1, "public-embeddings")].counts["n"] == sum(r.split == "train" for r in clients[1].records)
    avg = federate(clients, public, encoders=specs, cache=c, method="fedavg",
                   on_message=lambda *a: seen.append(a), **cfg)
    w = [m for way, i, m in seen if way == "up" and m.kind == "weights"]
    assert {k.split(".")[0] for m in w for k in m.arrays} == {"sa", "sb", "logit_scale"}
    assert any(k.startswith("sa.") for k in w[1].arrays) and not any(k.startswith("sb.") for k in w[1].arrays)
    alone = federate(clients[:1], public, encoders=specs, cache=c, method="creamfl", **cfg)
    got = {n: r1(s, path, c) for n, s in (("cream", cream), ("avg", avg), ("alone", alone))}
    assert got["cream"] > got["avg"] + 0.1 and got["cream"] > 0.9 * got["alone"], got


def test_a_one_modality_client_needs_labels(mixed, tmp_path):
    tmp, path, specs, clients, public = mixed
    p = tmp_path / "nolabels.jsonl"
    p.write_text("".join(json.dumps({"id": r.id, "split": r.split, "sa": True}) + "\n" for r in clients[1].records))
    with pytest.raises(DataError) as ei:
        federate([clients[0], p], public, encoders=specs, cache=tmp / "c", **{**CFG, "rounds": 1})
    msg = str(ei.value)
    assert "\n" not in msg and "client 1" in msg and str(p) in msg and "label 'top'" in msg
    # the label key is the configuration's: its records carry only 'top', so label="kind" refuses the labelled client too
    with pytest.raises(DataError, match="label 'kind'"):
        federate(clients[:2], public, encoders=specs, cache=tmp / "c", label="kind", **{**CFG, "rounds": 1})


def test_study_with_one_modality_clients_and_its_summary_over_seeds(mixed, tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from anybind import Space
    from anybind.cli import app
    from anybind.federated_study import federated_study, seed_summary

    tmp, path, specs, clients, public = mixed
    man = load_manifest(path, kinds=KINDS)
    runs = [federated_study(man, k=3, by=None, public_fraction=0.1, pair=("sa", "sb"), encoders=specs,
                            config={**CFG, "rounds": 3}, cache=tmp / "c", seed=s, fit_too=False,
                            holds=["paired", "sa", "sb"]) for s in (0, 1)]
    assert [r["name"] for r in runs[0]] == ["client 0 alone", "clients alone (mean)", "public set alone", "fedavg",
                                            "creamfl", "centralised (union + public)"]  # one-modality clients bind nothing alone
    summary = seed_summary(runs)
    assert [r["name"] for r in summary] == [r["name"] for r in runs[0][1:]]
    for row in summary:
        vals = [next(x["test R@1"] for x in rs if x["name"] == row["name"]) for rs in runs]
        assert row["mean"] == pytest.approx(np.mean(vals)) and row["sd"] == pytest.approx(np.std(vals, ddof=1))
        assert row["test R@1"] == f"{row['mean']:.3f} ± {row['sd']:.3f}" and row["seeds"] == 2
        assert (row["bytes/round"] is not None) == (row["name"] in ("fedavg", "creamfl"))
    assert summary[-1]["of centralised"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="cannot hold 'image'"):
        split_clients(man, 3, by=None, holds=["paired", "image"])
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    r = CliRunner().invoke(app, ["federate", "--data", str(path), "--clients", "3", "--split-by", "iid", "--holds",
                                 "paired,sa,sb", "--public-fraction", "0.1", *enc, "--cache", str(tmp / "c"),
                                 "--rounds", "1", "--dim", "16", "--hidden", "32", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    e = Space.load(tmp_path / "s").info["lineage"][-1]
    assert e["clients"] == 3 and e["config"]["label"] == "top"


def test_the_label_loss_relies_on_the_loops_temperature_clamp():
    """LabelBinder scores with exp(logit_scale) as it is: fit_loop keeps the scale in [0, log 100] from the first
    step, so a client whose temperature starts below 1/100 takes the same first step as one starting at 1/100
    (before, LabelBinder clamped exp() <= 100 by itself, the only binder that did)."""
    import itertools

    import numpy as np
    import torch

    from anybind.federated_single import LabelBinder
    from anybind.loop import fit_loop, make_temperature
    from anybind.projectors import Projector, ProjectorConfig

    g = np.random.default_rng(0)
    x = torch.from_numpy(g.normal(size=(16, 6)).astype(np.float32))
    y = torch.from_numpy(np.arange(16) % 3)
    after = []
    for temperature in (0.001, 0.01, 0.05):
        torch.manual_seed(0)
        proj = Projector(ProjectorConfig(in_dim=6, out_dim=4, kind="linear", dropout=0.0, input_dropout=0.0))
        scale = make_temperature(temperature, learn=False)
        model = LabelBinder({"sa": proj}, scale)
        fit_loop(model, itertools.repeat({"sa": (x, y)}), torch.optim.SGD(proj.parameters(), lr=0.5), scale,
                 epochs=1, steps=1, use_val=False, patience=1, score=lambda e: None, keep={})
        after.append([p.detach().clone() for p in proj.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(after[0], after[1]))  # 0.001 trains as 0.01
    assert not all(torch.equal(a, b) for a, b in zip(after[1], after[2]))  # the temperature matters

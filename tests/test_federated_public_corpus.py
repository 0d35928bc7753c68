"""Federated binding (issue 19) with a public set drawn from another corpus: no public fraction, the public sample
of the other corpora's training pairs, the study and the CLI with it, and the one-line refusals of a bad public set."""

import json

import pytest
from typer.testing import CliRunner

from anybind import Space, load_manifest
from anybind.cli import app
from anybind.errors import DataError
from anybind.federated import federate
from anybind.federated_study import split_clients

from federated_helpers import CFG, KINDS, categories


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    """The clients' corpus (categories 0-5) and another corpus (categories 6-7, training records only for the
    public set), every vector in the same npz files (one encoder each, as every party shares)."""
    tmp = tmp_path_factory.mktemp("fed2")
    path, specs, _, _ = categories(tmp, n_cat=8, per=60)
    lines = path.read_text().splitlines()
    own, other = tmp / "own.jsonl", tmp / "other.jsonl"
    own.write_text("".join(x + "\n" for x in lines if json.loads(x)["labels"]["top"] < "cat6"))
    other.write_text("".join(x + "\n" for x in lines if json.loads(x)["labels"]["top"] >= "cat6"))
    return tmp, load_manifest(own, kinds=KINDS), load_manifest(other, kinds=KINDS), specs


def test_split_with_no_public_fraction_gives_every_record_to_the_clients(two_corpora):
    _, own, _, _ = two_corpora
    clients, public = split_clients(own, 3, by="top", public_fraction=0.0, seed=1)
    assert public.records == []
    assert sorted(r.id for c in clients for r in c.records) == sorted(r.id for r in own.records if r.split != "test")
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"public_fraction in \[0, 1\)"):
            split_clients(own, 3, public_fraction=bad)


def test_public_sample_draws_training_pairs_of_the_other_corpora(two_corpora):
    from anybind.federated_study import public_sample

    _, own, other, _ = two_corpora
    train = {m.path: {r.id for r in m.records if r.split == "train"} for m in (own, other)}
    everything = public_sample([own, other], None, seed=0, pair=("sa", "sb"))
    assert [{r.id for r in m.records} for m in everything] == [train[own.path], train[other.path]]
    a = public_sample([own, other], 50, seed=3, pair=("sa", "sb"))
    ids = [(m.path, r.id) for m in a for r in m.records]
    assert len(ids) == len(set(ids)) == 50 and all(i in train[p] for p, i in ids)
    assert ids == [(m.path, r.id) for m in public_sample([own, other], 50, seed=3, pair=("sa", "sb")) for r in m.records]
    assert ids != [(m.path, r.id) for m in public_sample([own, other], 50, seed=4, pair=("sa", "sb")) for r in m.records]
    n = sum(map(len, train.values()))
    with pytest.raises(DataError, match=f"a public set of {n + 1} pairs asked for, {n} training records"):
        public_sample([own, other], n + 1, seed=0, pair=("sa", "sb"))


def test_federated_study_with_a_public_set_from_another_corpus(two_corpora):
    from anybind.federated_study import federated_study, public_sample

    tmp, own, other, specs = two_corpora
    extra = public_sample([other], 40, seed=0, pair=("sa", "sb"))
    msgs = []
    rows = federated_study(own, k=3, public_fraction=0.0, pair=("sa", "sb"), encoders=specs,
                           config={**CFG, "rounds": 2}, cache=tmp / "c", fit_too=False, extra_public=extra)
    by = {r["name"]: r for r in rows}
    n_clients = sum(r.split != "test" for r in own.records)
    assert by["public set alone"]["records"] == 40 and by["fedavg"]["records"] == n_clients
    assert by["centralised (union + public)"]["records"] == n_clients + 40
    assert by["centralised (clients' corpus)"]["records"] == n_clients
    assert all(0 <= r["test R@1"] <= 1 for r in rows)
    # the federation's public set is the other corpus: what crosses is its 40 rows' embeddings, no client record
    clients, _ = split_clients(own, 3, by="top", public_fraction=0.0, seed=0)
    sp = federate(clients, extra, encoders=specs, cache=tmp / "c", on_message=lambda *a: msgs.append(a),
                  **{**CFG, "rounds": 2})
    assert sp.info["lineage"][-1]["public"][0]["records"] == 40
    assert {m.arrays["sa"].shape[0] for _, _, m in msgs if m.kind == "public-embeddings"} == {40}
    with pytest.raises(DataError, match="no public set"):
        federated_study(own, k=3, public_fraction=0.0, pair=("sa", "sb"), encoders=specs, config=CFG,
                        cache=tmp / "c", fit_too=False)


def test_centralised_on_the_clients_corpus_standardises_on_their_own_training_pairs(two_corpora, monkeypatch):
    """The upper bound without the other corpora takes its projectors' statistics from the clients' training pairs,
    not from the other corpus's (the public set of the federation)."""
    import anybind.federated as fed
    from anybind.federated_study import federated_study, public_sample

    tmp, own, other, specs = two_corpora
    calls, real = [], fed.train_alone
    monkeypatch.setattr(fed, "train_alone", lambda data, public, **kw: calls.append((data, public)) or real(data, public, **kw))
    federated_study(own, k=3, public_fraction=0.0, pair=("sa", "sb"), encoders=specs, config={**CFG, "rounds": 1},
                    cache=tmp / "c", fit_too=False, extra_public=public_sample([other], 40, seed=0, pair=("sa", "sb")),
                    methods=())
    data, public = calls[-1]  # the last row trained alone: centralised (clients' corpus)
    assert len(data.records) == sum(r.split != "test" for r in own.records)
    pubs = public if isinstance(public, (list, tuple)) else [public]
    assert [m.path for m in pubs] == [own.path]
    assert sorted(r.id for m in pubs for r in m.records) == sorted(r.id for r in own.records if r.split == "train")


def test_a_public_set_that_is_the_clients_corpus_is_refused_in_one_line(two_corpora, tmp_path):
    from anybind.federated_study import federated_study

    tmp, own, other, specs = two_corpora
    kw = dict(k=3, public_fraction=0.0, pair=("sa", "sb"), encoders=specs, config=CFG, cache=tmp / "c", fit_too=False)
    with pytest.raises(DataError, match="cannot be the clients' own manifest") as e:
        federated_study(own, extra_public=[load_manifest(own.path, kinds=KINDS)], **kw)
    assert str(own.path) in str(e.value) and "\n" not in str(e.value)
    # a copy elsewhere holding one of the clients' records (a test record, even) is refused too, naming it
    test_line = next(x for x in own.path.read_text().splitlines() if json.loads(x)["split"] == "test")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(other.path.read_text() + json.dumps({**json.loads(test_line), "split": "train"}) + "\n")
    rid = json.loads(test_line)["id"]
    with pytest.raises(DataError, match=f"public record '{rid}' is record '{rid}' of the clients' corpus"):
        federated_study(own, extra_public=[load_manifest(mixed, kinds=KINDS)], **kw)
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    r = CliRunner().invoke(app, ["federate", "--data", str(own.path), "--public-fraction", "0", "--public",
                                 str(own.path), *enc, "--cache", str(tmp / "c"), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "--public is the --data corpus" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_bench_federated_refuses_a_bad_public_set_in_one_line(tmp_path):
    from anybind.bench.tasks_keep import federated

    for kw, what in [({"public": "tuxpaint", "public_size": "50"}, "needs an other corpus"),
                     ({"public": "emoji,emoji"}, "once each"), ({"public": ""}, "once each"),
                     ({"public": "emoji", "public_size": "1"}, ">= 2"), ({"public": "coco"}, "unknown public corpus"),
                     ({"public": "emoji", "public_size": "x"}, "public_size must be a whole number"),
                     ({"public": "emoji", "public_fraction": "0.3"}, "public_fraction applies only"),
                     ({"public": "tuxpaint", "public_fraction": "0"}, r"public_fraction must be in \(0, 1\)"),
                     ({"public": "tuxpaint,emoji", "public_fraction": "1.5"}, r"public_fraction must be in \(0, 1\)"),
                     ({"public": "tuxpaint", "public_fraction": "a"}, r"public_fraction must be in \(0, 1\)"),
                     ({"public": "emoji", "average": "7"}, "average must be 0, 1, or both")]:
        # a DataError (an AnybindError): the bench command prints it as one line, not a traceback
        with pytest.raises(DataError, match=what) as e:
            federated(tmp_path, **kw)
        assert "\n" not in str(e.value) and str(e.value).startswith("federated: ")
    assert not any(tmp_path.iterdir())  # refused before any corpus is built


def test_cli_federate_public_fraction_zero_needs_another_public_set(two_corpora, tmp_path):
    tmp, own, other, specs = two_corpora
    enc = [x for m, s in specs.items() for x in ("-e", f"{m}={s}")]
    args = ["federate", "--data", str(own.path), "--clients", "3", "--public-fraction", "0", *enc,
            "--cache", str(tmp / "c"), "--rounds", "2", "--dim", "16", "--hidden", "32"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "no public set" in r.output and len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(app, [*args, "--public", str(other.path), "--out", str(tmp_path / "s2")])
    assert r.exit_code == 0, r.output
    e = Space.load(tmp_path / "s2").info["lineage"][-1]
    assert [p["manifest"] for p in e["public"]] == [str(other.path)] and e["clients"] == 3
    assert e["public"][0]["records"] == len(other.records)


@pytest.mark.parametrize("seeds", ["x", "0,0", "-1"])
def test_bench_federated_refuses_bad_seeds_in_one_line_before_any_corpus(tmp_path, seeds):
    """--opt seeds= goes through the transfer bench's seeds_option: junk was a raw int() error, duplicates ran the
    same seed twice (a mean ± sd over copies) and negatives went on to the split; each is one line naming the
    task and the option, before the Tux Paint corpus is built."""
    work = tmp_path / "w"
    r = CliRunner().invoke(app, ["bench", "--task", "federated", "--opt", f"seeds={seeds}", "--work", str(work)],
                           env={"COLUMNS": "250"})
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output  # fail(): no traceback
    said = [x for x in r.output.splitlines() if x.strip() and not x.strip("─ ").startswith("federated")]  # - the rule
    assert len(said) == 1 and said[0].startswith(f"error: federated: seeds={seeds!r}: distinct"), r.output
    assert not work.exists() or not any(work.iterdir())

"""``--opt seeds=`` of the transfer bench (issue 16): every trained system fitted once per seed, each cell the mean
over seeds with a bootstrap of each query's seed-averaged hit; one seed is the single-seed bench exactly."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.bench.stats import Clusters, bootstrap, seed_mean
from anybind.errors import AnybindError

hit_lists = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(hit_lists, st.integers(0, 4), st.integers(0, 5), st.randoms(use_true_random=False))
def test_one_seed_is_the_old_bootstrap_and_seeds_average_per_query(hits, n_labels, seed, rnd):
    """One seed: the same answer as the bootstrap of that seed's hits, per query or clustered, with labels or
    with their :class:`Clusters` numbered once; several seeds: the bootstrap of each query's mean over them."""
    h = np.array(hits)
    other = np.array([rnd.choice([0.0, 1.0]) for _ in hits])
    second = np.array([rnd.choice([0.0, 1.0]) for _ in hits])
    labels = None if n_labels == 0 else [rnd.randrange(n_labels) for _ in hits]
    want = bootstrap(h, [other], 200, seed, labels)
    assert np.array_equal(seed_mean([h]), h)
    assert bootstrap(seed_mean([h]), [seed_mean([other])], 200, seed, labels) == want
    if labels is not None:
        assert bootstrap(h, [other], 200, seed, Clusters.of(labels)) == want
    avg = seed_mean([h, second])
    assert np.array_equal(avg, (h + second) / 2) and set(avg) <= {0.0, 0.5, 1.0}
    got = bootstrap(avg, [other], 200, seed, labels)
    assert got[0] == pytest.approx((h.mean() + second.mean()) / 2, abs=1e-12)
    assert got[1][0] <= got[0] <= got[1][1]
    assert bootstrap(seed_mean([h, h, h]), [other], 200, seed, labels) == want  # equal seeds: one seed


def _bootstrap_before(hits, others, n, seed, groups):
    """``bootstrap`` as it was before the per-query and clustered paths shared one tail (main c7a51bd): the
    reference (labels numbered in order of first appearance, as ``group_index`` does)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        idx = rng.integers(0, len(hits), size=(n, len(hits)))
        means = hits[idx].mean(1)
        best = [np.asarray(o, np.float64)[idx].mean(1) for o in others]
    else:
        number: dict[str, int] = {}
        g = np.asarray([number.setdefault(str(x), len(number)) for x in groups], np.int64)
        k = int(g.max()) + 1
        sizes = np.bincount(g, minlength=k).astype(np.float64)
        idx = rng.integers(0, k, size=(n, k))
        count = sizes[idx].sum(1)
        means = np.bincount(g, weights=hits, minlength=k)[idx].sum(1) / count
        best = [np.bincount(g, weights=np.asarray(o, np.float64), minlength=k)[idx].sum(1) / count for o in others]
    ci = (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))
    diff = None
    if others:
        d = means - np.max(np.stack(best), 0)
        diff = (float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5)))
    return float(hits.mean()), ci, diff


@settings(max_examples=60, deadline=None)
@given(hit_lists, st.integers(0, 4), st.integers(0, 2), st.integers(0, 5), st.randoms(use_true_random=False))
def test_one_seed_is_the_bootstrap_before_this_change(hits, n_labels, n_others, seed, rnd):
    h = np.array(hits)
    others = [np.array([rnd.choice([0.0, 1.0]) for _ in hits]) for _ in range(n_others)]
    labels = None if n_labels == 0 else [rnd.randrange(n_labels) for _ in hits]
    want = _bootstrap_before(h, others, 150, seed, labels)
    assert bootstrap(seed_mean([h]), [seed_mean([o]) for o in others], 150, seed, labels) == want
    if labels is not None:
        assert bootstrap(seed_mean([h]), others, 150, seed, Clusters.of(labels)) == want


def test_seed_mean_refuses_seeds_of_other_queries():
    with pytest.raises(ValueError, match=r"^seed_mean: seed 1 has 3 values for 2 queries$"):
        seed_mean([np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="no seed"):
        seed_mean([])


def test_seeds_option():
    from anybind.bench.transfer_cells import seeds_option

    assert seeds_option("", 7) == [7] and seeds_option(" 0, 1,2 ", 7) == [0, 1, 2]
    for bad in ("0,0", "-1", "a", "1.5", "\u00b2"):  # superscript two: isdigit() but not int()
        with pytest.raises(AnybindError, match=f"seeds={bad!r}: distinct whole numbers"):
            seeds_option(bad, 0)


@pytest.fixture(scope="module")
def two_slices(tux_dir, tmp_path_factory):
    """Two disjoint slices of the real Tux Paint corpus (each 20 train, 6 val, 6 test image+caption pairs, PNG
    stamps), as two corpora: a matrix with off-diagonal cells."""
    from anybind.data.manifest import load_manifest

    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text"], progress=False)
    usable = [r for r in man.records
              if r.has("image") and r.has("text") and not str(r.values["image"]).endswith(".svg")]
    out = tmp_path_factory.mktemp("slices")
    paths = {}
    for k, name in enumerate(("tuxa", "tuxb")):
        lines = [json.dumps({"id": r.id, "split": r.split, "text": r.values["text"], "image": str(r.values["image"])})
                 for split, n in (("train", 20), ("val", 6), ("test", 6))
                 for r in [x for x in usable if x.split == split][k * n:(k + 1) * n]]
        paths[name] = out / f"{name}.jsonl"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def test_seeds_give_each_single_seed_run_and_their_mean(two_slices, shared_cache, tmp_path, monkeypatch):
    """seeds=0,1 (each seed its own 12 of the 20 train pairs): every trained and Procrustes cell's per-seed value is
    what a single-seed run with that seed gives, the cell is their mean, the label bridge is the same, and the
    summary counts the seed mean and names the worst seed."""
    from anybind.bench import tasks_transfer

    builders = {n: (lambda w, p=p: p) for n, p in two_slices.items()}
    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: builders)
    kw = dict(corpora="tuxa,tuxb", train="each", systems="defaults", fm="0", center="0", boot="30", max_train="12")
    both = tasks_transfer.transfer(tmp_path / "w", cache=shared_cache, seeds="0,1", **kw)
    one = {s: tasks_transfer.transfer(tmp_path / "w", cache=shared_cache, seed=s, **kw) for s in (0, 1)}
    assert both.config["seeds"] == [0, 1] and one[1].config["seeds"] == [1]
    cells = [k for k in one[0].metrics if k.startswith("tuxa/") and k.count("/") == 4]  # train set/system/split/c/dir
    assert len(cells) == 2 * 2 * 2 * 2  # procrustes, defaults; test, val; two corpora; two directions
    for cell in cells:
        per = [one[s].metrics[cell] for s in (0, 1)]
        assert [both.metrics[f"{cell}/seed{s}"] for s in (0, 1)] == per
        assert both.metrics[cell] == pytest.approx(np.mean(per), abs=1e-12)
        assert not any(k.startswith(f"{cell}/seed") for k in one[0].metrics)  # one seed: the JSON as before
    assert any(one[0].metrics[c] != one[1].metrics[c] for c in cells)  # the seeds differ: nothing vacuous
    bridge = [k for k in one[0].metrics if k.startswith("-/") and k.count("/") == 4]
    assert bridge and all(both.metrics[k] == one[0].metrics[k] == one[1].metrics[k] for k in bridge)
    summary = [n for n in both.notes if n.startswith("off-diagonal val")][0]
    assert "mean over seeds 0, 1" in summary and "worst seed" in summary
    assert not any("worst seed" in n for n in one[0].notes)
    row = next(r for r in both.table if r["name"] == "tuxa: defaults")
    assert len(str(row["val"]).split("/")) == 2  # each seed's val score


def test_chosen_prompts_name_the_space_they_were_chosen_for(two_slices, shared_cache, tmp_path, monkeypatch):
    """prompts=chosen with seeds=0,1: one chosen_prompts entry per space measured (the bridge, Procrustes per
    subsample, each row per seed), each naming its row and seed, so that it can be told apart from the others: the
    entry of a trained row and seed holds that seed's space (its val score is that seed's in the row's val column).
    Choosing and Fashion-MNIST scoring are stubbed (the real ones need the selection corpora and Fashion-MNIST)."""
    from anybind.bench import prompt_choice, tasks_transfer, tuxpaint

    png = json.loads(two_slices["tuxa"].read_text().splitlines()[0])["image"]
    fm = tmp_path / "fm.jsonl"  # a stand-in Fashion-MNIST test split: never scored (fm_hits stubbed)
    fm.write_text("".join(json.dumps({"id": f"fm{i}", "split": "test", "image": png, "labels": {"class": "Bag"}})
                          + "\n" for i in range(3)))
    builders = {n: (lambda w, p=p: p) for n, p in two_slices.items()}
    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: builders)
    monkeypatch.setattr(tuxpaint, "build_once", lambda work, name, fn: fm)
    monkeypatch.setattr(tasks_transfer, "fm_hits", lambda space, recs, *a, **k: np.zeros(len(recs)))
    monkeypatch.setattr(prompt_choice, "selection_manifests", lambda work, console=None: {})
    monkeypatch.setattr(prompt_choice, "choose_for", lambda space, sel, ref, cache: {
        "val": (space.info.get("metrics") or {}).get("val/score")})
    res = tasks_transfer.transfer(tmp_path / "w", cache=shared_cache, seeds="0,1", corpora="tuxa,tuxb", train="tuxa",
                                  systems="defaults", fm="3", center="0", boot="10", max_train="12", balance="0",
                                  refine="0", prompts="chosen")
    got = res.config["chosen_prompts"]
    names = [e["space"] for e in got]
    want = ["label bridge (no pairs)"] + [f"tuxa/{r} [seed {s}]" for s in (0, 1) for r in ("procrustes", "defaults")]
    assert sorted(names) == sorted(want) and len(names) == len(set(names))
    row = next(r for r in res.table if r["name"] == "tuxa: defaults")
    assert len(set(str(row["val"]).split("/"))) == 2  # the two seeds' spaces differ: the match below can fail
    assert [f"{e['val']:.4g}" for s in (0, 1) for e in got if e["space"] == f"tuxa/defaults [seed {s}]"] \
        == str(row["val"]).split("/")


@pytest.mark.parametrize("change", ["drop", "reorder"])
def test_a_space_scoring_other_queries_than_the_bridge_is_refused(change, two_slices, shared_cache, tmp_path,
                                                                   monkeypatch):
    """Paired cells need every space to score the bridge's queries in the bridge's order: a space that scores one
    query fewer, or the same queries in another order (stubbed on the real retrieval hits: no real space does), is
    refused in one line naming the corpus, the split and the space."""
    from anybind.bench import tasks_transfer

    real, calls = tasks_transfer.retrieval_hits_ids, []

    def other_queries(space, man, split, cache):
        hits, ids = real(space, man, split, cache)
        calls.append(split)
        if len(calls) <= 4:  # the label bridge: two corpora, test and val
            return hits, ids
        keep = slice(1, None) if change == "drop" else slice(None, None, -1)
        return {d: h[keep] for d, h in hits.items()}, ids[keep]

    builders = {n: (lambda w, p=p: p) for n, p in two_slices.items()}
    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: builders)
    monkeypatch.setattr(tasks_transfer, "retrieval_hits_ids", other_queries)
    with pytest.raises(AnybindError, match=r"^transfer: tuxa test: tuxa/procrustes scored other queries than the "
                                           r"label bridge$"):
        tasks_transfer.transfer(tmp_path / "w", cache=shared_cache, corpora="tuxa,tuxb", train="tuxa",
                                systems="defaults", fm="0", center="0", boot="10", max_train="12")
    assert len(calls) == 5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3), st.integers(0, 50)), min_size=1, max_size=4))
def test_a_per_seed_column_is_one_dash_where_no_seed_has_a_value(vals):
    """The val / epoch / alpha / l2sp columns: one seed, its value; several, "/"-separated with "-" for a seed
    without one; no seed with a value (a +center row): None, rendered "-" as a one-seed row's."""
    from anybind.bench.transfer_cells import seed_column

    got = seed_column(vals)
    if all(v is None for v in vals):
        assert got is None
    elif len(vals) == 1:
        assert got == vals[0]
    else:
        assert got.split("/") == ["-" if v is None else f"{v:.4g}" for v in vals]


def test_a_center_row_with_seeds_shows_one_dash(two_slices, shared_cache, tmp_path, monkeypatch):
    """seeds=0,1 with center=1: the +center row has no val / epoch / alpha / l2sp of its own (it was "-/-"); the
    trained row keeps each seed's val."""
    import io

    from rich.console import Console

    from anybind.bench import result_table, tasks_transfer

    builders = {n: (lambda w, p=p: p) for n, p in two_slices.items()}
    monkeypatch.setattr(tasks_transfer, "corpus_builders", lambda: builders)
    res = tasks_transfer.transfer(tmp_path / "w", cache=shared_cache, seeds="0,1", corpora="tuxa,tuxb", train="tuxa",
                                  systems="defaults", fm="0", center="1", boot="10", max_train="12")
    rows = {r["name"]: r for r in res.table}
    assert all(rows["tuxa: defaults +center"][k] is None for k in ("val", "epoch", "alpha", "l2sp"))
    assert len(str(rows["tuxa: defaults"]["val"]).split("/")) == 2
    con = Console(width=400, record=True, file=io.StringIO())
    con.print(result_table("transfer", res))
    line = next(x for x in con.export_text().splitlines() if "tuxa: defaults +center" in x)
    assert "-/-" not in line and " - " in line

"""``anybind bench --task instruments-zeroshot`` on a tiny real render: 4 GM programs x 3 pitches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from anybind.bench import load_tasks, run_tasks
from anybind.corpora import instruments as ins
from anybind.errors import DataError

needs_fluid = pytest.mark.skipif(
    not Path(ins.DEFAULT_SOUNDFONT).is_file() or shutil.which("fluidsynth") is None,
    reason=f"apt-get install -y {ins.SOUNDFONT_PACKAGE} {ins.FLUIDSYNTH_PACKAGE}",
)
#: piano, guitar, violin, flute: four families; 3 pitches give every class a train, val and test unit
PROGRAMS = [0, 24, 40, 73]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("instruments") / "corpus"
    ins.build_instruments(out, programs=PROGRAMS, pitches=3, drums=False, progress=False)
    return out


def test_task_is_registered():
    assert "instruments-zeroshot" in load_tasks()


@needs_fluid
def test_class_names_read_as_words(tiny):
    from anybind.bench.tasks_instruments import class_names
    from anybind.data.manifest import load_manifest

    recs = load_manifest(tiny / "manifest.jsonl", modalities=["audio", "text"]).records
    inst, fam = class_names(recs, "instrument"), class_names(recs, "family")
    assert set(inst) == {"Acoustic Grand Piano", "Acoustic Guitar (nylon)", "Violin", "Flute"}
    assert all(v == v.lower() and "(" not in v for v in inst.values())  # the spoken name, not the GM title
    assert fam == {"Piano": "piano", "Guitar": "guitar", "Strings": "strings", "Pipe": "pipe"}


@needs_fluid
def test_bench_table_has_zero_shot_rows_and_the_ceiling(tiny, tmp_path, shared_cache):
    out = tmp_path / "r.json"
    [rec] = run_tasks(["instruments-zeroshot"], json_out=out, work=tmp_path, cache=shared_cache, seed=0,
                      options={"corpus": str(tiny), "systems": "indomain,procrustes", "boot": "100", "epochs": "20"})
    assert json.loads(out.read_text())[0]["table"] == json.loads(json.dumps(rec["table"]))
    table = rec["table"]
    for label in ("family", "instrument"):
        rows = {r["name"].split(": ", 1)[1]: r for r in table if r["name"].startswith(f"{label} (4-way)")}
        ceiling = [r for n, r in rows.items() if n.startswith("linear probe (ceiling")]
        # 2 systems (+ the family through its instruments' prompts) + the ceiling + chance
        assert len(ceiling) == 1 and "chance" in rows and len(rows) == (6 if label == "family" else 4)
        top = ceiling[0]["test"]
        for name, r in rows.items():
            assert 0.0 <= r["val"] <= 1.0 and 0.0 <= r["test"] <= 1.0
            if r["(lo-hi)"]:
                lo, hi = map(float, r["(lo-hi)"].split("-"))
                assert lo <= r["test"] <= hi
            if top > 0:
                assert r["of ceiling"] == pytest.approx(r["test"] / top)
        assert rows["chance"]["test"] == 0.25
        assert rec["baselines"]["linear-probe"][f"{label}/C"] in (0.001, 0.01, 0.1, 1.0, 10.0)
        assert rec["baselines"]["procrustes"][f"{label}/accuracy"] == rows["Procrustes, instruments train"]["test"]
        # the target is read for the row chosen on val, among the in-domain spaces here (no Tux Paint system ran)
        assert f"{label}/target_met" not in rec["metrics"]
        picked = max((r for n, r in rows.items() if "instruments train" in n), key=lambda r: r["val"])
        assert rec["metrics"][f"{label}/in_domain_target_met"] == float(picked["of ceiling"] >= 0.6)
        if label == "family":  # the family through its members' prompts, a row of its own
            via = rec["baselines"]["indomain"]["family-via-instruments/accuracy"]
            assert via == rows["recipe, bound on instruments train, via instrument prompts"]["test"]
    assert rec["config"]["options"]["systems"] == "indomain,procrustes"


@needs_fluid
def test_unknown_system_is_one_line(tiny, tmp_path):
    with pytest.raises(DataError, match=r"unknown system\(s\) nope; known: tuxpaint"):
        run_tasks(["instruments-zeroshot"], work=tmp_path, options={"corpus": str(tiny), "systems": "nope"})


#: three pianos and three guitars: with split=instrument each family has one instrument in train, val and test
PROGRAMS_BY_FAMILY = [0, 1, 2, 24, 25, 26]


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    out = tmp_path_factory.mktemp("instruments6") / "corpus"
    ins.build_instruments(out, programs=PROGRAMS_BY_FAMILY, pitches=1, drums=False, progress=False)
    return out


@needs_fluid
def test_stratified_group_split_keeps_instruments_whole_and_families_everywhere(six):
    from anybind.data.folds import stratified_group_split
    from anybind.data.manifest import load_manifest

    man = load_manifest(six / "manifest.jsonl", modalities=["audio", "text"])
    inst, fam = (lambda r: r.labels["instrument"]), (lambda r: r.labels["family"])
    for seed in (0, 1, 2):
        out = stratified_group_split(man, inst, fam, seed=seed)
        assert [r.id for r in out.records] == [r.id for r in man.records]
        per = {s: {inst(r) for r in out.split(s)} for s in ("train", "val", "test")}
        assert per["train"].isdisjoint(per["val"]) and per["train"].isdisjoint(per["test"])
        assert per["val"].isdisjoint(per["test"])
        assert set().union(*per.values()) == {inst(r) for r in man.records}
        for s in per:  # 3 instruments a family: one in each split
            assert {fam(r) for r in out.split(s)} == {"Piano", "Guitar"}
        again = stratified_group_split(man, inst, fam, seed=seed)
        assert [r.split for r in again.records] == [r.split for r in out.records]
    with pytest.raises(DataError, match="lies in strata"):
        stratified_group_split(man, fam, inst)  # a family spans three instruments


@needs_fluid
def test_split_instrument_scores_the_family_on_unseen_instruments(six, tmp_path, shared_cache):
    [rec] = run_tasks(["instruments-zeroshot"], work=tmp_path, cache=shared_cache, seed=0,
                      options={"corpus": str(six), "systems": "indomain,procrustes", "boot": "100", "epochs": "20",
                               "split": "instrument"})
    cfg = rec["config"]
    assert cfg["split"] == "instrument" and set(cfg["skipped_labels"]) == {"instrument"}
    per = {s: set(v) for s, v in cfg["instruments"].items()}
    assert all(len(v) == 2 for v in per.values())
    assert per["train"].isdisjoint(per["test"]) and per["train"].isdisjoint(per["val"])
    assert per["val"].isdisjoint(per["test"])
    assert sum(cfg["clips"].values()) == len((six / "manifest.jsonl").read_text().splitlines())
    table = rec["table"]
    assert all(r["name"].startswith("family (2-way): ") for r in table)  # no instrument rows
    names = {r["name"].split(": ", 1)[1] for r in table}
    assert len(names) == len(table) == 6 and "chance" in names
    assert any(n.startswith("linear probe (ceiling") for n in names)
    assert "recipe, bound on instruments train, via instrument prompts" in names
    assert "instrument/accuracy" not in str(rec["baselines"]) and "family/C" in rec["baselines"]["linear-probe"]
    assert any("split=instrument" in n for n in rec["notes"])


@needs_fluid
def test_unknown_split_is_one_line(tiny, tmp_path):
    with pytest.raises(DataError, match=r"unknown split 'pitch'; known: corpus, instrument"):
        run_tasks(["instruments-zeroshot"], work=tmp_path, options={"corpus": str(tiny), "split": "pitch"})


@needs_fluid
def test_balanced_rows_choose_the_temperature_on_val(tiny, tmp_path, shared_cache):
    with pytest.raises(DataError, match=r"^instruments-zeroshot: balance='yes'; give 1") as e:
        run_tasks(["instruments-zeroshot"], work=tmp_path / "w", options={"balance": "yes"})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())  # refused before any work
    [rec] = run_tasks(["instruments-zeroshot"], work=tmp_path, cache=shared_cache, seed=0,
                      options={"corpus": str(tiny), "systems": "procrustes", "boot": "100", "labels": "family",
                               "via": "0", "balance": "1", "balance_t": "5,50"})
    rows = {r["name"].split(": ", 1)[1]: r for r in rec["table"]}
    [bal] = [r for n, r in rows.items() if n.startswith("Procrustes, instruments train, balanced (T=")]
    assert rec["baselines"]["procrustes"]["family/balanced_T"] in (5.0, 50.0)
    assert rec["baselines"]["procrustes"]["family/balanced_accuracy"] == bal["test"]
    assert 0.0 <= bal["test"] <= 1.0 and any("labels never read" in n for n in rec["notes"])


@needs_fluid
@pytest.mark.parametrize("opts, message", [
    ({"refine": "0.5"}, r"refine='0.5' refines on the unlabelled train clips .* give balance=1"),
    ({"balance": "1", "refine": "2"}, r"each weight in \(0, 1\]"),
    ({"prompts": "mine"}, r"prompts='mine'; known: chosen"),
    ({"boot": "0"}, r"instruments-zeroshot: boot='0': a whole number of bootstrap resamples, at least 1"),
])
def test_refine_and_prompts_options_are_refused_before_any_work(tiny, tmp_path, opts, message):
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match=message) as e:
        run_tasks(["instruments-zeroshot"], work=tmp_path / "w", options={"corpus": str(tiny), **opts})
    assert "\n" not in str(e.value)
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


@needs_fluid
def test_refined_rows_and_prompts_chosen_on_val(tiny, tmp_path, shared_cache):
    from anybind.bench.tasks_instruments import SOUND_CANDIDATES

    [rec] = run_tasks(["instruments-zeroshot"], work=tmp_path, cache=shared_cache, seed=0,
                      options={"corpus": str(tiny), "systems": "procrustes", "boot": "100", "labels": "family",
                               "via": "0", "balance": "1", "balance_t": "5,50", "refine": "0.5,1",
                               "prompts": "chosen"})
    rows = {r["name"].split(": ", 1)[1]: r for r in rec["table"]}
    got = rec["baselines"]["procrustes"]
    chosen = rec["config"]["chosen_templates"]["procrustes"]["family"]
    assert chosen and set(chosen) <= set(SOUND_CANDIDATES)
    for tsuffix, tkey in (("", ""), (", prompts chosen on val", "-chosen-prompts")):
        stem = f"Procrustes, instruments train{tsuffix}"
        assert rows[stem]["test"] == got[f"family{tkey}/accuracy"]
        [ref] = [r for n, r in rows.items() if n.startswith(f"{stem}, refined + balanced (m=")]
        assert got[f"family{tkey}/refined_balanced_m"] in (0.5, 1.0)
        assert got[f"family{tkey}/refined_balanced_T"] in (5.0, 50.0)
        assert ref["test"] == got[f"family{tkey}/refined_balanced_accuracy"] and "minus balanced" in ref["name"]
        assert ref["of ceiling"] == pytest.approx(ref["test"] / rows[next(n for n in rows if "ceiling" in n)]["test"])
    assert any(n.startswith("refined + balanced (refine=0.5,1)") for n in rec["notes"])

"""Mod-X's distillation weight chosen on val (issue 19): given held-out old data (``old_val``), the update chooses
the weight from a grid by (1 - tradeoff) x the new data's val score + tradeoff x the old data's; the choice is
deterministic, reads only val records, and an empty val is refused in one line; without old data the default
weight stays."""

import json

import pytest
import torch
from typer.testing import CliRunner

from anybind.cli import app
from anybind.errors import DataError
from anybind.update import DISTILL_GRID
from test_update import UPDATE, base  # noqa: F401  (the module's fixture)

KW = {**UPDATE, "epochs": 3}


def _copy(src, dst, keep):
    """``src``'s records whose split is in ``keep`` written to ``dst``."""
    lines = [ln for ln in src.read_text().splitlines(keepends=True) if json.loads(ln)["split"] in keep]
    dst.write_text("".join(lines))
    return dst


def _search(space):
    return space.info["lineage"][-1]["distill_search"]


def _same_projectors(x, y) -> bool:
    return all(torch.equal(a, b) for m in x.projectors for a, b in
               zip(x.projectors[m].state_dict().values(), y.projectors[m].state_dict().values()))


def test_old_val_chooses_the_weight_deterministically_from_val_records_only(base, tmp_path):  # noqa: F811
    tmp, mans, specs, space = base
    c = tmp / "c"
    auto = space.update(mans["b"], old_val=mans["a"], cache=c, **KW)  # old data given: the weight is chosen
    s = _search(auto)
    assert s["chosen"] in DISTILL_GRID and s["tradeoff"] == 0.5 and list(s["scores"]) == [str(w) for w in DISTILL_GRID]
    again = space.update(mans["b"], old_val=mans["a"], distill="auto", cache=c, **KW)
    assert _search(again) == s and _same_projectors(auto, again) and auto.identity() == again.identity()
    # the old data's train and test records and the new data's test records play no part in the choice
    old_val = _copy(mans["a"], tmp_path / "old_val.jsonl", {"val"})
    new_no_test = _copy(mans["b"], tmp_path / "new.jsonl", {"train", "val"})
    other = space.update(new_no_test, old_val=old_val, cache=c, **KW)
    assert _search(other)["scores"] == s["scores"] and _search(other)["chosen"] == s["chosen"]
    assert _same_projectors(auto, other)
    # no old data: the default weight, no search
    plain = space.update(mans["b"], cache=c, **KW)
    assert plain.info["lineage"][-1]["config"]["distill"] == 1.0 and "distill_search" not in plain.info["lineage"][-1]


def test_the_tradeoff_weighs_retention_against_the_new_data(base):  # noqa: F811
    tmp, mans, specs, space = base
    c = tmp / "c"
    keep = _search(space.update(mans["b"], old_val=mans["a"], distill_tradeoff=1.0, cache=c, **KW))
    learn = _search(space.update(mans["b"], old_val=mans["a"], distill_tradeoff=0.0, cache=c, **KW))
    for w in map(str, DISTILL_GRID):  # the same candidates, scored by another sum
        assert {k: keep["scores"][w][k] for k in ("new", "old")} == {k: learn["scores"][w][k] for k in ("new", "old")}
        assert keep["scores"][w]["score"] == keep["scores"][w]["old"]
        assert learn["scores"][w]["score"] == learn["scores"][w]["new"]
    assert keep["chosen"] == max(DISTILL_GRID, key=lambda w: (keep["scores"][str(w)]["old"], -w))
    assert learn["chosen"] == max(DISTILL_GRID, key=lambda w: (learn["scores"][str(w)]["new"], -w))
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="distill_tradeoff") as ei:
            space.update(mans["b"], old_val=mans["a"], distill_tradeoff=bad, cache=c)
        assert "\n" not in str(ei.value)


def test_an_empty_val_or_unused_old_data_is_refused_in_one_line(base, tmp_path):  # noqa: F811
    tmp, mans, specs, space = base
    c = tmp / "c"
    no_val_new = _copy(mans["b"], tmp_path / "b_noval.jsonl", {"train", "test"})
    no_val_old = _copy(mans["a"], tmp_path / "a_noval.jsonl", {"train", "test"})
    for new, old, what in ((no_val_new, mans["a"], "new data"), (mans["b"], no_val_old, "old data")):
        with pytest.raises(DataError, match=f"the {what} has no val records") as ei:
            space.update(new, old_val=old, cache=c, **KW)
        assert "\n" not in str(ei.value) and str(new if what == "new data" else old) in str(ei.value)
    for kw in ({"distill": 1.0}, {"method": "naive"}, {"distill_tradeoff": 0.8}):
        with pytest.raises(ValueError, match="old_val|distill_tradeoff") as ei:  # given but never read: refused
            space.update(mans["b"], old_val=mans["a"] if "distill_tradeoff" not in kw else None, cache=c, **kw)
        assert "\n" not in str(ei.value)
    space.save(tmp_path / "s")
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s"), "--data", str(mans["b"]), "--old-val", str(no_val_old),
                                 "--out", str(tmp_path / "s2"), "--epochs", "2", "--cache", str(c)])
    assert r.exit_code == 2 and "old data has no val records" in r.output and not (tmp_path / "s2").exists()
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s"), "--data", str(mans["b"]), "--old-val", str(mans["a"]),
                                 "--distill-tradeoff", "0.7", "--out", str(tmp_path / "s3"), "--epochs", "2",
                                 "--cache", str(c)])
    assert r.exit_code == 0, r.output
    from anybind import Space

    s3 = _search(Space.load(tmp_path / "s3"))
    assert s3["tradeoff"] == 0.7 and s3["chosen"] in DISTILL_GRID

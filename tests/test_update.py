"""Continual update (issue 19): Mod-X's off-diagonal distillation forgets less than naive fine-tuning; the
updated space saves, loads, records its lineage and is deterministic; the CLI and errors; Mod-X's weight chosen
on val given held-out old data (deterministic, val records only, an empty val refused in one line)."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from anybind import Space, load_manifest
from anybind.cli import app
from anybind.errors import DataError
from anybind.evaluate import evaluate
from anybind.update import DISTILL_GRID, offdiag_distillation, screen

SPLIT_CYCLE = ["train"] * 7 + ["val"] + ["test"] * 2
KINDS = {"sa": "key", "sb": "key"}
FIT = dict(epochs=60, patience=10, hidden=64, dim=32, progress=False, seed=0)
UPDATE = dict(lr=1e-3, epochs=60, patience=100)


def two_domains(tmp, n=600, seed=1, noise=1.5, anisotropy=4.0):
    """Two views (sa, sb) of a 12-d latent, by the same 'encoders' (fixed mixing + noise), in two domains whose
    content differs: domain A varies mostly along the latent's first half, domain B along its second half."""
    rng = np.random.default_rng(seed)
    k = 12
    Ma, Mb = rng.normal(size=(k, 40)), rng.normal(size=(k, 30))
    va = np.r_[np.ones(k // 2), np.full(k - k // 2, 1 / anisotropy)]
    za, zb = rng.normal(size=(n, k)) * va, rng.normal(size=(n, k)) * va[::-1]
    ids = np.array([f"a{i}" for i in range(n)] + [f"b{i}" for i in range(n)])
    z = np.concatenate([za, zb])
    specs = {}
    for name, M in (("sa", Ma), ("sb", Mb)):
        np.savez(tmp / f"{name}.npz", ids=ids, vectors=z @ M + noise * rng.normal(size=(2 * n, M.shape[1])))
        specs[name] = f"vectors:{tmp / f'{name}.npz'}"
    mans = {}
    for dom in ("a", "b"):
        mans[dom] = tmp / f"{dom}.jsonl"
        with open(mans[dom], "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"{dom}{i}", "split": SPLIT_CYCLE[i % 10], "sa": True, "sb": True}) + "\n")
    return mans, specs


def r1(space, manifest, cache) -> float:
    res = evaluate(space, load_manifest(manifest, kinds=KINDS), split="test", cache=cache)
    return (res["sa->sb/R@1"] + res["sb->sa/R@1"]) / 2


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("update")
    mans, specs = two_domains(tmp)
    space = Space.fit(mans["a"], encoders=specs, cache=tmp / "c", **FIT)
    return tmp, mans, specs, space


def test_modx_forgets_less_than_naive_fine_tuning_at_similar_new_domain_r1(base):
    """Measured (seed 1): old-domain R@1 0.642 -> naive 0.567 / Mod-X 0.671; new-domain 0.296 -> 0.662 / 0.675."""
    tmp, mans, specs, space = base
    c = tmp / "c"
    old0 = r1(space, mans["a"], c)
    naive = space.update(mans["b"], method="naive", cache=c, **UPDATE)
    modx = space.update(mans["b"], method="modx", cache=c, **UPDATE)
    forget = {k: old0 - r1(s, mans["a"], c) for k, s in (("naive", naive), ("modx", modx))}
    new = {k: r1(s, mans["b"], c) for k, s in (("naive", naive), ("modx", modx))}
    assert new["naive"] > r1(space, mans["b"], c) + 0.2  # the update learnt the new domain
    assert forget["naive"] > 0.04, forget  # naive fine-tuning forgets measurably
    assert forget["modx"] < forget["naive"] - 0.04, forget
    assert new["modx"] > new["naive"] - 0.05, new


def test_updated_space_saves_loads_and_records_its_lineage(base, tmp_path):
    tmp, mans, specs, space = base
    before = space.identity()
    s2 = space.update(mans["b"], replay=mans["a"], cache=tmp / "c", epochs=3, distill=0.5, seed=3)
    assert space.identity() == before and len(space.info["lineage"]) == 1  # the original is untouched
    assert s2.identity() != before
    s2.save(tmp_path / "s2")
    loaded = Space.load(tmp_path / "s2")
    ids = [f"b{i}" for i in range(20)]
    assert np.array_equal(loaded.embed("sa", ids, cache=tmp / "c"), s2.embed("sa", ids, cache=tmp / "c"))
    e = loaded.info["lineage"][-1]
    assert [x["event"] for x in loaded.info["lineage"]] == ["fit", "update"]
    assert e["parent"] == before and e["method"] == "modx" and e["modalities"] == ["sa", "sb"]
    assert e["config"]["distill"] == 0.5 and e["config"]["seed"] == 3
    fp = load_manifest(mans["b"], kinds=KINDS).fingerprint(["sa", "sb"])
    assert e["data"] == [{"manifest": str(mans["b"]), "fingerprint": fp, "records": 600}]
    assert e["replay"][0]["manifest"] == str(mans["a"]) and e["pairs"]["sa-sb"] == {"train": 840, "val": 120}
    assert [h["epoch"] for h in e["training"]["history"]] == [0, 1, 2, 3]  # the space as it was competes


def test_update_is_deterministic_with_a_seed(base):
    tmp, mans, specs, space = base
    a, b, c = (space.update(mans["b"], cache=tmp / "c", epochs=2, seed=s) for s in (7, 7, 8))
    for m in ("sa", "sb"):
        sa, sb, sc = (x.projectors[m].state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.identity() == b.identity() != c.identity()


def test_distillation_term_and_screening():
    e = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    assert float(offdiag_distillation(e, e, e, e, 0.1)) == pytest.approx(0.0, abs=1e-6)
    f = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    assert float(offdiag_distillation(f, e, e, e, 0.1)) > 0
    s = torch.tensor([[1.0, 3.0, 0.0], [0.0, 2.0, 1.0], [5.0, 0.0, 4.0]])
    out = screen(s)  # rows 0 and 2 ranked a wrong item first: their diagonal and top entries swap
    assert torch.equal(out, torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [4.0, 0.0, 5.0]]))
    assert torch.equal(s[0], torch.tensor([1.0, 3.0, 0.0]))  # the input is not modified


def test_update_errors_are_one_line(base, tmp_path):
    tmp, mans, specs, space = base
    lone = tmp_path / "lone.jsonl"
    lone.write_text("".join(json.dumps({"id": f"a{i}", "split": "train", "sa": True}) + "\n" for i in range(5)))
    with pytest.raises(DataError, match="no two bound modalities") as ei:
        space.update(lone, cache=tmp / "c")
    assert "\n" not in str(ei.value)
    with pytest.raises(ValueError, match="method must be one of"):
        space.update(mans["b"], method="ewc", cache=tmp / "c")
    with pytest.raises(TypeError, match="unknown option"):
        space.update(mans["b"], learning_rate=1.0, cache=tmp / "c")


def test_cli_update(base, tmp_path):
    tmp, mans, specs, space = base
    space.save(tmp_path / "s1")
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s1"), "--data", str(mans["b"]), "--out",
                                 str(tmp_path / "s2"), "--method", "naive", "--epochs", "2", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    s2 = Space.load(tmp_path / "s2")
    assert s2.info["lineage"][-1]["method"] == "naive" and s2.info["lineage"][-1]["parent"] == space.identity()
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s1"), "--data", str(tmp_path / "nope.jsonl"),
                                 "--out", str(tmp_path / "s3"), "--cache", str(tmp / "c")])
    assert r.exit_code == 2 and "error:" in r.output and not (tmp_path / "s3").exists()


def test_distill_auto_is_chosen_on_val_of_the_old_and_the_new_data(base):
    tmp, mans, specs, space = base
    c, kw = tmp / "c", {**UPDATE, "epochs": 8}
    auto = space.update(mans["b"], distill="auto", old_val=mans["a"], cache=c, **kw)
    s = auto.info["lineage"][-1]["distill_search"]
    assert s["grid"] == list(DISTILL_GRID) and s["chosen"] in DISTILL_GRID
    assert s["scores"][str(s["chosen"])]["score"] >= max(v["score"] for v in s["scores"].values()) - 1e-9
    assert auto.identity() == space.update(mans["b"], distill=s["chosen"], cache=c, **kw).identity()
    assert s["scores"]["10.0"]["old"] > s["scores"]["0.1"]["old"]  # a heavier distillation keeps more of the old
    with pytest.raises(DataError, match="old_val") as ei:
        space.update(mans["b"], distill="auto", cache=c)
    assert "\n" not in str(ei.value)
    with pytest.raises(ValueError, match="needs method='modx'"):
        space.update(mans["b"], distill="auto", method="naive", old_val=mans["a"], cache=c)
    r = CliRunner().invoke(app, ["update", str(tmp), "--data", str(mans["b"]), "--out", str(tmp / "x"), "--distill", "lots"])
    assert r.exit_code == 2 and "--distill takes a number or 'auto'" in r.output


# ----------------------------------------------------------------------------- the weight chosen on val
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


def test_old_val_chooses_the_weight_deterministically_from_val_records_only(base, tmp_path):
    tmp, mans, specs, space = base
    c = tmp / "c"
    auto = space.update(mans["b"], old_val=mans["a"], cache=c, **KW)  # old data given: the weight is chosen
    s = _search(auto)
    assert s["chosen"] in DISTILL_GRID and s["tradeoff"] == 0.5 and list(s["scores"]) == [str(w) for w in DISTILL_GRID]
    # the same choice again (explicit 'auto'), from copies without the old data's train and test records and the
    # new data's test records: they play no part in it, and the choice is deterministic
    old_val = _copy(mans["a"], tmp_path / "old_val.jsonl", {"val"})
    new_no_test = _copy(mans["b"], tmp_path / "new.jsonl", {"train", "val"})
    other = space.update(new_no_test, old_val=old_val, distill="auto", cache=c, **KW)
    assert _search(other) == s and _same_projectors(auto, other) and auto.identity() == other.identity()
    # no old data: the default update (wise), no Mod-X weight recorded, no search
    plain = space.update(mans["b"], cache=c, **KW).info["lineage"][-1]
    assert plain["method"] == "wise" and "distill" not in plain["config"] and "distill_search" not in plain


def test_the_tradeoff_weighs_retention_against_the_new_data(base):
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


def test_an_empty_val_or_unused_old_data_is_refused_in_one_line(base, tmp_path):
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
    s3 = _search(Space.load(tmp_path / "s3"))
    assert s3["tradeoff"] == 0.7 and s3["chosen"] in DISTILL_GRID
    assert Space.load(tmp_path / "s3").info["lineage"][-1]["config"]["distill_tradeoff"] == 0.7  # what chose


def test_a_tradeoff_given_with_a_fixed_weight_is_refused_at_any_value(base, tmp_path):
    """``distill_tradeoff`` weighs only the choice of ``distill='auto'``: 0.8 with a fixed weight was refused, but
    0.5 (the default's value) silently ignored, and ``--distill-tradeoff 0.5`` dropped by the CLI unseen."""
    tmp, mans, specs, space = base
    c = tmp / "c"
    for kw in ({"distill": 1.0}, {}, {"method": "naive"}):
        with pytest.raises(ValueError, match="distill_tradeoff") as ei:
            space.update(mans["b"], distill_tradeoff=0.5, cache=c, **kw)
        assert "\n" not in str(ei.value)
    space.save(tmp_path / "s")
    r = CliRunner().invoke(app, ["update", str(tmp_path / "s"), "--data", str(mans["b"]), "--distill", "1.0",
                                 "--distill-tradeoff", "0.5", "--out", str(tmp_path / "s2"), "--epochs", "2",
                                 "--cache", str(c)])
    assert r.exit_code == 2 and "distill_tradeoff" in r.output and not (tmp_path / "s2").exists(), r.output
    assert len([ln for ln in r.output.splitlines() if ln.strip()]) == 1

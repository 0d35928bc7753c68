"""Saved fusion models (issue 14, items 13/14, and F): a damaged fusion.json or fusion.safetensors is one line
naming the file, the header goes through the shared reader, the identity (content and weights hashed) is verified
on load, and models saved before format versions or identities still load."""

import json
import logging

import numpy as np
import pytest
import torch

from anybind.errors import SpaceError
from anybind.space import Space

from artefact_helpers import damage_header, drop, header_cases, tiny_space


@pytest.fixture
def fusion_saved(tmp_path):
    from anybind import load_manifest
    from anybind.fusion import FusionClassifier

    space = tiny_space()
    with open(tmp_path / "m.jsonl", "w") as f:
        for i in range(40):
            split = ["train"] * 6 + ["val", "test"]
            f.write(json.dumps({"id": f"r{i}", "split": split[i % 8], "text": f"item {i}",
                                "labels": {"cls": f"c{i % 2}"}}) + "\n")
    man = load_manifest(tmp_path / "m.jsonl", modalities=["text"], kinds={"text": "text"}, progress=False)
    clf = FusionClassifier(space, ["text"], kind="late", epochs=2, hidden=8, balance=None)
    clf.fit(man, "cls", cache=tmp_path / "c")
    return space, clf.save(tmp_path / "fz")


FUSION_CASES = {
    "no-space-identity": (lambda d: (drop(d[0], "space_identity"),), "fusion.json: no 'space_identity'"),
    "params-unknown": (lambda d: d[0]["params"].update(colour=1), "fusion.json: damaged fusion model .*colour"),
    "hidden-absurd": (lambda d: d[0]["params"].update(hidden=10**12),
                      r"fusion.safetensors: tensor .* has shape .*, but fusion.json implies .*1000000000000"),
    "nan-weight": (lambda d: d[1]["head.weight"].fill_(float("nan")), "fusion.safetensors: tensor head.weight has non-finite"),
    "truncated": (None, "fusion.safetensors: not a readable safetensors file"),
}


@pytest.mark.parametrize("case", sorted(FUSION_CASES))
def test_a_damaged_fusion_model_is_one_line(fusion_saved, case):
    from safetensors.torch import load_file, save_file

    from anybind.fusion import FusionClassifier

    space, fz = fusion_saved
    FusionClassifier.load(fz, space)  # intact: loads
    edit, match = FUSION_CASES[case]
    meta, sd = json.loads((fz / "fusion.json").read_text()), load_file(str(fz / "fusion.safetensors"))
    if edit is None:
        raw = (fz / "fusion.safetensors").read_bytes()
        (fz / "fusion.safetensors").write_bytes(raw[: len(raw) // 2])
    else:
        edit((meta, sd))
        (fz / "fusion.json").write_text(json.dumps(meta))
        save_file(sd, str(fz / "fusion.safetensors"))
    with pytest.raises(SpaceError, match=match) as e:
        FusionClassifier.load(fz, space)
    assert str(fz) in str(e.value) and "\n" not in str(e.value)


FUSION_HEADERS = header_cases("fusion.json", "fusion model")  # read by the shared artefact_meta.read_meta


@pytest.mark.parametrize("case", sorted(FUSION_HEADERS))
def test_a_fusion_header_is_checked_by_the_shared_reader(fusion_saved, case):
    """A corrupt, foreign, newer or oddly versioned fusion.json is refused in one line naming fusion.json itself
    (before: the newer-version message named the folder, and ``"format_version": true`` was read as format 1)."""
    from anybind.fusion import FusionClassifier

    space, fz = fusion_saved
    edit, match = FUSION_HEADERS[case]
    meta_p = fz / "fusion.json"
    damage_header(meta_p, edit)
    with pytest.raises(SpaceError, match=match) as e:
        FusionClassifier.load(fz, space)
    assert str(e.value).startswith(f"{meta_p}: ") and "\n" not in str(e.value)


def test_a_fusion_model_saved_without_a_format_version_still_loads(fusion_saved, caplog):
    """Format 1 fusion models had no format_version (nor an identity): read as format 0, with the warning that
    an edit cannot be detected, and they predict as before."""
    from anybind.fusion import FusionClassifier

    space, fz = fusion_saved
    want = FusionClassifier.load(fz, space).net.state_dict()
    meta = json.loads((fz / "fusion.json").read_text())
    (fz / "fusion.json").write_text(json.dumps({k: v for k, v in meta.items() if k not in ("format_version", "identity")}))
    with caplog.at_level(logging.WARNING, logger="anybind.fusion"):
        got = FusionClassifier.load(fz, space)
    assert any("format 0" in r.getMessage() for r in caplog.records)
    assert all(torch.equal(v, want[k]) for k, v in got.net.state_dict().items())


def _first_weight_nudged(d):
    k = sorted(d[1])[0]
    d[1][k].view(-1)[0] += 1e-3


IDENTITY_EDITS = {
    "classes-reordered": lambda d: d[0]["classes"].reverse(),
    "weight-edited": _first_weight_nudged,
    "config-edited": lambda d: d[0]["params"].update(reconstruct=not d[0]["params"]["reconstruct"]),
    "label-edited": lambda d: d[0].update(label_key="other"),
    "identity-removed": lambda d: drop(d[0], "identity"),
    "version-edited": lambda d: d[0].update(format_version=2),  # with its identity kept: still checked
}


@pytest.mark.parametrize("case", sorted(IDENTITY_EDITS))
def test_a_fusion_model_verifies_its_identity(fusion_saved, case):
    """F: fusion.json carries an identity (its content and weights hashed), recomputed on load: reordered
    classes, an edited weight or config are refused in one line naming the file; untouched, it loads the same."""
    from safetensors.torch import load_file, save_file

    from anybind import load_manifest
    from anybind.fusion import FusionClassifier

    space, fz = fusion_saved
    man = load_manifest(fz.parent / "m.jsonl", modalities=["text"], kinds={"text": "text"}, progress=False)
    meta, sd = json.loads((fz / "fusion.json").read_text()), load_file(str(fz / "fusion.safetensors"))
    assert isinstance(meta["identity"], str) and meta["format_version"] == 3
    a, b = FusionClassifier.load(fz, space), FusionClassifier.load(fz, space)  # untouched: loads the same
    assert a.identity() == b.identity() == meta["identity"] and a.classes_ == meta["classes"]
    assert np.array_equal(a.predict_proba(man), b.predict_proba(man))
    IDENTITY_EDITS[case]((meta, sd))
    (fz / "fusion.json").write_text(json.dumps(meta))
    save_file(sd, str(fz / "fusion.safetensors"))
    want = "no 'identity'" if case == "identity-removed" else "saved identity .* does not match its content"
    with pytest.raises(SpaceError, match=want) as e:
        FusionClassifier.load(fz, space)
    assert str(fz / "fusion.json") in str(e.value) and "\n" not in str(e.value)


def test_a_fusion_model_saved_before_identities_still_loads(tmp_path, caplog):
    """F: tests/fixtures/fusion_v2 (format 2, saved by the code before fusion identities, on a vectors:
    space) loads and predicts as it did; saved again, it gets an identity."""
    import shutil
    from pathlib import Path

    from anybind import load_manifest
    from anybind.encoders.kinds import manifest_kinds
    from anybind.fusion import FusionClassifier

    src = Path(__file__).parent / "fixtures" / "fusion_v2"
    shutil.copytree(src, tmp_path / "f")
    want = json.loads((src / "expected.json").read_text())
    space = Space.load(tmp_path / "f" / "space")
    assert json.loads((src / "model" / "fusion.json").read_text())["format_version"] == 2
    with caplog.at_level(logging.WARNING, logger="anybind.fusion"):
        clf = FusionClassifier.load(tmp_path / "f" / "model", space)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "an edit cannot be detected" in said[0] and "\n" not in said[0], said
    assert str(tmp_path / "f" / "model" / "fusion.json") in said[0]
    with open(tmp_path / "m.jsonl", "w") as f:
        for i in want["ids"]:
            f.write(json.dumps({"id": i, "vec": True}) + "\n")
    man = load_manifest(tmp_path / "m.jsonl", modalities=["vec"], kinds=manifest_kinds(space.encoders), progress=False)
    assert clf.classes_ == want["classes"]
    assert np.allclose(clf.predict_proba(man), np.asarray(want["proba"]), atol=1e-6)
    again = FusionClassifier.load(clf.save(tmp_path / "again"), space)
    saved = json.loads((tmp_path / "again" / "fusion.json").read_text())
    assert saved["format_version"] == 3 and saved["identity"] == again.identity() == clf.identity()
    assert np.array_equal(again.predict_proba(man), clf.predict_proba(man))

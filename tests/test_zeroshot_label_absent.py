"""Zero-shot on a label key no evaluated record carries is refused in one line naming the key, the manifest and the
label keys present (before: ``accuracy: NaN, n: 0`` and nothing said); records lacking it are counted in one warning;
a top-level ``"label"`` field (instead of ``labels: {...}``) is named with the form that works.  With given classes
(a classifier's): none of the labels present among them is refused in one line, some outside are counted wrong in one
warning, a class given twice is refused.  Helper encoders: no real model runs."""

from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from anybind import Space
from anybind.errors import DataError
from anybind.evaluate import evaluate, zero_shot
from anybind.projectors import Projector, ProjectorConfig
from newcomer_helpers import cli, flat


def _space() -> Space:
    __import__("torch").manual_seed(0)  # the projectors' random start
    proj = {"text": Projector(ProjectorConfig(in_dim=8, out_dim=16, kind="linear", standardize=False)),
            "image": Projector(ProjectorConfig(in_dim=7, out_dim=16, kind="linear", standardize=False))}
    return Space({"text": "callable:helper_encoders:hashed_text", "image": "callable:helper_encoders:image_stats"},
                 proj)


def _manifest(root, n=12, labels=lambda i: {"kind": "ab"[i % 2], "colour": "rg"[i % 2]}, top=None):
    rows = []
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 20 % 255, 40, 200 - i * 10)).save(root / f"i{i}.png")
        r = {"id": f"r{i}", "split": "test", "text": f"item {i}", "image": f"i{i}.png"}
        if labels(i) is not None:
            r["labels"] = labels(i)
        if top is not None:
            r["label"] = top(i)
        rows.append(r)
    p = root / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_library_refuses_a_label_no_record_has_naming_the_keys_present(tmp_path):
    man = _manifest(tmp_path)
    with pytest.raises(DataError) as e:
        evaluate(_space(), man, zero_shot_label="animal", cache=tmp_path / "c")
    msg = str(e.value)
    assert msg == f"{man}: no test record has label 'animal' (labels present: colour, kind)", msg
    from anybind.data.manifest import load_manifest

    recs = load_manifest(man).records
    with pytest.raises(DataError, match=r"no record has label 'animal' \(labels present: colour, kind\)"):
        zero_shot(_space(), recs, "image", "animal", cache=tmp_path / "c")
    assert zero_shot(_space(), recs, "image", "kind", cache=tmp_path / "c")["n"] == 12  # the key present: scored
    assert zero_shot(_space(), [], "image", "kind")["n"] == 0  # nothing given: nothing to refuse


def test_classifier_evaluate_refuses_the_same(tmp_path):
    from anybind.data.manifest import load_manifest
    from anybind.zeroshot import ZeroShotClassifier

    recs = load_manifest(_manifest(tmp_path)).records
    clf = ZeroShotClassifier(_space(), ["a", "b"], modality="image")
    with pytest.raises(DataError, match=r"no record has label 'animal' \(labels present: colour, kind\)"):
        clf.evaluate(recs, "animal", cache=tmp_path / "c")


def test_records_without_the_label_are_counted_in_one_warning(tmp_path, caplog):
    man = _manifest(tmp_path, labels=lambda i: {"kind": "ab"[i % 2]} if i < 8 else None)
    with caplog.at_level(logging.WARNING, logger="anybind"):
        res = evaluate(_space(), man, zero_shot_label="kind", cache=tmp_path / "c")
    assert res["zeroshot/image/kind/n"] == 8
    said = [r.getMessage() for r in caplog.records if "label 'kind'" in r.getMessage()]
    assert said == [f"{man}: 4 of the 12 test records have no label 'kind'; zero-shot scores the other 8"], said


def test_cli_eval_exits_2_with_one_line(tmp_path):
    sp = _space()
    sp.save(tmp_path / "sp")
    man = _manifest(tmp_path)
    r = cli("eval", tmp_path / "sp", man, "--zero-shot", "animal", "--no-diagnostics", cache=tmp_path / "c")
    assert r.exit_code == 2, r.output
    assert "NaN" not in r.output and "Traceback" not in r.output, r.output
    errs = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert errs == [f"error: {man}: no test record has label 'animal' (labels present: colour, kind)"], r.output


def test_top_level_label_field_is_named_with_the_form_that_works(tmp_path):
    sp = _space()
    sp.save(tmp_path / "sp")
    man = _manifest(tmp_path, labels=lambda i: None, top=lambda i: "ab"[i % 2])
    r = cli("eval", tmp_path / "sp", man, "--zero-shot", "label", "--no-diagnostics", cache=tmp_path / "c")
    assert r.exit_code == 2, r.output
    out = flat(r.output)
    assert (f"{man}: no test record has label 'label' (labels present: none); 'label' is a top-level field of 12 "
            "records: labels go in one object, \"labels\": {\"label\": ...}") in out, out
    # validate and fit: the field is named once with that form, not given an encoder
    r = cli("validate", man)
    out = flat(r.output)
    assert r.exit_code == 0 and out.count("field 'label'") == 1, out
    assert "\"labels\": {\"label\": ...}" in out and "PREFIX:NAME" not in out, out


@pytest.mark.parametrize("name, hint", [("label", True), ("lables", True), ("Labels", True), ("imu", False),
                                        ("table", False)])
def test_unreadable_warning_suggests_labels_for_a_label_like_field(name, hint):
    from anybind.data.fields import unreadable_warning

    w = unreadable_warning(name, "m.jsonl")
    assert (f"\"labels\": {{\"{name}\": ...}}" in w) == hint and ("PREFIX:NAME" in w) != hint, w
    assert "\n" not in w and f"field {name!r} of m.jsonl" in w  # one line, naming the field and the file


def test_audit_and_balance_name_the_keys_present_the_same_way(tmp_path):
    from anybind.audit import audit

    man = _manifest(tmp_path, top=lambda i: "ab"[i % 2])
    with pytest.raises(DataError) as e:
        audit(_space(), man, label="animal", cache=tmp_path / "c")
    assert str(e.value) == (f"{man}: no record has label 'animal' (labels present: colour, kind); 'label' is a top-level "
                            "field of 12 records: labels go in one object, \"labels\": {\"label\": ...}"), str(e.value)
    sp = _space()
    sp.save(tmp_path / "sp")
    r = cli("balance", tmp_path / "sp", "--on", man, "--classes-from", man, "--label", "label", "--out",
            tmp_path / "clf", cache=tmp_path / "c")
    assert r.exit_code == 2 and not (tmp_path / "clf").exists(), r.output
    assert (f"error: {man}: no record has label 'label' (labels present: colour, kind); 'label' is a top-level field "
            "of 12 records: labels go in one object, \"labels\": {\"label\": ...}") in flat(r.output), r.output


def test_a_class_source_with_no_records_is_refused_not_taken_as_no_classes(tmp_path):
    """balance/describe --classes-from on a manifest that holds no record: before require_label they said "no record
    has label"; with it (which lets zero-shot score an empty list as n 0) balance went on to "needs two or more
    distinct classes (got 0)" and describe to "no class names given to describe", neither naming the file."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    man = _manifest(tmp_path)
    sp = _space()
    sp.save(tmp_path / "sp")
    r = cli("balance", tmp_path / "sp", "--on", man, "--classes-from", empty, "--label", "kind", "--out",
            tmp_path / "clf", cache=tmp_path / "c")
    assert r.exit_code == 2 and not (tmp_path / "clf").exists(), r.output
    assert f"error: {empty}: no record has label 'kind' (labels present: none)" in flat(r.output), r.output


def _two_kinds(root):
    """A space with image and audio, a manifest whose image records carry no labels while the audio ones do."""
    from encoder_samples import wav

    __import__("torch").manual_seed(0)
    lin = lambda d: Projector(ProjectorConfig(in_dim=d, out_dim=16, kind="linear", standardize=False))  # noqa: E731
    sp = Space({"text": "callable:helper_encoders:hashed_text", "image": "callable:helper_encoders:image_stats",
                "audio": "callable:helper_encoders:file_size"}, {"text": lin(8), "image": lin(7), "audio": lin(2)})
    rows = []
    for i in range(12):
        r = {"id": f"r{i}", "split": "test", "text": f"item {i}"}
        if i < 6:
            Image.new("RGB", (8, 8), (i * 20, 40, 200 - i * 10)).save(root / f"i{i}.png")
            r["image"] = f"i{i}.png"
        else:
            r["audio"] = wav(root / f"s{i}.wav", 800 + 40 * i, i).name
            r["labels"] = {"kind": "ab"[i % 2]}
        rows.append(r)
    man = root / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sp, man


def test_a_modality_with_no_labelled_record_is_left_out_in_one_line_not_scored_nan(tmp_path, caplog):
    sp, man = _two_kinds(tmp_path)
    with caplog.at_level(logging.WARNING, logger="anybind"):
        res = evaluate(sp, man, zero_shot_label="kind", cache=tmp_path / "c")
    assert res["zeroshot/audio/kind/n"] == 6 and 0 <= res["zeroshot/audio/kind/accuracy"] <= 1
    assert not [k for k in res if k.startswith("zeroshot/image/")], res  # as a modality with no record: no cell
    assert not [k for k, v in res.items() if isinstance(v, float) and v != v], res  # no NaN anywhere
    said = [r.getMessage() for r in caplog.records if "label 'kind'" in r.getMessage()]
    assert said == [f"{man}: 6 of the 12 test records have no label 'kind'; zero-shot scores the other 6; "
                    "image: no labelled records (left out)"], said
    # the CLI: the same line, no NaN in the printed numbers or the JSON file
    sp.save(tmp_path / "sp")
    r = cli("eval", tmp_path / "sp", man, "--zero-shot", "kind", "--no-diagnostics", "--json", tmp_path / "r.json",
            cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.output and "image: no labelled records (left out)" in flat(r.output), r.output
    got = json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert got["zeroshot/audio/kind/n"] == 6 and not [k for k in got if k.startswith("zeroshot/image/")]


def test_a_classifier_with_none_of_the_labels_present_among_its_classes_is_refused_in_one_line(tmp_path):
    """A classifier for 'kind' (classes a, b) scored on 'colour' (values g, r): before, a numpy ValueError from the
    chance line (the max of an empty bincount) in the library and a traceback-free but meaningless failure in the
    CLI; now one line naming the file, the classes, the values present and the key whose values the classes are."""
    from anybind.data.manifest import load_manifest
    from anybind.zeroshot import ZeroShotClassifier

    sp, man = _space(), _manifest(tmp_path)
    recs = load_manifest(man).records
    clf = ZeroShotClassifier(sp, ["a", "b"], modality="image")
    hint = "(classes: a, b; values of 'colour' present: g, r); the classes are values of label 'kind'"
    with pytest.raises(DataError) as e:
        clf.evaluate(recs, "colour", cache=tmp_path / "c")
    assert str(e.value) == f"zero-shot: no image record's label 'colour' is one of the 2 classes {hint}", str(e.value)
    with pytest.raises(DataError) as e:
        evaluate(sp, man, zero_shot_label="colour", zero_shot_classifier=clf, cache=tmp_path / "c")
    assert str(e.value) == f"{man}: no test image record's label 'colour' is one of the 2 classes {hint}", str(e.value)
    assert not (tmp_path / "c").exists()  # refused before anything is encoded
    sp.save(tmp_path / "sp")
    clf.save(tmp_path / "clf")
    r = cli("eval", tmp_path / "sp", man, "--zero-shot", "colour", "--classifier", tmp_path / "clf",
            "--no-diagnostics", cache=tmp_path / "c")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    errs = [ln for ln in flat(r.output).split("error: ")[1:]]
    assert errs == [f"{man}: no test image record's label 'colour' is one of the 2 classes {hint}"], r.output
    assert clf.evaluate(recs, "kind", cache=tmp_path / "c")["n"] == 12  # the classifier's own key: scored


def test_labels_partly_outside_the_classes_are_counted_wrong_in_one_warning_and_chance_is_the_majority_share(
        tmp_path, caplog):
    """Records whose label is not one of the classes cannot be classified right: they count (as wrong) in n and the
    accuracy, said in one warning naming a record; chance is the most common class's share of all n items scored
    (before: at least 1 / classes, more than always answering the most common class gets when few items are of a
    class)."""
    from anybind.data.manifest import load_manifest
    from anybind.zeroshot import ZeroShotClassifier

    sp = _space()
    man = _manifest(tmp_path, labels=lambda i: {"kind": "a" if i < 2 else "z"})
    recs = load_manifest(man).records
    clf = ZeroShotClassifier(sp, ["a", "b", "c", "d"], modality="image")
    with caplog.at_level(logging.WARNING, logger="anybind"):
        zs = clf.evaluate(recs, "kind", cache=tmp_path / "c")
    assert zs["n"] == 12 and zs["accuracy"] <= 2 / 12 and zs["chance"] == 2 / 12, zs
    assert sum(map(sum, zs["confusion"])) == 2  # the rows are the classes': the 10 others are in no row
    said = [r.getMessage() for r in caplog.records if "kind" in r.getMessage()]
    assert said == ["zero-shot: 10 of the 12 image records scored have a label 'kind' that is not one of the 4 "
                    "classes (z: 10; first: record 'r2'); counted as wrong"], said
    # all of one class: chance is 1 (always answering it is always right), nothing to warn about
    caplog.clear()
    recs = load_manifest(_manifest(tmp_path, labels=lambda i: {"kind": "b"})).records
    with caplog.at_level(logging.WARNING, logger="anybind"):
        zs = clf.evaluate(recs, "kind", cache=tmp_path / "c")
    assert zs["chance"] == 1.0 and zs["n"] == 12 and not caplog.records, (zs, caplog.records)


@pytest.mark.parametrize("classes", [["a", "a", "b"], ["b", "a", "b"]])
def test_a_class_given_twice_is_refused_not_scored_as_wrong(tmp_path, classes):
    """Before: the items of a class given twice were predicted as its first copy and scored against its last, so
    counted wrong (accuracy 0.58 -> 0.08 on this data, nothing said)."""
    from anybind.data.manifest import load_manifest

    recs = load_manifest(_manifest(tmp_path)).records
    dup = classes[-1] if classes[0] == classes[-1] else classes[0]
    with pytest.raises(DataError) as e:
        zero_shot(_space(), recs, "image", "kind", classes=classes, cache=tmp_path / "c")
    assert str(e.value) == f"zero-shot: class {dup!r} is given twice ({len(classes)} classes given, each once)", e.value
    assert not (tmp_path / "c").exists()  # before anything is encoded

"""``select_split`` (``anybind fit --select-split``) and the selection records are checked before any record is
encoded: a typo used to fail only after the training data was encoded (minutes on a real corpus).  Real Tux Paint
stamps; the proof is that nothing was encoded (no FeatureSet built, no feature cache file), not a timing."""

import pytest
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from anybind.errors import DataError


@pytest.mark.parametrize("split, says", [
    ("vla", "select_split='vla' is not a split: use 'val', 'train' or None"),
    ("test", "select_split='test': nothing is chosen on a test split"),
    ("train", "1 train-split record with 2 of the fit's modalities"),  # too few: counted before encoding too
])
def test_a_bad_selection_fails_before_any_encoding(tux_subset, tmp_path, never_encoded, split, says):
    man = tux_subset(30, 5, "sel-train")
    other = tux_subset(3, 2, "sel-three")  # 2 val records, 1 train record
    with pytest.raises(DataError) as e:
        Space.fit(man, modalities=["image", "text"], cache=tmp_path / "c", epochs=1, progress=False,
                  select_data=str(other.path), select_split=split)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert never_encoded == [] and not any((tmp_path / "c").rglob("*"))


def test_cli_select_split_typo_is_one_line_before_encoding(tux_subset, tmp_path, never_encoded):
    man, other = tux_subset(30, 5, "sel-train"), tux_subset(30, 3, "sel-other")
    res = CliRunner().invoke(app, ["fit", str(man.path), "--modalities", "image,text", "--cache", str(tmp_path / "c"),
                                   "--select-data", str(other.path), "--select-split", "vall",
                                   "--out", str(tmp_path / "sp")], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [x for x in res.output.splitlines() if "error" in x] == [
        "error: select_split='vall' is not a split: use 'val', 'train' or None (every record outside the test split; "
        "'all' in anybind fit)"], res.output
    assert never_encoded == [] and not any((tmp_path / "c").rglob("*")) and not (tmp_path / "sp").exists()

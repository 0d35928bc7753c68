"""Counts in what the library logs and the CLI prints read right: "1 epoch", "2 epochs" (anybind.wording.counted),
down to ``anybind fit --epochs 1`` on real Tux Paint stamps with one val record (no val split to choose on)."""

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind.cli import app
from anybind.wording import counted


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["epoch", "val pair", "query"]))
def test_one_is_singular_every_other_count_plural(n, noun):
    plural = "queries" if noun == "query" else None
    words = counted(n, noun, plural)
    assert words.startswith(f"{n} ")
    assert words.endswith(noun if n == 1 else plural or noun + "s")


def test_fit_with_one_epoch_says_1_epoch(tux_subset, shared_cache, tmp_path):
    man = tux_subset(30, 10**6, "one-val")  # record 0 in val, the rest train: one val pair, no val split
    args = ["fit", str(man.path), "--modalities", "image,text", "--epochs", "1", "--seed", "0",
            "--cache", str(shared_cache), "--out", str(tmp_path / "sp"), "--val-holdout", "0"]  # blind: no val
    res = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "no val split: trained for 1 epoch, no early stopping" in res.output, res.output
    assert "(1 val pair)" in res.output  # check_val_size's warning counts the one val pair
    assert "1 epochs" not in res.output and "1 val pairs" not in res.output

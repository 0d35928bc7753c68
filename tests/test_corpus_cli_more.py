"""`anybind corpus fashion-mnist / openclipart / sounds` on the made-up sources of tests/corpus_sources.py, and
fitting refused on an evaluation-only corpus (CLI and library)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora import fashion_mnist as fm



def test_cli_corpus_commands(mini_fm, mini_oc, mini_sounds, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "corpus",
            "fashion-mnist",
            "--out",
            str(tmp_path / "out_fm"),
            "--data-dir",
            str(mini_fm),
            "--limit",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (
        "fashion-mnist: 19 records" in res.output
        and "bad_label 1" in res.output
        and "evaluation only" in res.output
    )
    root, _ = mini_oc
    res = runner.invoke(
        app,
        [
            "corpus",
            "openclipart",
            "--out",
            str(tmp_path / "oc"),
            "--svg-dir",
            str(root),
            "--check",
            "-1",
            "--max-title-share",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "titles dropped as non-descriptive" in res.output and "rasterised 3 of 3" in res.output
    fd, ov = mini_sounds
    res = runner.invoke(
        app,
        [
            "corpus",
            "sounds",
            "--out",
            str(tmp_path / "snd"),
            "--freedesktop",
            str(fd),
            "--ovos",
            str(ov),
            "--no-install",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "sounds: 4 records" in res.output
    res = runner.invoke(
        app, ["corpus", "fashion-mnist", "--out", str(tmp_path / "x"), "--data-dir", str(tmp_path / "nope")]
    )
    assert res.exit_code == 2 and "apt-get install -y dataset-fashion-mnist" in res.output


def test_cli_fit_refuses_an_eval_only_corpus(mini_fm, tmp_path):
    out = tmp_path / "fmc"
    fm.build_fashion_mnist(out, data_dir=mini_fm, limit=5, progress=False)
    res = CliRunner().invoke(app, ["fit", str(out / "manifest.jsonl"), "--out", str(tmp_path / "space")])
    assert res.exit_code == 2 and "evaluation-only" in res.output and "--allow-eval-only" in res.output
    assert not (tmp_path / "space").exists()


def test_space_fit_refuses_an_eval_only_corpus_in_the_library_too(mini_fm, tmp_path):
    from anybind import Space
    from anybind.errors import DataError

    out = tmp_path / "fmc"
    fm.build_fashion_mnist(out, data_dir=mini_fm, limit=5, progress=False)
    with pytest.raises(DataError, match="evaluation-only"):
        Space.fit(out / "manifest.jsonl", cache=tmp_path / "c", progress=False)

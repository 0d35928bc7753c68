"""A streaming fit (``anybind fit --stream``, :func:`anybind.scale.sharded.fit_sharded`) calibrates on the val split
as the in-memory fit does (the same hook, :func:`anybind.calibration.calibrate_after_fit`): real Tux Paint stamps,
the real EfficientNet and MiniLM."""

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind import Space
from anybind.calibration import fit_calibration
from anybind.calibrators import pair_key
from anybind.cli import app
from anybind.scale.sharded import fit_sharded

KW = dict(modalities=["image", "text"], epochs=1, progress=False, seed=0)
IT = pair_key("image", "text")


@pytest.fixture(scope="module")
def tux(tux_subset):
    """60 real Tux Paint stamps, every fifth in val: 12 val pairs to calibrate on."""
    return tux_subset(60, 5, "stream-calib")


@pytest.fixture(scope="module")
def streamed(tux, shared_cache):
    """The streaming fit, and the log lines of the calibration it ran."""
    logger = logging.getLogger("anybind.calibration")
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    h, level = Keep(), logger.level
    logger.addHandler(h)
    logger.setLevel(logging.INFO)
    try:
        space = fit_sharded(str(tux.path), cache=shared_cache, **KW)
    finally:
        logger.removeHandler(h)
        logger.setLevel(level)
    return space, lines


def test_a_streaming_fit_with_a_val_split_is_calibrated_on_it(streamed, tux, shared_cache):
    space, lines = streamed
    assert space.info["lineage"][-1]["trainer"] == "streaming"
    cal = space.calibration
    assert cal is not None and cal.split == "val" and cal.source == str(tux.path)
    assert set(cal.pairs) == {IT}
    assert cal.pairs[IT].n_pos == len(tux.split("val"))
    # exactly what `anybind calibrate` fits on the streamed space: the same calibration, not another one
    again = fit_calibration(space, tux, cache=shared_cache)
    s = np.linspace(-0.3, 0.9, 13)
    np.testing.assert_allclose(cal.pairs[IT].probability(s), again.pairs[IT].probability(s))
    # the log says so as the in-memory fit's does
    assert [x for x in lines if x.startswith(f"calibrated {IT} on ")], lines
    recs = tux.split("val")[:5]
    P = space.match_probability("text", [r.values["text"] for r in recs], "image", [r.values["image"] for r in recs],
                                cache=shared_cache)
    assert P.shape == (5, 5) and np.all((P > 0) & (P < 1))
    assert np.diag(P).mean() > P[~np.eye(5, dtype=bool)].mean()


def test_a_streaming_fit_without_a_val_split_is_not_calibrated_and_says_nothing_wrong(tux, shared_cache, tmp_path,
                                                                                      caplog):
    rows = [json.loads(x) for x in tux.path.read_text().splitlines()]
    man = tmp_path / "train-only.jsonl"
    man.write_text("".join(json.dumps({**r, "split": "train"}) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="anybind"):
        space = fit_sharded(str(man), cache=shared_cache, val_holdout=0, **KW)  # every record trained on, blind
    assert space.calibration is None
    said = [r.getMessage() for r in caplog.records if "calibrat" in r.getMessage()]
    assert said == [], said
    held = fit_sharded(str(man), cache=shared_cache, **KW)  # recipe auto's default: val held out of train
    assert held.info["lineage"][-1]["val_holdout"]["val_pairs"] >= 2  # calibrated on the held-out val, as trained
    assert held.calibration is not None and set(held.calibration.pairs) == {IT} and held.calibration.split == "val"


def test_the_cli_saves_a_streamed_space_that_loads_calibrated(tux, shared_cache, tmp_path):
    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["fit", str(tux.path), "--modalities", "image,text", "--epochs", "1", "--seed", "0",
                                   "--cache", str(shared_cache), "--stream", "--out", str(out)],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert (out / "calibration.json").is_file()
    back = Space.load(out)
    assert back.info["lineage"][-1]["trainer"] == "streaming"
    assert back.calibration is not None and set(back.calibration.pairs) == {IT} and back.calibration.split == "val"

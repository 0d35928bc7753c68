"""``anybind fit --ridge-span/--no-ridge-span`` (TrainConfig.ridge_span, issue 16's span lever) from the CLI on real
Tux Paint stamps: the flag reaches the in-memory and the streaming fit (their lineage's ``ridge_start.<m>.span``, the
same span as ``Space.fit(ridge_span=True)``), and is refused in one line where it cannot apply."""

import pytest
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app


@pytest.fixture(scope="module")
def tux_small(tux_subset):
    """60 real Tux Paint stamps (image, text), every fifth in val: 48 training captions, far fewer than 384 dims."""
    return tux_subset(60, 5, "cli-span")


@pytest.fixture(scope="module")
def wanted(tux_small, shared_cache):
    """The span record of the library's fit with the lever on (epochs 0: the start alone)."""
    space = Space.fit(tux_small, modalities=["image", "text"], cache=shared_cache, epochs=0, progress=False, seed=0,
                      ridge_span=True)
    return space.info["lineage"][-1]["ridge_start"]["image"]["span"]


def _fit(man, cache, out, *extra):
    args = ["fit", str(man.path), "--modalities", "image,text", "--epochs", "0", "--seed", "0", "--cache", str(cache),
            "--out", str(out), *extra]
    return CliRunner().invoke(app, args, env={"COLUMNS": "250"})


@pytest.mark.parametrize("stream", [False, True])
def test_the_flag_reaches_the_fit_and_its_record(tux_small, shared_cache, wanted, tmp_path, stream):
    more = ["--stream"] if stream else []
    res = _fit(tux_small, shared_cache, tmp_path / "on", "--ridge-span", *more)
    assert res.exit_code == 0, res.output
    space = Space.load(tmp_path / "on")
    assert space.config["ridge_span"] is True
    rec = space.info["lineage"][-1]["ridge_start"]["image"]["span"]
    assert rec["dim"] == 384 and rec["rank"] < 384 and rec["prior_out"] > rec["tol"]  # the lever acts here
    assert rec["rank"] == wanted["rank"] and rec["prior_out"] == pytest.approx(wanted["prior_out"], rel=0.01)
    res = _fit(tux_small, shared_cache, tmp_path / "off", "--no-ridge-span", *more)
    assert res.exit_code == 0, res.output
    off = Space.load(tmp_path / "off")
    assert off.config["ridge_span"] is False and "span" not in off.info["lineage"][-1]["ridge_start"]["image"]


@pytest.mark.parametrize("extra, says", [
    (["--method", "procrustes"], "--ridge-span"),  # a training-free method: the derived refusal names it
    (["--ridge-prior", "zero"], "ridge_span=True keeps the label bridge"),  # no prior to keep outside the span
])
def test_where_it_cannot_apply_it_is_refused_in_one_line(tux_small, shared_cache, tmp_path, extra, says):
    res = _fit(tux_small, shared_cache, tmp_path / "sp", "--ridge-span", *extra)
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = [x for x in res.output.splitlines() if says in x]
    assert len(lines) == 1, res.output
    assert not (tmp_path / "sp").exists()


def test_the_help_lists_it():
    res = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "--ridge-span" in res.output and "--no-ridge-span" in res.output

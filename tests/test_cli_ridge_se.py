"""``anybind fit --ridge-se K``: TrainConfig.ridge_se (the ridge start's standard-error rule) from the CLI, validated
in one line before any work, and listed in ``anybind fit --help``."""

import pytest
from typer.testing import CliRunner

from anybind import Space
from anybind.cli import app
from test_robust import make_pairs


def _fit(tmp_path, *extra):
    m, specs = make_pairs(tmp_path, n=100)
    args = ["fit", str(m), "--epochs", "0", "--lock", "tx", "--init", "ridge", "--no-kernel-start",
            "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "sp"), *extra]
    for k, spec in specs.items():
        args += ["-e", f"{k}={spec}"]
    return CliRunner().invoke(app, args)


def test_the_flag_sets_the_rule_and_records_it(tmp_path):
    res = _fit(tmp_path, "--ridge-se", "1")
    assert res.exit_code == 0, res.output
    space = Space.load(tmp_path / "sp")
    assert space.config["ridge_se"] == 1.0
    assert space.info["lineage"][-1]["ridge_start"]["im"]["se_rule"]["rule"] == "1se"


@pytest.mark.parametrize("value, says", [("-1", "a non-negative number of standard errors, got -1"),
                                         ("nan", "got nan"), ("inf", "got inf"), ("abc", "a valid number")])
def test_a_bad_value_is_refused_in_one_line_before_any_work(tmp_path, value, says):
    res = _fit(tmp_path, "--ridge-se", value)
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and says in errors[0] and "--ridge-se" in errors[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "sp").exists()
    assert "Traceback" not in res.output


def test_the_rule_without_a_ridge_start_is_one_line(tmp_path):
    res = _fit(tmp_path, "--ridge-se", "2", "--init", "random")
    assert res.exit_code != 0 and "Traceback" not in res.output
    line = [x for x in res.output.splitlines() if "ridge_se" in x]
    assert len(line) == 1 and "init='ridge'" in line[0]


def test_the_help_lists_it():
    res = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "--ridge-se" in res.output and "standard" in res.output

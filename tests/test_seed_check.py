"""A seed is a whole number in [0, 2**63 - 1]: a negative one reached ``np.random.default_rng([seed, ...])`` (the ridge
start's support rows, GeodesicMixup) deep in a fit and failed there in numpy.  Every config with a seed refuses it at
construction, and the CLI's --seed (fit, bind, bench) on the command line, each in one line naming the field."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from anybind.caption.fit import CaptionConfig
from anybind.cli import app
from anybind.errors import DataError
from anybind.federated import FederatedConfig
from anybind.progressive_fit import BindConfig
from anybind.recipe import MAX_SEED
from anybind.train import TrainConfig
from anybind.update import UpdateConfig

CONFIGS = [TrainConfig, BindConfig, FederatedConfig, UpdateConfig, CaptionConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=-(2**70), max_value=2**70))
def test_a_seed_outside_the_range_is_refused_in_one_line_naming_the_field(cls, seed):
    if 0 <= seed <= MAX_SEED:
        assert cls(seed=seed).seed == seed
        np.random.default_rng([seed, 0x6D32])  # what the fit does with it: fine
        return
    with pytest.raises(DataError) as e:
        cls(seed=seed)
    msg = str(e.value)
    assert f"{cls.__name__}.seed" in msg and str(seed) in msg and "\n" not in msg


@pytest.mark.parametrize("cls", CONFIGS, ids=[c.__name__ for c in CONFIGS])
@pytest.mark.parametrize("seed", [1.0, "0", True, None])
def test_a_seed_that_is_not_a_whole_number_is_refused(cls, seed):
    with pytest.raises(DataError, match=f"{cls.__name__}.seed must be a whole number"):
        cls(seed=seed)
    assert cls(seed=np.int64(3)).seed == 3


@pytest.mark.parametrize("args", [
    ["fit", "{m}", "--out", "{o}"],
    ["fit", "{m}", "--method", "procrustes", "--out", "{o}"],
    ["bind", "{o}", "--add", "audio=audio:aisfx", "--data", "{m}", "--out", "{o}2"],
    ["bench", "retrieval"],
])
def test_the_cli_refuses_a_negative_seed_in_one_line(tmp_path, args):
    args = [a.format(m=tmp_path / "m.jsonl", o=tmp_path / "out") for a in args]
    res = CliRunner().invoke(app, [*args, "--seed", "-1"], env={"COLUMNS": "250"})
    assert res.exit_code == 2, res.output
    said = [x for x in res.output.splitlines() if "--seed" in x]
    assert len(said) == 1 and "greater than or equal to 0" in said[0], res.output
    assert not (tmp_path / "out").exists()


def test_every_seed_option_of_the_cli_is_bounded():
    """Every command's --seed (fit, bind, bench, demo, fuse, keep, caption, prompts...) refuses a negative seed."""
    import typer.main

    def commands(cmd):
        yield cmd
        for sub in getattr(cmd, "commands", {}).values():
            yield from commands(sub)

    seeds = [(c.name, p) for c in commands(typer.main.get_command(app)) for p in c.params if p.name == "seed"]
    assert len(seeds) >= 10
    for name, p in seeds:
        assert (p.min, p.max) == (0, MAX_SEED), name

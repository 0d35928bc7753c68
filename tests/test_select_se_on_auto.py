"""``select_se_on="finetune"`` (``anybind fit --select-se-on finetune``) left to recipe auto's standard-error rule:
a fine-tuning option (:func:`anybind.fit_checks.finetune_asked`) that the rule steers where recipe auto sets it (an own
val of 2 to VAL_WARN - 1 pairs).  Where auto does not set it (VAL_WARN val pairs or more, ``select_data``, recipe
plain) the same call still fits, saying in one line that the rule is off; only an explicit ``select_se=0`` beside it
is refused.  Real Tux Paint stamps."""

import logging

import pytest

from anybind import Space
from anybind.errors import DataError


@pytest.fixture(scope="module")
def enough(tux_subset):
    """200 real stamps, every second in val: exactly anybind.fitting.VAL_WARN (100) val pairs, where recipe auto sets no rule."""
    return tux_subset(200, 2, "valwarn-enough")


def _fit(man, cache, **kw):
    return Space.fit(man, modalities=["image", "text"], cache=cache, epochs=1, progress=False, seed=0, **kw)


def test_on_finetune_where_recipe_auto_sets_no_rule_fits_and_says_so(enough, shared_cache, caplog):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="anybind"):
        sp = _fit(enough, shared_cache, select_se_on="finetune")
    assert "select_se" not in sp.info["lineage"][-1]["recipe"]["chosen"] and sp.config["select_se"] == 0.0
    said = [r.getMessage() for r in caplog.records if "select_se_on" in r.getMessage()]
    assert len(said) == 1 and "\n" not in said[0] and "no standard-error rule" in said[0], said
    assert sp.config["select_se_on"] == "finetune" and sp.info["training"]["history"][-1]["epoch"] == 1


def test_on_finetune_beside_an_explicit_select_se_0_is_refused(enough, shared_cache):
    with pytest.raises(DataError) as e:
        _fit(enough, shared_cache, select_se=0.0, select_se_on="finetune")
    assert "\n" not in str(e.value) and str(e.value).startswith("select_se_on='finetune'"), str(e.value)


def test_the_check_reads_the_config_before_it_is_resolved():
    """A TrainConfig given to the trainer directly: select_se=0 with select_se_on='finetune' refused, select_se left
    at AUTO (the recipe's) passed, a rule > 0 passed."""
    from anybind.robust import check_select_se_on
    from anybind.train import TrainConfig

    with pytest.raises(DataError, match=r"^select_se_on='finetune' steers nothing without the rule \(select_se=0\)"):
        check_select_se_on(TrainConfig(select_se=0.0, select_se_on="finetune"))
    check_select_se_on(TrainConfig(select_se_on="finetune"))
    check_select_se_on(TrainConfig(select_se=1.0, select_se_on="finetune"))
    check_select_se_on(TrainConfig(select_se=0.0))

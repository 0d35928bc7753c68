"""Boolean fields of TrainConfig and BindConfig hold real bools (or, where the field allows it, the recipe's AUTO /
None): ``1 in (True,)`` holds, so a 1, a 1.0, a numpy bool or a string would otherwise pass a membership test and
act as True or False; each is refused at construction in one line naming the field."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.errors import DataError
from anybind.progressive_fit import BindConfig, bind_config
from anybind.recipe import AUTO
from anybind.train import TrainConfig

#: (config, boolean field, what it also allows besides True / False)
FLAGS = [(TrainConfig, f, (AUTO,) if f in ("start_guard", "kernel_start", "finetune") else ())
         for f in ("standardize", "learn_temperature", "start_guard", "kernel_start", "center", "ridge_span",
                   "finetune")]
FLAGS += [(BindConfig, f, (None,) if f in ("start_guard", "kernel_start", "finetune") else ())
          for f in ("standardize", "learn_temperature", "start_guard", "kernel_start", "finetune")]

not_bools = st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none(),
                      st.sampled_from([np.bool_(True), np.bool_(False), np.int64(1), AUTO, [True], "True"]))


def test_every_boolean_field_is_listed():
    """The table above covers every field annotated bool in both configs (a new flag is checked too)."""
    for cls in (TrainConfig, BindConfig):
        annotated = {f for f, t in cls.__annotations__.items() if "bool" in str(t)}
        assert annotated == {f for c, f, _ in FLAGS if c is cls}


@pytest.mark.parametrize("cls, field, extra", FLAGS, ids=[f"{c.__name__}.{f}" for c, f, _ in FLAGS])
@settings(max_examples=40, deadline=None)
@given(value=not_bools)
def test_a_non_bool_is_refused_in_one_line_naming_the_field(cls, field, extra, value):
    if any(value is e for e in extra):
        assert getattr(cls(**{field: value}), field) is value
        return
    with pytest.raises(DataError) as e:
        cls(**{field: value})
    msg = str(e.value)
    assert "\n" not in msg and f"{cls.__name__}.{field}" in msg and repr(value) in msg


@pytest.mark.parametrize("cls, field, extra", FLAGS, ids=[f"{c.__name__}.{f}" for c, f, _ in FLAGS])
def test_true_and_false_are_kept(cls, field, extra):
    for v in (True, False):
        assert getattr(cls(**{field: v}), field) is v


def test_bind_config_from_a_dict_refuses_one_for_true():
    with pytest.raises(DataError, match="BindConfig.start_guard must be True, False or None, got 1"):
        bind_config({"start_guard": 1})
    assert bind_config({"start_guard": True}).start_guard is True

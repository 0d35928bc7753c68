"""The ridge start says what each modality's start finally is in one log line (anybind.ridge.start_line): the start
guard's choice and the kernel family's, together, so no line says "starts at its label bridge" while the kernel
branch the next line keeps is on top of it."""

import logging

import pytest

from anybind.ridge import start_line

GUARD_BRIDGE = {"ridge_val": 0.41, "start_val": 0.45, "kept": "start"}
GUARD_RIDGE = {"ridge_val": 0.47, "start_val": 0.45, "kept": "ridge"}
GUARD_NOTE = {"kept": "ridge", "note": "no val pairs: the ridge start is not checked against the prior"}
KEPT = {"kept": True, "tau": 0.5, "alpha": 1e-5, "val": 0.6, "base_val": 0.45, "grid": {"0.5/1e-05": 0.6}}
NOT_KEPT = {"kept": False, "base_val": 0.45, "grid": {"0.5/1e-05": 0.44}}
NOTE = {"kept": False, "note": "a frame-pooling projector"}


@pytest.mark.parametrize("guard, kernel, says, never", [
    (GUARD_BRIDGE, KEPT, ["its label bridge plus a kernel branch (tau 0.5, alpha 1e-05)", "(the bridge)"],
     ["do not beat the training-free start"]),
    (GUARD_RIDGE, KEPT, ["plus a kernel branch", "(the ridge)"], ["do not beat"]),
    (GUARD_BRIDGE, NOT_KEPT, ["its label bridge (val 0.4500 >= the ridge's 0.4100", "no kernel branch (its best val "
                              "0.44 does not beat 0.4500)"], ["plus a kernel"]),
    (GUARD_RIDGE, None, ["starts at the ridge (val 0.4700 > its label bridge's 0.4500)"], ["kernel"]),
    (None, NOTE, ["the linear ridge start; no kernel branch (a frame-pooling projector)"], ["label bridge"]),
    (GUARD_NOTE, NOT_KEPT, ["the linear ridge start; no kernel branch"], ["label bridge"]),
])
def test_the_line_says_the_final_start(guard, kernel, says, never):
    line = start_line(guard, kernel)
    assert "\n" not in line and all(s in line for s in says) and not any(s in line for s in never), line


@pytest.mark.parametrize("grid, says", [
    ({"0.5/1e-05": float("nan"), "1.0/1e-05": 0.44}, "its best val 0.44 does not beat 0.4500"),
    ({"0.5/1e-05": 0.44, "1.0/1e-05": float("nan")}, "its best val 0.44 does not beat 0.4500"),
    ({"0.5/1e-05": float("nan")}, "no finite grid score; the linear start's val 0.4500"),
])
def test_a_nan_grid_score_is_ignored(grid, says):
    line = start_line(GUARD_BRIDGE, {**NOT_KEPT, "grid": grid})
    assert says in line and "nan" not in line, line


def test_nothing_to_say_without_a_guard_or_kernel_record():
    assert start_line(None, None) == "" and start_line(GUARD_NOTE, None) == ""


def test_a_fit_logs_one_start_line_per_modality_matching_its_record(monkeypatch, caplog):
    from anybind.train import TrainConfig, train_space
    from test_kernel_start import concept_features

    fs = concept_features(monkeypatch)
    cfg = TrainConfig(lock="text", init="ridge", ridge_prior="bridge", start_guard=True, kernel_start=True, epochs=0,
                      hidden=16)
    with caplog.at_level(logging.INFO, logger="anybind.robust"):
        space = train_space(fs, cfg, progress=False)
    rec = space.info["training"]["robust"]["ridge"]["image"]
    lines = [r.getMessage() for r in caplog.records if r.name == "anybind.robust"]
    mine = [x for x in lines if x.startswith("start: 'image' ")]
    assert mine == ["start: 'image' " + start_line(rec["guard"], rec["kernel"])]
    assert not [x for x in lines if x.startswith(("kernel start:", "start guard: 'image' starts"))]
    assert ("plus a kernel branch" in mine[0]) == rec["kernel"]["kept"]


@pytest.mark.parametrize("guard, kernel", [(GUARD_BRIDGE, KEPT), (GUARD_NOTE, NOT_KEPT), (GUARD_NOTE, None),
                                           (None, NOTE), (None, None), (GUARD_RIDGE, None)])
def test_both_callers_say_the_same_lines(guard, kernel, caplog):
    """say_starts as Space.fit's trainers call it (maps over the modalities, None where nothing was recorded) and as
    progressive binding does (one modality, its record's entries, None or absent) logs the same lines: the guard's
    note as a warning, then start_line's line."""
    from anybind.ridge import say_starts

    fit_log, bind_log = logging.getLogger("anybind.robust"), logging.getLogger("anybind.progressive")
    with caplog.at_level(logging.INFO):
        say_starts(fit_log, ["image", "audio"], {"image": guard} if guard else None,
                   {"image": kernel, "audio": NOTE} if kernel else {"audio": NOTE})
        say_starts(bind_log, ["image"], {"image": guard}, {"image": kernel})
    fit = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == fit_log.name]
    bind = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == bind_log.name]
    want = ([("WARNING", f"start guard: 'image': {guard['note']} (its label bridge)")] if guard and "note" in guard
            else []) + ([("INFO", "start: 'image' " + start_line(guard, kernel))] if start_line(guard, kernel) else [])
    assert bind == want and [x for x in fit if "'audio'" not in x[1]] == want
    assert fit[-1] == ("INFO", "start: 'audio' " + start_line(None, NOTE))


# the records of a real fit under the standard-error rule (anybind fit on 130 Tux Paint train / 12 val pairs,
# recipe auto's select_se=1): the ridge beat the bridge on val, but by less than one standard error
GUARD_SE = {"ridge_val": 0.791667, "start_val": 0.777778, "kept": "start", "rule": "1se", "best_val": 0.791667,
            "best_se": 0.068041}
KERNEL_SE = {"base_val": 0.777778, "grid": {"0.5/1e-05": 0.791667, "1/1e-05": 0.75}, "kept": False, "rule": "1se",
             "best_se": 0.062}


def test_the_standard_error_rule_is_named_never_a_false_comparison():
    """Under select_se the guard keeps the bridge though the ridge scored higher, and the kernel branch is left out
    though it scored higher: the line says so (within one standard error), never "0.7778 >= the ridge's 0.7917"."""
    line = start_line(GUARD_SE, KERNEL_SE)
    assert "\n" not in line and ">=" not in line and "does not beat 0.7778" not in line, line
    assert "its label bridge (val 0.7778 < the ridge's 0.7917, within 1 standard error (0.0680)" in line, line
    assert "its best val 0.791667 beats 0.7778 by less than 1 standard error (0.0620)" in line, line
    # where the start did score at least as high, the plain comparison stays
    assert "val 0.7917 >= the ridge's 0.7778" in start_line({**GUARD_SE, "start_val": 0.791667, "ridge_val": 0.777778},
                                                              None)

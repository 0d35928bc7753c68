"""``anybind bench --task encoders`` in small settings: every kind runs both paths on the same items, the
features are checked equal, and a bare path that disagrees is flagged (speeds are reported, never asserted)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxruntime")
pytest.importorskip("av")

from anybind.bench import run_tasks  # noqa: E402
from anybind.bench.encoder_cases import Case, case_hf  # noqa: E402
from anybind.bench.tasks_encoders import measure  # noqa: E402
from anybind.errors import AnybindError  # noqa: E402

ROW_KEYS = {"name", "n", "anybind/s", "bare/s", "ratio", "paired", "cpu ratio", "py MiB anybind", "py MiB bare",
            "RSS MiB anybind", "RSS MiB bare", "max |diff|", "equal"}


def _check(rec, kinds):
    assert [r["name"].split(" ")[0] for r in rec["table"]] == kinds
    for r in rec["table"]:
        assert set(r) == ROW_KEYS
        assert r["equal"] == "yes" and r["max |diff|"] < 1e-4, r
        assert min(r["anybind/s"], r["bare/s"], r["ratio"], r["paired"], r["cpu ratio"]) > 0
        assert r["py MiB anybind"] > 0 and r["py MiB bare"] > 0
        assert rec["metrics"][f"{r['name'].split(' ')[0]}/equal"] == 1.0


def test_hf_onnx_and_video_kinds_match_their_bare_forward(tmp_path):
    kinds = ["hf-text", "hf-image", "hf-audio", "onnx-image", "video", "hf-video"]
    [rec] = run_tasks(["encoders"], work=tmp_path, options={"kinds": ",".join(kinds), "scale": "0.07",
                                                            "repeats": "1", "video_image": "onnx"})
    _check(rec, kinds)
    assert rec["table"][-2]["name"] == "video (clips)" and rec["table"][-2]["n"] == 2
    assert "video:frames(image:onnx/" in rec["config"]["specs"]["video"]


def test_builtin_kinds_match_their_bare_forward(tmp_path):
    kinds = ["effnet", "minilm", "aisfx"]
    pytest.importorskip("aisfx")
    [rec] = run_tasks(["encoders"], work=tmp_path, options={"kinds": ",".join(kinds), "scale": "0.07",
                                                            "repeats": "1"})
    _check(rec, kinds)


def test_a_bare_path_that_disagrees_is_flagged(tmp_path):
    case = case_hf(tmp_path, "hf-text", 6, 0)
    good = measure(case, 1)
    assert good["equal"] == "yes"
    off = Case(case.kind, case.spec, case.items, lambda b: case.bare(b) + np.float32(1e-2), case.batch_size)
    bad = measure(off, 1)
    assert bad["equal"] == "no" and bad["max |diff|"] == pytest.approx(1e-2, rel=1e-3)


def test_an_unknown_kind_or_frame_encoder_is_one_line(tmp_path):
    with pytest.raises(AnybindError, match="unknown kind.*'nope'.*known: effnet"):
        run_tasks(["encoders"], work=tmp_path, options={"kinds": "nope"})
    with pytest.raises(AnybindError, match="video_image='vit'"):
        run_tasks(["encoders"], work=tmp_path, options={"kinds": "video", "video_image": "vit"})

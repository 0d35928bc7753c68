"""The in-memory ANN's ``info.json`` and a space's ``calibration.json`` carry a ``format_version`` and are read by
the one versioned reader (``anybind.artefact_meta.read_meta``): a file from a newer anybind, or a damaged one, is
refused in one line naming it; a file written before the version existed still loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anybind.calibrators import Calibration, read_calibration, write_calibration
from anybind.errors import SpaceError
from anybind.index import Index, IndexError_
from anybind.index.memann import MEMANN_DIR, MemoryAnn

DAMAGE = [({"format_version": 99}, "saved by a newer anybind"), ({"format_version": "1"}, "expected an integer")]


def _one_line(excinfo, *words):
    msg = str(excinfo.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def _edit(p, change):
    doc = json.loads(p.read_text())
    for k, v in change.items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    p.write_text(json.dumps(doc))


@pytest.fixture
def graph(tmp_path):
    pytest.importorskip("hnswlib", reason="the in-memory ANN needs hnswlib (pip install 'anybind[ann]')")
    ix = Index.create(tmp_path / "ix", dim=8, identity="t8", ann_threshold=0)
    ix.add_vectors([str(i) for i in range(40)], np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32), "v")
    ix.create_memory_ann()
    return ix.path / MEMANN_DIR


def test_the_in_memory_ann_header_is_versioned(graph):
    info = json.loads((graph / "info.json").read_text())
    assert info["format_version"] == 1
    _edit(graph / "info.json", {"format_version": None})  # written before the version existed
    assert len(MemoryAnn.load(graph, "t8", 8).slots) == 40


@pytest.mark.parametrize("change, why", DAMAGE)
def test_a_newer_or_damaged_in_memory_ann_header_is_one_line(graph, change, why):
    _edit(graph / "info.json", change)
    with pytest.raises(IndexError_) as e:
        MemoryAnn.load(graph, "t8", 8)
    _one_line(e, str(graph / "info.json"), why, "--memory-ann")


def _calibration(tmp_path):
    write_calibration(tmp_path, Calibration({}, "platt", "val", 0.5, "m.jsonl"), "s" * 24)
    return tmp_path / "calibration.json"


def test_the_calibration_file_is_versioned(tmp_path):
    p = _calibration(tmp_path)
    assert json.loads(p.read_text())["format_version"] == 1
    _edit(p, {"format_version": None})
    cal = read_calibration(tmp_path, "s" * 24)
    assert (cal.method, cal.split, cal.source) == ("platt", "val", "m.jsonl")


@pytest.mark.parametrize("change, why", [*DAMAGE, ({"format": "other"}, "not an anybind calibration")])
def test_a_newer_or_damaged_calibration_file_is_one_line(tmp_path, change, why):
    p = _calibration(tmp_path)
    _edit(p, change)
    with pytest.raises(SpaceError) as e:
        read_calibration(tmp_path, "s" * 24)
    _one_line(e, str(p), why)
    p.write_bytes(b"\xff\xfe{")
    with pytest.raises(SpaceError) as e:
        read_calibration(tmp_path, "s" * 24)
    _one_line(e, str(p), "corrupt JSON", "anybind calibrate")

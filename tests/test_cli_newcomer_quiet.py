"""No noise for a newcomer (issue 22): binding shows a progress bar and no epoch lines; training prints no
subnormal warning (with numpy's limits still right); a text encoder loads without loader bars; Ray's notes are
silenced."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from newcomer_helpers import FILE, IMAGE, TEXT, cli, corpus


# -- progress and noise -------------------------------------------------------------------------------------

def test_bind_encodes_with_a_progress_bar_and_no_epoch_lines(tmp_path, monkeypatch):
    from anybind import Space
    from anybind.cache import FeatureCache

    man = corpus(tmp_path, fields=("text", "speech", "image"))
    Space.fit(man, ["text", "speech"], encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2,
              progress=False).save(tmp_path / "sp")
    seen = []
    encode = FeatureCache.encode

    def spy(self, enc, items, *a, **kw):
        seen.append((enc.spec, kw.get("progress")))
        return encode(self, enc, items, *a, **kw)

    monkeypatch.setattr(FeatureCache, "encode", spy)
    r = cli("bind", tmp_path / "sp", "--add", f"image={IMAGE}", "--data", man, "--epochs", "3",
             "--out", tmp_path / "sp2", cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert (IMAGE, True) in seen, seen
    assert "epoch 1:" not in r.output


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "PYTHONPATH", "ANYBIND_MEDIA_CHECKS",
                                                       "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p)
    return env


def test_training_prints_no_subnormal_warning(tmp_path):
    """Flushing denormals while training made numpy warn 'The value of the smallest subnormal ... is zero'."""
    from anybind import Space

    man = corpus(tmp_path, fields=("text", "speech", "image"))
    Space.fit(man, ["text", "speech"], encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2,
              progress=False).save(tmp_path / "sp")
    r = subprocess.run([sys.executable, "-m", "anybind.cli", "bind", str(tmp_path / "sp"), "--add", f"image={IMAGE}",
                        "--data", str(man), "--epochs", "3", "--out", str(tmp_path / "sp2"), "--cache", str(tmp_path / "c")],
                       env=_bare_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "subnormal" not in r.stderr, r.stderr


def test_flushing_denormals_keeps_numpy_limits_right():
    code = ("import warnings, numpy as np\n"
            "from anybind.numerics import flush_denormals\n"
            "flush_denormals(True)\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('error')\n"
            "    np.unique(np.array([2, 1])); v = np.finfo(np.float32).smallest_subnormal\n"
            "flush_denormals(False)\n"
            "assert v > 0, v\n")
    r = subprocess.run([sys.executable, "-c", code], env=_bare_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_text_encoder_loads_without_loader_bars(monkeypatch):
    import sentence_transformers
    from transformers.utils import logging as hf_logging

    from anybind.encoders.text import SentenceTransformerEncoder

    seen = []

    class FakeModel:
        def __init__(self, *a, **kw):
            seen.append(hf_logging.is_progress_bar_enabled())

        def eval(self):
            return self

    hf_logging.enable_progress_bar()
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeModel)
    SentenceTransformerEncoder("minilm").model()
    assert seen == [False]
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back


def test_ray_notes_are_silenced():
    pytest.importorskip("ray")
    from anybind.scale import quiet_ray_core

    quiet_ray_core()
    for name in ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress"):
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
    assert logging.getLogger("ray.data").isEnabledFor(logging.WARNING)  # Ray Data's real warnings stay

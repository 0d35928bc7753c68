"""A user's own encoder, installed as a package, works in every fresh process (fit, load, serve's loader).

The plugin is a real installed distribution as far as Python's packaging metadata is concerned: a module plus
a ``*.dist-info`` folder with its ``entry_points.txt`` on ``sys.path`` (what ``pip install`` leaves behind),
so ``importlib.metadata`` finds it exactly as it would a wheel installed into the venv. Nothing imports the
plugin's module by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

PLUGIN = '''
import numpy as np
from anybind.encoders.base import Encoder, sha256_file


class ImuEncoder(Encoder):
    """An IMU 'sensor' encoder: a (n, 3) .npy recording -> per-axis mean, std, min, max."""

    modality = "imu"
    input_kind = "file"
    dim = 12

    def __init__(self, name):
        self.spec = f"imu:{name}"
        self._identity = f"imu:{name}|stats-v1|" + sha256_file(__file__)[:12]

    @property
    def identity(self):
        return self._identity

    def load(self, item):
        a = np.load(item, allow_pickle=False)
        return a.astype(np.float32)

    def encode_loaded(self, batch):
        return np.stack([np.concatenate([a.mean(0), a.std(0), a.min(0), a.max(0)]) for a in batch])


def make(name):
    return ImuEncoder(name or "default")
'''


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    site = tmp_path / "site"
    (site / "imu_plugin").mkdir(parents=True)
    (site / "imu_plugin" / "__init__.py").write_text(PLUGIN)
    dist = site / "imu_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: imu-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[anybind.encoders]\nimu = imu_plugin:make\n")
    (dist / "RECORD").write_text("")
    return site


@pytest.fixture
def imu_manifest(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    words = ["walking", "running", "sitting", "cycling"]
    recs = []
    for i in range(48):
        k = i % 4
        a = rng.normal(loc=k, scale=1 + k, size=(50, 3)).astype(np.float32)
        np.save(root / f"r{i}.npy", a)
        recs.append({"id": f"r{i}", "split": "val" if i % 6 == 0 else "train", "imu": f"r{i}.npy",
                     "text": f"someone {words[k]}"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root / "manifest.jsonl"


def _env(site: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(site), str(Path(__file__).parent), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["ANYBIND_CACHE"] = str(tmp_path / "cache")
    return env


def _run(args: list[str], env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


def test_plugin_encoder_works_in_fresh_processes(plugin_site, imu_manifest, tmp_path):
    env = _env(plugin_site, tmp_path)
    out = tmp_path / "space"
    r = _run([sys.executable, "-m", "anybind.cli", "fit", str(imu_manifest), "--modalities", "imu,text",
              "-e", "imu=imu:v1", "-e", "text=callable:helper_encoders:hashed_text", "--epochs", "3",
              "--dim", "8", "--out", str(out)], env, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "unknown modality" not in r.stderr and "not registered" not in r.stderr
    assert json.loads((out / "space.json").read_text())["modalities"]["imu"]["encoder"] == "imu:v1"
    # a new interpreter that never imports imu_plugin by hand: Space.load + embed
    code = textwrap.dedent(f"""
        import sys
        from anybind import Space
        s = Space.load({str(out)!r})
        v = s.embed("imu", [{str(imu_manifest.parent / "r0.npy")!r}])
        assert "imu_plugin" in sys.modules
        print(v.shape)
    """)
    r = _run([sys.executable, "-c", code], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 8)"
    r = _run([sys.executable, "-m", "anybind.cli", "encoders"], env, tmp_path)
    assert r.returncode == 0 and "imu" in r.stdout and "imu-plugin" in r.stdout, r.stdout + r.stderr


def test_without_the_plugin_the_error_says_how_to_declare_one(imu_manifest, tmp_path):
    env = _env(tmp_path / "empty-site", tmp_path)
    r = _run([sys.executable, "-m", "anybind.cli", "fit", str(imu_manifest), "--modalities", "imu,text",
              "-e", "imu=imu:v1", "--out", str(tmp_path / "s")], env, tmp_path)
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "'imu'" in lines[0] and "anybind.encoders" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_plugin_cannot_shadow_a_builtin(tmp_path, monkeypatch):
    from importlib import metadata

    from anybind.encoders import registry

    fake = metadata.EntryPoint(name="text", value="evil:make", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [fake])
    registry.refresh_plugins()
    try:
        assert registry.factory_for("text").__name__ == "make_text_encoder"
        assert [i.source for i in registry.list_encoders() if i.prefix == "text"] == ["builtin"]
    finally:
        monkeypatch.undo()
        registry.refresh_plugins()


def test_import_anybind_imports_no_model_family():
    code = ("import sys, anybind; "
            "print(sorted(m for m in sys.modules if m.startswith('anybind.encoders.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = set(eval(r.stdout))
    heavy = {f"anybind.encoders.{m}" for m in ("image", "audio", "speech", "timeseries", "text", "e5", "bridge")}
    assert not loaded & heavy, loaded

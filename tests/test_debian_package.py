"""``ensure_debian_package``: a present package, a missing one for a non-root user (the command to run), and a
root install through a faked apt-get (lists updated once, a failed update reported)."""

from __future__ import annotations

import subprocess

import pytest

from anybind.corpora import debian
from anybind.corpora.debian import ensure_debian_package
from anybind.errors import DataError



def test_ensure_debian_package_present(tmp_path):
    assert ensure_debian_package("some-pkg", tmp_path) == tmp_path


def test_ensure_debian_package_not_root(tmp_path, monkeypatch):
    monkeypatch.setattr(debian, "_is_root", lambda: False)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", pytest.fail)
    with pytest.raises(DataError, match=r"sudo apt-get install -y some-pkg"):
        ensure_debian_package("some-pkg", tmp_path / "missing")
    with pytest.raises(ValueError):
        ensure_debian_package("bad name; rm -rf /", tmp_path / "missing")


def _fake_apt(calls, probe, outcomes):
    def run(cmd, **kw):
        calls.append(cmd[1:])
        rc, out = outcomes.pop(0)
        if rc == 0 and cmd[1] == "install":
            probe.mkdir()
        return subprocess.CompletedProcess(cmd, rc, stdout=out, stderr="")

    return run


def test_ensure_debian_package_root_installs_updating_lists(tmp_path, monkeypatch):
    probe = tmp_path / "installed"
    calls: list[list[str]] = []
    outcomes = [(100, "E: Unable to locate package some-pkg"), (0, "Reading package lists"), (0, "ok")]
    monkeypatch.setattr(debian, "_is_root", lambda: True)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", _fake_apt(calls, probe, outcomes))
    assert ensure_debian_package("some-pkg", probe) == probe
    assert [c[0] for c in calls] == ["install", "update", "install"]
    assert calls[0][-2:] == ["--no-install-recommends", "some-pkg"] and "-y" in calls[0]


def test_ensure_debian_package_root_install_fails(tmp_path, monkeypatch):
    probe = tmp_path / "installed"
    calls: list[list[str]] = []
    outcomes = [(100, "E: Unable to locate package some-pkg"), (100, "E: Could not resolve 'deb.debian.org'")]
    monkeypatch.setattr(debian, "_is_root", lambda: True)
    monkeypatch.setattr(debian.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(debian.subprocess, "run", _fake_apt(calls, probe, outcomes))
    with pytest.raises(DataError, match=r"(?s)apt-get update.*failed.*Could not resolve"):
        ensure_debian_package("some-pkg", probe)
    assert [c[0] for c in calls] == ["install", "update"]

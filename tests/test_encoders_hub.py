"""timm and OpenCLIP image towers (issue 17): tests/hub_encoders_checks.py, in a child pytest that alone sees them.

The package registry has torch 2.13.0 only as the CPU build and its match, torchvision 0.28.0, only as the ``+cu130``
build, whose C++ ops need ``libtorch_cuda``.  It imports beside the CPU torch only with tests/torchvision_shim.py.
Installed into the venv it would break every process without that shim: transformers imports torchvision as soon as
it is installed (its image processors; ``import transformers.image_utils`` raises), and a RuntimeError is no
ImportError to the libraries that try it.  So ``make test`` puts torchvision, timm and open_clip_torch in a folder
of their own, ``.venv/hub-site`` (elsewhere: ``$ANYBIND_HUB_SITE``), and only the child pytest below has it on its
path, with the shim installed by conftest.py; this process, its CLI children and its Ray workers never see it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
CHECKS = TESTS / "hub_encoders_checks.py"


def hub_site() -> Path | None:
    """The folder holding torchvision, timm and open_clip_torch for the tests, or None."""
    named = os.environ.get("ANYBIND_HUB_SITE")
    if named:
        return Path(named)
    default = Path(sys.prefix) / "hub-site"  # `make test`: .venv/hub-site
    return default if default.is_dir() else None


@pytest.mark.timeout(1800)
def test_timm_and_open_clip_checks_pass_in_a_child_pytest(tmp_path):
    site = hub_site()
    if site is not None and not site.is_dir():
        pytest.fail(f"ANYBIND_HUB_SITE={site} does not exist")
    if site is None and importlib.util.find_spec("timm") is None:
        pytest.skip("timm / open_clip_torch not installed: `make test` puts them in .venv/hub-site "
                    "(or set ANYBIND_HUB_SITE to a folder holding them)")
    path = [str(site)] if site else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"),
         str(CHECKS)],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1700,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|skipped|failed|error)", summary))
    if counts.get("skipped") and not counts.get("passed"):  # e.g. torchvision still fails to import: say why
        reasons = "; ".join(sorted({m.strip() for m in re.findall(r"SKIPPED \[\d+\] [^:]+:\d+: (.*)", out)}))
        if site is not None:  # installed (`make test` puts them there) but unusable: the breakage this test is for
            pytest.fail(f"timm / open_clip are installed in {site} but every check skipped: {reasons or summary}")
        pytest.skip(reasons or summary)
    assert counts.get("passed", 0) >= 5 and not counts.get("skipped"), out[-6000:]

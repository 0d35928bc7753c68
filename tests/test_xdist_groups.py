"""`make test` runs the suite on 2 pytest-xdist workers with ``--dist loadgroup`` and the scheduling of
tests/conftest.py: a module's tests stay on one worker, the modules of one ``xdist_group`` (the Ray modules) go to
one worker one after the other, and so do the modules that use a fixture of ``conftest.ONE_WORKER``.  Checked on a
small made-up suite run by a child pytest with this conftest's hooks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist", reason="`make test` runs on pytest-xdist workers (pip install 'anybind[dev]')")

TESTS = Path(__file__).resolve().parent

CONFTEST = f'''
import importlib.util
import pytest

spec = importlib.util.spec_from_file_location("anybind_test_conftest", {str(TESTS / "conftest.py")!r})
ours = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ours)
pytest_collection_modifyitems = ours.pytest_collection_modifyitems
pytest_xdist_make_scheduler = ours.pytest_xdist_make_scheduler


@pytest.fixture
def serve_small():
    return None
'''

# the two group modules are the largest units, which the scheduler hands out first, one to each worker, if it does
# not see the group
MODULE = '''
import os
import pytest
{mark}

@pytest.mark.parametrize("i", range({n}))
def test_it(i, {fixture}):
    with open(os.environ["WHERE"], "a") as f:
        f.write(f"{{__name__}} {{os.environ['PYTEST_XDIST_WORKER']}}\\n")
'''


def test_groups_and_modules_stay_on_one_worker(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    mods = {"test_ray_a": ('pytestmark = pytest.mark.xdist_group("ray")', 8, "tmp_path"),
            "test_ray_b": ('pytestmark = pytest.mark.xdist_group("ray")', 8, "tmp_path"),
            "test_small_a": ("", 7, "serve_small"), "test_small_b": ("", 7, "serve_small"),
            "test_plain_a": ("", 3, "tmp_path"), "test_plain_b": ("", 3, "tmp_path")}
    for name, (mark, n, fixture) in mods.items():
        (tmp_path / f"{name}.py").write_text(MODULE.format(mark=mark, n=n, fixture=fixture))
    where = tmp_path / "where.txt"
    env = {**os.environ, "WHERE": str(where), "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                        "loadgroup", str(tmp_path)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [line.split() for line in where.read_text().splitlines()]
    workers: dict[str, set[str]] = {}
    for module, worker in rows:
        workers.setdefault(module, set()).add(worker)
    assert len(rows) == sum(n for _, n, _ in mods.values())
    assert all(len(w) == 1 for w in workers.values()), workers  # a module on one worker
    assert workers["test_ray_a"] == workers["test_ray_b"], workers  # one group, one worker
    assert workers["test_small_a"] == workers["test_small_b"], workers  # serve_small users: one worker
    order = [module for module, _ in rows if module.startswith("test_ray")]
    assert order == sorted(order), "the group's modules run one after the other, in order"

"""`make test` runs the suite on 2 pytest-xdist workers with ``--dist loadgroup`` and the scheduling of
tests/conftest.py: a module's tests stay on one worker, the modules of one ``xdist_group`` (the Ray modules) go to
one worker one after the other, and so do the modules that use a fixture of ``conftest.ONE_WORKER``; each process
has a media-checks file of its own, in a temp folder removed when it ends.  Checked on a small made-up suite run by a
child pytest with this conftest's hooks."""

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
pytest_collection_finish = getattr(ours, "pytest_collection_finish", None)
pytest_runtestloop = ours.pytest_runtestloop
pytest_handlecrashitem = getattr(ours, "pytest_handlecrashitem", None)
pytest_unconfigure = getattr(ours, "pytest_unconfigure", None) or (lambda config: None)


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
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-n", "2", "--dist",
                        "loadgroup", "--junitxml", str(tmp_path / "junit.xml"), str(tmp_path)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the @group suffix the scheduler reads is not in the reports: the ids are those of a serial run
    assert "PASSED test_ray_a.py::test_it[7]\n" in r.stdout and "@ray" not in r.stdout, r.stdout[-3000:]
    assert 'name="test_it[7]"' in (tmp_path / "junit.xml").read_text()
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


CRASH_MODULE = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("ray")


@pytest.mark.parametrize("i", range(3))
def test_it(i):
    if i == 1:
        os._exit(3)  # the worker dies (a segfault, an OOM kill)
'''


def test_a_crashed_grouped_test_is_reported_and_remembered_by_its_own_id(tmp_path):
    """A worker that dies in a grouped test: xdist reports the test by the id the scheduler was sent; that report,
    and --lf's memory of it, name it as a serial run does (no ``@group`` suffix), as the other reports do."""
    import json

    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_crash.py").write_text(CRASH_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-o", f"cache_dir={tmp_path / 'cache'}", "-n",
                        "1", "--max-worker-restart", "0", "--dist", "loadgroup", str(tmp_path)], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "crashed while running" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    failed = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("FAILED ")]
    assert failed == ["test_crash.py::test_it[1]"], r.stdout[-3000:]
    remembered = json.loads((tmp_path / "cache" / "v" / "cache" / "lastfailed").read_text())
    assert list(remembered) == ["test_crash.py::test_it[1]"], remembered


def test_last_failed_reruns_a_failed_grouped_test(tmp_path):
    """--lf on the workers: a grouped test that failed (remembered by its own id) is rerun with the other failures,
    not deselected because the worker's items carry their ``@group`` suffix while --lf picks them."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_grp.py").write_text('import pytest\n\npytestmark = pytest.mark.xdist_group("ray")\n\n\n'
                                          '@pytest.mark.parametrize("i", range(3))\ndef test_it(i):\n'
                                          '    assert i != 1\n')
    (tmp_path / "test_plain.py").write_text("def test_x():\n    assert False\n\n\ndef test_y():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = [subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-o", f"cache_dir={tmp_path / 'cache'}",
                            "-n", "1", "--dist", "loadgroup", *lf, str(tmp_path)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600) for lf in ([], ["--lf"])]
    failed = {line.split()[1] for line in runs[1].stdout.splitlines() if line.startswith("FAILED ")}
    assert failed == {"test_grp.py::test_it[1]", "test_plain.py::test_x"}, runs[1].stdout[-3000:]
    assert "PASSED" not in runs[1].stdout, runs[1].stdout[-3000:]


CHECKS_MODULE = '''
import os
import pytest


@pytest.mark.parametrize("i", range(3))
def test_it(i):
    path = os.environ["ANYBIND_MEDIA_CHECKS"]
    open(path, "a").close()  # used, as the media checks use it
    with open(os.environ["WHERE"], "a") as f:
        f.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {{path}}\\n")
'''


def _checks_run(tmp_path, name: str, user_checks: str | None) -> tuple[Path, list[list[str]]]:
    """The made-up suite run on 2 workers with a temp folder of its own: that folder, and each test's (worker, media
    checks path)."""
    run = tmp_path / name
    (run / "tmp").mkdir(parents=True)
    (run / "conftest.py").write_text(CONFTEST)
    for m in ("test_c_a", "test_c_b"):
        (run / f"{m}.py").write_text(CHECKS_MODULE.format())
    env = {k: v for k, v in os.environ.items() if k not in ("ANYBIND_MEDIA_CHECKS", "ANYBIND_TEST_CHECKS_PID")}
    env.update(WHERE=str(run / "where.txt"), TMPDIR=str(run / "tmp"), PYTHONPATH=os.pathsep.join(sys.path))
    if user_checks is not None:
        env["ANYBIND_MEDIA_CHECKS"] = user_checks
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                        "loadgroup", str(run)], cwd=run, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return run / "tmp", [line.split() for line in (run / "where.txt").read_text().splitlines()]


def test_each_worker_has_its_own_media_checks_and_its_folder_goes_when_it_ends(tmp_path):
    """Each xdist worker used a fresh ``anybind-checks-*`` temp folder, left behind after every run (and the
    controller's, unused, too); a user's own ANYBIND_MEDIA_CHECKS is used as it is and never removed."""
    tmp, rows = _checks_run(tmp_path, "fresh", None)
    assert len(rows) == 6
    paths = {worker: {p for w, p in rows if w == worker} for worker, _ in rows}
    assert all(len(p) == 1 for p in paths.values()), paths  # one file a worker
    assert len({p for w, p in rows}) == len(paths)  # none shared
    assert all(Path(p).parent.parent == tmp and Path(p).parent.name.startswith("anybind-checks-") for _, p in rows)
    assert not list(tmp.glob("anybind-checks-*")), list(tmp.iterdir())  # every process's folder removed

    user = tmp_path / "mine" / "checks.sqlite"
    user.parent.mkdir()
    tmp, rows = _checks_run(tmp_path, "user", str(user))
    assert len(rows) == 6 and {p for _, p in rows} == {str(user)}
    assert user.is_file()
    assert not list(tmp.glob("anybind-checks-*")), list(tmp.iterdir())

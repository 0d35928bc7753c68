import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# tests must never reach a model hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# remembered media checks go to a fresh file per test process, never the user's cache: under pytest-xdist each worker
# its own (a worker inherits the controller's environment, so a path this conftest set there is replaced, not shared),
# in a temp folder removed when the process ends (pytest_unconfigure); a user's own ANYBIND_MEDIA_CHECKS is kept
_PID = str(os.getpid())
_OWN_CHECKS: str | None = None  # the temp folder this process made for them
if "ANYBIND_MEDIA_CHECKS" not in os.environ or os.environ.get("ANYBIND_TEST_CHECKS_PID", _PID) != _PID:
    _OWN_CHECKS = tempfile.mkdtemp(prefix="anybind-checks-")
    os.environ["ANYBIND_MEDIA_CHECKS"] = os.path.join(_OWN_CHECKS, "checks.sqlite")
    os.environ["ANYBIND_TEST_CHECKS_PID"] = _PID
sys.path.insert(0, str(Path(__file__).parent))  # for the helper encoders module

import torchvision_shim  # noqa: E402 - needs the path above

# a torchvision whose C++ ops do not load (the registry's +cu130 build beside the CPU torch) imports for timm and OpenCLIP
torchvision_shim.install()

# property tests are bounded by their max_examples, not by the clock: no deadline and no too-slow health check, both of
# which fail a test on a machine busy with other work (2 cores shared by the suite's xdist workers and more; seen:
# "Input generation is slow: only generated 3 valid inputs after 1.96 seconds" for a list of 4 floats). A test's own
# suppress_health_check replaces this list: such a test names too_slow again.
settings.register_profile("anybind", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("anybind")

# fixtures shared by several test files (see each module's doc): the captioning corpus and captioner, built once a
# session; the corpus builders' small made-up source folders; a Ray cluster started apart
pytest_plugins = ["caption_fixtures", "corpus_sources", "ray_cluster"]

STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown, which may still record checks
def pytest_unconfigure(config):
    """The media-checks temp folder this process made (the run's, or an xdist worker's or controller's) is removed
    as the process ends; a path the user set is not this conftest's to remove."""
    if _OWN_CHECKS is not None:
        shutil.rmtree(_OWN_CHECKS, ignore_errors=True)  # a temp folder: one already gone is no matter


@pytest.fixture(scope="session")
def tux_dir(request, tmp_path_factory):
    """The real Tux Paint corpus, built once per test session."""
    from anybind.corpora.tuxpaint import build_tuxpaint

    if not STAMPS.is_dir():
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")

    def build(folder: Path) -> None:
        build_tuxpaint(folder / "tux", progress=False)

    return built_once(request.config, tmp_path_factory, "corpus", build) / "tux"


def built_once(config, tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` filled once per test run, for tests that only read it.  Under pytest-xdist it is
    the run's (beside the workers' own temp folders): the first worker to ask builds it while the others wait on its
    lock, then every worker reads it (the Tux Paint corpus: ~200 MB of media copied once, not once per worker)."""
    if not hasattr(config, "workerinput"):  # not an xdist worker (a child pytest of a worker inherits its environment)
        out = tmp_path_factory.mktemp(name)
        build(out)
        return out
    from filelock import FileLock

    run = tmp_path_factory.getbasetemp().parent  # this run's folder, holding every worker's temp folder
    out, done = run / name, run / f"{name}.built"
    with FileLock(str(run / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # left half-built by a worker that failed
            out.mkdir()
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def tux_subset(tux_dir, tmp_path_factory):
    """``make(n, val_every, name)``: a manifest of the first ``n`` real Tux Paint stamps (image, text), every
    ``val_every``-th a val record, the rest train, written once under ``name``; returns it loaded."""
    from anybind import load_manifest

    def make(n: int = 60, val_every: int = 5, name: str = "tux-subset"):
        recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()][:n]
        rows = [{"id": r["id"], "split": "val" if i % val_every == 0 else "train", "text": r["text"],
                 "image": str(tux_dir / r["image"])} for i, r in enumerate(recs)]
        out = tmp_path_factory.mktemp(name) / "manifest.jsonl"
        out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return load_manifest(out, modalities=["image", "text"])

    return make


@pytest.fixture()
def never_encoded(monkeypatch):
    """Every ``FeatureSet.from_manifests`` call recorded and refused: a test that a fit fails before encoding asserts
    the list stays empty (nothing encoded, not a timing)."""
    from anybind.featureset import FeatureSet

    calls = []

    def refuse(cls, *a, **k):
        calls.append(a)
        raise RuntimeError("encoded")

    monkeypatch.setattr(FeatureSet, "from_manifests", classmethod(refuse))
    return calls


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One feature cache for the session: each real item is encoded once across tests."""
    return tmp_path_factory.mktemp("featcache")


@pytest.fixture(scope="session")
def serve_small(tux_dir, shared_cache, tmp_path_factory):
    """The service tests' small real space + index (tests/serve_data.small_tux): 36 Tux Paint stamps, real
    encoders, built once a session; read, never modified."""
    from serve_data import small_tux

    return small_tux(tux_dir, shared_cache, tmp_path_factory.mktemp("serve-small"))


@pytest.fixture
def saved_space(tmp_path):
    """A tiny saved text + image space of the helper encoders (tests/artefact_helpers.tiny_space), for the tests
    that damage or edit it."""
    from artefact_helpers import tiny_space

    return tiny_space().save(tmp_path / "sp")


@pytest.fixture
def key_reads(monkeypatch):
    """How many times each file's bytes were read to make its feature-cache key (``{path: count}``, filled as the
    test runs): the one function every file key reads through, counted."""
    import anybind.encoders.keys as keys

    reads: dict[str, int] = {}
    real = keys._sha256_and_head

    def counting(path, *a, **k):
        reads[str(path)] = reads.get(str(path), 0) + 1
        return real(path, *a, **k)

    monkeypatch.setattr(keys, "_sha256_and_head", counting)
    return reads


@pytest.fixture
def no_renderer(monkeypatch):
    """A machine too busy to start an SVG renderer process in time: a new worker gets 0 s to say it is ready (the
    real start-up path, cut at once); the workers idle from earlier tests are stopped first and after."""
    from anybind.data import svg_pool

    svg_pool.stop_idle_workers()
    svg_pool.forget_start_failure()
    monkeypatch.setattr(svg_pool, "START_SECONDS", 0)
    yield
    svg_pool.stop_idle_workers()
    svg_pool.forget_start_failure()  # the next test may start one at once


# -- the scale tests' worlds (tests/scale_helpers.py), built once a session; a module may define its own ---------
@pytest.fixture
def ray_local(request, tmp_path_factory):
    """A local Ray (2 CPUs) shared by consecutive tests that ask for it, across modules (scale_helpers.SharedRay);
    gives the folder the test encoders read their orders from."""
    from scale_helpers import SHARED_RAY

    return SHARED_RAY.use(tmp_path_factory, request.module.__name__)


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """The shared Ray stops as soon as the next test does not ask for it (or none is left)."""
    if nextitem is None or "ray_local" not in getattr(nextitem, "fixturenames", ()):
        scale_helpers = sys.modules.get("scale_helpers")
        if scale_helpers is not None:
            scale_helpers.SHARED_RAY.stop()


@pytest.fixture(scope="session")
def syn(tmp_path_factory):
    """The synthetic two-modality corpus, its encoders, feature cache and in-memory fit: built once for the scale
    modules that read it (test_scale.py, test_scale_ray.py, test_scale_ray_train.py), which only read it."""
    from scale_helpers import synthetic_world

    return synthetic_world(tmp_path_factory)


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """The synthetic video clips (one signal frame each) of the scale tests and their in-memory fit, built once for
    test_scale.py and test_scale_ray_train.py."""
    from scale_helpers import clip_world

    return clip_world(tmp_path_factory)


# -- pytest-xdist (`make test`: -n 2 --dist loadgroup) --------------------------------------------------------------
#: session fixtures that take minutes to build on a busy machine (a fitted space + index over real encoders, a trained
#: captioner): the modules that use one go to one worker together, so that it is built once, as in a serial run;
#: a module that starts a Ray of its own (``ray_head``, ``ray_local``) joins the Ray modules' group: one Ray at a time
ONE_WORKER = {"serve_small": "serve-small", "captioner": "captioner", "ray_head": "ray", "ray_local": "ray"}


#: each grouped test's own id (the attribute that holds it, its value), kept while the scheduler is sent the ids with
#: their ``@group`` suffix
_OWN_ID = pytest.StashKey[tuple[str, object]]()


def _id_attr(item) -> str:
    return "_id" if hasattr(item, "_id") else "_nodeid"  # pytest >= 9.2: a structured id


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
    """Every test of a module that uses a fixture of :data:`ONE_WORKER` gets that fixture's ``xdist_group`` (unless
    it has one already: a mark that follows the fixture wherever a test starts or stops using it).  On an xdist
    worker of ``--dist loadgroup`` each test keeps its own id here (xdist's own hook, pytest < 9.2, suffixes it:
    given back), so that what picks items by id after this hook's other implementations (``--lf``, ``--ff``: outer
    wrappers) reads the ids the reports have; the ``@group`` suffix is added just before the scheduler is sent the
    ids (:func:`pytest_collection_finish`) and taken away after (:func:`pytest_runtestloop`)."""
    group_of: dict[str, str] = {}
    for item in items:
        for fixture, group in ONE_WORKER.items():
            if fixture in getattr(item, "fixturenames", ()):
                group_of.setdefault(item.nodeid.split("::", 1)[0], group)
    for item in items:
        group = group_of.get(item.nodeid.split("::", 1)[0])
        if group and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    loadgroup = getattr(config.option, "loadgroup", False)  # set on the workers of `--dist loadgroup`
    if loadgroup:  # before xdist's own hook (pytest < 9.2) adds the suffix
        for item in items:
            item.stash[_OWN_ID] = (_id_attr(item), getattr(item, _id_attr(item)))
    result = yield
    if loadgroup:
        for item in items:
            if _OWN_ID in item.stash:  # (an item another hook added is not one of the kept)
                setattr(item, *item.stash[_OWN_ID])
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    """On an xdist worker of ``--dist loadgroup``, before its collection goes to the scheduler: each grouped test's
    id ends in ``@group``, which the scheduler reads (xdist 3.8 writes it where pytest 9.2 no longer looks:
    ``item._nodeid``; without this every group is scattered over the workers)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        names = {str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                 for m in item.iter_markers("xdist_group")}
        if names:
            grouped = item.nodeid + "@" + "_".join(sorted(names))
            setattr(item, _id_attr(item), type(item._id).parse(grouped) if _id_attr(item) == "_id" else grouped)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """On an xdist worker, after its collection (the ids with their ``@group`` suffix) went to the scheduler, which
    then names tests by their index: each test gets its own id back, so that reports, ``--lf`` and JUnit XML name it
    as a serial run does (``test_x.py::test_it[0]``, not ``test_x.py::test_it[0]@ray``)."""
    for item in session.items:
        if _OWN_ID in item.stash:
            attr, own = item.stash[_OWN_ID]
            setattr(item, attr, own)


@pytest.hookimpl(optionalhook=True)
def pytest_handlecrashitem(crashitem, report, sched):
    """On the controller, a worker that died in a test: xdist reports that test by the id its scheduler was sent;
    the report names it by its own id (the ``@group`` suffix dropped, read as xdist's ``LoadGroupScheduling`` reads
    it: after the last ``]``), as :func:`pytest_runtestloop` has the other reports name theirs (and --lf remember)."""
    at = crashitem.rfind("@")
    if sched.config.getvalue("dist") == "loadgroup" and at > crashitem.rfind("]"):
        report.nodeid = crashitem[:at]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup``, with a test module as the unit a worker gets: its module fixtures (a real corpus, a fitted
    space) are built once, as in a serial run, not once per worker that got one of its tests; the modules marked
    with one ``xdist_group`` go to one worker together, in order (the Ray modules: one local Ray at a time on 2
    cores, shared by consecutive tests, see scale_helpers.SharedRay)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = super()._split_scope(nodeid)
            return nodeid.split("::", 1)[0] if group == nodeid else group

    return ModuleGroupScheduling(config, log)

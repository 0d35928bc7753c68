"""A process that ran a local Ray and then joins a cluster started apart without token authentication (issue 15, a
notebook's path; the ``ray_head`` fixture, tests/ray_cluster.py).  Ray 2.60's local ``ray.init`` sets
``RAY_AUTH_MODE=token`` in ``os.environ`` when it is unset (and caches it in its C++ config), so a later join of a
token-less cluster succeeded while every actor died before it started (``ActorDiedError``).  anybind's own local
session puts back what Ray set; a token mode from elsewhere is refused in one line naming ``RAY_AUTH_MODE``."""

import os

import pytest

ray = pytest.importorskip("ray")

# under pytest-xdist the Ray modules run on one worker, one after the other (conftest.py): one Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

from anybind.scale import init_ray, ray_session, shutdown_ray  # noqa: E402
from anybind.scale.ray_connect import RayConnectError  # noqa: E402


def _actor_answers() -> int:
    """An actor started on the connected cluster answers (it dies before starting on an auth mismatch)."""

    @ray.remote(num_cpus=0)
    class Ping:
        def ping(self) -> int:
            return 2

    return ray.get(Ping.remote().ping.remote(), timeout=120)


def test_after_a_local_session_the_process_joins_a_tokenless_cluster_and_its_actors_run(ray_head, monkeypatch):
    address, _ = ray_head
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the user's process: no mode of its own
    before = dict(os.environ)
    with ray_session(num_cpus=1):
        assert os.environ.get("RAY_AUTH_MODE") == "token"  # Ray's own doing, for the local cluster it started
        assert _actor_answers() == 2
    assert dict(os.environ) == before  # RAY_AUTH_MODE, RAY_USAGE_STATS_ENABLED, PYTHONBREAKPOINT put back
    with ray_session(address):
        assert _actor_answers() == 2

    # init_ray's caller that shuts Ray down itself (ray.shutdown, not shutdown_ray): put back at the next join
    assert init_ray(num_cpus=1)
    ray.shutdown()
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    with ray_session(address):
        assert "RAY_AUTH_MODE" not in os.environ
        assert _actor_answers() == 2


def test_a_token_mode_ray_left_from_its_own_init_is_refused_in_one_line_then_disabled_joins(ray_head, monkeypatch):
    address, _ = ray_head
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    ray.init(num_cpus=1, include_dashboard=False)  # the user's own local Ray, not anybind's
    ray.shutdown()
    assert os.environ.get("RAY_AUTH_MODE") == "token"
    with pytest.raises(RayConnectError) as e:
        init_ray(address)
    msg = str(e.value)
    assert "\n" not in msg and "RAY_AUTH_MODE=token" in msg and address in msg and "disabled" in msg, msg
    assert not ray.is_initialized()
    os.environ["RAY_AUTH_MODE"] = "disabled"  # as the line says (monkeypatch puts the test's env back)
    assert init_ray(address)
    try:
        assert _actor_answers() == 2  # Ray's cached config follows os.environ: the actors start
    finally:
        shutdown_ray()

"""The ``ray_head`` fixture (a plugin of tests/conftest.py): a Ray cluster started apart with ``ray start --head``
(its own temp folder and port, 2 CPUs, a node resource ``anybind_client_1``), one per test module, stopped after,
pass or fail.  Its processes are found by their session (``ray start`` runs as the leader of a new one, which every
Ray process it starts inherits), never by name: ``ray stop`` would stop every Ray on the machine."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid: int) -> list[int]:
    """The processes of session ``sid`` (field 6 of /proc/PID/stat)."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                out.append(int(p))
    return out


def _stop(sid: int, grace: float = 5.0) -> list[int]:
    """SIGTERM to every process of session ``sid``, SIGKILL to those left after ``grace`` s; the pids still there."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in _session(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        until = time.monotonic() + wait
        while _session(sid) and time.monotonic() < until:
            time.sleep(0.2)
    return _session(sid)


class Head(tuple):
    """``(HOST:PORT, temp folder)``, and ``client``: ``ray://HOST:PORT`` of the head's Ray Client server (its own
    port), or None where Ray Client's ``grpcio`` (``ray[client]``, the ``scale`` extra) is not installed."""

    client: str | None = None


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head of its own, a :class:`Head`; stopped (every process of its session) and its folder removed after."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"no `ray` command next to {sys.executable}: cannot start a cluster apart")
    port, temp = _free_port(), tempfile.mkdtemp(prefix="rayab", dir="/tmp")  # short: Ray's sockets live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["RAY_AUTH_MODE"] = "disabled"  # no token to hand around (a token-secured cluster is the user's to set up)
    # the head's Ray Client proxy waits 30 s (Ray's default) for the server it starts per client (a new Python
    # importing Ray) to take connections, then refuses the client ("Initialization failure from server: ... Proxy
    # failed to Connect to backend!"): on a loaded 2-core test machine that start took longer
    env.setdefault("RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S", "300")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))  # anybind on its workers
    log = Path(temp) / "start.log"
    try:
        import grpc  # noqa: F401  -- Ray starts its Ray Client server (port 10001 unless told) only with it
    except ImportError:
        client_port = None
    else:
        client_port = _free_port()
    with open(log, "w") as out:
        head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 "--num-cpus=2", '--resources={"anybind_client_1": 1}', "--include-dashboard=false",
                                 "--disable-usage-stats",
                                 f"--temp-dir={temp}",
                                 *([f"--ray-client-server-port={client_port}"] if client_port else [])],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            rc = head.wait(180)
        except subprocess.TimeoutExpired:
            rc = "no exit within 180 s"
        assert rc == 0, f"ray start --head: {rc}: {log.read_text()[-2000:]}"
        cluster = Head((f"127.0.0.1:{port}", Path(temp)))
        cluster.client = f"ray://127.0.0.1:{client_port}" if client_port else None
        yield cluster
    finally:
        left = _stop(head.pid)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"processes of the test's Ray cluster still running: {left}"

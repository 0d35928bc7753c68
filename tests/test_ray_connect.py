"""The check of a ``--ray-address`` before Ray joins it (anybind.scale.ray_connect), against real local servers
that are not a plain Ray GCS: a TLS server (a head started with RAY_USE_TLS) and one that answers a byte at a time."""

import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from anybind.scale.ray_connect import RayConnectError, check_ray_address

SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # an empty HTTP/2 SETTINGS frame: what a gRPC server sends first


def _serve(handle) -> tuple[str, socket.socket]:
    """``127.0.0.1:PORT`` of a server calling ``handle(conn)`` on each connection, each in a thread of its own (the
    check's TCP probe connects and closes first), until its socket is closed."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    def one(conn):
        with conn:
            try:
                handle(conn)
            except OSError:
                pass

    threading.Thread(target=loop, daemon=True).start()
    return f"127.0.0.1:{srv.getsockname()[1]}", srv


def test_a_head_behind_tls_is_refused_with_the_tls_settings_named(tmp_path, monkeypatch):
    """A GCS behind TLS resets a plaintext HTTP/2 opening: the refusal says to set RAY_USE_TLS as the cluster does
    (not 'cannot reach', which sends the user after the network)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make the server's certificate")
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)

    def tls(conn):
        with contextlib_suppress():
            ctx.wrap_socket(conn, server_side=True)

    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    address, srv = _serve(tls)
    with srv, pytest.raises(RayConnectError) as ei:
        check_ray_address(address, timeout=10)
    msg = str(ei.value)
    assert address in msg and "RAY_USE_TLS=1" in msg and "\n" not in msg, msg


def test_a_server_that_answers_a_byte_at_a_time_is_refused_within_the_timeout():
    """Each read waits for the time left, not a fresh ``timeout``: a server dripping its first frame slower than
    that is refused (the check's bound holds), naming what it got."""
    def drip(conn):
        if not conn.recv(64):
            return  # the TCP probe
        for b in SETTINGS:
            time.sleep(0.4)
            conn.sendall(bytes([b]))
        time.sleep(1)

    address, srv = _serve(drip)
    with srv, pytest.raises(RayConnectError) as ei:
        check_ray_address(address, timeout=1.0)  # 9 bytes at 0.4 s: 3.6 s
    assert address in str(ei.value) and "within 1 s" in str(ei.value)


def test_a_server_that_sends_its_settings_in_pieces_is_a_gcs():
    """A frame header read in several pieces within the timeout is read whole."""
    def pieces(conn):
        if not conn.recv(64):
            return
        for part in (SETTINGS[:2], SETTINGS[2:5], SETTINGS[5:]):
            time.sleep(0.05)
            conn.sendall(part)
        time.sleep(0.5)

    address, srv = _serve(pieces)
    with srv:
        check_ray_address(address, timeout=10)


class contextlib_suppress:
    """A TLS handshake failing on the server's side (the client spoke plaintext) is the point, not an error."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], (ssl.SSLError, OSError))


# what Ray Client raises when its head's proxy cannot start the client's server (ray/util/client/worker.py: the
# server's traceback.format_exc() after this header), e.g. a loaded head past RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S
_CLIENT_INIT_FAILURE = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File "/ray/util/client/server/proxier.py", line 780, in Datapath\n    raise RuntimeError(\n'
    "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err` on the head node\n")


@pytest.mark.parametrize("raised, reason", [
    (ConnectionAbortedError(_CLIENT_INIT_FAILURE), "RuntimeError: Proxy failed to Connect to backend!"),
    (ConnectionAbortedError("Initialization failure from server:\nthe reason\n"), "the reason"),
    (ConnectionError("Could not connect to the head\nmore detail"), "Could not connect to the head"),
])
def test_a_join_refused_by_ray_names_the_reason_not_a_traceback_header(monkeypatch, raised, reason):
    """Ray's failure to join is one line naming the address and Ray's reason: where Ray's message is a header over
    the server's traceback (Ray Client's), the reason is the traceback's last line, not 'Traceback (most recent
    call last):'."""
    ray = pytest.importorskip("ray")
    import anybind.scale.ray_connect as rc
    from anybind.scale import join_ray

    monkeypatch.setattr(rc, "check_ray_address", lambda addr: None)
    monkeypatch.setattr(rc, "check_auth_mode", lambda addr: None)

    def init(**kw):
        raise raised

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RayConnectError) as ei:
        join_ray("ray://127.0.0.1:10001", {})
    msg = str(ei.value)
    assert "\n" not in msg and "ray://127.0.0.1:10001" in msg and reason in msg and "Traceback" not in msg, msg


def test_a_join_refused_in_token_mode_asks_whether_the_token_is_the_clusters(monkeypatch):
    """In token mode, a cluster refusing this process' token makes Ray fail with 'Failed to connect to Ray cluster
    at ADDR' (measured on a head started with RAY_AUTH_MODE=token and given another token: after 26 s, naming the
    head's other interface), which sends the user after the network: the line names the token mode and where the
    token comes from.  Out of token mode the hint is to set it up, as before."""
    ray = pytest.importorskip("ray")
    import anybind.scale.ray_connect as rc
    from anybind.scale import join_ray

    monkeypatch.setattr(rc, "check_ray_address", lambda addr: None)
    monkeypatch.setattr(rc, "check_auth_mode", lambda addr: None)

    def init(**kw):
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6379")

    monkeypatch.setattr(ray, "init", init)
    for mode, want in (("token", "RAY_AUTH_MODE=token"), (None, "set RAY_AUTH_MODE=token")):
        if mode is None:
            monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        else:
            monkeypatch.setenv("RAY_AUTH_MODE", mode)
        with pytest.raises(RayConnectError) as ei:
            join_ray("127.0.0.1:6379", {})
        msg = str(ei.value)
        assert "\n" not in msg and "127.0.0.1:6379" in msg and want in msg and "RAY_AUTH_TOKEN" in msg, msg

"""Joining a Ray cluster by address, refused in one line within a bounded time when no Ray head answers there.

``ray.init(address="host:port")`` keeps retrying a wrong address for minutes (over 200 s for a port nobody
listens on, over 100 s for a port that does not speak gRPC); so before it, :func:`check_ray_address` asks the
address itself, with a timeout: a TCP connection (nothing listening, a host that does not resolve or does not
answer), then, for a head's GCS address, the opening of an HTTP/2 connection (a Ray GCS speaks gRPC: a web server,
a TLS port or a silent one is refused).  What passes is a gRPC server; :func:`anybind.scale.init_ray` turns Ray's
own failure after that (a cluster wanting a token the caller has not set up: about 20 s) into one line too.

    check_ray_address("10.0.0.5:6379")   # returns, or raises RayConnectError naming the address and why

What a local Ray leaves in this process matters for a later join.  Ray 2.60's local ``ray.init`` sets
``RAY_AUTH_MODE=token`` in ``os.environ`` when it is unset (``authentication_token_setup.enable_token_auth_by_default``,
which also re-reads Ray's C++ config), ``RAY_USAGE_STATS_ENABLED=0`` and ``PYTHONBREAKPOINT``, and ``ray.shutdown``
puts none of them back.  A driver in token mode joins a cluster started without token authentication, but its own
gRPC server then turns away the cluster's calls: every actor dies before it starts (``ActorDiedError``).  So
:func:`local_ray_env` records what a local init changed and :func:`restore_local_ray_env` puts it back (on shutdown,
and before a join), with Ray's cached config re-read from ``os.environ`` (:func:`reload_ray_auth`); a token mode that
came from elsewhere (the user's own ``ray.init``) is refused in one line by :func:`check_auth_mode`, which asks the
cluster's GCS without a token (milliseconds: a token-less cluster answers, a token-secured one refuses).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator

from ..errors import AnybindError

#: seconds each probe (the TCP connection, then the opening of HTTP/2) may take
CONNECT_TIMEOUT_S = 15.0
#: Ray's GCS port when an address names no port
DEFAULT_GCS_PORT = 6379
#: what to do when a cluster asks for a token
#: where Ray reads the token from
TOKEN_SOURCES = "$RAY_AUTH_TOKEN, a file named by $RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
TOKEN_HINT = f"set RAY_AUTH_MODE=token and give the cluster's token ({TOKEN_SOURCES})"

#: what installs Ray Client (``ray[client]``: grpcio), for ``ray://`` addresses
CLIENT_HINT = "pip install 'anybind[scale]'"

#: what to do when a cluster uses TLS
TLS_HINT = "set RAY_USE_TLS=1 and RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT as its nodes have them"


log = logging.getLogger(__name__)

#: what a local ``ray.init`` changed in ``os.environ``: name -> (the value before, the value Ray set); None = unset
_LEFT_BY_LOCAL_RAY: dict[str, tuple[str | None, str | None]] = {}

#: Ray's C++ line when a client without a token asks a token-secured GCS for its id (check_auth_mode's probe)
_NO_TOKEN_NOTE = "Failed to get cluster ID from GCS server"


class RayConnectError(AnybindError, ConnectionError):
    """The Ray cluster at an address cannot be joined (the address and the reason in one line)."""


@contextlib.contextmanager
def local_ray_env() -> Iterator[None]:
    """``with local_ray_env(): ray.init(...)`` -- records what the local init changes in ``os.environ`` (for
    :func:`restore_local_ray_env`); the first record of a name is kept (the value before anybind's first init)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(before) | set(os.environ):
            if os.environ.get(name) != before.get(name):
                _LEFT_BY_LOCAL_RAY.setdefault(name, (before.get(name), os.environ.get(name)))


def restore_local_ray_env() -> list[str]:
    """Put back the variables a local Ray set (:func:`local_ray_env`) that still hold Ray's value (one the caller
    changed since stays); the names put back.  Ray's cached auth config follows (call only while Ray is down)."""
    back = []
    for name, (before, set_by_ray) in _LEFT_BY_LOCAL_RAY.items():
        if os.environ.get(name) == set_by_ray:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
            back.append(name)
    _LEFT_BY_LOCAL_RAY.clear()
    if "RAY_AUTH_MODE" in back:
        reload_ray_auth()
    if back:
        log.debug("put back what the local Ray set in the environment: %s", ", ".join(sorted(back)))
    return back


def reload_ray_auth() -> None:
    """Ray's C++ config and token cache re-read from ``os.environ`` (as Ray's own tests do between auth modes): Ray
    reads ``RAY_AUTH_MODE`` once and keeps it, so a mode changed in ``os.environ`` counts only after this."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # pragma: no cover - another Ray: nothing cached to refresh
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def check_auth_mode(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RayConnectError` (one line naming ``RAY_AUTH_MODE``) when this process is in token mode and the
    cluster at ``address`` (a head's GCS) takes calls without a token: joined so, its actors would die before they
    start.  Nothing is checked out of token mode, for ``ray://`` or ``"auto"``, or where the GCS cannot be asked (the
    join then says what is wrong).  Ray's auth config is re-read from ``os.environ`` before and after."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode or "").lower() != "token" or address == "auto" or address.startswith("ray://"):
        reload_ray_auth()
        return
    from .native_stderr import native_stderr_without

    os.environ["RAY_AUTH_MODE"] = "disabled"  # ask as a caller without a token
    try:
        reload_ray_auth()
        from ray._raylet import GcsClient

        with native_stderr_without(_NO_TOKEN_NOTE):
            GcsClient(address=canonical_address(address)).internal_kv_get(b"anybind-auth-probe", None,
                                                                           timeout=timeout)
    except Exception as e:  # a token-secured cluster: AuthenticationError; anything else: the join says it
        log.debug("the cluster at %s refused a call without a token (%s): token mode kept", address,
                  type(e).__name__)
        return
    finally:
        os.environ["RAY_AUTH_MODE"] = mode
        reload_ray_auth()
    raise RayConnectError(f"cannot join the Ray cluster at {address}: it does not use token authentication, but this "
                          f"process has RAY_AUTH_MODE={mode} (a local ray.init earlier in this process sets it when "
                          f"unset), with which Ray's actors there die before they start: set RAY_AUTH_MODE=disabled "
                          f"(os.environ['RAY_AUTH_MODE'] = 'disabled' in a notebook) or join from a fresh process")


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of ``host:port``, ``[v6]:port``, ``ray://host:port`` or a bare host (Ray's default port)."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        rest = address
    elif scheme != "ray":  # http://head:8265 is the dashboard's, for job submission
        raise RayConnectError(f"Ray address {address!r}: {scheme}:// is not a cluster to join (give the head's "
                              f"HOST:PORT, the port `ray start --head --port` opened, or ray://HOST:10001)")
    rest = rest.rstrip("/")
    if rest.startswith("["):  # [::1]:6379
        host, _, tail = rest[1:].partition("]")
        if tail and not tail.startswith(":"):
            raise RayConnectError(f"Ray address {address!r}: {tail!r} after the IPv6 host (expected [ADDR]:PORT)")
        port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    elif ":" in rest:  # ::1:6379 -- which part is the port?
        raise RayConnectError(f"Ray address {address!r}: write an IPv6 host in brackets, [ADDR]:PORT")
    else:
        host, port = rest, ""
    if not host:
        raise RayConnectError(f"Ray address {address!r}: no host (expected HOST:PORT, e.g. 10.0.0.5:6379)")
    if not port:
        return host, 10001 if address.startswith("ray://") else DEFAULT_GCS_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RayConnectError(f"Ray address {address!r}: port {port!r} is not a port number (expected HOST:PORT)")
    return host, int(port)


def canonical_address(address: str) -> str:
    """``address`` as ``ray.init`` reads it, naming the port :func:`check_ray_address` probes: ``HOST:PORT`` (an
    IPv6 host in brackets) or ``ray://HOST:PORT``; ``"auto"`` as it is.  (Ray refuses ``head``, ``[::1]`` and
    ``head:6379/``, and connects ``ray://head`` to gRPC's default port 443.)"""
    if address == "auto":
        return address
    host, port = split_address(address)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"ray://{where}" if address.startswith("ray://") else where


def check_ray_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise :class:`RayConnectError` (one line, the address named) unless a Ray head can be joined at ``address``,
    in at most about ``2 * timeout`` seconds; ``"auto"`` (Ray's own search of this machine) is not checked."""
    if address == "auto":
        return
    host, port = split_address(address)
    where = f"the Ray cluster at {address}"
    if address.startswith("ray://"):
        require_ray_client(where)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror as e:
        raise RayConnectError(f"cannot reach {where}: host {host!r} does not resolve ({e.strerror})") from None
    except ConnectionRefusedError:
        raise RayConnectError(f"cannot reach {where}: nothing listens at {host}:{port} (is `ray start --head "
                              f"--port {port}` running there?)") from None
    except TimeoutError:
        raise RayConnectError(f"cannot reach {where}: no answer from {host}:{port} within {timeout:g} s") from None
    except OSError as e:
        raise RayConnectError(f"cannot reach {where}: {e.strerror or e}") from None
    if address.startswith("ray://") or os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # a Ray Client server, or a GCS behind TLS: Ray's own connection says the rest
    _ask_gcs(where, (host, port), timeout)


def require_ray_client(where: str) -> None:
    """Refuse (one line) a ``ray://`` address where Ray Client's dependency (``grpcio``, from ``ray[client]`` in the
    ``scale`` extra) is not installed; Ray itself says so only after its own retries, or as a long ``ValueError``."""
    try:
        import grpc  # noqa: F401
    except ImportError:
        raise RayConnectError(f"cannot join {where}: a ray:// address needs Ray Client (grpcio, not installed): "
                              f"{CLIENT_HINT}") from None


def _ask_gcs(where: str, target: tuple[str, int], timeout: float) -> None:
    """Refuse ``target`` unless it speaks HTTP/2, as a Ray GCS (gRPC) does: the client preface and an empty SETTINGS
    frame sent, the server's first frame must be SETTINGS (an HTTP/1 server, a TLS one or a silent port fails).  The
    frame header may come in pieces; all of them within ``timeout`` of the connection."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
    host, port = target
    got = b""
    try:
        with socket.create_connection(target, timeout=timeout) as s:
            end = time.monotonic() + timeout
            s.sendall(preface)
            while len(got) < 9:
                s.settimeout(max(end - time.monotonic(), 1e-3))  # what is left, not a fresh timeout per piece
                chunk = s.recv(9 - len(got))
                if not chunk:
                    break
                got += chunk
    except TimeoutError:
        sent = f"sent {len(got)} bytes of a frame" if got else "sent nothing"
        raise RayConnectError(f"{where}: {host}:{port} accepted a connection but {sent} within {timeout:g} s "
                              f"(not a Ray head's GCS port?)") from None
    except ConnectionResetError:  # a TLS server meeting plaintext resets the connection
        raise RayConnectError(f"{where}: {host}:{port} reset an HTTP/2 connection: not a Ray head's GCS port, or a "
                              f"cluster using TLS ({TLS_HINT})") from None
    except OSError as e:
        raise RayConnectError(f"cannot reach {where}: {e.strerror or e}") from None
    if len(got) < 9 or got[3] != 4:  # frame header: 3 bytes length, 1 byte type (4 = SETTINGS)
        tls = f"; a cluster using TLS: {TLS_HINT}" if not got or got[:1] in (b"\x15", b"\x16") else ""
        seen = got[:24].decode("ascii", "replace").split("\r")[0] or "closed the connection"
        raise RayConnectError(f"{where}: {host}:{port} is not a Ray head's GCS port (it does not speak gRPC: "
                              f"{seen!r}; give the port `ray start --head --port` opened{tls})")

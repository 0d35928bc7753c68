"""Joining a Ray cluster by address, refused in one line within a bounded time when no Ray head answers there.

``ray.init(address="host:port")`` keeps retrying a wrong address for minutes (over 200 s for a port nobody
listens on, over 100 s for a port that does not speak gRPC); so before it, :func:`check_ray_address` asks the
address itself, with a timeout: a TCP connection (nothing listening, a host that does not resolve or does not
answer), then, for a head's GCS address, the opening of an HTTP/2 connection (a Ray GCS speaks gRPC: a web server,
a TLS port or a silent one is refused).  What passes is a gRPC server; :func:`anybind.scale.init_ray` turns Ray's
own failure after that (a cluster wanting a token the caller has not set up: about 20 s) into one line too.

    check_ray_address("10.0.0.5:6379")   # returns, or raises RayConnectError naming the address and why
"""

from __future__ import annotations

import os
import socket
import time

from ..errors import AnybindError

#: seconds each probe (the TCP connection, then the opening of HTTP/2) may take
CONNECT_TIMEOUT_S = 15.0
#: Ray's GCS port when an address names no port
DEFAULT_GCS_PORT = 6379
#: what to do when a cluster asks for a token
TOKEN_HINT = ("set RAY_AUTH_MODE=token and give the cluster's token ($RAY_AUTH_TOKEN, a file named by "
              "$RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)")

#: what to do when a cluster uses TLS
TLS_HINT = "set RAY_USE_TLS=1 and RAY_TLS_SERVER_CERT, RAY_TLS_SERVER_KEY, RAY_TLS_CA_CERT as its nodes have them"


class RayConnectError(AnybindError, ConnectionError):
    """The Ray cluster at an address cannot be joined (the address and the reason in one line)."""


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

"""The search service and its web page (``anybind serve``); needs the ``serve`` extra.

::

    from anybind.serve import create_app
    app = create_app("spaces/tux", "indexes/tux")          # uvicorn-ready ASGI app

    with serve_in_thread(app) as url:                       # tests, benchmarks
        httpx.post(f"{url}/search", json={"text": "a frog"})

See :mod:`anybind.serve.app` for the endpoints and their guarantees.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .app import create_app
from .state import ServeConfig, Service

__all__ = ["create_app", "ServeConfig", "Service", "serve_in_thread", "LOOPBACK"]

LOOPBACK = "127.0.0.1"


@contextmanager
def serve_in_thread(app: Any, host: str = LOOPBACK, port: int = 0, *, timeout: float = 120.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields its base URL once it accepts requests.

    ``port=0`` binds a free port (the socket is bound here, so there is no race
    for it).  The lifespan (loading the space, index and encoders) runs before
    the URL is yielded; a start-up failure is raised here.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=30))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            errors.append(e)

    thread = threading.Thread(target=run, name="anybind-serve", daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if errors or not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the service did not start: {errors[0] if errors else 'uvicorn exited'}")
        if time.monotonic() - t0 > timeout:
            server.should_exit = True
            raise TimeoutError(f"the service did not start within {timeout:g} s")
        time.sleep(0.05)
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()

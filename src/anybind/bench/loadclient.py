"""The load client of ``serve-load``: fires every request at once over HTTP, times each.

Used in the bench's own process (:func:`fire`) or run as a script in a process of its own, so that the
client does not share the server's interpreter (GIL)::

    python loadclient.py JOB.json OUT.json

It imports nothing of anybind (only httpx), so the separate process starts quickly and small.  ``JOB.json``:
``{"url", "k", "kinds": ["text" | "upload", ...], "texts": [...], "blobs": [base64 JPEG or a list of them (the
images of one upload request), ...], "singles": [...]}``; ``OUT.json``: what :func:`fire` returns.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from typing import Any


def _images(body: bytes | list[bytes]) -> list[bytes]:
    """The images one upload request carries."""
    return [body] if isinstance(body, bytes) else list(body)


async def _fire(url: str, kinds: list[str], texts: list[str], blobs: list[bytes | list[bytes]], k: int,
                singles: list[str]) -> dict[str, Any]:
    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - the usual name
        import httpx

    n = len(kinds)
    lat: dict[str, list[float]] = {"text": [], "upload": []}
    errors: list[str] = []
    work_ms: list[float] = []  # the service's own time per request (took_ms: embedding + search, no queue)
    limits = httpx.Limits(max_connections=max(1, n), max_keepalive_connections=max(1, n))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        ti, bi = iter(texts), iter(blobs)

        async def one(kind: str, body: Any) -> None:
            t0 = time.perf_counter()
            try:
                if kind == "text":
                    res = await client.post("/search", json={"text": body, "k": k})
                else:
                    files = [("files", (f"q{i}.jpg", b)) for i, b in enumerate(_images(body))]
                    res = await client.post("/search/upload", files=files, data={"k": str(k)})
                out = res.json() if res.status_code == 200 else None
                if out is None or len(out["hits"]) != k:
                    errors.append(f"{kind}: HTTP {res.status_code} {res.text[:200]}")
                    return
                work_ms.append(float(out["took_ms"]))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{kind}: {type(e).__name__}: {e}")
                return
            lat[kind].append((time.perf_counter() - t0) * 1000)

        jobs = [one(kind, next(ti) if kind == "text" else next(bi)) for kind in kinds]
        t0 = time.perf_counter()
        await asyncio.gather(*jobs)
        wall = time.perf_counter() - t0
        load, n_work = {"text": lat["text"], "upload": lat["upload"]}, len(work_ms)
        lat = {"text": [], "upload": []}
        for text in singles:  # then one request at a time: a lone request's latency
            await one("text", text)
    return {"wall_s": wall, "lat": load, "errors": errors, "work_ms": work_ms[:n_work],
            "single_ms": lat["text"]}


def fire(url: str, kinds: list[str], texts: list[str], blobs: list[bytes | list[bytes]], k: int,
         singles: list[str] = ()) -> dict[str, Any]:
    """Every request at once (``kinds[i]`` says which: the next text query or the next image upload, an upload
    carrying one image or a list of them, searched as one fused query), then
    the text queries ``singles`` one at a time; ``{"wall_s", "lat": {"text": [ms], "upload": [ms]},
    "errors": [str], "work_ms": [ms], "single_ms": [ms]}`` (``wall_s``, ``lat`` and ``work_ms``: the load's)."""
    return asyncio.run(_fire(url, list(kinds), list(texts), list(blobs), int(k), list(singles)))


def job_json(url: str, kinds: list[str], texts: list[str], blobs: list[bytes | list[bytes]], k: int,
             singles: list[str] = ()) -> str:
    """The job file's content for the script form."""
    return json.dumps({"url": url, "k": int(k), "kinds": list(kinds), "texts": list(texts),
                       "blobs": [[base64.b64encode(x).decode() for x in _images(b)] for b in blobs], "singles": list(singles)})


def main(argv: list[str]) -> int:
    job_path, out_path = argv
    with open(job_path) as f:
        job = json.load(f)
    blobs = [[base64.b64decode(x) for x in ([b] if isinstance(b, str) else b)] for b in job["blobs"]]
    out = fire(job["url"], job["kinds"], job["texts"], blobs, job["k"],
               job.get("singles", []))
    with open(out_path, "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

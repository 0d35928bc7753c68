"""Bench task for the search service: ``serve-load`` (many concurrent searches over loopback HTTP).

::

    anybind bench --task serve-load                      # 200 requests at once
    anybind bench --task serve-load --opt requests=500 --opt concurrency=2 --opt uploads=0.25
    anybind bench --task serve-load --opt concurrency=16 --opt batch_wait_ms=5   # dynamic batching

The whole Tux Paint corpus (image + text + sound) is indexed with a
training-free (Procrustes) space, the service runs under uvicorn on a free
loopback port, and ``requests`` searches are fired at once from an
``httpx`` AsyncClient: a share ``uploads`` of them are image uploads (JPEG
re-encodings of test-split stamps, so no cache has seen them), the rest text
queries no cache has seen either (the test captions, reworded).  The service
runs ``concurrency`` jobs at a time and queues the rest, so the latency of a
request includes its wait: with everything fired at once, p95 is close to the
wall time.  The baseline is the same queries run one after another in process
(``Service.search``, no HTTP, no queue).
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np

from . import TaskResult, task


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, np.float64), q)) if xs else float("nan")


def _summary(lat_ms: list[float], wall_s: float, n: int) -> dict[str, float]:
    return {
        "p50_ms": _pct(lat_ms, 50),
        "p95_ms": _pct(lat_ms, 95),
        "p99_ms": _pct(lat_ms, 99),
        "max_ms": max(lat_ms) if lat_ms else float("nan"),
        "throughput_rps": n / wall_s if wall_s > 0 else float("nan"),
        "wall_s": wall_s,
    }


@task(
    "serve-load",
    "search service: N concurrent searches (text + image uploads) over loopback HTTP; zero errors, p50/p95, req/s",
)
def serve_load(
    work: Path,
    cache=None,
    seed: int = 0,
    console=None,
    requests: int | str = 200,
    concurrency: int | str = 2,
    uploads: float | str = 0.25,
    k: int | str = 10,
    batch_wait_ms: float | str = 0.0,
    max_batch: int | str = 64,
) -> TaskResult:
    from PIL import Image

    try:
        import httpx2 as httpx
    except ImportError:  # pragma: no cover
        import httpx

    from ..data.media import load_image
    from ..index import Index
    from ..serve import ServeConfig, Service, create_app, serve_in_thread
    from ..space import Space
    from .tuxpaint import PLAIN_ENCODERS, load_tux

    n, conc, k = int(requests), int(concurrency), int(k)
    share = float(uploads)
    say = console.print if console else (lambda *a, **kw: None)
    mods = ("image", "text", "audio")
    man = load_tux(work, mods, console)
    space = Space.fit(man, modalities=list(mods), encoders=PLAIN_ENCODERS, cache=cache, method="procrustes",
                      progress=False, recipe="plain")
    index = Index.build(space, man, Path(work) / "serve-load" / "index", cache=cache, overwrite=True)
    test = [r for r in man.split("test") if r.has("image") and r.has("text")]
    rng = np.random.default_rng(seed)
    n_up = int(round(n * share))
    kinds = np.array(["upload"] * n_up + ["text"] * (n - n_up))
    rng.shuffle(kinds)
    frames = ("a drawing of {}", "{} on a sunny day", "a picture showing {}", "{}, seen from afar")
    texts, blobs = [], []
    for i, kind in enumerate(kinds):
        r = test[int(rng.integers(len(test)))]
        if kind == "text":
            texts.append(frames[i % len(frames)].format(r.values["text"].rstrip(".").lower()))
        else:
            buf = io.BytesIO()
            img: Image.Image = load_image(r.values["image"])
            img.save(buf, format="JPEG", quality=80 + i % 15)
            blobs.append(buf.getvalue())
    say(f"index: {len(index)} rows {index.counts()}; {n} requests ({n_up} image uploads), concurrency {conc}")

    cfg = ServeConfig(concurrency=conc, max_queue=max(256, n), queue_timeout=600,
                      batch_wait_ms=float(batch_wait_ms), max_batch=int(max_batch))

    # -- the service under load ------------------------------------------------------------
    svc = Service(space, index, cache=cache, config=cfg)
    svc.warm_up()
    lat: dict[str, list[float]] = {"text": [], "upload": []}
    errors: list[str] = []
    work_ms: list[float] = []  # the service's own time per request (embedding + search), without the queue

    async def fire(url: str) -> float:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
            ti, bi = iter(texts), iter(blobs)

            async def one(kind: str):
                body = next(ti) if kind == "text" else next(bi)
                t0 = time.perf_counter()
                try:
                    if kind == "text":
                        res = await client.post("/search", json={"text": body, "k": k})
                    else:
                        res = await client.post("/search/upload", files={"files": ("q.jpg", body)}, data={"k": str(k)})
                    ok = res.status_code == 200 and len(res.json()["hits"]) == k
                    if not ok:
                        errors.append(f"{kind}: HTTP {res.status_code} {res.text[:200]}")
                    else:
                        work_ms.append(float(res.json()["took_ms"]))
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    errors.append(f"{kind}: {type(e).__name__}: {e}")
                    return
                lat[kind].append((time.perf_counter() - t0) * 1000)

            jobs = [one(str(kind)) for kind in kinds]
            t0 = time.perf_counter()
            await asyncio.gather(*jobs)
            return time.perf_counter() - t0

    try:
        with serve_in_thread(create_app(service=svc)) as url:
            wall = asyncio.run(fire(url))
    finally:
        svc.close()
    all_lat = lat["text"] + lat["upload"]
    ours = {"requests": n, "errors": len(errors), **_summary(all_lat, wall, n)}
    ours.update({"work/p50_ms": _pct(work_ms, 50), "work/p95_ms": _pct(work_ms, 95)})
    ours.update({f"text/{k_}": v for k_, v in _summary(lat["text"], wall, len(lat["text"])).items() if "ms" in k_})
    ours.update({f"upload/{k_}": v for k_, v in _summary(lat["upload"], wall, len(lat["upload"])).items() if "ms" in k_})

    # -- baseline: the same queries in process, one after another (fresh query cache), in one worker
    # thread like the service's (torch in the main thread measured up to 15x slower on a busy 2-core box)
    from concurrent.futures import ThreadPoolExecutor

    base_svc = Service(space, index, cache=cache, config=cfg)
    blat: list[float] = []

    def sequential() -> float:
        base_svc.warm_up()
        ti, bi = iter(texts), iter(blobs)
        t_all = time.perf_counter()
        for kind in kinds:
            t0 = time.perf_counter()
            if kind == "text":
                base_svc.search([("text", next(ti), 1.0)], k=k, modality=None, labels=None, rerank=None)
            else:
                m, p, _ = base_svc.stage(next(bi), "q.jpg", None)
                try:
                    base_svc.search([(m, str(p), 1.0)], k=k, modality=None, labels=None, rerank=None)
                finally:
                    p.unlink(missing_ok=True)
            blat.append((time.perf_counter() - t0) * 1000)
        return time.perf_counter() - t_all

    try:
        with ThreadPoolExecutor(1) as pool:
            base = _summary(blat, pool.submit(sequential).result(), n)
    finally:
        base_svc.close()

    notes = [
        f"{n} requests fired at once ({n_up} image uploads, {n - n_up} text queries, none cached) against "
        f"{conc} worker slots; latency includes the queue wait, so p95 ~ wall time; work/* is the service's "
        "own time per request (took_ms: embedding + search, no queue)",
        "the load client runs in the same process as the server (uvicorn in a thread): both share the GIL and "
        "the machine's cores",
        f"zero errors: {'yes' if not errors else 'NO, ' + str(len(errors)) + ' errors'}",
    ]
    notes += [f"error: {e}" for e in errors[:5]]
    say(f"p50 {ours['p50_ms']:.0f} ms, p95 {ours['p95_ms']:.0f} ms, {ours['throughput_rps']:.1f} req/s, "
        f"{len(errors)} errors")
    return TaskResult(
        metrics=ours,
        baselines={"in-process sequential": base},
        config={"requests": n, "uploads": n_up, "concurrency": conc, "k": k, "index_rows": len(index),
                "batch_wait_ms": float(batch_wait_ms), "max_batch": int(max_batch),
                "space": "procrustes (image:efficientnet-lite0, text:minilm, audio:aisfx)"},
        notes=notes,
    )

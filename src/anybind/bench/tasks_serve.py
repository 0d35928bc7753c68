"""Bench task for the search service: ``serve-load`` (many concurrent searches over loopback HTTP).

::

    anybind bench --task serve-load                      # 200 requests at once, batching on vs off
    anybind bench --task serve-load --opt client=process # the load client in a process of its own
    anybind bench --task serve-load --opt requests=500 --opt concurrency=2 --opt uploads=0.25
    anybind bench --task serve-load --opt batching=on --opt batch_wait_ms=2 --opt max_batch=32
    anybind bench --task serve-load --opt batch_wait_ms=0,2,5,10 --opt max_batch=8,32,64 --opt concurrency=32,128
    anybind bench --task serve-load --opt images_per_request=16 --opt max_batch=8,64   # uploads of 16 images

The whole Tux Paint corpus (image + text + sound) is indexed with a
training-free (Procrustes) space, the service runs under uvicorn on a free
loopback port, and ``requests`` searches are fired at once from an
``httpx`` AsyncClient: a share ``uploads`` of them are image uploads (JPEG
re-encodings of test-split stamps, so no cache has seen them), the rest text
queries no cache has seen either (the test captions, reworded).  The service
answers ``concurrency`` requests at a time (default: the service's own default) and queues
the rest, so the latency of a request includes its wait: with everything fired at once,
p95 is close to the wall time.  After each load, 20 new text queries are sent one at a
time (``single/*``: a lone request's latency, where batching must cost nothing).

``batching``: ``both`` (default) runs the service twice in the same run, with dynamic batching
(:mod:`anybind.serve.batching`, ``max_batch`` / ``batch_wait_ms``) and without (``max_batch=1``), the
same slots otherwise; ``on`` / ``off`` runs one.  ``client``: ``thread`` runs the load client in the
bench's process (it shares the GIL with the server), ``process`` in a process of its own
(:mod:`anybind.bench.loadclient`).  The baseline is the same queries run one after another in process
(``Service.search``, no HTTP, no queue, no batching).

``batch_wait_ms``, ``max_batch`` and ``concurrency`` (the worker pool) each take a comma-separated list: the
batching-on service then runs once per combination (a grid, to tune the defaults), each cell in every round
beside the same round's sequential baseline (the cells' order rotates from round to round; ``off`` runs once per
round at the first ``concurrency``).  ``x_sequential/min`` and ``/max``: the cell's ratio in its worst and best
round (each over that round's baseline), for the noise.

``images_per_request`` (default 1): each upload request carries that many images (new JPEG re-encodings, each
its own bytes, so none is cached), searched as one fused query (``/search/upload`` with several files; the
baseline stages them and searches with them alike).  A request of N images is one encoder call of N items,
whatever ``max_batch`` (the batcher never splits a request), run in forward passes of the encoder's batch size or
``min_forward_batch`` (``min(32, max_batch)``) if larger: this is how ``max_batch`` 8 and 64 are compared on such
requests.  The service is given ``max_files`` and ``max_upload_bytes`` large enough for them.

``torch_threads`` (default: torch's own, one per core): torch's intra-op threads for the whole run, the service
and the baseline alike (one process setting; given back after).  ``service_threads`` and ``max_batch_for`` are grid
knobs of the batching-on service alone (the baseline and ``off`` run without them): the service's own
``torch_threads`` (``-``: none) and per-modality maximum batch (``-``: none; ``image=4/text=32``), e.g.
``--opt service_threads=-,1 --opt max_batch_for=-,image=4/text=32`` (four batching-on cells, main's batching
the ``-`` x ``-`` one).
``cpu_ms_per_request`` is the server process's CPU per request during the load (the baseline's: its own),
``x_sequential_cpu`` the baseline's over the service's: on a machine shared with other work the wall-clock ratio
also depends on the CPU share each side happens to get, the CPU ratio does not.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from . import TaskResult, task
from .loadclient import fire, job_json
from .serve_stats import cell_levers, lever_name, pooled, values, whole


def _run_client(url: str, kinds, texts, blobs, k: int, client: str, singles) -> dict:
    """The load, from this process (``thread``: the server runs in a thread beside it) or another."""
    if client == "thread":
        return fire(url, kinds, texts, blobs, k, singles)
    with tempfile.TemporaryDirectory(prefix="anybind-load-") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(job_json(url, kinds, texts, blobs, k, singles))
        script = Path(__file__).with_name("loadclient.py")
        proc = subprocess.run([sys.executable, str(script), str(job), str(out)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            from ..errors import AnybindError

            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise AnybindError(f"serve-load: the load client process failed (exit {proc.returncode}): {tail}")
        return json.loads(out.read_text())


def _encoder_totals(svc) -> tuple[int, int, float]:
    """Encoder calls, items encoded and seconds spent encoding so far (every encoder of ``svc``)."""
    st = list(svc.cache.encoder_stats.values())
    return int(sum(s["calls"] for s in st)), int(sum(s["items"] for s in st)), float(sum(s["seconds"] for s in st))


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system, every thread) of this process and of its finished child processes so far."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _load_run(svc, kinds, texts, blobs, k: int, client: str, singles=()) -> dict:
    """One service under the load: the client's raw timings plus the encoder calls made and their time
    (during the load; ``singles``: text queries sent one at a time afterwards), and the CPU seconds spent during
    the load by this process (the server, and with ``client=thread`` the client too) and by the client's process."""
    from ..serve import create_app, serve_in_thread

    svc.warm_up()
    c0, i0, s0 = _encoder_totals(svc)
    with serve_in_thread(create_app(service=svc)) as url:
        (own0, kids0) = _cpu()
        got = _run_client(url, kinds, texts, blobs, k, client, [])
        c1, i1, s1 = _encoder_totals(svc)
        (own1, kids1) = _cpu()
        got.update(cpu_s=own1 - own0, client_cpu_s=kids1 - kids0)
        if singles:
            alone = _run_client(url, [], [], [], k, client, singles)
            got["single_ms"], got["errors"] = alone["single_ms"], got["errors"] + alone["errors"]
    return {**got, "calls": c1 - c0, "items": i1 - i0, "enc_s": s1 - s0}


def _sequential(svc, kinds, texts, blobs, k: int) -> dict:
    """The same queries one after another in process (no HTTP, no queue; ``blobs``: each upload's images, searched
    as one fused query), in one worker thread like the service's (torch in the main thread measured up to 15x slower on a busy 2-core box)."""
    from concurrent.futures import ThreadPoolExecutor

    def run() -> dict:
        svc.warm_up()
        c0, i0, s0 = _encoder_totals(svc)
        lat: dict[str, list[float]] = {"text": [], "upload": []}
        ti, bi = iter(texts), iter(blobs)
        own0 = _cpu()[0]
        t_all = time.perf_counter()
        for kind in kinds:
            t0 = time.perf_counter()
            if kind == "text":
                svc.search([("text", next(ti), 1.0)], k=k, modality=None, labels=None, rerank=None)
            else:
                staged = [svc.stage(b, f"q{j}.jpg", None) for j, b in enumerate(next(bi))]
                try:
                    svc.search([(m, item, 1.0) for m, item, _, _ in staged], k=k, modality=None, labels=None,
                               rerank=None)
                finally:
                    for _, _, path, _ in staged:
                        if path is not None:
                            path.unlink(missing_ok=True)
            lat[kind].append((time.perf_counter() - t0) * 1000)
        wall = time.perf_counter() - t_all
        cpu = _cpu()[0] - own0
        c1, i1, s1 = _encoder_totals(svc)
        return {"wall_s": wall, "lat": lat, "errors": [], "work_ms": [], "calls": c1 - c0, "items": i1 - i0,
                "enc_s": s1 - s0, "cpu_s": cpu, "client_cpu_s": 0.0}

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


@task(
    "serve-load",
    "search service: N concurrent searches (text + image uploads) over loopback HTTP, dynamic batching on vs off; "
    "zero errors, p50/p95, req/s",
)
def serve_load(
    work: Path,
    cache=None,
    seed: int = 0,
    console=None,
    requests: int | str = 200,
    concurrency: int | str | None = None,
    uploads: float | str = 0.25,
    k: int | str = 10,
    batch_wait_ms: float | str = 0.0,
    max_batch: int | str | None = None,
    batching: str = "both",
    client: str = "thread",
    rounds: int | str = 1,
    images_per_request: int | str = 1,
    torch_threads: int | str | None = None,
    service_threads: int | str | None = None,
    max_batch_for: str | None = None,
) -> TaskResult:
    from PIL import Image

    from ..data.media import load_image
    from ..errors import AnybindError
    from ..index import Index
    from ..serve import ServeConfig, Service
    from ..space import Space
    from .tuxpaint import PLAIN_ENCODERS, load_tux

    n, k = int(requests), int(k)
    try:  # None: the service's default
        concs = [ServeConfig.concurrency] if concurrency is None else values(concurrency, int)
        waits = values(batch_wait_ms, float)
        batches = [ServeConfig.max_batch] if max_batch is None else values(max_batch, int)
    except (TypeError, ValueError):
        concs = waits = batches = []  # refused just below, in one line
    if (not (concs and waits and batches) or min(concs + batches) < 1
            or not all(0 <= w < float("inf") for w in waits)):  # nan, inf: no wait a service could run with
        raise AnybindError(f"serve-load: concurrency={concurrency!r}, max_batch={max_batch!r} (whole numbers >= "
                           f"1) and batch_wait_ms={batch_wait_ms!r} (finite, >= 0) must be numbers or comma-separated "
                           "lists of them")
    conc = concs[0]
    levers = cell_levers(service_threads, max_batch_for)  # refused in one line, before anything is built
    per = whole(images_per_request)
    if per is None or per < 1:
        raise AnybindError(f"serve-load: images_per_request={images_per_request!r} must be a whole number >= 1 (the "
                           "images each upload request carries)")
    threads = None if torch_threads is None else whole(torch_threads)
    if torch_threads is not None and (threads is None or threads < 1):
        raise AnybindError(f"serve-load: torch_threads={torch_threads!r} must be a whole number >= 1 (torch's "
                           "intra-op threads, for the service and the baseline alike)")
    if batching not in ("both", "on", "off"):
        raise AnybindError(f"serve-load: batching={batching!r}; use both, on or off")
    if client not in ("thread", "process"):
        raise AnybindError(f"serve-load: client={client!r}; use thread or process")
    share = float(uploads)
    say = console.print if console else (lambda *a, **kw: None)
    mods = ("image", "text", "audio")
    unknown = sorted({m for p in levers[1] for m, _ in p} - set(mods))
    if unknown:
        raise AnybindError(f"serve-load: max_batch_for={max_batch_for!r} names {', '.join(map(repr, unknown))}: the "
                           f"service's modalities are {', '.join(mods)}")
    man = load_tux(work, mods, console)
    space = Space.fit(man, modalities=list(mods), encoders=PLAIN_ENCODERS, cache=cache, method="procrustes",
                      progress=False)
    index = Index.build(space, man, Path(work) / "serve-load" / "index", cache=cache, overwrite=True)
    test = [r for r in man.split("test") if r.has("image") and r.has("text")]
    rng = np.random.default_rng(seed)
    n_up = int(round(n * share))
    kinds = np.array(["upload"] * n_up + ["text"] * (n - n_up))
    rng.shuffle(kinds)
    kinds = [str(x) for x in kinds]
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
            blobs.append([buf.getvalue()])
            for j in range(1, per):  # the request's other images; the comment makes each one's bytes new
                buf = io.BytesIO()
                load_image(test[int(rng.integers(len(test)))].values["image"]).save(
                    buf, format="JPEG", quality=80 + (i + j) % 15, comment=f"serve-load {i}.{j}".encode())
                blobs[-1].append(buf.getvalue())
    say(f"index: {len(index)} rows {index.counts()}; {n} requests ({n_up} image uploads of {per} image(s) each), "
        f"concurrency {concs}, "
        f"client in {'this process' if client == 'thread' else 'its own process'}")

    # after each load, text queries no cache has seen sent one at a time: a lone request's latency
    singles = [f"{t} (once more)" for t in texts[:20]]

    # the systems: (wait ms, max batch, slots, torch threads, per-modality batches) per batching-on cell, and batching
    # off (max batch 1)
    grid = len(waits) * len(batches) * len(concs) * len(levers[0]) * len(levers[1]) > 1
    cells = {(f"on {w:g} ms {b} x {c}{lever_name(t, p)}" if grid else "on"): (w, b, c, t, p)
             for c in concs for b in batches for w in waits for t in levers[0] for p in levers[1]}
    modes = {**(cells if batching != "off" else {}), **({"off": (0.0, 1, conc)} if batching != "on" else {})}

    body = max([ServeConfig.max_upload_bytes] + [2 * sum(map(len, b)) for b in blobs])  # room for the form

    def config(wait: float, mb: int, slots: int, threads_: int | None = None, per_: tuple = ()) -> ServeConfig:
        return ServeConfig(concurrency=slots, max_queue=max(256, n), queue_timeout=600, batch_wait_ms=wait,
                           max_batch=mb, max_files=max(ServeConfig.max_files, per), max_upload_bytes=body,
                           torch_threads=threads_, max_batch_for=dict(per_))

    # -- each round: the service under load in each system (each on a fresh query cache; the order rotates from
    # round to round), then the baseline, the same queries in process one after another (fresh query cache, no
    # batching)
    raws: dict[str, list[dict]] = {m: [] for m in modes}
    seq: list[dict] = []
    from ..numerics import torch_threads  # torch on first use

    with torch_threads(threads) if threads is not None else nullcontext():  # the service and the baseline alike
        for rnd in range(max(1, int(rounds))):
            order = list(modes)[rnd % len(modes):] + list(modes)[:rnd % len(modes)]
            for mode in [*order, "sequential"]:
                svc = Service(space, index, cache=cache, config=config(*modes.get(mode, (0.0, 1, conc))))
                try:
                    raw = (_sequential(svc, kinds, texts, blobs, k) if mode == "sequential"
                           else _load_run(svc, kinds, texts, blobs, k, client, singles))
                finally:
                    svc.close()
                (seq if mode == "sequential" else raws[mode]).append(raw)
                say(f"round {rnd + 1}, {mode}: {n / raw['wall_s']:.1f} req/s, {len(raw['errors'])} errors")
    base = pooled(seq, n)
    runs = {m: pooled(r, n) for m, r in raws.items()}
    errors = [f"batching {m}: {e}" for m, rs in raws.items() for r in rs for e in r["errors"]]
    for m, r in runs.items():
        r["x_sequential"] = r["throughput_rps"] / base["throughput_rps"]
        per_round = [s["wall_s"] / x["wall_s"] for x, s in zip(raws[m], seq)]
        r["x_sequential/min"], r["x_sequential/max"] = min(per_round), max(per_round)
        if "cpu_ms_per_request" in r and "cpu_ms_per_request" in base:  # the server's CPU per request, not the wall
            r["x_sequential_cpu"] = base["cpu_ms_per_request"] / max(r["cpu_ms_per_request"], 1e-9)

    names = {m: (f"batching on (max_batch {b}, wait {w:g} ms" + (f", {c} slots" if len(concs) > 1 else "")
                 + lever_name(t, p) + ")") for m, (w, b, c, t, p) in cells.items()}
    names["off"] = "batching off" + (f" ({conc} slots)" if len(concs) > 1 else "")  # at the first pool
    cols = ("throughput_rps", "x_sequential", "x_sequential/min", "x_sequential/max", "x_sequential_cpu",
            "cpu_ms_per_request", "client/cpu_ms_per_request", "errors", "p50_ms", "p95_ms", "single/p50_ms", "work/p50_ms", "encoder/calls", "encoder/items_per_call", "encoder/busy_share")
    table = [{"name": f"service, {names[m]}", **{c: r.get(c) for c in cols}} for m, r in runs.items()]
    table.append({"name": "in-process sequential", **{c: base.get(c) for c in cols}, "x_sequential": 1.0})
    first = next(iter(runs))
    systems = " and ".join(x for x in (
        (f"batching on ({len(cells)} settings)" if grid else "batching on") if batching != "off" else "",
        "batching off" if batching != "on" else "") if x)
    shared = ("the load client runs in the same process as the server (uvicorn in a thread): both share the GIL "
              "and the machine's cores") if client == "thread" else (
        "the load client runs in a process of its own (bench/loadclient.py); it shares the machine's cores")
    notes = [
        (f"{int(rounds)} round(s), each: the service with {systems}"
         f"{', in an order rotating by round' if len(modes) > 1 and int(rounds) > 1 else ''}, then the sequential "
         "baseline; throughput over the rounds' summed wall time, percentiles over all requests"),
        (f"{n} requests fired at once ({n_up} image uploads of {per} image(s) each, searched as one fused query, "
         f"{n - n_up} text queries, none cached) against "
         f"{'/'.join(map(str, concs))} worker slots; latency includes the queue wait, so p95 ~ wall time; "
         "work/* is the service's own time per request (took_ms: embedding + search, no queue); x_sequential: "
         "throughput over the in-process sequential baseline of this run"),
        f"single/*: {len(singles)} text queries (uncached) sent one at a time after the load, over HTTP: a lone "
        "request's latency",
        ("encoder/*: encoder calls made, items per call, and the share of the wall time some encoder was running "
         "(summed over encoders)"),
        shared,
        ("cpu_ms_per_request: CPU (user + system, all threads) of the server's process per request during the load "
         "(with client=thread it includes the client's); client/cpu_ms_per_request: the client process's "
         "(client=process); x_sequential_cpu: the baseline's CPU per request over the service's, what the ratio "
         "would be on a machine whose cores were all the bench's"),
        f"zero errors: {'yes' if not errors else 'NO, ' + str(len(errors)) + ' errors'}",
    ]
    notes += [f"error: {e}" for e in errors[:5]]
    return TaskResult(
        metrics={k_: v for k_, v in runs[first].items()},
        baselines={**{names[m]: r for m, r in runs.items() if m != first}, "in-process sequential": base},
        config={"requests": n, "uploads": n_up, "concurrency": concs if len(concs) > 1 else conc, "k": k,
                "index_rows": len(index), "batch_wait_ms": waits if len(waits) > 1 else waits[0],
                "max_batch": batches if len(batches) > 1 else batches[0], "batching": batching,
                "client": client, "rounds": int(rounds), "images_per_request": per,
                "torch_threads": threads if threads is not None else "torch's default",
                "service_threads": levers[0], "max_batch_for": [dict(p) for p in levers[1]],
                "space": "procrustes (image:efficientnet-lite0, text:minilm, audio:aisfx)"},
        notes=notes,
        table=table,
    )

"""serve-load's bookkeeping (:mod:`anybind.bench.tasks_serve`): the options' comma-separated grids, each
request system's pooled summary over its rounds."""

from __future__ import annotations

import numpy as np

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


def whole(v) -> int | None:
    """A whole number (an int, or text of digits), else None (1.5, '2.0', 'x', True)."""
    if isinstance(v, str):
        t = v.strip()
        return int(t) if t[t[:1] in "+-":].isdecimal() else None  # one sign at most; decimal digits only (not ²)
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def values(v, cast) -> list:
    """An option's comma-separated values (one value as is)."""
    return [cast(x) for x in str(v).split(",") if x.strip()] if isinstance(v, str) else [cast(v)]


def pooled(raws: list[dict], n: int) -> dict[str, float]:
    """Summary of one system's rounds: throughput over their summed wall time, percentiles over every request."""
    wall = sum(r["wall_s"] for r in raws)
    lat = {kind: [x for r in raws for x in r["lat"][kind]] for kind in ("text", "upload")}
    out: dict[str, float] = {"requests": n * len(raws), "errors": sum(len(r["errors"]) for r in raws),
                             **_summary(lat["text"] + lat["upload"], wall, n * len(raws))}
    single = [x for r in raws for x in r.get("single_ms", [])]
    if single:
        out.update({"single/p50_ms": _pct(single, 50), "single/p95_ms": _pct(single, 95)})
    work = [x for r in raws for x in r["work_ms"]]
    if work:
        out.update({"work/p50_ms": _pct(work, 50), "work/p95_ms": _pct(work, 95)})
    for kind in ("text", "upload"):
        out.update({f"{kind}/{k_}": v for k_, v in _summary(lat[kind], wall, len(lat[kind])).items() if "ms" in k_})
    if all("cpu_s" in r for r in raws):  # CPU per request: the server's (this process), and the client process's
        out["cpu_ms_per_request"] = 1000 * sum(r["cpu_s"] for r in raws) / (n * len(raws))
        out["client/cpu_ms_per_request"] = 1000 * sum(r["client_cpu_s"] for r in raws) / (n * len(raws))
    calls, items = sum(r["calls"] for r in raws), sum(r["items"] for r in raws)
    out.update({"encoder/calls": calls / len(raws), "encoder/items_per_call": items / calls if calls else float("nan"),
                "encoder/busy_share": sum(r["enc_s"] for r in raws) / wall if wall > 0 else float("nan")})
    return out




def cell_levers(service_threads, max_batch_for) -> tuple[list[int | None], list[tuple[tuple[str, int], ...]]]:
    """The ``service_threads`` values (``-``: the run's setting -> None; else whole numbers >= 1, the service's
    ``torch_threads``) and the ``max_batch_for`` values (``-``: none; else ``MODALITY=N`` entries joined by ``/``,
    e.g. ``image=4/text=32``), each option a comma-separated list; a bad one is refused in one line."""
    from ..errors import AnybindError

    threads, pers = [], []
    for v in values("-" if service_threads is None else str(service_threads), str):
        t = None if v.strip() == "-" else whole(v)
        if t is not None and t < 1 or t is None and v.strip() != "-":
            raise AnybindError(f"serve-load: service_threads={service_threads!r}: each value '-' (the run's torch "
                               "threads) or a whole number >= 1 (the service's --torch-threads)")
        threads.append(t)
    for v in values("-" if max_batch_for is None else str(max_batch_for), str):
        per = [] if v.strip() == "-" else [e.partition("=") for e in v.split("/")]
        if any(not m.strip() or not eq or (whole(n) or 0) < 1 for m, eq, n in per) or len(
                {m.strip() for m, _, _ in per}) < len(per):
            raise AnybindError(f"serve-load: max_batch_for={max_batch_for!r}: each value '-' or MODALITY=N entries "
                               "joined by '/' (e.g. image=4/text=32; N a whole number >= 1; each modality once)")
        pers.append(tuple((m.strip(), int(n)) for m, _, n in per))
    if not (threads and pers):
        raise AnybindError(f"serve-load: service_threads={service_threads!r}, max_batch_for={max_batch_for!r}: "
                           "give at least one value ('-' for none)")
    return threads, pers


def lever_name(threads: int | None, per: tuple[tuple[str, int], ...]) -> str:
    """A cell's levers as its row's name shows them (``''`` for none)."""
    return (f", torch threads {threads}" if threads else "") + "".join(f", {m} {n}" for m, n in per)

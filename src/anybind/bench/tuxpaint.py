"""The Tux Paint comparison shared by ``anybind demo`` and the ``tuxpaint-retrieval`` bench task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..data.manifest import load_manifest
from ..evaluate import KS, embed_records, retrieval_from_embeddings

DEFAULT_MODALITIES = ("image", "text", "audio")


def prepare_tuxpaint(work: Path, console: Console | None = None) -> Path:
    """Build the Tux Paint corpus under ``work/tuxpaint`` once; return its manifest path."""
    from ..corpora._debian import ensure_debian_package
    from ..corpora.tuxpaint import build_tuxpaint

    out = Path(work) / "tuxpaint"
    manifest = out / "manifest.jsonl"
    if not manifest.exists():
        ensure_debian_package("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps")
        summary = build_tuxpaint(out, progress=True)
        if console:
            console.print(summary)
    return manifest


def chance_metrics(res: dict[str, float]) -> dict[str, float]:
    """Expected retrieval metrics of a random ranking with the same gallery sizes."""
    out = {}
    for k, v in res.items():
        if k.endswith("/n"):
            d, n = k[:-2], int(v)
            for kk in KS:
                out[f"{d}/R@{kk}"] = min(kk, n) / n
            out[f"{d}/MdR"] = (n + 1) / 2
            out[f"{d}/n"] = n
    return out


def compare_on_tuxpaint(
    work: Path,
    *,
    modalities=DEFAULT_MODALITIES,
    cache=None,
    seed: int = 0,
    epochs: int = 200,
    console: Console | None = None,
    split: str = "test",
    **train_kw: Any,
):
    """Fit the trained space and the Procrustes baseline on train; evaluate both on ``split``.

    Returns ``(space, results)`` where ``results`` maps system name -> flat metrics.
    """
    from ..space import Space

    manifest = prepare_tuxpaint(work, console)
    man = load_manifest(manifest, modalities=list(modalities), progress=True)
    space = Space.fit(man, modalities=list(modalities), cache=cache, seed=seed, epochs=epochs, **train_kw)
    proc = Space.fit(man, modalities=list(modalities), cache=cache, method="procrustes")
    recs = man.split(split)
    res_space = retrieval_from_embeddings(embed_records(space, recs, modalities, cache=cache))
    res_proc = retrieval_from_embeddings(embed_records(proc, recs, modalities, cache=cache))
    results = {"anybind": res_space, "procrustes": res_proc, "chance": chance_metrics(res_space)}
    return space, proc, man, results

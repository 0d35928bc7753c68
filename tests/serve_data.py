"""A small real space + index for the service, report and web tests: Tux Paint stamps, real encoders.

Built once per test session (features through the session's shared cache):
36 stamps (12 with their sound effect), image + text + audio, a contrastive
space trained for a few epochs (so it has training history), and an index of
every record.
"""

from __future__ import annotations

import json
from pathlib import Path


def small_tux(tux_dir: Path, cache: Path, out: Path, n_audio: int = 12, n_plain: int = 24) -> dict:
    """The small space + index, built in ``out``: once a session, by conftest's ``serve_small`` fixture (which
    every test module that reads it uses)."""
    from anybind.data.manifest import load_manifest
    from anybind.index import Index
    from anybind.space import Space

    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text", "audio"])
    with_audio = [r for r in man.records if r.has("audio") and r.has("image") and r.has("text")][:n_audio]
    plain = [r for r in man.records if not r.has("audio") and r.has("image") and r.has("text")][:n_plain]
    recs = []
    for i, r in enumerate(with_audio):  # A P P A P P ...: every split gets some sounds
        recs.append(r)
        recs.extend(plain[2 * i : 2 * i + 2])
    recs.extend(plain[2 * len(with_audio) :])
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / "small.jsonl"
    with open(mpath, "w") as f:
        for i, r in enumerate(recs):
            split = ("train", "train", "train", "val", "test")[i % 5]
            row = {"id": r.id, "split": split, "labels": r.labels}
            for m in ("image", "text", "audio"):
                if r.has(m):
                    row[m] = str(Path(r.values[m]).resolve()) if m != "text" else r.values[m]
            f.write(json.dumps(row) + "\n")
    space = Space.fit(
        mpath, modalities=["image", "text", "audio"], cache=cache, progress=False, epochs=8, dim=64, seed=0
    )
    space.save(out / "space")
    Index.build(space, mpath, out / "index", cache=cache)
    return {
        "manifest": mpath,
        "space": out / "space",
        "index": out / "index",
        "records": recs,
        "audio": [r for r in recs if r.has("audio")],
    }


def first_record(small: dict, with_audio: bool = False):
    """The first record of :func:`small_tux`'s space (one with its sound effect if ``with_audio``)."""
    return (small["audio"] if with_audio else small["records"])[0]


def png_bytes(color=(200, 120, 40), size=24) -> bytes:
    """A small one-colour PNG, as uploaded to the service."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def served(index: Path, cache: Path, space: Path | None = None, **config):
    """A test client of the service over ``index`` (its own space copy, or ``space``), with ``ServeConfig(**config)``;
    a generator for a fixture to ``yield from``: the service is closed after the client."""
    from fastapi.testclient import TestClient

    from anybind.serve import Service, create_app
    from anybind.serve.config import ServeConfig

    svc = Service.load(space, index, cache=cache, config=ServeConfig(**config))
    try:
        with TestClient(create_app(service=svc)) as c:
            yield c
    finally:
        svc.close()


def vectors_world(d: Path) -> dict:
    """A tiny space of two synthetic sensors (``a``: 24 features, ``b``: 20; scale_helpers.synthetic_corpus) fitted
    and indexed under ``d``: its folder, space, index, the ids and features of ``a``."""
    import numpy as np
    from scale_helpers import synthetic_corpus

    from anybind.index import Index
    from anybind.space import Space

    manifest, encoders = synthetic_corpus(d, n=60)
    space = Space.fit(manifest, encoders=encoders, cache=d / "cache", epochs=3, dim=8, seed=0, progress=False)
    Index.build(space, manifest, d / "index", cache=d / "cache")
    npz = np.load(d / "a.npz")
    return {"dir": d, "space": space, "index": d / "index", "ids": [str(i) for i in npz["ids"]], "A": npz["vectors"]}


def npy_bytes(arr, **kw) -> bytes:
    """``arr`` as the bytes of a ``.npy`` file (``np.save``'s keywords)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()

"""Shared by the media-limit tests (issue 14, items 4, 5, 6, 8, 9 and part of 15): hostile files built in memory
(gzip and <use> amplifiers, PNG headers of huge sizes, SVGs embedding rasters), a block asserting bounded time and
peak RSS (from /proc/self/status, reset through /proc/self/clear_refs), a tiny space and corpus, an image encoder
that decodes in ``load``, and the check that every caller reports a file over a limit as refused, not corrupt."""

import base64
import functools
import gzip
import io
import json
import os
import re
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anybind.cache import FeatureCache
from anybind.data.manifest import load_manifest
from anybind.data.media import MediaLimits, load_image
from anybind.encoders.base import Encoder
from anybind.index import Index
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

STAMPS = Path("/usr/share/tuxpaint/stamps")
CLIPART = Path("/usr/share/openclipart/svg")
XLINK = b'xmlns:xlink="http://www.w3.org/1999/xlink"'
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" ' + XLINK + b' width="40" height="40">'
ENC = {"text": "callable:helper_encoders:hashed_text", "image": "callable:helper_encoders:image_stats"}


# ----------------------------------------------------------------------------- measuring
def _status_kb(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


@contextmanager
def bounded(seconds: float, mb: float):
    """Assert that the block ran in under ``seconds`` and raised this process's peak RSS by under ``mb``."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    grew = (_status_kb("VmHWM") - before) / 1024
    assert took < seconds, f"took {took:.1f} s"
    assert grew < mb, f"peak RSS grew by {grew:.0f} MB"


# ----------------------------------------------------------------------------- hostile files
def svgz_bomb(inflated_mb: int = 64) -> bytes:
    """A gzip stream whose stored file name starts with '<svg': an SVG padded with whitespace."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="<svg bomb>", mode="wb", fileobj=buf, compresslevel=9) as g:
        g.write(SVG)
        pad = b" " * 2**20
        for _ in range(inflated_mb):
            g.write(pad)
        g.write(b"</svg>")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` pixels that holds (almost) no pixel data: a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@functools.lru_cache(maxsize=4)
def big_png(width: int, height: int) -> bytes:
    """A real (decodable) 1-bit PNG: a 20000 x 20000 one is 48 KB, 1.6 GB once decoded to RGBA."""
    buf = io.BytesIO()
    Image.new("1", (width, height)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def svg_with_image(blob: bytes, mime: str = "image/png") -> bytes:
    uri = f"data:{mime};base64,".encode() + base64.b64encode(blob)
    return SVG + b'<image width="40" height="40" xlink:href="' + uri + b'"/></svg>'


def use_amplifier(levels: int = 4, fan: int = 10, leaves: int = 30) -> bytes:
    """A 2 KB SVG whose <use> references expand to fan**levels copies of a group of ``leaves`` rectangles."""
    s = SVG + b'<defs><g id="a0">' + b'<rect width="1" height="1"/>' * leaves + b"</g>"
    for i in range(1, levels + 1):
        s += f'<g id="a{i}">'.encode() + f'<use xlink:href="#a{i - 1}"/>'.encode() * fan + b"</g>"
    return s + f'</defs><use xlink:href="#a{levels}"/></svg>'.encode()


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def refused_by_every_caller(tmp_path, low: MediaLimits, name: str, prefix: str, hint: str, what: str) -> None:
    """A file in ``tmp_path`` that ``low`` refuses before decoding: the manifest check (its own reason and count), the
    feature cache, the audit (score 0.5: it may be fine) and the index writer all say ``prefix``, never "corrupt"."""
    from anybind.audit_leak import NOT_READ_SCORE, unreadable_finding
    from anybind.data.limits import using_limits
    from anybind.errors import unusable_file

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    lines = [{"id": "a", "image": "ok.png", "text": "a"}, {"id": "s", "image": name, "text": "s"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with using_limits(low):
        man = load_manifest(tmp_path / "m.jsonl")
        assert [r.id for r in man.records] == ["a"] and len(man.bad) == 1
        reason = man.bad[0].reason
        assert reason.startswith(f"{prefix}{tmp_path / name}: {what}") and "corrupt" not in reason and hint in reason
        assert f"by reason: {prefix.rstrip(': ')} x1" in man.report()
        bad: dict[int, str] = {}
        X = FeatureCache(tmp_path / "cache").encode(_ImageLoader(), [str(tmp_path / f) for f in ("ok.png", name)],
                                                    progress=False, bad=bad)
        assert list(bad) == [1] and np.isfinite(X[0]).all()
        # where only the text travels (the cache's per-item reasons), it is still told apart from a corrupt file
        assert unusable_file("image", bad[1]).startswith(prefix)
        found = unreadable_finding("image", bad[1])
        assert found.score == NOT_READ_SCORE and found.detail.startswith(prefix)
        index = Index.build(_space(), _corpus(tmp_path / "corpus"), tmp_path / "index", cache=tmp_path / "c2")
        stats = index.add(load_manifest(tmp_path / "m.jsonl", check_media=False), cache=tmp_path / "c2")
    (rid, why), = stats.failed
    assert rid == "s" and why.startswith(prefix) and "corrupt" not in why
    assert unreadable_finding("image", "x.png: corrupt or unsupported image").score == 1.0


def _space(seed=0, dim=16) -> Space:
    torch.manual_seed(seed)
    cfg = dict(out_dim=dim, kind="linear", dropout=0.0, input_dropout=0.0)
    proj = {m: Projector(ProjectorConfig(in_dim=d, **cfg)) for m, d in (("text", 8), ("image", 7))}
    return Space(dict(ENC), proj)


@contextmanager
def served(root: Path, config=None, manifest: Path | None = None, **client):
    """A test client of a service over the tiny space and an index of ``manifest`` (default: :func:`_corpus`) built
    in ``root``, with ``config`` (default: ``ServeConfig()``); the service closed after."""
    from fastapi.testclient import TestClient

    from anybind.serve import ServeConfig, Service, create_app

    space = _space()
    space.save(root / "space")
    Index.build(space, manifest or _corpus(root), root / "index", cache=root / "cache")
    svc = Service.load(root / "space", root / "index", cache=root / "cache", config=config or ServeConfig())
    try:
        with TestClient(create_app(service=svc), **client) as c:
            yield c
    finally:
        svc.close()


def _corpus(root: Path, n: int = 6) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        a = np.random.default_rng(i).integers(0, 255, (8 + i, 9, 3), dtype=np.uint8)
        Image.fromarray(a).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"id": f"r{i}", "text": f"stamp number {i}", "image": f"img/{i}.png"}))
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    return root / "m.jsonl"


class _ImageLoader(Encoder):
    """An encoder that decodes in ``load`` (like the built-in image encoders): 3 channel means."""

    spec, dim, batch_size = "test:image-means", 3, 4

    @property
    def identity(self) -> str:
        return "test:image-means/1"

    def load(self, item):
        return np.asarray(load_image(item, size=16), np.float32).reshape(-1, 3).mean(0)

    def encode_loaded(self, batch):
        return np.stack(batch)


def _corrupt_in_place(p: Path) -> None:
    """Overwrite a file with garbage of the same size and give it back its modification time."""
    st = p.stat()
    p.write_bytes((b"garbage!" * (st.st_size // 8 + 1))[: st.st_size])
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns

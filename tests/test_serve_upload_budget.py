"""The pixel budget of uploads in flight (``ServeConfig.max_inflight_pixels``, :mod:`anybind.serve.budget`):
the memory of decoded uploads is bounded whatever ``concurrency`` is.

The budget itself (first come first served, timeouts, clamping) is checked with real anyio tasks; the service
with real small images over real HTTP: concurrent uploads declaring more than the budget are all answered, as
one by one, while the peak reserved stays within it; a corrupt upload gives its pixels back; one upload larger
than the budget is served alone; text queries reserve nothing."""

from __future__ import annotations

import asyncio
import io
import wave

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anybind.serve import ServeConfig, Service, create_app, serve_in_thread
from anybind.serve.budget import PixelBudget, file_pixels
from anybind.serve.gate import Busy

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older starlette/httpx
    import httpx


# ----------------------------------------------------------------------------- the budget
def test_reservations_over_the_budget_wait_their_turn_first_come_first_served():
    order: list[str] = []

    async def main():
        b = PixelBudget(100, max_queue=8, timeout=60)
        release = {k: anyio.Event() for k in "abcd"}
        entered = {k: anyio.Event() for k in "abcd"}

        async def holder(name, cost):
            async with b.hold(cost) as got:
                order.append(f"{name}+{got}@{b.reserved}")
                entered[name].set()
                await release[name].wait()

        async with anyio.create_task_group() as tg:
            tg.start_soon(holder, "a", 60)
            await entered["a"].wait()
            tg.start_soon(holder, "b", 100)  # does not fit: waits
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(holder, "c", 10)  # would fit, but b came first: waits behind it (no starvation)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(holder, "d", 10**9)  # more than the whole budget: clamped to it
            await anyio.wait_all_tasks_blocked()
            assert (b.reserved, b.waiting) == (60, 3)
            release["a"].set()
            await entered["b"].wait()
            await anyio.wait_all_tasks_blocked()
            assert (b.reserved, b.waiting) == (100, 2)
            release["b"].set()
            await entered["c"].wait()
            await anyio.wait_all_tasks_blocked()
            assert (b.reserved, b.waiting) == (10, 1)  # d needs all of it: waits for c
            release["c"].set()
            await entered["d"].wait()
            release["d"].set()
        assert (b.reserved, b.waiting, b.peak) == (0, 0, 100)

    anyio.run(main)
    assert order == ["a+60@60", "b+100@100", "c+10@10", "d+100@100"]


def test_a_reservation_that_waits_too_long_gets_busy_and_leaves_nothing_behind():
    async def main():
        b = PixelBudget(100, max_queue=1, timeout=0.05)
        async with b.hold(80):
            with pytest.raises(Busy, match="within"):
                async with b.hold(30):
                    pytest.fail("admitted over the budget")
            assert (b.reserved, b.waiting) == (80, 0)
            async with b.hold(20):  # what fits still goes in at once
                assert b.reserved == 100
        assert b.reserved == 0
        full = PixelBudget(100, max_queue=0, timeout=60)
        async with full.hold(100):
            with pytest.raises(Busy, match="waiting"):  # no queue: refused at once
                async with full.hold(1):
                    pass
        async with full.hold(0):  # nothing to reserve (text, refused content): never waits
            assert full.reserved == 0
        shared = PixelBudget(100, max_queue=3, timeout=60, also_waiting=lambda: 3)  # the gate's queue is full
        async with shared.hold(100):
            with pytest.raises(Busy, match="waiting"):
                async with shared.hold(1):
                    pass

    anyio.run(main)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 150), min_size=1, max_size=12), st.integers(1, 120))
def test_concurrent_reservations_never_exceed_the_budget_and_all_complete(costs, capacity):
    seen: list[int] = []

    async def main():
        b = PixelBudget(capacity, max_queue=len(costs), timeout=60)

        async def holder(cost):
            async with b.hold(cost):
                seen.append(b.reserved)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for c in costs:
                tg.start_soon(holder, c)
        return b

    b = anyio.run(main)
    assert len(seen) == len(costs) and max(seen) <= capacity
    assert b.reserved == 0 and b.waiting == 0 and b.peak <= capacity


# ----------------------------------------------------------------------------- what a file declares
def _png(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _wav(frames: int, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(frames * channels, np.int16).tobytes())
    return buf.getvalue()


def test_files_declare_their_decoded_size():
    cfg = ServeConfig(max_pixels=50_000)
    assert file_pixels(_png(120, 80), cfg) == 120 * 80
    assert file_pixels(_png(300, 200), cfg) == 50_000  # over max_pixels: refused before decoding, capped here
    assert file_pixels(_wav(3000, 2), cfg) == 3000 * 2 * 4 // 3  # float32 samples in 3-byte units
    assert file_pixels(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, cfg) == 50_000  # unreadable header: the most
    assert file_pixels(b"<html>no image</html>", cfg) == 0  # refused (415) before anything is decoded


# ----------------------------------------------------------------------------- the service
@pytest.fixture(scope="module")
def data(serve_small):
    return serve_small


@pytest.fixture(scope="module")
def svc(data, shared_cache):
    s = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    yield s
    s.close()


W, H = 160, 120  # every upload below declares W x H pixels


def _uploads(data, n: int) -> list[tuple[str, bytes]]:
    out = []
    for i, r in enumerate(data["records"][:n]):
        buf = io.BytesIO()
        Image.open(r.values["image"]).convert("RGB").resize((W, H)).save(buf, format="JPEG", quality=80 + i % 15)
        out.append((f"u{i}.jpg", buf.getvalue()))
    return out


def _ids(res) -> list[str]:
    return [h["id"] for h in res["hits"]]


def test_concurrent_uploads_over_the_budget_are_admitted_a_few_at_a_time_and_all_answered(svc, data):
    uploads = _uploads(data, 12)
    with TestClient(create_app(service=svc)) as c:  # one at a time, the default budget
        alone = [c.post("/search/upload", files={"files": u}, data={"k": "5"}).json() for u in uploads]
    budget = 3 * W * H  # 12 uploads of W x H: four times the budget

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=300) as cl:
            res = await asyncio.gather(*[cl.post("/search/upload", files={"files": u}, data={"k": "5"})
                                         for u in uploads])
            return res, (await cl.get("/health")).json()

    app = create_app(service=svc, config=ServeConfig(max_inflight_pixels=budget))
    with serve_in_thread(app) as url:
        res, health = asyncio.run(run(url))
    assert [r.status_code for r in res] == [200] * len(uploads)
    assert [_ids(r.json()) for r in res] == [_ids(a) for a in alone]
    load = health["load"]
    assert health["limits"]["max_inflight_pixels"] == budget
    assert W * H <= load["peak_reserved_pixels"] <= budget
    assert load["reserved_pixels"] == 0


def test_a_corrupt_upload_gives_its_pixels_back(svc):
    good = _png(90, 70)
    truncated = good[:60]  # a readable header (90 x 70), data cut short: fails when decoded
    garbage = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x00" * 64 + b"broken"  # no readable header
    with TestClient(create_app(service=svc, config=ServeConfig(max_inflight_pixels=10**6))) as c:
        r = c.post("/search/upload", files={"files": ("cut.png", truncated)})
        assert r.status_code == 400 and "cut.png" in r.json()["detail"]
        load = c.get("/health").json()["load"]
        assert (load["reserved_pixels"], load["peak_reserved_pixels"]) == (0, 90 * 70)
        r = c.post("/embed/upload", files={"files": ("bad.jpg", garbage)})
        assert r.status_code == 400
        load = c.get("/health").json()["load"]
        assert (load["reserved_pixels"], load["peak_reserved_pixels"]) == (0, 10**6)  # charged the most: clamped
        assert c.post("/classify/upload", files={"files": ("ok.png", good)},
                      data={"labels": ["penguin", "dog"]}).status_code == 200
        assert c.get("/health").json()["load"]["reserved_pixels"] == 0


def test_an_upload_larger_than_the_whole_budget_is_served_alone(svc, data):
    (name, jpeg), = _uploads(data, 1)
    with TestClient(create_app(service=svc, config=ServeConfig(max_inflight_pixels=1000))) as c:
        r = c.post("/embed/upload", files=[("files", (name, jpeg)), ("files", ("two.jpg", jpeg))])
        assert r.status_code == 200 and len(r.json()["items"]) == 2
        load = c.get("/health").json()["load"]
        assert (load["reserved_pixels"], load["peak_reserved_pixels"]) == (0, 1000)


def test_text_queries_reserve_nothing(svc):
    with TestClient(create_app(service=svc, config=ServeConfig(max_inflight_pixels=1000))) as c:
        assert c.post("/search", json={"text": "a penguin", "k": 3}).status_code == 200
        assert c.post("/embed", json={"texts": ["a penguin"]}).status_code == 200
        assert c.get("/health").json()["load"]["peak_reserved_pixels"] == 0

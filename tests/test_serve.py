"""The search service on a small real space + index (Tux Paint, real encoders; conftest's ``serve_small``),
one service for the module: health, search, uploads, classify, embed, stored items, the page, a busy service,
concurrent searches, and the OpenAPI contract."""

import asyncio
import io
import json
import re
import threading
import time
import wave

import numpy as np
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from PIL import Image

from anybind.serve import ServeConfig, Service, create_app, serve_in_thread
from anybind.serve.sniff import sniff
from serve_data import first_record

try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older starlette/httpx
    import httpx

CAP = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def svc(serve_small, shared_cache):
    cfg = ServeConfig(max_upload_bytes=CAP)
    s = Service.load(serve_small["space"], serve_small["index"], cache=shared_cache, config=cfg)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(svc):
    with TestClient(create_app(service=svc)) as c:
        yield c


# ----------------------------------------------------------------------------- health, search
def test_health_describes_the_space_the_index_and_the_limits(client, svc):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["index"]["counts"] == {"audio": 12, "image": 36, "text": 36} and h["index"]["rows"] == 84
    assert h["space"]["identity"] == svc.space.identity() and h["space"]["dim"] == 64
    assert h["upload_modalities"] == {"image": "image", "audio": "audio"}
    assert h["limits"]["max_upload_bytes"] == CAP and h["limits"]["concurrency"] == ServeConfig().concurrency
    assert h["limits"]["max_inflight_pixels"] == ServeConfig().max_inflight_pixels
    assert {k: h["load"][k] for k in ("running", "waiting", "reserved_pixels")} == {
        "running": 0, "waiting": 0, "reserved_pixels": 0}


def test_api_docs_work_offline(client):
    """/docs must not need a CDN: its script and stylesheet are served by the app itself."""
    html = client.get("/docs").text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(u.startswith("/") for u in srcs), srcs
    for u in srcs:
        assert client.get(u).status_code == 200, u
    assert "/openapi.json" in html


def test_text_search_filters_and_k(client, serve_small):
    r0 = first_record(serve_small)
    res = client.post("/search", json={"text": r0.values["text"], "k": 5})
    assert res.status_code == 200, res.text
    hits = res.json()["hits"]
    assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["modality"] == "text" and hits[0]["text"] == r0.values["text"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[0]["url"] is None
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    imgs = client.post("/search", json={"text": "a bird", "k": 7, "modality": "image"}).json()["hits"]
    assert len(imgs) == 7 and {h["modality"] for h in imgs} == {"image"}
    assert all(h["url"].startswith("/items/") and h["thumb_url"].startswith("/thumbs/") for h in imgs)
    cat = r0.labels["category"]
    filt = client.post("/search", json={"text": "a bird", "k": 50, "labels": {"category": cat}}).json()["hits"]
    assert filt and all(h["labels"]["category"] == cat for h in filt)
    both = client.post("/search", json={"text": "a bird", "k": 100, "modality": ["image", "audio"]}).json()["hits"]
    assert len(both) == 48 and {h["modality"] for h in both} == {"image", "audio"}
    for method in ("invgc", "csls", "qbnorm"):
        rr = client.post("/search", json={"text": "a bird", "k": 5, "modality": "image", "rerank": method})
        assert rr.status_code == 200 and len(rr.json()["hits"]) == 5
    # results carry URLs, never the server's file paths
    assert str(serve_small["manifest"].parent.parent) not in json.dumps(imgs)


def test_fused_text_query_is_the_normalised_weighted_mean(client, svc):
    texts = ["a bird", "something that swims"]
    E = np.array([it["vector"] for it in client.post("/embed", json={"texts": texts}).json()["items"]])
    assert E.shape == (2, 64) and np.allclose(np.linalg.norm(E, axis=1), 1, atol=1e-5)
    q = 0.7 * E[0] + 0.3 * E[1]
    q /= np.linalg.norm(q)
    body = {"inputs": [{"text": texts[0], "weight": 0.7}, {"text": texts[1], "weight": 0.3}], "k": 10}
    hits = client.post("/search", json=body).json()["hits"]
    snap = svc.index.snapshot()
    rows = {(i, m): k for k, (i, m) in enumerate(zip(snap.meta.column("id").to_pylist(), snap.modality))}
    want = np.sort(snap.vectors @ q)[::-1][:10]
    got = [h["score"] for h in hits]
    assert np.allclose(got, want, atol=1e-5)
    assert all(abs(snap.vectors[rows[(h["id"], h["modality"])]] @ q - h["score"]) < 1e-5 for h in hits)


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "empty query"),
        ({"text": "   "}, "empty text"),
        ({"text": "a dog", "modality": "smell"}, "unknown modality 'smell'"),
        ({"inputs": [{"modality": "image", "text": "a dog"}]}, "does not read text"),
        ({"inputs": [{"text": "a dog", "weight": 0}]}, "not all zero"),
        ({"text": "a dog", "labels": {"category": 3}}, None),  # a schema violation: 422
    ],
)
def test_bad_json_queries_get_clear_4xx(client, body, message):
    res = client.post("/search", json=body)
    if message is None:
        assert res.status_code == 422
    else:
        assert res.status_code == 400 and message in res.json()["detail"], res.text


# ----------------------------------------------------------------------------- uploads
def test_uploads_are_sniffed_not_trusted_by_name(client, serve_small):
    r0 = first_record(serve_small)
    img = open(r0.values["image"], "rb").read()
    # an image sent as "notes.txt" with a text content type is still an image
    res = client.post("/search/upload", files={"files": ("notes.txt", img, "text/plain")}, data={"k": "3"})
    assert res.status_code == 200, res.text
    top = res.json()["hits"][0]
    assert (top["id"], top["modality"]) == (r0.id, "image") and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert res.json()["query_modalities"] == ["image"]
    ra = first_record(serve_small, with_audio=True)
    snd = open(ra.values["audio"], "rb").read()
    res = client.post("/search/upload", files={"files": ("picture.png", snd, "image/png")}, data={"k": "3"})
    top = res.json()["hits"][0]
    assert (top["id"], top["modality"]) == (ra.id, "audio") and res.json()["query_modalities"] == ["audio"]
    # a sound fused with a text, filtered to images
    res = client.post(
        "/search/upload",
        files={"files": ("s.ogg", snd)},
        data={"text": "a bird", "weights": ["0.5", "1.0"], "modality": "image", "k": "4"},
    )
    assert res.status_code == 200 and res.json()["query_modalities"] == ["audio", "text"]
    assert {h["modality"] for h in res.json()["hits"]} == {"image"}
    # also an SVG drawn by hand, and a JPEG made from a stored PNG
    svg = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"><circle cx="20" cy="20" r="15" fill="red"/></svg>'
    buf = io.BytesIO()
    Image.open(io.BytesIO(img)).convert("RGB").save(buf, format="JPEG")
    for name, blob in (("c.svg", svg), ("p.jpg", buf.getvalue())):
        res = client.post("/search/upload", files={"files": (name, blob)}, data={"k": "2", "modality": "image"})
        assert res.status_code == 200, res.text


def test_bad_uploads_get_clear_errors_and_leave_nothing_behind(client, svc):
    def up(*files, **form):
        return client.post("/search/upload", files=[("files", f) for f in files], data=form)

    res = up(("report.pdf", b"%PDF-1.4 not an image"))
    assert res.status_code == 415 and "'report.pdf'" in res.json()["detail"] and "PNG" in res.json()["detail"]
    res = up(("broken.png", b"\x89PNG\r\n\x1a\n and then nothing"))
    assert res.status_code == 400
    detail = res.json()["detail"]
    assert "'broken.png'" in detail and "corrupt or unsupported image" in detail and str(svc.tmp) not in detail
    res = up(("cut.ogg", b"OggS" + b"\x00" * 60))
    assert res.status_code == 400 and "'cut.ogg'" in res.json()["detail"]
    assert up(("empty.png", b"")).status_code == 400
    assert "weights" in up(("a.png", b"x"), weights=["1", "2"]).json()["detail"]
    res = up(*[(f"{i}.png", b"x") for i in range(9)])
    assert res.status_code == 400 and "at most 8" in res.json()["detail"]
    assert "no such" not in up(("dir/../../etc/passwd", b"GIF89a..")).json()["detail"]
    # a small file holding a huge image, or a very long sound: refused from the header, nothing decoded
    buf = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < CAP
    res = up(("huge.png", buf.getvalue()))
    assert res.status_code == 400 and "8000x6000 pixels" in res.json()["detail"]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(1), w.setframerate(4000)
        w.writeframes(b"\x80" * 4000 * 200)
    res = up(("long.wav", buf.getvalue()))
    assert res.status_code == 400 and "a sound of 200 s" in res.json()["detail"]
    # over the cap: refused from Content-Length, before the body is read
    res = up(("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (CAP + 10)))
    assert res.status_code == 413 and "upload cap" in res.json()["detail"]
    # and when the length is not declared (chunked), as soon as the stream passes the cap
    def chunks():
        for _ in range(5):
            yield b"\x00" * (CAP // 2)

    res = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413
    assert list(svc.tmp.iterdir()) == []  # every staged upload was deleted


def test_classify_text_and_uploads(client, serve_small):
    res = client.post("/classify", json={"text": "A frog.", "labels": ["frog", "car", "tree", "bird"]})
    assert res.status_code == 200, res.text
    out = res.json()
    assert out["results"][0]["label"] == "frog" and len(out["results"]) == 4
    assert sum(c["probability"] for c in out["results"]) == pytest.approx(1.0, abs=1e-5)
    assert all(a["score"] >= b["score"] for a, b in zip(out["results"], out["results"][1:]))
    two = client.post("/classify", json={"text": "A frog.", "labels": ["frog", "car"], "templates": ["a {}.", "a photo of a {}."]})
    assert two.json()["templates"] == ["a {}.", "a photo of a {}."]
    bad = client.post("/classify", json={"text": "A frog.", "labels": ["frog"], "templates": ["no slot here"]})
    assert bad.status_code == 400 and "no '{}'" in bad.json()["detail"]
    bad = client.post("/classify", json={"text": "A frog.", "labels": ["frog"], "templates": ["{} {x}"]})
    assert bad.status_code == 400
    img = open(first_record(serve_small).values["image"], "rb").read()
    res = client.post("/classify/upload", files={"files": ("i.png", img)}, data={"labels": ["frog", "car", "tree"]})
    assert res.status_code == 200 and res.json()["query_modalities"] == ["image"]
    assert sorted(c["label"] for c in res.json()["results"]) == ["car", "frog", "tree"]
    assert client.post("/classify/upload", files={"files": ("i.png", img)}, data={"labels": [" "]}).status_code == 400


def test_embed_texts_and_uploads(client, serve_small, svc):
    res = client.post("/embed", json={"texts": ["a frog", "a car"]}).json()
    assert res["dim"] == 64 and [len(i["vector"]) for i in res["items"]] == [64, 64]
    ra = first_record(serve_small, with_audio=True)
    files = [("files", ("a.png", open(ra.values["image"], "rb").read())), ("files", ("b", open(ra.values["audio"], "rb").read()))]
    res = client.post("/embed/upload", files=files).json()
    assert [(i["modality"], i["name"]) for i in res["items"]] == [("image", "a.png"), ("audio", "b")]
    want = svc.space.embed("audio", [ra.values["audio"]], cache=svc.cache)[0]
    assert np.allclose(res["items"][1]["vector"], want, atol=1e-5)
    assert client.post("/embed", json={"modality": "image", "texts": ["x"]}).status_code == 400


# ----------------------------------------------------------------------------- stored items
def test_items_are_served_by_id_never_by_path(client, serve_small):
    r0 = first_record(serve_small)
    hit = client.post("/search", json={"text": r0.values["text"], "k": 1, "modality": "image"}).json()["hits"][0]
    res = client.get(hit["url"])
    assert res.status_code == 200 and res.headers["content-type"] == sniff(res.content[:64]).mime
    assert res.headers["x-content-type-options"] == "nosniff" and "sandbox" in res.headers["content-security-policy"]
    src = [r for r in serve_small["records"] if r.id == hit["id"]][0].values["image"]
    assert res.content == open(src, "rb").read()
    th = client.get(hit["thumb_url"] + "&size=64")
    assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(th.content)).size) <= 64
    ra = first_record(serve_small, with_audio=True)
    snd = client.get(f"/items/{ra.id}?modality=audio")
    assert snd.status_code == 200 and snd.headers["content-type"] == "audio/ogg"
    assert client.get(f"/items/{ra.id}?modality=text").text == ra.values["text"]
    assert client.get(f"/items/{ra.id}").headers["content-type"].startswith("image/")  # default: the image
    assert client.get(f"/thumbs/{ra.id}?modality=audio").status_code == 404
    for bad in (
        "/items/..%2F..%2F..%2Fetc%2Fpasswd",
        "/items/%2Fetc%2Fpasswd",
        f"/items/{src}",
        "/items/" + str(src).lstrip("/"),
        "/items/no-such-id",
        f"/items/{ra.id}?modality=smell",
        "/thumbs/..%2Fspace%2Fspace.json",
    ):
        res = client.get(bad)
        assert res.status_code == 404, bad
        assert res.headers["content-type"] == "application/json"


def test_the_page_and_its_assets(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    assert set(client.get("/openapi.json").json()["paths"]) >= {
        "/health", "/embed", "/search", "/search/upload", "/classify", "/classify/upload", "/items/{item_id}",
    }


def test_busy_service_answers_503_with_retry_after(svc):
    app = create_app(service=svc, config=ServeConfig(concurrency=1, max_queue=0, max_upload_bytes=CAP))
    release = threading.Event()
    real = svc.search

    def slow(*a, **kw):
        release.wait(10)
        return real(*a, **kw)

    with TestClient(app) as c:
        svc.search = slow
        try:
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("first", c.post("/search", json={"text": "a frog"})))
            t.start()
            time.sleep(0.5)
            res = c.post("/search", json={"text": "a dog"})
            assert res.status_code == 503 and res.headers["retry-after"] == "1" and "busy" in res.json()["detail"]
            release.set()
            t.join(10)
            assert out["first"].status_code == 200
        finally:
            svc.search = real


def test_concurrent_searches_on_loopback_have_no_errors(svc, serve_small):
    """A small load test (the timed one is `anybind bench --task serve-load`): 48 concurrent requests."""
    img = open(first_record(serve_small).values["image"], "rb").read()
    texts = [r.values["text"] for r in serve_small["records"]]

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            async def one(i):
                if i % 4 == 3:
                    return await c.post("/search/upload", files={"files": ("q.png", img)}, data={"k": "5"})
                return await c.post("/search", json={"text": texts[i % len(texts)], "k": 10})

            return await asyncio.gather(*[one(i) for i in range(48)])

    with serve_in_thread(create_app(service=svc)) as url:
        assert url.startswith("http://127.0.0.1:")
        responses = asyncio.run(run(url))
    assert [r.status_code for r in responses] == [200] * 48
    assert all(len(r.json()["hits"]) >= 5 for r in responses)


# ----------------------------------------------------------------------------- the OpenAPI contract
@pytest.fixture(scope="module")
def api_schema(svc):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(service=svc))


OPERATIONS = [
    ("GET", "/health"),
    ("POST", "/embed"),
    ("POST", "/embed/upload"),
    ("POST", "/search"),
    ("POST", "/search/upload"),
    ("POST", "/classify"),
    ("POST", "/classify/upload"),
    ("POST", "/explain"),
    ("GET", "/items/{item_id}"),
    ("GET", "/thumbs/{item_id}"),
]


def test_every_operation_is_contract_tested(api_schema):
    ops = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert ops == set(OPERATIONS)


@pytest.mark.parametrize(
    "method, path, mode",
    # GET /health takes no input: there is nothing to make invalid
    [(m, p, mode) for m, p in OPERATIONS for mode in ("positive", "negative") if (p, mode) != ("/health", "negative")],
)
def test_api_conforms_to_its_openapi_schema(api_schema, method, path, mode):
    """Schemathesis: generated requests (valid, and invalid ones) get documented answers, never a 500."""
    from hypothesis import given

    op = api_schema[path][method]

    @given(case=op.as_strategy(GenerationMode(mode)))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case):
        # every answer documented and schema-conformant, invalid input rejected, no 5xx; but a schema-valid
        # request may still get a documented 400 (an unknown modality name, bytes that are no image...)
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    check()

"""The service follows writes to its index made by another process while it serves (refresh_seconds=0): an exact
index, and the fast ones (in-memory HNSW graph, int8 codes) that must answer as exact search does, never stale."""

import json

import pytest
from fastapi.testclient import TestClient

from anybind.serve import ServeConfig, Service, create_app
from serve_data import first_record


def test_items_written_to_the_index_while_serving_become_searchable(serve_small, shared_cache, tmp_path):
    """Another process (here: a second Index handle) adds and then deletes an item while the
    service runs; with refresh_seconds=0 the next request sees each change."""
    import shutil

    from anybind.index import Index
    from anybind.space import Space

    live = tmp_path / "index"
    shutil.copytree(serve_small["index"], live)
    cfg = ServeConfig(refresh_seconds=0)
    svc2 = Service.load(serve_small["space"], live, cache=shared_cache, config=cfg, warm=False)
    writer = Index.open(live, Space.load(serve_small["space"]))
    caption = "a purple giraffe on roller skates juggling teapots"
    image = first_record(serve_small).values["image"]
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": "zz-new", "split": "test", "text": caption, "image": image}) + "\n")
    try:
        with TestClient(create_app(service=svc2)) as c:
            rows = c.get("/health").json()["index"]["rows"]
            assert c.get("/items/zz-new").status_code == 404
            writer.add(tmp_path / "new.jsonl", cache=shared_cache)
            top = c.post("/search", json={"text": caption, "k": 1}).json()["hits"][0]
            assert top["id"] == "zz-new" and top["score"] == pytest.approx(1.0, abs=1e-4)
            assert c.get("/items/zz-new?modality=text").text == caption
            assert c.get("/items/zz-new").content == open(image, "rb").read()
            assert c.get("/health").json()["index"]["rows"] == rows + 2
            writer.delete(["zz-new"])
            assert c.get("/items/zz-new").status_code == 404
            assert c.post("/search", json={"text": caption, "k": 1}).json()["hits"][0]["id"] != "zz-new"
            assert c.get("/health").json()["index"]["rows"] == rows
    finally:
        svc2.close()


@pytest.mark.parametrize("fast", ["memory_ann", "int8"])
def test_a_fast_index_serves_the_exact_answers_and_follows_writes(serve_small, shared_cache, tmp_path, fast):
    """An index with the in-memory HNSW graph or int8 codes (used from 0 rows here): the service loads
    it at start, answers as exact search does, and sees another process's writes (never a stale graph)."""
    import shutil

    from anybind.index import Index
    from anybind.space import Space

    live = tmp_path / "index"
    shutil.copytree(serve_small["index"], live)
    meta = json.loads((live / "index.json").read_text())
    (live / "index.json").write_text(json.dumps({**meta, "ann_threshold": 0}))
    ix = Index.open(live)
    ix.create_memory_ann() if fast == "memory_ann" else ix.quantize("int8")
    cfg = ServeConfig(refresh_seconds=0)
    svc2 = Service.load(serve_small["space"], live, cache=shared_cache, config=cfg, warm=False)
    writer = Index.open(live, Space.load(serve_small["space"]))
    caption = "a purple giraffe on roller skates juggling teapots"
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": "zz-new", "split": "test", "text": caption}) + "\n")
    try:
        svc2.index.warm_fast()
        with TestClient(create_app(service=svc2)) as c:
            for r in serve_small["records"][:5]:
                got = c.post("/search", json={"text": r.values["text"], "k": 10}).json()["hits"]
                want = svc2.index.search(text=r.values["text"], k=10, exact=True, cache=shared_cache)
                assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-5)  # ties: any order
                assert {(h["id"], h["modality"]) for h in got} <= {(h.id, h.modality) for h in want} | {
                    (h.id, h.modality) for h in svc2.index.search(text=r.values["text"], k=12, exact=True,
                                                                  cache=shared_cache)}
            writer.add(tmp_path / "new.jsonl", cache=shared_cache)
            top = c.post("/search", json={"text": caption, "k": 1}).json()["hits"][0]
            assert top["id"] == "zz-new" and top["score"] == pytest.approx(1.0, abs=1e-4)
            writer.delete(["zz-new"])
            assert c.post("/search", json={"text": caption, "k": 1}).json()["hits"][0]["id"] != "zz-new"
    finally:
        svc2.close()

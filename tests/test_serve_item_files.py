"""Stored item files (issue 14, item 10): ``/items`` and ``/thumbs`` serve a stored file only inside the indexed
folders and with the indexed content (E: the indexed size compared first, verdicts remembered, so a swapped-in file
is hashed at most once, a file of another size never)."""

from __future__ import annotations

import json
import os
import time

import pytest
from fastapi.testclient import TestClient

from anybind.serve import ServeConfig, Service, create_app
from serve_data import png_bytes


@pytest.fixture
def tiny(serve_small, shared_cache, tmp_path):
    """An index of one record whose image is a tiny PNG in its own folder, and a client serving it."""
    from anybind.index import Index
    from anybind.space import Space

    media = tmp_path / "media"
    media.mkdir()
    img = media / "tiny.png"
    img.write_bytes(png_bytes())
    man = tmp_path / "m.jsonl"
    row = {"id": "tiny", "split": "test", "image": str(img), "text": "a tiny square"}
    man.write_text(json.dumps(row) + "\n")
    Index.build(Space.load(serve_small["space"]), man, tmp_path / "index", cache=shared_cache)
    cfg = ServeConfig(refresh_seconds=0)
    s = Service.load(serve_small["space"], tmp_path / "index", cache=shared_cache, config=cfg, warm=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    with TestClient(create_app(service=s), raise_server_exceptions=False) as c:
        yield {"client": c, "img": img, "outside": outside, "svc": s}
    s.close()


def test_untouched_item_is_served(tiny):
    c, img = tiny["client"], tiny["img"]
    res = c.get("/items/tiny?modality=image")
    assert res.status_code == 200 and res.content == img.read_bytes()
    assert res.headers["content-type"] == "image/png"
    assert c.get("/thumbs/tiny?size=16").status_code == 200
    # a link inside the indexed folders, to a file of the indexed content: still that content
    twin = img.parent / "twin.png"
    twin.write_bytes(img.read_bytes())
    img.unlink()
    img.symlink_to(twin)
    assert c.get("/items/tiny?modality=image").content == twin.read_bytes()


@pytest.mark.parametrize("target", ["secret", "same-bytes", "/etc/passwd"])
def test_item_swapped_for_a_link_out_of_the_indexed_folders_is_refused(tiny, target):
    c, img, outside = tiny["client"], tiny["img"], tiny["outside"]
    if target == "secret":
        dest = outside / "secret.txt"
        dest.write_text("root:x:0:0:secret\n")
    elif target == "same-bytes":  # even with the indexed bytes: a link leading out is refused
        dest = outside / "copy.png"
        dest.write_bytes(img.read_bytes())
    else:
        dest = target
    assert c.get("/items/tiny?modality=image").status_code == 200  # served (and its content verified) first
    img.unlink()
    img.symlink_to(dest)
    for url in ("/items/tiny?modality=image", "/items/tiny", "/thumbs/tiny?size=16"):
        res = c.get(url)
        assert res.status_code == 404, (url, res.status_code, res.content[:80])
        assert "outside the folders this index was built from" in res.json()["detail"], res.text
        assert b"root:" not in res.content and str(outside) not in res.text


def test_item_whose_content_changed_is_refused(tiny):
    c, img = tiny["client"], tiny["img"]
    assert c.get("/items/tiny?modality=image").status_code == 200
    assert c.get("/thumbs/tiny?size=16").status_code == 200  # a cached thumbnail is not served once it changed
    new = png_bytes(color=(10, 200, 90), size=40)
    img.write_bytes(new)
    for url in ("/items/tiny?modality=image", "/thumbs/tiny?size=16"):
        res = c.get(url)
        assert res.status_code == 409, (url, res.status_code)
        assert "changed since it was indexed" in res.json()["detail"] and new not in res.content
    # the same size and mtime as the indexed file: the content is still checked (ctime changed)
    old = png_bytes()
    img.write_bytes(old)
    assert c.get("/items/tiny?modality=image").status_code == 200
    st0 = img.stat()
    time.sleep(0.05)
    same_size = bytearray(old)
    same_size[-20] ^= 0xFF
    img.write_bytes(bytes(same_size))
    os.utime(img, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    assert img.stat().st_size == st0.st_size and img.stat().st_mtime_ns == st0.st_mtime_ns
    res = c.get("/items/tiny?modality=image")
    assert res.status_code == 409 and bytes(same_size) not in res.content


def _count_hashing(monkeypatch) -> list[int]:
    import anybind.serve.files as files_mod

    calls, real = [], files_mod._sha256_fd

    def counting(fd, *a, **kw):
        calls.append(fd)
        return real(fd, *a, **kw)

    monkeypatch.setattr(files_mod, "_sha256_fd", counting)
    return calls


def test_a_swapped_in_file_of_another_size_is_refused_unhashed(tiny, monkeypatch):
    """E: the index stores each file's size; a file of another size (a 4 GB sparse file) is refused 409 from
    its size alone, never read, on every request."""
    c, img = tiny["client"], tiny["img"]
    calls = _count_hashing(monkeypatch)
    assert c.get("/items/tiny?modality=image").status_code == 200 and len(calls) == 1
    assert c.get("/items/tiny?modality=image").status_code == 200 and len(calls) == 1  # verified: remembered
    img.unlink()
    with open(img, "wb") as f:
        f.truncate(4 << 30)
    t0 = time.perf_counter()
    for url in ("/items/tiny?modality=image", "/items/tiny", "/thumbs/tiny?size=16"):
        res = c.get(url)
        assert res.status_code == 409, (url, res.status_code)
        assert "changed since it was indexed (4,294,967,296 bytes, indexed" in res.json()["detail"], res.text
    assert len(calls) == 1 and time.perf_counter() - t0 < 3


def test_a_same_size_changed_file_is_hashed_once(tiny, monkeypatch):
    """E: a mismatch is remembered per file version, so asking again costs no hashing; a new version is
    checked again."""
    c, img = tiny["client"], tiny["img"]
    old = img.read_bytes()
    calls = _count_hashing(monkeypatch)
    bad = bytearray(old)
    bad[-20] ^= 0xFF
    img.write_bytes(bytes(bad))
    for _ in range(3):
        assert c.get("/items/tiny?modality=image").status_code == 409
    assert len(calls) == 1
    img.write_bytes(old)  # put back: a new version, checked, served
    assert c.get("/items/tiny?modality=image").status_code == 200 and len(calls) == 2


def test_an_index_without_sizes_is_still_written_and_served(serve_small, shared_cache, tmp_path, monkeypatch):
    """E: an index written before the size column keeps its schema when added to, and its files are served
    with the hash check (a mismatch hashed once)."""
    from anybind.index import Index
    from anybind.space import Space

    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i in range(2):
        (media / f"t{i}.png").write_bytes(png_bytes(color=(40 * i, 90, 10)))
        rows.append({"id": f"t{i}", "split": "test", "image": str(media / f"t{i}.png"), "text": f"square {i}"})
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    space = Space.load(serve_small["space"])
    ix = Index.build(space, tmp_path / "a.jsonl", tmp_path / "index", cache=shared_cache)
    ix.table.drop_columns(["size"])  # as an index written before sizes were stored
    Index.open(tmp_path / "index", space).add(tmp_path / "b.jsonl", cache=shared_cache)
    ix = Index.open(tmp_path / "index", space)
    assert "size" not in ix.table.schema.names and len(ix) == 4
    s = Service.load(serve_small["space"], tmp_path / "index", cache=shared_cache,
                     config=ServeConfig(refresh_seconds=0), warm=False)
    try:
        with TestClient(create_app(service=s), raise_server_exceptions=False) as c:
            calls = _count_hashing(monkeypatch)
            assert c.get("/items/t1?modality=image").content == (media / "t1.png").read_bytes()
            (media / "t1.png").write_bytes(png_bytes(size=30))
            assert [c.get("/items/t1?modality=image").status_code for _ in range(3)] == [409] * 3
            assert len(calls) == 2
    finally:
        s.close()


def test_item_files_without_a_content_hash_are_checked_for_containment(tmp_path):
    """Rows whose key is no file hash (custom encoders): the folder check alone; and no hang on a FIFO."""
    import numpy as np
    import pyarrow as pa

    from anybind.serve.files import ItemFiles, NotFound, indexed_folders

    (tmp_path / "in").mkdir()
    inside, secret = tmp_path / "in" / "a.bin", tmp_path / "secret.bin"
    inside.write_bytes(b"data")
    secret.write_bytes(b"secret")
    files = ItemFiles()
    sources = pa.chunked_array([[str(inside), "some text"]])
    files.set_folders(indexed_folders(sources, np.array(["x", "text"], object), ["x"]))
    assert files.folders == {str(tmp_path / "in")}
    with files.open("a", "x", str(inside), "k:a") as f:
        assert os.read(f.fd, 10) == b"data"
    inside.unlink()
    inside.symlink_to(secret)
    with pytest.raises(NotFound, match="outside the folders"):
        files.open("a", "x", str(inside), None)
    inside.unlink()
    os.mkfifo(inside)
    t0 = time.perf_counter()
    with pytest.raises(NotFound, match="not a regular file|no longer a regular file"):
        files.open("a", "x", str(inside), None)
    assert time.perf_counter() - t0 < 2


def test_a_damaged_index_json_does_not_fail_requests(tiny, caplog):
    """index.json rewritten badly while the service runs: each request's refresh (every ``refresh_seconds``)
    raised the index's one-line refusal, answered as a 400 naming the server's index.json to the client -- one
    request per refresh period failing, for as long as the file stayed so.  The service keeps serving with the
    header it read before and warns in its log, once, naming the file."""
    c, svc = tiny["client"], tiny["svc"]
    meta_p = svc.index.path / "index.json"
    meta_p.write_text(json.dumps({**json.loads(meta_p.read_text()), "dim": "x"}))
    with caplog.at_level("WARNING", logger="anybind.serve.state"):
        codes = [c.get("/items/tiny?modality=image").status_code for _ in range(3)]
    assert codes == [200] * 3
    warned = [r.getMessage() for r in caplog.records if "index.json" in r.getMessage()]
    assert len(warned) == 1 and "dim is 'x'" in warned[0] and str(meta_p) in warned[0]

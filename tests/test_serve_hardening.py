"""Hardening of the service and the prompt templates (issue 14, items 7, 10 and 11).

7: prompt templates are checked before anything is filled (no format specs: ``{:>2000000000}``
allocated 2 GB), in the library, the CLI and the service.  10: ``/items`` and ``/thumbs`` serve a
stored file only inside the indexed folders and with the indexed content (E: the indexed size compared
first, verdicts remembered, so a swapped-in file is hashed at most once, a file of another size never).  11: ``NaN`` /
``Infinity`` and lone surrogates in JSON bodies get a 4xx, never a 500.
"""

from __future__ import annotations

import io
import json
import os
import time
import tracemalloc
from string import Formatter

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings, strategies as st
from PIL import Image

from anybind.data.templates import check_template, check_templates, fill_template
from anybind.errors import DataError
from anybind.serve import ServeConfig, Service, create_app
from serve_data import small_tux


@pytest.fixture(scope="module")
def data(tux_dir, shared_cache, tmp_path_factory):
    return small_tux(tux_dir, shared_cache, tmp_path_factory.mktemp("serve-small"))


@pytest.fixture(scope="module")
def svc(data, shared_cache):
    s = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(svc):
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as c:
        yield c


# ----------------------------------------------------------------------------- 7: prompt templates
BAD_TEMPLATES = [
    "{:>2000000000}",  # a 2 GB string if formatted
    "{:>100000000000}",  # MemoryError if formatted
    "{0:>50000000}",
    "a {!r}",
    "{0.__class__}",
    "{0[0]}",
    "{} and {1}",
    "{name}",
    "a { b",
    "no slot here",
]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_bad_templates_are_refused_by_the_library_before_any_work(template):
    with pytest.raises(DataError, match="template") as e:
        check_template(template)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    with pytest.raises(DataError, match="template"):
        fill_template(template, "dog")
    # every library entry point checks first: nothing is embedded (a None space is never touched)
    from anybind.evaluate import class_embeddings as eval_class_embeddings, zero_shot
    from anybind.index import class_embeddings

    with pytest.raises(DataError, match="template"):
        class_embeddings(None, ["dog"], ["a {}.", template])
    with pytest.raises(DataError, match="template"):
        eval_class_embeddings(None, ["dog"], [template])
    with pytest.raises(DataError, match="template"):
        zero_shot(None, [], "image", "category", templates=[template])


def test_good_templates_fill_like_str_format():
    assert fill_template("a photo of a {}.", "dog") == "a photo of a {}.".format("dog")
    assert fill_template("{{literal}} {0}", "dog") == "{literal} dog"
    assert fill_template("{label}, a kind of {label}", "dog") == "dog, a kind of dog"
    assert fill_template("a {:}", "x{}y") == "a x{}y"  # the name is never formatted
    assert check_templates(["a {}.", "the {label}"]) == ["a {}.", "the {label}"]
    with pytest.raises(DataError, match="no prompt templates"):
        check_templates([])


_GOOD = st.sampled_from(["{}", "{0}", "{label}", "{{", "}}", "{:}"])
_TEXT = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=8)
_BAD = st.one_of(
    st.sampled_from(["{", "}", "{!r}", "{0!s}", "{0[0]}", "{0.real}", "{1}", "{x}", "{:{}}"]),
    st.integers(0, 10**12).map(lambda n: "{:>%d}" % n),  # a format spec of any width
)
TEMPLATES = st.one_of(
    st.lists(st.one_of(_GOOD, _TEXT), max_size=6).map("".join),  # mostly fine
    st.lists(st.one_of(_GOOD, _TEXT, _BAD), max_size=6).map("".join),  # mostly refused
    st.text(alphabet=st.sampled_from(list("{}:!<>^=0123456789.[]rsalbe x_")), max_size=40),
)


@settings(max_examples=400, deadline=None, database=None)
@given(template=TEMPLATES, name=st.text(max_size=12))
def test_fill_either_refuses_cleanly_or_stays_small(template, name):
    """Random template strings: one clean DataError, or a string of bounded length, never a big allocation."""
    try:
        out = fill_template(template, name)
    except DataError as e:
        assert str(e).startswith("template ") and "\n" not in str(e)
        return
    assert len(out) <= len(template) * (1 + len(name))
    fields = [f for _, f, _, _ in Formatter().parse(template) if f is not None]
    if fields == [""] or set(fields) == {"0"}:  # what str.format also fills: the same text
        assert out == template.format(name)


def test_classify_refuses_format_specs_before_formatting(client):
    """/classify and /classify/upload: 400 naming the template, bounded memory, never a 500."""
    for t in ("{:>100000000000}", "{0:>50000000}", "{0}{0:>50000000}", "{0.__class__}", "{!r}"):
        tracemalloc.start()
        try:
            res = client.post("/classify", json={"text": "A frog.", "labels": ["frog"], "templates": [t]})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.status_code == 400, (t, res.status_code, res.text[:200])
        why = res.json()["detail"]
        assert why.startswith("template ") and ("format spec" in why or "placeholder {" in why), why
        assert peak < 20e6, (t, peak)
    res = client.post(
        "/classify/upload",
        files={"files": ("i.png", _png())},
        data={"labels": ["frog", "car"], "templates": ["{:>100000000000}"]},
    )
    assert res.status_code == 400 and "format spec" in res.json()["detail"]
    body = {"text": "A frog.", "labels": ["frog", "car"], "templates": ["a {label}."]}
    ok = client.post("/classify", json=body)
    assert ok.status_code == 200 and ok.json()["results"][0]["label"] == "frog"


def test_cli_refuses_a_bad_template_before_any_work(data):
    from typer.testing import CliRunner

    from anybind.cli import app

    t0 = time.perf_counter()
    res = CliRunner().invoke(
        app,
        ["eval", str(data["space"]), str(data["manifest"]), "--zero-shot", "category",
         "--template", "{:>100000000000}", "--no-diagnostics"],
    )
    assert res.exit_code == 2, res.output
    assert "error: template '{:>100000000000}'" in res.output and "Traceback" not in res.output
    assert time.perf_counter() - t0 < 10


# ----------------------------------------------------------------------------- 10: stored item files
def _png(color=(200, 120, 40), size=24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def tiny(data, shared_cache, tmp_path):
    """An index of one record whose image is a tiny PNG in its own folder, and a client serving it."""
    from anybind.index import Index
    from anybind.space import Space

    media = tmp_path / "media"
    media.mkdir()
    img = media / "tiny.png"
    img.write_bytes(_png())
    man = tmp_path / "m.jsonl"
    row = {"id": "tiny", "split": "test", "image": str(img), "text": "a tiny square"}
    man.write_text(json.dumps(row) + "\n")
    Index.build(Space.load(data["space"]), man, tmp_path / "index", cache=shared_cache)
    cfg = ServeConfig(refresh_seconds=0)
    s = Service.load(data["space"], tmp_path / "index", cache=shared_cache, config=cfg, warm=False)
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
    new = _png(color=(10, 200, 90), size=40)
    img.write_bytes(new)
    for url in ("/items/tiny?modality=image", "/thumbs/tiny?size=16"):
        res = c.get(url)
        assert res.status_code == 409, (url, res.status_code)
        assert "changed since it was indexed" in res.json()["detail"] and new not in res.content
    # the same size and mtime as the indexed file: the content is still checked (ctime changed)
    old = _png()
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


def test_an_index_without_sizes_is_still_written_and_served(data, shared_cache, tmp_path, monkeypatch):
    """E: an index written before the size column keeps its schema when added to, and its files are served
    with the hash check (a mismatch hashed once)."""
    from anybind.index import Index
    from anybind.space import Space

    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i in range(2):
        (media / f"t{i}.png").write_bytes(_png(color=(40 * i, 90, 10)))
        rows.append({"id": f"t{i}", "split": "test", "image": str(media / f"t{i}.png"), "text": f"square {i}"})
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    space = Space.load(data["space"])
    ix = Index.build(space, tmp_path / "a.jsonl", tmp_path / "index", cache=shared_cache)
    ix.table.drop_columns(["size"])  # as an index written before sizes were stored
    Index.open(tmp_path / "index", space).add(tmp_path / "b.jsonl", cache=shared_cache)
    ix = Index.open(tmp_path / "index", space)
    assert "size" not in ix.table.schema.names and len(ix) == 4
    s = Service.load(data["space"], tmp_path / "index", cache=shared_cache,
                     config=ServeConfig(refresh_seconds=0), warm=False)
    try:
        with TestClient(create_app(service=s), raise_server_exceptions=False) as c:
            calls = _count_hashing(monkeypatch)
            assert c.get("/items/t1?modality=image").content == (media / "t1.png").read_bytes()
            (media / "t1.png").write_bytes(_png(size=30))
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


# ----------------------------------------------------------------------------- 11: NaN, Infinity, surrogates
GENERIC_BODIES = [
    b"NaN",
    b"[Infinity]",
    b"-Infinity",
    b'{"\\ud800": 1}',
    b'"\\udfff"',
    b'{"text": "\xff\xfe"}',  # not UTF-8 at all
]
ROUTE_BODIES = {
    "/embed": [
        b'{"texts": [NaN]}',
        b'{"texts": ["a dog"], "modality": Infinity}',
        b'{"texts": ["a \\ud800 dog"]}',
        b'{"texts": ["a dog"], "modality": "\\udc00"}',
    ],
    "/search": [
        b'{"text": "a dog", "k": NaN}',
        b'{"inputs": [{"text": "a dog", "weight": NaN}]}',
        b'{"inputs": [{"text": "a dog", "weight": Infinity}]}',
        b'{"inputs": [{"text": "a dog", "weight": -Infinity}]}',
        b'{"text": "\\ud800"}',
        b'{"text": "a dog", "labels": {"\\ud800": "x"}}',
        b'{"text": "a dog", "modality": ["image", "\\ud834"]}',
        b'{"text": "a dog", "k": 1e400}',
    ],
    "/classify": [
        b'{"text": "a frog", "labels": ["frog", NaN]}',
        b'{"inputs": [{"text": "a frog", "weight": Infinity}], "labels": ["frog"]}',
        b'{"text": "a frog", "labels": ["\\ud800"]}',
        b'{"text": "a frog", "labels": ["frog"], "templates": ["\\udfff {}"]}',
        b'{"text": "a \\udbff frog", "labels": ["frog", "car"]}',
    ],
}
CASES = [(route, body) for route, bodies in ROUTE_BODIES.items() for body in bodies + GENERIC_BODIES]


@pytest.mark.parametrize("route, body", CASES)
def test_non_finite_numbers_and_lone_surrogates_get_a_4xx(client, route, body):
    res = client.post(route, content=body, headers={"content-type": "application/json"})
    assert 400 <= res.status_code < 500, (res.status_code, res.text[:300])
    detail = res.json()["detail"]  # a JSON error body, strict JSON (no NaN) and valid UTF-8
    assert detail
    json.loads(res.content.decode("utf-8"), parse_constant=lambda c: pytest.fail(f"{c} in the answer"))


def test_upload_routes_refuse_non_finite_weights(client):
    for w in ("nan", "inf", "-Infinity"):
        res = client.post("/search/upload", files={"files": ("i.png", _png())}, data={"weights": [w]})
        assert res.status_code in (400, 422) and "finite" in res.text, (w, res.status_code, res.text[:200])


def test_classify_upload_form_fields_get_the_json_routes_caps(client):
    """Form fields bypass the JSON schema: a 40 KB form once built a 200 MB prompt (H12). Same caps, 400."""
    for data, why in (
        ({"labels": ["y" * 20000], "templates": ["{}"]}, "label of 20000 characters"),
        ({"labels": ["frog"], "templates": ["{}" * 5000]}, "template of 10000 characters"),
        ({"labels": ["frog"], "text": ["t" * 5000]}, "text query of 5000 characters"),
    ):
        tracemalloc.start()
        try:
            res = client.post("/classify/upload", files={"files": ("i.png", _png())}, data=data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.status_code == 400 and why in res.json()["detail"], (res.status_code, res.text[:200])
        assert peak < 50e6, peak


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

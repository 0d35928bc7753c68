"""What one request's *errors* may cost the service: a schema violation is answered with a bounded 422 (at most
:data:`~anybind.serve.errors.MAX_LISTED_ERRORS` errors listed, each echoed input bounded), however many errors a
body holds -- a 1 MiB JSON body of unknown keys was a 10 MiB answer that took a worker over a minute to write."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st
from media_helpers import served

from anybind.serve import ServeConfig
from anybind.serve.errors import MAX_LISTED_ERRORS


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with served(tmp_path_factory.mktemp("bounds"), raise_server_exceptions=False) as c:
        yield c


def _post(client, route, body):
    return client.post(route, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("route, body, errors", [
    ("/embed", {"texts": [1] * 60}, 60),  # one error per item
    ("/search", {"text": "a", "x" * 300_000: 1}, 1),  # an unknown key: echoed in the error's location
    ("/embed", {"texts": ["abc" * 30] * 3000}, 1),  # a list over its cap: its 3,000 items were echoed back
    ("/search", {"text": "x" * 300_000}, 1),  # a string over its cap: echoed back whole
    ("/classify", {"text": "a", "labels": [{"x": [1] * 50}] * 200}, 200),
])
def test_a_schema_violation_gets_a_bounded_422(client, route, body, errors):
    res = _post(client, route, body)
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert len(res.content) < 8_000 + 400 * MAX_LISTED_ERRORS, len(res.content)
    listed = min(errors, MAX_LISTED_ERRORS)
    assert len(detail) == listed + (errors > listed)
    if errors > listed:
        assert detail[-1] == {"type": "too_many_errors", "loc": ["body"], "msg":
                              f"{errors - listed} more errors not listed (at most {MAX_LISTED_ERRORS} are)"}


def test_a_small_422_is_unchanged(client):
    """An error of a small input keeps FastAPI's form, its input echoed as it was."""
    res = _post(client, "/search", {"text": "a", "k": 10**9, "kk": [1, 2]})
    assert res.status_code == 422
    detail = res.json()["detail"]
    assert [(d["type"], d["loc"], d["input"]) for d in detail] == [
        ("less_than_equal", ["body", "k"], 10**9), ("extra_forbidden", ["body", "kk"], [1, 2])]


def test_a_json_body_over_its_cap_gets_a_413_before_it_is_parsed(client):
    """A JSON body may be as large as an upload (10 MiB) was: 9 MiB of unknown keys took a worker a minute and
    920 MiB to refuse.  JSON bodies have their own cap (ServeConfig.max_json_bytes, 2 MiB: the largest request the
    schemas allow, every character escaped, is 1.5 MB); uploads keep theirs."""
    cap = ServeConfig().max_json_bytes
    res = _post(client, "/search", {"text": "a" * cap})
    assert res.status_code == 413 and res.json()["detail"] == (
        f"request body over the JSON cap of {cap} bytes (2.0 MiB; anybind serve --max-json-bytes, "
        "ServeConfig.max_json_bytes)")
    big = {"texts": ["\U0001f600" * 2000] * 64}  # the largest /embed body: 64 texts of 2,000 characters
    assert 1_400_000 < len(json.dumps(big)) < cap
    assert _post(client, "/embed", big).status_code != 413
    res = client.post("/embed/upload", files={"files": ("a.png", b"\0" * (cap + 10))})  # an upload: its own cap
    assert res.status_code == 415 and "a.png" in res.json()["detail"], res.text  # read, not capped


def test_many_unknown_fields_are_one_error_found_in_one_pass(client):
    """Unknown fields were one schema error each, made and listed one by one (1.8 MiB of them, under the JSON cap,
    took 6.9 s and 180 MiB): more than a few are one error naming how many and the fields the request takes; a few
    keep pydantic's error each."""
    res = _post(client, "/search", {"text": "a", **{f"k{i}": 1 for i in range(50_000)}, "x" * 10_000: 2})
    assert res.status_code == 422
    (err,) = res.json()["detail"]
    assert err["loc"] == ["body"] and err["msg"] == (
        "Value error, 50001 unknown fields ('k0', 'k1', 'k2', ...): this request takes text, inputs, k, modality, "
        "labels, rerank, rank_by, vector")
    res = _post(client, "/classify", {"labels": ["a"], "x" * 10_000: 1, "y": 2, "z": 3, "w": 4, "v": 5})
    assert res.status_code == 422 and len(res.content) < 3000
    assert "5 unknown fields ('xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...', 'y', 'z', ...)" in res.json()["detail"][0]["msg"]


def test_the_json_cap_holds_for_a_body_sent_in_chunks(client):
    """No Content-Length (chunked transfer encoding): the body is counted as it streams in."""
    cap = ServeConfig().max_json_bytes
    body = json.dumps({"text": "a" * cap}).encode()
    res = client.post("/search", content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
                      headers={"content-type": "application/json"})
    assert res.status_code == 413 and "ServeConfig.max_json_bytes" in res.json()["detail"], res.text


def test_a_second_content_type_does_not_lift_the_json_cap(client):
    """The app reads a body by its first Content-Type: a JSON body that also declares itself a multipart upload in a
    second header is still held to the JSON cap (it was held to the upload cap, 5x larger, and parsed)."""
    cap = ServeConfig().max_json_bytes
    body = json.dumps({"text": "a" * cap}).encode()
    res = client.post("/search", content=body, headers=[("content-type", "application/json"),
                                                        ("content-type", "multipart/form-data; boundary=x")])
    assert res.status_code == 413 and "ServeConfig.max_json_bytes" in res.json()["detail"], res.text


@pytest.mark.parametrize("field", ["max_json_bytes", "max_upload_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_a_byte_cap_that_is_not_a_positive_whole_number_is_refused(field, value):
    """A cap of 0 or less answered every body (even an empty one, for a negative cap) with 413 "over the cap of -1
    bytes"; one line naming the field instead, when the config is made."""
    from anybind.errors import AnybindError

    with pytest.raises(AnybindError, match=rf"^anybind serve --max-[a-z-]+, ServeConfig\.{field} must be a whole "
                                           rf"number of bytes >= 1, "
                                           rf"got {value!r}"):
        ServeConfig(**{field: value})


def test_health_tells_the_json_cap(client):
    """A client learns the cap its JSON bodies are held to as it learns the upload cap: from /health."""
    limits = client.get("/health").json()["limits"]
    assert limits["max_json_bytes"] == ServeConfig().max_json_bytes
    assert limits["max_upload_bytes"] == ServeConfig().max_upload_bytes


def test_a_lone_surrogate_under_a_long_key_gets_a_bounded_422(client):
    """The error names where the lone surrogate is by the keys leading to it, each cut as a location's is (a 1 MB key
    was echoed whole, twice: in the message and in its context)."""
    res = _post(client, "/search", {"text": "a", "x" * 1_000_000: {"y": "\ud800"}})
    assert res.status_code == 422 and len(res.content) < 3000, len(res.content)
    (err,) = res.json()["detail"]
    assert err["msg"].startswith("Value error, body.xxx") and err["msg"].endswith(
        "....y: a lone UTF-16 surrogate escape (\\udXXX) is not valid Unicode text"), err["msg"][-200:]


def test_the_cli_refuses_an_upload_cap_under_one_byte_in_one_line(tmp_path):
    """`anybind serve --max-upload-mb 0` is refused before anything is loaded, one line naming the limit."""
    from typer.testing import CliRunner

    from anybind.cli import app as cli

    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"),
                                 "--max-upload-mb", "0"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert ("anybind serve --max-upload-mb, ServeConfig.max_upload_bytes must be a whole number of bytes >= 1, "
            "got 0") in r.stderr
    assert "nospace" not in r.stderr  # refused before the space is looked for


@pytest.mark.parametrize("value, ok", [("0", False), ("-5", False), ("1.5", False), ("4096", True)])
def test_the_cli_sets_the_json_cap_and_refuses_one_under_one_byte(tmp_path, monkeypatch, value, ok):
    """`anybind serve --max-json-bytes N` sets ServeConfig.max_json_bytes (it had no flag: 2 MiB always); a cap that
    cannot be one is refused in one line before anything is loaded."""
    from typer.testing import CliRunner

    from anybind.cli import app as cli
    from anybind.errors import AnybindError
    from anybind.serve import Service

    seen = []

    def load(cls, space_dir, index_dir, *, config, **kw):
        seen.append(config)
        raise AnybindError("stopped by the test before loading")

    monkeypatch.setattr(Service, "load", classmethod(load))
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"),
                                 "--max-json-bytes", value])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    if ok:
        assert [c.max_json_bytes for c in seen] == [int(value)], r.output
        assert "stopped by the test before loading" in r.stderr
    else:
        assert not seen and "nospace" not in r.stderr and "No such option" not in r.output, r.output
        if value != "1.5":  # a number of bytes that is no limit: ServeConfig's one line
            assert (f"anybind serve --max-json-bytes, ServeConfig.max_json_bytes must be a whole number of bytes "
                    f">= 1, got {value}") in r.stderr
        else:  # not a whole number: click's usage error, naming the flag
            assert "--max-json-bytes" in r.output


@pytest.mark.parametrize("route", ["/search", "/classify", "/embed"])
@pytest.mark.parametrize("depth", [100, 100_000])
def test_a_deeply_nested_json_body_is_refused_in_one_line_saying_so(client, route, depth):
    """A hostile body of nested arrays (100,000 levels: 200 KB, well under the JSON cap) got FastAPI's generic 400
    "There was an error parsing the body"; one nested 100 levels was parsed and walked.  Now one line in the usual
    shape saying the body nests too deep and what the limit is, before it is parsed."""
    from anybind.serve.schemas import MAX_JSON_DEPTH

    body = b'{"text": "a", "labels": ' + b"[" * depth + b"]" * depth + b"}"
    res = client.post(route, content=body, headers={"content-type": "application/json"})
    assert res.status_code == 400, res.text
    detail = res.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) < 300, detail
    assert f"JSON body nested {depth + 1} levels deep: arrays and objects may nest at most {MAX_JSON_DEPTH}" in detail
    # a string holding brackets is no nesting, nor are escaped quotes; a legal body still works
    ok = _post(client, "/search", {"text": '["{' * 50 + '\\"', "k": 1})
    assert ok.status_code == 200, ok.text


def _depth(x):
    if isinstance(x, dict):
        return 1 + max(map(_depth, x.values()), default=0)
    if isinstance(x, list):
        return 1 + max(map(_depth, x), default=0)
    return 0


_text = st.text(alphabet='[]{}"\\\\ab\u00e9', max_size=6)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.integers() | _text, lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(_text, c, max_size=3), max_leaves=60), st.integers(0, 40), st.booleans())
def test_json_depth_is_the_nesting_outside_strings(value, wrap, ascii_only):
    """Brackets, quotes and backslashes inside strings (and keys) never count; a body is refused exactly when it
    nests deeper than the bound."""
    from anybind.serve.middleware import json_depth
    from anybind.serve.schemas import MAX_JSON_DEPTH

    for _ in range(wrap):
        value = [value]
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    got, want = json_depth(body), _depth(value)
    assert (got > MAX_JSON_DEPTH) == (want > MAX_JSON_DEPTH)
    assert got == want or (got >= want and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
@pytest.mark.parametrize("depth", [100, 100_000])
def test_the_depth_bound_holds_for_a_body_in_utf16_or_utf32(client, encoding, depth):
    """The parser (json.loads) reads UTF-16 and UTF-32 bodies (found by their BOM or zero bytes); the depth counter
    read their bytes as UTF-8, where an escaped quote's backslash and quote are not adjacent bytes: each escaped
    quote flipped what counted as inside a string, so a nested body passed the bound (100 levels walked into a 422,
    100,000 into the parser's bare 'error parsing the body') and a legal one with brackets in a string got a 400."""
    from anybind.serve.schemas import MAX_JSON_DEPTH

    text = '{"text": "a \\" b", "labels": ' + "[" * depth + "]" * depth + "}"
    res = client.post("/classify", content=text.encode(encoding), headers={"content-type": "application/json"})
    assert res.status_code == 400, res.text
    assert res.json()["detail"] == (f"JSON body nested {depth + 1} levels deep: arrays and objects may nest at most "
                                    f"{MAX_JSON_DEPTH}")
    ok = json.dumps({"text": '["{' * 50 + '\\"', "k": 1}).encode(encoding)
    res = client.post("/search", content=ok, headers={"content-type": "application/json"})
    assert res.status_code == 200, res.text


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_not_told_it_nests_too_deep(client, ctype):
    """The app parses a body as JSON only when it says it is JSON (or says nothing): another body full of brackets
    was answered 'JSON body nested N levels deep', which it is not; it gets the app's own answer."""
    res = client.post("/search", content=b"[" * 100 + b"]" * 100, headers={"content-type": ctype})
    assert res.status_code == 422 and "nested" not in res.text, res.text
    res = client.post("/search", content=b"[" * 100 + b"]" * 100)  # no Content-Type: parsed as JSON, so bounded
    assert res.status_code == 400 and "JSON body nested 100 levels deep" in res.json()["detail"], res.text

"""Hardening of the service and the prompt templates (issue 14, items 7 and 11; item 10 is test_serve_item_files.py).

7: prompt templates are checked before anything is filled (no format specs: ``{:>2000000000}``
allocated 2 GB), in the library, the CLI and the service.  11: ``NaN`` / ``Infinity`` and lone surrogates in
JSON bodies get a 4xx, never a 500.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from string import Formatter

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings, strategies as st

from anybind.data.templates import check_template, check_templates, fill_template
from anybind.errors import DataError
from anybind.serve import ServeConfig, Service, create_app
from serve_data import png_bytes


@pytest.fixture(scope="module")
def svc(serve_small, shared_cache):
    s = Service.load(serve_small["space"], serve_small["index"], cache=shared_cache, config=ServeConfig())
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
        files={"files": ("i.png", png_bytes())},
        data={"labels": ["frog", "car"], "templates": ["{:>100000000000}"]},
    )
    assert res.status_code == 400 and "format spec" in res.json()["detail"]
    body = {"text": "A frog.", "labels": ["frog", "car"], "templates": ["a {label}."]}
    ok = client.post("/classify", json=body)
    assert ok.status_code == 200 and ok.json()["results"][0]["label"] == "frog"


def test_cli_refuses_a_bad_template_before_any_work(serve_small):
    from typer.testing import CliRunner

    from anybind.cli import app

    t0 = time.perf_counter()
    res = CliRunner().invoke(
        app,
        ["eval", str(serve_small["space"]), str(serve_small["manifest"]), "--zero-shot", "category",
         "--template", "{:>100000000000}", "--no-diagnostics"],
    )
    assert res.exit_code == 2, res.output
    assert "error: template '{:>100000000000}'" in res.output and "Traceback" not in res.output
    assert time.perf_counter() - t0 < 10


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
        res = client.post("/search/upload", files={"files": ("i.png", png_bytes())}, data={"weights": [w]})
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
            res = client.post("/classify/upload", files={"files": ("i.png", png_bytes())}, data=data)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert res.status_code == 400 and why in res.json()["detail"], (res.status_code, res.text[:200])
        assert peak < 50e6, peak

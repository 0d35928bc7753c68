"""The service's OpenAPI schema only grows: nothing in the committed baseline (tests/fixtures/openapi.json) is
removed, and no request field becomes required.  After an intended addition refresh the baseline with
``python tests/openapi_baseline.py`` (see tests/openapi_baseline.py)."""

from __future__ import annotations

import copy
import json

import pytest

from openapi_baseline import BASELINE, current_schema, removals

pytest.importorskip("fastapi", reason="the service is the serve extra: pip install 'anybind[serve]'")


@pytest.fixture(scope="module")
def baseline():
    return json.loads(BASELINE.read_text())


def test_the_schema_only_adds_to_its_baseline(baseline):
    gone = removals(baseline, current_schema())
    assert not gone, ("the service's OpenAPI schema removes what clients may use:\n  " + "\n  ".join(gone)
                      + "\n(an intended breaking change: python tests/openapi_baseline.py --allow-removals)")


def _op(s, path, method="post"):
    return s["paths"][path][method]


def _schemas(s):
    return s["components"]["schemas"]


def _edit(s, fn):
    s = copy.deepcopy(s)
    fn(s)
    return s


REMOVALS = {  # an edit of the baseline -> what removals() must say
    "path": (lambda s: s["paths"].pop("/search"), "path /search removed"),
    "method": (lambda s: s["paths"]["/health"].pop("get"), "GET /health removed"),
    "response": (lambda s: _op(s, "/search")["responses"].pop("200"), "POST /search: response 200 removed"),
    "media-type": (lambda s: _op(s, "/search")["requestBody"]["content"].pop("application/json"),
                   "POST /search: request body application/json removed"),
    "schema": (lambda s: _schemas(s).pop("SearchRequest"), "schema SearchRequest removed"),
    "property": (lambda s: _schemas(s)["SearchRequest"]["properties"].pop("k"),
                 "schema SearchRequest: property k removed"),
    "response-property": (lambda s: _schemas(s)["HealthOut"]["properties"].pop("status"),
                          "schema HealthOut: property status removed"),
    "required": (lambda s: _schemas(s)["SearchRequest"].setdefault("required", []).append("k"),
                 "schema SearchRequest: property k became required (a request model)"),
    "required-nested": (lambda s: _schemas(s)["QueryInput"].setdefault("required", []).append("weight"),
                        "schema QueryInput: property weight became required (a request model)"),
    "parameter": (lambda s: _op(s, "/thumbs/{item_id}", "get")["parameters"].pop(0),
                  "GET /thumbs/{item_id}: path parameter item_id removed"),
}


@pytest.mark.parametrize("case", sorted(REMOVALS))
def test_the_check_sees_each_kind_of_removal(baseline, case):
    """Each edit, made to a copy of the baseline as if a change had made it, is reported (and only it)."""
    edit, said = REMOVALS[case]
    assert removals(baseline, baseline) == []
    if case == "required-nested":
        assert "weight" in _schemas(baseline)["QueryInput"]["properties"]
    assert removals(baseline, _edit(baseline, edit)) == [said]


def test_additions_are_allowed(baseline):
    def add(s):
        s["paths"]["/new"] = {"get": {"responses": {"200": {"description": "ok"}}}}
        _schemas(s)["SearchRequest"]["properties"]["new_option"] = {"type": "integer", "default": 1}
        _op(s, "/search")["responses"]["418"] = {"description": "a teapot"}
        _schemas(s)["Brand"] = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
        health = _schemas(s)["HealthOut"]
        optional = sorted(set(health["properties"]) - set(health.get("required", [])))
        assert optional
        health.setdefault("required", []).append(optional[0])  # a response field now always sent: fine
    assert removals(baseline, _edit(baseline, add)) == []

"""The service's OpenAPI schema against its committed baseline (``tests/fixtures/openapi.json``): additions are
allowed, removals are not (tests/test_openapi_baseline.py).

A removal is what breaks a client written against the baseline: a path, a method, a response status or media
type, a parameter or a component schema gone; a property gone from a schema; a parameter, a request body or a
property of a request model (any schema a request body or parameter reaches) that became required.

After an intended addition, refresh the baseline with one command (from the repository root)::

    python tests/openapi_baseline.py            # (or `make openapi-baseline`)

It refuses to write a baseline that removes anything (printing what); ``--allow-removals`` writes it anyway,
for a deliberate breaking change (say so in the commit).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BASELINE = Path(__file__).parent / "fixtures" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def current_schema() -> dict[str, Any]:
    """The schema of the fullest app: every route, the caption routes included (which a captioner adds).

    No space, index or captioner is loaded: the app loads its service at start-up, and the caption routes read
    their captioner only when a request comes, so an unloaded one stands in for it here."""
    from anybind.caption import Captioner
    from anybind.serve.app import create_app

    schema = create_app(index_dir="unused", captioner=Captioner.__new__(Captioner)).openapi()
    schema = json.loads(json.dumps(schema))  # plain JSON types, as the baseline file holds
    schema.get("info", {}).pop("version", None)  # the package version: not part of the API
    return schema


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _refs(node: Any) -> set[str]:
    """The component schema names ``node`` refers to directly (anywhere inside it)."""
    if isinstance(node, dict):
        own = {_ref_name(node["$ref"])} if isinstance(node.get("$ref"), str) else set()
        return own.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _request_models(schema: dict[str, Any]) -> set[str]:
    """The component schemas a request body or a parameter reaches (transitively)."""
    comps = schema.get("components", {}).get("schemas", {})
    todo = set()
    for item in schema.get("paths", {}).values():
        for method, op in item.items():
            if method in METHODS:
                todo |= _refs(op.get("requestBody", {})) | _refs(op.get("parameters", []))
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen and name in comps:
            seen.add(name)
            todo |= _refs(comps[name])
    return seen


def _props(s: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    return s.get("properties", {}), set(s.get("required", []))


def removals(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What ``new`` removes from ``old`` (see the module's doc), one line each; ``[]`` when it only adds."""
    out: list[str] = []
    for path, item in old.get("paths", {}).items():
        if path not in new.get("paths", {}):
            out.append(f"path {path} removed")
            continue
        for method, op in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            nop = new["paths"][path].get(method)
            if nop is None:
                out.append(f"{where} removed")
                continue
            for code, resp in op.get("responses", {}).items():
                nresp = nop.get("responses", {}).get(code)
                if nresp is None:
                    out.append(f"{where}: response {code} removed")
                    continue
                out += [f"{where}: response {code} {mt} removed"
                        for mt in resp.get("content", {}) if mt not in nresp.get("content", {})]
            nparams = {(p["name"], p["in"]): p for p in nop.get("parameters", [])}
            for p in op.get("parameters", []):
                np_ = nparams.get((p["name"], p["in"]))
                if np_ is None:
                    out.append(f"{where}: {p['in']} parameter {p['name']} removed")
                elif np_.get("required") and not p.get("required"):
                    out.append(f"{where}: {p['in']} parameter {p['name']} became required")
            nparams_new = [k for k, p in nparams.items() if p.get("required")
                           and k not in {(q["name"], q["in"]) for q in op.get("parameters", [])}]
            out += [f"{where}: new {kind} parameter {name} is required" for name, kind in nparams_new]
            body, nbody = op.get("requestBody"), nop.get("requestBody")
            if body is not None:
                if nbody is None:
                    out.append(f"{where}: request body removed")
                else:
                    out += [f"{where}: request body {mt} removed"
                            for mt in body.get("content", {}) if mt not in nbody.get("content", {})]
            if nbody is not None and nbody.get("required") and not (body or {}).get("required"):
                out.append(f"{where}: request body became required")
    comps, ncomps = old.get("components", {}).get("schemas", {}), new.get("components", {}).get("schemas", {})
    requests = _request_models(new)
    for name, s in comps.items():
        if name not in ncomps:
            out.append(f"schema {name} removed")
            continue
        (props, req), (nprops, nreq) = _props(s), _props(ncomps[name])
        out += [f"schema {name}: property {p} removed" for p in props if p not in nprops]
        if name in requests:
            out += [f"schema {name}: property {p} became required (a request model)" for p in sorted(nreq - req)]
    return out


def main(argv: list[str]) -> int:
    allow = "--allow-removals" in argv
    new = current_schema()
    if BASELINE.exists():
        gone = removals(json.loads(BASELINE.read_text()), new)
        if gone and not allow:
            print("the schema removes what the baseline has (pass --allow-removals to write it anyway):",
                  *gone, sep="\n  ", file=sys.stderr)
            return 1
    BASELINE.parent.mkdir(parents=True, exist_ok=True)
    BASELINE.write_text(json.dumps(new, indent=1, sort_keys=True) + "\n")
    print(f"wrote {BASELINE} ({len(new.get('paths', {}))} paths, "
          f"{len(new.get('components', {}).get('schemas', {}))} schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

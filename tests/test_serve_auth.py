"""Access control of the service (issue 21): API keys (hashed), Bearer checks, scopes, rate limits,
CORS closed by default, and the refusal to bind a non-loopback address without keys."""

from __future__ import annotations

import hmac
import json

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from anybind.cli import app as cli
from anybind.serve import ServeConfig, Service, create_app
from anybind.serve import auth
from anybind.serve.auth import AuthConfigError, KeyStore, add_key, check_bind, hash_key, read_keys, revoke_key


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def toy_app(store: KeyStore) -> FastAPI:
    """A tiny app behind the same middleware: a read route, a write route and /health."""
    from anybind.serve.auth import ApiKeyAuth

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True}

    @app.post("/search")
    def search():
        return {"hits": []}

    @app.post("/admin/reindex")
    def reindex():
        return {"done": True}

    app.add_middleware(ApiKeyAuth, store=store)
    return app


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyfile(tmp_path):
    f = tmp_path / "keys.json"
    keys = {"reader": add_key(f, "reader"), "writer": add_key(f, "writer", scope="write"),
            "slow": add_key(f, "slow", rate_per_minute=2)}
    return f, keys


def test_the_file_holds_hashes_only_and_is_private(keyfile):
    f, keys = keyfile
    text = f.read_text()
    for k in keys.values():
        assert k.startswith("ab_") and len(k) > 40
        assert k not in text and hash_key(k) in text
    assert f.stat().st_mode & 0o077 == 0
    assert [k.name for k in read_keys(f)] == ["reader", "writer", "slow"]


def test_missing_wrong_and_revoked_keys_get_401_health_stays_open(keyfile):
    f, keys = keyfile
    store = KeyStore(f, reload_seconds=0)
    with TestClient(toy_app(store)) as c:
        assert c.get("/health").status_code == 200
        r = c.post("/search")
        assert r.status_code == 401 and "Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert c.post("/search", headers={"Authorization": f"Basic {keys['reader']}"}).status_code == 401
        assert c.post("/search", headers=bearer(keys["reader"] + "x")).json()["detail"] == "unknown API key"
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 200
        revoke_key(f, "reader")  # live: the running service re-reads the file
        r = c.post("/search", headers=bearer(keys["reader"]))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        assert c.post("/search", headers=bearer(keys["writer"])).status_code == 200


def test_a_broken_key_file_closes_the_service(keyfile):
    f, keys = keyfile
    store = KeyStore(f, reload_seconds=0)
    with TestClient(toy_app(store)) as c:
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 200
        f.write_text("{not json")
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 401
        f.unlink()
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 401


def test_read_only_key_on_a_write_route_gets_403(keyfile, monkeypatch):
    f, keys = keyfile
    monkeypatch.setattr(auth, "WRITE_ROUTES", (("POST", "/admin/"),))
    with TestClient(toy_app(KeyStore(f))) as c:
        r = c.post("/admin/reindex", headers=bearer(keys["reader"]))
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert c.post("/admin/reindex", headers=bearer(keys["writer"])).status_code == 200
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 200


def test_rate_limit_gives_429_with_retry_after_per_key(keyfile):
    f, keys = keyfile
    clock = Clock()
    store = KeyStore(f, clock=clock)
    with TestClient(toy_app(store)) as c:
        for _ in range(2):  # burst = the rate: 2 at once
            assert c.post("/search", headers=bearer(keys["slow"])).status_code == 200
        r = c.post("/search", headers=bearer(keys["slow"]))
        assert r.status_code == 429
        assert r.headers["retry-after"] == "30"  # 2/min: the next token in 30 s
        assert c.post("/search", headers=bearer(keys["reader"])).status_code == 200  # other keys unaffected
        clock.t += 29.0
        assert c.post("/search", headers=bearer(keys["slow"])).headers["retry-after"] == "1"
        clock.t += 1.0
        assert c.post("/search", headers=bearer(keys["slow"])).status_code == 200


def test_every_stored_hash_is_compared_in_constant_time(keyfile, monkeypatch):
    """The match neither stops at the first hit nor compares with ==: hmac.compare_digest on every entry."""
    f, keys = keyfile
    store = KeyStore(f)
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert store.check(f"Bearer {keys['reader']}", "POST", "/search").status == 0  # the first entry
    assert len(calls) == 3
    calls.clear()
    assert store.check("Bearer nope", "POST", "/search").status == 401
    assert len(calls) == 3


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=80).filter(lambda s: s.strip() == s and " " not in s))
def test_no_made_up_token_is_accepted(tmp_path_factory, token):
    f = tmp_path_factory.mktemp("k") / "keys.json"
    key = add_key(f, "a")
    store = KeyStore(f)
    assert store.check(f"Bearer {token}", "POST", "/search").status == (0 if token == key else 401)
    assert store.check(f"Bearer {key}", "POST", "/search").status == 0


def test_bad_key_files_are_named(tmp_path):
    f = tmp_path / "k.json"
    with pytest.raises(AuthConfigError, match="no such key file"):
        KeyStore(f)
    f.write_text(json.dumps({"format": "anybind.api-keys", "keys": [{"name": "a", "sha256": "xyz"}]}))
    with pytest.raises(AuthConfigError, match=r"key 0 \('a'\): 'sha256'"):
        read_keys(f)
    add_key(tmp_path / "ok.json", "a")
    with pytest.raises(AuthConfigError, match="already there"):
        add_key(tmp_path / "ok.json", "a")
    with pytest.raises(AuthConfigError, match="scope 'admin'"):
        add_key(tmp_path / "ok.json", "b", scope="admin")


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
                                     ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
                                     ("example.org", False)])
def test_non_local_bind_without_keys_is_refused(host, ok, tmp_path):
    if ok:
        check_bind(host, None)
    else:
        with pytest.raises(AuthConfigError, match="--api-keys"):
            check_bind(host, None)
        check_bind(host, None, insecure=True)
        check_bind(host, tmp_path / "keys.json")


def test_cli_refuses_before_loading_anything(tmp_path):
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"),
                                 "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--api-keys" in r.stderr and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"),
                                 "--host", "0.0.0.0", "--insecure"])
    assert r.exit_code == 2 and "--api-keys" not in r.stderr  # it went on: the space is missing


def test_cli_keys_add_list_revoke(tmp_path):
    f = tmp_path / "keys.json"
    r = CliRunner().invoke(cli, ["keys", "add", str(f), "web", "--rate", "60"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert KeyStore(f).check(f"Bearer {key}", "GET", "/items/x").status == 0
    r = CliRunner().invoke(cli, ["keys", "list", str(f)])
    assert r.stdout.split()[:4] == ["web", "read", "60/min", "active"] and key not in r.stdout
    assert CliRunner().invoke(cli, ["keys", "revoke", str(f), "web"]).exit_code == 0
    assert KeyStore(f).check(f"Bearer {key}", "GET", "/items/x").status == 401
    r = CliRunner().invoke(cli, ["keys", "revoke", str(f), "nobody"])
    assert r.exit_code == 2 and "no key named 'nobody'" in r.stderr


# ----------------------------------------------------------------------------- the real service
@pytest.fixture(scope="module")
def svc(serve_small, shared_cache):
    data = serve_small
    s = Service.load(data["space"], data["index"], cache=shared_cache, config=ServeConfig())
    yield s
    s.close()


def test_service_with_keys_closes_everything_but_health_and_the_page(svc, tmp_path):
    f = tmp_path / "keys.json"
    key = add_key(f, "t")
    with TestClient(create_app(service=svc, api_keys=f), raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        item = svc.index.snapshot().meta.column("id")[0].as_py()
        for method, path, body in [("post", "/search", {"text": "a dog"}), ("post", "/embed", {"texts": ["a"]}),
                                   ("post", "/classify", {"text": "a", "labels": ["x", "y"]}),
                                   ("get", f"/items/{item}", None), ("get", f"/thumbs/{item}", None),
                                   ("post", "/explain", {"text": "a dog", "id": item}),
                                   ("get", "/openapi.json", None), ("get", "/docs", None)]:
            r = getattr(c, method)(path, **({"json": body} if body else {}))
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["x-content-type-options"] == "nosniff"  # still inside the security headers
        r = c.post("/search", json={"text": "a dog"}, headers=bearer(key))
        assert r.status_code == 200 and r.json()["hits"]
        # CORS closed by default: no allow-origin header, a preflight is refused
        r = c.post("/search", json={"text": "a dog"}, headers={**bearer(key), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(service=svc, api_keys=f, cors_origins=["https://app.example"])) as c:
        pre = c.options("/search", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
        r = c.post("/search", json={"text": "a dog"}, headers={**bearer(key), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


@pytest.fixture(scope="module")
def priced_key(tmp_path_factory):
    f = tmp_path_factory.mktemp("priced") / "keys.json"
    return f, add_key(f, "k", rate_per_minute=6, burst=10)  # 0.1 token a second, 10 at once


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.floats(0, 200), st.integers(1, 30), st.booleans()), min_size=1, max_size=25))
def test_a_request_s_cost_is_taken_whole_and_retry_after_says_when_it_fits(priced_key, ops):
    """Requests of any cost, priced up front (check) or by their route once the body is read (charge, after the
    middleware's one token): every admitted request pays its whole cost (one over the burst needs a full bucket
    and leaves it in debt), so what is taken never exceeds the burst plus the rate over the time passed plus one
    request's overshoot; a request priced up front and refused takes nothing, one refused by its route keeps
    the middleware's token (refusals are never free); retried after its Retry-After, it passes."""
    f, key = priced_key
    clock = Clock()
    store, header, start = KeyStore(f, clock=clock), bearer(key)["Authorization"], clock.t
    taken, over = 0.0, 0.0

    def ask(cost: int, routed: bool):
        nonlocal taken
        if not routed:
            d = store.check(header, "POST", "/search", cost=cost)
            taken += cost if d.status == 0 else 0
            return d
        d = store.check(header, "POST", "/caption")
        if d.status:
            return d
        d = store.charge("k", cost, "costs what", paid=1.0)
        taken += cost if d.status == 0 else 1
        return d

    for dt, cost, routed in ops:
        clock.t += dt
        d = ask(cost, routed)
        # the middleware does not know a routed request's cost: after its Retry-After the route may refuse it
        # once more (then with the whole cost's wait)
        for _ in range(2 if routed and "costs" not in d.detail else 1):
            if d.status:
                assert d.status == 429 and d.retry_after >= 1 and "retry in" in d.detail
                again = ask(cost, routed)
                if routed:  # refused by the route, it kept its check's token (a middleware refusal takes nothing)
                    assert again.status == 429
                else:
                    assert again.retry_after == d.retry_after  # priced up front: the refusal took nothing
                clock.t += max(d.retry_after, again.retry_after)
                d = ask(cost, routed)
        assert d.status == 0, d.detail
        over = max(over, cost - 10)
        assert taken <= 10 + 0.1 * (clock.t - start) + over + 1e-6


def test_a_request_dearer_than_the_burst_pays_its_whole_cost(tmp_path):
    """A burst of 1 does not make every request cost 1: a 128-token request is let in on a full bucket and the
    key then waits until the rate has paid for all of it; refusals in between pay their check's token."""
    f = tmp_path / "keys.json"
    key = add_key(f, "k", rate_per_minute=6, burst=1)  # 0.1 token a second
    clock = Clock()
    store, header = KeyStore(f, clock=clock), bearer(key)["Authorization"]
    assert store.check(header, "POST", "/caption").status == 0
    assert store.charge("k", 128, "128 units", paid=1.0).status == 0  # a full bucket lets it in
    d = store.check(header, "POST", "/search")
    assert d.status == 429 and d.retry_after == 1280  # 127 tokens of debt + the next request's one, at 0.1/s
    clock.t += 1280
    assert store.check(header, "POST", "/search").status == 0
    granted = 0
    for _ in range(100):  # one try a minute for 100 minutes: 600 tokens of rate
        clock.t += 60
        if store.check(header, "POST", "/caption").status == 0:
            granted += store.charge("k", 128, "x", paid=1.0).status == 0
    assert 1 <= granted <= 600 / 128 + 1  # the rate pays for the work, whatever the burst (burst-capped: 100)


def test_a_route_charges_its_cost_after_the_middleware_s_token(priced_key):
    """charge_request through a route: 429 with Retry-After from the app's error answers, the message naming the
    cost; a service without keys charges nothing."""
    from types import SimpleNamespace

    from anybind.serve.auth import RateLimited, charge_request
    from anybind.serve.errors import add_error_handlers

    f, key = priced_key
    clock = Clock()
    store = KeyStore(f, clock=clock)
    app = toy_app(store)
    add_error_handlers(app)

    @app.post("/priced/{cost}")
    def priced(cost: int, request: Request):
        charge_request(request.state, cost, f"{cost} units")
        return {"ok": True}

    with TestClient(app) as c:
        assert c.post("/priced/7", headers=bearer(key)).status_code == 200  # 3 tokens left
        r = c.post("/priced/7", headers=bearer(key))
        assert r.status_code == 429 and r.headers["retry-after"] == "50"  # 2 left after its check; 7 at 0.1/s
        assert "costs 7 units" in r.json()["detail"]  # the refusal kept the middleware's token: 2 left
        assert c.post("/priced/3", headers=bearer(key)).status_code == 429
        clock.t += 70  # 2 + 7 - 1 (the second refusal's token) = 8 tokens
        assert c.post("/priced/7", headers=bearer(key)).status_code == 200
    charge_request(SimpleNamespace(), 1000)  # no key store (a service without keys): nothing to charge
    with pytest.raises(RateLimited):
        charge_request(SimpleNamespace(key_store=store, api_key="k"), 10)

"""The caption routes of the service (issue 18): GET /caption, POST /caption (stored items, texts) and
POST /caption/upload, over a small space of drawn shapes, a tiny LM and a captioner (tests/caption_serve_data.py).
Each caption served is the library's caption of the same input with the same options."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from anybind.caption import Captioner
from anybind.serve import ServeConfig, Service, create_app
from caption_serve_data import caption_site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return caption_site(tmp_path_factory.mktemp("caption-site"))


@pytest.fixture(scope="module")
def svc(site):
    s = Service.load(site["space"], site["index"], cache=site["cache"], config=ServeConfig(max_files=4,
                                                                                          max_upload_bytes=200_000))
    yield s
    s.close()


@pytest.fixture(scope="module")
def cap(site, svc):
    return Captioner.load(site["captioner"], svc.space, lm=site["lm"])


@pytest.fixture(scope="module")
def client(svc, cap):
    with TestClient(create_app(service=svc, captioner=cap)) as c:
        yield c


def _png(site, i=0):
    rec = [r for r in site["records"] if r["split"] == "test"][i]
    return rec, Path(rec["image"]).read_bytes()


def test_info_describes_the_captioner_and_its_limits(client, cap, monkeypatch):
    info = client.get("/caption").json()
    assert info["space_identity"] == cap.space.identity() and info["lm"] == Path(str(cap.lm.spec)).name
    assert "/" not in info["lm"]  # a model folder's name, never the server's path
    assert info["projection"] == cap.projection and info["memory_size"] == len(cap.memory) > 0
    assert info["retrieval_k"] == cap.retrieval_k
    monkeypatch.setattr(cap, "retrieval_k", cap.retrieval_k + 2)  # the captioner's own k, read per request
    assert client.get("/caption").json()["retrieval_k"] == cap.retrieval_k
    assert info["limits"] == {"max_tokens": 64, "max_beams": 8, "max_inputs": 4}


def test_upload_is_captioned_as_the_library_does(client, site, cap):
    rec, data = _png(site)
    r = client.post("/caption/upload", files=[("files", ("shape.png", data, "image/png"))])
    assert r.status_code == 200, r.text
    out = r.json()
    [c] = out["captions"]
    assert out["method"] == "greedy" and out["projection"] == c["projection"] == \
        (cap.projection if cap.mode_for("image") == "mapper" else "none")
    assert c["modality"] == "image" and c["name"] == "shape.png"
    assert c["caption"] == cap.caption("image", [rec["image"]])[0] and c["caption"]
    # options go through: beam search, no projection, a short cap on tokens; two files, two captions in order
    rec2, data2 = _png(site, 5)
    form = {"method": "beam", "beams": "4", "projection": "none", "max_tokens": "3"}
    r = client.post("/caption/upload", data=form, files=[("files", ("a.png", data, "image/png")),
                                                         ("files", ("b.png", data2, "image/png"))])
    assert r.status_code == 200, r.text
    got = [c["caption"] for c in r.json()["captions"]]
    assert got == cap.caption("image", [rec["image"], rec2["image"]], method="beam", beams=4, projection="none",
                              max_tokens=3)
    assert r.json()["projection"] == "none" and all(len(site["lm"].tokenizer(g)["input_ids"]) <= 3 for g in got)
    # sampling is reproducible by its seed
    form = {"method": "sample", "seed": "7", "temperature": "1.5"}
    a, b = (client.post("/caption/upload", data=form, files=[("files", ("a.png", data, "image/png"))]).json()
            for _ in range(2))
    assert a["captions"] == b["captions"]


def test_stored_items_and_texts_by_json(client, site, cap, svc):
    test = [r for r in site["records"] if r["split"] == "test"][:3]
    body = {"items": [{"id": r["id"], "modality": "image"} for r in test[:2]] + [{"id": test[2]["id"]}],
            "texts": ["Two blue stars."], "method": "beam"}
    r = client.post("/caption", json=body)
    assert r.status_code == 200, r.text
    caps = r.json()["captions"]
    assert [(c["modality"], c["id"], c["text"]) for c in caps] == \
        [("image", t["id"], None) for t in test] + [("text", None, "Two blue stars.")]
    # a stored item is decoded from its vector in the index: the same as captioning its file
    want = cap.caption("image", [t["image"] for t in test], method="beam") + \
        cap.caption("text", ["Two blue stars."], method="beam")
    assert [c["caption"] for c in caps] == want
    r = client.post("/caption", json={"items": [{"id": test[0]["id"], "modality": "text"}]})
    assert r.json()["captions"][0]["caption"] == cap.caption("text", [test[0]["text"]])[0]


def test_each_modality_is_captioned_by_its_mode_chosen_on_val(client, site, cap, monkeypatch):
    """mode auto: each input by its modality's mode (as Captioner.caption); GET /caption lists the modes chosen on
    val with their scores; an explicit mode applies to every input."""
    assert cap.modes["image"]["mode"] in ("mapper", "prompt", "nearest")  # chosen on val when it was trained
    info = client.get("/caption").json()["modes"]
    assert info == {m: {"mode": c["mode"], "val_cider_d": c["val_cider_d"], "n_val": c["n_val"]}
                    for m, c in cap.modes.items()}
    test = [r for r in site["records"] if r["split"] == "test"][:2]
    for image_mode in ("nearest", "mapper"):  # the captioner's choice, whichever it is, is what serves
        monkeypatch.setitem(cap.modes, "image", {**cap.modes["image"], "mode": image_mode})
        body = {"items": [{"id": t["id"], "modality": "image"} for t in test], "texts": ["Two blue stars."]}
        caps = client.post("/caption", json=body).json()["captions"]
        assert [c["mode"] for c in caps] == [image_mode, image_mode, "mapper"]
        assert [c["caption"] for c in caps] == cap.caption("image", [t["image"] for t in test]) + \
            cap.caption("text", ["Two blue stars."])
    caps = client.post("/caption", json={**body, "mode": "nearest"}).json()["captions"]
    assert [c["caption"] for c in caps] == cap.caption("image", [t["image"] for t in test], mode="nearest") + \
        cap.caption("text", ["Two blue stars."], mode="nearest") and {c["mode"] for c in caps} == {"nearest"}
    assert all(c["caption"] in cap.memory_captions for c in caps)
    rec, data = _png(site)
    r = client.post("/caption/upload", data={"mode": "prompt"}, files=[("files", ("a.png", data, "image/png"))])
    assert r.json()["captions"][0]["caption"] == cap.caption("image", [rec["image"]], mode="prompt")[0]
    r = client.post("/caption", json={"texts": ["x"], "mode": "best"})
    assert r.status_code == 422 and "nearest" in r.text


def test_the_projection_reported_is_the_one_that_decoded(client):
    """prompt and nearest decode the vector as it is (no projection): the reply says so, per caption and on the
    whole (a projection only where the mapper decoded something), whatever projection was asked."""
    for mode in ("prompt", "nearest"):
        out = client.post("/caption", json={"texts": ["Two blue stars."], "mode": mode, "projection": "memory"}).json()
        assert out["projection"] == "none" and [c["projection"] for c in out["captions"]] == ["none"]
    out = client.post("/caption", json={"texts": ["Two blue stars."], "mode": "mapper", "projection": "memory"}).json()
    assert out["projection"] == "memory" and out["captions"][0]["projection"] == "memory"
    out = client.post("/caption", json={"texts": ["Two blue stars."], "projection": "memory"}).json()  # auto: mapper
    assert out["projection"] == "memory" and out["captions"][0]["mode"] == "mapper"


@pytest.mark.parametrize("body,status,words", [
    ({}, 400, "nothing to caption"),
    ({"texts": ["a"] * 5}, 400, "5 inputs in one request: at most 4"),
    ({"items": [{"id": "no-such-id"}]}, 404, "no item 'no-such-id'"),
    ({"items": [{"id": "one-red-circle-3", "modality": "audio"}]}, 404, "has no 'audio'"),
    ({"texts": ["x"], "text_modality": "image"}, 400, "does not read text"),
    ({"texts": ["x"], "max_tokens": 65}, 422, "less than or equal to 64"),
    ({"texts": ["x"], "beams": 9}, 422, "less than or equal to 8"),
    ({"texts": ["x"], "method": "nucleus"}, 422, "greedy"),
    ({"texts": ["x"], "projection": "nearest"}, 422, "memory"),
    ({"texts": ["x"], "top_p": 0}, 422, "greater than 0"),
    ({"texts": ["x"], "bogus": 1}, 422, "Extra inputs"),
])
def test_json_refusals(client, body, status, words):
    r = client.post("/caption", json=body)
    assert r.status_code == status, r.text
    assert words in json.dumps(r.json()["detail"])


def test_upload_refusals_match_the_other_upload_routes(client, site):
    _, data = _png(site)
    r = client.post("/caption/upload", files=[("files", ("n.png", b"plain text, no picture", "image/png"))])
    assert r.status_code == 415 and "'n.png': not an image, a sound" in r.json()["detail"]
    r = client.post("/caption/upload", files=[("files", (f"{i}.png", data, "image/png")) for i in range(5)])
    assert r.status_code == 400 and "5 files in one request: at most 4" in r.json()["detail"]
    r = client.post("/caption/upload", files=[("files", ("big.png", data + b"\0" * 250_000, "image/png"))])
    assert r.status_code == 413
    r = client.post("/caption/upload", data={"max_tokens": "100"}, files=[("files", ("a.png", data, "image/png"))])
    assert r.status_code == 422
    r = client.post("/caption/upload", data={"file_modality": "text"}, files=[("files", ("a.png", data, "image/png"))])
    assert r.status_code == 400 and "reads text input" in r.json()["detail"]


def test_routes_only_with_a_captioner_and_the_schema_only_gains(svc, cap, site, tmp_path):
    with TestClient(create_app(service=svc)) as plain, TestClient(create_app(service=svc, captioner=cap)) as withc:
        assert plain.get("/caption").status_code == 404
        assert plain.post("/caption", json={"texts": ["x"]}).status_code in (404, 405)
        before, after = plain.get("/openapi.json").json(), withc.get("/openapi.json").json()
    assert set(after["paths"]) - set(before["paths"]) == {"/caption", "/caption/upload"}
    assert all(after["paths"][p] == v for p, v in before["paths"].items())  # nothing existing changed
    old = before["components"]["schemas"]
    assert all(after["components"]["schemas"][k] == v for k, v in old.items() if not k.startswith("Body_"))
    # a captioner of another space is refused before serving, in one line
    from anybind import Space
    from anybind.errors import SpaceError

    other = Space.fit(site["manifest"], encoders=svc.space.encoders, cache=site["cache"], epochs=2, dim=16,
                      hidden=64, progress=False, seed=3)
    foreign = Captioner(other, cap.lm, cap.mapper)
    with pytest.raises(SpaceError, match="trained on space .* but this service serves space") as e:
        create_app(service=svc, captioner=foreign)
    assert "\n" not in str(e.value)


def test_cli_serve_refuses_a_captioner_of_another_space(site, tmp_path):
    from typer.testing import CliRunner

    from anybind import Space
    from anybind.cli import app

    other = Space.fit(site["manifest"], encoders=Space.load(site["space"]).encoders, cache=site["cache"], epochs=2,
                      dim=16, hidden=64, progress=False, seed=4)
    other.save(tmp_path / "other")
    Captioner(other, site["lm"], site["cap"].mapper).save(tmp_path / "cap")
    r = CliRunner().invoke(app, ["serve", str(site["space"]), "--index", str(site["index"]), "--captioner",
                                 str(tmp_path / "cap"), "--port", "1"])
    assert r.exit_code == 2, r.output
    assert "train a captioner for this space" in " ".join(r.output.split())


def test_caption_routes_need_a_key_when_the_service_has_keys(svc, cap, site, tmp_path):
    from anybind.serve.auth import add_key

    f = tmp_path / "keys.json"
    key = add_key(f, "t")
    rec, png = _png(site)
    with TestClient(create_app(service=svc, captioner=cap, api_keys=f), raise_server_exceptions=False) as c:
        for method, path, kw in [("get", "/caption", {}), ("post", "/caption", {"json": {"texts": ["a circle"]}}),
                                 ("post", "/caption/upload", {"files": {"files": ("x.png", png, "image/png")}})]:
            assert getattr(c, method)(path, **kw).status_code == 401, path
        r = c.post("/caption", json={"texts": ["a circle"]}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text


def test_a_caption_request_costs_its_decoding_work_of_the_key_s_rate_limit(svc, cap, site, tmp_path):
    """inputs x beams x tokens / 64 tokens of the key's bucket (not one token a request): a beam request of 4
    texts x 8 beams x 16 tokens costs 8; 429 with Retry-After when the bucket does not hold it; a request refused
    by its route keeps its check's token; an upload over max_files is refused before it is charged."""
    from anybind.serve.auth import KeyStore, add_key
    from anybind.serve.caption_routes import DecodeOptions, caption_cost

    assert caption_cost(4, DecodeOptions(method="beam", beams=8, max_tokens=16))[0] == 8
    assert caption_cost(16, DecodeOptions(method="beam", beams=8, max_tokens=64))[0] == 128
    assert caption_cost(16, DecodeOptions(method="greedy", beams=8, max_tokens=64))[0] == 16  # one beam
    assert caption_cost(1, DecodeOptions())[0] == 1

    class Clock:
        t = 0.0

        def __call__(self):
            return self.t

    f = tmp_path / "keys.json"
    key = add_key(f, "t", rate_per_minute=60, burst=10)  # a token a second, 10 at once
    clock = Clock()
    h = {"Authorization": f"Bearer {key}"}
    beam = {"texts": ["a circle", "a square", "a red circle", "a blue square"], "method": "beam", "beams": 8,
            "max_tokens": 16}
    _, png = _png(site)
    with TestClient(create_app(service=svc, captioner=cap, api_keys=KeyStore(f, clock=clock))) as c:
        assert c.post("/caption", json=beam, headers=h).status_code == 200  # 8 of 10: 2 left
        r = c.post("/caption", json=beam, headers=h)  # refused by its route, it keeps its check's token: 1 left
        assert r.status_code == 429 and r.headers["retry-after"] == "7", r.text  # 7 more at a token a second
        assert "4 input(s) x 8 beam(s) x 16 tokens" in r.json()["detail"]
        assert c.post("/caption", json={"texts": ["a circle"]}, headers=h).status_code == 200  # costs 1: 0 left
        clock.t += 8  # 8 tokens
        assert c.post("/caption", json=beam, headers=h).status_code == 200  # none left
        # uploads are charged per file alike, before any is read: 2 files x 8 beams x 64 tokens = 16, over the
        # burst: a full bucket lets it in, and the key then pays the rest off
        files = [("files", ("a.png", png, "image/png")), ("files", ("b.png", png, "image/png"))]
        form = {"method": "beam", "beams": "8", "max_tokens": "64"}
        clock.t += 5
        r = c.post("/caption/upload", files=files, data=form, headers=h)
        assert r.status_code == 429 and r.headers["retry-after"] == "6", r.text  # 4 left of the 10 it needs
        clock.t += 6
        assert c.post("/caption/upload", files=files, data=form, headers=h).status_code == 200
        r = c.post("/caption", json={"texts": ["a circle"]}, headers=h)  # 10 - 16 = 6 tokens of debt
        assert r.status_code == 429 and r.headers["retry-after"] == "7", r.text
        clock.t += 17  # 10 tokens again
        r = c.post("/caption/upload", files=files * 3, data=form, headers=h)  # 6 files over max_files=4
        assert r.status_code == 400 and "at most 4" in r.text, r.text  # its check's one token, not its 48
        clock.t += 1  # 10 again: a full bucket lets the next 16 in
        assert c.post("/caption/upload", files=files, data=form, headers=h).status_code == 200

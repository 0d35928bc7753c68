"""Video in the index and the service: clips indexed, searched by a clip, uploaded (MP4/WebM sniffed), thumbnails."""

import io
import json

import pytest
import torch
from PIL import Image

from anybind.index import Index
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space
from video_helpers import make_clip

pytest.importorskip("av")
pytest.importorskip("fastapi")

VIDEO = "video:frames(callable:video_helpers:rgb_stats)@fps=2,max=3"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("vix")
    rows = []
    for i in range(6):  # clips that differ in length, size and codec: distinct features
        suffix = "webm" if i % 2 else "mp4"
        make_clip(root / f"c{i}.{suffix}", n=8 + 3 * i, w=32 + 16 * (i % 3), h=32)
        rows.append({"id": f"v{i}", "text": f"clip number {i}", "video": f"c{i}.{suffix}"})
    (root / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    cfg = dict(out_dim=8, kind="linear", dropout=0.0, input_dropout=0.0)
    space = Space({"text": "callable:helper_encoders:hashed_text", "video": VIDEO},
                  {"text": Projector(ProjectorConfig(in_dim=8, **cfg)), "video": Projector(ProjectorConfig(in_dim=6, **cfg))})
    space.save(root / "space")
    index = Index.build(space, root / "m.jsonl", root / "ix", cache=root / "cache")
    return root, space, index


def test_clips_are_indexed_and_found_by_a_clip(built):
    root, _, index = built
    assert index.counts() == {"text": 6, "video": 6}
    for i in (0, 3):
        hits = index.search(inputs={"video": str(root / f"c{i}.{'webm' if i % 2 else 'mp4'}")}, modality="video", k=2)
        assert hits[0].id == f"v{i}" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    hits = index.search(str(root / "c2.mp4"), k=1)  # a path: the modality from its suffix
    assert hits[0].id == "v2" and hits[0].modality == "video"


def test_service_takes_mp4_and_webm_uploads_and_serves_clips_and_poster_thumbnails(built):
    from fastapi.testclient import TestClient

    from anybind.serve import ServeConfig, Service, create_app

    root, _, _ = built
    svc = Service.load(root / "space", root / "ix", cache=root / "cache", config=ServeConfig(max_video_seconds=1.5))
    try:
        with TestClient(create_app(service=svc)) as c:
            # what a client reads to know that a dropped clip is embedded as the space's video
            assert c.get("/health").json()["upload_modalities"] == {"video": "video"}
            for name in ("c1.webm", "c2.mp4"):
                blob = (root / name).read_bytes()
                res = c.post("/search/upload", files={"files": ("upload.bin", blob, "text/plain")},
                             data={"k": "2", "modality": "video"})
                assert res.status_code == 200, res.text
                top = res.json()["hits"][0]
                assert top["id"] == f"v{name[1]}" and top["media"] == "video" and res.json()["query_modalities"] == ["video"]
                item = c.get(top["url"])
                assert item.status_code == 200 and item.content == blob
                assert item.headers["content-type"] == ("video/webm" if name.endswith("webm") else "video/mp4")
                th = c.get(top["thumb_url"] + "&size=24")
                assert th.status_code == 200 and th.headers["content-type"] == "image/jpeg"
                assert max(Image.open(io.BytesIO(th.content)).size) == 24
            # an .mp4 name on bytes that are no video: refused by content (415), naming the upload
            res = c.post("/search/upload", files={"files": ("fake.mp4", b"\x00" * 40 + b"hello")})
            assert res.status_code == 415 and "MP4 or WebM videos" in res.json()["detail"]
            # an MP4 header over a broken body: a clear 400 naming the upload, not a crash
            broken = (root / "c2.mp4").read_bytes()[:300]
            res = c.post("/search/upload", files={"files": ("broken.mp4", broken)}, data={"modality": "video"})
            assert res.status_code == 400 and "broken.mp4" in res.json()["detail"]
            assert "video" in res.json()["detail"] and "\n" not in res.json()["detail"]
            # longer than the service takes (2.4 s > 1.5 s): refused before decoding, for both containers
            for suffix in ("mp4", "webm"):
                long = make_clip(root / f"long.{suffix}", n=24)
                res = c.post("/search/upload", files={"files": (f"long.{suffix}", long.read_bytes())})
                detail = res.json()["detail"]
                assert res.status_code == 400 and f"long.{suffix}" in detail and "a video of 2.4 s; at most 1.5 s" in detail
    finally:
        svc.close()


def test_sniffing_tells_videos_from_images_and_heif(built):
    from anybind.serve.sniff import sniff

    root = built[0]
    assert sniff((root / "c0.mp4").read_bytes()[:64]).mime == "video/mp4"
    assert sniff((root / "c1.webm").read_bytes()[:64]).mime == "video/webm"
    assert sniff(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20) is None  # a HEIF still image is no video
    assert sniff(b"\x1a\x45\xdf\xa3" + b"\x00" * 20 + b"matroska") is None  # Matroska, not WebM: not taken


def test_cli_fits_indexes_and_searches_a_video_manifest(built, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    root = built[0]
    run = CliRunner().invoke
    res = run(app, ["fit", str(root / "m.jsonl"), "--modalities", "video,text", "-e", f"video={VIDEO}",
                    "-e", "text=callable:helper_encoders:hashed_text", "--epochs", "2", "--dim", "8",
                    "--cache", str(root / "cache"), "--out", str(tmp_path / "space")])
    assert res.exit_code == 0, res.output
    res = run(app, ["index", str(tmp_path / "space"), str(root / "m.jsonl"), "--out", str(tmp_path / "ix"),
                    "--cache", str(root / "cache")])
    assert res.exit_code == 0, res.output
    index = Index.open(tmp_path / "ix", Space.load(tmp_path / "space"))
    assert index.counts() == {"text": 6, "video": 6}
    assert index.search(str(root / "c4.mp4"), modality="video", k=1)[0].id == "v4"

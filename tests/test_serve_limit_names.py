"""A message about one of the service's limits names both ways to raise it: the ``anybind serve`` flag a CLI user
sets and the :class:`~anybind.serve.ServeConfig` field a library user sets (the 413 for a JSON body named only
``ServeConfig.max_json_bytes``, which no one running ``anybind serve`` can set; the pixel limit had no flag at all).
The table of flags (:data:`anybind.errors.SERVE_FLAGS`) is checked against the CLI itself."""

from __future__ import annotations

import pytest
from media_helpers import png_header

from anybind.errors import SERVE_FLAGS, serve_limit
from anybind.serve import ServeConfig


def _cli_serve_config(tmp_path, monkeypatch, args: list[str]):
    """The ServeConfig ``anybind serve ARGS`` makes (the service's loading stopped by the test), and the output."""
    from typer.testing import CliRunner

    from anybind.cli import app as cli
    from anybind.errors import AnybindError
    from anybind.serve import Service

    seen = []

    def load(cls, space_dir, index_dir, *, config, **kw):
        seen.append(config)
        raise AnybindError("stopped by the test before loading")

    monkeypatch.setattr(Service, "load", classmethod(load))
    r = CliRunner().invoke(cli, ["serve", str(tmp_path / "nospace"), "--index", str(tmp_path / "noindex"), *args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    return seen, r


@pytest.mark.parametrize("field", sorted(SERVE_FLAGS))
def test_each_flag_in_the_table_sets_its_field(tmp_path, monkeypatch, field):
    """A flag the messages name is one `anybind serve` takes, and it sets the field they name beside it."""
    given, want = ("text=3", {"text": 3}) if field == "max_batch_for" else ("3", 3 * (
        2**20 if field == "max_upload_bytes" else 1))  # --max-upload-mb is in MiB; --max-batch-for takes MODALITY=N
    seen, r = _cli_serve_config(tmp_path, monkeypatch, [SERVE_FLAGS[field], given])
    assert "No such option" not in r.output, r.output
    assert [getattr(c, field) for c in seen] == [want], r.output
    default = ServeConfig()
    assert all(getattr(c, f) == getattr(default, f) for c in seen for f in ("max_pixels", "max_files")
               if f != field)  # no other limit moved with it


def test_every_serve_option_that_sets_a_config_field_is_in_the_table():
    """An option named after a ServeConfig field (or --max-upload-mb) is in the table the messages read."""
    import dataclasses

    import typer.main

    from anybind.cli import app as cli

    serve = typer.main.get_command(cli).commands["serve"]
    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    options = {p.name: p.opts for p in serve.params}
    ours = {("max_upload_bytes" if name == "max_upload_mb" else name): opts for name, opts in options.items()
            if name in fields or name == "max_upload_mb"}
    assert {f: SERVE_FLAGS.get(f) for f in ours} == {f: opts[0] for f, opts in ours.items()}
    assert "max_pixels" in ours  # the pixel limit the refusal names can be raised from the CLI


def test_serve_limit_names_the_flag_and_the_field_or_the_field_alone():
    assert serve_limit("max_json_bytes") == "anybind serve --max-json-bytes, ServeConfig.max_json_bytes"
    assert serve_limit("max_svg_work") == "ServeConfig.max_svg_work"  # no flag sets it


def _body_limit_client(max_bytes: int, max_json_bytes: int):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from anybind.serve.middleware import BodyLimit

    app = FastAPI()

    @app.post("/x")
    async def x() -> dict:  # pragma: no cover - never reached over the caps
        return {}

    app.add_middleware(BodyLimit, max_bytes=max_bytes, max_json_bytes=max_json_bytes)
    return TestClient(app)


def test_the_413s_name_the_flag_and_the_field():
    """A CLI user reads which flag raises the cap their request hit; a library user which field."""
    c = _body_limit_client(1000, 100)
    res = c.post("/x", content=b"[" + b"1," * 100 + b"1]", headers={"content-type": "application/json"})
    assert res.status_code == 413 and res.json()["detail"] == (
        "request body over the JSON cap of 100 bytes (0.0 MiB; anybind serve --max-json-bytes, "
        "ServeConfig.max_json_bytes)")
    res = c.post("/x", files={"f": ("a.png", b"\0" * 2000)})
    assert res.status_code == 413 and res.json()["detail"] == (
        "request body over the upload cap of 1000 bytes (0.0 MiB; anybind serve --max-upload-mb, "
        "ServeConfig.max_upload_bytes)")


def test_the_pixel_refusal_of_an_upload_names_the_flag_and_the_field():
    from anybind.data.limits import MediaLimits
    from anybind.index import QueryError
    from anybind.serve.sniff import sniff
    from anybind.serve.uploads import check_size

    blob = png_header(9000, 5000)  # 45 M pixels: over the service's 40 M
    with pytest.raises(QueryError) as e:
        check_size(blob, sniff(blob), "'wide.png'", ServeConfig(), MediaLimits())
    assert str(e.value) == (
        "'wide.png': an image of 9000x5000 pixels; this service takes at most 40 million pixels (the limit, "
        "anybind serve --max-pixels, ServeConfig.max_pixels); not decoded: refused before decoding")
    check_size(blob, sniff(blob), "'wide.png'", ServeConfig(max_pixels=45_000_000), MediaLimits())


def test_a_media_limit_refusal_names_the_service_flag_where_there_is_one():
    from anybind.errors import LimitRefused

    msg = str(LimitRefused.over("a.png", "too big", "max_pixels"))
    assert msg.endswith("using_limits(MediaLimits(max_pixels=...)), or in the service anybind serve --max-pixels, "
                        "ServeConfig.max_pixels)"), msg
    msg = str(LimitRefused.over("a.svg", "too costly", "max_svg_work"))
    assert msg.endswith("using_limits(MediaLimits(max_svg_work=...)), or in the service ServeConfig.max_svg_work)")

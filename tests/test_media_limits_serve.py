"""The service's media limits: hostile uploads get a 400 naming the upload in bounded time and memory, and the
service's own pixel limit applies to uploads and to rasters embedded in SVGs."""


import pytest
from media_helpers import (
    big_png,
    bounded,
    png_header,
    served,
    svg_with_image,
    svgz_bomb,
    use_amplifier,
)

from anybind.serve import ServeConfig


def test_a_raster_upload_over_the_service_pixel_limit_is_refused_not_corrupt(client):
    blob = png_header(9000, 5000)  # 45 M pixels: under PIL's own limit, over the service's
    res = client.post("/embed/upload", files={"files": ("wide.png", blob)})
    detail = res.json()["detail"]
    assert res.status_code == 400 and "'wide.png'" in detail and "9000x5000 pixels" in detail, res.text
    assert "refused before decoding" in detail and "corrupt" not in detail
    assert "anybind serve --max-pixels, ServeConfig.max_pixels" in detail


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with served(tmp_path_factory.mktemp("limits-serve"), ServeConfig(max_upload_bytes=2 * 2**20)) as c:
        yield c


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("bomb.svgz", lambda: svgz_bomb(64), "inflates to more than"),
        ("embedded.svg", lambda: svg_with_image(big_png(20000, 20000)), "embedded in this SVG"),
        ("amp.svg", use_amplifier, "too costly to render"),
        ("bomb.png", lambda: png_header(20000, 10000), "image too large"),
    ],
)
def test_hostile_uploads_get_400_in_bounded_time_and_memory(client, name, make, message):
    blob = make()
    for route, form in (("/search/upload", {}), ("/embed/upload", {}), ("/classify/upload", {"labels": ["a", "b"]})):
        with bounded(seconds=10, mb=150):
            res = client.post(route, files={"files": (name, blob)}, data=form)
        assert res.status_code == 400, res.text
        assert f"'{name}'" in res.json()["detail"] and message in res.json()["detail"]
        if name.endswith((".svg", ".svgz")):  # over a limit, named with how to raise it: not "corrupt"
            assert "refused before rendering" in res.json()["detail"] and "corrupt" not in res.json()["detail"]


def test_the_service_takes_its_own_pixel_limit_for_embedded_images(client):
    blob = svg_with_image(png_header(8000, 6000))  # 48 M pixels: under the loader's limit, over the service's
    res = client.post("/search/upload", files={"files": ("e.svg", blob)})
    assert res.status_code == 400 and "8000x6000 pixels" in res.json()["detail"]

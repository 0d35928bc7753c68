"""A gradient or pattern that inherits from another through ``xlink:href`` paints every shape using it.

CairoSVG 2.9 resolves the reference again at each use and loses the inherited stops: without a
document URL every other use painted nothing, with one (anybind renders with one since 0c8a319)
every use after the first.  Tux Paint's ``food/cheese.svg`` (three holes filled by one such gradient)
kept one hole.  :func:`anybind.data.svg_process.render` resolves each reference once per document;
it runs in this process and in the render worker, so both are tested.  Drawing a definition again put
its unresolved node back: a gradient defined inline (outside ``<defs>``) painted nothing once the drawing
had passed it, and one inside a group shown several times through ``<use>`` only its first copy.
"""

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from anybind.data.limits import MediaLimits
from anybind.data.media import load_image

CELL = 40
STOPS = '<stop offset="0" stop-color="#d02010"/><stop offset="1" stop-color="#1020d0"/>'


def _document(uses: int, depth: int, kind: str, pattern: bool) -> bytes:
    """``uses`` squares in a row, each filled by ``url(#g{depth})``, which inherits from ``g{depth-1}`` ...
    down to ``g0``, the only one holding the stops (or, for ``pattern``, the pattern's content)."""
    if pattern:
        defs = [
            (
                '<pattern id="g0" width="8" height="8" patternUnits="userSpaceOnUse">'
                '<rect width="8" height="8" fill="#d02010"/></pattern>'
            )
        ]
        defs += [f'<pattern id="g{i}" xlink:href="#g{i - 1}"/>' for i in range(1, depth + 1)]
    else:
        defs = [f'<{kind} id="g0">{STOPS}</{kind}>']
        defs += [f'<{kind} id="g{i}" xlink:href="#g{i - 1}"/>' for i in range(1, depth + 1)]
    rects = "".join(
        f'<rect x="{i * CELL}" y="0" width="{CELL}" height="{CELL}" fill="url(#g{depth})"/>'
        for i in range(uses)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{uses * CELL}" height="{CELL}"><defs>{"".join(defs)}</defs>{rects}</svg>'
    ).encode()


def _centres(path: Path, uses: int, limits: MediaLimits) -> list[tuple[int, ...]]:
    img = np.asarray(load_image(path, size=uses * CELL, limits=limits))
    return [tuple(int(v) for v in img[CELL // 2, i * CELL + CELL // 2]) for i in range(uses)]


@settings(max_examples=12, deadline=None)
@given(
    uses=st.integers(2, 5),
    depth=st.integers(1, 3),
    kind=st.sampled_from(["linearGradient", "radialGradient"]),
    pattern=st.booleans(),
    worker=st.booleans(),
)
def test_every_use_of_an_inherited_paint_is_painted(tmp_path_factory, uses, depth, kind, pattern, worker):
    path = tmp_path_factory.mktemp("svg") / "inherit.svg"
    path.write_bytes(_document(uses, depth, kind, pattern))
    limits = MediaLimits(max_svg_seconds=30.0 if worker else None)
    centres = _centres(path, uses, limits)
    assert centres[0] != (255, 255, 255), "the first use is not painted at all"
    assert centres == [centres[0]] * uses, f"uses painted differently: {centres}"


def test_a_document_without_references_renders_as_cairosvg_does(tmp_path):
    """The fix changes nothing where no definition inherits: same pixels as CairoSVG alone."""
    import cairosvg

    svg = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><defs>'
        b'<linearGradient id="a">' + STOPS.encode() + b"</linearGradient></defs>"
        b'<rect width="40" height="40" fill="url(#a)"/><rect x="40" width="40" height="40" fill="url(#a)"/>'
        b'<circle cx="100" cy="20" r="15" fill="#0a0"/></svg>'
    )
    path = tmp_path / "plain.svg"
    path.write_bytes(svg)
    ours = np.asarray(load_image(path, size=120, limits=MediaLimits(max_svg_seconds=None)))
    rgba = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=svg, output_width=120))).convert("RGBA")
    theirs = np.asarray(
        Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    )
    assert np.array_equal(ours, theirs)


def _placed(where: str, uses: int, pattern: bool) -> bytes:
    """``uses`` squares filled by ``g1``, which inherits from ``g0`` in ``<defs>``; ``g1`` itself is defined inline
    after the first square (``where="inline"``) or inside a group drawn ``uses`` times by ``<use>``."""
    if pattern:
        g0 = ('<pattern id="g0" width="8" height="8" patternUnits="userSpaceOnUse">'
              '<rect width="8" height="8" fill="#d02010"/></pattern>')
        g1 = '<pattern id="g1" xlink:href="#g0"/>'
    else:
        g0, g1 = f'<linearGradient id="g0">{STOPS}</linearGradient>', '<linearGradient id="g1" xlink:href="#g0"/>'
    square = '<rect x="{x}" width="%d" height="%d" fill="url(#g1)"/>' % (CELL, CELL)
    if where == "inline":
        body = square.format(x=0) + g1 + "".join(square.format(x=i * CELL) for i in range(1, uses))
        defs = g0
    else:
        defs = g0 + f'<g id="sym">{g1}{square.format(x=0)}</g>'
        body = "".join(f'<use xlink:href="#sym" x="{i * CELL}"/>' for i in range(uses))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{uses * CELL}" height="{CELL}"><defs>{defs}</defs>{body}</svg>'
    ).encode()


@pytest.mark.parametrize("worker", [False, True])
@pytest.mark.parametrize("pattern", [False, True])
@pytest.mark.parametrize("where", ["inline", "use"])
def test_an_inherited_paint_defined_inline_or_shown_through_use_paints_every_square(tmp_path, where, pattern, worker):
    """The reviewer's drawings: the inline gradient left the square after it transparent, the group shown 3 times
    through <use> painted only its first copy; rsvg-convert paints them all (its pixels where it is installed)."""
    uses = 3
    svg = _placed(where, uses, pattern)
    path = tmp_path / f"{where}.svg"
    path.write_bytes(svg)
    centres = _centres(path, uses, MediaLimits(max_svg_seconds=30.0 if worker else None))
    assert centres[0] != (255, 255, 255), "the first use is not painted at all"
    assert centres == [centres[0]] * uses, f"uses painted differently: {centres}"
    rsvg = shutil.which("rsvg-convert")
    if rsvg:  # the reference renderer: the same centres, on white
        png = subprocess.run([rsvg, "-w", str(uses * CELL), "-b", "white"], input=svg, capture_output=True,
                             check=True).stdout
        ref = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        want = [tuple(int(v) for v in ref[CELL // 2, i * CELL + CELL // 2]) for i in range(uses)]
        assert all(max(abs(a - b) for a, b in zip(c, w)) <= 2 for c, w in zip(centres, want)), (centres, want)

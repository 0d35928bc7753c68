"""Rendering checked SVG text to PNG with CairoSVG, in this process or as a worker process.

:func:`render` is what every rendering runs.  Run as a script (``python svg_process.py``), this
module is the worker of :mod:`anybind.data.svg_pool`: it imports CairoSVG and no anybind
module (so it starts in a fraction of a second), says ``ready``, then answers requests on its
standard input until that closes:

* request: a JSON line ``{"n": bytes, "width": px, "max_pixels": int, "url": str}``, then ``n``
  bytes of SVG text (already checked by :func:`anybind.data.svg.check_svg`);
* answer: a JSON line ``{"ok": true, "n": bytes}`` then ``n`` bytes of PNG, or
  ``{"ok": false, "pixels": bool, "error": str}`` (``pixels``: the output would be too large).
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator


class TooLarge(Exception):
    """The SVG renders to more pixels than allowed (raised before the surface is allocated)."""


#: within one :func:`render`: for each definition element whose ``xlink:href`` was resolved (keyed by the id of its
#: XML element), that element and the node resolved for it
_RESOLVED: ContextVar[dict[int, tuple[object, object]] | None] = ContextVar("anybind_svg_resolved", default=None)


def _resolve_each_reference_once() -> None:
    """Make CairoSVG resolve a gradient's or pattern's ``xlink:href`` once per document.

    CairoSVG 2.9 resolves it again at every use of the gradient, replacing the resolved definition
    each time: the second use finds a gradient with stops of its own, rebuilds it without them and
    paints nothing (without a document URL every other use is lost; with one, every use after the
    first).  Inkscape's drawings inherit their stops this way (Tux Paint's cheese lost two of its three
    holes, the bikini its pattern).  Drawing a definition again also puts its unresolved node back in
    the table: a gradient defined inline (outside ``<defs>``) once the drawing passes it, and one inside
    a group shown several times through ``<use>`` (each copy is a new node of the same XML element).
    So the node resolved for an XML element is remembered, and put back in the table wherever an
    unresolved node of that element is found there.  Renders outside :func:`render` keep CairoSVG's
    behaviour."""
    from cairosvg import defs

    original = defs.update_def_href
    if getattr(original, "_anybind_once", False):
        return

    def update_def_href(surface, def_name, def_dict, chain=None):
        done = _RESOLVED.get()
        if done is None:
            return original(surface, def_name, def_dict, chain)
        node = def_dict[def_name]
        element = getattr(node, "xml_tree", node)
        hit = done.get(id(element))
        if hit is not None and hit[0] is element:  # resolved before: the resolved node, back in its place
            def_dict[def_name] = hit[1]
            return None
        original(surface, def_name, def_dict, chain)  # its recursion into the target comes back here
        done[id(element)] = (element, def_dict[def_name])
        return None

    update_def_href._anybind_once = True  # type: ignore[attr-defined]
    defs.update_def_href = update_def_href


@contextmanager
def references_resolved_once() -> Iterator[None]:
    """Within: CairoSVG draws (any of its entry points) with each ``xlink:href`` resolved once per document, as
    :func:`render` does (see :func:`_resolve_each_reference_once`)."""
    _resolve_each_reference_once()
    token = _RESOLVED.set({})
    try:
        yield
    finally:
        _RESOLVED.reset(token)


def render(text: bytes, width: int, max_pixels: int, url: str) -> bytes:
    """PNG bytes of ``text`` rendered ``width`` pixels wide onto a surface of at most ``max_pixels``."""
    from cairosvg.surface import PNGSurface

    class BoundedPNGSurface(PNGSurface):
        def _create_surface(self, w, h):
            if w * h > max_pixels:
                raise TooLarge(
                    f"the SVG renders to {w:.0f}x{h:.0f} pixels; at most {max_pixels:,} are drawn"
                )
            return super()._create_surface(w, h)

    with references_resolved_once():
        return BoundedPNGSurface.convert(bytestring=text, output_width=width, url=url)


def _serve() -> None:
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr  # nothing but answers goes to the parent's stream
    import cairosvg  # noqa: F401 - loaded before saying ready, so a request's time is rendering only

    out.write(b"ready\n")
    out.flush()
    while True:
        line = inp.readline()
        if not line:
            return
        req = json.loads(line)
        text = inp.read(req["n"])
        png = b""
        try:
            png = render(text, req["width"], req["max_pixels"], req["url"])
            head = {"ok": True, "n": len(png)}
        except TooLarge as e:
            head = {"ok": False, "pixels": True, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - cairosvg raises many types on bad documents
            head = {"ok": False, "pixels": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(head).encode() + b"\n" + png)
        out.flush()


if __name__ == "__main__":
    _serve()

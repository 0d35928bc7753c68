"""Cut one element out of an SVG scene as a picture of its own (the sprites of a KTuberling theme).

:class:`SvgScene` parses a scene once (``.svg`` or gzip ``.svgz``, with
defusedxml: no entities, no external references) and :meth:`SvgScene.render`
draws one element, found by its ``id``, as a square transparent PNG:

1. a small SVG document is made of the element, the ``<style>`` sheets of the
   scene, the elements it references (``url(#...)``, ``href="#..."``, followed
   transitively: gradients, clip paths, filters, ``<use>`` targets) put in
   ``<defs>``, and its ancestors as empty ``<g>`` wrappers keeping their
   attributes (transforms, inherited styles) less ``display:none`` -- a sprite
   is drawn by its id even when its layer is hidden, as KTuberling draws it;
2. CairoSVG draws it (with :func:`anybind.data.svg_process.references_resolved_once`, as
   anybind renders SVG) over the scene's canvas enlarged by half its size on
   every side (``PASS1_PIXELS`` on the longer side) to find the element's
   bounding box from the drawn pixels (alpha > 0);
3. it is drawn again with the view box set to the square around that box
   (plus ``MARGIN`` of its side) at ``size`` x ``size`` pixels.

Errors are :class:`~anybind.errors.DataError` with one line naming the file
and what is wrong; an element that draws nothing gives ``None``.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as XET

from ..data.svg import GZIP_MAGIC, inflate
from ..data.svg_process import references_resolved_once
from ..errors import DataError

__all__ = ["MAX_SVG_BYTES", "SvgScene", "visible_fraction"]

SVG_NS = "http://www.w3.org/2000/svg"
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_URL_RE = re.compile(r"url\(\s*[\"']?#([^)\"'\s]+)")
_NUM_RE = re.compile(r"^\s*([0-9.eE+-]+)\s*(px)?\s*$")
_DISPLAY_NONE_RE = re.compile(r"display\s*:\s*none\s*;?")
MAX_SVG_BYTES = 64 * 1024 * 1024  # a scene larger than this once unzipped is refused (a zip bomb)
PASS1_PIXELS = 2048
MARGIN = 0.04

XET.register_namespace("", SVG_NS)
XET.register_namespace("xlink", "http://www.w3.org/1999/xlink")


def _read_svg_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: unreadable ({e.strerror or e})") from None
    if data[:2] != GZIP_MAGIC:
        return data
    return inflate(data, MAX_SVG_BYTES, path)  # .svgz: capped before it is produced (a zip bomb)


def _refs(el: Any) -> set[str]:
    """Ids that ``el`` or its descendants reference."""
    out: set[str] = set()
    for node in el.iter():
        for k, v in node.attrib.items():
            if k in (_XLINK_HREF, "href"):
                if v.startswith("#"):
                    out.add(v[1:])
            elif "url(" in v:
                out.update(_URL_RE.findall(v))
        if node.tag == f"{{{SVG_NS}}}style" and node.text:
            out.update(_URL_RE.findall(node.text))
    return out


def _canvas(root: Any, path: Path) -> tuple[float, float, float, float]:
    vb = root.get("viewBox")
    if vb:
        try:
            x, y, w, h = (float(v) for v in re.split(r"[\s,]+", vb.strip()))
        except ValueError:
            raise DataError(f"{path}: unreadable viewBox {vb!r}") from None
    else:
        mw, mh = _NUM_RE.match(root.get("width") or ""), _NUM_RE.match(root.get("height") or "")
        if not (mw and mh):
            raise DataError(f"{path}: no viewBox and no width/height in pixels: cannot size the scene")
        x, y, w, h = 0.0, 0.0, float(mw.group(1)), float(mh.group(1))
    if not (w > 0 and h > 0):
        raise DataError(f"{path}: empty canvas ({w} x {h})")
    return x, y, w, h


class SvgScene:
    """An SVG scene whose elements can be drawn one at a time (see the module docstring)."""

    def __init__(self, path: str | Path):
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring

        self.path = Path(path)
        data = _read_svg_bytes(self.path)
        try:
            root = fromstring(data)
        except (XET.ParseError, DefusedXmlException, ValueError) as e:
            raise DataError(f"{self.path}: not a well-formed SVG ({type(e).__name__}: {e})") from None
        if root.tag != f"{{{SVG_NS}}}svg":
            raise DataError(f"{self.path}: root element is {root.tag!r}, not an SVG <svg>")
        self.root = root
        self.canvas = _canvas(root, self.path)
        self._parent = {c: p for p in root.iter() for c in p}
        self._ids: dict[str, Any] = {}
        for el in root.iter():
            i = el.get("id")
            if i and i not in self._ids:
                self._ids[i] = el
        self._styles = list(root.iter(f"{{{SVG_NS}}}style"))

    def has(self, element_id: str) -> bool:
        return element_id in self._ids

    def document(
        self, element_id: str, view: tuple[float, float, float, float], px: tuple[int, int]
    ) -> bytes:
        """A standalone SVG of one element over ``view`` (x, y, w, h) drawn at ``px`` pixels."""
        el = self._ids[element_id]
        need: set[str] = set()
        todo = list(_refs(el))
        while todo:
            i = todo.pop()
            if i in need or i not in self._ids or self._ids[i] is el:
                continue
            need.add(i)
            todo.extend(_refs(self._ids[i]))
        svg = XET.Element(
            f"{{{SVG_NS}}}svg",
            {
                "width": str(px[0]),
                "height": str(px[1]),
                "viewBox": " ".join(f"{v:.6g}" for v in view),
                "preserveAspectRatio": "none",
            },
        )
        for st in self._styles:
            svg.append(st)
        defs = XET.SubElement(svg, f"{{{SVG_NS}}}defs")
        for i in sorted(need):
            defs.append(self._ids[i])
        chain = []
        p = self._parent.get(el)
        while p is not None and p is not self.root:
            chain.append(p)
            p = self._parent.get(p)
        cur = svg
        for a in reversed(chain):
            attrs = {k: v for k, v in a.attrib.items() if k != "id"}
            if "style" in attrs:
                attrs["style"] = _DISPLAY_NONE_RE.sub("", attrs["style"])
            if attrs.get("display") == "none":
                del attrs["display"]
            cur = XET.SubElement(cur, a.tag, attrs)
        cur.append(el)
        return XET.tostring(svg)

    def _draw(self, element_id: str, view: tuple[float, float, float, float], px: tuple[int, int], png: bool):
        """The element drawn: an RGBA ``PIL.Image`` (``png``), else its alpha channel as a numpy array."""
        import cairosvg
        import numpy as np
        from cairosvg.parser import Tree
        from cairosvg.surface import PNGSurface
        from PIL import Image

        doc = self.document(element_id, view, px)
        try:
            with references_resolved_once():  # drawn as anybind renders SVG: an inherited gradient paints every use
                if png:
                    img = Image.open(io.BytesIO(cairosvg.svg2png(bytestring=doc)))
                    img.load()
                    return img.convert("RGBA")
                # the pass that only looks for the bounding box skips PNG encoding (4/5 of the time)
                surface = PNGSurface(Tree(bytestring=doc), None, 96).cairo
            surface.flush()
            stride, h = surface.get_stride(), surface.get_height()
            argb = np.frombuffer(surface.get_data(), dtype=np.uint8).reshape(h, stride)
            alpha_byte = 3 if sys.byteorder == "little" else 0  # cairo ARGB32 is native-endian
            return argb[:, alpha_byte : surface.get_width() * 4 : 4].copy()
        except Exception as e:  # cairosvg raises many types on what it cannot draw
            raise DataError(
                f"{self.path}: element {element_id!r} cannot be drawn ({type(e).__name__}: {e})"
            ) from None

    def render(self, element_id: str, size: int = 256):
        """Element ``element_id`` as a ``size`` x ``size`` RGBA ``PIL.Image``; None when it draws nothing."""
        import numpy as np

        if element_id not in self._ids:
            raise DataError(f"{self.path}: no element with id {element_id!r}")
        x, y, w, h = self.canvas
        view = (x - w / 2, y - h / 2, 2 * w, 2 * h)
        scale = PASS1_PIXELS / max(view[2], view[3])
        px = (max(1, round(view[2] * scale)), max(1, round(view[3] * scale)))
        alpha = self._draw(element_id, view, px, png=False)
        rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
        if rows.size == 0:
            return None
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        sx, sy = view[2] / px[0], view[3] / px[1]
        x0, y0 = view[0] + box[0] * sx, view[1] + box[1] * sy
        x1, y1 = view[0] + box[2] * sx, view[1] + box[3] * sy
        side = max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN) + 2 * max(sx, sy)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        img = self._draw(element_id, (cx - side / 2, cy - side / 2, side, side), (size, size), png=True)
        return img if img.getchannel("A").getbbox() is not None else None


def visible_fraction(img: Any, threshold: int = 48) -> float:
    """Share of a picture's drawn pixels that stand out on white (darkest channel >= ``threshold`` below 255)."""
    import numpy as np

    a = np.asarray(img.convert("RGBA"), dtype=np.float32)
    alpha = a[..., 3:4] / 255.0
    on_white = a[..., :3] * alpha + 255.0 * (1 - alpha)
    drawn = a[..., 3] > 0
    if not drawn.any():
        return 0.0
    visible = (255.0 - on_white.min(axis=2)) >= threshold
    return float(visible[drawn].mean())

"""The cost of stroking an SVG's shapes, in the work units of :mod:`anybind.data.svg`.

Cairo strokes a shape by building the outline of its stroke (a polygon around every segment,
every join and every cap) and filling it: the cost grows with the vertices times the stroke's
width in *output* pixels (each edge of the outline spans that many rows, a round join or cap is
an arc of that radius).  A 1.9 MB path of 190k segments with a 200-pixel round-joined stroke costs
over a minute while its path bytes alone count 95k units.  :class:`StrokeCosts` gives each drawn
element's stroke work:

    (vertices + 2 x subpaths + dashes) x width_px / PX_PER_WORK (ROUND or SHARP joins and caps)

where ``width_px`` is the inherited ``stroke-width`` scaled by every ``transform`` above the
element and by the document's scale to the output width, and ``dashes`` is the outline length
over the dash period (each dash has two caps).  Stroke properties set by a style sheet count for
every shape (their selectors are not matched); shapes inside definitions (drawn through ``<use>``,
which passes its stroke down) count with the widest stroke set on any ``<use>``.  The estimate
cannot see everything Cairo does (overlapping strokes cost more than linearly): the rendering's
time budget (:mod:`anybind.data.svg_pool`) bounds the rest.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

# Measured on a 2-core machine, 512 pixels wide: a round join or cap costs 0.5 us per vertex and pixel of
# width when strokes are spread out, up to 6 us when they pile up (20k segments of a 300-pixel zigzag: 10 s);
# miter and bevel joins 0.2 us.  The constants take the piled-up cost: all real SVGs stroke under 1,000 units.
#: vertex x output pixels of stroke width per work unit (~50 us), round joins or caps
PX_PER_WORK_ROUND = 10
#: the same for miter and bevel joins and butt or square caps
PX_PER_WORK_SHARP = 250
#: a scale (transform x document) is taken as at most this (a stroke is never wider than the output anyway)
MAX_SCALE = 1e6

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUM)
_LENGTH = re.compile(rf"\s*({_NUM})\s*(px|pt|pc|mm|cm|in|em|ex|%)?", re.I)
_TRANSFORM = re.compile(r"(matrix|scale|translate|rotate|skewX|skewY)\s*\(([^)]*)\)", re.I)
_PATH_TOKEN = re.compile(rf"([MmLlHhVvCcSsQqTtAaZz])|({_NUM})")
_UNITS = {"px": 1.0, "pt": 1.25, "pc": 15.0, "mm": 3.7795, "cm": 37.795, "in": 96.0, "em": 16.0, "ex": 8.0}
_SHAPES = frozenset({"path", "polyline", "polygon", "line", "rect", "circle", "ellipse"})
_DEFS = frozenset({"defs", "symbol", "pattern", "marker", "clipPath", "mask"})
_PROPS = ("stroke", "stroke-width", "stroke-linejoin", "stroke-linecap", "stroke-dasharray")
#: how many numbers each path command takes per segment
_ARITY = {"m": 2, "l": 2, "h": 1, "v": 1, "c": 6, "s": 4, "q": 4, "t": 2, "a": 7, "z": 0}


def _local(el: "Element") -> str:
    return el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""


def _props(el: "Element") -> dict[str, str]:
    """The stroke properties an element sets itself (presentation attributes, then its style attribute)."""
    out = {k: el.get(k) for k in _PROPS if el.get(k) is not None}
    for decl in (el.get("style") or "").split(";"):
        name, _, value = decl.partition(":")
        name = name.strip().lower()
        if name in _PROPS:
            out[name] = value.strip()
    return out


def _length(value: str | None, percent_of: float) -> float | None:
    m = _LENGTH.match(value or "")
    if not m:
        return None
    unit = (m.group(2) or "px").lower()
    x = abs(float(m.group(1)))
    return x * percent_of / 100 if unit == "%" else x * _UNITS.get(unit, 1.0)


def _scale(transform: str | None) -> float:
    """How much a ``transform`` scales lengths (the square root of its determinant)."""
    s = 1.0
    for name, args in _TRANSFORM.findall(transform or ""):
        v = [float(x) for x in _NUMBER.findall(args)]
        name = name.lower()
        if name == "matrix" and len(v) == 6:
            s *= math.sqrt(abs(v[0] * v[3] - v[1] * v[2]))
        elif name == "scale" and v:
            s *= math.sqrt(abs(v[0] * (v[1] if len(v) > 1 else v[0])))
    return min(s, MAX_SCALE) if math.isfinite(s) else MAX_SCALE


def _dash_period(value: str | None, percent_of: float) -> float | None:
    if not value or value.strip().lower() in ("none", "inherit"):
        return None
    parts = [_length(x, percent_of) for x in re.split(r"[\s,]+", value.strip()) if x]
    if not parts or any(p is None for p in parts):
        return None
    period = sum(parts) * (2 if len(parts) % 2 else 1)
    return period if period > 0 else None


def path_geometry(d: str) -> tuple[int, int, float]:
    """(vertices, subpaths, length of the control polygon) of path data: the control polygon is at least
    as long as the curves it controls."""
    x = y = sx = sy = 0.0
    vertices = subpaths = 0
    length = 0.0
    cmd, args = "", []

    def segment(c: str, a: list[float]) -> None:
        nonlocal x, y, sx, sy, vertices, subpaths, length
        rel, lc = c.islower(), c.lower()
        ox, oy = (x, y) if rel else (0.0, 0.0)
        if lc == "h":
            pts = [(a[0] + (x if rel else 0.0), y)]
        elif lc == "v":
            pts = [(x, a[0] + (y if rel else 0.0))]
        elif lc == "a":
            pts = [(a[5] + ox, a[6] + oy)]
        else:
            pts = [(a[i] + ox, a[i + 1] + oy) for i in range(0, len(a), 2)]
        if lc == "m":
            x, y = sx, sy = pts[0]
            subpaths += 1
            return
        for px, py in pts:
            length += math.hypot(px - x, py - y)
            x, y = px, py
        vertices += 1

    for letter, number in _PATH_TOKEN.findall(d):
        if letter:
            if letter in "Zz":
                length += math.hypot(sx - x, sy - y)
                x, y = sx, sy
                vertices += 1
            cmd, args = letter, []
            continue
        if not cmd or cmd in "Zz":
            continue
        args.append(float(number))
        if len(args) == _ARITY[cmd.lower()]:
            segment(cmd, args)
            args = []
            if cmd in "Mm":  # further pairs after a moveto are linetos
                cmd = "l" if cmd == "m" else "L"
    return vertices, subpaths, length if math.isfinite(length) else 1e300


def _shape_geometry(el: "Element", tag: str) -> tuple[int, int, float]:
    """(vertices, subpaths, outline length) of a basic shape or a path."""
    num = lambda k: _length(el.get(k), 0) or 0.0  # noqa: E731
    if tag == "path":
        return path_geometry(el.get("d") or "")
    if tag in ("polyline", "polygon"):
        v = [float(n) for n in _NUMBER.findall(el.get("points") or "")]
        pts = list(zip(v[0::2], v[1::2]))
        length = sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(pts, pts[1:]))
        return len(pts), 1, length
    if tag == "line":
        return 2, 1, math.hypot(num("x2") - num("x1"), num("y2") - num("y1"))
    if tag == "rect":
        return 4, 1, 2 * (num("width") + num("height"))
    if tag == "circle":
        return 4, 1, 2 * math.pi * num("r")
    return 4, 1, math.pi * (num("rx") + num("ry"))  # ellipse


class StrokeCosts:
    """The stroke work of every shape of one parsed document rendered ``width`` pixels wide."""

    def __init__(self, root: "Element", width: int):
        w = _length(root.get("width"), 0)
        box = [float(v) for v in _NUMBER.findall(root.get("viewBox") or "")]
        user_width = box[2] if len(box) == 4 and box[2] > 0 else (w or width)
        self.percent_of = user_width
        self.css = self._style_sheets(root)
        self.work: dict[int, int] = {}
        # what a <use> may pass down to the shapes in definitions: the widest stroke width in output pixels,
        # whether any sets a stroke paint, and whether any sets round joins or caps
        self.use_px, self.use_paint, self.use_round = 0.0, False, False
        deferred: list[tuple[Element, str, dict, float]] = []
        top = min(width / user_width, MAX_SCALE) if user_width else 1.0
        stack: list[tuple[Element, dict, float, bool]] = [(root, dict(self.css), top, False)]
        while stack:  # iterative: nesting depth is checked later, by the caller's walk
            el, inherited, scale, in_defs = stack.pop()
            tag = _local(el)
            props = {**inherited, **_props(el)}
            scale = min(scale * _scale(el.get("transform")) * self._viewport(el, tag, root), MAX_SCALE)
            in_defs = in_defs or tag in _DEFS
            if tag in _SHAPES:
                if in_defs:
                    deferred.append((el, tag, props, scale))
                else:
                    self.work[id(el)] = self._shape_work(el, tag, props, scale)
            elif tag == "use":  # what it passes down counts whether the paint is set there or on the shape
                self.use_px = max(self.use_px, self._width_px(props, scale, paint=False))
                self.use_paint = self.use_paint or self._width_px(props, scale) > 0
                self.use_round = self.use_round or self._round(props)
            stack.extend((child, props, scale, in_defs) for child in el)
        for el, tag, props, scale in deferred:  # inside definitions: drawn through <use>, with its stroke
            self.work[id(el)] = self._shape_work(el, tag, props, scale, deferred=True)

    def _viewport(self, el: "Element", tag: str, root: "Element") -> float:
        """How much a nested ``<svg>`` scales its content: its width over its viewBox's (its width defaults
        to the document's)."""
        if tag != "svg" or el is root:
            return 1.0
        box = [float(v) for v in _NUMBER.findall(el.get("viewBox") or "")]
        if len(box) != 4 or box[2] <= 0:
            return 1.0
        return (_length(el.get("width"), self.percent_of) or self.percent_of) / box[2]

    @staticmethod
    def _style_sheets(root: "Element") -> dict[str, str]:
        """Stroke properties set anywhere in the document's style sheets (the widest width, any paint)."""
        found: dict[str, str] = {}
        widest = 0.0
        for el in root.iter():
            if _local(el) != "style" or not el.text:
                continue
            for decl in re.split(r"[;{}]", el.text):
                name, _, value = decl.partition(":")
                name = name.strip().lower()
                if name == "stroke-width":
                    widest = max(widest, _length(value, 100) or 0.0)
                elif name in _PROPS and value.strip().lower() not in ("none", ""):
                    found[name] = value.strip()
        if widest:
            found["stroke-width"] = str(widest)
        return found

    def _width_px(self, props: dict, scale: float, paint: bool = True) -> float:
        """The stroke's width in output pixels (0 without a stroke paint, unless ``paint`` is False)."""
        if paint and str(props.get("stroke", "none")).strip().lower() in ("none", "transparent", ""):
            return 0.0
        w = _length(props.get("stroke-width", "1"), self.percent_of)
        return (1.0 if w is None else w) * scale

    @staticmethod
    def _round(props: dict) -> bool:
        return "round" in (props.get("stroke-linejoin", ""), props.get("stroke-linecap", ""))

    def _shape_work(self, el: "Element", tag: str, props: dict, scale: float, deferred: bool = False) -> int:
        # per vertex: its own stroke, or in definitions the widest of that and what a <use> may pass down
        px, round_ = self._width_px(props, scale), self._round(props)
        if deferred and (px > 0 or self.use_paint):
            px, round_ = max(px, self.use_px), round_ or self.use_round
        per_vertex = px / (PX_PER_WORK_ROUND if round_ else PX_PER_WORK_SHARP)
        if per_vertex <= 0:
            return 0
        period = _dash_period(props.get("stroke-dasharray"), self.percent_of)
        if period:
            vertices, subpaths, length = _shape_geometry(el, tag)
            dashes = min(length / period, 1e12)
        elif tag == "path":  # no length needed: counted, not walked
            d = el.get("d") or ""
            vertices, subpaths, dashes = len(_NUMBER.findall(d)) // 2, d.count("m") + d.count("M"), 0.0
        else:
            vertices, subpaths, _ = _shape_geometry(el, tag)
            dashes = 0.0
        return int(min((vertices + 2 * subpaths + 2 * dashes) * per_vertex, 1e15))

    def of(self, el: "Element") -> int:
        """The stroke work of drawing ``el`` once (0 for anything but a stroked shape)."""
        return self.work.get(id(el), 0)

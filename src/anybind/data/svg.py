"""SVG rasterisation with bounded cost: what CairoSVG is handed is checked first.

An SVG is a program: a small file can ask for unbounded work.  Before CairoSVG sees
a document, :func:`check_svg`

* inflates gzip-compressed SVG (``.svgz``) itself, refusing more than
  ``max_svg_bytes`` of text (CairoSVG would inflate any amount);
* parses it (``defusedxml``: no entities, no external DTDs) and estimates the
  rendering work: every element counts once, and every reference (``<use href="#a">``,
  ``fill="url(#p)"``, markers once per path vertex, ...) counts as a copy of what it
  points to, plus the document scan CairoSVG does to find it; a stroked shape also counts its
  vertices times its stroke's width in output pixels (:mod:`anybind.data.svg_stroke`).  More than
  ``max_svg_work`` units, references nested deeper than ``max_svg_depth`` or a
  reference cycle are refused;
* reads the header of every raster image embedded as a ``data:`` URI (nothing is
  decoded): a drawn total of more than ``max_pixels`` pixels is refused, and an
  embedded SVG is checked like the document itself, within the same budgets.

Then :func:`render_svg` renders onto a surface that refuses an output of more than
``max_pixels`` (a 1 x 10000 viewBox at 512 pixels wide is 512 x 5 million), in a worker
process killed past ``max_svg_seconds`` (:mod:`anybind.data.svg_pool`): no estimate miss can
cost more.  External references are never fetched (CairoSVG's safe fetcher draws them empty).
The limits are :class:`anybind.data.media.MediaLimits`.
"""

from __future__ import annotations

import base64
import io
import re
import zlib
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from ..errors import DataError, RenderRefused
from .limits import MediaLimits
from .svg_pool import render_in_worker
from .svg_stroke import StrokeCosts
from .svg_process import TooLarge, render

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


GZIP_MAGIC = b"\x1f\x8b"
#: the width SVGs are rendered at unless a caller asks for another (what the image encoders read)
SVG_WIDTH = 512
#: bumped whenever the pixels rendered from the same SVG bytes change (2: a gradient or pattern that inherits through
#: ``xlink:href`` paints every shape using it, 6b25dde; 3: also one defined inline, or inside a group shown several
#: times through ``<use>``).  It is part of an SVG file's feature-cache key
#: (:func:`anybind.encoders.base.content_key`), so features cached from an older rendering are not read back.
RENDER_VERSION = 3
_XLINK = "{http://www.w3.org/1999/xlink}href"
_URL_REF = re.compile(r"url\(\s*['\"]?#([^)'\"\s]+)")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
#: elements whose ``href="#id"`` CairoSVG resolves (finding the target by walking the document)
_RESOLVED = frozenset({"use", "tref", "pattern", "linearGradient", "radialGradient", "filter"})
#: elements drawn only where referenced, never where they stand
_DEFINITIONS = frozenset(
    {"linearGradient", "radialGradient", "pattern", "filter", "clipPath", "mask", "marker", "symbol"}
)
_MARKERS = ("marker", "marker-start", "marker-mid", "marker-end")


# One work unit is about what CairoSVG spends on one plain element (~50 us on a 2-core test machine).
#: work of one resolved ``href="#id"`` reference beyond its target's own (a new tree of the target is built)
REFERENCE_WORK = 2
#: bytes of path data (``d``, ``points``) per work unit (CairoSVG parses it in Python on every draw)
PATH_BYTES_PER_WORK = 20
#: elements walked per work unit when CairoSVG looks a reference target up (once per target: then cached)
SCAN_PER_WORK = 10
#: characters of text per work unit (each glyph is laid out in Python)
TEXT_CHARS_PER_WORK = 2
#: CSS rules per extra work unit on every element (each element is matched against the style sheet)
CSS_RULES_PER_WORK = 100
#: work of compositing a group (opacity, filter) or painting a mask: whole-surface pixel operations
GROUP_WORK, MASK_WORK = 3, 40


_TEXT = frozenset({"text", "tspan", "textPath", "tref", "a"})
_OPACITY = re.compile(r"(?:^|;)\s*opacity\s*:\s*([^;]+)")


def _own_work(el: "Element", tag: str) -> int:
    """Work of drawing ``el`` itself, once: its path data, its text, its compositing."""
    work = (len(el.get("d") or "") + len(el.get("points") or "")) // PATH_BYTES_PER_WORK
    if tag in _TEXT:
        work += 1 + (len(el.text or "") + sum(len(c.tail or "") for c in el)) // TEXT_CHARS_PER_WORK
    if len(el) and (el.get("filter") or el.get("mask") or _translucent(el)):
        work += GROUP_WORK
    return work


def _translucent(el: "Element") -> bool:
    m = _OPACITY.search(el.get("style") or "")
    value = m.group(1) if m else el.get("opacity")
    try:
        return value is not None and float(value) < 1
    except ValueError:
        return False


def _local(el: "Element") -> str:
    """An element's tag without its namespace ('' for comments and processing instructions)."""
    return el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


def inflate(data: bytes, cap: int, what: object, limit: str | None = None) -> bytes:
    """The content of a gzip stream (all members), refusing more than ``cap`` bytes before producing them
    (a :class:`~anybind.errors.RenderRefused` naming the media limit ``limit`` when the cap is one)."""
    out = bytearray()
    rest = data
    while rest[:2] == GZIP_MAGIC:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += d.decompress(rest, cap + 1 - len(out))
        except zlib.error as e:
            raise DataError(f"{what}: corrupt gzip-compressed SVG ({e})") from None
        if len(out) > cap:
            why = f"compressed SVG inflates to more than {_mb(cap)}"
            raise RenderRefused.over(what, why, limit) if limit else DataError(f"{what}: {why} (the limit)")
        if not d.eof:
            raise DataError(f"{what}: truncated gzip-compressed SVG")
        rest = d.unused_data
    return bytes(out)


def svg_head(data: bytes, n: int = 65536) -> bytes:
    """A document's first bytes as text: of a gzip stream, its first ``n`` inflated bytes (no more)."""
    if data[:2] != GZIP_MAGIC:
        return data
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        return d.decompress(data, n)
    except zlib.error:
        return b""


class _Budget:
    """What one document (with everything embedded in it) may still cost."""

    def __init__(self, limits: "MediaLimits", width: int):
        self.limits, self.width = limits, width
        self.text_bytes = 0

    def add_text(self, n: int, what: object) -> None:
        self.text_bytes += n
        if self.text_bytes > self.limits.max_svg_bytes:
            raise RenderRefused.over(what, f"more than {_mb(self.limits.max_svg_bytes)} of SVG text", "max_svg_bytes")


def check_svg(data: bytes, what: object, limits: "MediaLimits", width: int = SVG_WIDTH) -> bytes:
    """The SVG text of ``data`` (gzip inflated) once its size, work and embedded images are within ``limits``
    (rendered ``width`` pixels wide: stroke work grows with the output's scale).

    Raises :class:`~anybind.errors.RenderRefused` naming ``what`` and the limit when it is over one, and
    :class:`DataError` when it is corrupt; nothing is rendered or decoded.
    """
    budget = _Budget(limits, width)
    text = _text(data, what, budget)
    doc = _Doc(text, what, budget)
    doc.cost(doc.root, 0)
    return text


def _text(data: bytes, what: object, budget: _Budget) -> bytes:
    text = inflate(data, budget.limits.max_svg_bytes, what, "max_svg_bytes") if data[:2] == GZIP_MAGIC else data
    budget.add_text(len(text), what)
    return text


class _Doc:
    """One parsed SVG document and the memoised cost of each of its elements."""

    def __init__(self, text: bytes, what: object, budget: _Budget):
        from defusedxml import ElementTree

        try:
            root = ElementTree.fromstring(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
        except Exception as e:  # noqa: BLE001 - ParseError, EntitiesForbidden, ...: all mean a bad document
            raise DataError(f"{what}: corrupt SVG ({type(e).__name__}: {e})") from None
        self.what, self.budget, self.root = what, budget, root
        self.order: dict[int, int] = {}  # id(element) -> its position in document order
        self.ids: dict[str, Element] = {}
        for i, el in enumerate(root.iter()):
            self.order[id(el)] = i
            eid = el.get("id")
            if eid is not None and eid not in self.ids:
                self.ids[eid] = el
        self.memo: dict[tuple[int, bool], tuple[int, int]] = {}
        self.active: set[int] = set()
        rules = sum((el.text or "").count("{") for el in root.iter() if _local(el) == "style")
        self.css_work = rules // CSS_RULES_PER_WORK
        self.strokes = StrokeCosts(root, budget.width)
        self.scans = 0  # work of the first lookup of each reference target (CairoSVG caches the rest)
        self.looked_up: set[int] = set()

    def _refuse_work(self, work: int) -> None:
        lim = self.budget.limits
        if work + self.scans > lim.max_svg_work:
            raise RenderRefused.over(
                self.what, f"SVG too costly to render: estimated at more than {lim.max_svg_work:,} units of about "
                "one plain element, its references expanded and its paths and strokes drawn", "max_svg_work")

    def cost(self, el: "Element", level: int, fresh: bool = False) -> tuple[int, int]:
        """(work units, raster pixels drawn) of rendering ``el`` once, with its children and references.

        ``fresh``: drawn on a surface of its own (inside a pattern or a mask), where CairoSVG's cache of
        reference targets starts empty on every paint."""
        key = (id(el), fresh)
        if key in self.memo:
            return self.memo[key]
        lim = self.budget.limits
        if level > lim.max_svg_depth:
            raise RenderRefused.over(self.what, f"SVG nested or referenced over {lim.max_svg_depth} levels deep",
                                     "max_svg_depth")
        if id(el) in self.active:
            raise DataError(f"{self.what}: SVG references form a cycle (at element {el.get('id')!r})")
        self.active.add(id(el))
        tag = _local(el)
        inner = fresh or tag in ("pattern", "mask")
        work, pixels = 1 + self.css_work + _own_work(el, tag) + self.strokes.of(el), 0
        for child in el:
            if _local(child) in _DEFINITIONS:  # only parsed where it stands; drawn where it is referenced
                work += sum(1 for _ in child.iter())
                continue
            w, p = self.cost(child, level + 1, inner)
            work, pixels = work + w, pixels + p
            self._refuse_work(work)
        href = el.get(_XLINK) or el.get("href")
        if href:
            w, p = self._href(el, tag, href.strip(), level, inner)
            work, pixels = work + w, pixels + p
        w, p = self._url_refs(el, level, fresh)
        work, pixels = work + w, pixels + p
        self._refuse_work(work)
        if pixels > lim.max_pixels:
            raise RenderRefused.over(self.what, f"the images embedded in this SVG draw {pixels:,} pixels; at most "
                                     f"{lim.max_pixels:,} are decoded", "max_pixels")
        self.active.discard(id(el))
        self.memo[key] = (work, pixels)
        return work, pixels

    def _url_refs(self, el: "Element", level: int, fresh: bool) -> tuple[int, int]:
        """Paint servers, clip paths, masks, filters and markers used (``url(#id)``): each is drawn again."""
        work = pixels = 0
        for name, value in el.attrib.items():
            if "url(" not in value:
                continue
            times = self._vertices(el) if name in _MARKERS or (name == "style" and "marker" in value) else 1
            for ref in _URL_REF.findall(value):
                target = self.ids.get(ref)
                if target is not None and id(target) not in self.active:  # a self-reference CairoSVG ignores
                    w, p = self.cost(target, level + 1, fresh)
                    w += MASK_WORK if _local(target) == "mask" else 0
                    work, pixels = work + w * times, pixels + p * times
        return work, pixels

    def _href(self, el: "Element", tag: str, href: str, level: int, fresh: bool) -> tuple[int, int]:
        if href.startswith("#") and tag in _RESOLVED:
            target = self.ids.get(href[1:])
            if target is None:
                return 0, 0
            w, p = self.cost(target, level + 1, fresh)
            # CairoSVG builds a tree of the target, walking the document to it (a gradient or pattern
            # inheriting from another: to itself); the tree is cached for the document, but not on a
            # pattern's or a mask's own surface, made afresh on every paint
            walked = target if tag in ("use", "tref") else el
            scan = self.order[id(walked)] // SCAN_PER_WORK
            if fresh:
                return w + REFERENCE_WORK + scan, p
            if id(walked) not in self.looked_up:
                self.looked_up.add(id(walked))
                self.scans += scan
            return w + REFERENCE_WORK, p
        if href.startswith("data:") and tag in ("image", "use", "feImage"):
            return self._embedded(href, level)
        return 0, 0  # external: never fetched (drawn empty)

    def _embedded(self, uri: str, level: int) -> tuple[int, int]:
        """Cost of a ``data:`` URI drawn as an image: a raster's pixels (from its header) or an SVG's work."""
        head, _, payload = uri.partition(",")
        try:  # as urllib decodes it for CairoSVG
            blob = unquote_to_bytes(payload)
            blob = base64.decodebytes(blob) if head.endswith(";base64") else blob
        except ValueError as e:
            raise DataError(f"{self.what}: an embedded image is not valid base64 ({e})") from None
        if len(blob) < 5:
            return 1, 0
        svg = blob[:2] == GZIP_MAGIC or b"<svg" in blob or looks_like_svg(blob)
        if svg and not blob.startswith(b"\x89PNG"):  # what CairoSVG draws as an SVG (a PNG is a PNG first)
            doc = _Doc(_text(blob, self.what, self.budget), self.what, self.budget)
            return doc.cost(doc.root, level + 1)
        return 1, self._raster_pixels(blob)

    def _raster_pixels(self, blob: bytes) -> int:
        import warnings

        from PIL import Image

        lim = self.budget.limits
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(blob)) as im:
                    w, h = im.size
        except Image.DecompressionBombError as e:
            raise RenderRefused.over(self.what, f"an image embedded in this SVG is too large ({e})", "max_pixels") from None
        except Exception:  # noqa: BLE001 - unreadable: CairoSVG reports (or skips) it when drawing
            return 0
        if w * h > lim.max_pixels:
            raise RenderRefused.over(self.what, f"an image embedded in this SVG has {w}x{h} pixels; at most "
                                     f"{lim.max_pixels:,} are decoded", "max_pixels")
        return w * h

    @staticmethod
    def _vertices(el: "Element") -> int:
        """About how many vertices a marker is drawn at (one per coordinate pair of the shape)."""
        d = el.get("d") or el.get("points") or ""
        return max(2, len(_NUMBER.findall(d)) // 2 + 1)


_DOC_URL = "file:///anybind-svg/document.svg"


def render_svg(data: bytes, what: object, width: int, limits: "MediaLimits") -> bytes:
    """PNG bytes of an SVG (plain or gzip-compressed) ``width`` pixels wide, after :func:`check_svg`.

    With ``limits.max_svg_seconds`` it is rendered in a worker process killed past that many seconds
    (:mod:`anybind.data.svg_pool`), else in this process."""
    text = check_svg(data, what, limits, width)
    try:
        import cairosvg  # noqa: F401
    except ImportError:  # pragma: no cover - cairosvg is a core dependency
        raise DataError(f"{what}: SVG needs the 'cairosvg' package") from None
    # a document URL turns on CairoSVG's cache of reference targets (without one, every <use> walks the
    # whole document again: 10x slower on Open Clip Art); relative references resolve under it and, not
    # being data: URIs, are still never fetched
    if limits.max_svg_seconds:
        return render_in_worker(text, what, width, limits.max_pixels, _DOC_URL, limits.max_svg_seconds)
    try:
        return render(text, width, limits.max_pixels, _DOC_URL)
    except TooLarge as e:
        raise RenderRefused.over(what, str(e), "max_pixels") from None
    except Exception as e:  # noqa: BLE001 - cairosvg raises many types on bad documents
        raise DataError(f"{what}: corrupt SVG ({type(e).__name__}: {e})") from None


def looks_like_svg(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) is SVG text, or gzip-compressed SVG text (``.svgz``).

    A gzip stream is judged by its first inflated bytes (at most 64 KB are inflated), not by the
    name stored in its header."""
    if data[:2] == GZIP_MAGIC:
        data = svg_head(data)
        if data[:2] == GZIP_MAGIC:
            return False
    head = data[:2048].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head) or b"<svg" in head[:1024]:
        return True
    # a prolog, DOCTYPE or comments can push the root further (Open Clip Art: up to 4 KB of comments)
    return head.startswith((b"<?xml", b"<!doctype", b"<!--")) and b"<svg" in data[:65536].lower()

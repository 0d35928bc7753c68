"""Errors anybind raises on purpose; each message names the record or file and what is wrong."""

from __future__ import annotations


_ESCAPES = {i: f"\\x{i:02x}" for i in range(32)} | {ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x7F: "\\x7f"}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (0x85, 0x2028, 0x2029)}  # line breaks to str.splitlines


class AnybindError(Exception):
    """Base class: anything anybind reports to the user as a clear message.

    The message is always one line: a value quoted from a record or a file that holds a line break or
    another control character is shown escaped (``\\n``), so that one problem is one line to grep.
    """

    def __str__(self) -> str:
        return super().__str__().translate(_ESCAPES)


class DataError(AnybindError, ValueError):
    """A record, file or manifest is unusable (named in the message)."""


class RenderTimeout(DataError):
    """A file whose rendering ran past its time budget (an SVG over ``max_svg_seconds``): not rendered, but not
    known to be corrupt -- it may render with a larger budget or on a less busy machine."""


class LimitRefused(DataError):
    """A file refused before it is decoded because decoding it would pass one of the media limits (a raster image
    of more than ``MediaLimits.max_pixels`` or PIL's decompression-bomb limit, a video over ``max_video_pixels`` /
    ``max_video_seconds``), or whose decoding stopped at one (``max_video_frames``): not known to be corrupt -- it
    may be read under a larger limit.  The message names the file, the limit and how to raise it (:meth:`over`)."""

    #: what is not done to the file (``not decoded: refused before decoding``)
    DONE, DOING, DO = "decoded", "decoding", "decode"

    @classmethod
    def over(cls, what: object, why: str, limit: str, *, also: str = "", stopped: bool = False) -> "LimitRefused":
        """``<what>: <why> (the limit, <limit>); not decoded: refused before decoding (...how to raise it)``;
        ``stopped``: met while decoding (a video's frame count), ``...; not decoded: stopped while decoding (...)``;
        ``also``: what else must be raised, after the limit's name (`` and PIL.Image.MAX_IMAGE_PIXELS``)."""
        serve = f", or ServeConfig.{limit} in the service" if limit in _SERVE_LIMITS else ""
        when = f"stopped while {cls.DOING}" if stopped else f"refused before {cls.DOING}"
        return cls(f"{what}: {why} (the limit, {limit}); not {cls.DONE}: {when} (to {cls.DO} it, raise {limit}{also}: "
                   f"anybind.data.limits.using_limits(MediaLimits({limit}=...)){serve})")


class RenderRefused(LimitRefused):
    """A file refused before rendering because rendering it would pass one of the media limits (an SVG whose
    estimated work, text, nesting or drawn pixels are over ``MediaLimits.max_svg_work`` / ``max_svg_bytes`` /
    ``max_svg_depth`` / ``max_pixels``): not known to be corrupt -- it may render under a larger limit.  The
    message names the file, the limit and how to raise it (:meth:`over`: ``...; not rendered: refused before
    rendering (to render it, raise ...)``)."""

    DONE, DOING, DO = "rendered", "rendering", "render"


class RendererUnavailable(DataError):
    """A file not rendered because its renderer could not run (the SVG renderer process did not start in time on
    a busy machine, or could not be started at all): the file itself was not read, so nothing is known to be wrong
    with it -- try again later.  The service answers 503 (retry), not 400."""


#: the words :func:`unusable_file` recognises a :class:`RenderTimeout`'s message by, where only its text travels
#: (a feature cache's per-item reasons are strings)
RENDER_TIMEOUT_MARK = "to render (the time budget"
#: the words a :class:`RenderRefused`'s message holds, for the same purpose
RENDER_REFUSED_MARK = "; not rendered: refused before rendering"
#: the words a :class:`LimitRefused`'s message about a file refused before decoding holds, for the same purpose
DECODE_REFUSED_MARK = "; not decoded: refused before decoding"
#: the words a :class:`LimitRefused`'s message about a file whose decoding passed a limit (a video's frame count) holds
DECODE_STOPPED_MARK = "; not decoded: stopped while decoding"
#: the media limits the service sets from its own ``ServeConfig`` fields of the same name
_SERVE_LIMITS = ("max_pixels", "max_svg_work", "max_video_seconds")
#: the words a :class:`RendererUnavailable`'s message holds, for the same purpose (and the service's 503)
RENDERER_UNAVAILABLE_MARK = "not rendered: the SVG renderer process"


def renderer_unavailable(why: "str | BaseException") -> bool:
    """Whether ``why`` (an error, or its message passed on as text or wrapped in another error's message) is a
    :class:`RendererUnavailable`: a file that was not read, not a file found unusable."""
    return isinstance(why, RendererUnavailable) or RENDERER_UNAVAILABLE_MARK in str(why)


def render_refused(why: "str | BaseException") -> bool:
    """Whether ``why`` (an error, or its message as text) is a :class:`LimitRefused` (a :class:`RenderRefused` or a
    raster refused before decoding): a file over a media limit, not a corrupt one."""
    return isinstance(why, LimitRefused) or any(m in str(why) for m in (RENDER_REFUSED_MARK, DECODE_REFUSED_MARK,
                                                                         DECODE_STOPPED_MARK))


def unusable_file(modality: str, why: "str | BaseException") -> str:
    """The one-line reason a record is skipped for its ``modality`` file: ``render timed out for <modality>: ...``
    for a :class:`RenderTimeout` (the file and the budget are in its message), ``render refused by a limit for
    <modality>: ...`` for a :class:`RenderRefused` (the file and the limit are in its message), ``decode refused by
    a limit for <modality>: ...`` for another :class:`LimitRefused` (a raster over ``max_pixels``, a video over one of
    its limits), ``SVG renderer unavailable for <modality>: ...`` for a :class:`RendererUnavailable` (the file was
    not read: try again),
    ``corrupt file for <modality>: ...`` for anything else that cannot be decoded."""
    if renderer_unavailable(why):
        kind = "SVG renderer unavailable"
    elif isinstance(why, RenderTimeout) or RENDER_TIMEOUT_MARK in str(why):
        kind = "render timed out"
    elif render_refused(why):
        render = isinstance(why, RenderRefused) or RENDER_REFUSED_MARK in str(why)
        kind = "render refused by a limit" if render else "decode refused by a limit"
    else:
        kind = "corrupt file"
    return f"{kind} for {modality}: {why}"


class EncoderError(AnybindError, RuntimeError):
    """An encoder cannot be built, or returned something unusable."""


class SpaceError(AnybindError, RuntimeError):
    """A saved space is inconsistent with what it is used with."""


class OutputError(AnybindError, ValueError):
    """An output path that writing there could lose data at (a file, a foreign folder, an artefact without overwrite)."""


class CaptionError(AnybindError, RuntimeError):
    """A captioner or its language model cannot be built, loaded or used (named in the message)."""


class FederationError(AnybindError, RuntimeError):
    """A federation step that would break its protocol (a message carrying what it may not, named in the message)."""

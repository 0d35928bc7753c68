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
        serve = f", or in the service {serve_limit(limit)}" if limit in _SERVE_LIMITS else ""
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


#: the media limits the service sets from its own ``ServeConfig`` fields of the same name
_SERVE_LIMITS = ("max_pixels", "max_svg_work", "max_video_seconds")
#: the ``ServeConfig`` fields ``anybind serve`` sets, and its flag for each (``--max-upload-mb`` is in MiB); checked
#: against the CLI by tests/test_serve_limit_names.py
SERVE_FLAGS = {
    "max_upload_bytes": "--max-upload-mb", "max_json_bytes": "--max-json-bytes", "max_pixels": "--max-pixels",
    "concurrency": "--concurrency", "max_queue": "--max-queue", "queue_timeout": "--queue-timeout",
    "refresh_seconds": "--refresh-seconds", "batch_wait_ms": "--batch-wait-ms", "max_batch": "--max-batch",
    "max_inflight_pixels": "--max-inflight-pixels", "max_batch_for": "--max-batch-for",
    "torch_threads": "--torch-threads",
}


def serve_limit(field: str) -> str:
    """A service limit as messages name it: the ``anybind serve`` flag a CLI user sets and the ``ServeConfig``
    field a library user sets (``anybind serve --max-json-bytes, ServeConfig.max_json_bytes``), or the field alone
    where no flag sets it."""
    flag = SERVE_FLAGS.get(field)
    return f"anybind serve {flag}, ServeConfig.{field}" if flag else f"ServeConfig.{field}"


#: the kinds of unusable file a :class:`Reason` carries by name (where only text travels: a Ray Data column)
_KINDS: dict[str, type[DataError]] = {c.__name__: c for c in (DataError, RenderTimeout, LimitRefused, RenderRefused,
                                                              RendererUnavailable)}


class Reason(str):
    """The one-line reason an item could not be used, as text (the error's message), that keeps the class of the
    error behind it (:attr:`error`): a feature cache's per-item reasons and the audit's image prints are these.  What
    kind of failure it is (:func:`unusable_file`, :func:`render_refused`, :func:`renderer_unavailable`) is read from
    that class, never from words in the text: the text holds the file's name, which may hold any words.
    ``Reason(text, kind)`` rebuilds one from :attr:`kind` (a class name) where only text travels; it survives
    pickling."""

    error: type[BaseException]

    def __new__(cls, text: str, error: "type[BaseException] | str" = DataError) -> "Reason":
        self = super().__new__(cls, text)
        self.error = _KINDS.get(error, DataError) if isinstance(error, str) else error
        return self

    @classmethod
    def of(cls, e: BaseException) -> "Reason":
        """The reason of error ``e``: its message, and its class."""
        return cls(str(e), type(e))

    @property
    def kind(self) -> str:
        """The name of the nearest kind of unusable file :attr:`error` is (``DataError`` for any other error)."""
        return next((c.__name__ for c in self.error.__mro__ if _KINDS.get(c.__name__) is c), "DataError")

    def __reduce__(self):
        return (Reason, (str(self), self.error))


def _is(why: "str | BaseException", kind: type[BaseException]) -> bool:
    """Whether ``why`` -- an error, or a :class:`Reason` -- is a ``kind``; plain text tells nothing (False)."""
    if isinstance(why, BaseException):
        return isinstance(why, kind)
    return isinstance(why, Reason) and issubclass(why.error, kind)


def renderer_unavailable(why: "str | BaseException") -> bool:
    """Whether ``why`` (an error or its :class:`Reason`) is a :class:`RendererUnavailable`: a file that was not read,
    not a file found unusable."""
    return _is(why, RendererUnavailable)


def render_refused(why: "str | BaseException") -> bool:
    """Whether ``why`` (an error or its :class:`Reason`) is a :class:`LimitRefused` (a :class:`RenderRefused` or a
    raster refused before decoding): a file over a media limit, not a corrupt one."""
    return _is(why, LimitRefused)


def not_read_kind(e: BaseException, default: "type[AnybindError]") -> "type[AnybindError]":
    """The class to raise error ``e`` again as, under another message: :class:`RendererUnavailable` where ``e`` is one
    (the file was not read: the service answers 503 and retry, not 400), else ``default``."""
    return RendererUnavailable if renderer_unavailable(e) else default


def unusable_kind(e: DataError) -> type[DataError]:
    """The class to raise :class:`DataError` ``e`` again as, under another message (a clip's frame, a batch): the
    nearest kind of unusable file it is (:class:`RenderTimeout`, :class:`LimitRefused`, ...; else
    :class:`DataError`), so that what reads it later does not take a refused or unread file for a corrupt one."""
    return _KINDS[Reason.of(e).kind]


def render_timed_out(why: "str | BaseException") -> bool:
    """Whether ``why`` (an error or its :class:`Reason`) is a :class:`RenderTimeout`: a file not read in time."""
    return _is(why, RenderTimeout)


def unusable_file(modality: str, why: "str | BaseException") -> str:
    """The one-line reason a record is skipped for its ``modality`` file: ``render timed out for <modality>: ...``
    for a :class:`RenderTimeout` (the file and the budget are in its message), ``render refused by a limit for
    <modality>: ...`` for a :class:`RenderRefused` (the file and the limit are in its message), ``decode refused by
    a limit for <modality>: ...`` for another :class:`LimitRefused` (a raster over ``max_pixels``, a video over one of
    its limits), ``SVG renderer unavailable for <modality>: ...`` for a :class:`RendererUnavailable` (the file was
    not read: try again),
    ``corrupt file for <modality>: ...`` for anything else that cannot be decoded (plain text included: the kind is
    read from the error's class, see :class:`Reason`)."""
    if renderer_unavailable(why):
        kind = "SVG renderer unavailable"
    elif render_timed_out(why):
        kind = "render timed out"
    elif render_refused(why):
        kind = "render refused by a limit" if _is(why, RenderRefused) else "decode refused by a limit"
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

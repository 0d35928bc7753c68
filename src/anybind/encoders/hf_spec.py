"""The spec of a ``transformers`` encoder (:mod:`anybind.encoders.hf`): its options, its local-folder hash."""

from __future__ import annotations

from contextlib import contextmanager

import hashlib
import inspect
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EncoderError
from .base import sha256_file
from .chunks import CHUNK_OPTIONS, ChunkPolicy, parse_chunk_option
from .hf_audio import parse_window

POOLS = ("auto", "cls", "mean", "pooler")
OPTIONS = ("pool", "layer", "revision", "trust_remote_code", "device", *CHUNK_OPTIONS, "window")
#: files of a local model folder whose bytes make its identity (README, .git, caches are left out)
HASHED_SUFFIXES = {".safetensors", ".bin", ".json", ".txt", ".model", ".tiktoken"}


@dataclass(frozen=True)
class HfOptions:
    pool: str = "auto"
    layer: int = -1
    revision: str | None = None
    trust_remote_code: bool = False
    #: None: the process's runtime (``--device``, see :mod:`anybind.encoders.device`)
    device: str | None = None
    chunk: ChunkPolicy = ChunkPolicy()
    #: audio: ``auto`` (the extractor's own length), ``off`` or seconds (:mod:`anybind.encoders.hf_audio`)
    window: str = "auto"


def _err(spec: str, msg: str) -> EncoderError:
    return EncoderError(f"encoder {spec!r}: {msg}")


def parse_hf_name(spec: str, name: str) -> tuple[str, HfOptions]:
    """``"<repo or folder>[@k=v,...]"`` -> (source, options); a bad option: EncoderError naming the spec."""
    source, opts = name, ""
    head, sep, tail = name.rpartition("@")
    if sep and ("=" in tail or not tail):
        source, opts = head, tail
    if not source.strip():
        raise _err(spec, "hf/ needs a hub repo id or a model folder, e.g. image:hf/facebook/dinov2-small")
    kw: dict[str, Any] = {}
    chunk: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in opts.split(","))):
        key, eq, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in OPTIONS or not eq or not value:
            why = f"unknown option {key!r}" if key not in OPTIONS else f"option {key!r} needs a value"
            raise _err(spec, f"{why} (options: {', '.join(OPTIONS)}, as @k=v,k=v)")
        if key == "pool":
            if value not in POOLS:
                raise _err(spec, f"pool={value!r} is not one of {', '.join(POOLS)}")
            kw[key] = value
        elif key == "layer":
            try:
                kw[key] = int(value)
            except ValueError:
                raise _err(spec, f"layer={value!r} is not an integer (-1 is the last)") from None
        elif key == "trust_remote_code":
            if value.lower() not in ("true", "false"):
                raise _err(spec, f"trust_remote_code={value!r}: use true or false")
            kw[key] = value.lower() == "true"
        elif key == "device":
            if value not in ("cpu", "auto", "mps") and not (value == "cuda" or value.startswith("cuda:")):
                raise _err(spec, f"device={value!r}: use cpu, cuda, cuda:N, mps or auto")
            kw[key] = value
        elif key in CHUNK_OPTIONS:
            parse_chunk_option(spec, key, value, chunk)
        elif key == "window":
            kw[key] = parse_window(spec, value)
        else:
            kw[key] = value
    return source.strip(), HfOptions(**kw, chunk=ChunkPolicy(**chunk))


#: the keyword names each forward function takes (None: it takes ``**kwargs``), by the function under a bound method
_PARAMS: "weakref.WeakKeyDictionary[Any, frozenset[str] | None]" = weakref.WeakKeyDictionary()


def accepted(fn: Any, inputs: dict) -> dict:
    """The inputs ``fn`` takes (a tokenizer's ``token_type_ids`` are not every model's).  The signature is read once
    per function (``inspect.signature`` on every batch was a visible share of a small model's forward)."""
    key = getattr(fn, "__func__", fn)
    try:
        names = _PARAMS[key]
    except (KeyError, TypeError):  # TypeError: an object that cannot be weakly referenced
        params = inspect.signature(fn).parameters
        names = None if any(p.kind is p.VAR_KEYWORD for p in params.values()) else frozenset(params)
        try:
            _PARAMS[key] = names
        except TypeError:
            pass
    if names is None:
        return inputs
    return {k: v for k, v in inputs.items() if k in names}


def files_sha256(folder: Path, code: bool = False) -> str:
    """SHA-256 over the names and bytes of a model folder's weight, config and tokenizer files; with ``code`` (a
    model loaded with ``trust_remote_code``) its Python files too, since they run and a change to them changes the
    features."""
    h = hashlib.sha256()
    suffixes = HASHED_SUFFIXES | {".py"} if code else HASHED_SUFFIXES
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and p.suffix in suffixes and not any(s.startswith(".") for s in rel.parts):
            h.update(f"{rel.as_posix()}:{sha256_file(p)};".encode())
    return h.hexdigest()


@contextmanager
def no_loader_bars():
    """transformers' own tqdm bars ("Loading weights") off while a model loads: not the user's business (the
    command's progress bars say what runs); the previous setting is restored after."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - sentence-transformers always brings transformers
        yield
        return
    was = hf_logging.is_progress_bar_enabled()
    if was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()

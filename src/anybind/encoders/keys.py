"""Content keys of encoder inputs: what the feature cache keys an item by (its bytes, never its ``repr``), and the
file hashes that encoder identities are made of.

* :func:`content_key` -- the cache key of one item (a file's bytes, a string, an array, a PIL image, JSON);
* :func:`current_key` / :func:`file_digest` -- a stored file key as it would be made today, and the file hash in it;
* :func:`sha256_file` / :func:`sha256_dir` -- hashes of weights files and folders, for identities.

Re-exported from :mod:`anybind.encoders.base`, where plugin authors have imported them from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.files import open_regular, remembered_key
from ..data.media import upright
from ..data.svg import RENDER_VERSION, looks_like_svg
from ..errors import DataError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (used for identities and cache keys).

    Only a regular file is opened: a missing path, a folder or a FIFO is a
    :class:`~anybind.errors.DataError` naming it (a FIFO would block the read forever).
    """
    return _sha256_and_head(path, chunk)[0]


def _sha256_and_head(path: str | Path, chunk: int = 1 << 20) -> tuple[str, bytes]:
    """A file's hex SHA-256 and its first block (at most ``chunk`` bytes), read once."""
    h = hashlib.sha256()
    head = b""
    with open_regular(path) as f:
        while True:
            try:
                block = f.read(chunk)
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
            if not block:
                break
            if not head:
                head = block
            h.update(block)
    return h.hexdigest(), head


def file_digest(key: str | None) -> str | None:
    """The SHA-256 of a file's bytes inside its :func:`content_key` (``None`` for a key of anything but a file)."""
    if not key or not key.startswith("f:"):
        return None
    digest = key[2:].split(";", 1)[0]
    return digest if len(digest) == 64 else None


def current_key(key: str, source: str | Path, sniff: bool = True) -> str | None:
    """A stored file key as :func:`content_key` would make it today: an SVG's key from an older renderer (another
    ``;svg-render=`` version, or, with ``sniff``, no tag at all: keyed before SVG keys named their renderer, so the
    source is read to tell) becomes the source's key now, so that features cached from the old rendering are not read
    back.  Any other key is returned as it is, and so is a key whose source now holds other bytes (the stored key is
    all there is to go by); ``None`` when the source had to be read and could not be (the caller keeps the stored key
    and says so)."""
    if not key.startswith("f:"):
        return key
    digest, _, tag = key[2:].partition(";")
    if tag == f"svg-render={RENDER_VERSION}" or (not tag and not sniff):
        return key
    try:
        if not tag:  # is it an SVG?
            with open_regular(source) as f:
                if not looks_like_svg(f.read(1 << 16)):
                    return key
        new = content_key(source)
    except (DataError, OSError):
        return None
    return new if file_digest(new) == digest else key


def sha256_dir(path: str | Path) -> str:
    """Hex SHA-256 over every file (names and bytes) below a folder, in order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(sha256_file(p).encode())
    return h.hexdigest()


def content_key(item: Any, input_kind: str = "file") -> str:
    """The feature cache's key of an item's *content*, never of its ``repr``.

    * a path (for an encoder that reads files): ``"f:" + sha256(file bytes)``; an SVG file (sniffed from its
      content, also gzip-compressed) adds ``";svg-render=" + RENDER_VERSION`` (:data:`anybind.data.svg.RENDER_VERSION`),
      so features of an older rendering of the same bytes are never read back (see :func:`file_digest`);
    * a string or a number: ``"s:" + sha256(its text)``;
    * bytes: ``"b:" + sha256(bytes)``;
    * an array (numpy, torch, or a nested list of numbers): ``"a:" + sha256(dtype, shape, bytes)``;
    * a PIL image: ``"p:" + sha256(mode, size, palette, pixel bytes)`` of the picture turned upright by its EXIF
      orientation tag (:func:`~anybind.data.media.upright`, what image encoders decode it to; one without a tag is
      keyed by its pixels as they are);
    * a dict or list of plain JSON values: ``"j:" + sha256(canonical JSON)``.

    Anything else cannot be keyed by content and raises :class:`DataError` (a ``repr`` holds memory addresses,
    and numpy's elides the middle of large arrays: two different items would share a key).
    """
    if isinstance(item, Path) or (isinstance(item, str) and input_kind == "file"):
        return remembered_key(item, _file_key)  # read once per unchanged file within data.files.file_keys_remembered
    if isinstance(item, bool) or item is None:
        raise DataError(f"cannot use {item!r} as an item: expected {input_kind} content")
    if isinstance(item, (str, int, float, np.integer, np.floating)):
        return "s:" + hashlib.sha256(str(item).encode("utf-8")).hexdigest()
    if isinstance(item, (bytes, bytearray, memoryview)):
        return "b:" + hashlib.sha256(bytes(item)).hexdigest()
    if hasattr(item, "detach") and hasattr(item, "cpu") and hasattr(item, "numpy"):  # a torch tensor
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        return "a:" + _array_digest(item)
    if _is_pil_image(item):
        item = upright(item)
        h = hashlib.sha256(f"{item.mode}|{item.size[0]}x{item.size[1]}|".encode())
        palette = item.getpalette() if item.mode == "P" else None
        if palette:
            h.update(bytes(palette))
        h.update(item.tobytes())
        return "p:" + h.hexdigest()
    if isinstance(item, (list, tuple)):
        arr = _numeric_array(item)
        if arr is not None:
            return "a:" + _array_digest(arr)
    if isinstance(item, (list, tuple, dict)):
        try:
            text = json.dumps(item, sort_keys=True, allow_nan=True, separators=(",", ":"))
        except (TypeError, ValueError):
            pass
        else:
            return "j:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
    raise DataError(
        f"cannot key an in-memory {type(item).__name__} by its content for the feature cache "
        "(pass a path, a string, bytes, an array or a PIL image)"
    )


def _file_key(path: str | Path) -> str:
    digest, head = _sha256_and_head(path)
    return f"f:{digest};svg-render={RENDER_VERSION}" if looks_like_svg(head) else "f:" + digest


def _array_digest(a: np.ndarray) -> str:
    if a.dtype == object:
        raise DataError(f"cannot key an object array of shape {a.shape} by its content (use a numeric dtype)")
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def _numeric_array(item: list | tuple) -> np.ndarray | None:
    """A nested list of plain numbers as an array (None when it holds anything else or is ragged)."""
    try:
        arr = np.asarray(item)
    except (ValueError, TypeError):
        return None
    return arr if arr.dtype.kind in "biuf" and arr.size else None


def _is_pil_image(item: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        return False
    return isinstance(item, Image.Image)

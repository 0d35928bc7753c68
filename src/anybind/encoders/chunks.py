"""Long texts: chunks of tokens with overlap, encoded one by one and pooled into one vector.

Used by the ``transformers`` text encoder (``text:hf/...``) and the sentence-transformers ones
(``text:minilm``, ``text:<name or folder>``).  A text whose tokens fit in the model's limit is encoded
exactly as before (bit-identical).  A longer one -- which used to be silently truncated -- is cut into
chunks of ``chunk_size`` tokens (default: the model's limit less its special tokens) whose starts are
``chunk_stride`` tokens apart (default: three quarters of the size, so neighbours overlap by a quarter;
the last chunk ends at the last token); each chunk gets the model's special tokens, is encoded like a
short text, and the text's vector is the mean of its chunks' vectors **weighted by their token counts**
(a short tail chunk counts for little).  A normalising encoder (sentence-transformers) normalises the
pooled vector again.

Spec options (``@chunk=on|off,chunk_size=N,chunk_stride=N``); the policy is part of the identity.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EncoderError

CHUNK_OPTIONS = ("chunk", "chunk_size", "chunk_stride")


@dataclass(frozen=True)
class ChunkPolicy:
    """How a text longer than the model's limit is encoded (see the module docstring)."""

    on: bool = True
    size: int = 0  # tokens per chunk; 0: the model's limit less its special tokens
    stride: int = 0  # tokens between chunk starts; 0: three quarters of the size

    def resolved(self, room: int) -> tuple[int, int]:
        """(size, stride) for a model that takes ``room`` tokens besides its special ones."""
        size = max(1, min(self.size or room, room))
        stride = max(1, min(self.stride or (size * 3) // 4, size))
        return size, stride

    def tag(self) -> str:
        """The policy as it enters an identity."""
        if not self.on:
            return "chunk=off"
        return f"chunk=on,size={self.size or 'auto'},stride={self.stride or 'auto'},pool=token-weighted-mean"


def parse_chunk_option(spec: str, key: str, value: str, kw: dict[str, Any]) -> None:
    """Store one ``chunk*`` option into ``kw`` (``on``, ``size``, ``stride``); a bad one: EncoderError."""
    if key == "chunk":
        if value.lower() not in ("on", "off"):
            raise EncoderError(f"encoder {spec!r}: chunk={value!r}: use on or off")
        kw["on"] = value.lower() == "on"
        return
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 1:
        raise EncoderError(f"encoder {spec!r}: {key}={value!r} is not a positive number of tokens")
    kw["size" if key == "chunk_size" else "stride"] = n


def split_options(spec: str, name: str) -> tuple[str, ChunkPolicy]:
    """``"<name>[@chunk=...,chunk_size=...,chunk_stride=...]"`` -> (name, policy) for encoders whose only
    options are these."""
    head, sep, tail = name.rpartition("@")
    if not sep or "=" not in tail:
        return name, ChunkPolicy()
    kw: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in tail.split(","))):
        key, eq, value = (x.strip() for x in part.partition("="))
        if key not in CHUNK_OPTIONS or not value:
            raise EncoderError(f"encoder {spec!r}: unknown option {part!r} (options: {', '.join(CHUNK_OPTIONS)})")
        parse_chunk_option(spec, key, value, kw)
    return head, ChunkPolicy(**kw)


def chunk_spans(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` token spans of ``size`` tokens, ``stride`` apart, the last one ending at ``n``."""
    starts = [0]
    while starts[-1] + size < n:
        starts.append(starts[-1] + stride)
    return [(s, min(s + size, n)) for s in starts]


def weighted_mean(vectors: np.ndarray, weights: list[int]) -> np.ndarray:
    """The mean of the rows of ``vectors`` weighted by ``weights`` (computed in float64), as float32."""
    w = np.asarray(weights, np.float64)
    return (np.asarray(vectors, np.float64) * (w / w.sum())[:, None]).sum(0).astype(np.float32)


def pool_chunks(vectors: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """The mean of the chunks' vectors weighted by their token counts."""
    return weighted_mean(vectors, [e - s for s, e in spans])


def long_items(tokenizer: Any, texts: list[str], room: int) -> dict[int, list[int]]:
    """``{position: token ids without special tokens}`` of the texts longer than ``room`` tokens.

    No tokenizer kind makes over 2 tokens per UTF-8 byte (byte-level BPE: a token is at least a byte; WordPiece
    and SentencePiece: at least a character, plus at most one word-start piece each; tests/test_long_inputs.py),
    so only texts over ``room / 2`` bytes are tokenized here: a batch of short texts is not tokenized twice."""
    maybe = [i for i, t in enumerate(texts) if 2 * len(t.encode("utf-8")) > room]
    if not maybe:
        return {}
    ids = tokenizer([texts[i] for i in maybe], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    return {i: list(x) for i, x in zip(maybe, ids) if len(x) > room}


_TEMPLATES: "weakref.WeakKeyDictionary[Any, tuple[list[int], list[int]]]" = weakref.WeakKeyDictionary()


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The token ids the tokenizer puts before and after a single text (``[CLS]`` / ``[SEP]``, ``<s>`` / ``</s>``);
    found once per tokenizer object (every batch asks)."""
    try:
        return _TEMPLATES[tokenizer]
    except (KeyError, TypeError):  # TypeError: an object that cannot be weakly referenced
        pass
    found = _find_template(tokenizer)
    try:
        _TEMPLATES[tokenizer] = found
    except TypeError:
        pass
    return found


def _find_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    probe = "a"
    bare = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for i in range(len(full) - len(bare) + 1):
        if full[i : i + len(bare)] == bare:
            return full[:i], full[i + len(bare) :]
    raise EncoderError(f"cannot tell where {type(tokenizer).__name__} puts its special tokens (use @chunk=off)")


def special_tokens(tokenizer: Any) -> int:
    """How many special tokens the tokenizer adds to a single text."""
    before, after = special_template(tokenizer)
    return len(before) + len(after)


def chunk_inputs(tokenizer: Any, ids: list[int], spans: list[tuple[int, int]]) -> dict[str, Any]:
    """The padded torch inputs of a text's chunks, each with the model's special tokens (as the tokenizer
    adds them to a text), padded at the end."""
    import torch

    before, after = special_template(tokenizer)
    rows = [before + ids[s:e] + after for s, e in spans]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ()):
        out["token_type_ids"] = torch.zeros_like(input_ids)
    return out


def text_passages(tokenizer: Any, text: str, room: int, policy: ChunkPolicy) -> list[str]:
    """The text's chunks as passages of the text itself (what ``anybind index --chunk-rows`` indexes one row
    each): the characters each chunk's tokens cover; ``[text]`` when it fits (or chunking is off)."""
    if not policy.on or room < 1:
        return [text]
    enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True, verbose=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= room:
        return [text]
    size, stride = policy.resolved(room)
    return [text[offsets[s][0] : offsets[e - 1][1]] for s, e in chunk_spans(len(offsets), size, stride)]

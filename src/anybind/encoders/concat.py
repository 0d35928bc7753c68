"""A feature ensemble: several frozen encoders of one modality, their features side by side.

Spec: ``image:concat(<spec>,<spec>[,...])`` or ``text:concat(<spec>,<spec>[,...])``, each part a whole encoder
spec of that modality (its own options and suffix
included), e.g. ``image:concat(image:efficientnet-lite0,image:efficientnet-lite2)`` or, with a label bridge per
part, ``image:concat(image:efficientnet-lite0+bridge,image:efficientnet-lite2+bridge)``.  The features are the
parts' features concatenated in the order given (``dim`` = the sum of the parts'); nothing is normalised or
mixed, so the projector sees exactly what each part sees.

A text ensemble, ``text:concat(text:minilm,text:e5-small)`` (768-d: each part's own unit-norm embedding, side by
side), is a text encoder like any other: locked as the space's text side, the label bridge maps into it with
``image:efficientnet-lite0+bridge(text:concat(text:minilm,text:e5-small))`` (the ImageNet class prompts embedded
by every part, see :mod:`anybind.encoders.bridge`).

With every part an ImageNet classifier (EfficientNet-Lite), the ensemble has a classifier head of its own:
the mean of the parts' logits (:meth:`ConcatEncoder.classifier_head`), so the label bridge goes on the
ensemble as on one model, ``image:concat(image:efficientnet-lite0,image:efficientnet-lite2)+bridge``: the
parts' pooled features ++ the bridge of their averaged logits, which is what the recipe's bridge prior and
``Space.label_bridge`` read (one bridge block after the base features).

The feature cache keeps each part's features under the part's own identity (:func:`derived_parts`): a part
already cached (the default ``image:efficientnet-lite0``) is not encoded again, and the ensemble costs only
what is missing.  Encoded directly (:meth:`Encoder.encode`, no cache), a file is decoded once and each batch
runs every part's forward.  The identity holds every part's identity, so cached features, saved spaces and
indexes keep an ensemble apart from each part and from another ensemble (order included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import Encoder
from .spelling import bare_spelt, canonical_part, canonical_spec  # noqa: F401 -- bare_spelt re-exported: it was defined here

#: an example ensemble per modality (for the error lines)
EXAMPLES = {"image": "image:concat(image:efficientnet-lite0,image:efficientnet-lite2)+bridge",
            "text": "text:concat(text:minilm,text:e5-small)"}


def how(modality: str) -> str:
    """How an ensemble spec of ``modality`` is written (the tail of every error line)."""
    eg = EXAMPLES.get(modality, f"{modality}:concat({modality}:a,{modality}:b)")
    return f"an ensemble spec is {modality}:concat(<spec>,<spec>[,...]) with whole {modality} encoder specs, e.g. {eg}"


def split_specs(text: str) -> list[str]:
    """A comma-separated list of encoder specs, split where a new spec starts.

    Commas inside parentheses (``concat(...)``, ``frames(...)``) and commas between a spec's own ``@k=v``
    options (``image:efficientnet-lite0@tta=flip,size=288``) do not split: a piece with an ``=`` before its
    first ``:`` continues the spec before it.  Blank pieces are dropped."""
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    out: list[str] = []
    for p in pieces:
        if out and "=" in p.split(":", 1)[0]:
            out[-1] += "," + p.strip()
        elif p.strip():
            out.append(p.strip())
    return out


def parse_concat(modality: str, name: str) -> list[str]:
    """``concat(a,b)`` -> ``["a", "b"]``: the parts of an ensemble spec, or one EncoderError line naming it."""
    spec, hint = f"{modality}:{name}", how(modality)
    if not name.startswith("concat(") or not name.endswith(")"):
        raise EncoderError(f"encoder {spec!r}: {hint}")
    inner = name[len("concat(") : -1]
    depth = 0
    for i, ch in enumerate(inner):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            raise EncoderError(f"encoder {spec!r}: unbalanced parentheses; {hint}")
    if depth:
        raise EncoderError(f"encoder {spec!r}: unbalanced parentheses; {hint}")
    if any(c.isspace() for c in name):
        canonical = "".join(name.split())
        raise EncoderError(f"encoder {spec!r}: one encoder has one spelling (it heads the identity of cached "
                           f"features and spaces): write it without spaces, {modality}:{canonical}")
    parts = split_specs(inner)
    if len(parts) < 2:
        raise EncoderError(f"encoder {spec!r}: an ensemble needs at least two parts, got {len(parts)}; {hint}")
    if len(set(parts)) < len(parts):
        raise EncoderError(f"encoder {spec!r}: a part is given twice; {hint}")
    return parts


class ConcatEncoder(Encoder):
    """The features of several encoders of one modality, concatenated."""

    def __init__(self, modality: str, name: str):
        from .registry import get_encoder

        self.spec = f"{modality}:{name}"
        self.modality = modality
        given = parse_concat(modality, name)
        canonical = [canonical_part(p) for p in given]  # text -> text:minilm: one ensemble, one identity
        if len(set(canonical)) < len(canonical):
            raise EncoderError(f"encoder {self.spec!r}: a part is given twice ({', '.join(canonical)}); "
                               f"{how(modality)}")
        #: the spelling that heads the identity (a bare modality part as its default spec, see canonical_spec)
        self.canonical_spec = canonical_spec(self.spec)
        parts = []
        for p, c in zip(given, canonical):  # built as spelt (image+bridge: no spec alone), named as given
            try:
                enc = get_encoder(c)
            except EncoderError as e:
                raise EncoderError(f"encoder {self.spec!r}: part {p!r}: {e}") from None
            if enc.modality != modality:
                raise EncoderError(f"encoder {self.spec!r}: part {p!r} is a {enc.modality} encoder, not {modality}")
            parts.append(enc)
        kinds = {e.input_kind for e in parts}
        if len(kinds) > 1:
            raise EncoderError(f"encoder {self.spec!r}: the parts read different inputs ({', '.join(sorted(kinds))})")
        self.base_encoders = tuple(parts)
        self.input_kind = parts[0].input_kind
        # arrays as files of every part; not a key encoder's features (each part's are of its own width)
        self.reads_arrays = self.input_kind == "file" and all(getattr(e, "reads_arrays", False) for e in parts)
        self.runs_torch = any(e.runs_torch for e in parts)
        self.batch_size = min(e.batch_size for e in parts)
        self._identity: str | None = None
        self._head: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def dim(self) -> int:  # type: ignore[override]
        return sum(e.dim for e in self.base_encoders)

    @property
    def identity(self) -> str:
        if self._identity is None:
            parts = "+".join(f"[{e.identity}]" for e in self.base_encoders)
            self._identity = f"{self.canonical_spec}|parts={parts}|concat-v1"  # a space saved as typed: bare_spelt
        return self._identity

    def derive(self, *feats: np.ndarray) -> np.ndarray:
        """The parts' features (one array per part, in order) side by side."""
        if len(feats) != len(self.base_encoders):
            raise EncoderError(f"encoder {self.spec!r}: {len(feats)} feature blocks for "
                               f"{len(self.base_encoders)} parts")
        return np.concatenate([np.asarray(f, dtype=np.float32) for f in feats], axis=1)

    def classifier_head(self) -> tuple[np.ndarray, np.ndarray]:
        """(W, b) on the concatenated features whose logits are the mean of the parts' logits (for ``+bridge``)."""
        if self._head is None:
            from .bridge import classifier_head

            heads = []
            for e in self.base_encoders:
                try:
                    heads.append(classifier_head(e))
                except EncoderError as err:
                    raise EncoderError(f"encoder {self.spec!r}: part {e.spec!r}: {err}") from None
            if len({W.shape[0] for W, _ in heads}) > 1:
                raise EncoderError(f"encoder {self.spec!r}: the parts' classifiers have different classes")
            k = len(heads)
            self._head = (np.concatenate([W / k for W, _ in heads], axis=1).astype(np.float32),
                          (sum(b for _, b in heads) / k).astype(np.float32))
        return self._head

    def content_key(self, item: Any) -> str:
        return self.base_encoders[0].content_key(item)

    def load(self, item: Any) -> tuple:
        """Each part's decoded item; a file is decoded once and handed to every part as an image."""
        if self.modality == "image" and isinstance(item, (str, Path)):
            from ..data.media import as_rgb_image

            item = as_rgb_image(item)
        return tuple(e.load(item) for e in self.base_encoders)

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        batch = [b if isinstance(b, tuple) and len(b) == len(self.base_encoders) else self.load(b) for b in batch]
        if not batch:
            return np.zeros((0, self.dim), np.float32)
        feats = [e.encode_loaded([b[i] for b in batch]) for i, e in enumerate(self.base_encoders)]
        return self.check_output(self.derive(*feats), len(batch))


def make_concat_encoder(modality: str, name: str) -> ConcatEncoder:
    """Factory for ``<modality>:concat(...)`` specs."""
    return ConcatEncoder(modality, name)

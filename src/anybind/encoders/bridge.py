"""The label bridge: an image encoder's own classifier, read through a text encoder.

``image:efficientnet-lite0+bridge`` returns the base encoder's pooled features
concatenated with a *bridge* vector: the base model's ImageNet class
probabilities averaged over the text embeddings of the class names
(``"a photo of a {class}."`` by ``text:minilm``).  The bridge lands in the
text encoder's own space, so it carries what the frozen classifier knows about
an image in a form that captions can be compared with -- with no paired data
at all.  It is the training-free *label bridge* baseline on its own, and it
gives projectors trained on a few hundred pairs a strong head start.

The bridge is computed from the base features (``logits = fc(pooled)``), so
the feature cache reuses the base encoder's cached features and only this
cheap step runs again (see :attr:`LabelBridgeEncoder.base_encoder`).

``<image spec>+bridge(<text spec>)`` maps the bridge into another text encoder's space instead, e.g.
``image:efficientnet-lite0+bridge(text:concat(text:minilm,text:e5-small))`` beside a space locked on
``text:concat(text:minilm,text:e5-small)`` (the recipe's bridge prior needs the bridge's text encoder to be the
lock's: :func:`bridge_text`).  The text encoder is part of the spec and the identity; ``text:minilm`` is
written as the bare ``+bridge`` (one encoder, one spelling).

ImageNet class names ship with anybind (``resources/imagenet_classes.tsv``,
from timm, Apache-2.0).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np

from ..data.templates import check_template, fill_template
from ..errors import EncoderError
from .base import Encoder
from .device import cache_identity

SUFFIX = "+bridge"

#: the text encoder a bare ``+bridge`` maps into
DEFAULT_BRIDGE_TEXT = "text:minilm"


def imagenet_class_names(first_lemma_only: bool = True) -> list[str]:
    """The 1000 ImageNet-1k class names in model output order."""
    text = resources.files("anybind").joinpath("resources/imagenet_classes.tsv").read_text(encoding="utf-8")
    names = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        lemmas = line.split("\t", 1)[1]
        names.append(lemmas.split(",")[0].strip() if first_lemma_only else lemmas.strip())
    if len(names) != 1000:
        raise EncoderError(f"imagenet_classes.tsv has {len(names)} classes, expected 1000")
    return names


def classifier_head(base: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the base model's 1000-way classifier on its pooled features."""
    if hasattr(base, "classifier_head"):
        return base.classifier_head()
    model = base.model() if callable(getattr(base, "model", None)) else None
    fc = getattr(model, "_fc", None)
    if fc is None:
        raise EncoderError(
            f"{base.spec} has no ImageNet classifier head that anybind knows how to read; "
            "the label bridge needs one (EfficientNet-Lite has it)"
        )
    return fc.weight.detach().cpu().numpy().astype(np.float32), fc.bias.detach().cpu().numpy().astype(np.float32)


def bridge_text(spec: str) -> str | None:
    """The text encoder spec a ``...+bridge`` / ``...+bridge(<text spec>)`` encoder maps into, None for a spec
    without the suffix (read from the spec alone: nothing is built)."""
    from .registry import split_suffix

    wrapped = split_suffix(spec)
    if not wrapped or wrapped[1] != SUFFIX:
        return None
    return wrapped[2] or DEFAULT_BRIDGE_TEXT


def bridge_spec(base_spec: str, text_spec: str) -> str:
    """The spec of ``base_spec``'s label bridge into ``text_spec`` (its one spelling: ``+bridge`` for
    :data:`DEFAULT_BRIDGE_TEXT`, else ``+bridge(<text spec>)``)."""
    return base_spec + SUFFIX + ("" if text_spec == DEFAULT_BRIDGE_TEXT else f"({text_spec})")


def make_bridge_encoder(base_spec: str, text_spec: str | None = None) -> "LabelBridgeEncoder":
    """``<base_spec>+bridge`` (into :data:`DEFAULT_BRIDGE_TEXT`) or ``<base_spec>+bridge(<text_spec>)``; a text
    spec that is not written as one whole text encoder spec is refused in one line naming the spec."""
    if text_spec is None:
        return LabelBridgeEncoder(base_spec)
    spec = f"{base_spec}{SUFFIX}({text_spec})"
    if text_spec == DEFAULT_BRIDGE_TEXT:
        raise EncoderError(f"encoder {spec!r}: the bridge into {DEFAULT_BRIDGE_TEXT} is written {base_spec}{SUFFIX} "
                           "(one encoder has one spelling: it heads the identity of cached features and spaces)")
    # PREFIX:NAME of any prefix (a plugin's text encoder, callable:...): the encoder's modality is checked when built
    if ":" not in text_spec or any(c.isspace() for c in text_spec):
        raise EncoderError(f"encoder {spec!r}: the bridge's text encoder is one whole text encoder spec without "
                           f"spaces, e.g. {base_spec}{SUFFIX}(text:concat(text:minilm,text:e5-small))")
    return LabelBridgeEncoder(base_spec, text_spec)


class LabelBridgeEncoder(Encoder):
    """Base image features ++ label-bridge vector in a text encoder's space."""

    modality = "image"
    input_kind = "file"

    def __init__(
        self,
        base_spec: str,
        text_spec: str = DEFAULT_BRIDGE_TEXT,
        temperature: float = 1.0,
        template: str = "a photo of a {}.",
    ):
        from .registry import get_encoder

        self.spec = bridge_spec(base_spec, text_spec)
        self.base_encoder = get_encoder(base_spec)
        try:
            self.text_encoder = get_encoder(text_spec)
        except EncoderError as e:
            raise EncoderError(f"encoder {self.spec!r}: the bridge's text encoder: {e}") from None
        if self.text_encoder.modality != "text":
            raise EncoderError(f"encoder {self.spec!r}: the bridge maps into a text encoder's space, and "
                               f"{text_spec!r} is a {self.text_encoder.modality} encoder")
        self.temperature = float(temperature)
        self.template = check_template(template)
        self.batch_size = self.base_encoder.batch_size
        self.dim = self.base_encoder.dim + self.text_encoder.dim
        self._head: tuple[np.ndarray, np.ndarray] | None = None
        self._names: dict[str, np.ndarray] = {}  # by the text encoder's cache key (identity + precision)
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            classes = hashlib.sha256("\n".join(imagenet_class_names()).encode()).hexdigest()[:12]
            self._identity = (
                f"{self.spec}|base=[{self.base_encoder.identity}]|text=[{self.text_encoder.identity}]"
                f"|classes={classes}|T={self.temperature}|template={self.template}|bridge-v1"
            )
        return self._identity

    def _class_embeddings(self) -> np.ndarray:
        # the class prompts embedded at the precision set now: a bf16 run's never serve an fp32 one
        key = cache_identity(self.text_encoder)
        names = self._names.get(key)
        if names is None:
            E = self.class_prompt_features()
            names = self._names[key] = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
        return names

    def class_prompt_features(self) -> np.ndarray:
        """The text encoder's features of the 1000 class prompts (``template`` filled with each ImageNet class name),
        as that encoder gives them: what a space locked on it reads for those prompts (the ridge start's class
        anchors, :func:`anybind.bridge_start.bridge_anchors`).  Cached beside the feature cache."""
        return _cached_class_embeddings(self.text_encoder, [fill_template(self.template, n) for n in imagenet_class_names()])

    def class_directions(self) -> np.ndarray:
        """The class prompts' features unit-normed (1000 x text dim): the bridge vector of an image the classifier
        reads as one class with certainty is that class's row."""
        return self._class_embeddings()

    def bridge(self, feats: np.ndarray) -> np.ndarray:
        """Bridge vectors (n, text dim), unit norm, from base features (n, base dim)."""
        if self._head is None:
            self._head = classifier_head(self.base_encoder)
        W, b = self._head
        logits = (feats @ W.T + b) / self.temperature
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        B = p @ self._class_embeddings()
        return (B / np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def derive(self, base_feats: np.ndarray) -> np.ndarray:
        """Concatenate; the bridge block gets the base block's norm so neither drowns the other."""
        base_feats = np.asarray(base_feats, dtype=np.float32)
        scale = np.linalg.norm(base_feats, axis=1, keepdims=True)
        return np.concatenate([base_feats, self.bridge(base_feats) * scale], axis=1).astype(np.float32)

    def load(self, item: Any) -> Any:
        return self.base_encoder.load(item)

    def content_key(self, item: Any) -> str:
        return self.base_encoder.content_key(item)

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        return self.derive(self.base_encoder.encode_loaded(batch))


def _cached_class_embeddings(text_encoder: Encoder, prompts: list[str]) -> np.ndarray:
    """The text encoder's embeddings of the class prompts, kept in one ``.npy`` beside the feature cache.

    Encoding 1,000 prompts costs seconds; every process that bridges images needs them.  Keyed by the text
    encoder's cache key (its identity, plus the precision when it is not fp32: see
    :func:`~anybind.encoders.device.cache_identity`) and the prompts themselves, so another model, template or
    precision never reads them.  The ``class-prompts-v2`` tag retires the files keyed by the identity alone: one
    written under ``--precision bf16`` was read by every later fp32 run (bridge vectors off by up to 0.016).
    """
    from ..io import atomic_write_bytes, default_cache_dir

    key = hashlib.sha256("\n".join(["class-prompts-v2", cache_identity(text_encoder), *prompts]).encode()).hexdigest()[:24]
    path = default_cache_dir() / "label-bridge" / f"{key}.npy"
    if path.is_file():
        try:
            E = np.load(path, allow_pickle=False)
            if E.shape == (len(prompts), text_encoder.dim) and np.isfinite(E).all():
                return E.astype(np.float32)
        except (OSError, ValueError):
            pass  # a damaged file is recomputed and replaced
    E = np.asarray(text_encoder.encode(prompts), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, E, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return E

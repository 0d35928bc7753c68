"""The text tower of an OpenCLIP model (``text:open_clip/<arch>[@<tag or checkpoint>]``, ``text:open_clip/hf-hub:...``,
``text:open_clip/local-dir:<folder>``): OpenCLIP's own tokenizer for the architecture, then ``model.encode_text``.

The spec takes what ``image:open_clip/...`` takes (:mod:`anybind.encoders.image_hub` resolves the source, builds the
model and hashes its weights), so the two towers of one model are one source: the features are the model's projected
text embeddings (not L2-normalised here; a space normalises them, as OpenCLIP does before its logits).  Texts longer
than the model's context are cut by the tokenizer, as OpenCLIP does.  ``anybind fit --from-pretrained
clip=open_clip:...`` (:mod:`anybind.pairs`) pairs the two towers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import Encoder, check_text
from .device import autocast, current_runtime, place
from .image_hub import OpenClipEncoder, open_clip_source

#: bump when the tokenisation below changes (it is part of the identity)
TOKENS_VERSION = "v1"


class OpenClipTextEncoder(Encoder):
    """``model.encode_text(tokenizer(texts))`` of an OpenCLIP model."""

    modality = "text"
    input_kind = "text"
    batch_size = 64
    runs_torch = True
    _transient = ("_tokenizer",)

    def __init__(self, rest: str):
        self.spec = f"text:open_clip/{rest}"
        # the image tower's source checks, model and weights hash (one model holds both towers)
        self.tower = OpenClipEncoder(*open_clip_source(rest), spec=f"image:open_clip/{rest}")
        self._tokenizer: Any = None
        self._identity: str | None = None

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.tower.dim

    def model(self) -> Any:
        """The OpenCLIP model (the image tower's, built once on first use)."""
        return self.tower.model()

    def tokenizer(self) -> Any:
        """OpenCLIP's tokenizer for the architecture (its context length from the model's config)."""
        return self._load_once(self._make_tokenizer, "_tokenizer", what="tokenizer")

    def _make_tokenizer(self) -> Any:
        try:
            return self.tower._oc.get_tokenizer(self.tower.arch)
        except Exception as e:  # noqa: BLE001 - third-party errors become EncoderError
            raise EncoderError(f"{self.spec}: cannot create the tokenizer ({type(e).__name__}: {e})") from None

    @property
    def identity(self) -> str:
        if self._identity is None:
            tok = self.tokenizer()
            ctx = getattr(tok, "context_length", None) or getattr(self.model(), "context_length", "?")
            self._identity = (f"{self.spec}|weights={self.tower._weights_tag()}"
                              f"|prep=open_clip-tokenizer,{type(tok).__name__},ctx{ctx};{TOKENS_VERSION}")
        return self._identity

    def load(self, item: Any) -> str:
        return check_text(item)

    def encode_loaded(self, batch: Sequence[str]) -> np.ndarray:
        import torch

        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        rt = current_runtime()
        model = place(self.model(), rt.device)
        tokens = self.tokenizer()([check_text(t) for t in batch]).to(rt.device)
        with torch.inference_mode(), autocast(rt):
            out = model.encode_text(tokens)
        return out.detach().to(torch.float32).cpu().numpy()


def make_open_clip_text_encoder(rest: str) -> OpenClipTextEncoder:
    """``text:open_clip/<rest>`` (``rest`` as for ``image:open_clip/``)."""
    if not rest:
        raise EncoderError("text:open_clip/<arch>@<tag or file> needs an architecture, e.g. ViT-B-32")
    return OpenClipTextEncoder(rest)

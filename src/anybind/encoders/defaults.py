"""The encoder a bare modality name means (``text`` -> ``text:minilm``): the lowest part of the registry, which
re-exports it, so that spelling rules (:mod:`anybind.encoders.spelling`) can read it without importing the registry."""

from __future__ import annotations

from ..errors import EncoderError

#: the encoder a bare modality name means
DEFAULTS: dict[str, str] = {
    "text": "text:minilm",
    "image": "image:efficientnet-lite0",
    "audio": "audio:aisfx",
    "speech": "speech:whisper-tiny",
    "timeseries": "timeseries:minirocket",
    "video": "video:frames(image:efficientnet-lite0)@fps=1,max=32",
}


def default_spec(modality: str) -> str:
    """The default encoder of a modality (``text_fr`` -> the text default)."""
    base = modality.split("_", 1)[0]
    if base not in DEFAULTS:
        raise EncoderError(
            f"no default encoder for modality {modality!r}; give one explicitly, "
            f"e.g. --encoder {modality}=callable:mypkg.mod:encode"
        )
    return DEFAULTS[base]

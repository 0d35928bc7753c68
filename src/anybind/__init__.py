"""anybind: bind frozen single-modality encoders into one shared embedding space.

>>> from anybind import Space
>>> space = Space.fit("corpus/manifest.jsonl", modalities=["image", "text", "audio"])
>>> space.save("spaces/tux")
>>> Space.load("spaces/tux").embed("text", ["a barking dog"]).shape
(1, 256)
"""

from .version import __version__
from .cache import FeatureCache
from .data.manifest import Manifest, Record, load_manifest
from .encoders.base import Encoder
from .encoders.registry import get_encoder, register_encoder
from .errors import AnybindError, DataError, EncoderError, SpaceError
from .evaluate import evaluate
from .index import Hit, Index
from .pairs import from_pretrained_pair
from .space import Space

__all__ = [
    "AnybindError",
    "DataError",
    "Encoder",
    "EncoderError",
    "FeatureCache",
    "Hit",
    "Index",
    "Manifest",
    "Record",
    "Space",
    "SpaceError",
    "__version__",
    "evaluate",
    "from_pretrained_pair",
    "get_encoder",
    "load_manifest",
    "register_encoder",
]

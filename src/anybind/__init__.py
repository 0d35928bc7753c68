"""anybind: bind frozen single-modality encoders into one shared embedding space.

>>> from anybind import Space
>>> space = Space.fit("corpus/manifest.jsonl", modalities=["image", "text", "audio"])
>>> space.save("spaces/tux")
>>> Space.load("spaces/tux").embed("text", ["a barking dog"]).shape
(1, 256)
"""

__version__ = "0.1.0"

from .cache import FeatureCache  # noqa: E402
from .data.manifest import Manifest, Record, load_manifest  # noqa: E402
from .encoders.base import Encoder, get_encoder, register_encoder  # noqa: E402
from .errors import AnybindError, DataError, EncoderError, SpaceError  # noqa: E402
from .evaluate import evaluate  # noqa: E402
from .index import Hit, Index  # noqa: E402
from .space import Space  # noqa: E402

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
    "get_encoder",
    "load_manifest",
    "register_encoder",
]

"""The service's request / response models and the limits they enforce (see :mod:`anybind.serve.app`)."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .sniff import MIME_TYPES

MAX_K = 100
MAX_TEXT = 2000
MAX_LABELS = 256  # class names per /classify request
MAX_TEMPLATES = 8
MAX_LABEL = 200  # characters of one class name
MAX_TEMPLATE = 500  # characters of one prompt template
MAX_CLASSIFIER_NAME = 100  # characters of a served classifier's name
#: numbers in one JSON vector (a raw query vector, a vectors: modality's features); as many as 2 MB of JSON can hold
MAX_VECTOR = 65536
#: how deep arrays and objects may nest in a JSON body (the deepest legal request nests 3 levels); deeper -> 400
#: before the body is parsed (serve/middleware)
MAX_JSON_DEPTH = 32
MAX_UNKNOWN_FIELDS = 4  # unknown fields of a JSON body past which they are one error, not one each
RERANK = Literal["csls", "qbnorm", "invgc"]
RANK_BY = ("'probability': rank hits of every modality by their calibrated match probability (a calibrated space, "
           "a one-modality query), so the modality gap does not decide the order.")


class ErrorOut(BaseModel):
    detail: str = Field(description="What is wrong, naming the input or item.")


def _lone_surrogate_at(value: Any, where: str = "body") -> str | None:
    """Where in a parsed JSON body a string (or key) holds a lone UTF-16 surrogate, else ``None``."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            # a key in the path cut as an unknown field's is shown: the answer echoes the path (a key may be 1 MB)
            key = k if not isinstance(k, str) or len(k) <= 30 else k[:30] + "..."
            at = _lone_surrogate_at(k, f"{where} (a key)") or _lone_surrogate_at(v, f"{where}.{key}")
            if at:
                return at
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if at := _lone_surrogate_at(v, f"{where}[{i}]"):
                return at
    return None


class RequestModel(BaseModel):
    """A JSON request body: unknown fields, non-finite numbers (``NaN``, ``Infinity``) and lone UTF-16
    surrogates (``"\\ud800"``, no Unicode text) are schema violations (422)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > MAX_UNKNOWN_FIELDS:
            unknown = [k for k in data if k not in cls.model_fields]
            if len(unknown) > MAX_UNKNOWN_FIELDS:  # one error, not one per field (each made and listed in turn)
                shown = ", ".join(repr(k if len(k) <= 30 else k[:30] + "...") for k in unknown[:3])
                raise ValueError(f"{len(unknown)} unknown fields ({shown}, ...): this request takes "
                                 f"{', '.join(cls.model_fields)}")
        at = _lone_surrogate_at(data)
        if at:
            at = at.encode("utf-8", "backslashreplace").decode()
            raise ValueError(f"{at}: a lone UTF-16 surrogate escape (\\udXXX) is not valid Unicode text")
        return data


Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_VECTOR)]


class QueryInput(RequestModel):
    """One input of a fused query: a text, or a ``vectors:`` modality's precomputed features."""

    modality: str = Field("text", max_length=100, description="A bound text modality (text, text_fr, ...), or a "
                          "modality of precomputed features (a vectors: encoder) with `features`.")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT)
    features: Vector | None = Field(None, description="Instead of `text`: the features of a vectors: modality's "
                                    "encoder (as many numbers as its file's vectors have), projected by the space.")
    weight: float = Field(1.0, ge=-100, le=100, allow_inf_nan=False)

    @model_validator(mode="after")
    def _text_or_features(self) -> "QueryInput":
        if (self.text is None) == (self.features is None):
            raise ValueError("an input needs exactly one of text or features")
        return self


LabelFilter = dict[Annotated[str, Field(max_length=200)], str | Annotated[list[str], Field(max_length=50)]]


class SearchRequest(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "a barking dog", "k": 10, "modality": ["image"]}]},
    )
    text: str | None = Field(None, max_length=MAX_TEXT, description="A text query (modality 'text').")
    inputs: list[QueryInput] = Field(
        default_factory=list, max_length=16, description="More inputs, fused with `text`: weighted mean, renormalised."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Number of results.")
    modality: str | Annotated[list[str], Field(max_length=16)] | None = Field(
        None, description="Only return items of this modality (or these); default any."
    )
    labels: LabelFilter = Field(
        default_factory=dict,
        max_length=16,
        description='Label filters, e.g. {"top": "animals"}; every key must match, a list matches any of its values.',
    )
    rerank: RERANK | None = Field(None, description="Hubness correction of the scores (see anybind.rerank).")
    rank_by: Literal["score", "probability"] = Field("score", description=RANK_BY)
    vector: Vector | None = Field(None, description="A query vector in the space (/health space.dim numbers, "
                                  "e.g. from /embed), fused with the other inputs at weight 1.")


class HitOut(BaseModel):
    rank: int = Field(ge=1)
    id: str
    modality: str
    media: Literal["image", "audio", "video", "text", "other"]
    score: float
    labels: dict[str, Any]
    text: str | None = Field(None, description="The item itself, for text modalities.")
    url: str | None = Field(None, description="GET it to fetch the stored item (file modalities).")
    thumb_url: str | None = Field(None, description="GET it for a JPEG thumbnail (images; a video's first frame).")
    probability: float | None = Field(
        None, ge=0, le=1, description="Calibrated P(match) at prior 0.5 (a calibrated space, a one-modality query).")


class SearchOut(BaseModel):
    hits: list[HitOut]
    query_modalities: list[str]
    took_ms: float


class EmbedRequest(RequestModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["a barking dog"]}]})
    modality: str = Field("text", max_length=100, description="A bound text modality.")
    texts: list[Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]] = Field(min_length=1, max_length=64)


class EmbeddedOut(BaseModel):
    modality: str
    name: str | None = Field(None, description="The uploaded file's name (uploads only).")
    vector: list[float]


class EmbedOut(BaseModel):
    dim: int
    items: list[EmbeddedOut]
    took_ms: float


class ClassifyRequest(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "it barks at the postman", "labels": ["dog", "cat", "bird"]}]},
    )
    text: str | None = Field(None, max_length=MAX_TEXT, description="The text to classify.")
    inputs: list[QueryInput] = Field(default_factory=list, max_length=16, description="More inputs, fused.")
    labels: list[Annotated[str, Field(min_length=1, max_length=MAX_LABEL)]] = Field(
        min_length=1, max_length=MAX_LABELS, description="Candidate class names."
    )
    templates: list[Annotated[str, Field(min_length=2, max_length=MAX_TEMPLATE)]] = Field(
        default_factory=list,
        max_length=MAX_TEMPLATES,
        description="Prompt templates; each class is the mean of its filled templates' embeddings (default: "
        "the space's own, e.g. an imported CLIP's ensemble, else 'a {}.').",
    )
    classifier: str | None = Field(
        None, max_length=MAX_CLASSIFIER_NAME, description="A balanced zero-shot classifier the service serves (see "
        "/health 'classifiers'): `labels` must be its classes, in its order, and the query of its modality; its "
        "prompts and templates are used, and classes ranked by score + its offset (see ClassOut.offset).")


class ClassOut(BaseModel):
    label: str
    score: float = Field(description="Cosine of the query with the class's prompt-ensemble embedding.")
    probability: float = Field(ge=0, le=1, description="Softmax of the scores at the space's temperature.")
    match_probability: float | None = Field(
        None, ge=0, le=1, description="Calibrated P(match) of the query and the class prompt, at prior 0.5 "
        "(a calibrated space, a one-modality query).")
    offset: float | None = Field(
        None, description="With a classifier: its balanced offset for this class; classes are then ranked by score + "
        "offset, and `probability` is the softmax of score + offset at the classifier's temperature.")


class ClassifyOut(BaseModel):
    results: list[ClassOut]
    query_modalities: list[str]
    templates: list[str]
    took_ms: float
    classifier: str | None = Field(None, description="The classifier used (its offsets), if one was named.")


class ClassifierInfo(BaseModel):
    modality: str = Field(description="What it classifies: a query must be of this modality alone.")
    classes: list[str] = Field(description="Its classes, in its order (a request's `labels`).")
    templates: list[str]
    temperature: float
    prior: str = Field(description="The class distribution its offsets were balanced to ('balanced', 'given').")


class SpaceInfo(BaseModel):
    identity: str
    dim: int
    encoders: dict[str, str]
    temperature: float


class IndexInfo(BaseModel):
    rows: int
    counts: dict[str, int]


class LimitsInfo(BaseModel):
    max_upload_bytes: int
    max_json_bytes: int = Field(description="Cap on a request body that is not a multipart upload (JSON): larger "
                                "-> 413, before it is parsed.")
    max_files: int
    concurrency: int
    max_queue: int
    queue_timeout: float
    max_k: int
    max_inflight_pixels: int = Field(description="Pixels the uploads being decoded may hold together.")


class LoadInfo(BaseModel):
    running: int
    waiting: int = Field(description="Requests waiting for a slot, and uploads waiting for room in the pixel budget.")
    reserved_pixels: int = Field(description="Pixels reserved by the uploads being decoded and encoded now.")
    peak_reserved_pixels: int = Field(description="The most pixels ever reserved at once since start.")


class HealthOut(BaseModel):
    status: Literal["ok"]
    anybind_version: str
    space: SpaceInfo
    index: IndexInfo
    text_modalities: list[str] = Field(description="Modalities a text query may name.")
    upload_modalities: dict[str, str] = Field(
        description="Uploaded image / sound / video / array -> the modality it is embedded as.")
    media: dict[str, str] = Field(description="Each bound modality's media (image, audio, text, other).")
    calibrated: list[str] = Field(default_factory=list, description="Modality pairs with a calibrated P(match) "
                                  "('image-text'); empty when the space is not calibrated (then rank_by='probability' "
                                  "is refused).")
    limits: LimitsInfo
    load: LoadInfo
    uptime_s: float
    classifiers: dict[str, ClassifierInfo] = Field(
        default_factory=dict, description="Balanced zero-shot classifiers /classify may name (anybind serve "
        "--classifier NAME=DIR).")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Unusable query: empty, unknown modality, undecodable file, too many files..."},
    413: {"model": ErrorOut, "description": "Request body over the upload cap."},
    503: {"model": ErrorOut, "description": "Busy: every worker slot taken and the queue full, or no SVG renderer "
                                            "could be started for an upload (the file was not read); see Retry-After."},
}
UPLOAD_ERRORS = {**ERRORS, 415: {"model": ErrorOut, "description": "Not an image or sound this service reads."}}
ITEM_TYPES = {t: {} for t in (*MIME_TYPES, "text/plain", "application/octet-stream")}

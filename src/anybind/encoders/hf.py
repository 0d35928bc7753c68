"""Hugging Face ``transformers`` encoders by spec: ``text:hf/...``, ``image:hf/...``, ``audio:hf/...``.

``<modality>:hf/<hub repo id or local folder>[@option=value,...]`` loads the model with ``AutoModel`` and its
preprocessing with ``AutoTokenizer`` (text), ``AutoImageProcessor`` (image) or ``AutoFeatureExtractor``
(audio), falling back to ``AutoProcessor``.  Options:

* ``pool`` -- ``auto`` (default), ``cls`` (first token), ``mean`` (over valid tokens: the attention mask; over
  every frame / patch for audio and images), ``pooler`` (the model's ``pooler_output``).  ``auto`` uses the
  model's own projection head when it has one for the modality (CLIP / SigLIP ``get_text_features`` /
  ``get_image_features``, CLAP ``get_audio_features``), else CLS for ViT-like image models (the spatial mean
  for convolutional ones), the mean over valid tokens for text and the mean over frames for audio;
* ``layer`` -- which hidden state: ``-1`` (default) is the model's ``last_hidden_state`` (after any final
  norm), other values index ``hidden_states`` (``-2`` the input of the last block, ``0`` the embeddings); a
  projection head is used only with ``layer=-1``;
* ``revision`` -- the hub branch, tag or commit to load (pin a commit for reproducible features);
* ``trust_remote_code`` -- ``true`` lets a model that ships its own Python code run it; never done otherwise;
* ``device`` -- pins this encoder to ``cpu``, ``cuda[:N]``, ``mps`` or ``auto``; without it the model runs
  on the process's device and precision (``--device`` / ``--precision``, :mod:`anybind.encoders.device`);
* ``chunk``, ``chunk_size``, ``chunk_stride`` -- text longer than the model's limit (:mod:`anybind.encoders.chunks`);
* ``window`` -- audio longer than the extractor's length: ``auto`` (default), ``off`` or seconds; windows
  pooled, never cropped (:mod:`anybind.encoders.hf_audio`).

The identity holds the spec (without ``device``), the resolved hub commit or, for a local folder, a hash of
its weight, config and tokenizer files (and, with ``trust_remote_code=true``, of the Python files that then run),
a hash of the preprocessing config, and the pooling actually used: a
changed model changes the identity, so the feature cache and saved spaces refuse it.  Text longer than the
model's limit is cut into overlapping chunks whose vectors are pooled (``chunk=on``, the default, see
:mod:`anybind.encoders.chunks`; the policy is in the identity), or truncated with ``chunk=off``.  Audio items
are run through the feature extractor one by one (a long clip window by window) and batched only with items
of the same length, so no padding ever enters a model that does not mask it (wav2vec2 base)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import IMAGE_DECODING, as_audio, as_rgb_image, short_repr
from ..errors import DataError, EncoderError
from .base import Encoder, check_text, one_line
from .chunks import chunk_inputs, chunk_spans, long_items, pool_chunks, special_tokens, text_passages
from .device import Runtime, autocast, check_precision, current_runtime, place, resolve_device
from .hf_audio import AudioWindows, pool_windows, split_clip, window_samples
from .hf_pool import HEADS, hidden_state, pool_features
from .hf_spec import files_sha256, no_loader_bars, parse_hf_name

log = logging.getLogger(__name__)

#: bump when the preprocessing or pooling code below changes (it is part of every identity)
PREP_VERSION = "hf-v1"
_PROCESSORS = {"text": "AutoTokenizer", "image": "AutoImageProcessor", "audio": "AutoFeatureExtractor"}
_SUB_PROCESSORS = {"text": "tokenizer", "image": "image_processor", "audio": "feature_extractor"}


class HfEncoder(Encoder):
    """A ``transformers`` model as a frozen encoder of one modality (see the module docstring)."""

    batch_size = 16
    runs_torch = True
    _transient = ("_model", "_proc", "_config")

    def __init__(self, modality: str, name: str):
        self.modality = modality
        self.input_kind = "text" if modality == "text" else "file"
        self.spec = f"{modality}:hf/{name}"
        self.source, self.options = parse_hf_name(self.spec, name)
        path = Path(self.source).expanduser()
        self.local = path.is_dir()
        if self.local:
            self.source = str(path.resolve())
            if self.options.revision:
                raise self._err(f"revision= applies to hub models, not the folder {path}")
        elif self.source.startswith(("/", ".", "~")) or path.exists():
            raise self._err(f"model folder {path} does not exist (or is not a folder)")
        self._model: Any = None
        self._proc: Any = None
        self._config: Any = None
        self._dim: int | None = None
        self._pool_used: str | None = None
        self._identity: str | None = None
        self._limit: int | None = None
        self.config()  # a missing model, an offline miss or remote code is refused when the spec is built

    def hidden_state(self, out: Any, layer: int) -> Any:
        """The model output's last hidden state (``layer=-1``) or ``hidden_states[layer]``, range-checked."""
        return hidden_state(out, layer, self._err)

    def _err(self, msg: str) -> EncoderError:
        return EncoderError(f"encoder {self.spec!r}: {msg}")

    # ------------------------------------------------------------------ loading
    def _kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"trust_remote_code": self.options.trust_remote_code}
        if self.local:
            kw["local_files_only"] = True
        elif self.options.revision:
            kw["revision"] = self.options.revision
        return kw

    def _call(self, what: str, fn: Any, *, kw: dict[str, Any] | None = None, **extra: Any) -> Any:
        try:
            return fn(self.source, **(self._kw() if kw is None else kw), **extra)
        except (EncoderError, DataError):
            raise
        except Exception as e:  # noqa: BLE001 - every loader failure becomes one line naming the spec
            msg = str(e)
            if "trust_remote_code" in msg and not self.options.trust_remote_code:
                raise EncoderError(
                    f"encoder {self.spec!r}: the model needs its own Python code (auto_map in its config), "
                    f"which anybind does not run unless asked: add @trust_remote_code=true if you trust "
                    f"{self.source!r}"
                ) from None
            where = "the folder" if self.local else "the Hugging Face hub (or its local cache when offline)"
            raise self._err(f"cannot load the {what} from {where} ({one_line(e)})") from None

    def config(self) -> Any:
        if self._config is None:
            from transformers import AutoConfig

            self._config = self._call("config", AutoConfig.from_pretrained)
        return self._config

    def processor(self) -> Any:
        """The model's preprocessor (loaded once, on first use)."""
        return self._load_once(self._build_processor, "_proc", what="preprocessor")

    def _build_processor(self) -> Any:
        return self._processor_from(_PROCESSORS[self.modality], "preprocessor", _SUB_PROCESSORS[self.modality])

    def _processor_from(self, auto: str, what: str, sub: str) -> Any:
        """``transformers.<auto>.from_pretrained``, else the ``sub`` part of ``AutoProcessor``'s."""
        import transformers

        try:
            return self._call(what, getattr(transformers, auto).from_pretrained)
        except EncoderError as first:
            if "trust_remote_code" in str(first):
                raise
            both = self._call("processor", transformers.AutoProcessor.from_pretrained)
            proc = getattr(both, sub, None)
            if proc is None:
                raise first from None
            return proc

    def device(self) -> str:
        """The spec's ``device=`` when given, else the process's (:func:`~anybind.encoders.device.current_runtime`)."""
        if self.options.device is None:
            return current_runtime().device
        try:
            return resolve_device(self.options.device)
        except EncoderError as e:
            raise self._err(f"device={self.options.device}: {e}") from None

    def model(self) -> Any:
        """The ``transformers`` model, frozen (loaded once, on first use)."""
        return self._load_once()

    def _build(self) -> Any:
        import torch
        from transformers import AutoModel

        with no_loader_bars():
            model = self._call("model", AutoModel.from_pretrained, dtype=torch.float32)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ the protocol
    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self._probe()
        assert self._dim is not None
        return self._dim

    def _probe(self) -> None:
        """One forward of a stand-in item: the output width and the pooling ``auto`` resolves to."""
        if self.modality == "text":
            item: Any = "a"
        elif self.modality == "image":
            from PIL import Image

            item = Image.new("RGB", (32, 32), (127, 127, 127))
        else:
            sr = self._sampling_rate()
            item = (np.sin(np.arange(sr, dtype=np.float32) * 0.05) * 0.1).astype(np.float32), sr
        x = self.load(item) if self.modality != "text" else item
        out = self._forward_group([x.parts[0] if isinstance(x, AudioWindows) else x])
        self._dim = int(out.shape[1])

    @property
    def identity(self) -> str:
        if self._identity is None:
            if self.local:
                weights = "sha256:" + files_sha256(Path(self.source), code=self.options.trust_remote_code)[:16]
            else:
                weights = "commit:" + self._commit()
            proc = self.processor()
            if hasattr(proc, "backend_tokenizer"):
                # the padding / truncation state changes with every call: not part of what the tokenizer is
                state = {k: v for k, v in json.loads(proc.backend_tokenizer.to_str()).items()
                         if k not in ("padding", "truncation")}
                prep_text = json.dumps(state, sort_keys=True) + f"|max={self._max_length()}"
            elif hasattr(proc, "to_json_string"):
                prep_text = proc.to_json_string()
            else:
                prep_text = repr(proc)
            prep = hashlib.sha256(prep_text.encode()).hexdigest()[:16]
            self.dim  # noqa: B018 - resolves pool=auto
            spec = self.spec.split("@", 1)[0]
            opts = ",".join(f"{k}={v}" for k, v in sorted(vars(self.options).items())
                            if k not in ("device", "chunk", "window"))
            chunk = f"|{self.options.chunk.tag()}" if self.modality == "text" else ""
            if self.modality == "audio":
                n = self._window()
                chunk = f"|window={self.options.window}:{n or 'whole'},pool=sample-weighted-mean"
            self._identity = (
                f"{spec}@{opts}|weights={weights}|prep={prep}|pool={self._pool_used},"
                f"layer={self.options.layer}{chunk};{PREP_VERSION}"
            )
            if self.modality == "image":  # files decoded upright (data.media.load_image)
                self._identity += f"|{IMAGE_DECODING}"
        return self._identity

    def matches_identity(self, recorded: str) -> bool:
        """Also a space (or cache entry) made before a ``trust_remote_code=true`` folder's Python files were part
        of the identity: its identity hashed the weight, config and tokenizer files only.  Those unchanged, it is
        the same model unless the code changed since, which it cannot tell: one warning says so."""
        if super().matches_identity(recorded):
            return True
        ident = self.identity
        head, sep, tail = ident.partition("|weights=sha256:")
        if not (self.local and self.options.trust_remote_code and sep):
            return False
        legacy = head + sep + files_sha256(Path(self.source))[:16] + tail[16:]
        if recorded not in (legacy, legacy.replace("|" + IMAGE_DECODING, "")):
            return False
        if not getattr(self, "_warned_code", False):
            self._warned_code = True
            log.warning("%s: the space was made before the model folder's Python files were part of its identity; "
                        "a change to them since then cannot be detected (fit the space again to record them)",
                        self.spec)
        return True

    def _commit(self) -> str:
        """The hub commit the config resolved to (its snapshot folder's name)."""
        from transformers.utils import cached_file

        kw = {"revision": self.options.revision} if self.options.revision else {}
        cfg_path = self._call("config file", cached_file, kw=kw, filename="config.json")
        commit = Path(cfg_path).parent.name
        if len(commit) != 40:
            raise self._err(f"cannot tell which commit {cfg_path} belongs to")
        return commit

    def _sampling_rate(self) -> int:
        sr = getattr(self.processor(), "sampling_rate", None)
        if not sr:
            raise self._err("the feature extractor declares no sampling_rate")
        return int(sr)

    def _window(self) -> int | None:
        """Samples per audio window (None: the whole clip), see :mod:`anybind.encoders.hf_audio`."""
        return window_samples(self.options.window, self.processor(), self._sampling_rate())

    def _max_length(self) -> int:
        """The tokens a text may have: the tokenizer's limit within the model's positions (found once)."""
        if self._limit is None:
            n = int(getattr(self.processor(), "model_max_length", 0) or 0)
            cfg = self.config()
            cfg = getattr(cfg, "text_config", None) or cfg
            limit = int(getattr(cfg, "max_position_embeddings", 0) or 512)
            self._limit = n if 0 < n <= limit else limit
        return self._limit

    def load(self, item: Any) -> Any:
        if self.modality == "text":
            return check_text(item)
        if isinstance(item, (dict, AudioWindows)):  # already preprocessed by load()
            return item
        name = item if isinstance(item, (str, Path)) else short_repr(item)
        if self.modality == "image":
            img = as_rgb_image(item)
            call = lambda proc: proc(images=img, return_tensors="np")  # noqa: E731
        else:
            sr = self._sampling_rate()
            pieces = split_clip(as_audio(item, sr), self._window())
            if len(pieces) > 1:  # a long clip: each window on its own, pooled in encode_loaded
                return AudioWindows([self._prep(name, lambda proc, w=w: proc(w, sampling_rate=sr, return_tensors="np"))
                                     for w in pieces], [len(w) for w in pieces])
            call = lambda proc: proc(pieces[0], sampling_rate=sr, return_tensors="np")  # noqa: E731
        return self._prep(name, call)

    def _prep(self, name: Any, call: Any) -> dict[str, np.ndarray]:
        try:
            out = call(self.processor())
        except Exception as e:  # noqa: BLE001 - a decoded item the processor chokes on
            raise DataError(f"{name}: cannot preprocess for {self.spec} ({one_line(e)})") from None
        return {k: np.ascontiguousarray(np.asarray(v)[0]) for k, v in out.items() if hasattr(v, "shape")}

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.modality == "text":  # every caller ran load() (check_text) on them already: not a second time
            return self._forward_group(list(batch))
        loaded = [self.load(b) for b in batch]
        flat = [p for x in loaded for p in (x.parts if isinstance(x, AudioWindows) else [x])]
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(flat):  # same shapes batch together: nothing is padded
            groups.setdefault(tuple(sorted((k, v.shape) for k, v in x.items())), []).append(i)
        feats = np.zeros((len(flat), self.dim), np.float32)
        for idx in groups.values():
            feats[idx] = self._forward_group([flat[i] for i in idx])
        if len(flat) == len(loaded):
            return feats
        out, j = np.zeros((len(loaded), self.dim), np.float32), 0
        for i, x in enumerate(loaded):  # a long clip: its windows' mean, weighted by their samples
            n = len(x.parts) if isinstance(x, AudioWindows) else 1
            out[i] = pool_windows(feats[j : j + n], x.samples) if n > 1 else feats[j]
            j += n
        return out

    # ------------------------------------------------------------------ the forward and the pooling
    def _forward_group(self, items: list) -> np.ndarray:
        import torch

        if self.modality == "text":
            return self._text_features(items)
        return self._run({k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]})

    def _text_features(self, texts: list[str]) -> np.ndarray:
        """Texts within the model's limit in one batch (as ever); longer ones chunked and pooled."""
        proc, limit = self.processor(), self._max_length()
        room = limit - special_tokens(proc)
        long = long_items(proc, texts, room) if self.options.chunk.on and room > 0 else {}
        short = [i for i in range(len(texts)) if i not in long]
        out: np.ndarray | None = None
        if short:
            enc = proc([texts[i] for i in short], padding=True, truncation=True, max_length=limit,
                       return_tensors="pt")
            X = self._run(dict(enc.items()))
            if not long:
                return X
            out = np.zeros((len(texts), X.shape[1]), np.float32)
            out[short] = X
        size, stride = self.options.chunk.resolved(room)
        for i, ids in long.items():
            spans = chunk_spans(len(ids), size, stride)
            v = pool_chunks(self._run(chunk_inputs(proc, ids, spans)), spans)
            if out is None:
                out = np.zeros((len(texts), v.shape[0]), np.float32)
            out[i] = v
        assert out is not None
        return out

    def passages(self, text: str) -> list[str]:
        """A long text's chunks as passages of it (one index row each with ``--chunk-rows``)."""
        if self.modality != "text":
            return [text]
        proc = self.processor()
        return text_passages(proc, text, self._max_length() - special_tokens(proc), self.options.chunk)

    def _run(self, inputs: dict) -> np.ndarray:
        """The pooled features of model inputs, on the runtime's device and precision."""
        import torch

        dev = self.device()
        model = place(self.model(), dev)
        inputs = {k: v.to(dev) for k, v in inputs.items()}
        rt = current_runtime()
        if dev != rt.device:  # a spec pinned to another device: the process's precision, checked for it
            rt = Runtime(dev, check_precision(rt.precision, dev))
        try:
            with torch.inference_mode(), autocast(rt):
                feats = self._pooled(model, inputs)
        except EncoderError:
            raise
        except Exception as e:  # noqa: BLE001 - a model/input mismatch, one line naming the spec
            raise self._err(f"the model's forward failed ({one_line(e)})") from None
        return feats.detach().to(torch.float32).cpu().numpy()

    def _pooled(self, model: Any, inputs: dict) -> Any:
        feats, self._pool_used = pool_features(model, inputs, self.modality, self.options.pool, self.options.layer,
                                               self._err)
        return feats


def make_hf_encoder(modality: str, name: str) -> Encoder:
    """``<modality>:hf/<name>`` (``name`` is what follows ``hf/``)."""
    if modality not in HEADS:
        raise EncoderError(f"hf/ encoders read text, image or audio, not {modality!r}")
    return HfEncoder(modality, name)

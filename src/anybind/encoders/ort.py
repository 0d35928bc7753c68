"""ONNX Runtime encoders by spec: ``image:onnx/...``, ``text:onnx/...``, ``audio:onnx/...``.

The CPU deployment path users export to.

``<modality>:onnx/<model.onnx>[@option=value,...]`` runs an exported model with ``onnxruntime`` (the ``onnx``
extra: ``pip install 'anybind[onnx]'``).  The preprocessing is declared in the spec, since an ``.onnx`` file
does not carry it:

* image -- ``size=224`` or ``HxW`` (default: the model's fixed input size), ``resize=crop`` (cover, centre
  crop; default) / ``squash`` / ``pad`` (fit, centred on black), ``interp=bicubic|bilinear|nearest``,
  ``scale=255`` (pixels are divided by it), ``mean=0.485/0.456/0.406``, ``std=0.229/0.224/0.225`` (ImageNet's,
  the default; one value or three separated by ``/``), ``channels=rgb|bgr``, ``layout=nchw|nhwc``;
* text -- ``tokenizer=<folder>`` (a ``transformers`` tokenizer; default: the model's folder when it holds
  one), ``max_length=N`` (default: the model's fixed sequence length, else the tokenizer's limit, at most
  512); longer texts are truncated.  The graph's inputs are fed by name from the tokenizer (``input_ids``,
  ``attention_mask``, ``token_type_ids``);
* audio -- ``sr=16000`` (the rate samples are resampled to), ``max_seconds=30`` (longer audio is cut),
  ``normalize=true`` (zero mean, unit variance per item, as wav2vec2 expects; default false).  The input is
  ``(batch, samples)`` or ``(batch, 1, samples)``; items of different lengths are never padded together.

Common options: ``output=<name>`` (default: the graph's first output); ``pool=auto|cls|mean`` for a
``(batch, tokens, dim)`` output (``auto``: the mean over valid tokens for text, the first token for images,
the mean over frames for audio); a ``(batch, channels, H, W)`` output is averaged over space, a
``(batch, dim)`` one used as is; ``device=cpu`` (default, ``CPUExecutionProvider``), ``cuda[:N]``
(``CUDAExecutionProvider``, refused when this onnxruntime has none) or ``auto``.

The identity holds the spec (without ``device``), a SHA-256 of the ``.onnx`` file and of every external-data
file it names, the tokenizer's files, the resolved preprocessing and the pooling: a changed model changes the
identity, so the feature cache and saved spaces refuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.media import IMAGE_DECODING, as_audio, as_rgb_image, short_repr
from ..errors import DataError, EncoderError
from .base import Encoder, check_text, one_line
from .hf_spec import files_sha256
from .ort_spec import external_data_files, model_sha256, parse_onnx_name, preprocess_image

#: bump when the preprocessing or pooling code changes (it is part of every identity)
PREP_VERSION = "onnx-v1"
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
           "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def onnxruntime_module(spec: str) -> Any:
    """``onnxruntime``, or one line saying which extra installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise EncoderError(
            f"encoder {spec!r} needs the 'onnxruntime' package: pip install 'anybind[onnx]'"
        ) from None
    return onnxruntime


class OrtEncoder(Encoder):
    """An ONNX model run by ONNX Runtime as a frozen encoder of one modality (see the module docstring)."""

    batch_size = 16
    _transient = ("_session", "_tok")

    def __init__(self, modality: str, name: str):
        self.modality = modality
        self.input_kind = "text" if modality == "text" else "file"
        self.spec = f"{modality}:onnx/{name}"
        self.source, self.options = parse_onnx_name(self.spec, modality, name)
        path = Path(self.source).expanduser()
        if not path.is_file():
            raise self._err(f"model file {path} does not exist (or is not a file)")
        self.path = path.resolve()
        self._session: Any = None
        self._tok: Any = None
        self._identity: str | None = None
        self._dim: int | None = None
        self._pool_used: str | None = None
        self._tok_dir: Path | None = None
        if modality == "text":
            self._tok_dir = self._tokenizer_dir()
            self.tokenizer()
        self._inspect()  # a corrupt model, a graph the preprocessing does not fit: refused right away

    def _err(self, msg: str) -> EncoderError:
        return EncoderError(f"encoder {self.spec!r}: {msg}")

    # ------------------------------------------------------------------ loading
    def _providers(self, ort: Any) -> list:
        want, have = self.options.device, ort.get_available_providers()
        cuda = "CUDAExecutionProvider" in have
        if want == "cpu" or (want == "auto" and not cuda):
            return ["CPUExecutionProvider"]
        if not cuda:
            raise self._err(f"device={want} but this onnxruntime has no CUDAExecutionProvider (it has "
                            f"{', '.join(have)}; pip install onnxruntime-gpu, or use device=cpu)")
        device_id = int(want.partition(":")[2] or 0)
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]

    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` (built on first use, again after unpickling)."""
        return self._load_once(self._build_session, "_session", what="ONNX model")

    def _build_session(self) -> Any:
        ort = onnxruntime_module(self.spec)
        so = ort.SessionOptions()
        so.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
        try:
            return ort.InferenceSession(str(self.path), sess_options=so, providers=self._providers(ort))
        except EncoderError:
            raise
        except Exception as e:  # noqa: BLE001 - a corrupt or unsupported model, one line
            raise self._err(f"cannot load the ONNX model {self.path} ({one_line(e)})") from None

    def _tokenizer_dir(self) -> Path:
        if self.options.tokenizer:
            folder = Path(self.options.tokenizer).expanduser()
            if not folder.is_dir():
                raise self._err(f"tokenizer folder {folder} does not exist (or is not a folder)")
            return folder.resolve()
        if any((self.path.parent / f).is_file() for f in _TOKENIZER_FILES):
            return self.path.parent
        raise self._err(f"text:onnx/ needs a tokenizer and none is beside {self.path.name}: "
                        "add @tokenizer=<folder with tokenizer.json>")

    def tokenizer(self) -> Any:
        """The text tokenizer (loaded once, on first use)."""
        return self._load_once(self._build_tokenizer, "_tok", what="tokenizer")

    def _build_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self._tok_dir), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - whatever transformers raises, one line
            raise self._err(f"cannot load the tokenizer from {self._tok_dir} ({one_line(e)})") from None

    # ------------------------------------------------------------------ the graph
    def _inspect(self) -> None:
        """Check the graph's inputs and output against the modality and the declared preprocessing."""
        sess = self.session()
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        names = [o.name for o in outputs]
        want = self.options.output or names[0]
        if want not in names:
            raise self._err(f"the model has no output {want!r} (outputs: {', '.join(names)})")
        self._output = want
        out_shape = outputs[names.index(want)].shape
        self._out_rank = len(out_shape) if out_shape is not None else None
        self._dtypes: dict[str, Any] = {}
        for i in inputs:
            if i.type not in _DTYPES:
                raise self._err(f"the model's input {i.name!r} is a {i.type}, which anybind cannot feed")
            self._dtypes[i.name] = _DTYPES[i.type]
        batch = inputs[0].shape[0] if inputs[0].shape else None
        if isinstance(batch, int) and batch != 1:
            raise self._err(f"the model takes a fixed batch of {batch}; export it with a dynamic batch axis")
        self._one_by_one = batch == 1
        self._fixed_len: int | None = None
        self._size: tuple[int, int] | None = None
        if self.modality == "text":
            other = [i.name for i in inputs if i.name not in _TEXT_INPUTS]
            if other:
                raise self._err(f"the model's input(s) {', '.join(other)} are not what a tokenizer makes "
                                f"({', '.join(_TEXT_INPUTS)})")
            t = inputs[0].shape[1] if len(inputs[0].shape or ()) == 2 else None
            self._fixed_len = t if isinstance(t, int) else None
        else:
            if len(inputs) != 1:
                raise self._err(f"a {self.modality} model takes one input, this one takes "
                                f"{', '.join(i.name for i in inputs)}")
            self._check_media_input(inputs[0])
        if self._out_rank in (2, 3, 4) and isinstance(out_shape[1 if self._out_rank in (2, 4) else 2], int):
            self._dim = int(out_shape[1 if self._out_rank in (2, 4) else 2])
        if self._out_rank is not None:
            self._pool_used = self._pool_for(self._out_rank)

    def _check_media_input(self, inp: Any) -> None:
        shape = list(inp.shape or [])
        if self.modality == "audio":
            if len(shape) not in (2, 3) or (len(shape) == 3 and shape[1] not in (1, "1")):
                raise self._err(f"an audio model's input is (batch, samples) or (batch, 1, samples); "
                                f"{inp.name!r} is {shape}")
            self._fixed_len = shape[-1] if isinstance(shape[-1], int) else None
            return
        if len(shape) != 4:
            raise self._err(f"an image model's input is (batch, 3, H, W) or (batch, H, W, 3); "
                            f"{inp.name!r} is {shape}")
        nchw = self.options.layout == "nchw"
        c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
        if isinstance(c, int) and c != 3:
            raise self._err(f"the model's input {inp.name!r} is {shape}: {c} channels where layout="
                            f"{self.options.layout} puts 3 (use layout=nhwc or nchw)")
        fixed = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        size = self.options.size or fixed
        if size is None:
            raise self._err(f"the model's input {inp.name!r} has no fixed size ({shape}): give @size=HxW")
        if fixed is not None and size != fixed:
            raise self._err(f"the model's input {inp.name!r} is {shape}, but @size={size[0]}x{size[1]} makes "
                            f"{size[0]}x{size[1]} images")
        self._size = size

    def _pool_for(self, rank: int) -> str:
        pool = self.options.pool
        if rank == 2:
            if pool != "auto":
                raise self._err(f"output {self._output!r} is already one vector per item: "
                                f"pool={pool} does not apply")
            return "as-is"
        if rank == 4:
            if pool == "cls":
                raise self._err(f"output {self._output!r} is a (batch, channels, H, W) map: use pool=mean")
            return "mean-spatial"
        if rank != 3:
            raise self._err(f"output {self._output!r} has {rank} dimensions; anybind pools (batch, dim), "
                            "(batch, tokens, dim) or (batch, channels, H, W)")
        if pool == "cls" or (pool == "auto" and self.modality == "image"):
            return "cls"
        return "mean"

    # ------------------------------------------------------------------ the protocol
    @property
    def dim(self) -> int:  # type: ignore[override]
        if self._dim is None:
            self._dim = int(self._run([self.load(self._stand_in())]).shape[1])
        return self._dim

    def _stand_in(self) -> Any:
        if self.modality == "text":
            return "a"
        if self.modality == "image":
            from PIL import Image

            return Image.new("RGB", (32, 32), (127, 127, 127))
        return np.sin(np.arange(self.options.sr, dtype=np.float32) * 0.05) * 0.1

    @property
    def identity(self) -> str:
        if self._identity is None:
            weights = model_sha256(self.path, self._external())[:16]
            prep = self.options.described(self.modality, self._size)
            if self.modality == "text":
                tok = files_sha256(self._tok_dir)[:16]
                prep += f",max_length={self._max_length()},tokenizer=sha256:{tok}"
            if self._fixed_len and self.modality == "audio":
                prep += f",samples={self._fixed_len}"
            if self._pool_used is None:
                self.dim  # noqa: B018 - one forward tells the output's rank
            self._identity = (f"{self.modality}:onnx/{self.source}|weights=sha256:{weights}|prep={prep}|"
                              f"pool={self._pool_used};{PREP_VERSION}")
            if self.modality == "image":  # files decoded upright (data.media.load_image)
                self._identity += f"|{IMAGE_DECODING}"
        return self._identity

    def _external(self) -> list[Path]:
        try:
            files = external_data_files(self.path)
        except ImportError:
            raise self._err("hashing an ONNX model needs the 'onnx' package: pip install 'anybind[onnx]'"
                            ) from None
        except Exception as e:  # noqa: BLE001 - a model ORT loaded but onnx cannot parse
            raise self._err(f"cannot read the ONNX model {self.path} ({one_line(e)})") from None
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise self._err(f"the model's external data file(s) {', '.join(missing)} are missing")
        return files

    def _max_length(self) -> int:
        if self.options.max_length:
            return self.options.max_length
        if self._fixed_len:
            return self._fixed_len
        n = int(getattr(self.tokenizer(), "model_max_length", 0) or 0)
        return n if 0 < n <= 512 else 512

    def load(self, item: Any) -> Any:
        if self.modality == "text":
            return check_text(item)
        if self.modality == "image":
            if isinstance(item, np.ndarray) and item.dtype == np.float32 and item.ndim == 3:
                return item  # already preprocessed by load()
            img = as_rgb_image(item)
            try:
                return preprocess_image(img, self.options, self._size or (0, 0))
            except Exception as e:  # noqa: BLE001 - a decoded image the resize chokes on
                name = item if isinstance(item, (str, Path)) else short_repr(item)
                raise DataError(f"{name}: cannot preprocess for {self.spec} ({one_line(e)})") from None
        return self._audio(item)

    def _audio(self, item: Any) -> np.ndarray:
        sr = self.options.sr
        wav = as_audio(item, sr)
        wav = wav[: max(1, int(self.options.max_seconds * sr))]
        if self._fixed_len:
            wav = np.pad(wav, (0, max(0, self._fixed_len - len(wav))))[: self._fixed_len]
        return np.ascontiguousarray(wav, dtype=np.float32)  # load(load(x)) == load(x): normalised in _feeds

    def encode_loaded(self, batch: Sequence[Any]) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        loaded = [self.load(b) for b in batch]
        if self.modality == "text" and not self._one_by_one:
            return self._run(loaded)
        groups: dict[Any, list[int]] = {}
        for i, x in enumerate(loaded):  # same shapes batch together: nothing is padded
            groups.setdefault(i if self._one_by_one else np.shape(x), []).append(i)
        parts = {tuple(idx): self._run([loaded[i] for i in idx]) for idx in groups.values()}
        out = np.zeros((len(loaded), next(iter(parts.values())).shape[1]), np.float32)
        for idx, feats in parts.items():
            out[list(idx)] = feats
        return out

    # ------------------------------------------------------------------ the forward and the pooling
    def _feeds(self, items: list) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        sess = self.session()
        if self.modality == "text":
            pad: Any = "max_length" if self._fixed_len else True
            enc = self.tokenizer()(items, padding=pad, truncation=True, max_length=self._max_length(),
                                   return_tensors="np")
            feeds = {}
            for name, dtype in self._dtypes.items():
                if name in enc:
                    feeds[name] = np.asarray(enc[name]).astype(dtype)
                elif name == "token_type_ids":
                    feeds[name] = np.zeros_like(np.asarray(enc["input_ids"]), dtype=dtype)
                else:
                    raise self._err(f"the tokenizer makes no {name!r}, which the model takes")
            mask = np.asarray(enc["attention_mask"]) if "attention_mask" in enc else None
            return feeds, mask
        inp = sess.get_inputs()[0]
        x = np.stack(items)
        if self.modality == "audio" and self.options.normalize:  # per item, as wav2vec2's feature extractor
            x = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-7)
        if self.modality == "audio" and len(inp.shape) == 3:
            x = x[:, None, :]
        return {inp.name: x.astype(self._dtypes[inp.name])}, None

    def _run(self, items: list) -> np.ndarray:
        feeds, mask = self._feeds(items)
        try:
            out = self.session().run([self._output], feeds)[0]
        except Exception as e:  # noqa: BLE001 - a graph/input mismatch, one line naming the spec
            raise self._err(f"the model's forward failed ({one_line(e)})") from None
        out = np.asarray(out, dtype=np.float32)
        if self._pool_used is None:
            self._out_rank = out.ndim
            self._pool_used = self._pool_for(out.ndim)
        return self._pool(out, mask)

    def _pool(self, h: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        if self._pool_used == "as-is":
            return h.reshape(h.shape[0], -1)
        if self._pool_used == "mean-spatial":
            return h.mean(axis=(2, 3))
        if self._pool_used == "cls":
            return h[:, 0]
        if mask is None or mask.shape[:2] != h.shape[:2]:
            return h.mean(axis=1)
        m = mask.astype(np.float32)[:, :, None]
        return (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def make_onnx_encoder(modality: str, name: str) -> Encoder:
    """``<modality>:onnx/<name>`` (``name`` is what follows ``onnx/``)."""
    if modality not in ("text", "image", "audio"):
        raise EncoderError(f"onnx/ encoders read text, image or audio, not {modality!r}")
    return OrtEncoder(modality, name)

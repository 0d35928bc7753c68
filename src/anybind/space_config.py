"""Reading a saved space, checked: ``space.json`` into typed values, ``projectors.safetensors`` into tensors.

Every problem is one :class:`~anybind.errors.SpaceError` line naming the file and the reason:
a missing, unknown or mistyped key, an absurd size, a weights file that is not safetensors or
does not match ``space.json``, NaN or infinite weights.  Sizes stated in ``space.json`` are
checked (range, then against the shapes in the weights file's header) before anything of that
size is allocated.

Formats (``format_version``):

* 1 -- anybind before issue 14.  A modality's encoder ``identity`` may be ``null``; the space
  ``identity`` hashes each modality's encoder identity (or its spec when null) and its weights.
* 2 -- every modality records its encoder ``identity``; the space ``identity`` also hashes the
  encoder specs and the projector configs, so an edit to any of them is caught on load.
* 3 -- as 2, and a projector may be *centred* (inductive centring, :mod:`anybind.robust`): its
  config has ``"center": true`` and the weights file a ``<modality>.center`` tensor.  A space
  with no centred projector is still written as format 2, so an older anybind reads it.
* 4 -- as 3, and a projector may pool a frame sequence (``"frames": T``, a ``video:frames(...)@...,pool=attn``
  modality, :mod:`anybind.projectors`): its weights add the attention scorer (``attn.*``, ``attn_v.*``).  Only
  a space with such a projector is written as format 4.
* 5 -- as 4, and a projector may have a kernel branch (``"kernel": n, "kernel_tau": t``, issue 16,
  :mod:`anybind.projectors`): its weights add ``kernel_support`` (n x features) and ``kernel_coef`` (n x dim).  Only a
  space with such a projector is written as format 5.
* 6 -- as 5, and a projector may have the base-encoder block's gate (``"gate": n, "gate_base": d, "gate_q": q,
  "gate_refs": r``, issue 16, :mod:`anybind.base_gate`): its weights add ``gate_support`` (n x d) and ``gate_ref``
  (r).  Only a space with such a projector is written as format 6.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.media import short_repr
from .data.templates import check_descriptions, check_templates
from .errors import DataError, SpaceError
from .base_gate import check_gate
from .projectors import Projector, ProjectorConfig, check_frames, check_kernel

SPACE_FORMAT = "anybind.space"
FORMAT_VERSION = 2  # the format of a new space (see file_version: format 3 when a projector is centred)
CENTRED_FORMAT = 3
TEMPORAL_FORMAT = 4
KERNEL_FORMAT = 5
GATE_FORMAT = 6
NEWEST_FORMAT = 6  # the newest format this anybind reads
MAX_WIDTH = 1 << 20  # the widest in_dim / out_dim / hidden a space.json may state
_KINDS = ("linear", "mlp", "identity")
_REQUIRED = ("format", "format_version", "dim", "modalities", "temperature", "identity")
_OPTIONAL = ("anybind_version", "config", "info")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


@dataclass(frozen=True)
class ModalityEntry:
    """One bound modality as ``space.json`` states it."""

    encoder: str
    identity: str | None  # None only in format 1
    projector: ProjectorConfig


@dataclass(frozen=True)
class SpaceFile:
    """The checked content of a ``space.json``."""

    path: Path
    format_version: int
    dim: int
    temperature: float
    identity: str
    modalities: dict[str, ModalityEntry]
    config: dict[str, Any]
    info: dict[str, Any]


def _fail(path: Path, what: str) -> SpaceError:
    return SpaceError(f"{path}: {' '.join(what.split())}")


def _int(path: Path, where: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _fail(path, f"{where} is {short_repr(v)}, expected an integer in {lo}..{hi}")
    return v


def _number(path: Path, where: str, v: Any, lo: float, hi: float) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or not lo <= v <= hi:
        raise _fail(path, f"{where} is {short_repr(v)}, expected a finite number in [{lo}, {hi}]")
    return float(v)


def _text(path: Path, where: str, v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _fail(path, f"{where} is {short_repr(v)}, expected a non-empty string")
    return v


def _keys(path: Path, where: str, d: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(d, dict):
        raise _fail(path, f"{where} is {short_repr(d)}, expected an object")
    missing = [k for k in required if k not in d]
    unknown = sorted(set(d) - set(required) - set(optional))
    at = f"{where}: " if where else ""
    if missing:
        raise _fail(path, f"{at}missing key(s) {', '.join(map(repr, missing))}")
    if unknown:
        raise _fail(path, f"{at}unknown key(s) {', '.join(map(repr, unknown[:5]))}")
    return d


def _projector(path: Path, where: str, d: Any) -> ProjectorConfig:
    optional = ("center", "frames", "kernel", "kernel_tau", "gate", "gate_base", "gate_q", "gate_refs")
    names = tuple(f.name for f in fields(ProjectorConfig) if f.name not in optional)
    d = _keys(path, where, d, names, optional)
    center = d.get("center", False)
    if not isinstance(center, bool):
        raise _fail(path, f"{where}.center is {short_repr(center)}, expected true or false")
    kind = d["kind"]
    if kind not in _KINDS:
        raise _fail(path, f"{where}.kind is {short_repr(kind)}, expected one of {', '.join(_KINDS)}")
    if not isinstance(d["standardize"], bool):
        raise _fail(path, f"{where}.standardize is {short_repr(d['standardize'])}, expected true or false")
    cfg = ProjectorConfig(
        in_dim=_int(path, f"{where}.in_dim", d["in_dim"], 1, MAX_WIDTH),
        out_dim=_int(path, f"{where}.out_dim", d["out_dim"], 1, MAX_WIDTH),
        kind=kind,
        hidden=_int(path, f"{where}.hidden", d["hidden"], 0, MAX_WIDTH),
        dropout=_number(path, f"{where}.dropout", d["dropout"], 0.0, 1.0),
        input_dropout=_number(path, f"{where}.input_dropout", d["input_dropout"], 0.0, 1.0),
        standardize=d["standardize"],
        center=center,
        frames=_int(path, f"{where}.frames", d.get("frames", 0), 0, MAX_WIDTH),
        kernel=_int(path, f"{where}.kernel", d.get("kernel", 0), 0, MAX_WIDTH),
        kernel_tau=_number(path, f"{where}.kernel_tau", d.get("kernel_tau", 0.0), 0.0, math.inf),
        gate=_int(path, f"{where}.gate", d.get("gate", 0), 0, MAX_WIDTH),
        gate_base=_int(path, f"{where}.gate_base", d.get("gate_base", 0), 0, MAX_WIDTH),
        gate_q=_number(path, f"{where}.gate_q", d.get("gate_q", 0.0), 0.0, 1.0),
        gate_refs=_int(path, f"{where}.gate_refs", d.get("gate_refs", 0), 0, MAX_WIDTH),
    )
    why = check_frames(cfg) or check_kernel(cfg) or check_gate(cfg)
    if why:
        raise _fail(path, f"{where}: {why}")
    if kind == "identity" and cfg.in_dim != cfg.out_dim:
        raise _fail(path, f"{where}: an identity projector needs in_dim == out_dim, got {cfg.in_dim} and {cfg.out_dim}")
    return cfg


def read_space_json(path: str | Path) -> SpaceFile:
    """Parse and check a ``space.json`` (any supported format version)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _fail(path, f"corrupt JSON ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise _fail(path, f"unreadable ({e.strerror or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != SPACE_FORMAT:
        raise _fail(path, "not an anybind space file")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > NEWEST_FORMAT:
        raise _fail(path, f"saved by a newer anybind (format {version}); upgrade anybind")
    _keys(path, "", meta, _REQUIRED, _OPTIONAL)
    version = _int(path, "format_version", version, 1, NEWEST_FORMAT)
    dim = _int(path, "dim", meta["dim"], 1, MAX_WIDTH)
    mods = meta["modalities"]
    if not isinstance(mods, dict) or not mods:
        raise _fail(path, f"modalities is {short_repr(mods)}, expected an object with one entry per modality")
    entries: dict[str, ModalityEntry] = {}
    for m, raw in mods.items():
        _text(path, "a modality name", m)
        where = f"modalities.{m}"
        required = ("encoder", "identity", "projector") if version >= 2 else ("encoder", "projector")
        entry = _keys(path, where, raw, required, ("identity",))  # format 1: the identity may be absent or null
        ident = entry.get("identity")
        if ident is not None or version >= 2:
            ident = _text(path, f"{where}.identity", ident)
        cfg = _projector(path, f"{where}.projector", entry["projector"])
        if cfg.center and version < CENTRED_FORMAT:
            raise _fail(path, f"{where}.projector.center needs format_version {CENTRED_FORMAT}, the file says {version}")
        if cfg.frames and version < TEMPORAL_FORMAT:
            raise _fail(path, f"{where}.projector.frames needs format_version {TEMPORAL_FORMAT}, the file says {version}")
        if cfg.kernel and version < KERNEL_FORMAT:
            raise _fail(path, f"{where}.projector.kernel needs format_version {KERNEL_FORMAT}, the file says {version}")
        if cfg.gate and version < GATE_FORMAT:
            raise _fail(path, f"{where}.projector.gate needs format_version {GATE_FORMAT}, the file says {version}")
        if cfg.out_dim != dim:
            raise _fail(path, f"{where}.projector.out_dim is {cfg.out_dim}, but the space's dim is {dim}")
        entries[m] = ModalityEntry(_text(path, f"{where}.encoder", entry["encoder"]), ident, cfg)
    temperature = _number(path, "temperature", meta["temperature"], 0.0, math.inf)
    if temperature <= 0:
        raise _fail(path, f"temperature is {temperature}, expected a positive number")
    extras = {}
    for k in ("config", "info"):
        extras[k] = meta.get(k, {})
        if not isinstance(extras[k], dict):
            raise _fail(path, f"{k} is {short_repr(extras[k])}, expected an object")
    if "anybind_version" in meta:
        _text(path, "anybind_version", meta["anybind_version"])
    check_space_templates(path, extras["info"])
    check_space_descriptions(path, extras["info"])
    return SpaceFile(path, version, dim, temperature, _text(path, "identity", meta["identity"]), entries,
                     extras["config"], extras["info"])


def check_space_templates(path: Path, info: Mapping[str, Any]) -> None:
    """``info["templates"]`` (the space's zero-shot prompts, :mod:`anybind.prompts`), when present, must be a
    non-empty list of templates with ``{}``: else one :class:`SpaceError` naming the file."""
    if "templates" not in info:
        return
    t = info["templates"]
    if not isinstance(t, list):
        raise _fail(path, f"info.templates is {short_repr(t)}, expected a list of prompt templates with '{{}}'")
    try:
        check_templates(t)
    except DataError as e:
        raise _fail(path, f"info.templates: {e}") from None


def check_space_descriptions(path: Path, info: Mapping[str, Any]) -> None:
    """``info["descriptions"]`` (the space's class descriptions, :mod:`anybind.prompts`), when present, must map
    class names to lists of sentences: else one :class:`SpaceError` naming the file."""
    if "descriptions" not in info:
        return
    try:
        check_descriptions(info["descriptions"])
    except DataError as e:
        raise _fail(path, f"info.descriptions: {e}") from None


def space_identity(
    version: int, encoders: Mapping[str, str], identities: Mapping[str, str], projectors: Mapping[str, Projector]
) -> str:
    """The identity of a space of this format: a hash of what decides its embeddings.

    Format 2: each modality's encoder spec and identity, projector config and weights; format 1
    (kept for spaces saved before, so that their indexes stay valid): encoder identity (or spec)
    and weights.
    """
    h = hashlib.sha256()
    for m in sorted(projectors):
        h.update(m.encode())
        if version >= 2:
            cfg = json.dumps(projectors[m].cfg.to_dict(), sort_keys=True, default=_plain)  # "center" only when set
            # a vectors: spec names a file whose path depends on where the space is (stored relative to it);
            # its content is in the encoder identity
            spec = "vectors:" if encoders[m].startswith("vectors:") else encoders[m]
            for part in (spec, identities.get(m, ""), cfg):
                h.update(b"\0" + part.encode())
        else:
            h.update(identities.get(m, encoders[m]).encode())
        for k, v in sorted(projectors[m].state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:24]


def file_version(version: int, projectors: Mapping[str, Projector]) -> int:
    """The format a space of format ``version`` is written in: format 3 as soon as a projector is centred,
    4 as soon as one pools frames, 5 as soon as one has a kernel branch, 6 as soon as one has a base gate."""
    if any(p.cfg.gate for p in projectors.values()):
        return max(version, GATE_FORMAT)
    if any(p.cfg.kernel for p in projectors.values()):
        return max(version, KERNEL_FORMAT)
    if any(p.cfg.frames for p in projectors.values()):
        return max(version, TEMPORAL_FORMAT)
    return max(version, CENTRED_FORMAT) if any(p.cfg.center for p in projectors.values()) else version


def _plain(o: Any) -> Any:
    return o.item()  # numpy scalars in a config built in code (in_dim from a feature matrix's shape)


def expected_shapes(cfg: ProjectorConfig) -> dict[str, tuple[int, ...]]:
    """The tensor shapes of a projector's state dict, without allocating it (meta device)."""
    with torch.device("meta"):
        proj = Projector(cfg)
    return {k: tuple(v.shape) for k, v in proj.state_dict().items()}


def read_weights(path: str | Path, want: Mapping[str, tuple[int, ...]], described_by: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, which must be exactly ``want`` (name -> shape), floating and finite.

    The names, shapes and dtypes are checked in the file's header before any tensor is read, so a
    size stated in ``described_by`` (the JSON file) is never allocated unless the file holds it.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            header = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError, OSError, ... on anything not safetensors
        raise _fail(path, f"not a readable safetensors file ({type(e).__name__}: {e})") from None
    missing = [k for k in want if k not in header]
    if missing:
        raise _fail(path, f"missing tensor(s) {', '.join(missing[:5])}")
    unknown = sorted(set(header) - set(want))
    if unknown:
        raise _fail(path, f"tensor(s) {', '.join(unknown[:5])} are not described by {described_by}")
    for k, (shape, dtype) in header.items():
        if shape != tuple(want[k]):
            raise _fail(path, f"tensor {k} has shape {list(shape)}, but {described_by} implies {list(want[k])}")
        if dtype not in _FLOAT_DTYPES:
            raise _fail(path, f"tensor {k} has dtype {dtype}, expected floating point")
    try:
        sd = load_file(str(path))
    except Exception as e:
        raise _fail(path, f"not a readable safetensors file ({type(e).__name__}: {e})") from None
    for k in sorted(sd):
        if not _finite(sd[k]):
            raise _fail(path, f"tensor {k} has non-finite values (NaN or infinity)")
    return sd


def _finite(t: torch.Tensor) -> bool:
    # numpy: on a busy CPU torch.isfinite over a few MB costs 100x more (thread pool contention)
    return bool(np.isfinite((t.float() if t.dtype == torch.bfloat16 else t).numpy()).all())


def read_space_weights(path: str | Path, sf: SpaceFile) -> tuple[dict[str, dict[str, torch.Tensor]], float]:
    """Each modality's projector state dict and the logit scale, checked against ``sf`` before loading."""
    by_mod = {m: {f"{m}.{k}": s for k, s in expected_shapes(e.projector).items()} for m, e in sf.modalities.items()}
    sd = read_weights(path, {**{k: s for shapes in by_mod.values() for k, s in shapes.items()}, "logit_scale": (1,)},
                      sf.path.name)
    logit_scale = float(sd["logit_scale"].item())
    temperature = math.exp(-max(logit_scale, -700.0))
    if not math.isclose(temperature, sf.temperature, rel_tol=1e-6):
        raise _fail(Path(path), f"logit_scale {logit_scale} means temperature {temperature:.6g}, "
                                f"but {sf.path.name} says {sf.temperature:.6g}")
    return {m: {k[len(m) + 1 :]: sd[k] for k in shapes} for m, shapes in by_mod.items()}, logit_scale


def json_default(o: Any) -> Any:
    """``json.dumps``' default for space.json: numpy scalars and arrays, paths."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

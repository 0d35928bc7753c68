"""The counts a Tux Paint corpus summary reports: records per split, modality families (text, translated text,
image, audio, speech, translated and name speech) overall and per split, image formats, languages and fields."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from ..data.manifest import SPLITS


def corpus_counts(records: list[dict[str, Any]]) -> dict[str, Any]:
    def family(key: str) -> str | None:
        if key in ("id", "split", "labels"):
            return None
        if key.startswith("speech_name"):
            return "speech_name"
        if key.startswith("text_"):
            return "text_translated"
        if key.startswith("speech_"):
            return "speech_translated"
        return key

    fams = ("text", "text_translated", "image", "audio", "speech", "speech_translated", "speech_name")
    modalities = {m: 0 for m in fams}
    per_split = {s: {"records": 0, **{m: 0 for m in fams}} for s in SPLITS}
    fields: Counter[str] = Counter()
    text_langs: set[str] = set()
    speech_langs: set[str] = set()
    for r in records:
        present = {family(k) for k in r} - {None}
        per_split[r["split"]]["records"] += 1
        for m in present:
            modalities[m] += 1  # type: ignore[index]
            per_split[r["split"]][m] += 1  # type: ignore[index]
        for k in r:
            if family(k) is not None:
                fields[k] += 1
            if k.startswith("text_"):
                text_langs.add(k[5:])
            elif k.startswith("speech_") and not k.startswith("speech_name"):
                speech_langs.add(k[7:])
    image_kinds = Counter(os.path.splitext(r["image"])[1].lower() for r in records)
    return {
        "records": len(records),
        "splits": {s: per_split[s]["records"] for s in SPLITS},
        "modalities": modalities,
        "per_split": per_split,
        "image_formats": dict(sorted(image_kinds.items())),
        "text_languages": len(text_langs) + 1,
        "speech_languages": sorted(speech_langs | ({"en"} if modalities["speech"] else set())),
        "fields": dict(sorted(fields.items())),
    }

"""The newcomer CLI tests' shared set-up (tests/test_cli_newcomer_*.py): the helper encoders' specs, a small corpus
with language variants (captions in two languages, clips in two, an image), the CLI run at 80 columns, and a usage
error's words on one line."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from anybind.cli import app

TEXT = "callable:helper_encoders:hashed_text"
FILE = "callable:helper_encoders:file_size"
IMAGE = "callable:helper_encoders:image_stats"


def write_wav(path: Path, seed: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.random.default_rng(seed).normal(size=800 + 10 * seed) * 3000).astype(np.int16).tobytes())


def corpus(root: Path, fields=("text", "text_fr", "speech", "speech_de", "image"), n: int = 24) -> Path:
    """``n`` records (6 val) with an English and a French caption, a clip in two languages, an image."""
    from PIL import Image

    recs = []
    for i in range(n):
        write_wav(root / f"s{i}.wav", i)
        Image.new("RGB", (8, 8), (i * 10 % 255, i * 3 % 255, 100)).save(root / f"i{i}.png")
        r = {"id": f"r{i}", "split": "val" if i < 6 else "train", "text": f"item {i}", "text_fr": f"objet {i}",
             "speech": f"s{i}.wav", "speech_de": f"s{i}.wav", "image": f"i{i}.png", "imu": f"s{i}.wav",
             "labels": {"top": "ab"[i % 2]}}
        recs.append({k: v for k, v in r.items() if k in fields or k in ("id", "split", "labels")})
    p = root / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def cli(*args: str, cache: Path | None = None):
    argv = [str(a) for a in args] + (["--cache", str(cache)] if cache else [])
    return CliRunner().invoke(app, argv, env={"COLUMNS": "80"})


def flat(out: str) -> str:
    """Rich wraps and boxes usage errors: the words, in order, on one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


"""Small generated media and a paired manifest for the encoder-by-spec tests (hf, onnx, pretrained pairs), and a
cheap hashed text encoder (:class:`TinyText`) for the ensemble tests."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import numpy as np

from anybind.encoders.base import Encoder

WORDS = ["the dog", "a cat", "the cat", "dog", "cat", "a dog sat", "zebra", "quiz", "mat", "sat", "hat",
         "map"]


def pngs(root: Path, n: int = 3) -> list[Path]:
    """``n`` random RGB PNGs of different heights (20, 24, ... x 24) in ``root``."""
    from PIL import Image

    out = []
    for i in range(n):
        arr = np.random.default_rng(i).integers(0, 255, (20 + 4 * i, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / f"i{i}.png")
        out.append(root / f"i{i}.png")
    return out


def wav(path: Path, n: int, seed: int, rate: int = 16000) -> Path:
    """``n`` samples of seeded 16-bit noise as a mono WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.random.default_rng(seed).normal(size=n) * 3000).astype(np.int16).tobytes())
    return path


def text_image_manifest(path: Path, images: list[Path]) -> Path:
    """A manifest pairing :data:`WORDS` with ``images`` (next to it); the first 3 records are val."""
    rows = [{"id": f"r{i}", "split": "val" if i < 3 else "train", "text": w, "image": p.name}
            for i, (w, p) in enumerate(zip(WORDS, images))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli_fit(manifest: Path, out: Path, cache: Path, *encoders: str):
    """``anybind fit MANIFEST -e ... --epochs 2 --out OUT --cache CACHE`` through Typer's test runner."""
    from typer.testing import CliRunner

    from anybind.cli import app

    argv = ["fit", str(manifest), *(x for e in encoders for x in ("-e", e)), "--epochs", "2", "--out",
            str(out), "--cache", str(cache)]
    return CliRunner().invoke(app, argv, env={"COLUMNS": "80"})


class TinyText(Encoder):
    """A cheap deterministic text encoder: 8 hashed values per text, seeded by its name."""

    modality, input_kind, dim, batch_size = "text", "text", 8, 64

    def __init__(self, name: str):
        self.name = name

    @property
    def identity(self) -> str:
        return f"tinytext:{self.name}|v1"

    def encode_loaded(self, batch):
        rows = [np.frombuffer(hashlib.sha256(f"{self.name}|{t}".encode()).digest()[:8], np.uint8) for t in batch]
        X = np.asarray(rows, np.float32).reshape(len(batch), 8) - 127.5
        return X / np.linalg.norm(X, axis=1, keepdims=True)

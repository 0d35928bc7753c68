"""The index tests' small world (tests/test_index_*.py, test_rerank.py): a text + image space of the helper encoders
and a corpus of captioned little images with labels."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space


def make_space(seed=0, text="hashed_text", dim=16):
    torch.manual_seed(seed)
    enc = {"text": f"callable:helper_encoders:{text}", "image": "callable:helper_encoders:image_stats"}
    cfg = dict(out_dim=dim, kind="linear", dropout=0.0, input_dropout=0.0)
    proj = {
        "text": Projector(ProjectorConfig(in_dim=8, **cfg)),
        "image": Projector(ProjectorConfig(in_dim=7, **cfg)),
    }
    return Space(enc, proj)


def write_corpus(
    root: Path, n=24, start=0, name="m.jsonl", text=lambda i: f"stamp number {i}", skip_images=False
):
    """n records: a caption, a distinct little image, and labels group=odd/even, tens=i//10."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(start, start + n):
        rng = np.random.default_rng(i)
        p = root / "img" / f"{i}.png"
        if not p.exists():
            a = rng.integers(0, 255, (8 + i % 7, 9 + i % 5, 3), dtype=np.uint8)
            Image.fromarray(a).save(p)
        rec = {
            "id": f"r{i}",
            "text": text(i),
            "labels": {"group": "odd" if i % 2 else "even", "tens": str(i // 10)},
        }
        if not skip_images:
            rec["image"] = f"img/{i}.png"
        lines.append(json.dumps(rec))
    (root / name).write_text("\n".join(lines) + "\n")
    return root / name


def saved_world(root: Path, n=10) -> tuple[Path, Path]:
    """:func:`make_space` saved in ``root/space`` and :func:`write_corpus` of ``n`` records: (space, manifest)."""
    make_space().save(root / "space")
    return root / "space", write_corpus(root, n=n)


def cli(*args):
    """``anybind ARGS...`` in this process (typer's CliRunner), every argument as a string."""
    from typer.testing import CliRunner

    from anybind.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def index_args(root: Path, manifest: Path, *extra) -> list:
    """``anybind index`` of :func:`saved_world`'s space and ``manifest`` into ``root/ix``, cache ``root/c``."""
    return ["index", root / "space", manifest, "--out", root / "ix", "--cache", root / "c", *extra]

"""A small space + index + captioner for the caption routes and the page: drawn pictures of coloured shapes
("Two red stars."), a tiny image encoder (channel statistics), a bag-of-words text encoder, the tiny Llama of
tests/caption_lm.py and a captioner trained text-only on the captions.  Built once per test session."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from caption_lm import build_tiny_lm

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60), "yellow": (235, 215, 40)}
SHAPES = ["circle", "square", "star"]
COUNTS = ["One", "Two"]
_BUILT: dict[str, dict] = {}


def draw(path: Path, n: str, color: str, shape: str, size: int = 48) -> Path:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    boxes = [(6, 14, 22, 30), (26, 14, 42, 30)] if n == "Two" else [(10, 10, 38, 38)]
    for x0, y0, x1, y1 in boxes:
        if shape == "circle":
            d.ellipse((x0, y0, x1, y1), fill=COLORS[color])
        elif shape == "square":
            d.rectangle((x0, y0, x1, y1), fill=COLORS[color])
        else:
            cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
            d.polygon([(cx, y0), (x1, cy + r / 3), (x0, cy + r / 3)], fill=COLORS[color])
            d.polygon([(cx, y1), (x1, cy - r / 3), (x0, cy - r / 3)], fill=COLORS[color])
    img.save(path)
    return path


def caption_site(out: Path) -> dict:
    """Build (once) and return {manifest, space, index, captioner (saved folder), records, lm}."""
    if "site" in _BUILT:
        return _BUILT["site"]
    from anybind import Space
    from anybind.caption import fit_captioner, load_lm
    from anybind.index import Index

    out.mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(exist_ok=True)
    recs = []
    for rep, split in enumerate(["train", "train", "val", "test"]):
        for n, c, s in itertools.product(COUNTS, COLORS, SHAPES):
            cap = f"{n} {c} {s}{'s' if n == 'Two' else ''}."
            rid = f"{n}-{c}-{s}-{rep}".lower()
            img = draw(out / "img" / f"{rid}.png", n, c, s, size=48 + 2 * rep)
            recs.append({"id": rid, "split": split, "text": cap, "image": str(img)})
    man = out / "shapes.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cache = out / "cache"
    enc = {"text": "callable:helper_encoders:bow_text", "image": "callable:helper_encoders:image_stats"}
    space = Space.fit(man, encoders=enc, cache=cache, epochs=40, dim=16, hidden=64, progress=False, seed=0)
    space.save(out / "space")
    Index.build(space, man, out / "index", cache=cache)
    lm = load_lm(str(build_tiny_lm(sorted({r["text"] for r in recs}), out / "lm")))
    cap = fit_captioner(space, man, lm, cache=cache, epochs=30, patience=10, batch_size=8, lr=1e-2, prefix_len=4,
                        hidden=64, noise_grid=(0.1,), temperature_grid=(0.01, 0.05), progress=False)
    cap.save(out / "captioner")
    _BUILT["site"] = {"manifest": man, "space": out / "space", "index": out / "index", "captioner": out / "captioner",
                      "cache": cache, "records": recs, "lm": lm, "cap": cap}
    return _BUILT["site"]

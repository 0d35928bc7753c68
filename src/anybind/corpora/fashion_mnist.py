"""Fashion-MNIST as a labelled image corpus, for evaluation only.

Source: the Debian package ``dataset-fashion-mnist`` (Zalando, MIT/Expat),
``/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``:
60,000 + 10,000 grey 28 x 28 pictures of clothes in 10 classes.

Rules
-----

**Records.**  One per image: id ``train/00042`` or ``test/00042`` (the
index in its official file), ``image`` = ``media/<set>/<thousands>/<index>.png``,
``labels`` = ``{"class": "Ankle boot", "class_id": 9}`` (the official class
names, :data:`CLASSES`), ``text`` = the class name in lower case with ``/``
read as "or" (``t-shirt or top``, ``ankle boot``): the corpus has no
captions, the class name is all the text there is.

**Pixels.**  Inverted (``255 - x``) so that the garment is dark on white,
like the clip-art and photos the image encoders know (the files store light
garments on black); saved as 28 x 28 greyscale PNG.  Encoders resize
(upscale) them as they do any image.

**Split.**  The official test set is ``test``; the official training set is
split 90/10 into ``train`` / ``val`` by a hash of the id
(:func:`anybind.data.manifest.hash_split` with fractions 0.9/0.1/0):
deterministic, and the same image is in the same split whatever ``limit``.

**Evaluation only.**  ``corpus.json`` has ``"eval_only": true``: the corpus
is for measuring zero-shot transfer and linear probes, and training on it
must be asked for explicitly (see :func:`anybind.corpora.is_eval_only`).

**limit.**  Writing 70,000 PNGs takes a while (~half a minute) and 60 MB:
``limit=N`` keeps the first N images of each official file (the files are
in random class order, so the first N are a fair sample).

**Damaged inputs.**  A missing, unreadable or malformed file pair (bad gzip,
wrong idx magic number, fewer bytes than its header says) leaves that
official set out, reported in ``corpus.json`` under ``missing_sources``,
and the build goes on with the other; an image/label count mismatch keeps
the common prefix (``problems``); a label outside 0..9 skips that image
(``bad_label``).  With neither set readable the build fails.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..data.manifest import hash_split
from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, write_license
from .debian import debian_copyright_path, debian_package_version, ensure_debian_package

__all__ = ["CLASSES", "DEFAULT_DIR", "build_fashion_mnist", "class_text", "read_idx"]

NAME = "fashion-mnist"
BUILDER_VERSION = "1"
PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
VAL_FRACTION = 0.1


def class_text(name: str) -> str:
    """``T-shirt/top`` -> ``t-shirt or top``; ``Ankle boot`` -> ``ankle boot``."""
    return " or ".join(p.strip() for p in name.lower().split("/"))


def read_idx(path: str | os.PathLike[str], limit: int | None = None) -> np.ndarray:
    """An idx file (gzipped or not) as a uint8 array: ``(n,)`` labels or ``(n, rows, cols)`` images.

    Raises :class:`DataError` naming the file for a bad gzip stream, an
    unknown magic number, a non-uint8 type, or fewer bytes than the header
    announces.  ``limit`` reads only the first N items.
    """
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{p}: not an idx file (magic {head.hex() or 'empty'})")
            if head[2] != 0x08:
                raise DataError(f"{p}: idx data type 0x{head[2]:02x} is not unsigned bytes (0x08)")
            ndim = head[3]
            if ndim not in (1, 3):
                raise DataError(f"{p}: idx file with {ndim} dimensions (expected 1 for labels, 3 for images)")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{p}: idx header truncated")
            dims = list(struct.unpack(f">{ndim}I", dims_raw))
            n = dims[0] if limit is None else min(dims[0], limit)
            per = int(np.prod(dims[1:])) if ndim > 1 else 1
            want = n * per
            data = f.read(want)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{p}: unreadable ({type(e).__name__}: {e})") from None
    if len(data) < want:
        raise DataError(f"{p}: truncated: header says {dims[0]} items, only {len(data) // per} present")
    return np.frombuffer(data, dtype=np.uint8).reshape([n, *dims[1:]])


def build_fashion_mnist(
    out_dir: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] = DEFAULT_DIR,
    limit: int | None = None,
    progress: bool = True,
) -> CorpusSummary:
    """Build the Fashion-MNIST corpus into ``out_dir`` (see the module docstring).

    ``limit``: at most N images from each official file (default all 70,000).
    """
    d = Path(data_dir)
    if not d.is_dir() and d.absolute() == Path(DEFAULT_DIR) and not d.exists():
        ensure_debian_package(PACKAGE, DEFAULT_DIR)
    if not d.is_dir():
        raise DataError(
            f"Fashion-MNIST folder {d} does not exist: install the Debian package with "
            f"`sudo apt-get install -y {PACKAGE}` (it installs {DEFAULT_DIR}), or pass data_dir= pointing to a copy."
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    d = d.absolute()

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, d, limit, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(tmp: Path, out_dir: Path, data_dir: Path, limit: int | None, prog: Any) -> CorpusSummary:
    from PIL import Image

    problems: Counter[str] = Counter()
    missing: dict[str, str] = {}
    sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (img_file, lab_file) in FILES.items():
        try:
            images = read_idx(data_dir / img_file, limit)
            labels = read_idx(data_dir / lab_file, limit)
        except DataError as e:
            missing[name] = str(e)
            continue
        if images.ndim != 3 or labels.ndim != 1:
            missing[name] = f"{img_file} / {lab_file}: expected 3-d images and 1-d labels"
            continue
        if len(images) != len(labels):
            problems[f"{name}_count_mismatch"] += abs(len(images) - len(labels))
            n = min(len(images), len(labels))
            images, labels = images[:n], labels[:n]
        sets[name] = (images, labels)
    if not sets:
        raise DataError(
            "no Fashion-MNIST set is readable:\n  " + "\n  ".join(f"{k}: {v}" for k, v in missing.items())
        )

    total = sum(len(lab) for _, lab in sets.values())
    task = prog.add_task("writing Fashion-MNIST PNGs", total=total) if prog is not None else None
    skipped: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    made: set[Path] = set()
    for name, (images, labels) in sets.items():
        width = max(5, len(str(len(labels) - 1)))
        for i in range(len(labels)):
            if prog is not None and i % 500 == 0:
                prog.update(task, advance=min(500, len(labels) - i))
            rid = f"{name}/{i:0{width}d}"
            y = int(labels[i])
            if y >= len(CLASSES):
                skipped.setdefault("bad_label", []).append(rid)
                continue
            rel = Path("media", name, f"{i // 1000:02d}", f"{i:0{width}d}.png")
            if rel.parent not in made:
                (tmp / rel.parent).mkdir(parents=True, exist_ok=True)
                made.add(rel.parent)
            Image.fromarray(np.ascontiguousarray(255 - images[i])).save(tmp / rel, format="PNG")
            split = "test" if name == "test" else hash_split(rid, (1.0 - VAL_FRACTION, VAL_FRACTION, 0.0))
            records.append(
                {
                    "id": rid,
                    "split": split,
                    "text": class_text(CLASSES[y]),
                    "image": rel.as_posix(),
                    "labels": {"class": CLASSES[y], "class_id": y},
                }
            )

    per_class = Counter(r["labels"]["class"] for r in records)
    default = data_dir == Path(DEFAULT_DIR)
    meta = {
        "description": "Fashion-MNIST (Zalando): 28x28 greyscale clothes, 10 classes, inverted to dark on white. "
        "Evaluation only.",
        "eval_only": True,
        "eval_only_reason": "a benchmark of zero-shot transfer: training on it must be explicit, never a default",
        "classes": list(CLASSES),
        "class_texts": [class_text(c) for c in CLASSES],
        "per_class": {c: per_class.get(c, 0) for c in CLASSES},
        "source": {
            "package": PACKAGE,
            "version": debian_package_version(PACKAGE) if default else "unknown",
            "dir": str(data_dir),
            "license": "MIT (Expat), Copyright 2017 Zalando SE",
            "upstream": "https://github.com/zalandoresearch/fashion-mnist",
        },
        "builder": {"module": __name__, "version": BUILDER_VERSION, "limit": limit},
        "media": "written into media/ as 28x28 greyscale PNG (255 - pixel: dark garment on white)",
        "split": f"official test -> test; official train -> train/val by hash_split(id), val fraction {VAL_FRACTION}",
        "missing_sources": dict(sorted(missing.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems, max_ids=200)
    write_license(
        tmp,
        {PACKAGE: debian_copyright_path(PACKAGE)},
        fallback="Fashion-MNIST, Copyright 2017 Zalando SE, MIT License (Expat).",
        source_md=(
            "# Fashion-MNIST corpus (evaluation only)\n\n"
            f"* Data: Fashion-MNIST by Zalando Research, Debian `{PACKAGE}` ({data_dir}), MIT/Expat.\n"
            "* The PNGs are the original pixels inverted (255 - x): dark garments on white.\n"
            "* `corpus.json` marks it `eval_only`: do not train on it unless you mean to.\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
    )
    return summary

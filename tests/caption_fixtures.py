"""The captioning tests' shared corpus and captioner (tests/test_caption*.py).

The language model is a tiny 2-layer Llama pretrained here on the corpus' captions (tests/caption_lm.py);
the real SmolLM2 runs only in ``anybind bench --task captioning``.  The corpus: captions of shapes
("Two red stars.") embedded by a bag-of-words text encoder, and a "sketch" modality whose vectors encode
the same scene in another basis with noise, so that sketch embeddings sit away from the text ones.
Both fixtures are session-scoped and registered by conftest.py (``pytest_plugins``): the corpus is built and the
captioner trained once for every caption test file (a file must not import them by name: that would make them its own).
"""

import itertools
import json

import numpy as np
import pytest

from anybind import Space
from anybind.caption import fit_captioner, load_lm

from caption_lm import build_tiny_lm


COLORS = ["red", "blue", "green", "yellow"]


SHAPES = ["circle", "square", "star"]


COUNTS = ["One", "Two"]


TEXT = "callable:helper_encoders:bow_text"


def scene_caption(n, c, s):
    return f"{n} {c} {s}{'s' if n == 'Two' else ''}."


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(9, 24))
    recs, vecs = [], []
    combos = list(itertools.product(COUNTS, COLORS, SHAPES))
    for rep in range(4):
        for n, c, s in combos:
            z = np.zeros(9)
            z[COUNTS.index(n)] = z[2 + COLORS.index(c)] = z[6 + SHAPES.index(s)] = 1.0
            vecs.append(z @ basis + 0.3 * rng.normal(size=24))
            split = ["train", "train", "val", "test"][rep]
            recs.append({"id": f"{n}-{c}-{s}-{rep}", "split": split, "text": scene_caption(n, c, s), "sketch": True})
    ids = np.array([r["id"] for r in recs])
    np.savez(tmp / "sketch.npz", ids=ids, vectors=np.asarray(vecs, np.float32))
    man = tmp / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in recs))
    encoders = {"text": TEXT, "sketch": f"vectors:{tmp / 'sketch.npz'}"}
    space = Space.fit(man, encoders=encoders, cache=tmp / "c", epochs=40, dim=16, hidden=64, progress=False, seed=0)
    lm_dir = build_tiny_lm(sorted({r["text"] for r in recs}), tmp / "lm")
    return tmp, man, space, load_lm(str(lm_dir)), recs


FIT_TEMPS = (0.005, 0.02, 0.1)


FIT = {"epochs": 60, "patience": 15, "batch_size": 8, "lr": 1e-2, "prefix_len": 4, "hidden": 64,
       "noise_grid": (0.0, 0.1), "temperature_grid": FIT_TEMPS, "progress": False}


@pytest.fixture(scope="session")
def captioner(corpus):
    tmp, man, space, lm, _ = corpus
    return fit_captioner(space, man, lm, cache=tmp / "c", **FIT)

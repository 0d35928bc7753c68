"""``evaluate.class_embeddings`` packs every class's prompts (templates, then its descriptions) into blocks of at most
``batch_size``; with no class described this is the fixed block of classes x templates it used to form by a path of
its own: the same embed calls and the same class vectors to the bit (issue 15).  The text encoder is the helpers'
pseudo-random one (float32 vectors of full precision, so the means' rounding is exercised): every prompt's features
come from the cache after the first case, so a real model adds only its load (~20-60 s on a busy machine) to the
assertion."""

from __future__ import annotations

import numpy as np
import pytest

from anybind.bench.tasks_corpora import FM_NAMES, FM_TEMPLATES
from anybind.data.templates import fill_template
from anybind.encoders.base import get_encoder
from anybind.evaluate import class_embeddings
from anybind.projectors import Projector, ProjectorConfig
from anybind.space import Space

NAMES = list(FM_NAMES.values())[:5]
TEXT = "callable:helper_encoders:hashed_text"


def _templates_only(space, names, templates, batch_size, cache):
    """The former templates-only path: ``batch_size // len(templates)`` classes (at least one) a block, each class
    the renormalised mean of its block's rows."""
    T = len(templates)
    per = max(1, batch_size // T)
    out = np.zeros((len(names), space.dim), np.float32)
    for c0 in range(0, len(names), per):
        part = names[c0 : c0 + per]
        E = space.embed("text", [fill_template(t, n) for n in part for t in templates], cache=cache)
        E = E.reshape(len(part), T, -1).mean(1)
        out[c0 : c0 + len(part)] = E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-12)
    return out


@pytest.fixture(scope="module")
def probe():
    d = get_encoder(TEXT).dim
    ident = {"text": Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False))}
    return Space({"text": TEXT}, ident)


@pytest.mark.parametrize("batch_size", [4096, 1, len(FM_TEMPLATES) - 1, len(FM_TEMPLATES), len(FM_TEMPLATES) + 1,
                                        2 * len(FM_TEMPLATES), 2 * len(FM_TEMPLATES) + 1])
# 4096 first: every prompt encoded in one call; 2 x templates: two classes fill a block exactly
def test_templates_only_is_the_fixed_block_to_the_bit(probe, tmp_path_factory, monkeypatch, batch_size):
    cache = tmp_path_factory.getbasetemp() / "class-emb-cache"  # one cache: features computed once for every case
    calls = []
    embed = probe.embed

    def spied(modality, items, **kw):
        calls.append(list(items))
        return embed(modality, items, **kw)

    monkeypatch.setattr(probe, "embed", spied)
    want = _templates_only(probe, NAMES, FM_TEMPLATES, batch_size, cache)
    theirs, calls[:] = list(calls), []
    for descriptions in ({}, {n: [] for n in NAMES}):  # none given; every class given an empty list
        got = class_embeddings(probe, NAMES, FM_TEMPLATES, cache=cache, batch_size=batch_size,
                               descriptions=descriptions)
        assert calls == theirs  # the same blocks, in order
        np.testing.assert_array_equal(got, want)
        calls[:] = []

"""The public Space and its core (issue 15: no import circle).

The trainers sit below the public :class:`anybind.Space` and know only :class:`anybind.space_core.SpaceCore`;
every space a user gets from a public entry point must still be the public class, with ``fit``,
``add_modality``, ``replace_encoder`` and ``update`` on it.  Real (small) data: three noisy views of one latent
(see test_progressive.three_views).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_progressive import BIND_FAST, FAST, three_views
from typer.testing import CliRunner

import anybind
from anybind import Index, Space, load_manifest
from anybind.cli import app
from anybind.fitting import fit_space
from anybind.memo import MemoSpace
from anybind.merge import merge_spaces
from anybind.progressive import add_modality
from anybind.robust import centred
from anybind.space_core import SpaceCore

IDS = [f"r{i}" for i in range(300)]


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("public")
    mans, specs = three_views(tmp)
    space = Space.fit(mans["ab"], encoders={"sa": specs["sa"], "sb": specs["sb"]}, cache=tmp / "c", seed=0, **FAST)
    return tmp, mans, specs, space


def _public(x) -> None:
    assert type(x) is anybind.Space, f"{type(x).__module__}.{type(x).__name__} handed out, not anybind.Space"


def test_public_space_is_the_core_plus_the_trainers():
    assert anybind.Space is anybind.space.Space and issubclass(Space, SpaceCore) and Space is not SpaceCore
    for name in ("fit", "add_modality", "replace_encoder", "update"):
        assert hasattr(Space, name) and not hasattr(SpaceCore, name), name
    assert anybind.from_pretrained_pair is anybind.pairs.from_pretrained_pair  # builds a Space (tested in test_pairs)


def test_every_entry_point_hands_out_the_public_space(views, tmp_path):
    tmp, mans, specs, space = views
    cache = tmp / "c"
    _public(space)  # Space.fit, contrastive
    abc = {m: specs[m] for m in ("sa", "sb", "sc")}
    _public(Space.fit(mans["abc"], encoders=abc, cache=cache, method="procrustes", dims=(4, 8), progress=False))
    space.save(tmp_path / "sp")
    loaded = Space.load(tmp_path / "sp")
    _public(loaded)
    added = loaded.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=cache, **BIND_FAST)
    _public(added)
    _public(added.replace_encoder("sb", specs["sb2"], mans["b"], cache=cache, **BIND_FAST))
    _public(space.update(mans["ab"], cache=cache, epochs=2, distill=0.5, seed=0))
    other = Space.fit(mans["cb"], encoders={"sc": specs["sc"], "sb": specs["sb"]}, cache=cache, seed=0, **FAST)
    merged = merge_spaces(space, other, anchor="sb", anchor_data=mans["ab"], cache=cache)
    _public(merged)
    assert sorted(merged.modalities) == ["sa", "sb", "sc"]
    kinds = {k: "key" for k in specs}
    _public(centred(space, load_manifest(mans["ab"], kinds=kinds), cache=cache))
    # a wrapper forwards derived() to the space it wraps
    _public(centred(MemoSpace(space), load_manifest(mans["ab"], kinds=kinds), cache=cache))
    idx = Index.build(space, load_manifest(mans["abc"], kinds=kinds), tmp_path / "idx", modalities=["sa"],
                      cache=cache)
    assert idx.space is space
    _public(Index.open(tmp_path / "idx").space)  # the copy saved inside the index
    # the CLI: `anybind merge` saves what merge_spaces gave; loaded back, it is the public class
    other.save(tmp_path / "other")
    r = CliRunner().invoke(app, ["merge", str(tmp_path / "sp"), str(tmp_path / "other"), "--anchor", "sb",
                                 "--anchor-data", str(mans["ab"]), "--out", str(tmp_path / "m"),
                                 "--cache", str(cache)])
    assert r.exit_code == 0, r.output
    _public(Space.load(tmp_path / "m"))


def test_a_trainer_below_the_public_class_gives_the_core_and_from_core_adopts_it(views):
    tmp, mans, specs, space = views
    cache = tmp / "c"
    enc = {"sa": specs["sa"], "sb": specs["sb"]}
    core = fit_space(mans["ab"], encoders=enc, cache=cache, seed=0, **FAST)
    assert type(core) is SpaceCore and not hasattr(core, "add_modality")
    assert core.identity() == space.identity()  # Space.fit is fit_space, adopted: same seed, same space
    grown = add_modality(core, "sc", specs["sc"], mans["cb"], ["sb"], cache=cache, **BIND_FAST)
    assert type(grown) is SpaceCore  # a derived space keeps the class it was given
    before = core.embed("sa", IDS, cache=cache)
    adopted = Space.from_core(core)
    _public(adopted)
    assert adopted.identity() == core.identity() and adopted.info is core.info  # taken over, not copied
    assert np.array_equal(adopted.embed("sa", IDS, cache=cache), before)
    assert Space.from_core(space) is space
    with pytest.raises(TypeError, match="expected a SpaceCore"):
        Space.from_core(object())
    assert repr(core).startswith("<SpaceCore dim=") and repr(adopted).startswith("<Space dim=")

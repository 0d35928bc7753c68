"""The public Space and its core (issue 15: no import circle).

The trainers sit below the public :class:`anybind.Space` and know only :class:`anybind.space_core.SpaceCore`;
every space a user gets from a public entry point must still be the public class, with ``fit``,
``add_modality``, ``replace_encoder`` and ``update`` on it.  Real (small) data: three noisy views of one latent
(see test_progressive.three_views).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
from test_progressive import BIND_FAST, FAST, three_views
from typer.testing import CliRunner

import anybind
from anybind import FeatureCache, Index, Space, load_manifest
from anybind.align import bridge_space, fit_training_free
from anybind.cli import app
from anybind.featureset import FeatureSet
from anybind.fitting import fit_space
from anybind.memo import MemoSpace
from anybind.merge import merge_spaces
from anybind.progressive import add_modality
from anybind.robust import centred
from anybind.space_core import SpaceCore
from anybind.train import TrainConfig, train_space

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
    for name in ("fit", "from_features", "federate", "label_bridge", "add_modality", "replace_encoder", "update"):
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


def test_features_already_encoded_give_the_public_space(views):
    """``Space.from_features`` is ``train_space`` / ``fit_training_free`` (the building blocks, which return the
    core) adopted: the same space for the same seed, with every public method on it."""
    tmp, mans, specs, space = views
    cache = FeatureCache(tmp / "c")
    enc = {"sa": specs["sa"], "sb": specs["sb"]}
    fs = FeatureSet.from_manifests([load_manifest(mans["ab"], kinds={m: "key" for m in enc})], enc, cache,
                                   progress=False)
    opts = {k: v for k, v in FAST.items() if k != "progress"}
    cfg = TrainConfig(seed=3, **opts)
    core = train_space(fs, cfg, progress=False)
    assert type(core) is SpaceCore
    trained = Space.from_features(fs, cfg, progress=False)
    _public(trained)
    assert trained.identity() == core.identity()
    # the config's fields as keywords (or a dict) give the same space; keywords override the config
    assert Space.from_features(fs, seed=3, progress=False, **opts).identity() == core.identity()
    assert Space.from_features(fs, {"seed": 3, **opts}, progress=False).identity() == core.identity()
    assert Space.from_features(fs, cfg, seed=4, progress=False).identity() != core.identity()
    proc = Space.from_features(fs, method="procrustes", dims=(4, 8))
    _public(proc)
    assert proc.identity() == fit_training_free(fs, method="procrustes", dims=(4, 8)).identity()
    with pytest.raises(ValueError, match="configures trained projectors"):
        Space.from_features(fs, cfg, method="procrustes")
    with pytest.raises(ValueError, match="unknown method"):
        Space.from_features(fs, method="umap")
    # what only the public class has works on it
    _public(trained.add_modality("sc", specs["sc"], mans["cb"], anchors=["sb"], cache=cache, **BIND_FAST))


def test_the_label_bridge_is_the_public_space():
    bridge = Space.label_bridge()
    _public(bridge)
    core = bridge_space()
    assert type(core) is SpaceCore and bridge.identity() == core.identity()
    assert np.array_equal(bridge.embed("text", ["a frog"]), core.embed("text", ["a frog"]))
    with pytest.raises(anybind.EncoderError, match="needs a '\\+bridge' image encoder"):
        Space.label_bridge("image:efficientnet-lite0")


def test_a_label_bridge_space_saves_and_loads(tmp_path):
    # its projectors' dropout was given as the int 0: saved as 0 and hashed so, read back as 0.0 and hashed so,
    # every load refused the space as damaged
    bridge = Space.label_bridge()
    bridge.save(tmp_path / "bridge")
    back = Space.load(tmp_path / "bridge")
    assert back.identity() == bridge.identity()
    assert np.array_equal(back.embed("text", ["a frog"]), bridge.embed("text", ["a frog"]))


LAYER_8 = next(line for line in (Path(__file__).parents[1] / ".importlinter").read_text().splitlines()
               if "anybind.fitting" in line and "anybind.train" in line)


def _fresh_space_builders() -> dict[str, ast.FunctionDef]:
    """Every public top-level function of a layer-8 module that builds a fresh SpaceCore: it calls ``SpaceCore(...)``
    itself or through a function of its own module (a trainer that derives a space keeps the class it is given and
    is not one)."""
    out = {}
    for name in (n.strip() for n in LAYER_8.split(":")):
        mod = importlib.import_module(name)
        tree = ast.parse(Path(mod.__file__).read_text())
        funcs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        calls = {n: {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                 for n, f in funcs.items()}
        builds = {n for n, c in calls.items() if "SpaceCore" in c}
        while True:  # through the module's own helpers (federate -> _space)
            more = {n for n, c in calls.items() if c & builds} - builds
            if not more:
                break
            builds |= more
        out.update({f"{name}.{n}": funcs[n] for n in builds if not n.startswith("_")})
    return out


def test_every_builder_of_a_fresh_core_names_its_public_form():
    """A function below the public class that builds a fresh space hands out a SpaceCore (no upward import); its
    docstring must name the ``Space`` method a user calls instead, which exists only on the public class.  A new
    builder without one fails here."""
    builders = _fresh_space_builders()
    assert {"anybind.federated.federate", "anybind.align.bridge_space", "anybind.train.train_space",
            "anybind.align.fit_training_free"} <= set(builders)
    for qual, fn in builders.items():
        named = set(re.findall(r"Space\.(\w+)", ast.get_docstring(fn) or ""))
        public = {n for n in named if hasattr(Space, n) and not hasattr(SpaceCore, n)}
        assert public, f"{qual} builds a SpaceCore but its docstring names no public Space method to call instead"


def test_a_federation_is_the_public_space(tmp_path):
    """``Space.federate`` is :func:`anybind.federated.federate` adopted (same seed, same space); the CLI and
    ``federate_on_ray`` go through it."""
    from federated_helpers import CFG, KINDS, categories, write

    from anybind.federated import federate
    from anybind.federated_study import split_clients

    path, specs, *_ = categories(tmp_path, n_cat=3, per=60)
    clients, public = split_clients(load_manifest(path, kinds=KINDS), 2, by="top", public_fraction=0.1, seed=0)
    cpaths = [write(c, tmp_path / f"client{i}.jsonl") for i, c in enumerate(clients)]
    ppath = write(public, tmp_path / "public.jsonl")
    kw = dict(encoders=specs, cache=tmp_path / "c", method="fedavg", **{**CFG, "rounds": 2})
    core = federate(cpaths, ppath, **kw)
    assert type(core) is SpaceCore
    fed = Space.federate(cpaths, ppath, **kw)
    _public(fed)
    assert fed.identity() == core.identity() and fed.info["lineage"][-1]["event"] == "federate"
    r = CliRunner().invoke(app, ["federate", *[x for p in cpaths for x in ("--client", str(p))], "--public",
                                 str(ppath), *[x for m, s in specs.items() for x in ("-e", f"{m}={s}")],
                                 "--cache", str(tmp_path / "c"), "--rounds", "2", "--dim", "16", "--hidden", "32",
                                 "--method", "fedavg", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "saved <Space dim=16" in " ".join(r.output.split())

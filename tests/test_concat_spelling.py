"""A bare modality part of an ensemble (``text:concat(text,text:e5-small)``) is the default encoder's spelling
(``text:concat(text:minilm,text:e5-small)``): one ensemble, one identity, one saved spec and space identity, shared
cached features; a space saved with the bare spelling before still loads and matches its encoder."""

from __future__ import annotations

import numpy as np
import pytest

from anybind import Space
from anybind.encoders import registry
from anybind.encoders.concat import canonical_spec
from anybind.encoders.registry import absolute_spec, get_encoder, register_encoder
from anybind.errors import EncoderError, SpaceError
from anybind.projectors import Projector, ProjectorConfig
from encoder_samples import TinyText

PAIR = "text:concat(text:minilm,text:e5-small)"
BARE = "text:concat(text,text:e5-small)"
TEXTS = ["a green frog on a leaf", "two silver coins", "a red bird"]

register_encoder("tinytext")(TinyText)


@pytest.mark.parametrize("given, canonical", [
    (BARE, PAIR),
    ("text:concat(text:e5-small,text)", "text:concat(text:e5-small,text:minilm)"),  # the order is kept
    ("image:concat(image,image:efficientnet-lite2)+bridge",
     "image:concat(image:efficientnet-lite0,image:efficientnet-lite2)+bridge"),
    ("image:concat(image+bridge,image:efficientnet-lite2+bridge)",
     "image:concat(image:efficientnet-lite0+bridge,image:efficientnet-lite2+bridge)"),
    (f"image:efficientnet-lite0+bridge({BARE})", f"image:efficientnet-lite0+bridge({PAIR})"),
    ("image:concat(image:efficientnet-lite0@tta=flip,size=288,image)",
     "image:concat(image:efficientnet-lite0@tta=flip,size=288,image:efficientnet-lite0)"),
    ("text:concat(text:concat(text,tinytext:b),tinytext:c)",
     "text:concat(text:concat(text:minilm,tinytext:b),tinytext:c)"),
    # left as given: nothing bare, or a spelling the encoder refuses with its own line
    (PAIR, PAIR), ("text:minilm", "text:minilm"), ("text:concat(text, text:e5-small)", None),
    ("text:concat(text,text:e5-small", None), ("image:efficientnet-lite0+bridge(text)", None),
])
def test_a_bare_part_is_spelt_as_the_default_spec(given, canonical):
    assert canonical_spec(given) == (canonical or given)
    assert absolute_spec(given) == (canonical or given)  # what the CLI's -e and Space.fit store
    assert canonical_spec(canonical_spec(given)) == canonical_spec(given)


def test_both_spellings_are_one_encoder_identity():
    bare, pair = get_encoder(BARE), get_encoder(PAIR)
    assert bare.identity == pair.identity and bare.identity.startswith(PAIR + "|parts=")
    assert bare.dim == pair.dim == 768 and bare.canonical_spec == PAIR
    np.testing.assert_array_equal(bare.encode(TEXTS), pair.encode(TEXTS))
    with pytest.raises(EncoderError, match=r"a part is given twice \(text:minilm, text:minilm\)") as e:
        get_encoder("text:concat(text,text:minilm)", cached=False)
    assert "\n" not in str(e.value)


def _manifest(tmp_path):
    from encoder_samples import pngs, text_image_manifest

    return text_image_manifest(tmp_path / "m.jsonl", pngs(tmp_path, 12))


def test_a_fit_with_either_spelling_is_one_space(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.DEFAULTS, "text", "tinytext:a")  # a cheap default text encoder
    man, spaces = _manifest(tmp_path), []
    for text in ("text:concat(text,tinytext:b)", "text:concat(tinytext:a,tinytext:b)"):
        spaces.append(Space.fit(man, encoders={"text": text, "image": "callable:helper_encoders:image_stats"},
                                cache=tmp_path / "c", epochs=2, progress=False, recipe="plain", seed=0))
    bare, spelt = spaces
    assert bare.encoders["text"] == spelt.encoders["text"] == "text:concat(tinytext:a,tinytext:b)"
    assert bare.identities == spelt.identities and bare.identity() == spelt.identity()


def test_a_space_saved_with_the_bare_spelling_still_loads_and_matches(tmp_path, monkeypatch):
    """What an earlier anybind saved for ``text:concat(text,...)``: the spec as typed, heading the identity."""
    monkeypatch.setitem(registry.DEFAULTS, "text", "tinytext:a")
    old_spec = "text:concat(text,tinytext:b)"
    old_identity = f"{old_spec}|parts=[tinytext:a|v1]+[tinytext:b|v1]|concat-v1"
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    proj = {"text": Projector(ProjectorConfig(in_dim=16, out_dim=8, kind="linear", standardize=False))}
    old = Space({"text": old_spec}, proj, identities={"text": old_identity})
    old.save(tmp_path / "old")
    monkeypatch.setattr(registry, "_INSTANCES", {})  # as in a fresh process: the encoder is built anew
    back = Space.load(tmp_path / "old")
    assert back.encoders == {"text": old_spec} and back.identity() == old.identity()  # its indexes stay valid
    got = back.embed("text", TEXTS)
    want = get_encoder("text:concat(tinytext:a,tinytext:b)").encode(TEXTS)
    np.testing.assert_allclose(got, old.project("text", want), atol=1e-6)
    # another part under the old spelling is still another ensemble
    changed = Space({"text": old_spec}, proj, identities={"text": old_identity.replace("[tinytext:b|v1]", "[x]")})
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        changed.embed("text", TEXTS)


def test_a_bridge_into_a_bare_spelt_ensemble_still_matches_what_it_recorded(monkeypatch):
    """The ensemble's identity sits inside the bridge's: a space saved with this bridge spec recorded it as typed."""
    monkeypatch.setitem(registry.DEFAULTS, "text", "tinytext:a")
    monkeypatch.setattr(registry, "_INSTANCES", {})
    enc = get_encoder("image:efficientnet-lite0+bridge(text:concat(text,tinytext:b))")
    now = get_encoder("text:concat(tinytext:a,tinytext:b)").identity
    then = "text:concat(text,tinytext:b)|parts=[tinytext:a|v1]+[tinytext:b|v1]|concat-v1"
    assert f"|text=[{now}]|" in enc.identity and now != then
    assert enc.matches_identity(enc.identity.replace(now, then))
    assert not enc.matches_identity(enc.identity.replace(now, then.replace("[tinytext:b|v1]", "[x]")))


def test_a_bare_bridged_part_builds_as_its_canonical_spelling():
    """``image+bridge`` inside an ensemble is what the CLI and ``Space.fit`` save it as
    (``image:efficientnet-lite0+bridge``): the encoder built from the spec as typed (``Space({...})``,
    ``get_encoder``) takes it too, one encoder with one identity, not a refusal of the spelling the fit accepted."""
    typed = "image:concat(image+bridge,image:efficientnet-lite2+bridge)"
    spelt = absolute_spec(typed)
    assert spelt == "image:concat(image:efficientnet-lite0+bridge,image:efficientnet-lite2+bridge)"
    enc, want = get_encoder(typed, cached=False), get_encoder(spelt, cached=False)
    assert enc.identity == want.identity and enc.dim == want.dim
    with pytest.raises(EncoderError, match=r"part 'image\+bridge\(text:nope\)'") as e:  # a part named as typed
        get_encoder("image:concat(image+bridge(text:nope),image:efficientnet-lite2)", cached=False)
    assert "\n" not in str(e.value)

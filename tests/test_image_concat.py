"""A feature ensemble of frozen image encoders (``image:concat(<spec>,<spec>)``, issue 16): the features are the
parts' features side by side; the identity holds every part's; the feature cache keeps each part under its own
identity; with every part an ImageNet classifier, ``...+bridge`` bridges the mean of the parts' logits; bad
parts are refused in one line naming the spec."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.encoders.concat import split_specs
from anybind.encoders.registry import get_encoder
from anybind.errors import AnybindError, EncoderError

L0, L2 = "image:efficientnet-lite0", "image:efficientnet-lite2"
ENS = f"image:concat({L0},{L2})"
STAMPS = Path("/usr/share/tuxpaint/stamps")
NAMES = ("animals/amphibians/frog.png", "symbols/money/us/coins/005nickel.png", "animals/birds/adelaide-rosella.png")


@pytest.fixture(scope="module")
def paths():
    found = [STAMPS / n for n in NAMES if (STAMPS / n).is_file()]
    if len(found) < 2:
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    return [str(p) for p in found]


def test_the_features_are_the_parts_features_side_by_side(paths):
    ens, a, b = get_encoder(ENS), get_encoder(L0), get_encoder(L2)
    assert ens.dim == a.dim + b.dim == 2560 and ens.modality == "image"
    got = ens.encode(paths)  # each file decoded once, both forwards per batch
    want = np.hstack([a.encode(paths), b.encode(paths)])
    assert got.shape == (len(paths), 2560) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert np.abs(got[:, :1280] - got[:, 1280:]).max() > 1e-2  # two different models: the blocks differ
    np.testing.assert_allclose(ens.encode(paths[:1]), got[:1], rtol=0, atol=1e-6)  # nothing depends on the batch


def test_parts_keep_their_own_options_and_suffix(paths):
    spec = f"image:concat({L0}+bridge,{L0}@tta=flip,size=288)"
    ens = get_encoder(spec)
    assert [p.spec for p in ens.base_encoders] == [f"{L0}+bridge", f"{L0}@tta=flip,size=288"]
    want = np.hstack([p.encode(paths[:2]) for p in ens.base_encoders])
    np.testing.assert_allclose(ens.encode(paths[:2]), want, rtol=0, atol=1e-6)


def test_the_identity_holds_both_parts_and_their_order():
    ens, rev = get_encoder(ENS), get_encoder(f"image:concat({L2},{L0})")
    a, b = get_encoder(L0), get_encoder(L2)
    assert f"[{a.identity}]" in ens.identity and f"[{b.identity}]" in ens.identity
    assert ens.identity.index(a.identity) < ens.identity.index(b.identity)
    assert len({ens.identity, rev.identity, a.identity, b.identity}) == 4
    bridged = get_encoder(ENS + "+bridge")
    assert bridged.base_encoder is ens and f"base=[{ens.identity}]" in bridged.identity
    assert bridged.dim == 2560 + 384


def test_the_feature_cache_stores_each_part_under_its_own_identity(paths, tmp_path):
    from anybind.cache import FeatureCache

    fc = FeatureCache(tmp_path / "fc")
    ens, a, b = get_encoder(ENS), get_encoder(L0), get_encoder(L2)
    fc.encode(a, paths[:1], progress=False)  # one part already cached: only what is missing is encoded
    got = fc.encode(ens, paths, progress=False)
    np.testing.assert_allclose(got, ens.encode(paths), rtol=0, atol=1e-6)
    assert fc.count(a.identity) == fc.count(b.identity) == len(paths) and fc.count(ens.identity) == 0
    X, missing = fc.cached(ens, [ens.content_key(p) for p in paths])
    assert missing == [] and np.allclose(X, got, atol=1e-6)
    fc2 = FeatureCache(tmp_path / "fc2")
    fc2.encode(b, paths[:2], progress=False)
    X, missing = fc2.cached(ens, [ens.content_key(p) for p in paths])
    assert missing == list(range(len(paths)))  # lite0 is missing for all: no row is served half-made
    assert np.isnan(X).all()


def test_the_bridge_of_an_ensemble_reads_the_mean_of_the_parts_logits(paths):
    from anybind.encoders.bridge import classifier_head

    ens, a, b = get_encoder(ENS), get_encoder(L0), get_encoder(L2)
    W, bias = classifier_head(ens)
    assert W.shape == (1000, 2560)
    fa, fb = a.encode(paths), b.encode(paths)
    (Wa, ba), (Wb, bb) = classifier_head(a), classifier_head(b)
    mean_logits = ((fa @ Wa.T + ba) + (fb @ Wb.T + bb)) / 2
    np.testing.assert_allclose(np.hstack([fa, fb]) @ W.T + bias, mean_logits, rtol=1e-4, atol=1e-4)


def test_an_ensemble_of_bridged_parts_has_no_classifier_to_bridge():
    with pytest.raises(EncoderError) as e:
        get_encoder(f"image:concat({L0}+bridge,{L2})+bridge").bridge(np.zeros((1, 1280 + 384 + 1280), np.float32))
    msg = str(e.value)
    assert "\n" not in msg and f"concat({L0}+bridge,{L2})" in msg and f"part '{L0}+bridge'" in msg


@pytest.mark.parametrize("spec, problem", [
    (f"image:concat({L0})", "at least two parts, got 1"),
    (f"image:concat({L0},{L0})", "a part is given twice"),
    (f"image:concat({L0},image:efficientnet-lite9)", "part 'image:efficientnet-lite9': unknown image encoder 'efficientnet-lite9'"),
    (f"image:concat({L0},bogus:thing)", "part 'bogus:thing'"),
    (f"image:concat({L0},text:minilm)", "part 'text:minilm' is a text encoder, not image"),
    (f"image:concat({L0}, {L2})", f"write it without spaces, image:concat({L0},{L2})"),
    (f"image:concat({L0},{L2}", "image encoder"),
    (f"image:concat(({L0},{L2})", "unbalanced parentheses"),
    (f"image:concat({L0},{L2})x", "an ensemble spec is image:concat("),
])
def test_a_bad_ensemble_is_refused_in_one_line_naming_the_spec(spec, problem):
    with pytest.raises(EncoderError) as e:
        get_encoder(spec, cached=False)
    msg = str(e.value)
    assert problem in msg and "\n" not in msg
    assert spec.split(":", 1)[1].split(")")[0][:20] in msg


_SPECS = st.sampled_from([
    "image", L0, L2, f"{L0}+bridge", f"{L0}@tta=flip", f"{L0}@tta=flip,size=288", f"{L0}@tta=flip,size=288+bridge",
    ENS, ENS + "+bridge", f"image:concat({L0}@tta=flip,size=288,{L2}+bridge)+bridge",
    "video:frames(image:efficientnet-lite0)@fps=1,max=32", "callable:mypkg.mod:encode",
])


@settings(max_examples=60, deadline=None)
@given(st.lists(_SPECS, min_size=1, max_size=5))
def test_a_list_of_specs_splits_where_each_spec_starts(specs):
    assert split_specs(",".join(specs)) == specs
    assert split_specs(" , ".join(specs) + ",") == specs


def test_the_bench_takes_an_ensemble_among_its_image_encoders():
    from anybind.bench.tuxpaint import image_encoders

    opt = f"{L0}+bridge,{ENS}+bridge,{L0}@tta=flip,size=288+bridge"
    assert image_encoders("defaults", opt) == [f"{L0}+bridge", f"{ENS}+bridge", f"{L0}@tta=flip,size=288+bridge"]
    with pytest.raises(AnybindError, match=r"defaults: image='image:concat\(image:efficientnet-lite0\)'"):
        image_encoders("defaults", f"{L0},image:concat({L0})")


def test_distributed_encoding_refuses_an_ensemble_naming_its_parts():
    from anybind.scale.encode_report import cached_encoder

    assert cached_encoder(f"{L0}+bridge").spec == L0
    with pytest.raises(EncoderError, match=rf"encode each on its own \({L0}, {L2}\)"):
        cached_encoder(ENS + "+bridge")

"""Captioning from the space (anybind.caption): text-only training with noise, decoding, the memory
projection, artefacts.  The corpus, tiny LM and captioner: tests/caption_fixtures.py."""

import json

import numpy as np
import pytest

from anybind import Space
from anybind.caption import Captioner, cider_d, fit_captioner, load_lm, tokenize
from anybind.errors import AnybindError, CaptionError, SpaceError

from caption_fixtures import FIT, FIT_TEMPS
from caption_lm import build_tiny_lm


def test_text_only_captioner_decodes_its_captions_and_the_other_modality(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    train = [r for r in recs if r["split"] == "train"]
    caps = captioner.caption("text", [r["text"] for r in train], cache=tmp / "c")
    exact = np.mean([tokenize(c) == tokenize(r["text"]) for c, r in zip(caps, train)])
    assert exact > 0.5, (exact, caps[:5])
    # the sketch modality was never seen in training: its test captions beat the same captions shuffled
    test = [r for r in recs if r["split"] == "test"]
    got = captioner.caption("sketch", [r["id"] for r in test], cache=tmp / "c")
    refs = [[r["text"]] for r in test]
    rolled = got[1:] + got[:1]
    assert cider_d(got, refs) > cider_d(rolled, refs) + 1.0, (got[:5], cider_d(got, refs))
    # what was chosen on val is recorded
    info = captioner.info
    assert captioner.noise_std in FIT["noise_grid"] and set(info["noise_val_nll"]) == {"0.0", "0.1"}
    assert info["trained_on"] == "text" and info["selected_on"].startswith("val sketch")
    assert any(h["best"] for h in info["history"])


def test_memory_projection_closes_the_modality_gap(corpus, captioner):
    """DeCap: sketch embeddings sit away from the text ones; projected onto the memory of training caption
    embeddings they decode better than as they are, and more so as the gap widens."""
    tmp, man, space, lm, recs = corpus
    test = [r for r in recs if r["split"] == "test"]
    refs = [[r["text"]] for r in test]
    Xs = space.embed("sketch", [r["id"] for r in test], cache=tmp / "c")
    Xt = space.embed("text", [r["text"] for r in test], cache=tmp / "c")
    gap = Xs.mean(0) - Xt.mean(0)
    assert np.linalg.norm(gap) > 0.1 and np.mean(np.sum(Xs * Xt, axis=1)) < 0.9  # a modality gap is present
    # chosen on val: the projection and a temperature of the grid, each scored
    assert captioner.projection == "memory" and captioner.memory_temperature in FIT_TEMPS
    scores = captioner.info["projection_val_nll"]
    assert set(scores) == {"none", *(f"memory@{t:g}" for t in FIT_TEMPS)} and min(scores.values()) < scores["none"]
    # the memory: one unit row per distinct training caption
    n_train = len({r["text"] for r in recs if r["split"] == "train"})
    assert captioner.memory.shape == (n_train, space.dim)
    np.testing.assert_allclose(np.linalg.norm(captioner.memory, axis=1), 1.0, rtol=1e-5)
    for widen in (0.0, 2.0):
        X = Xs + widen * gap
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        plain = cider_d(captioner.decode(X, projection="none"), refs)
        proj = cider_d(captioner.decode(X, projection="memory"), refs)
        assert proj > plain + 1.0, (widen, plain, proj)
    with pytest.raises(CaptionError, match="unknown projection 'nearest'"):
        captioner.decode(Xs, projection="nearest")
    bare = Captioner(space, lm, captioner.mapper)  # no memory
    with pytest.raises(CaptionError, match="projection 'memory' needs a memory"):
        bare.decode(Xs, projection="memory")


def test_decoding_methods_and_guardrails(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    X = space.embed("text", [r["text"] for r in recs[:6]], cache=tmp / "c")
    beam = captioner.decode(X, method="beam", beams=3)
    assert len(beam) == 6 and all(isinstance(c, str) for c in beam)
    s1 = captioner.decode(X, method="sample", temperature=1.5, seed=3)
    assert s1 == captioner.decode(X, method="sample", temperature=1.5, seed=3)
    short = captioner.decode(X, max_tokens=1)
    assert all(len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) <= 1 for c in short)
    assert all("\n" not in c for c in beam + s1)
    assert lm.tokenizer.convert_tokens_to_ids("\n") in lm.stop_ids() and lm.eos_id in lm.stop_ids()
    with pytest.raises(CaptionError, match="unknown decoding method 'nucleus'"):
        captioner.decode(X, method="nucleus")
    with pytest.raises(CaptionError, match="max_tokens is 0"):
        captioner.decode(X, max_tokens=0)
    with pytest.raises(CaptionError, match=r"expected \(n, 16\)"):
        captioner.decode(np.zeros((2, 5), np.float32))


def test_save_load_same_captions_and_refusals(corpus, captioner, tmp_path):
    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    assert sorted(p.name for p in out.iterdir()) == ["captioner.json", "mapper.safetensors", "memory.json",
                                                     "memory.safetensors", "space"]
    back = Captioner.load(out)  # its own copy of the space, the LM from the saved spec
    items = [r["id"] for r in recs[:8]]
    for proj in ("none", "memory"):
        assert back.caption("sketch", items, cache=tmp / "c", projection=proj) == \
            captioner.caption("sketch", items, cache=tmp / "c", projection=proj)
    assert back.noise_std == captioner.noise_std and back.projection == captioner.projection
    assert back.memory_temperature == captioner.memory_temperature
    np.testing.assert_array_equal(back.memory, captioner.memory)
    # another space
    other = Space.fit(man, encoders=space.encoders, cache=tmp / "c", epochs=3, dim=16, hidden=64, progress=False, seed=1)
    with pytest.raises(SpaceError, match="trained on space .* but the given space is") as e:
        Captioner.load(out, other)
    assert "\n" not in str(e.value)
    # another language model (same shapes, other weights)
    lm2_dir = build_tiny_lm(sorted({r["text"] for r in recs}), tmp_path / "lm2", steps=2, seed=1)
    with pytest.raises(CaptionError, match="trained with language model .* use the model it was trained with"):
        Captioner.load(out, lm=load_lm(str(lm2_dir)))
    # a damaged file
    meta = json.loads((out / "captioner.json").read_text())
    (out / "memory.safetensors").rename(out / "memory.bak")
    with pytest.raises(CaptionError, match=r"memory.safetensors is missing \(captioner.json records \d+ rows\)"):
        Captioner.load(out, lm=lm)
    (out / "memory.bak").rename(out / "memory.safetensors")
    meta["projection"]["memory_size"] += 1
    (out / "captioner.json").write_text(json.dumps(meta))
    with pytest.raises(AnybindError, match="tensor memory has shape"):
        Captioner.load(out, lm=lm)
    meta["projection"]["memory_size"] -= 1
    meta["mapper"]["prefix_len"] = 5
    (out / "captioner.json").write_text(json.dumps(meta))
    with pytest.raises(AnybindError, match="prefix_len|shape"):
        Captioner.load(out, lm=lm)


def test_space_without_text_is_one_clear_line(corpus, tmp_path):
    tmp, man, space, lm, recs = corpus
    sketch_only = Space({"sketch": space.encoders["sketch"]}, {"sketch": space.projectors["sketch"]},
                        identities={"sketch": space.identities["sketch"]})
    with pytest.raises(CaptionError, match=r"no 'text' modality \(bound: sketch\).*bind a text modality first") as e:
        fit_captioner(sketch_only, man, lm)
    assert "\n" not in str(e.value)
    with pytest.raises(CaptionError, match="not 'smollm2', a .gguf file, or a folder"):
        load_lm(str(tmp_path / "nowhere"))


def test_paired_mapper_trains_on_the_other_modality(corpus):
    tmp, man, space, lm, recs = corpus
    cap = fit_captioner(space, man, lm, cache=tmp / "c", paired=True, **{**FIT, "epochs": 4})
    assert set(cap.info["noise_val_nll"]) == {"0.0"} and len(cap.info["history"]) <= 4
    assert cap.info["trained_on"] == "sketch" and cap.noise_std == 0.0
    assert len(cap.caption("sketch", [recs[0]["id"]], cache=tmp / "c")) == 1

"""Pre-aligned pairs as a starting space (issue 17): a CLIP pair imported by ``fit --from-pretrained``.

The pair is a tiny randomly initialised ``CLIPModel`` built from a ``CLIPConfig`` and saved locally (no
network), with a logit scale that is not the default: the imported space must give CLIP's own normalised
embeddings and scale, keep the pair's prompts for zero-shot, survive save/load, and take a new modality with
``bind --add`` like any space.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from anybind import Space  # noqa: E402
from anybind.errors import AnybindError, SpaceError  # noqa: E402
from anybind.pairs import CLIP_TEMPLATES, from_pretrained_pair, parse_pair  # noqa: E402
from encoder_samples import WORDS, pngs, wav  # noqa: E402

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "dog", "cat",
          *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
TEXTS = ["the dog", "a cat sat on the mat with the dog", "cat", "zebra quiz"]
SCALE = 3.25  # not CLIP's initial log(1/0.07)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    text_cfg = dict(vocab_size=len(TOKENS), max_position_embeddings=64, bos_token_id=2, eos_token_id=3,
                    pad_token_id=0, **small)
    vision_cfg = dict(image_size=32, patch_size=8, **small)
    cfg = transformers.CLIPConfig(text_config=text_cfg, vision_config=vision_cfg, projection_dim=16)
    clip = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(SCALE)
    clip.save_pretrained(root / "clip")
    transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(TOKENS)},
                                   model_max_length=64).save_pretrained(root / "clip")
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "clip")
    w2v = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer", **small))
    w2v.save_pretrained(root / "w2v")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(root / "w2v")
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=len(TOKENS), **small))
    bert.save_pretrained(root / "bert")
    transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(TOKENS)}).save_pretrained(root / "bert")
    return {"clip": root / "clip", "w2v": root / "w2v", "bert": root / "bert"}


def _unit(x) -> np.ndarray:
    x = (x if torch.is_tensor(x) else x.pooler_output).numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clip_features(folder: Path, texts, images):
    from anybind.data.media import load_image

    model = transformers.CLIPModel.from_pretrained(folder).eval()
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    proc = transformers.AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        ids = tok(list(texts), padding=True, return_tensors="pt")
        t = model.get_text_features(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"])
        pix = proc(images=[load_image(p) for p in images], return_tensors="pt")["pixel_values"]
        i = model.get_image_features(pixel_values=pix)
    return _unit(t), _unit(i), float(model.logit_scale.detach().exp())


def test_the_imported_space_is_clips_own_embeddings_scale_and_prompts(pair, tmp_path):
    images = [str(p) for p in pngs(tmp_path, 3)]
    sp = from_pretrained_pair("clip", str(pair["clip"]))
    assert type(sp) is Space  # the public class (add_modality etc.), not the trainers' SpaceCore
    want_t, want_i, want_scale = _clip_features(pair["clip"], TEXTS, images)
    assert sp.modalities == ["image", "text"] and sp.dim == 16
    assert {p.cfg.kind for p in sp.projectors.values()} == {"identity"}
    np.testing.assert_allclose(sp.embed("text", TEXTS), want_t, atol=1e-5)
    np.testing.assert_allclose(sp.embed("image", images), want_i, atol=1e-5)
    assert np.exp(sp.logit_scale) == pytest.approx(want_scale, rel=1e-6)
    assert want_scale == pytest.approx(np.exp(SCALE))
    assert sp.info["templates"] == list(CLIP_TEMPLATES)
    assert from_pretrained_pair("clip", str(pair["clip"])).identity() == sp.identity()  # deterministic
    sp.save(tmp_path / "sp")
    back = Space.load(tmp_path / "sp")
    assert back.identity() == sp.identity() and back.logit_scale == pytest.approx(sp.logit_scale)
    np.testing.assert_array_equal(back.embed("text", TEXTS), sp.embed("text", TEXTS))
    np.testing.assert_array_equal(back.embed("image", images), sp.embed("image", images))
    assert back.info["templates"] == list(CLIP_TEMPLATES)


def test_zero_shot_uses_the_pairs_own_prompts_unless_given_others(pair, tmp_path):
    from anybind.data.manifest import Record
    from anybind.evaluate import class_embeddings, zero_shot
    from anybind.index.classify import class_embeddings as index_class_embeddings

    sp = from_pretrained_pair("clip", str(pair["clip"]))
    names = ["dog", "cat", "zebra"]
    prompts = [t.replace("{}", n) for n in names for t in CLIP_TEMPLATES]
    E = sp.embed("text", prompts).reshape(3, 8, -1).mean(1)
    want = E / np.linalg.norm(E, axis=1, keepdims=True)
    np.testing.assert_allclose(class_embeddings(sp, names, None), want, atol=1e-6)
    np.testing.assert_allclose(index_class_embeddings(sp, names, cache=tmp_path / "c"), want, atol=1e-6)
    plain = class_embeddings(sp, names, ["a {}."])
    np.testing.assert_allclose(plain, sp.embed("text", ["a dog.", "a cat.", "a zebra."]), atol=1e-6)
    images = pngs(tmp_path, 3)
    recs = [Record(id=f"r{i}", values={"image": str(p)}, labels={"kind": n}, split="test")
            for i, (p, n) in enumerate(zip(images, names))]
    res = zero_shot(sp, recs, "image", "kind")
    X = sp.embed("image", [str(p) for p in images])
    assert res["accuracy"] == pytest.approx(float(((X @ want.T).argmax(1) == np.arange(3)).mean()))
    custom = from_pretrained_pair("clip", str(pair["clip"]), templates=["a {} photo."])
    assert custom.info["templates"] == ["a {} photo."]


def test_bind_add_audio_onto_the_imported_pair_end_to_end(pair, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    argv = ["fit", "--from-pretrained", f"clip={pair['clip']}", "--out", str(tmp_path / "sp")]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "8 prompt templates" in r.output
    base = Space.load(tmp_path / "sp")
    images = pngs(tmp_path, 12)
    rows = []
    for i, (w, p) in enumerate(zip(WORDS, images)):
        wav(tmp_path / f"s{i}.wav", 3200 + 160 * i, i)
        rows.append({"id": f"r{i}", "split": "val" if i < 3 else "train", "text": w, "image": p.name,
                     "audio": f"s{i}.wav"})
    man = tmp_path / "m.jsonl"
    man.write_text("".join(json.dumps(x) + "\n" for x in rows))
    argv = ["bind", str(tmp_path / "sp"), "--add", f"audio=audio:hf/{pair['w2v']}", "--data", str(man),
            "--anchors", "text", "--epochs", "2", "--out", str(tmp_path / "sp2"), "--cache",
            str(tmp_path / "c")]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    sp2 = Space.load(tmp_path / "sp2")
    assert sp2.modalities == ["audio", "image", "text"] and sp2.logit_scale == base.logit_scale
    np.testing.assert_array_equal(sp2.embed("text", TEXTS), base.embed("text", TEXTS))  # CLIP left untouched
    sims = sp2.similarity("audio", [str(tmp_path / "s0.wav")], "image", [str(p) for p in images[:3]])
    assert sims.shape == (1, 3) and np.isfinite(sims).all()
    assert sp2.info["templates"] == list(CLIP_TEMPLATES)
    assert [e["event"] for e in sp2.info["lineage"]] == ["from_pretrained", "add_modality"]


def test_what_is_not_a_pair_is_one_line(pair, tmp_path, monkeypatch):
    import sys

    from typer.testing import CliRunner

    from anybind.cli import app

    for value in ("clip", "siglip=x", "clip="):
        with pytest.raises(SpaceError, match="expected KIND=SOURCE"):
            parse_pair(value)
    with pytest.raises(SpaceError, match="no text projection head") as e:
        from_pretrained_pair("clip", str(pair["bert"]))
    assert str(pair["bert"]) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AnybindError, match="does not exist"):
        from_pretrained_pair("clip", str(tmp_path / "nothing"))
    monkeypatch.setitem(sys.modules, "open_clip", None)  # what a torchvision that does not match torch gives
    with pytest.raises(AnybindError, match=r"'open_clip', which cannot be imported .*pip install open_clip_torch") as e:
        from_pretrained_pair("clip", "open_clip:ViT-B-32@openai")
    assert "\n" not in str(e.value)
    argv = ["fit", str(tmp_path / "m.jsonl"), "--from-pretrained", f"clip={pair['clip']}", "--out",
            str(tmp_path / "x")]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert r.exit_code == 2 and "give no manifest" in r.output
    argv = ["fit", "--from-pretrained", f"clip={pair['bert']}", "--out", str(tmp_path / "y")]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert r.exit_code == 2 and "no text projection head" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "y" / "space.json").exists()

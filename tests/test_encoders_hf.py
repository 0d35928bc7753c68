"""``text:hf/...``, ``image:hf/...``, ``audio:hf/...`` (issue 17): transformers models by spec.

Every model is tiny, randomly initialised from a config and saved to a temporary folder (no network): the
features must equal the bare model's forward with the pooling done by hand, the identity must follow the
weights, and remote code must never run unless the spec allows it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from anybind.encoders.registry import get_encoder  # noqa: E402
from anybind.errors import DataError, EncoderError, SpaceError  # noqa: E402
from encoder_samples import cli_fit, pngs, text_image_manifest, wav  # noqa: E402

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "dog", "cat",
          *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
TEXTS = ["the dog", "a cat sat on the mat with the dog", "cat", "zebra quiz"]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _tokenizer():
    return transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(TOKENS)}, model_max_length=64)


def _save(model, folder: Path, *procs) -> Path:
    model.save_pretrained(folder)
    for p in procs:
        p.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    bert_cfg = transformers.BertConfig(vocab_size=len(TOKENS), max_position_embeddings=64, **small)
    bert = transformers.BertModel(bert_cfg)
    vit = transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, **small))
    vit_proc = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    w2v = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer", **small))
    fe = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True,
                                               return_attention_mask=True)
    text_cfg = dict(vocab_size=len(TOKENS), max_position_embeddings=64, bos_token_id=2, eos_token_id=3,
                    pad_token_id=0, **small)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        text_config=text_cfg, vision_config=dict(image_size=32, patch_size=8, **small), projection_dim=16))
    return {
        "bert": _save(bert, root / "bert", _tokenizer()),
        "vit": _save(vit, root / "vit", vit_proc),
        "w2v": _save(w2v, root / "w2v", fe),
        "clip": _save(clip, root / "clip", _tokenizer(), vit_proc),
    }


def _masked_mean(h, mask):
    m = mask.unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1)).numpy()


def test_text_features_equal_the_raw_forward_and_mean_ignores_padding(models):
    enc = get_encoder(f"text:hf/{models['bert']}", cached=False)
    assert enc.dim == 32 and enc.input_kind == "text"
    got = enc.encode(TEXTS)
    model = transformers.AutoModel.from_pretrained(models["bert"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(models["bert"])
    inputs = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    np.testing.assert_allclose(got, _masked_mean(out.last_hidden_state, inputs["attention_mask"]), atol=1e-5)
    alone = enc.encode(["the dog"])  # padded to the long text's length in the batch above
    np.testing.assert_allclose(alone[0], got[0], atol=1e-5)
    cls2 = get_encoder(f"text:hf/{models['bert']}@pool=cls,layer=-2", cached=False).encode(TEXTS)
    np.testing.assert_allclose(cls2, out.hidden_states[-2][:, 0].numpy(), atol=1e-5)
    pooler = get_encoder(f"text:hf/{models['bert']}@pool=pooler", cached=False).encode(TEXTS)
    np.testing.assert_allclose(pooler, out.pooler_output.numpy(), atol=1e-5)


def test_each_forward_gets_only_the_inputs_its_own_signature_takes():
    """hf_spec.accepted reads a signature once per function (not per batch): two forwards, asked in turn, each
    keep their own inputs; one taking ``**kwargs`` gets them all."""
    from anybind.encoders.hf_spec import accepted

    class Text:
        def forward(self, input_ids, attention_mask=None):
            return None

    class Bert:
        def forward(self, input_ids, token_type_ids=None, attention_mask=None):
            return None

    def anything(**kw):
        return None

    inputs = {"input_ids": 1, "attention_mask": 2, "token_type_ids": 3}
    for _ in range(2):
        assert sorted(accepted(Text().forward, inputs)) == ["attention_mask", "input_ids"]
        assert sorted(accepted(Bert().forward, inputs)) == sorted(inputs)
        assert accepted(anything, inputs) is inputs


def test_a_pickled_encoder_rebuilds_its_model_in_the_worker(models):
    import pickle

    enc = get_encoder(f"text:hf/{models['bert']}", cached=False)
    want = enc.encode(TEXTS)
    blob = pickle.dumps(enc)
    assert b"BertModel" not in blob and len(blob) < 20_000  # the model travels as its spec, not its weights
    again = pickle.loads(blob)
    assert again.identity == enc.identity
    np.testing.assert_allclose(again.encode(TEXTS), want, atol=1e-6)


def test_image_features_are_vit_cls_and_a_corrupt_image_names_its_file(models, tmp_path):
    paths = pngs(tmp_path)
    enc = get_encoder(f"image:hf/{models['vit']}", cached=False)
    got = enc.encode([str(p) for p in paths])
    model = transformers.AutoModel.from_pretrained(models["vit"]).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(models["vit"])
    from anybind.data.media import load_image

    pix = proc(images=[load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = model(pixel_values=pix).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert "pool=cls" in enc.identity
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="bad.png") as e:
        enc.encode([str(bad)])
    assert "\n" not in str(e.value)


def test_audio_features_are_the_mean_over_frames_item_by_item(models, tmp_path):
    wavs = [wav(tmp_path / f"s{i}.wav", n, i) for i, n in enumerate((4000, 6400, 4000))]
    enc = get_encoder(f"audio:hf/{models['w2v']}", cached=False)
    got = enc.encode([str(w) for w in wavs])  # two lengths: never padded together
    model = transformers.AutoModel.from_pretrained(models["w2v"]).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(models["w2v"])
    from anybind.data.media import load_audio

    for i, w in enumerate(wavs):
        x = fe(load_audio(w, 16000)[0], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            want = model(input_values=x["input_values"]).last_hidden_state.mean(1)[0].numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="bad.wav"):
        enc.encode([str(bad)])


def test_clip_auto_pool_uses_the_projection_heads(models, tmp_path):
    paths = pngs(tmp_path, 2)
    model = transformers.AutoModel.from_pretrained(models["clip"]).eval()
    tok = transformers.AutoTokenizer.from_pretrained(models["clip"])
    proc = transformers.AutoImageProcessor.from_pretrained(models["clip"])
    from anybind.data.media import load_image

    def feats(out):
        return (out if torch.is_tensor(out) else out.pooler_output).numpy()

    with torch.no_grad():
        ids = tok(TEXTS, padding=True, return_tensors="pt")
        ids = {k: ids[k] for k in ("input_ids", "attention_mask")}
        want_t = feats(model.get_text_features(**ids))
        pix = proc(images=[load_image(p) for p in paths], return_tensors="pt")["pixel_values"]
        want_i = feats(model.get_image_features(pixel_values=pix))
        tower = model.text_model(**ids)
    text = get_encoder(f"text:hf/{models['clip']}", cached=False)
    image = get_encoder(f"image:hf/{models['clip']}", cached=False)
    assert (text.dim, image.dim) == (16, 16)
    np.testing.assert_allclose(text.encode(TEXTS), want_t, atol=1e-5)
    np.testing.assert_allclose(image.encode([str(p) for p in paths]), want_i, atol=1e-5)
    assert "pool=head:get_text_features" in text.identity
    mean = get_encoder(f"text:hf/{models['clip']}@pool=mean", cached=False)
    want_mean = _masked_mean(tower.last_hidden_state, ids["attention_mask"])
    np.testing.assert_allclose(mean.encode(TEXTS), want_mean, atol=1e-5)


def test_identity_follows_weights_pooling_and_not_device_or_readme(models, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "bert"
    shutil.copytree(models["bert"], folder)
    spec = f"text:hf/{folder}"
    before = get_encoder(spec, cached=False)
    ident, vec = before.identity, before.encode(TEXTS)
    used = get_encoder(spec, cached=False)
    used.encode(TEXTS)  # a tokenizer call sets its padding / truncation state: not part of the identity
    assert used.identity == ident
    (folder / "README.md").write_text("notes")
    assert get_encoder(spec, cached=False).identity == ident
    assert get_encoder(spec + "@device=cpu", cached=False).identity == ident
    assert get_encoder(spec + "@pool=cls", cached=False).identity != ident
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("layer.0.attention.self.query.weight"))
    weights[name] = weights[name] + 0.1 * torch.randn_like(weights[name])  # a shift would be normed away
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    after = get_encoder(spec, cached=False)
    assert after.identity != ident
    assert not np.allclose(after.encode(TEXTS), vec)


def test_identity_holds_the_hub_commit_from_the_cache(models, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    repo = tmp_path / "hub" / "models--tiny--bert"
    shutil.copytree(models["bert"], repo / "snapshots" / SHA)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    enc = get_encoder("text:hf/tiny/bert", cached=False)
    assert f"weights=commit:{SHA}" in enc.identity
    pinned = get_encoder(f"text:hf/tiny/bert@revision={SHA}", cached=False)
    np.testing.assert_allclose(pinned.encode(TEXTS), enc.encode(TEXTS), atol=1e-6)
    with pytest.raises(EncoderError, match="nobody/absent") as e:  # offline and not in the cache
        get_encoder("text:hf/nobody/absent", cached=False)
    assert "\n" not in str(e.value)


def test_remote_code_is_refused_unless_the_spec_allows_it(tmp_path):
    folder = tmp_path / "custom"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "config.json").write_text(json.dumps({
        "model_type": "anybind-tiny-custom",
        "auto_map": {"AutoConfig": "configuration_tiny.TinyConfig", "AutoModel": "modeling_tiny.TinyModel"},
    }))
    for mod in ("configuration_tiny.py", "modeling_tiny.py"):
        (folder / mod).write_text(f"open({str(marker)!r}, 'w').write('executed')\n")
    with pytest.raises(EncoderError, match="trust_remote_code=true") as e:
        get_encoder(f"image:hf/{folder}", cached=False)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


_REMOTE_CODE = ("from transformers import BertConfig, BertModel\n"
                "class TinyConfig(BertConfig):\n    model_type = 'anybind-tiny-remote'\n"
                "class TinyModel(BertModel):\n    config_class = TinyConfig\n")


def _remote_code_folder(models, tmp_path, monkeypatch) -> Path:
    """A copy of the tiny BERT whose config names its own Python code (``auto_map``, ``modeling_tiny.py``)."""
    import sys

    import transformers.dynamic_module_utils as dyn

    monkeypatch.setattr(dyn, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # where transformers copies the code
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "custom"
    shutil.copytree(models["bert"], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="anybind-tiny-remote", auto_map={"AutoConfig": "modeling_tiny.TinyConfig",
                                                           "AutoModel": "modeling_tiny.TinyModel"})
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_tiny.py").write_text(_REMOTE_CODE)
    return folder


def test_the_identity_of_a_trusted_remote_code_model_follows_its_code(models, tmp_path, monkeypatch):
    """With ``trust_remote_code=true`` the folder's Python files run: a change to them changes the features, so it
    must change the identity (else the feature cache and saved spaces would serve the old model's features)."""
    folder = _remote_code_folder(models, tmp_path, monkeypatch)
    code = _REMOTE_CODE
    spec = f"text:hf/{folder}@trust_remote_code=true"
    ident = get_encoder(spec, cached=False).identity
    (folder / "README.md").write_text("a readme is not code")
    assert get_encoder(spec, cached=False).identity == ident
    (folder / "modeling_tiny.py").write_text(code + "SCALE = 2.0  # a changed model\n")
    assert get_encoder(spec, cached=False).identity != ident


def test_a_space_saved_before_remote_code_was_hashed_still_embeds(models, tmp_path, monkeypatch, caplog):
    """A space fitted with a ``trust_remote_code=true`` folder before its Python files were part of the identity
    recorded the identity without them: it must still embed (one warning), while a changed weight is refused."""
    import logging

    from anybind import Space
    from anybind.encoders.hf_spec import files_sha256
    from anybind.encoders import registry

    folder = _remote_code_folder(models, tmp_path, monkeypatch)
    spec = f"text:hf/{folder}@trust_remote_code=true"
    r = cli_fit(text_image_manifest(tmp_path / "m.jsonl", pngs(tmp_path, 12)), tmp_path / "space", tmp_path / "c",
                f"text={spec}", f"image=image:hf/{models['vit']}")
    assert r.exit_code == 0, r.output
    sp = Space.load(tmp_path / "space")
    ident = sp.identities["text"]
    new, old = files_sha256(folder, code=True)[:16], files_sha256(folder)[:16]
    assert new in ident and new != old
    sp.identities["text"] = ident.replace(new, old)  # what a space saved before recorded
    sp.save(tmp_path / "old")
    monkeypatch.setattr(registry, "_INSTANCES", {})  # a fresh process
    monkeypatch.setattr(logging.getLogger("anybind"), "propagate", True)  # the CLI's stderr handler stops it
    with caplog.at_level(logging.WARNING, logger="anybind"):
        sp = Space.load(tmp_path / "old")
        assert sp.embed("text", ["the dog"]).shape == (1, sp.dim)
    assert any("Python files" in r.getMessage() for r in caplog.records), caplog.text
    weights = next(folder.glob("*.safetensors"))
    blob = weights.read_bytes()
    weights.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # another model: refused, as before
    monkeypatch.setattr(registry, "_INSTANCES", {})
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        Space.load(tmp_path / "old").embed("text", ["the dog"])


@pytest.mark.parametrize("tail, match", [
    ("@pool=max", "pool='max'"),
    ("@layers=2", "unknown option 'layers'"),
    ("@layer=last", "not an integer"),
    ("@device=tpu", "device='tpu'"),
    ("@revision=main", "revision= applies to hub models"),
])
def test_a_bad_option_is_one_line_naming_the_spec(models, tail, match):
    with pytest.raises(EncoderError, match=match) as e:
        get_encoder(f"text:hf/{models['bert']}{tail}", cached=False)
    assert "\n" not in str(e.value) and str(models["bert"]) in str(e.value)


def test_a_missing_folder_or_an_out_of_range_layer_is_one_line(models, tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        get_encoder(f"image:hf/{tmp_path / 'nothing'}", cached=False)
    with pytest.raises(EncoderError, match="layer=9 out of range"):
        get_encoder(f"text:hf/{models['bert']}@layer=9", cached=False).encode(["the dog"])


def test_feature_cache_and_space_fit_end_to_end(models, tmp_path, monkeypatch):
    from anybind import Space
    from anybind.cache import FeatureCache
    from anybind.encoders import registry

    enc = get_encoder(f"text:hf/{models['bert']}", cached=False)
    cache = FeatureCache(tmp_path / "c")
    first = cache.encode(enc, TEXTS, progress=False)
    again = cache.encode(enc, TEXTS, progress=False)
    assert cache.last_stats.hits == len(TEXTS) and np.array_equal(first, again)
    np.testing.assert_allclose(first, enc.encode(TEXTS), atol=1e-6)

    folder = tmp_path / "bert"
    shutil.copytree(models["bert"], folder)
    images = pngs(tmp_path, 12)
    man = text_image_manifest(tmp_path / "m.jsonl", images)
    encoders = {"text": f"text:hf/{folder}", "image": f"image:hf/{models['vit']}"}
    sp = Space.fit(man, encoders=encoders, cache=tmp_path / "c", epochs=2, progress=False, recipe="plain")
    assert sorted(sp.modalities) == ["image", "text"]
    r = cli_fit(man, tmp_path / "cli", tmp_path / "c", f"text={encoders['text']}", f"image={encoders['image']}")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "cli" / "space.json").read_text())["modalities"]
    assert saved["text"]["encoder"] == encoders["text"] and "weights=sha256:" in saved["text"]["identity"]
    bad = cli_fit(man, tmp_path / "bad", tmp_path / "c", f"text={encoders['text']}@pool=max")
    assert bad.exit_code == 2 and "pool='max'" in bad.output and "Traceback" not in bad.output
    assert sp.embed("text", ["the dog"]).shape[0] == 1
    sp.save(tmp_path / "sp")
    from safetensors.torch import load_file, save_file

    w = load_file(folder / "model.safetensors")
    w = {k: (v + 0.1 * torch.randn_like(v) if k.endswith("query.weight") else v) for k, v in w.items()}
    save_file(w, folder / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(registry, "_INSTANCES", {})  # a fresh process would build the encoder anew
    loaded = Space.load(tmp_path / "sp")
    assert loaded.embed("image", [str(images[0])]).shape == (1, sp.dim)  # unchanged model: served
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        loaded.embed("text", ["the dog"])

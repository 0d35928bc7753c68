"""``image:onnx/...``, ``text:onnx/...``, ``audio:onnx/...`` (issue 17): ONNX Runtime encoders by spec.

Every model is a tiny randomly initialised torch module (a small conv net, a 2-layer BERT, a 1-D conv net)
exported in the test with ``torch.onnx.export(..., dynamo=False)``: the features must equal the torch forward
(to 1e-5; ORT's CPU kernels agree that closely here), the identity must follow the model file, and every
problem is one line naming the spec.
"""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
transformers = pytest.importorskip("transformers")

from anybind.encoders.registry import get_encoder  # noqa: E402
from encoder_samples import cli_fit, pngs, text_image_manifest, wav  # noqa: E402
from anybind.errors import DataError, EncoderError, SpaceError  # noqa: E402

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "dog", "cat",
          *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
TEXTS = ["the dog", "a cat sat on the mat with the dog", "cat", "zebra quiz"]


class ImageNet(torch.nn.Module):
    """A (B, 8, H', W') feature map and a (B, 6) embedding of it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2)
        self.head = torch.nn.Linear(8, 6)

    def forward(self, x):
        fmap = torch.relu(self.conv(x))
        return fmap, self.head(fmap.mean((2, 3)))


class FlatNet(torch.nn.Module):
    """Needs exactly 3x8x8 inputs, but is exported with dynamic H and W (so a wrong size fails in ORT)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


class AudioNet(torch.nn.Module):
    """(B, samples) -> (B, frames, 8)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 10, stride=5)

    def forward(self, x):
        return torch.tanh(self.conv(x[:, None, :])).transpose(1, 2)


class Bert(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state, out.pooler_output


def _export(model, args, path: Path, inputs, outputs, dynamic) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the legacy exporter's deprecation and tracer warnings: not our subject
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic)
    return path


def _bert(seed: int):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=len(TOKENS), max_position_embeddings=64, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    cfg._attn_implementation = "eager"  # the traced export of the sdpa mask is not shape-generic
    return transformers.BertModel(cfg).eval()


def _export_bert(bert, path: Path) -> Path:
    ids = torch.tensor([[2, 5, 6, 3, 0], [2, 7, 8, 9, 3]])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    dyn = {k: {0: "b", 1: "t"} for k in [*names, "last_hidden_state"]} | {"pooler_output": {0: "b"}}
    return _export(Bert(bert), (ids, (ids != 0).long(), torch.zeros_like(ids)), path, names,
                   ["last_hidden_state", "pooler_output"], dyn)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    image, flat, audio = ImageNet().eval(), FlatNet().eval(), AudioNet().eval()
    bert = _bert(0)
    tok = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(TOKENS)}, model_max_length=64)
    tok.save_pretrained(root / "tok")
    return {
        "image": _export(image, (torch.randn(1, 3, 32, 32),), root / "image" / "model.onnx", ["pixels"],
                         ["fmap", "emb"], {"pixels": {0: "b"}, "fmap": {0: "b"}, "emb": {0: "b"}}),
        "image_torch": image,
        "flat": _export(flat, (torch.randn(1, 3, 8, 8),), root / "flat" / "model.onnx", ["x"], ["y"],
                        {"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b"}}),
        "audio": _export(audio, (torch.randn(1, 400),), root / "audio" / "model.onnx", ["wav"], ["frames"],
                         {"wav": {0: "b", 1: "t"}, "frames": {0: "b", 1: "f"}}),
        "audio_torch": audio,
        "text": _export_bert(bert, root / "text" / "model.onnx"),
        "text_torch": bert,
        "tok": root / "tok",
        "tokenizer": tok,
    }


def _squashed(path: Path, size: int = 32) -> np.ndarray:
    from PIL import Image

    from anybind.data.media import load_image

    img = load_image(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return ((np.asarray(img, np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)


def test_image_features_equal_the_torch_forward_for_each_output(models, tmp_path):
    paths = [str(p) for p in pngs(tmp_path)]
    x = torch.from_numpy(np.stack([_squashed(Path(p)) for p in paths]))
    with torch.no_grad():
        fmap, emb = models["image_torch"](x)
    enc = get_encoder(f"image:onnx/{models['image']}@resize=squash", cached=False)
    assert enc.dim == 8 and enc.input_kind == "file"
    # the first output, averaged over space
    np.testing.assert_allclose(enc.encode(paths), fmap.mean((2, 3)).numpy(), atol=1e-5)
    assert "pool=mean-spatial" in enc.identity and "size=32x32" in enc.identity
    head = get_encoder(f"image:onnx/{models['image']}@resize=squash,output=emb", cached=False)
    assert head.dim == 6
    np.testing.assert_allclose(head.encode(paths), emb.numpy(), atol=1e-5)
    blob = pickle.dumps(head)  # a worker gets the spec and the options, never the session
    assert len(blob) < 20_000
    np.testing.assert_allclose(pickle.loads(blob).encode(paths), emb.numpy(), atol=1e-5)


def test_image_resize_modes_and_channel_order(models):
    from PIL import Image

    arr = np.random.default_rng(3).integers(0, 255, (32, 64, 3), dtype=np.uint8)  # 64 wide, 32 high
    img = Image.fromarray(arr)
    norm = (arr.astype(np.float32) / 255 - MEAN) / STD
    crop = get_encoder(f"image:onnx/{models['image']}", cached=False).load(img)  # crop is the default
    np.testing.assert_allclose(crop, norm[:, 16:48].transpose(2, 0, 1), atol=1e-6)  # no resample: the centre
    pad = get_encoder(f"image:onnx/{models['image']}@resize=pad", cached=False).load(img)
    black = np.broadcast_to((-MEAN / STD)[:, None, None], (3, 8, 32))
    np.testing.assert_allclose(pad[:, :8], black, atol=1e-6)
    assert np.abs(pad[:, 8:24]).sum() > 0
    bgr = get_encoder(f"image:onnx/{models['image']}@channels=bgr", cached=False).load(img)
    np.testing.assert_allclose(bgr, crop[::-1], atol=1e-6)
    spec = f"image:onnx/{models['image']}@mean=0.5,std=0.5/0.25/0.5,scale=1"
    mean = get_encoder(spec, cached=False).load(img)
    want = (arr[:, 16:48].astype(np.float32) - 0.5) / np.array([0.5, 0.25, 0.5], np.float32)
    np.testing.assert_allclose(mean, want.transpose(2, 0, 1), atol=1e-5)


def test_text_features_equal_the_torch_forward_with_a_tokenizer_folder(models):
    spec = f"text:onnx/{models['text']}@tokenizer={models['tok']}"
    enc = get_encoder(spec, cached=False)
    assert enc.dim == 32 and enc.input_kind == "text"
    got = enc.encode(TEXTS)
    inputs = models["tokenizer"](TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = models["text_torch"](**inputs)
    m = inputs["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(got, ((out.last_hidden_state * m).sum(1) / m.sum(1)).numpy(), atol=1e-5)
    np.testing.assert_allclose(enc.encode(["the dog"])[0], got[0], atol=1e-5)  # padding does not count
    cls = get_encoder(spec + ",pool=cls", cached=False).encode(TEXTS)
    np.testing.assert_allclose(cls, out.last_hidden_state[:, 0].numpy(), atol=1e-5)
    pooler = get_encoder(spec + ",output=pooler_output", cached=False).encode(TEXTS)
    np.testing.assert_allclose(pooler, out.pooler_output.numpy(), atol=1e-5)
    beside = models["text"].parent / "with-tok"  # a tokenizer beside the model needs no option
    shutil.copytree(models["tok"], beside, dirs_exist_ok=True)
    shutil.copy(models["text"], beside / "model.onnx")
    np.testing.assert_allclose(get_encoder(f"text:onnx/{beside / 'model.onnx'}", cached=False).encode(TEXTS),
                               got, atol=1e-6)


def test_audio_features_are_the_mean_over_frames_item_by_item(models, tmp_path):
    from anybind.data.media import load_audio

    wavs = [wav(tmp_path / f"s{i}.wav", n, i) for i, n in enumerate((4000, 6400, 4000))]
    enc = get_encoder(f"audio:onnx/{models['audio']}", cached=False)
    got = enc.encode([str(w) for w in wavs])
    for i, w in enumerate(wavs):
        with torch.no_grad():
            want = models["audio_torch"](torch.from_numpy(load_audio(w, 16000)[0])[None]).mean(1)[0].numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    cut = get_encoder(f"audio:onnx/{models['audio']}@max_seconds=0.25,normalize=true", cached=False)
    x = load_audio(wavs[1], 16000)[0][:4000]
    with torch.no_grad():
        want = models["audio_torch"](torch.from_numpy((x - x.mean()) / np.sqrt(x.var() + 1e-7))[None]).mean(1)
    np.testing.assert_allclose(cut.encode([str(wavs[1])]), want.numpy(), atol=1e-5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(DataError, match="bad.wav"):
        enc.encode([str(bad)])


def test_identity_follows_the_model_file_external_data_and_preprocessing(models, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    path = shutil.copy(models["image"], folder / "model.onnx")
    spec = f"image:onnx/{path}"
    ident = get_encoder(spec, cached=False).identity
    assert get_encoder(spec + "@device=cpu", cached=False).identity == ident
    assert get_encoder(spec + "@mean=0.5", cached=False).identity != ident
    assert get_encoder(spec + "@resize=pad", cached=False).identity != ident
    torch.manual_seed(1)
    _export(ImageNet(), (torch.randn(1, 3, 32, 32),), Path(path), ["pixels"], ["fmap", "emb"],
            {"pixels": {0: "b"}})
    assert get_encoder(spec, cached=False).identity != ident
    # weights in an external-data file beside the model: its bytes are part of the identity
    proto = onnx.load(str(models["image"]))
    ext = folder / "ext.onnx"
    onnx.save_model(proto, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.weights", size_threshold=0)
    before = get_encoder(f"image:onnx/{ext}", cached=False)
    ident_ext, feats = before.identity, before.encode([np.zeros((3, 32, 32), np.float32)])
    weights = np.frombuffer((folder / "ext.weights").read_bytes(), np.float32)
    (folder / "ext.weights").write_bytes((weights + 0.5).astype(np.float32).tobytes())
    after = get_encoder(f"image:onnx/{ext}", cached=False)
    assert after.identity != ident_ext
    assert not np.allclose(after.encode([np.zeros((3, 32, 32), np.float32)]), feats)
    (folder / "ext.weights").unlink()
    with pytest.raises(EncoderError, match="ext.onnx") as e:
        get_encoder(f"image:onnx/{ext}", cached=False)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("tail, match", [
    ("@size=48", "is \\['b', 3, 32, 32\\], but @size=48x48"),
    ("@layout=nhwc", "32 channels where layout=nhwc puts 3"),
    ("@output=logits", "no output 'logits' \\(outputs: fmap, emb\\)"),
    ("@pool=cls", "use pool=mean"),
    ("@output=emb,pool=mean", "pool=mean does not apply"),
    ("@pool=max", "pool='max' is not one of"),
    ("@tokenizer=x", "unknown option 'tokenizer'"),
    ("@size=big", "size='big' is not an integer"),
    ("@mean=1/2", "give one value or three"),
    ("@std=0", "must be positive"),
    ("@device=tpu", "device='tpu'"),
])
def test_a_bad_option_or_a_graph_it_does_not_fit_is_one_line_naming_the_spec(models, tail, match):
    with pytest.raises(EncoderError, match=match) as e:
        get_encoder(f"image:onnx/{models['image']}{tail}", cached=False)
    assert "\n" not in str(e.value) and str(models["image"]) in str(e.value)


def test_corrupt_model_wrong_input_shape_missing_tokenizer_are_one_line(models, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    cases = [
        (f"image:onnx/{bad}", "cannot load the ONNX model"),
        (f"image:onnx/{tmp_path / 'absent.onnx'}", "does not exist"),
        (f"text:onnx/{models['text']}", "needs a tokenizer and none is beside model.onnx"),
        (f"text:onnx/{models['text']}@tokenizer={tmp_path / 'nope'}", "tokenizer folder .* does not exist"),
        (f"text:onnx/{models['text']}@tokenizer={tmp_path}", "cannot load the tokenizer"),
        (f"text:onnx/{models['image']}@tokenizer={models['tok']}", "not what a tokenizer makes"),
        (f"audio:onnx/{models['image']}", "an audio model's input is"),
        (f"video:onnx/{models['image']}", None),
    ]
    for spec, match in cases:
        with pytest.raises(EncoderError, match=match) as e:
            get_encoder(spec, cached=False)
        assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
        if match:
            assert spec.split("@")[0] in str(e.value)
    flat = get_encoder(f"image:onnx/{models['flat']}@size=16", cached=False)  # dynamic H, W: ORT finds out
    with pytest.raises(EncoderError, match="the model's forward failed") as e:
        flat.encode([np.zeros((3, 16, 16), np.float32)])
    assert "\n" not in str(e.value) and str(models["flat"]) in str(e.value)
    np.testing.assert_allclose(get_encoder(f"image:onnx/{models['flat']}@size=8", cached=False).encode(
        [np.zeros((3, 8, 8), np.float32)]).shape, (1, 4))


def test_a_missing_onnxruntime_or_cuda_provider_says_what_to_install(models, monkeypatch):
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(EncoderError, match="no CUDAExecutionProvider .*onnxruntime-gpu"):
            get_encoder(f"image:onnx/{models['image']}@device=cuda", cached=False)
        auto = get_encoder(f"image:onnx/{models['image']}@device=auto", cached=False)
        assert auto.session().get_providers() == ["CPUExecutionProvider"]
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(EncoderError, match=r"needs the 'onnxruntime' package: pip install 'anybind\[onnx\]'"):
        get_encoder(f"image:onnx/{models['image']}", cached=False)


def test_feature_cache_space_fit_and_the_cli(models, tmp_path, monkeypatch):
    from anybind import Space
    from anybind.cache import FeatureCache
    from anybind.encoders import registry

    folder = tmp_path / "img"
    folder.mkdir()
    model = shutil.copy(models["image"], folder / "model.onnx")
    image_spec = f"image:onnx/{model}@output=emb"
    text_spec = f"text:onnx/{models['text']}@tokenizer={models['tok']}"
    images = pngs(tmp_path, 12)
    enc = get_encoder(image_spec, cached=False)
    cache = FeatureCache(tmp_path / "c")
    first = cache.encode(enc, [str(p) for p in images], progress=False)
    again = cache.encode(enc, [str(p) for p in images], progress=False)
    assert cache.last_stats.hits == len(images) and np.array_equal(first, again)
    np.testing.assert_allclose(first, enc.encode([str(p) for p in images]), atol=1e-6)

    man = text_image_manifest(tmp_path / "m.jsonl", images)
    sp = Space.fit(man, encoders={"text": text_spec, "image": image_spec}, cache=tmp_path / "c", epochs=2,
                   progress=False, recipe="plain")
    assert sorted(sp.modalities) == ["image", "text"]
    sp.save(tmp_path / "sp")
    r = cli_fit(man, tmp_path / "cli", tmp_path / "c", f"image={image_spec}", f"text={text_spec}")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "cli" / "space.json").read_text())["modalities"]
    assert saved["image"]["encoder"] == image_spec and "weights=sha256:" in saved["image"]["identity"]
    bad = cli_fit(man, tmp_path / "bad", tmp_path / "c", f"image={image_spec},size=48", f"text={text_spec}")
    assert bad.exit_code == 2 and "@size=48x48" in bad.output and "Traceback" not in bad.output
    torch.manual_seed(2)
    _export(ImageNet(), (torch.randn(1, 3, 32, 32),), Path(model), ["pixels"], ["fmap", "emb"],
            {"pixels": {0: "b"}})
    monkeypatch.setattr(registry, "_INSTANCES", {})  # a fresh process would build the encoder anew
    loaded = Space.load(tmp_path / "sp")
    assert loaded.embed("text", ["the dog"]).shape == (1, sp.dim)  # unchanged model: served
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        loaded.embed("image", [str(images[0])])


@given(modality=st.sampled_from(["image", "text", "audio"]),
       tail=st.lists(st.tuples(st.sampled_from(["size", "mean", "std", "resize", "scale", "sr", "max_seconds",
                                                "normalize", "max_length", "pool", "device", "layout", "x"]),
                               st.text(max_size=12)), max_size=4))
@settings(max_examples=200, deadline=None)
def test_any_option_string_parses_or_is_one_encoder_error_line(modality, tail):
    from anybind.encoders.ort_spec import parse_onnx_name

    name = "m.onnx@" + ",".join(f"{k}={v}" for k, v in tail)
    try:
        source, opts = parse_onnx_name(f"{modality}:onnx/{name}", modality, name)
    except EncoderError as e:
        assert "\n" not in str(e) and f"{modality}:onnx/m.onnx" in str(e)
    else:
        assert source.startswith("m.onnx") and opts.described(modality)

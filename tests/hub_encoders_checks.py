"""timm and OpenCLIP image towers, OpenCLIP's text tower and an OpenCLIP pair as a space (issue 17): features against
the library's own forward, then end to end (``Space.fit``, ``anybind fit``, ``fit --from-pretrained clip=open_clip:...``
then ``bind --add``, save, load in a fresh process).

Not collected by a plain ``pytest tests``: tests/test_encoders_hub.py runs this file in a child pytest whose path
holds timm, open_clip_torch and their torchvision (``.venv/hub-site``; see there why they are kept out of the venv).
Each model is tiny, randomly initialised and saved locally (no network).  The space saved by one process must embed
the same pictures identically in a new interpreter, which builds the encoder from the saved spec alone; changed
weights must be refused.  Skips, with the reason, where timm / open_clip (or torchvision) cannot be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anybind import Space
from anybind.encoders import registry
from anybind.encoders.registry import get_encoder
from anybind.errors import EncoderError, SpaceError
from encoder_samples import cli_fit, pngs, text_image_manifest
from torchvision_shim import import_or_skip

TESTS = Path(__file__).parent


def _pil_samples():
    from PIL import Image, ImageDraw

    imgs = []
    for k, colour in enumerate([(220, 40, 40), (40, 160, 60)]):
        im = Image.new("RGBA", (90 + 20 * k, 70), (0, 0, 0, 0))
        ImageDraw.Draw(im).ellipse((10, 10, 70, 60), fill=colour + (255,))
        imgs.append(im)
    return imgs


def test_timm_local_checkpoint_roundtrip(tmp_path):
    timm = import_or_skip("timm")
    import torch

    from anybind.encoders.image import make_image_encoder

    arch = "test_resnet" if "test_resnet" in timm.list_models("test_resnet") else "resnet18"
    torch.manual_seed(0)
    src = timm.create_model(arch, pretrained=False, num_classes=7).eval()
    ckpt = tmp_path / "tiny.pth"
    torch.save(src.state_dict(), ckpt)

    enc = make_image_encoder(f"timm/{arch}@{ckpt}")
    assert enc._model is None
    imgs = _pil_samples()
    feats = enc.encode(imgs)
    assert feats.shape == (2, src.num_features) and enc.dim == src.num_features
    src.reset_classifier(0)
    x = torch.from_numpy(np.stack([enc.load(im) for im in imgs]))
    with torch.no_grad():
        ref = src(x).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    assert f"@{ckpt}|weights=" in enc.identity and "mean(" in enc.identity
    import pickle

    np.testing.assert_allclose(pickle.loads(pickle.dumps(enc)).encode(imgs), feats, rtol=1e-5, atol=1e-6)
    with pytest.raises(EncoderError, match="does not exist"):
        make_image_encoder(f"timm/{arch}@{tmp_path / 'nope.pth'}")


def test_open_clip_local_checkpoint_roundtrip(tmp_path):
    open_clip = import_or_skip("open_clip")
    import torch

    from anybind.encoders.image import make_image_encoder

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "anybind-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "anybind-tiny-test.json")
    torch.manual_seed(0)
    src = open_clip.create_model("anybind-tiny-test", pretrained=None).eval()
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(src.state_dict(), ckpt)

    enc = make_image_encoder(f"open_clip/anybind-tiny-test@{ckpt}")
    assert enc.dim == 32 and enc._model is None  # dim from the config, no model load
    imgs = _pil_samples()
    feats = enc.encode(imgs)
    assert feats.shape == (2, 32) and np.isfinite(feats).all()
    x = torch.from_numpy(np.stack([enc.load(im) for im in imgs]))
    with torch.no_grad():
        ref = src.encode_image(x).numpy()
    np.testing.assert_allclose(feats, ref, rtol=1e-4, atol=1e-5)
    assert "|weights=" in enc.identity and "32" in enc.identity.split("|prep=")[1]
    import pickle

    np.testing.assert_allclose(pickle.loads(pickle.dumps(enc)).encode(imgs), feats, rtol=1e-5, atol=1e-6)
    with pytest.raises(EncoderError, match="neither a checkpoint file nor a known tag"):
        make_image_encoder("open_clip/anybind-tiny-test@no-such-tag")


TEXT = "callable:helper_encoders:bow_text"
# what a new interpreter runs: the shim (as conftest installs it), then the saved space alone
FRESH = (
    "import sys, numpy as np, torchvision_shim; torchvision_shim.install(); from anybind import Space; "
    "np.save(sys.argv[2], Space.load(sys.argv[1]).embed('image', sys.argv[3:]))"
)


def _embed_in_a_fresh_process(space: Path, files: list[str], out: Path) -> np.ndarray:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-c", FRESH, str(space), str(out), *files], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return np.load(out)


def _fit_save_reload(tmp_path: Path, spec: str, monkeypatch) -> tuple[Space, list[str]]:
    """Space.fit and `anybind fit` with ``spec`` as the image encoder; the saved space reloaded in a new process."""
    images = pngs(tmp_path, 12)
    man = text_image_manifest(tmp_path / "m.jsonl", images)
    sp = Space.fit(man, encoders={"text": TEXT, "image": spec}, cache=tmp_path / "c", epochs=2, progress=False,
                   recipe="plain", seed=0)
    assert sorted(sp.modalities) == ["image", "text"]
    files = [str(p) for p in images[:4]]
    here = sp.embed("image", files)
    assert here.shape == (4, sp.dim) and np.isfinite(here).all()
    sp.save(tmp_path / "sp")

    r = cli_fit(man, tmp_path / "cli", tmp_path / "c", f"image={spec}", f"text={TEXT}")
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "cli" / "space.json").read_text())["modalities"]["image"]
    assert saved["encoder"] == spec and "|weights=" in saved["identity"] and "|prep=" in saved["identity"]

    there = _embed_in_a_fresh_process(tmp_path / "sp", files, tmp_path / "fresh.npy")
    np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(registry, "_INSTANCES", {})  # as in a fresh process: the encoder is built anew
    return Space.load(tmp_path / "sp"), files


def test_timm_checkpoint_space_fit_cli_and_a_fresh_process(tmp_path, monkeypatch):
    timm = import_or_skip("timm")
    import torch

    arch = "test_resnet" if "test_resnet" in timm.list_models("test_resnet") else "resnet18"
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=3)
    ckpt = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    loaded, files = _fit_save_reload(tmp_path, f"image:timm/{arch}@{ckpt}", monkeypatch)
    assert loaded.embed("image", files[:1]).shape == (1, loaded.dim)  # unchanged weights: served

    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}, ckpt)
    monkeypatch.setattr(registry, "_INSTANCES", {})
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        Space.load(tmp_path / "sp").embed("image", files[:1])


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _open_clip_folder(open_clip, folder: Path, seed: int) -> Path:
    """A tiny CLIP saved as OpenCLIP's local-dir layout: open_clip_config.json + open_clip_model.safetensors."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained=None, load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "open_clip_model.safetensors")
    return folder


def test_open_clip_local_dir_space_fit_cli_and_a_fresh_process(tmp_path, monkeypatch):
    open_clip = import_or_skip("open_clip")
    import torch
    from PIL import Image

    folder = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0)
    spec = f"image:open_clip/local-dir:{folder}"
    enc = get_encoder(spec, cached=False)
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    imgs = [str(p) for p in pngs(tmp_path, 3)]
    with torch.no_grad():
        want = ref.eval().encode_image(torch.stack([preprocess(Image.open(p)) for p in imgs]))
    np.testing.assert_allclose(enc.encode(imgs), want.numpy(), rtol=1e-4, atol=1e-5)
    assert enc.dim == 32

    loaded, files = _fit_save_reload(tmp_path, spec, monkeypatch)
    assert loaded.embed("image", files[:1]).shape == (1, loaded.dim)
    _open_clip_folder(open_clip, folder, seed=1)  # other weights in the same folder
    monkeypatch.setattr(registry, "_INSTANCES", {})
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        Space.load(tmp_path / "sp").embed("image", files[:1])


def test_open_clip_local_dir_without_weights_is_refused(tmp_path):
    open_clip = import_or_skip("open_clip")
    folder = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0)
    (folder / "open_clip_model.safetensors").unlink()
    with pytest.raises(EncoderError, match="no weights") as e:  # OpenCLIP itself would go on with random weights
        get_encoder(f"image:open_clip/local-dir:{folder}", cached=False)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)


def _set_logit_scale(folder: Path, value: float) -> None:
    """The saved model's logit scale set to ``value`` (not OpenCLIP's initial log(1/0.07))."""
    from safetensors.torch import load_file, save_file

    f = folder / "open_clip_model.safetensors"
    state = load_file(f)
    state["logit_scale"].fill_(value)
    save_file(state, f)


def test_open_clip_text_tower_is_encode_text_and_its_identity_holds_the_weights(tmp_path):
    open_clip = import_or_skip("open_clip")
    import torch

    from anybind.encoders.keys import sha256_dir

    folder = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0)
    enc = get_encoder(f"text:open_clip/local-dir:{folder}", cached=False)
    assert enc.dim == 32 and enc.modality == "text" and enc.input_kind == "text"
    texts = ["a red circle", "a green ellipse on white, drawn twice as large as the other one", "x"]
    ref = open_clip.create_model(f"local-dir:{folder}").eval()
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        want = ref.encode_text(tok(texts)).numpy()
    got = enc.encode(texts)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(got[0], got[1])  # not a constant
    assert enc.identity.startswith(f"text:open_clip/local-dir:{folder}|weights={sha256_dir(folder)}|prep=")
    assert "ctx16" in enc.identity  # the config's context length
    import pickle

    np.testing.assert_allclose(pickle.loads(pickle.dumps(enc)).encode(texts), got, rtol=1e-5, atol=1e-6)
    _open_clip_folder(open_clip, folder, seed=1)
    assert get_encoder(f"text:open_clip/local-dir:{folder}", cached=False).identity != enc.identity
    with pytest.raises(EncoderError, match="needs an architecture"):
        get_encoder("text:open_clip/", cached=False)


def test_open_clip_pair_from_pretrained_then_bind_audio(tmp_path, monkeypatch):
    """``fit --from-pretrained clip=open_clip:local-dir:...``: the model's normalised embeddings, its own logit
    scale and the CLIP prompts; saved, reloaded, extended by ``bind --add``; changed weights refused."""
    open_clip = import_or_skip("open_clip")
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from typer.testing import CliRunner

    from anybind.cli import app
    from anybind.pairs import CLIP_TEMPLATES, from_pretrained_pair
    from encoder_samples import WORDS, wav

    folder = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0)
    _set_logit_scale(folder, 3.25)
    images = [str(p) for p in pngs(tmp_path, 3)]
    texts = ["the dog", "a cat sat on the mat with the dog", "zebra quiz"]
    ref, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    with torch.no_grad():
        want_t = F.normalize(ref.eval().encode_text(tok(texts)), dim=-1).numpy()
        want_i = F.normalize(ref.encode_image(torch.stack([preprocess(Image.open(p)) for p in images])), dim=-1)
    sp = from_pretrained_pair("clip", f"open_clip:local-dir:{folder}")
    assert sp.modalities == ["image", "text"] and sp.dim == 32
    assert {p.cfg.kind for p in sp.projectors.values()} == {"identity"}
    np.testing.assert_allclose(sp.embed("text", texts), want_t, atol=1e-5)
    np.testing.assert_allclose(sp.embed("image", images), want_i.numpy(), atol=1e-5)
    assert sp.logit_scale == pytest.approx(float(ref.logit_scale.detach()), rel=1e-6) and sp.logit_scale == pytest.approx(3.25)
    assert sp.info["templates"] == list(CLIP_TEMPLATES) and sp.info["pretrained_pair"]["kind"] == "clip"

    monkeypatch.chdir(tmp_path)  # a relative folder is stored absolute
    r = CliRunner().invoke(app, ["fit", "--from-pretrained", "clip=open_clip:local-dir:tiny-clip", "--out", "sp"],
                           env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    base = Space.load(tmp_path / "sp")
    assert base.identity() == sp.identity()
    assert json.loads((tmp_path / "sp" / "space.json").read_text())["modalities"]["text"]["encoder"] == (
        f"text:open_clip/local-dir:{folder.resolve()}")
    np.testing.assert_array_equal(base.embed("text", texts), sp.embed("text", texts))

    (tmp_path / "b").mkdir()
    pics = pngs(tmp_path / "b", 12)
    rows = []
    for i, (w, p) in enumerate(zip(WORDS, pics)):
        wav(tmp_path / "b" / f"s{i}.wav", 3200 + 160 * i, i)
        rows.append({"id": f"r{i}", "split": "val" if i < 3 else "train", "text": w, "image": p.name,
                     "audio": f"s{i}.wav"})
    man = tmp_path / "b" / "m.jsonl"
    man.write_text("".join(json.dumps(x) + "\n" for x in rows))
    argv = ["bind", "sp", "--add", "audio=callable:helper_encoders:file_size", "--data", str(man), "--anchors",
            "text", "--epochs", "2", "--out", "sp2", "--cache", "c"]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    sp2 = Space.load(tmp_path / "sp2")
    assert sp2.modalities == ["audio", "image", "text"] and sp2.logit_scale == base.logit_scale
    np.testing.assert_array_equal(sp2.embed("text", texts), base.embed("text", texts))  # the pair left untouched
    sims = sp2.similarity("audio", [str(tmp_path / "b" / "s0.wav")], "image", images)
    assert sims.shape == (1, 3) and np.isfinite(sims).all()

    _open_clip_folder(open_clip, folder, seed=1)  # other weights in the same folder
    monkeypatch.setattr(registry, "_INSTANCES", {})
    with pytest.raises(SpaceError, match="weights or preprocessing changed"):
        Space.load(tmp_path / "sp").embed("text", texts)


def test_open_clip_pair_builds_its_model_once(tmp_path, monkeypatch):
    """The text tower holds the registry's image tower: a pair, imported or loaded, builds the model once."""
    open_clip = import_or_skip("open_clip")
    from anybind.pairs import from_pretrained_pair

    folder, built = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0), []
    real, images = open_clip.create_model_and_transforms, [str(p) for p in pngs(tmp_path, 2)]
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: built.append(a[0]) or real(*a, **k))
    for make in (lambda: from_pretrained_pair("clip", f"open_clip:local-dir:{folder}"), lambda: Space.load(tmp_path / "sp")):
        monkeypatch.setattr(registry, "_INSTANCES", {})  # as in a fresh process: nothing built yet
        built.clear()
        sp = make()
        assert sp.embed("text", ["a dog"]).shape == (1, 32) and sp.embed("image", images).shape == (2, 32)
        assert built == [f"local-dir:{folder}"] and sp.encoder("text").tower is sp.encoder("image")
        if not (tmp_path / "sp").exists():
            sp.save(tmp_path / "sp")


def test_open_clip_unknown_architecture_and_the_old_arch_slash_tag_spelling_are_one_line():
    """An unknown architecture is named as such (not "no pretrained tag"), and ``<arch>/<tag>`` (the spelling the
    old pair refusal documented) is told that the tag follows ``@``, for either tower and for a pair."""
    import_or_skip("open_clip")
    from anybind.pairs import from_pretrained_pair

    for spec in ("text:open_clip/NoSuchArch", "image:open_clip/NoSuchArch@openai", "text:open_clip/NoSuchArch@x.pt"):
        with pytest.raises(EncoderError, match=r"unknown architecture 'NoSuchArch'") as e:
            get_encoder(spec, cached=False)
        assert "no pretrained tag" not in str(e.value) and "\n" not in str(e.value)
    for make in (lambda: get_encoder("image:open_clip/ViT-B-32/openai", cached=False),
                 lambda: get_encoder("text:open_clip/ViT-B-32/openai", cached=False),
                 lambda: from_pretrained_pair("clip", "open_clip:ViT-B-32/openai")):
        with pytest.raises(EncoderError, match=r"unknown architecture 'ViT-B-32/openai'.*ViT-B-32@openai") as e:
            make()
        assert "\n" not in str(e.value)


def test_open_clip_text_longer_than_the_context_is_cut_with_one_warning(tmp_path, caplog):
    """CLIP cuts a text at its context length; anybind does the same but says so once, naming the spec, how many
    texts and the context (short texts, and a text that exactly fills the context, say nothing)."""
    import logging

    open_clip = import_or_skip("open_clip")
    folder = _open_clip_folder(open_clip, tmp_path / "tiny-clip", seed=0)
    enc = get_encoder(f"text:open_clip/local-dir:{folder}", cached=False)
    tok = open_clip.get_tokenizer(f"local-dir:{folder}")
    exact = " ".join(["dog"] * 14)  # 14 words + start and end tokens = the 16-token context
    assert int((tok([exact]) != 0).sum()) == 16
    long = " ".join(["dog", "cat"] * 20)
    caplog.clear()  # OpenCLIP's own lines from building the folder
    with caplog.at_level(logging.WARNING, logger="anybind"):
        enc.encode(["a red circle", exact])
        assert not [r for r in caplog.records if r.name.startswith("anybind")]
        got = enc.encode(["a red circle", long, long + " zebra"])
        enc.encode([long])
    warned = [r.getMessage() for r in caplog.records if r.name.startswith("anybind")]
    assert len(warned) == 1, warned
    assert enc.spec in warned[0] and "2 of 3 texts" in warned[0] and "16 tokens" in warned[0]
    # cut, as OpenCLIP itself cuts: the text equals its first tokens
    np.testing.assert_allclose(got[1], got[2], rtol=1e-5, atol=1e-6)


def test_open_clip_missing_checkpoint_file_is_named_as_such(tmp_path):
    """``@<file>`` that does not exist says so (before: "neither a checkpoint file nor a known tag" and all the
    architecture's tags); a tag that is not known still lists the tags."""
    import_or_skip("open_clip")
    from anybind.pairs import from_pretrained_pair

    missing = tmp_path / "nope" / "ckpt.safetensors"
    for make in (lambda: get_encoder(f"text:open_clip/ViT-B-32@{missing}", cached=False),
                 lambda: from_pretrained_pair("clip", "open_clip:ViT-B-32@nope.pt")):
        with pytest.raises(EncoderError, match=r"checkpoint file .*(ckpt\.safetensors|nope\.pt) does not exist") as e:
            make()
        assert "tags:" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(EncoderError, match=r"neither a checkpoint file nor a known tag .*tags: .*openai"):
        get_encoder("image:open_clip/ViT-B-32@no_such_tag", cached=False)

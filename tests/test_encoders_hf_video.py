"""``video:hf/...`` (issue 17): transformers video models by spec, tiny and randomly initialised from configs
(VideoMAE: mean over tokens; ViViT: its pooler), saved to a temporary folder (no network)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("av")

from anybind.data.video import read_frames  # noqa: E402
from anybind.encoders.registry import get_encoder  # noqa: E402
from anybind.errors import DataError, EncoderError  # noqa: E402
from video_helpers import make_clip, make_zero_frame_clip  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
CROP = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hfvideo")
    torch.manual_seed(0)
    mae = transformers.VideoMAEModel(transformers.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4,
                                                                 tubelet_size=2, **SMALL))
    vivit = transformers.VivitModel(transformers.VivitConfig(image_size=32, num_frames=4, tubelet_size=[2, 8, 8],
                                                             **SMALL))
    for name, model, proc in (("mae", mae, transformers.VideoMAEImageProcessor(**CROP)),
                              ("vivit", vivit, transformers.VivitImageProcessor(**CROP))):
        model.save_pretrained(root / name)
        proc.save_pretrained(root / name)
    clip = make_clip(root / "c.mp4", n=20, rate=10)  # 2 s
    return {"mae": root / "mae", "vivit": root / "vivit", "clip": clip, "root": root}


def _raw(folder, frames):
    model = transformers.AutoModel.from_pretrained(folder).eval()
    proc = transformers.AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        return model(**proc(frames, return_tensors="pt"))


def test_videomae_features_are_the_token_mean_of_evenly_picked_frames(models):
    enc = get_encoder(f"video:hf/{models['mae']}@fps=4", cached=False)
    assert enc.frames == 4 and enc.dim == 32
    sampled = read_frames(models["clip"], 4, 256)  # 8 frames at 0, 0.25 ... 1.75 s
    chosen = [sampled[i] for i in (0, 2, 5, 7)]  # 4 of 8, evenly: linspace(0, 7, 4).round()
    want = _raw(models["mae"], chosen).last_hidden_state.mean(1).numpy()
    X = enc.encode([models["clip"], models["clip"].read_bytes()])
    np.testing.assert_allclose(X[0], want[0], atol=1e-5)
    np.testing.assert_array_equal(X[1], X[0])
    np.testing.assert_allclose(enc.encode([np.stack(sampled)]), X[:1], atol=1e-6)  # frames already decoded
    assert enc.pick(2) == [0, 0, 1, 1]  # a short clip repeats frames
    assert "pool=mean" in enc.identity and "frames=4" in enc.identity


def test_vivit_auto_uses_its_pooler_and_pool_options_choose(models):
    frames = read_frames(models["clip"], 1, 256)  # 0 and 1 s: picked as 0, 0, 1, 1
    out = _raw(models["vivit"], [frames[i] for i in (0, 0, 1, 1)])
    spec = f"video:hf/{models['vivit']}@fps=1"
    np.testing.assert_allclose(get_encoder(spec, cached=False).encode([models["clip"]])[0],
                               out.pooler_output[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(get_encoder(spec + ",pool=cls", cached=False).encode([models["clip"]])[0],
                               out.last_hidden_state[0, 0].numpy(), atol=1e-5)
    assert "pool=pooler" in get_encoder(spec, cached=False).identity


def test_identity_follows_weights_sampling_and_frames_not_device(models, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "mae"
    shutil.copytree(models["mae"], folder)
    spec = f"video:hf/{folder}"
    ident = get_encoder(spec, cached=False).identity
    assert get_encoder(spec + "@device=cpu", cached=False).identity == ident
    others = {get_encoder(spec + tail, cached=False).identity for tail in ("@fps=2", "@layer=-2", "@pool=cls")}
    assert len(others) == 3 and ident not in others
    with pytest.raises(EncoderError, match="frames=2.*forward failed") as e:  # VideoMAE reads exactly 4 frames
        get_encoder(spec + "@frames=2", cached=False).encode([models["clip"]])
    assert "\n" not in str(e.value)
    w = load_file(folder / "model.safetensors")
    k = next(k for k in w if k.endswith("attention.query.weight"))
    w[k] = w[k] + 0.1 * torch.randn_like(w[k])
    save_file(w, folder / "model.safetensors", metadata={"format": "pt"})
    assert get_encoder(spec, cached=False).identity != ident


def test_bad_clips_specs_and_remote_code_are_one_line(models, tmp_path):
    enc = get_encoder(f"video:hf/{models['mae']}", cached=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    empty = make_zero_frame_clip(tmp_path / "empty.avi")
    for path, match in ((bad, "corrupt or unsupported video"), (empty, "no frames")):
        with pytest.raises(DataError, match=match) as e:
            enc.encode([path])
        assert path.name in str(e.value) and "\n" not in str(e.value)
    for tail, match in (("@fps=0", "bad option 'fps=0'"), ("@frames=x", "bad option 'frames=x'"),
                        ("@speed=2", "unknown option 'speed'")):
        with pytest.raises(EncoderError, match=match) as e:
            get_encoder(f"video:hf/{models['mae']}{tail}", cached=False)
        assert "\n" not in str(e.value)
    cfg = json.loads((models["mae"] / "config.json").read_text())
    cfg.pop("num_frames")
    folder = tmp_path / "noframes"
    shutil.copytree(models["mae"], folder)
    (folder / "config.json").write_text(json.dumps(cfg))
    transformers_default = transformers.VideoMAEConfig().num_frames  # the config class fills its default in
    assert get_encoder(f"video:hf/{folder}", cached=False).frames == transformers_default
    custom = tmp_path / "custom"
    custom.mkdir()
    marker = tmp_path / "ran"
    (custom / "config.json").write_text(json.dumps({"model_type": "anybind-tiny-video",
                                                   "auto_map": {"AutoConfig": "c.TinyConfig"}}))
    (custom / "c.py").write_text(f"open({str(marker)!r}, 'w').write('executed')\n")
    with pytest.raises(EncoderError, match="trust_remote_code=true"):
        get_encoder(f"video:hf/{custom}", cached=False)
    assert not marker.exists()


def test_feature_cache_and_fit_end_to_end(models, tmp_path):
    from anybind.data.manifest import load_manifest
    from anybind.space import Space

    rows = []
    for i in range(8):
        make_clip(tmp_path / f"c{i}.mp4", n=6 + 2 * i, rate=4)
        rows.append({"id": f"c{i}", "video": f"c{i}.mp4", "text": f"clip {i}",
                     "split": "val" if i % 4 == 0 else "train"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    man = load_manifest(tmp_path / "m.jsonl", modalities=["video", "text"])
    sp = Space.fit(man, modalities=["video", "text"], cache=tmp_path / "cache", seed=0, progress=False, epochs=2,
                   encoders={"video": f"video:hf/{models['mae']}", "text": "callable:helper_encoders:hashed_text"},
                   recipe="plain")
    back = Space.load(sp.save(tmp_path / "sp"))
    E = back.embed("video", [str(tmp_path / "c1.mp4")], cache=tmp_path / "cache")
    np.testing.assert_allclose(E, sp.embed("video", [str(tmp_path / "c1.mp4")], cache=tmp_path / "cache"), atol=1e-6)

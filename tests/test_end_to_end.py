"""End to end on real data: a slice of the Tux Paint corpus, the real encoders, the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind import FeatureCache, Space, load_manifest
from anybind.cli import app
from anybind.evaluate import evaluate


@pytest.fixture(scope="module")
def tux_slice(tux_dir, tmp_path_factory):
    """~90 stamps (all that have a sound effect, plus others) with paths made absolute."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text().splitlines()]
    with_audio = [r for r in recs if "audio" in r][:40]
    others = [r for r in recs if "audio" not in r][:50]
    out = tmp_path_factory.mktemp("slice") / "manifest.jsonl"
    with open(out, "w") as f:
        for r in with_audio + others:
            keep = {k: v for k, v in r.items() if k in ("id", "split", "text", "image", "audio", "labels")}
            for k in ("image", "audio"):
                if k in keep:
                    keep[k] = str(tux_dir / keep[k])
            # a train-heavy split so the tiny slice still has pairs everywhere
            keep["split"] = "val" if len(keep["id"]) % 7 == 0 else "train"
            f.write(json.dumps(keep) + "\n")
    return out


def test_fit_real_encoders_cache_and_roundtrip(tux_slice, shared_cache, tmp_path):
    man = load_manifest(tux_slice, modalities=["image", "text", "audio"])
    assert not man.bad and len(man.records) == 90
    cache = FeatureCache(shared_cache)
    space = Space.fit(man, modalities=["image", "text", "audio"], cache=cache, epochs=30, progress=False, seed=0)
    res = evaluate(space, man, split="train", cache=cache)
    n = res["text->image/n"]
    assert res["text->image/R@10"] > 3 * 10 / n  # far above chance on what it was trained on
    assert res["audio->text/n"] >= 30
    # a second fit encodes nothing
    Space.fit(man, modalities=["image", "text", "audio"], cache=cache, epochs=2, progress=False)
    assert cache.last_stats.encoded == 0 and cache.last_stats.hits > 0
    # save -> load gives the same embeddings for real files and texts
    space.save(tmp_path / "sp")
    loaded = Space.load(tmp_path / "sp")
    imgs = [r.values["image"] for r in man.records[:5]]
    assert np.array_equal(space.embed("image", imgs, cache=cache), loaded.embed("image", imgs, cache=cache))
    assert np.array_equal(space.embed("text", ["a dog"], cache=cache), loaded.embed("text", ["a dog"], cache=cache))


def test_recipe_bridge_lock_ridge(tux_slice, shared_cache):
    man = load_manifest(tux_slice, modalities=["image", "text"])
    sp = Space.fit(man, modalities=["image", "text"], encoders={"image": "image:efficientnet-lite0+bridge"},
                   lock="text", init="ridge", cache=shared_cache, epochs=5, progress=False)
    assert sp.projectors["text"].cfg.kind == "identity"
    assert sp.dim == 384  # the locked text encoder's width
    # locked: text embeddings are the (centred) text encoder features, whatever training did
    from anybind.encoders.base import get_encoder

    t = get_encoder("text:minilm").encode(["a red apple"])
    e = sp.embed("text", ["a red apple"], cache=shared_cache)
    c = t - sp.projectors["text"].mean.numpy()
    assert np.allclose(e, c / np.linalg.norm(c), atol=1e-5)
    res = evaluate(sp, man, split="train", cache=shared_cache)
    assert res["text->image/R@10"] > 0.5


def test_cli_fit_eval_embed_validate(tux_slice, shared_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "space"
    r = runner.invoke(app, ["fit", str(tux_slice), "--modalities", "image,text", "--out", str(out),
                            "--epochs", "5", "--cache", str(shared_cache)])
    assert r.exit_code == 0, r.output
    assert (out / "space.json").exists() and (out / "projectors.safetensors").exists()
    js = tmp_path / "res.json"
    r = runner.invoke(app, ["eval", str(out), str(tux_slice), "--split", "train", "--json", str(js), "--cache", str(shared_cache)])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert "text->image/R@1" in res and "image->text/MdR" in res
    r = runner.invoke(app, ["embed", str(out), "--modality", "text", "a dog", "a cat", "--cache", str(shared_cache)])
    assert r.exit_code == 0, r.output
    vecs = [json.loads(line) for line in r.stdout.strip().splitlines()]
    # the default recipe locks the text encoder's own space (MiniLM: 384-d) and bridges the images
    assert [v["item"] for v in vecs] == ["a dog", "a cat"] and len(vecs[0]["vector"]) == 384
    meta = json.loads((out / "space.json").read_text())
    assert meta["modalities"]["image"]["encoder"] == "image:efficientnet-lite0+bridge"
    assert meta["info"]["lineage"][-1]["recipe"]["chosen"] == {
        "lock": "text", "init": "ridge", "encoders.image": "image:efficientnet-lite0+bridge",
        "ridge_prior": "bridge", "start_guard": True, "kernel_start": True, "bridge_anchors": 3.0, "base_gate": 0.2, "wise": "auto",
        "lr": 1e-4, "select_se": 1.0, "finetune": False}  # the slice's val holds fewer than VAL_WARN pairs: the standard-error
    # rule, and the training-free start kept (no fine-tuning epoch)
    assert meta["info"]["training"]["epochs_run"] == 1 and meta["info"]["training"]["best_epoch"] == 0
    r = runner.invoke(app, ["validate", str(tux_slice), "--strict"])
    assert r.exit_code == 0, r.output


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"id": "a", "split": "train", "text": ""}\n{"id": "b", "split": "train", "text": "ok"}\n')
    r = runner.invoke(app, ["validate", str(bad), "--strict"])
    assert r.exit_code == 1 and "empty text" in r.output and "'a'" in r.output
    r = runner.invoke(app, ["fit", str(bad), "--out", str(tmp_path / "s"), "--strict"])
    assert r.exit_code == 2 and "empty text" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "nospace"), str(bad)])
    assert r.exit_code == 2 and "not a saved space" in r.output


def test_help_teaches_with_examples():
    runner = CliRunner()
    for cmd in (["fit"], ["eval"], ["embed"], ["bench"], ["demo"], ["validate"], ["corpus", "tuxpaint"]):
        r = runner.invoke(app, [*cmd, "--help"])
        assert r.exit_code == 0 and "Example" in r.output, cmd

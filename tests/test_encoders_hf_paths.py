"""``encoders.registry.absolute_spec`` (issue 17): the relative model paths a user types in ``-e`` specs
(``hf/<folder>``, ``onnx/<file>``, ``tokenizer=<folder>``, OpenCLIP ``local-dir:`` folders and checkpoints, timm
checkpoints, also inside ``frames(...)``, ``concat(...)`` and
``+bridge``) are stored absolute, so a saved space loads from any folder; hub ids, absolute paths and ``vectors:``
files are left alone, and a folder whose name the spec grammar would split is kept as typed, with a warning."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import test_encoders_hf
from encoder_samples import cli_fit, pngs, text_image_manifest

models = test_encoders_hf.models  # the tiny models saved from configs (a module-scoped fixture)


@pytest.mark.parametrize("typed, want", [
    ("text:hf/./m@pool=mean", "text:hf/{w}/m@pool=mean"),
    ("video:frames(image:hf/m@pool=mean)@fps=2,max=4", "video:frames(image:hf/{w}/m@pool=mean)@fps=2,max=4"),
    ("concat(image:onnx/f.onnx@size=32,image:hf/m)+bridge", "concat(image:onnx/{w}/f.onnx@size=32,image:hf/{w}/m)+bridge"),
    ("image:hf/m+bridge", "image:hf/{w}/m+bridge"),
    ("text:onnx/f.onnx@tokenizer=m,pool=mean", "text:onnx/{w}/f.onnx@tokenizer={w}/m,pool=mean"),
    ("image:hf/facebook/dinov2-small@revision=abc", "image:hf/facebook/dinov2-small@revision=abc"),  # a hub id
    ("image:hf//abs/m", "image:hf//abs/m"),
    ("vectors:f.onnx", "vectors:f.onnx"),  # vectors: paths are stored relative to the space (spec_for_folder)
    ("vectors:hf/f.onnx", "vectors:hf/f.onnx"),  # a vectors file in a folder named hf/ or onnx/: not a model
    ("vectors:onnx/f.onnx", "vectors:onnx/f.onnx"),
    ("text:minilm", "text:minilm"),
    # a sentence-transformers folder (text:<name or path>), alone, with options, in an ensemble or a bridge
    ("text:./m@chunk=off", "text:{w}/m@chunk=off"),
    ("text:concat(text:m,text:minilm)", "text:concat(text:{w}/m,text:minilm)"),
    ("image:efficientnet-lite0+bridge(text:m)", "image:efficientnet-lite0+bridge(text:{w}/m)"),
    ("text:f.onnx", "text:f.onnx"),  # not a folder: a sentence-transformers model is one
])
def test_absolute_spec_makes_only_existing_relative_model_paths_absolute(typed, want, tmp_path, monkeypatch):
    from anybind.encoders.registry import absolute_spec

    (tmp_path / "m").mkdir()
    (tmp_path / "f.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert absolute_spec(typed) == want.format(w=tmp_path)


def test_absolute_spec_keeps_the_bundled_text_names_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """``text:minilm`` and ``text:e5-small`` are the bundled models wherever the command runs (the text factory
    routes them before any path): a folder of that name in the working directory does not make them paths."""
    from anybind.encoders.registry import absolute_spec

    for name in ("minilm", "e5-small", "e5-small-query"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    for spec in ("text:minilm", "text:e5-small", "text:e5-small-query", "text:concat(text:minilm,text:e5-small)"):
        assert absolute_spec(spec) == spec


@pytest.mark.parametrize("typed", [
    "image:concat(image:hf/m,image:hf/m@pool=mean)",
    "text:onnx/f.onnx@tokenizer=m,pool=mean",
    "video:frames(image:hf/m)@fps=2",
])
def test_absolute_spec_keeps_a_path_whose_folder_name_the_spec_grammar_would_split(typed, tmp_path, monkeypatch,
                                                                                  caplog):
    """A working directory named with a comma or a parenthesis (``a,b (copy``): its absolute path inside the spec
    would split it (a concat part, an option, a frames group) where the typed relative spec worked, so the path
    is kept as typed, with a warning that the space then loads from this folder only."""
    import logging

    from anybind.encoders.registry import absolute_spec

    work = tmp_path / "a,b (copy"
    (work / "m").mkdir(parents=True)
    (work / "f.onnx").write_bytes(b"")
    monkeypatch.chdir(work)
    monkeypatch.setattr(logging.getLogger("anybind"), "propagate", True)  # a CLI test before may have stopped it
    with caplog.at_level(logging.WARNING, logger="anybind"):
        out = absolute_spec(typed)
    assert out == typed
    assert "this working directory" in caplog.text and typed in caplog.text


@pytest.mark.parametrize("typed, kept", [
    ("text:concat(text:hf/m,text:minilm)", True),  # an ensemble's parts are written without spaces
    ("image:efficientnet-lite0+bridge(text:hf/m)", True),  # so is the bridge's text encoder
    ("image:concat(image:hf/m,image:efficientnet-lite0)+bridge", True),
    ("text:hf/m", False),  # a whole spec (or a frames group) holds a space: made absolute as before
    ("video:frames(image:hf/m)@fps=2", False),
])
def test_absolute_spec_keeps_a_path_with_a_space_inside_a_group_that_refuses_spaces(typed, kept, tmp_path,
                                                                                   monkeypatch, caplog):
    """A working directory with a space (``my models``): inside ``concat(...)`` or ``+bridge(...)``, which refuse
    any space (one encoder, one spelling), its absolute path would turn a spec that builds into one refused
    ("write it without spaces"), so it is kept as typed, with the warning; elsewhere it is made absolute."""
    import logging

    from anybind.encoders.registry import absolute_spec

    work = tmp_path / "my models"
    (work / "m").mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(logging.getLogger("anybind"), "propagate", True)  # a CLI test before may have stopped it
    with caplog.at_level(logging.WARNING, logger="anybind"):
        out = absolute_spec(typed)
    if kept:
        assert out == typed and "this working directory" in caplog.text and typed in caplog.text
    else:
        assert out == typed.replace("hf/m", f"hf/{work}/m")


def test_a_space_fitted_with_relative_model_paths_loads_from_any_folder(models, tmp_path, monkeypatch):
    """``-e text=text:hf/./bert`` (the README's form) names a folder relative to where ``fit`` ran: the saved space
    must still find it from another working directory (it stored the path as typed, so it could not)."""
    from anybind import Space
    from anybind.encoders import registry

    work = tmp_path / "project"
    (work / "models").mkdir(parents=True)
    shutil.copytree(models["bert"], work / "models" / "bert")
    shutil.copytree(models["vit"], work / "models" / "vit")
    man = text_image_manifest(work / "m.jsonl", pngs(work, 12))
    monkeypatch.chdir(work)
    r = cli_fit(man, work / "space", tmp_path / "c", "text=text:hf/./models/bert@pool=mean",
                "image=image:hf/models/vit")
    assert r.exit_code == 0, r.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(registry, "_INSTANCES", {})  # a fresh process would build the encoders anew
    sp = Space.load(work / "space")
    assert sp.embed("text", ["the dog"]).shape == (1, sp.dim)
    assert sp.embed("image", [str(work / "i0.png")]).shape == (1, sp.dim)
    monkeypatch.chdir(work)  # an imported pair from a relative folder too
    from anybind.pairs import from_pretrained_pair

    shutil.copytree(models["clip"], work / "models" / "clip")
    from_pretrained_pair("clip", "models/clip").save(work / "pair")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(registry, "_INSTANCES", {})
    pair = Space.load(work / "pair")
    assert pair.embed("text", ["the dog"]).shape == (1, pair.dim)


def test_a_space_fitted_from_python_with_relative_model_paths_loads_from_any_folder(models, tmp_path, monkeypatch):
    """``Space.fit(encoders={"text": "text:hf/./bert"})`` and ``add_modality(..., "text:hf/bert")`` called from Python
    (not the CLI) store the folder absolute too, so the saved space finds its encoders from another working
    directory (the library stored the relative path as typed: only the CLI's -e made it absolute)."""
    import json as _json

    from anybind import Space
    from anybind.encoders import registry

    work = tmp_path / "project"
    (work / "models").mkdir(parents=True)
    shutil.copytree(models["bert"], work / "models" / "bert")
    shutil.copytree(models["vit"], work / "models" / "vit")
    images = pngs(work, 12)
    man = text_image_manifest(work / "m.jsonl", images)
    rows = [dict(_json.loads(line), title=_json.loads(line)["text"] + " cat") for line in man.read_text().splitlines()]
    man.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    monkeypatch.chdir(work)
    sp = Space.fit(man, ["text", "image"], encoders={"text": "text:hf/./models/bert@pool=mean",
                                                     "image": "image:hf/models/vit"},
                   cache=tmp_path / "c", epochs=2, progress=False, recipe="plain")
    sp = sp.add_modality("title", "text:hf/models/bert", man, cache=tmp_path / "c", epochs=2)
    assert sp.encoders == {"text": f"text:hf/{work}/models/bert@pool=mean", "image": f"image:hf/{work}/models/vit",
                           "title": f"text:hf/{work}/models/bert"}
    sp.save(work / "space")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(registry, "_INSTANCES", {})  # a fresh process would build the encoders anew
    again = Space.load(work / "space")
    for m, item in (("text", "the dog"), ("title", "the dog"), ("image", str(images[0]))):
        np.testing.assert_allclose(again.embed(m, [item]), sp.embed(m, [item]), atol=1e-6)


def test_a_path_kept_as_typed_is_warned_about_once_per_fit(models, tmp_path, monkeypatch):
    """``anybind fit -e`` from a folder whose name the spec grammar would split (``a,b (copy``): the command line
    keeps the relative path with one warning, and ``Space.fit`` (which makes specs absolute too, for Python
    callers) must not say the same line a second time."""
    work = tmp_path / "a,b (copy"
    shutil.copytree(models["bert"], work / "bert")
    man = text_image_manifest(work / "m.jsonl", pngs(work, 12))
    monkeypatch.chdir(work)
    r = cli_fit(man, work / "space", tmp_path / "c", "text=text:hf/./bert@pool=mean",
                "image=image:hf/" + str(models["vit"]))
    assert r.exit_code == 0, r.output
    assert " ".join(r.output.split()).count("this working directory only") == 1, r.output


@pytest.mark.parametrize("typed, want", [
    # an OpenCLIP local-dir: folder (both towers, also inside concat(...), frames(...) and +bridge(...))
    ("image:open_clip/local-dir:m", "image:open_clip/local-dir:{w}/m"),
    ("text:open_clip/local-dir:./m", "text:open_clip/local-dir:{w}/m"),
    ("text:open_clip/local-dir:hf/m", "text:open_clip/local-dir:{w}/hf/m"),  # a folder named hf/: no hf/ model
    ("image:open_clip/local-dir:onnx/m", "image:open_clip/local-dir:{w}/onnx/m"),
    ("text:concat(text:open_clip/local-dir:m,text:minilm)", "text:concat(text:open_clip/local-dir:{w}/m,text:minilm)"),
    ("video:frames(image:open_clip/local-dir:m)@fps=2", "video:frames(image:open_clip/local-dir:{w}/m)@fps=2"),
    ("image:efficientnet-lite0+bridge(text:open_clip/local-dir:m)",
     "image:efficientnet-lite0+bridge(text:open_clip/local-dir:{w}/m)"),
    ("image:open_clip/local-dir:f.pt", "image:open_clip/local-dir:f.pt"),  # a file: local-dir: is a folder
    ("image:open_clip/local-dir:gone", "image:open_clip/local-dir:gone"),  # not here: kept
    ("image:open_clip/local-dir:/abs/m", "image:open_clip/local-dir:/abs/m"),
    # an OpenCLIP checkpoint file after '@' (a path or a checkpoint suffix); a bare word is a pretrained tag
    ("image:open_clip/ViT-B-32@f.pt", "image:open_clip/ViT-B-32@{w}/f.pt"),
    ("text:open_clip/ViT-B-32@./m/w.safetensors", "text:open_clip/ViT-B-32@{w}/m/w.safetensors"),
    ("image:open_clip/ViT-B-32@m", "image:open_clip/ViT-B-32@m"),  # a folder: not a checkpoint file
    ("image:open_clip/ViT-B-32@gone.pt", "image:open_clip/ViT-B-32@gone.pt"),
    ("image:open_clip/ViT-B-32@openai", "image:open_clip/ViT-B-32@openai"),  # a file named like the tag: a tag
    ("text:open_clip/ViT-B-32@openai", "text:open_clip/ViT-B-32@openai"),
    ("image:open_clip/ViT-B-32@laion2b_s34b_b79k", "image:open_clip/ViT-B-32@laion2b_s34b_b79k"),  # its folder
    ("image:open_clip/ViT-B-32", "image:open_clip/ViT-B-32"),
    ("image:open_clip/hf-hub:m", "image:open_clip/hf-hub:m"),  # hub ids, even where a folder of that name exists
    ("text:open_clip/hf-hub:onnx/m", "text:open_clip/hf-hub:onnx/m"),
    ("image:open_clip/hf-hub:timm/m@f.pt", "image:open_clip/hf-hub:timm/m@f.pt"),
    ("text:open_clip/m", "text:open_clip/m"),  # an architecture, even where open_clip/m exists
    # a timm checkpoint (a file or a folder holding model.safetensors); timm's tags live in the model name
    ("image:timm/resnet18@f.pt", "image:timm/resnet18@{w}/f.pt"),
    ("image:timm/resnet18.a1_in1k@./m", "image:timm/resnet18.a1_in1k@{w}/m"),
    ("image:concat(image:timm/resnet18@f.pt,image:hf/m)", "image:concat(image:timm/resnet18@{w}/f.pt,image:hf/{w}/m)"),
    ("image:timm/resnet18@gone.pt", "image:timm/resnet18@gone.pt"),
    ("image:timm/resnet18", "image:timm/resnet18"),
    ("vectors:timm/a@f.pt", "vectors:timm/a@f.pt"),
])
def test_absolute_spec_makes_open_clip_and_timm_model_paths_absolute(typed, want, tmp_path, monkeypatch):
    """``image:open_clip/local-dir:rel``, ``open_clip/<arch>@<rel checkpoint>`` and ``image:timm/<arch>@<rel
    checkpoint>`` were stored as typed, so the saved space loaded only from that working directory; made absolute
    (only where they exist; a ``@tag`` such as ``@openai`` is never a path, even beside a file or folder of that
    name; ``hf-hub:`` ids untouched), and absolute_spec of its own output changes nothing."""
    from anybind.encoders.registry import absolute_spec

    for folder in ("m", "open_clip/m", "hf/m", "onnx/m", "laion2b_s34b_b79k"):
        (tmp_path / folder).mkdir(parents=True)
    for f in ("f.pt", "m/w.safetensors", "openai"):
        (tmp_path / f).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    out = absolute_spec(typed)
    assert out == want.format(w=tmp_path)
    assert absolute_spec(out) == out


def test_the_open_clip_pair_stores_its_model_paths_as_absolute_spec_does(tmp_path, monkeypatch):
    """``--from-pretrained clip=open_clip:...`` makes its towers' relative folder / checkpoint absolute with the
    shared absolute_spec (its own copy resolved links and expanded ``~`` where every other spec keeps them)."""
    from anybind import pairs
    from anybind.encoders.registry import absolute_spec

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "f.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for rest in ("local-dir:link", "ViT-B-32@./f.pt", "ViT-B-32@openai", "hf-hub:org/repo"):
        specs = pairs._open_clip_specs(rest)
        assert specs == {m: absolute_spec(f"{m}:open_clip/{rest}") for m in ("text", "image")}
    assert pairs._open_clip_specs("local-dir:link")["image"] == f"image:open_clip/local-dir:{tmp_path}/link"

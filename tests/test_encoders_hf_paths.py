"""``encoders.registry.absolute_spec`` (issue 17): the relative model paths a user types in ``-e`` specs
(``hf/<folder>``, ``onnx/<file>``, ``tokenizer=<folder>``, also inside ``frames(...)``, ``concat(...)`` and
``+bridge``) are stored absolute, so a saved space loads from any folder; hub ids, absolute paths and ``vectors:``
files are left alone, and a folder whose name the spec grammar would split is kept as typed, with a warning."""
from __future__ import annotations

import pytest


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
])
def test_absolute_spec_makes_only_existing_relative_model_paths_absolute(typed, want, tmp_path, monkeypatch):
    from anybind.encoders.registry import absolute_spec

    (tmp_path / "m").mkdir()
    (tmp_path / "f.onnx").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert absolute_spec(typed) == want.format(w=tmp_path)


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

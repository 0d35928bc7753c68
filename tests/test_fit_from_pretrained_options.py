"""``anybind fit --from-pretrained KIND=SOURCE`` imports the pair as the space and trains nothing: every other fit
option given with it (--method, --epochs, --recipe, --seed, --dim, --stream, --cache, --device, ...) was dropped
without a word.  Each is refused in one line naming it, before the pair is loaded."""

from __future__ import annotations

import typer.main
from typer.testing import CliRunner

from anybind.cli import app

from cli_helpers import given_words

#: what --from-pretrained reads (a manifest and --encoder have their own refusal: "give no manifest")
READ = {"from_pretrained", "out", "overwrite", "manifests", "data", "encoder"}


def test_every_fit_option_given_with_from_pretrained_is_refused_by_name(tmp_path):
    command = typer.main.get_command(app).commands["fit"]
    options = [p for p in command.params if p.name not in READ]
    assert {"method", "epochs", "recipe", "seed", "dim", "stream", "cache", "device"} <= {p.name for p in options}
    for p in options:
        words = given_words(p, tmp_path)
        out = tmp_path / f"sp-{p.name}"
        argv = ["fit", "--from-pretrained", f"clip={tmp_path / 'no-such-model'}", "--out", str(out), *words]
        r = CliRunner().invoke(app, argv, env={"COLUMNS": "250"})
        said = [x for x in r.output.splitlines() if "--from-pretrained" in x and words[0] in x]
        assert r.exit_code == 2 and len(said) == 1 and "does not exist" not in r.output, (p.name, r.output)
        assert not out.exists(), p.name


def test_two_options_are_named_in_one_line(tmp_path):
    argv = ["fit", "--from-pretrained", f"clip={tmp_path / 'm'}", "--out", str(tmp_path / "sp"), "--epochs", "3",
            "--method", "cca"]
    r = CliRunner().invoke(app, argv, env={"COLUMNS": "250"})
    said = [x for x in r.output.splitlines() if "--epochs" in x]
    assert r.exit_code == 2 and len(said) == 1 and "--method" in said[0], r.output

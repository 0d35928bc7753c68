"""`anybind index` and `anybind search` on a small corpus: build, search, add, tune, and --query MODALITY=VALUE in
any bound modality."""

import json

from index_helpers import cli, index_args, saved_world


def test_cli_index_and_search(tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    _, m = saved_world(tmp_path)
    runner = CliRunner()
    res = cli(*index_args(tmp_path, m))
    assert res.exit_code == 0, res.output
    assert "+20 rows" in res.output
    res = runner.invoke(
        app,
        [
            "search",
            str(tmp_path / "ix"),
            "--text",
            "stamp number 3",
            "--image",
            str(tmp_path / "img" / "3.png"),
            "-m",
            "image",
            "-k",
            "3",
            "--json",
            "--cache",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert len(hits) == 3 and {h["modality"] for h in hits} == {"image"} and hits[0]["rank"] == 1
    res = runner.invoke(
        app, ["search", str(tmp_path / "ix"), "--image", str(tmp_path / "img" / "3.png"), "--json"]
    )
    assert res.exit_code == 0 and json.loads(res.output)[0]["id"] == "r3"
    res = runner.invoke(
        app,
        [
            "search",
            str(tmp_path / "ix"),
            "--text",
            "stamp",
            "--label",
            "group=odd",
            "-k",
            "20",
            "--rerank",
            "csls",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert {h["labels"]["group"] for h in json.loads(res.output)} == {"odd"}
    res = runner.invoke(app, ["search", str(tmp_path / "ix"), "--image", str(tmp_path / "nope.png")])
    assert res.exit_code == 2 and "file does not exist" in " ".join(res.output.split())
    res = runner.invoke(app, ["search", str(tmp_path / "ix"), "--text", "x", "-k", "0"])
    assert res.exit_code == 2 and "k must be a positive integer" in res.output
    # rerunning the index command adds nothing
    res = cli(*index_args(tmp_path, m, "--ann-recall", "0.9"))
    assert res.exit_code == 0 and "+0 rows" in res.output
    assert "no ANN index to tune (--ann-recall)" in " ".join(res.output.split())  # 20 rows: no ANN index was built


def test_cli_search_takes_a_query_in_any_bound_modality(tmp_path):
    """--query MODALITY=VALUE: the same hits as the modality's own option, and any bound field works."""
    from typer.testing import CliRunner

    from anybind.cli import app

    _, m = saved_world(tmp_path)
    runner = CliRunner()
    assert cli(*index_args(tmp_path, m)).exit_code == 0

    def hits(*args):
        r = runner.invoke(app, ["search", str(tmp_path / "ix"), "--json", "-k", "4", "--cache", str(tmp_path / "c"),
                                *args])
        assert r.exit_code == 0, r.output
        return [(h["id"], h["modality"]) for h in json.loads(r.output)]

    img = str(tmp_path / "img" / "3.png")
    assert hits("--query", f"image={img}") == hits("--image", img)
    assert hits("--query", "text=stamp number 3") == hits("--text", "stamp number 3")
    fused = hits("--query", f"image={img}", "--query", "text=stamp number 3", "-m", "image")
    assert fused == hits("--image", img, "--text", "stamp number 3", "-m", "image")
    r = runner.invoke(app, ["search", str(tmp_path / "ix"), "--query", "speech=x.wav"])
    assert r.exit_code == 2 and "speech" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["search", str(tmp_path / "ix"), "--query", "no-equals-sign"])
    assert r.exit_code == 2 and "MODALITY=VALUE" in r.output


def test_cli_search_takes_a_speech_query(tmp_path):
    """``anybind search IDX --query speech=clip.wav`` on an index with a speech modality (real espeak-ng clips,
    a tiny envelope encoder): the clip finds its own record, and the text field of the same space still works."""
    import shutil

    import pytest

    from anybind.corpora.speech import speak
    from anybind.index import Index
    from anybind.space import Space

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is missing: `make test` installs it (scripts/bootstrap-debian.sh)")
    words = ["apple", "river", "mountain", "seven", "yellow", "computer"]
    (tmp_path / "wav").mkdir()
    lines = []
    for i, w in enumerate(words):
        speak(w, "en", tmp_path / "wav" / f"{i}.wav")
        lines.append(json.dumps({"id": f"s{i}", "speech": f"wav/{i}.wav", "text": w,
                                 "split": "val" if i % 3 == 2 else "train"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    space = Space.fit(tmp_path / "m.jsonl", modalities=["speech", "text"], cache=tmp_path / "c", epochs=2, dim=8,
                      seed=0, progress=False, encoders={"speech": "callable:helper_encoders:audio_envelope",
                                                       "text": "callable:helper_encoders:hashed_text"})
    Index.build(space, tmp_path / "m.jsonl", tmp_path / "ix", cache=tmp_path / "c")
    for i in (1, 4):
        r = cli("search", tmp_path / "ix", "--query", f"speech={tmp_path / 'wav' / f'{i}.wav'}", "-m", "speech",
                "--json", "-k", "2", "--cache", tmp_path / "c")
        assert r.exit_code == 0, r.output
        hits = json.loads(r.stdout)
        assert hits[0]["id"] == f"s{i}" and hits[0]["modality"] == "speech", hits
    r = cli("search", tmp_path / "ix", "--query", f"speech={tmp_path / 'wav' / 'none.wav'}")
    assert r.exit_code == 2 and "none.wav" in r.output and "Traceback" not in r.output


def _search_table(tmp_path, monkeypatch, width):
    """The hits table of 10 hits with ids as long as Tux Paint's, rendered at ``width`` columns; and the hits."""
    from typer.testing import CliRunner

    from anybind.cli import app
    from anybind.cli._common import console

    # the CLI's console took the shell's COLUMNS when it was imported (then env= is not read): ``width`` whatever it was
    monkeypatch.setattr(console, "_width", width)
    _, m = saved_world(tmp_path)
    long = {f"r{i}": f"animals/mammals/bears/european-bear{i}" for i in range(10)}  # as long as Tux Paint's
    recs = [json.loads(x) for x in m.read_text().splitlines()]
    m.write_text("".join(json.dumps({**r, "id": long[r["id"]]}) + "\n" for r in recs))
    assert cli(*index_args(tmp_path, m)).exit_code == 0
    res = CliRunner().invoke(app, ["search", str(tmp_path / "ix"), "--text", "stamp number 3", "-k", "10",
                                   "--cache", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines() if line[:1] in "┏┃┡│└") <= width, res.output
    hits = json.loads(CliRunner().invoke(app, ["search", str(tmp_path / "ix"), "--text", "stamp number 3", "-k", "10",
                                               "--cache", str(tmp_path / "c"), "--json"]).output)
    assert len(hits) == 10
    return res.output, hits


def test_cli_search_table_keeps_long_ids_whole_at_80_columns(tmp_path, monkeypatch):
    """The hits table without a terminal (80 columns): Tux Paint's ids such as animals/mammals/bears/european-bear
    were folded across two rows ("europea" / "n-bear"); ids and scores now stay whole while they fit, the source
    folds first."""
    out, hits = _search_table(tmp_path, monkeypatch, 80)
    assert all(h["id"] in out for h in hits), out
    assert " 1.0000 " in out and " modality " in out, out  # scores and headers whole too


def test_cli_search_table_folds_ids_it_cannot_keep_whole_never_cuts_them(tmp_path, monkeypatch):
    """At 60 columns the ids cannot be whole: each folds over rows, every character kept (they were cut to
    'animals/mammals/bears/european-bea', the score to '1.00', the source column dropped)."""
    out, hits = _search_table(tmp_path, monkeypatch, 60)
    body = [line.split("│") for line in out.splitlines() if line.startswith("│")]
    assert all(len(cells) == 7 for cells in body), out  # rank, score, modality, id, source: each column shown
    assert "".join(c[4].strip() for c in body) == "".join(h["id"] for h in hits), out
    assert "".join(c[2].strip() for c in body) == "".join(f"{h['score']:.4f}" for h in hits), out

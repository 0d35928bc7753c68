"""Issue 14 item 15 (continued from test_manifest_hardening.py): a fit without a val split, a ``vectors:`` path
written relative to the wrong folder, and the index refusing zero-width queries and unreachable ids.
"""

from __future__ import annotations

import json

import pytest

from anybind.errors import DataError

# -- e, f: a fit without a val split, and vectors: paths -----------------------------------
N = 24
TEXT_ENC = "callable:helper_encoders:hashed_text"


@pytest.fixture()
def vec_project(tmp_path):
    """project/data/{m.jsonl, imu.npz}: every record in train (no val split), text + precomputed vectors."""
    import numpy as np

    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(N)]
    np.savez(data / "imu.npz", ids=np.array(ids), vectors=rng.normal(size=(N, 6)).astype(np.float32))
    (data / "m.jsonl").write_text("".join(
        json.dumps({"id": i, "split": "train", "text": f"item number {i}", "imu": True}) + "\n" for i in ids))
    return tmp_path / "project"


def _fit(manifest, vectors, cache, **kw):
    from anybind.space import Space

    return Space.fit(manifest, encoders={"text": TEXT_ENC, "imu": f"vectors:{vectors}"}, cache=cache,
                     progress=False, dim=8, batch_size=8, seed=0, **kw)


def test_e_no_val_split_trains_every_epoch_and_records_no_val_score(vec_project, tmp_path):
    from anybind.epochs import describe_training

    sp = _fit(vec_project / "data" / "m.jsonl", vec_project / "data" / "imu.npz", tmp_path / "c",
              epochs=6, patience=1)
    tr = sp.info["training"]
    assert tr["best_val"] is None and sp.info["metrics"]["val/score"] is None
    assert [h["val"] for h in tr["history"]] == [None] * 6
    assert tr["epochs_run"] == 6 and tr["best_epoch"] == 6  # no early stopping, the last epoch kept
    assert "no val split" in tr["selection"] and "no val split" in tr["val_metric"]
    assert describe_training(tr) == "no val split: trained for 6 epochs, no early stopping / selection"

    # bind (progressive) shares the rule
    rows = [json.loads(x) for x in (vec_project / "data" / "m.jsonl").read_text().splitlines()]
    bind_m = vec_project / "data" / "bind.jsonl"
    rows = [{"id": r["id"], "split": "train", "text": r["text"], "imu_b": True} for r in rows]
    bind_m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sp2 = sp.add_modality("imu_b", f"vectors:{vec_project / 'data' / 'imu.npz'}", bind_m, ["text"], epochs=3,
                          cache=tmp_path / "c", progress=False)
    tr2 = sp2.info["lineage"][-1]["training"]
    assert tr2["best_val"] is None and tr2["epochs_run"] == 3
    assert [h["val"] for h in tr2["history"]] == [None] * 3


def test_e_streaming_fit_without_val_split_runs_every_epoch(vec_project, tmp_path):
    from anybind.scale.sharded import fit_sharded

    encoders = {"text": TEXT_ENC, "imu": f"vectors:{vec_project / 'data' / 'imu.npz'}"}
    sp = fit_sharded(vec_project / "data" / "m.jsonl", encoders=encoders, cache=tmp_path / "c",
                     progress=False, dim=8, batch_size=8, epochs=4, patience=1)
    tr = sp.info["training"]
    assert tr["best_val"] is None and tr["best_epoch"] == 4
    assert [h["val"] for h in tr["history"]] == [None] * 4


def test_e_cli_fit_says_there_is_no_val_split(vec_project, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from anybind.cli import app

    monkeypatch.chdir(vec_project)
    r = CliRunner().invoke(app, ["fit", "data/m.jsonl", "-e", f"text={TEXT_ENC}",
                                 "-e", "imu=vectors:data/imu.npz", "--epochs", "4", "--dim", "8",
                                 "--cache", str(tmp_path / "c"), "--out", "out/space"])
    assert r.exit_code == 0, r.output
    assert "no val split: trained for 4 epochs, no early stopping / selection" in r.output
    assert "val score" not in r.output and "-0.000" not in r.output


def test_f_vectors_path_outside_the_space_is_stored_absolute(vec_project, tmp_path, monkeypatch):
    import numpy as np

    from anybind.space import Space

    monkeypatch.chdir(vec_project)
    sp = _fit("data/m.jsonl", "data/imu.npz", tmp_path / "c", epochs=2)  # relative to the working directory
    want = sp.embed("imu", ["r3", "r7"], cache=tmp_path / "c")
    sp.save("out/space")
    stored = json.loads((vec_project / "out/space/space.json").read_text())["modalities"]["imu"]["encoder"]
    assert stored == f"vectors:{vec_project / 'data' / 'imu.npz'}"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = Space.load(vec_project / "out" / "space")
    assert np.allclose(loaded.embed("imu", ["r3", "r7"], cache=tmp_path / "c"), want, atol=1e-6)
    assert loaded.identity() == sp.identity()


def test_f_vectors_inside_the_space_are_stored_relative_and_move_with_it(vec_project, tmp_path, monkeypatch):
    import shutil

    import numpy as np

    from anybind.space import Space

    monkeypatch.chdir(vec_project)
    sp = _fit("data/m.jsonl", "data/imu.npz", tmp_path / "c", epochs=2)
    want = sp.embed("imu", ["r1"], cache=tmp_path / "c")
    folder = vec_project / "spaces" / "s"
    sp.save(folder)
    (folder / "feats").mkdir()
    shutil.copy(vec_project / "data" / "imu.npz", folder / "feats" / "imu.npz")
    sp.encoders["imu"] = "vectors:spaces/s/feats/imu.npz"  # working-directory relative, inside the folder
    meta = sp.to_json(folder)
    assert meta["modalities"]["imu"]["encoder"] == "vectors:feats/imu.npz"
    (folder / "space.json").write_text(json.dumps(meta))  # as a save that kept the folder's vectors writes it

    moved = tmp_path / "moved" / "s"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    (vec_project / "data" / "imu.npz").unlink()  # only the copy inside the space is left
    monkeypatch.chdir(tmp_path)
    loaded = Space.load(moved)
    assert loaded.encoders["imu"] == f"vectors:{moved / 'feats' / 'imu.npz'}"
    assert np.allclose(loaded.embed("imu", ["r1"], cache=tmp_path / "c2"), want, atol=1e-6)


def test_f_a_space_saved_with_a_working_directory_path_still_loads_there(vec_project, tmp_path, monkeypatch):
    import numpy as np

    from anybind.space import Space

    monkeypatch.chdir(vec_project)
    sp = _fit("data/m.jsonl", "data/imu.npz", tmp_path / "c", epochs=2)
    sp.save("out/old")
    p = vec_project / "out/old/space.json"
    meta = json.loads(p.read_text())
    mod = meta["modalities"]["imu"]
    mod["encoder"] = "vectors:data/imu.npz"  # what older versions wrote, and their identity spelling
    mod["identity"] = "vectors:data/imu.npz|" + mod["identity"].split("|", 1)[1]
    # older versions wrote format 1, whose identity hashes the per-modality identities and the weights
    from anybind.space_config import space_identity

    meta["format_version"] = 1
    ids = {m: e["identity"] for m, e in meta["modalities"].items()}
    meta["identity"] = space_identity(1, {m: e["encoder"] for m, e in meta["modalities"].items()}, ids, sp.projectors)
    p.write_text(json.dumps(meta))
    loaded = Space.load("out/old")
    c = tmp_path / "c"
    assert np.allclose(loaded.embed("imu", ["r2"], cache=c), sp.embed("imu", ["r2"], cache=c))


def test_d_c_the_index_refuses_zero_width_queries_and_unreachable_ids(vec_project, tmp_path):
    import numpy as np

    from anybind.index import Index, QueryError

    sp = _fit(vec_project / "data" / "m.jsonl", vec_project / "data" / "imu.npz", tmp_path / "c", epochs=1)
    with pytest.raises(DataError, match="empty text"):
        sp.embed("text", ["\u200b"], cache=tmp_path / "c")
    index = Index.build(sp, vec_project / "data" / "m.jsonl", tmp_path / "index", cache=tmp_path / "c")
    with pytest.raises(QueryError, match="empty text query"):
        index.embed_query(text="\u200b\u200c")
    # ids given directly (not from a manifest) follow the same rule
    vec = np.ones((2, sp.dim), np.float32)
    with pytest.raises(DataError, match=r"id 'r1\\n': a control character"):
        index.add_vectors(["ok", "r1\n"], vec, "imu")

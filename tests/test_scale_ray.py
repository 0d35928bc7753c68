"""Scale-out on Ray (anybind.scale): encoding, indexing and training with Ray workers give what one process gives.

The tests share one local Ray (2 CPUs, no dashboard), the fixture ``ray_local``'s, with the Ray tests of the modules
that follow (``test_scale_ray_session.py``, ``test_scale_ray_train.py``: training), every CPU free again at each
module's start; they are few and small because a Ray Data execution costs seconds of actor start-up on a 2-core
machine (one actor where two add nothing to what is checked).  Tolerances: see scale_helpers.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder
from anybind.errors import EncoderError
from anybind.space import Space

# under pytest-xdist the Ray modules run on one worker, one after the other (conftest.py): one local Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

STAMPS = Path("/usr/share/tuxpaint/stamps")


@pytest.fixture(scope="module")
def tux_mini(tmp_path_factory):
    """60 real Tux Paint stamps: English caption + PNG (read straight from the Debian package)."""
    if not STAMPS.is_dir():
        pytest.fail("Debian package tuxpaint-stamps-default is missing: `make test` installs it")
    d = tmp_path_factory.mktemp("tuxmini")
    rows = []
    for txt in sorted(STAMPS.rglob("*.txt")):
        png = txt.with_suffix(".png")
        cap = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip() if txt.stat().st_size else ""
        if png.is_file() and cap:
            rows.append({"id": f"{txt.parent.name}/{txt.stem}", "text": cap, "image": str(png)})
        if len(rows) == 60:
            break
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "manifest.jsonl", rows


def _cache_contents(root: Path, spec: str) -> dict[str, np.ndarray]:
    fc = FeatureCache(root)
    enc = get_encoder(spec)
    idx = fc._load_index(enc.identity)
    return {k: fc._vector(p, r) for k, (p, r) in idx.items()}


def _calls(ctl: Path) -> int:
    log = ctl / "calls.log"
    return sum(int(x) for x in log.read_text().split()) if log.exists() else 0


def test_worker_stages_turn_unreadable_items_into_reported_rows(tux_mini, tmp_path):
    from anybind.scale.encode_ray import decode_batch, key_batch

    _, rows = tux_mini
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    items = np.array([rows[0]["image"], str(bad), str(tmp_path / "gone.png")], dtype=object)
    k = key_batch({"i": np.arange(3), "item": items}, "image:efficientnet-lite0")
    assert k["key"][0].startswith("f:") and k["key"][1].startswith("f:") and k["key"][2] == ""
    assert list(k["error"][:2]) == ["", ""] and "cannot read" in k["error"][2]
    d = decode_batch({"key": k["key"][:2], "item": items[:2]}, "image:efficientnet-lite0")
    assert d["error"][0] == "" and len(d["data"][0]) > 0
    assert "bad.png" in d["error"][1] and "corrupt" in d["error"][1] and d["data"][1] == b""
    # each error's kind travels by name beside its text (a file's name may hold a refusal's words)
    from anybind.data.limits import MediaLimits, using_limits
    from anybind.errors import Reason, render_refused, unusable_file

    assert list(d["kind"]) == ["", "DataError"]
    with using_limits(MediaLimits(max_pixels=10)):
        d = decode_batch({"key": k["key"][:2], "item": items[:2]}, "image:efficientnet-lite0")
    assert list(d["kind"]) == ["LimitRefused", "DataError"]
    assert render_refused(Reason(d["error"][0], d["kind"][0])) and not render_refused(d["error"][0])
    assert unusable_file("image", Reason(d["error"][1], d["kind"][1])).startswith("corrupt file for image: ")


def test_ray_encode_matches_single_process_and_resumes_after_a_worker_failure(ray_local, tux_mini, tmp_path,
                                                                             monkeypatch, capfd):
    """... and Ray's core note on each actor pool (ray#53727, written to descriptor 2) reaches stderr from none of
    its three pools (a failed run's, the CLI's, a two-actor one's)."""
    from anybind.cli import app
    from anybind.scale.encode import encode_items
    from anybind.scale.native_stderr import RAY_ACTOR_RESTART_NOTE

    ctl = ray_local
    manifest, rows = tux_mini
    spec = "callable:scale_encoders:flaky_text"
    runner = CliRunner()
    texts = list(dict.fromkeys(r["text"] for r in rows))  # a few captions repeat: encoded once
    # single process, through the CLI
    res = runner.invoke(app, ["encode", str(manifest), "-e", f"text={spec}", "--cache", str(tmp_path / "local")])
    assert res.exit_code == 0, res.output
    assert f"{len(texts)} encoded" in " ".join(res.output.split())
    # Ray, first run: the encoder fails after 5 batches (of 4): committed shards stay
    (ctl / "calls.log").unlink()
    (ctl / "control.json").write_text(json.dumps({"fail_after": 5, "mode": "raise"}))
    with pytest.raises(EncoderError, match="simulated encoder failure.*rerun to encode the remaining"):
        encode_items(spec, texts, tmp_path / "ray", ray=True, shard_size=8, batch_size=4, concurrency=1, progress=False)
    committed = _cache_contents(tmp_path / "ray", spec)
    assert 0 < len(committed) < len(texts)
    # whole shards only: each committed shard file holds rows 0..n-1 of at most shard_size rows (Ray Data's batches
    # can be smaller than shard_size at block edges, so the total need not be a multiple of 8: 30 was seen under load)
    per_shard: dict = {}
    for p, r in FeatureCache(tmp_path / "ray")._load_index(get_encoder(spec).identity).values():
        per_shard.setdefault(p, []).append(r)
    assert per_shard and all(sorted(rs) == list(range(len(rs))) and len(rs) <= 8 for rs in per_shard.values())
    assert sum(map(len, per_shard.values())) == len(committed)
    # rerun (through the CLI): only what is missing is encoded
    (ctl / "calls.log").unlink()
    res = runner.invoke(app, ["encode", str(manifest), "-e", spec, "-m", "text", "--ray", "--shard-size", "8",
                              "--batch-size", "4", "--concurrency", "1", "--cache", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    assert _calls(ctl) == len(texts) - len(committed)
    assert f"{len(committed)} already cached" in " ".join(res.output.split())
    local, ray_ = _cache_contents(tmp_path / "local", spec), _cache_contents(tmp_path / "ray", spec)
    assert set(local) == set(ray_) and len(local) == len(texts)
    for k in local:
        np.testing.assert_allclose(ray_[k], local[k], atol=1e-6)
    for k, v in committed.items():  # what the failed run committed was not rewritten
        assert np.array_equal(ray_[k], v)
    # files: content keys hashed by the workers, decoding in map tasks, the same vectors
    img = "callable:helper_encoders:image_stats"
    paths = [r["image"] for r in rows]
    FeatureCache(tmp_path / "local").encode(get_encoder(img), paths, progress=False)
    monkeypatch.setattr("anybind.scale.encode_ray.KEY_TASKS_FROM", 0)  # hash the files in Ray tasks, as for big corpora
    rep = encode_items(img, paths + [str(tmp_path / "missing.png")], tmp_path / "ray", ray=True, shard_size=16,
                       concurrency=2, progress=False)  # two actors committing shards side by side
    assert rep.encoded == len(set(paths)) and rep.shards >= 2
    assert len(rep.failed) == 1 and "missing.png" in rep.failed[0][0]
    local, ray_ = _cache_contents(tmp_path / "local", img), _cache_contents(tmp_path / "ray", img)
    assert set(local) == set(ray_)
    for k in local:
        np.testing.assert_allclose(ray_[k], local[k], atol=1e-6)
    # (this was a test of its own, paying an actor pool's start for one more encode of 12 texts)
    assert RAY_ACTOR_RESTART_NOTE not in capfd.readouterr().err


def test_ray_index_has_the_same_rows(ray_local, syn, tmp_path):
    from anybind.index import Index
    from anybind.scale.encode_ray import ray_index_embedder

    space_dir = syn["single"].save(tmp_path / "space")
    space = Space.load(space_dir)
    plain = Index.build(space, syn["manifest"], tmp_path / "plain", cache=syn["cache"], ann=False)
    emb = ray_index_embedder(space_dir, space.identity(), syn["cache"], batch_size=100, concurrency=1)
    distributed = Index.build(space, syn["manifest"], tmp_path / "ray", cache=syn["cache"], ann=False,
                              chunk_size=256, embedder=emb)

    def table(ix):
        t = ix.table.to_arrow().to_pydict()
        order = sorted(range(len(t["id"])), key=lambda i: (t["modality"][i], t["id"][i]))
        return {c: [t[c][i] for i in order] for c in t}

    a, b = table(plain), table(distributed)
    assert len(a["id"]) == 1200
    for c in ("id", "modality", "source", "labels", "label_pairs", "key"):
        assert a[c] == b[c], c
    np.testing.assert_allclose(np.array(a["vector"]), np.array(b["vector"]), atol=1e-6)
    # and it stays incremental: nothing new to embed
    assert distributed.add(syn["manifest"], embedder=emb).total_embedded == 0


def test_a_ray_index_embedding_stopped_early_gives_back_its_actors_and_cpus(ray_local, syn, tmp_path):
    """A caller that stops reading the embedder after its first chunk (an error in its own commit, Ctrl-C, a
    ``break``): the generator is closed, and its placement group goes with it: no group left holding CPUs, every
    CPU of the cluster free again for what runs next."""
    from ray.util import placement_group_table

    from anybind.index import Index
    from anybind.scale import free_cpus
    from anybind.scale.encode_ray import ray_index_embedder

    def live():
        return {k for k, v in placement_group_table().items() if v.get("state") != "REMOVED"}

    space_dir = syn["single"].save(tmp_path / "space")
    emb = ray_index_embedder(space_dir, Space.load(space_dir).identity(), syn["cache"], batch_size=100,
                             concurrency=1)
    before, firsts = live(), []

    def first_chunk_only(modality, items, chunk_size):
        gen = emb(modality, items, chunk_size)
        firsts.append(next(gen))
        gen.close()  # stopped early: the rest is never read
        yield firsts[-1]

    ix = Index.build(Space.load(space_dir), syn["manifest"], tmp_path / "ix", cache=syn["cache"], ann=False,
                     chunk_size=256, embedder=first_chunk_only)
    assert len(firsts) == 2 and all(len(c) == len(X) > 0 for c, X in firsts)
    assert 0 < len(ix.table.to_arrow()) < 1200  # only the first chunks were committed
    assert live() - before == set()
    assert free_cpus(wait=60, at_least=2.0) == 2.0


def _group_of(batch):
    import ray

    pg = ray.util.get_current_placement_group()
    return {"pg": np.array([pg.id.hex() if pg else ""] * len(batch["id"]))}


class _GroupOf:
    def __call__(self, batch):
        return _group_of(batch)


def test_a_pipeline_stage_runs_in_its_reserved_group_without_rays_deprecation(ray_local):
    """Reservation.map_batches places a Ray Data stage's tasks or actors in one of its placement groups by the form
    Ray 2.60 supports (its developer API ``map_batches_internal``, which Ray's own placement-group stages use):
    not the public ``map_batches(scheduling_strategy=)``, deprecated with every ``ray_remote_args`` for removal in
    Ray 2.64 (its warning was filtered out before)."""
    import warnings

    import ray.data
    from ray.util.annotations import RayDeprecationWarning

    from anybind.scale.encode_ray import _compute
    from anybind.scale.reserve import reserve

    res = reserve(lambda free: {"tasks": [{"CPU": 0.5}], "actors": [{"CPU": 0.5}]}, wait=60, what="the test")
    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            ds = ray.data.from_items([{"id": i} for i in range(8)], override_num_blocks=2)
            tasks = res.map_batches(ds, "tasks", _group_of, batch_size=4, num_cpus=0.5)
            actors = res.map_batches(ds, "actors", _GroupOf, batch_size=4, num_cpus=0.5, compute=_compute(1))
            got = {name: {str(p) for b in d.iter_batches(batch_size=None, batch_format="numpy") for p in b["pg"]}
                   for name, d in (("tasks", tasks), ("actors", actors))}
        assert got == {name: {res.pgs[name].id.hex()} for name in ("tasks", "actors")}
        assert not [w for w in said if issubclass(w.category, RayDeprecationWarning)], [str(w.message) for w in said]
    finally:
        res.release()

"""Data and fixture bodies shared by the scale-out tests (``test_scale``: streaming; ``test_scale_ray``: Ray).

Equivalence tolerance (documented in anybind.scale.train): on the synthetic corpus below
(600 records, noisy linear views of an 8-d latent), test R@1 of the in-memory trainer
varies by ~0.09 across seeds (0.28-0.37) and the streaming / Ray trainers land within
~0.03 of it for the same seed; the tests allow 0.10 on every recall.
"""

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from anybind.cache import FeatureCache
from anybind.encoders.base import get_encoder
from anybind.evaluate import evaluate
from anybind.space import Space

TOL = 0.10
FIT = dict(epochs=30, batch_size=64, dim=32, hidden=64, patience=100, seed=0)


# ----------------------------------------------------------------------------- data
def synthetic_corpus(d: Path, n: int = 600, noise: float = 2.5, seed: int = 0):
    """Two 'sensors' seeing the same latent through different noisy linear maps (vectors: encoders)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 8))
    ids = [f"r{i:04d}" for i in range(n)]
    for name, dim in (("a", 24), ("b", 20)):
        X = z @ rng.normal(size=(8, dim)) + noise * rng.normal(size=(n, dim))
        np.savez(d / f"{name}.npz", ids=np.array(ids), vectors=X.astype(np.float32))
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    with open(d / "manifest.jsonl", "w") as f:
        for i, rid in enumerate(ids):
            f.write(json.dumps({"id": rid, "split": splits[i % 10], "a": True, "b": True, "labels": {"k": i % 3}}) + "\n")
    return d / "manifest.jsonl", {"a": f"vectors:{d}/a.npz", "b": f"vectors:{d}/b.npz"}


def recalls(space, manifest, cache):
    r = evaluate(space, manifest, split="test", cache=cache)
    return {k: v for k, v in r.items() if k.endswith(("/R@1", "/R@10"))}


def synthetic_world(tmp_path_factory):
    """The synthetic corpus and its in-memory fit (the session fixture ``syn``, tests/conftest.py)."""
    d = tmp_path_factory.mktemp("syn")
    manifest, encoders = synthetic_corpus(d)
    cache = d / "cache"
    single = Space.fit(manifest, encoders=encoders, cache=cache, progress=False, **FIT)
    return {"dir": d, "manifest": manifest, "encoders": encoders, "cache": cache, "single": single,
            "recalls": recalls(single, manifest, cache)}


# ----------------------------------------------------------------------------- Ray
def within(seconds: float, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, failed when it has not returned after ``seconds``: a library that waits forever
    fails the test instead of hanging it.  In a thread, because pytest-timeout's alarm is not acted on while the
    main thread waits inside Ray Train (``ray.get`` of its controller: seen with the old library, still waiting
    10 minutes past a 180 s timeout); the thread left behind ends with the shared Ray (:class:`SharedRay`)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 -- re-raised in the test's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="within")
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {seconds:g} s: the library waits forever")
    if "error" in box:
        raise box["error"]
    return box["value"]


class SharedRay:
    """One local Ray (2 CPUs, no dashboard) for every run of consecutive tests that ask for ``ray_local``, across
    their modules (tests/test_scale_ray*.py: a start and a shutdown cost seconds each on 2 busy cores); stopped
    (:meth:`stop`, from tests/conftest.py) as soon as the next test does not ask for it, so that a test which starts
    a Ray of its own (test_federated_ray.py, test_federated_cluster.py) never finds this one running.

    A module that takes it over from another gets it as a fresh one would be: every CPU free again (an actor pool
    or a placement group of the last module's gives its CPUs back asynchronously) and an empty control folder."""

    def __init__(self):
        self.ctl: Path | None = None
        self.module: str | None = None
        self.started = False
        self.old_dir: str | None = None

    def use(self, tmp_path_factory, module: str) -> Path:
        """The control folder the test encoders read their orders from (``$ANYBIND_TEST_SCALE_DIR``)."""
        pytest.importorskip("ray")
        from anybind.scale import free_cpus, init_ray

        if self.ctl is None:
            self.ctl = tmp_path_factory.mktemp("scalectl")
            self.old_dir = os.environ.get("ANYBIND_TEST_SCALE_DIR")
            os.environ["ANYBIND_TEST_SCALE_DIR"] = str(self.ctl)  # inherited by the Ray workers started below
            self.started = init_ray(num_cpus=2)
        elif module != self.module:
            for f in self.ctl.iterdir():
                f.unlink()
            assert free_cpus(wait=60, at_least=2.0) == 2.0, "the last module's Ray work still holds CPUs"
        self.module = module
        return self.ctl

    def stop(self) -> None:
        if self.ctl is None:
            return
        if self.started:
            from anybind.scale import shutdown_ray

            shutdown_ray()  # and what Ray set in os.environ (RAY_AUTH_MODE=token) put back
        if self.old_dir is None:
            os.environ.pop("ANYBIND_TEST_SCALE_DIR", None)
        else:
            os.environ["ANYBIND_TEST_SCALE_DIR"] = self.old_dir
        self.__init__()


#: the one :class:`SharedRay` of the test session
SHARED_RAY = SharedRay()


# ----------------------------------------------------------------------------- pool=attn video (issue 17)
CLIP_FRAMES = 4


def clip_world(tmp_path_factory):
    """300 real H.264 clips where one frame of each matters (video_helpers.one_frame_corpus), frames encoded by
    ``rgb_stats``, pooled by an attention learnt with the projector; the in-memory fit of them."""
    pytest.importorskip("av")
    from video_helpers import one_frame_corpus

    d = tmp_path_factory.mktemp("clips")
    manifest, encoders = one_frame_corpus(d, n=300, frames=CLIP_FRAMES)
    encoders["video"] = f"video:frames(callable:video_helpers:rgb_stats)@fps=4,max={CLIP_FRAMES},pool=attn"
    cache = d / "cache"
    single = Space.fit(manifest, encoders=encoders, cache=cache, progress=False, **FIT)
    assert single.projectors["video"].cfg.frames == CLIP_FRAMES
    return {"dir": d, "manifest": manifest, "encoders": encoders, "cache": cache, "single": single,
            "recalls": recalls(single, manifest, cache)}


def attends_to_the_signal_frame(space, clips) -> float:
    """On the test clips: the share whose largest attention weight is on the two-coloured frame."""
    import torch

    recs = [json.loads(line) for line in clips["manifest"].read_text().splitlines()]
    paths = [str(clips["dir"] / r["video"]) for r in recs if r["split"] == "test"]
    X = FeatureCache(clips["cache"]).encode(get_encoder(clips["encoders"]["video"]), paths, progress=False)
    assert X.shape == (60, CLIP_FRAMES * 7)
    with torch.no_grad():
        w = space.projectors["video"].eval().attention(torch.from_numpy(X)).numpy()
    spread = X.reshape(len(X), CLIP_FRAMES, 7)[:, :, 3:6].mean(-1)  # rgb_stats' spread: the two-coloured frame
    return float(np.mean(np.argmax(w, 1) == np.argmax(spread, 1)))

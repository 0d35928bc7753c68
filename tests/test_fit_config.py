"""Space.fit(config=TrainConfig(...)): the options as one object, the same space as the keywords."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anybind.space import Space
from anybind.train import TrainConfig

TEXT = "callable:helper_encoders:hashed_text"


@pytest.fixture()
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"r{i}" for i in range(40)]
    np.savez(tmp_path / "imu.npz", ids=np.array(ids), vectors=rng.normal(size=(40, 6)).astype(np.float32))
    rows = [{"id": i, "split": "val" if k % 5 == 0 else "train", "text": f"item number {i}", "imu": True}
            for k, i in enumerate(ids)]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "m.jsonl"


def _fit(manifest, tmp_path, **kw):
    enc = {"text": TEXT, "imu": f"vectors:{tmp_path / 'imu.npz'}"}
    return Space.fit(manifest, encoders=enc, cache=tmp_path / "c", progress=False, **kw)


def _weights(space):
    return {k: v.detach().numpy().copy() for m in space.modalities for k, v in
            space.projectors[m].state_dict().items()}


def test_a_config_object_fits_the_space_its_keywords_fit(manifest, tmp_path):
    cfg = TrainConfig(dim=8, epochs=3, batch_size=8, projector="linear", seed=3)
    a = _fit(manifest, tmp_path, config=cfg)
    b = _fit(manifest, tmp_path, dim=8, epochs=3, batch_size=8, projector="linear", seed=3)
    assert a.identity() == b.identity()
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert a.config["projector"] == "linear" and a.config["seed"] == 3


def test_keywords_override_the_config_object_and_the_recipe_fills_what_it_leaves(manifest, tmp_path):
    sp = _fit(manifest, tmp_path, config=TrainConfig(epochs=3, batch_size=8, seed=1), seed=2)
    assert sp.config["seed"] == 2 and sp.config["epochs"] == 3
    assert sp.config["lock"] == "text"  # left at its default in the object: the recipe's choice, as for keywords


def test_a_config_for_another_method_or_of_another_type_is_refused(manifest, tmp_path):
    with pytest.raises(ValueError, match="method='procrustes'"):
        _fit(manifest, tmp_path, config=TrainConfig(epochs=3), method="procrustes")
    with pytest.raises(TypeError, match="config must be"):
        _fit(manifest, tmp_path, config=3)
    sp = _fit(manifest, tmp_path, method="procrustes", config={"dim": 4})  # a mapping works for any method
    assert sp.dim == 4

"""ZeroShotClassifier.evaluate keys each scored file once: its overlap check with the balancing set and the encoding
that follows share the keys (data.files.file_keys_remembered)."""

import numpy as np
from PIL import Image

from anybind import Space
from anybind.projectors import Projector, ProjectorConfig
from anybind.zeroshot import ZeroShotClassifier


def test_evaluate_reads_each_scored_file_once_for_its_key(tmp_path, key_reads):
    from anybind.data.manifest import Record

    rng = np.random.default_rng(0)
    recs = []
    for i in range(60):
        colour = (200, 30, 30) if i % 2 else (30, 30, 200)
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.clip(rng.normal(colour, 20, (8, 8, 3)), 0, 255).astype(np.uint8)).save(p)
        recs.append(Record(id=str(i), split="test", values={"image": str(p)}, labels={"kind": "red" if i % 2 else "blue"}))
    torch_seed = __import__("torch").manual_seed(0)  # noqa: F841 - the projectors' random start
    proj = {"text": Projector(ProjectorConfig(in_dim=8, out_dim=16, kind="linear", standardize=False)),
            "image": Projector(ProjectorConfig(in_dim=7, out_dim=16, kind="linear", standardize=False))}
    space = Space({"text": "callable:helper_encoders:hashed_text", "image": "callable:helper_encoders:image_stats"},
                  proj)
    cache = tmp_path / "cache"
    clf = ZeroShotClassifier(space, ["red", "blue"], modality="image").calibrate(recs[:40], cache=cache)
    key_reads.clear()  # what calibrating read is not counted
    assert clf.evaluate(recs[40:], "kind", cache=cache)["n"] == 20
    assert key_reads == {r.values["image"]: 1 for r in recs[40:]}, key_reads  # the check and the encoding: one read each

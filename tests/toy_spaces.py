"""A text-aligned toy space over given 'photo' vectors (identity projectors, text:minilm), shared by the zero-shot
tests: the vectors are stored as a ``vectors:`` encoder keyed by record id, the records as a manifest."""

import json

import numpy as np

from anybind import Space, load_manifest
from anybind.projectors import Projector, ProjectorConfig


def photo_space(tmp_path, ids, vecs, lines):
    """``(space, manifest)``: ``vecs[i]`` is record ``ids[i]``'s photo; ``lines`` the manifest's records."""
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    d = len(vecs[0])
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False))
             for m in ("text", "photo")}
    space = Space({"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"}, ident)
    return space, load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})

"""The search index on real data: Tux Paint stamps, EfficientNet-Lite0 + MiniLM, a training-free space."""

import json

import pytest

from anybind.index import Index, QueryError
from anybind.space import Space



@pytest.mark.slow
def test_real_tuxpaint_index_with_real_encoders(tux_dir, shared_cache, tmp_path):
    """Tux Paint stamps, EfficientNet-Lite0 + MiniLM, a training-free (Procrustes) space fitted on 32 of them."""
    from anybind.data.manifest import load_manifest

    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text"])
    recs = [r for r in man.records if r.has("image") and r.has("text")][:40]
    sub = tmp_path / "sub.jsonl"
    with open(sub, "w") as f:
        for i, r in enumerate(recs):
            split = "train" if i < 32 else ("val" if i < 36 else "test")
            f.write(
                json.dumps(
                    {
                        "id": r.id,
                        "split": split,
                        "image": r.values["image"],
                        "text": r.values["text"],
                        "labels": r.labels,
                    }
                )
                + "\n"
            )
    space = Space.fit(
        sub, modalities=["image", "text"], method="procrustes", cache=shared_cache, progress=False
    )
    index = Index.build(space, sub, tmp_path / "ix", cache=shared_cache)
    assert index.counts() == {"image": 40, "text": 40}
    r0 = recs[0]
    assert index.search(image=r0.values["image"], modality="image", k=1, cache=shared_cache)[0].id == r0.id
    # text -> image on the 32 training pairs: the right stamp is found far above chance (10/40 at k=10)
    found = sum(
        r.id
        in {h.id for h in index.search(text=r.values["text"], modality="image", k=10, cache=shared_cache)}
        for r in recs[:32]
    )
    assert found >= 24
    cat = next(iter(r0.labels.items())) if r0.labels else None
    if cat:
        hits = index.search(text=r0.values["text"], k=5, labels={cat[0]: cat[1]}, cache=shared_cache)
        assert hits and all(h.labels[cat[0]] == cat[1] for h in hits)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(QueryError, match="cannot use image query"):
        index.search(image=bad, cache=shared_cache)

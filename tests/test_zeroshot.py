"""Zero-shot classification through class-name prompts, on a space whose geometry is known."""

import json

import numpy as np
import torch

from anybind import Space, load_manifest
from anybind.encoders.base import get_encoder
from anybind.evaluate import evaluate, zero_shot
from anybind.projectors import Projector, ProjectorConfig

CLASSES = ["dog", "bicycle", "violin", "mountain", "teapot"]


def test_zero_shot_recovers_classes_in_a_text_aligned_space(tmp_path):
    """'photos' whose features are the text encoder's embeddings of their class (plus noise) must be
    classified by prompts; a shuffled space must not."""
    txt = get_encoder("text:minilm")
    E = txt.encode([f"a {c}." for c in CLASSES])
    rng = np.random.default_rng(0)
    ids, vecs, lines = [], [], []
    for i in range(60):
        c = i % len(CLASSES)
        ids.append(f"p{i}")
        vecs.append(E[c] + 0.02 * rng.normal(size=E.shape[1]))
        lines.append({"id": f"p{i}", "split": "test", "photo": True, "labels": {"kind": f"things/{CLASSES[c]}"}})
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    d = E.shape[1]

    def identity():
        return Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False))

    space = Space({"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"},
                  {"text": identity(), "photo": identity()})
    man = load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})
    zs = zero_shot(space, man.records, "photo", "kind", templates=("a {}.", "a photo of a {}."), cache=tmp_path / "c")
    assert zs["accuracy"] == 1.0 and zs["classes"] == 5 and zs["n"] == 60
    assert zs["labels"] == sorted(f"things/{c}" for c in CLASSES)
    assert np.trace(np.array(zs["confusion"])) == 60
    flat = evaluate(space, tmp_path / "m.jsonl", split="test", zero_shot_label="kind", zero_shot_modalities=["photo"], cache=tmp_path / "c")
    assert flat["zeroshot/photo/kind/accuracy"] == 1.0 and flat["zeroshot/photo/kind/chance"] == 0.2

    # a rotated photo projector breaks the alignment: accuracy falls to chance level
    rot = identity()
    rot.cfg = ProjectorConfig(in_dim=d, out_dim=d, kind="linear", standardize=False, dropout=0, input_dropout=0)
    rot = Projector(rot.cfg)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    with torch.no_grad():
        rot.linear.weight.copy_(torch.from_numpy(q.astype(np.float32)))
        rot.linear.bias.zero_()
    bad = Space(space.encoders, {"text": identity(), "photo": rot})
    assert zero_shot(bad, man.records, "photo", "kind", cache=tmp_path / "c")["accuracy"] < 0.5


def test_centring_removes_a_shared_offset_that_makes_one_prompt_a_hub(tmp_path):
    """Items from another domain share an offset towards one class prompt: every item is then called
    that class; centring on the items' own mean (no labels used) recovers the classes."""
    txt = get_encoder("text:minilm")
    E = txt.encode([f"a {c}." for c in CLASSES])
    rng = np.random.default_rng(1)
    ids, vecs, lines = [], [], []
    for i in range(50):
        c = i % len(CLASSES)
        ids.append(f"p{i}")
        # class signal + a strong shared pull towards "mountain" + noise
        vecs.append(0.3 * E[c] + 1.0 * E[3] + 0.01 * rng.normal(size=E.shape[1]))
        lines.append({"id": f"p{i}", "split": "test", "photo": True, "labels": {"kind": CLASSES[c]}})
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    d = E.shape[1]
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "photo")}
    space = Space({"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"}, ident)
    man = load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})
    plain = zero_shot(space, man.records, "photo", "kind", cache=tmp_path / "c")
    centred = zero_shot(space, man.records, "photo", "kind", cache=tmp_path / "c", center=True)
    hub = np.array(plain["confusion"]).sum(0)
    assert hub[plain["labels"].index("mountain")] == 50 and plain["accuracy"] == 0.2
    assert centred["accuracy"] >= 0.9


def test_a_symile_space_classifies_with_the_multilinear_inner_product(tmp_path):
    """In a Symile space an image-text score is MIP(image, text, missing_sound): photos stored as
    their class embedding times the sound modality's missing embedding (a sign pattern) are
    scrambled for the cosine, and classified exactly once the missing embedding is multiplied in."""
    txt = get_encoder("text:minilm")
    E = txt.encode([f"a {c}." for c in CLASSES])
    d = E.shape[1]
    rng = np.random.default_rng(2)
    w = np.where(rng.random(d) < 0.5, -1.0, 1.0) / np.sqrt(d)
    ids, vecs, lines = [], [], []
    for i in range(40):
        c = i % len(CLASSES)
        ids.append(f"p{i}")
        vecs.append(E[c] * np.sign(w) + 0.01 * rng.normal(size=d))
        lines.append({"id": f"p{i}", "split": "test", "photo": True, "labels": {"kind": CLASSES[c]}})
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "photo")}
    encs = {"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"}
    man = load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})
    cosine = zero_shot(Space(encs, ident), man.records, "photo", "kind", cache=tmp_path / "c")
    symile = Space(encs, ident, info={"missing_embeddings": {"sound": w.tolist(), "photo": w.tolist(), "text": w.tolist()}})
    mip = zero_shot(symile, man.records, "photo", "kind", cache=tmp_path / "c")
    assert cosine["accuracy"] < 0.6
    assert mip["accuracy"] == 1.0

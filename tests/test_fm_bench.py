"""The fashion-mnist-zeroshot bench task (issue 16): its rows, its prompt sets, its per-class diagnosis."""

import json

import numpy as np
import pytest

from anybind import Space, load_manifest
from anybind.bench.tasks_corpora import (
    FM_NAMES,
    FM_NAMES_TRAIN,
    FM_SYSTEMS,
    FM_TEMPLATES,
    FM_TEMPLATES_TRAIN,
    fashion_mnist_zeroshot,
    per_class_recall,
)
from anybind.data.templates import check_templates, fill_template
from anybind.encoders.base import get_encoder
from anybind.errors import AnybindError
from anybind.evaluate import zero_shot
from anybind.projectors import Projector, ProjectorConfig

CLASSES = ["dog", "bicycle", "violin", "mountain", "teapot"]


def test_unknown_systems_are_refused_before_any_work(tmp_path):
    with pytest.raises(AnybindError, match="bogus") as e:
        fashion_mnist_zeroshot(tmp_path, systems="defaults,bogus")
    assert "\n" not in str(e.value) and all(k in str(e.value) for k in FM_SYSTEMS)
    assert list(tmp_path.iterdir()) == []  # no corpus built, nothing encoded
    with pytest.raises(AnybindError, match="none given"):
        fashion_mnist_zeroshot(tmp_path, systems=" , ")


def test_train_prompts_are_valid_templates_naming_every_class():
    assert check_templates(FM_TEMPLATES_TRAIN) == list(FM_TEMPLATES_TRAIN)
    assert tuple(FM_TEMPLATES_TRAIN) != tuple(FM_TEMPLATES)
    assert list(FM_NAMES_TRAIN) == list(FM_NAMES)  # the same classes, in the same order
    prompts = {fill_template(t, FM_NAMES_TRAIN[c]) for t in FM_TEMPLATES_TRAIN for c in FM_NAMES}
    assert len(prompts) == len(FM_TEMPLATES_TRAIN) * len(FM_NAMES)  # every class named in every template, all distinct


def test_per_class_recall_shows_which_classes_collapse_onto_a_hub(tmp_path):
    """Items share a strong pull towards 'mountain' (the hub): every item is called mountain; the per-class
    recall says so (1 for the hub, 0 elsewhere) and its class-weighted mean is the accuracy."""
    txt = get_encoder("text:minilm")
    E = txt.encode([f"a {c}." for c in CLASSES])
    rng = np.random.default_rng(1)
    ids, vecs, lines = [], [], []
    for i in range(50):
        c = i % len(CLASSES) if i < 40 else 3  # 18 mountains, 8 of each other class
        ids.append(f"p{i}")
        vecs.append(0.3 * E[c] + 1.0 * E[3] + 0.01 * rng.normal(size=E.shape[1]))
        lines.append({"id": f"p{i}", "split": "test", "photo": True, "labels": {"kind": CLASSES[c]}})
    np.savez(tmp_path / "photo.npz", ids=np.array(ids), vectors=np.array(vecs, dtype=np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    d = E.shape[1]
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "photo")}
    space = Space({"text": "text:minilm", "photo": f"vectors:{tmp_path / 'photo.npz'}"}, ident)
    man = load_manifest(tmp_path / "m.jsonl", kinds={"photo": "key"})
    zs = zero_shot(space, man.records, "photo", "kind", cache=tmp_path / "c")
    rec = per_class_recall(zs)
    assert rec == {c: (1.0 if c == "mountain" else 0.0) for c in sorted(CLASSES)}
    counts = np.asarray(zs["confusion"]).sum(1)
    assert np.isclose(sum(rec[c] * n for c, n in zip(zs["labels"], counts)) / counts.sum(), zs["accuracy"])
    centred = per_class_recall(zero_shot(space, man.records, "photo", "kind", cache=tmp_path / "c", center=True))
    assert sum(v > 0.5 for v in centred.values()) >= 4  # centring lifts the collapsed classes


@pytest.mark.parametrize("train_prompts", [False, True])
def test_transfer_fm_cells_score_with_the_prompts_they_name(tmp_path, train_prompts):
    """Items that sit exactly on one prompt set's class embeddings are all classified right by that set
    (the transfer bench's ``fm`` and ``fm tp`` cells read different prompts)."""
    from anybind.bench.tasks_transfer import fm_hits
    from anybind.evaluate import class_embeddings

    names, templates = (FM_NAMES_TRAIN, FM_TEMPLATES_TRAIN) if train_prompts else (FM_NAMES, FM_TEMPLATES)
    d = get_encoder("text:minilm").dim
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "image")}
    probe = Space({"text": "text:minilm", "image": "text:minilm"}, ident)
    E = class_embeddings(probe, [names[c] for c in FM_NAMES], templates, cache=tmp_path / "c")
    classes = list(FM_NAMES)
    ids = [f"i{k}" for k in range(20)]
    np.savez(tmp_path / "img.npz", ids=np.array(ids), vectors=np.stack([E[k % 10] for k in range(20)]).astype(np.float32))
    lines = [{"id": i, "split": "test", "image": True, "labels": {"class": classes[k % 10]}} for k, i in enumerate(ids)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    space = Space({"text": "text:minilm", "image": f"vectors:{tmp_path / 'img.npz'}"}, ident)
    recs = load_manifest(tmp_path / "m.jsonl", kinds={"image": "key"}).records
    hits = fm_hits(space, recs, tmp_path / "c", train_prompts=train_prompts)
    assert len(hits) == 20 and hits.mean() == 1.0
    assert fm_hits(space, recs, tmp_path / "c", train_prompts=not train_prompts).mean() < 1.0  # the other set differs


def test_unknown_prompts_option_is_refused_before_any_work(tmp_path):
    from anybind.bench.tasks_transfer import transfer

    with pytest.raises(AnybindError, match="prompts='bogus'"):
        fashion_mnist_zeroshot(tmp_path, systems="defaults", prompts="bogus")
    with pytest.raises(AnybindError, match="prompts='bogus'"):
        transfer(tmp_path, corpora="tuxpaint", systems="defaults", prompts="bogus")
    assert list(tmp_path.iterdir()) == []


def test_transfer_fm_chosen_cells_read_the_spaces_own_templates(tmp_path):
    """The ``fm chosen`` cells score with the templates stored with the space (FM_NAMES as class names): the same
    count as zero-shot given those templates explicitly, for two different stored sets."""
    from anybind.bench.tasks_transfer import fm_hits
    from anybind.evaluate import class_embeddings

    d = get_encoder("text:minilm").dim
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "image")}
    probe = Space({"text": "text:minilm", "image": "text:minilm"}, ident)
    E = class_embeddings(probe, [FM_NAMES[c] for c in FM_NAMES], FM_TEMPLATES_TRAIN, cache=tmp_path / "c")
    classes, ids = list(FM_NAMES), [f"i{k}" for k in range(100)]
    rng = np.random.default_rng(0)
    X = np.stack([E[k % 10] + 0.07 * rng.normal(size=d) for k in range(100)]).astype(np.float32)
    np.savez(tmp_path / "img.npz", ids=np.array(ids), vectors=X)
    lines = [{"id": i, "split": "test", "image": True, "labels": {"class": classes[k % 10]}} for k, i in enumerate(ids)]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    space = Space({"text": "text:minilm", "image": f"vectors:{tmp_path / 'img.npz'}"}, ident)
    recs = load_manifest(tmp_path / "m.jsonl", kinds={"image": "key"}).records
    got = {}
    for tpl in (FM_TEMPLATES_TRAIN, ["zebra zebra zebra zebra zebra {}"]):
        space.set_templates(tpl)
        got[tpl[0]] = fm_hits(space, recs, tmp_path / "c", own=True).sum()
        want = zero_shot(space, recs, "image", "class", classes=classes, names=lambda c: FM_NAMES[c], templates=tpl,
                         cache=tmp_path / "c")
        assert got[tpl[0]] == np.trace(np.asarray(want["confusion"]))
    assert len(set(got.values())) == 2  # the stored set decides the cell

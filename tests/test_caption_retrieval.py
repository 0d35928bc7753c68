"""Retrieval-augmented captioning (anybind.caption.retrieval, after SmallCap): the k nearest memory captions in the
frozen LM's prompt.  The tiny LM and the shapes corpus of tests/caption_fixtures.py (its fixture)."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from caption_fixtures import FIT

from anybind.caption import Captioner, fit_captioner_by_k
from anybind.caption import fit as fit_mod
from anybind.caption.fit import caption_loss
from anybind.caption.retrieval import PROMPT, caption_key, neighbours, self_rows
from anybind.errors import CaptionError

RET_FIT = {**FIT, "epochs": 20, "patience": 20, "noise_grid": (0.1,), "retrieval_k": (0, 2)}


@pytest.fixture(scope="module")
def by_k(corpus):
    tmp, man, space, lm, _ = corpus
    return fit_captioner_by_k(space, man, lm, cache=tmp / "c", **RET_FIT)


def _test_sketches(corpus):
    tmp, man, space, lm, recs = corpus
    test = [r for r in recs if r["split"] == "test"]
    return space.embed("sketch", [r["id"] for r in test], cache=tmp / "c")


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 15), st.integers(2, 5), st.integers(1, 3), st.integers(0, 10_000))
def test_neighbours_are_the_nearest_rows_and_never_the_excluded_one(m, d, k, seed):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(m, d)).astype(np.float32)
    M[1] = M[0]  # a tie: broken by the lower row
    Q = rng.normal(size=(7, d)).astype(np.float32)
    ex = rng.integers(-1, m, size=7)
    got = neighbours(Q, M, k, ex, chunk=3)
    for q, row, e in zip(Q, got, ex):
        order = [j for j in sorted(range(m), key=lambda j: (-float(q @ M[j]), j)) if j != e]
        assert e not in row and len(set(row)) == k
        # the k best scores, most similar first (compared by score: float sums may order near-ties differently)
        np.testing.assert_allclose(q @ M[row].T, q @ M[order[:k]].T, rtol=1e-5, atol=1e-6)
        if 0 in row and 1 in row:  # an exact tie: the lower row first
            assert list(row).index(0) < list(row).index(1)
    assert (neighbours(Q, M, k) == neighbours(Q, M, k, np.full(7, -1))).all()


def test_training_prompts_hold_other_captions_never_the_caption_itself(corpus, monkeypatch):
    """In training each caption's prompt holds k OTHER captions (its exact duplicate is excluded), retrieved from its
    noised embedding; without the exclusion the nearest caption would be the caption itself."""
    import torch

    tmp, man, space, lm, recs = corpus
    seen = []
    real = fit_mod.caption_loss

    def spy(lm_, prefix, seqs, reduction="mean", prompts=None):
        if torch.is_grad_enabled():  # a training step (val passes run under no_grad)
            seen.append((seqs, prompts))
        return real(lm_, prefix, seqs, reduction, prompts)

    monkeypatch.setattr(fit_mod, "caption_loss", spy)
    cap, _ = fit_captioner_by_k(space, man, lm, cache=tmp / "c", **{**RET_FIT, "epochs": 2, "retrieval_k": 2})
    assert cap.retrieval_k == 2 and seen
    nl = lm.tokenizer.convert_tokens_to_ids("\n")
    mem_ids = {tuple(lm.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in cap.memory_captions}
    n = 0
    for seqs, prompts in seen:
        assert prompts is not None and len(prompts) == len(seqs)
        for seq, p in zip(seqs, prompts):
            lines, cur = [], []
            for t in p:
                if t == nl:
                    lines.append(tuple(cur))
                    cur = []
                else:
                    cur.append(t)
            shown = lines[1:-1]  # the template's first and last lines around the k captions
            assert len(shown) == 2 and len(set(shown)) == 2 and set(shown) <= mem_ids
            assert tuple(seq[:-1]) not in shown  # never the caption itself (seq ends with the end-of-text token)
            n += 1
    assert n == 2 * len([r for r in recs if r["split"] == "train"])  # every training caption, each epoch
    # the exclusion matters: un-noised, a training caption's nearest memory caption is itself
    train = [r["text"] for r in recs if r["split"] == "train"]
    X = space.embed("text", train, cache=tmp / "c")
    own = self_rows(train, cap.memory_captions)
    assert (own >= 0).all() and np.mean(neighbours(X, cap.memory, 1)[:, 0] == own) > 0.5
    assert not (neighbours(X, cap.memory, 2, own) == own[:, None]).any()


def test_k_chosen_on_val_and_every_k_kept(by_k):
    chosen, caps = by_k
    assert set(caps) == {0, 2} and all(c.retrieval_k == k for k, c in caps.items())
    nll = chosen.info["retrieval_val_nll"]
    assert set(nll) == {"0", "2"} and chosen.retrieval_k == min((0, 2), key=lambda k: (nll[str(k)], k))
    assert set(chosen.info["training_free_val_nll"]) == {"2"} and chosen.info["retrieval_selected_at_k"] == 0
    assert caps[0].mapper is not caps[2].mapper
    assert [caption_key(c) for c in chosen.memory_captions] == list(dict.fromkeys(caption_key(c) for c in chosen.memory_captions))


def test_retrieval_is_used_in_decoding(corpus, by_k):
    """Captions depend on the retrieved captions: the same mapper with its memory's captions shuffled (the
    embeddings unchanged) decodes other captions, with and without the prefix."""
    tmp, man, space, lm, recs = corpus
    cap = by_k[1][2]
    X = _test_sketches(corpus)
    perm = np.random.default_rng(0).permutation(len(cap.memory_captions))
    shuffled = Captioner(space, lm, cap.mapper, memory=cap.memory, memory_captions=[cap.memory_captions[i] for i in perm],
                         projection=cap.projection, memory_temperature=cap.memory_temperature, retrieval_k=2)
    for kw in ({}, {"prefix": False, "projection": "none"}):
        a, b = cap.decode(X, max_tokens=8, **kw), shuffled.decode(X, max_tokens=8, **kw)
        assert np.mean([x != y for x, y in zip(a, b)]) > 0.2, (kw, a[:4], b[:4])
    # and in the likelihood: the same captions score differently with and without their prompts
    seqs = [lm.tokenizer(r["text"], add_special_tokens=False)["input_ids"] + [lm.eos_id] for r in recs[:4]]
    def prompts(captions):
        return [lm.tokenizer(PROMPT.format(captions=captions), add_special_tokens=False)["input_ids"]] * len(seqs)

    a = float(caption_loss(lm, None, seqs, prompts=prompts("One red star.\nTwo blue circles.")))
    b = float(caption_loss(lm, None, seqs, prompts=prompts("Two green squares.\nOne yellow circle.")))
    assert np.isfinite(a) and a != pytest.approx(b)
    with pytest.raises(CaptionError, match="give retrieval_k > 0"):
        cap.decode(X, prefix=False, retrieval_k=0)


def test_decode_is_deterministic(corpus, by_k):
    cap = by_k[1][2]
    X = _test_sketches(corpus)
    for kw in ({}, {"method": "beam", "beams": 3}, {"prefix": False, "retrieval_k": 3, "projection": "none"}):
        first = cap.decode(X, max_tokens=8, **kw)
        assert first == cap.decode(X, max_tokens=8, **kw)
        assert first[:5] == cap.decode(X[:5], max_tokens=8, batch_size=1, **kw)  # left padding changes nothing


def test_save_load_keeps_k_and_the_memory_captions(corpus, by_k, tmp_path):
    tmp, man, space, lm, recs = corpus
    cap = by_k[1][2]
    out = cap.save(tmp_path / "cap")
    assert (out / "memory.json").is_file()
    back = Captioner.load(out, lm=lm)
    assert back.retrieval_k == 2 and back.memory_captions == cap.memory_captions and back.retrieval_prompt == PROMPT
    X = _test_sketches(corpus)
    assert back.decode(X, max_tokens=8) == cap.decode(X, max_tokens=8)
    meta = json.loads((out / "captioner.json").read_text())
    assert meta["format_version"] == 5 and meta["retrieval"]["k"] == 2
    assert json.loads((out / "memory.json").read_text()) == cap.memory_captions
    (out / "memory.json").rename(out / "memory.bak")
    with pytest.raises(CaptionError, match="memory.json is missing") as e:
        Captioner.load(out, lm=lm)
    assert "\n" not in str(e.value)
    # a format-2 captioner (no memory captions): loads without retrieval, and refuses a k > 0 in one line
    meta["format_version"] = 2
    del meta["retrieval"], meta["modes"]  # (format 4's)
    (out / "captioner.json").write_text(json.dumps(meta))
    old = Captioner.load(out, lm=lm)
    assert old.retrieval_k == 0 and old.memory_captions is None
    with pytest.raises(CaptionError, match="retrieval_k 2 needs a memory of more than 2 captions.*holds 0"):
        old.decode(X, retrieval_k=2)


def test_bad_k_refused_in_one_line(corpus, monkeypatch):
    tmp, man, space, lm, recs = corpus
    monkeypatch.setattr(fit_mod, "MAX_RETRIEVAL_K", 100)  # past this small corpus' memory (the bound's own test below)
    with pytest.raises(ValueError, match="retrieval_k must be distinct whole numbers"):
        fit_captioner_by_k(space, man, lm, cache=tmp / "c", **{**RET_FIT, "retrieval_k": (2, 2)})
    with pytest.raises(CaptionError, match="retrieval_k 99 needs more than 99 distinct train captions"):
        fit_captioner_by_k(space, man, lm, cache=tmp / "c", **{**RET_FIT, "retrieval_k": 99})


def test_cli_retrieval_k(corpus, tmp_path):
    from typer.testing import CliRunner

    from anybind.cli import app

    tmp, man, space, lm, recs = corpus
    space.save(tmp_path / "sp")
    runner = CliRunner()
    r = runner.invoke(app, ["caption-fit", str(tmp_path / "sp"), str(man), "--out", str(tmp_path / "cap"), "--lm",
                            lm.spec, "--noise", "0.1", "--epochs", "2", "--prefix-len", "4", "--hidden", "64",
                            "--batch-size", "8", "--lr", "0.01", "--retrieval-k", "0,2", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "chosen on val (0:" in out and "2:" in out and "the frozen LM alone with the retrieved captions: 2:" in out
    saved = Captioner.load(tmp_path / "cap", lm=lm)
    nll = saved.info["retrieval_val_nll"]
    assert saved.retrieval_k == min((0, 2), key=lambda k: (nll[str(k)], k))
    test = [x for x in recs if x["split"] == "test"][:3]
    items = [a for x in test for a in ("--item", f"sketch={x['id']}")]
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--json", *items, "--retrieval-k", "2", "--no-prefix",
                            "--projection", "none", "--cache", str(tmp / "c")])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line)["caption"] for line in r.output.splitlines() if line.startswith("{")]
    X = space.embed("sketch", [x["id"] for x in test], cache=tmp / "c")
    assert rows == saved.decode(X, retrieval_k=2, prefix=False, projection="none")
    # a .npy of the sketch's features is those features (it was taken for a key), named by the file
    A = np.load(tmp / "sketch.npz")["vectors"]
    row = [x["id"] for x in recs].index(test[0]["id"])
    np.save(tmp_path / "one.npy", A[row])
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), "--json", "--item", f"sketch={tmp_path / 'one.npy'}",
                            "--retrieval-k", "2", "--no-prefix", "--projection", "none"])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [(g["item"], g["caption"]) for g in got] == [(str(tmp_path / "one.npy"), rows[0])]
    r = runner.invoke(app, ["caption", str(tmp_path / "cap"), *items, "--no-prefix", "--retrieval-k", "0"])
    assert r.exit_code == 2 and "give retrieval_k > 0" in " ".join(r.output.split())
    r = runner.invoke(app, ["caption-fit", str(tmp_path / "sp"), str(man), "--out", str(tmp_path / "c2"),
                            "--retrieval-k", "two"])
    assert r.exit_code == 2 and "--retrieval-k takes a whole number" in " ".join(r.output.split())


def test_val_prompts_never_hold_the_val_caption_when_val_queries_are_its_text(corpus, monkeypatch):
    """With select_on text the val query is the val caption's own text embedding: its exact duplicate in the (train)
    memory would be its nearest neighbour, a copy no test query gets, so val excludes it as training does."""
    import torch

    tmp, man, space, lm, recs = corpus
    seen = []
    real = fit_mod.caption_loss

    def spy(lm_, prefix, seqs, reduction="mean", prompts=None):
        if not torch.is_grad_enabled() and prompts is not None:  # a val pass
            seen.append((seqs, prompts))
        return real(lm_, prefix, seqs, reduction, prompts)

    monkeypatch.setattr(fit_mod, "caption_loss", spy)
    fit_captioner_by_k(space, man, lm, cache=tmp / "c",
                       **{**RET_FIT, "epochs": 1, "retrieval_k": 1, "select_on": "text", "temperature_grid": (0.1,)})
    assert seen
    nl = lm.tokenizer.convert_tokens_to_ids("\n")
    for seqs, prompts in seen:
        for seq, p in zip(seqs, prompts):
            lines = [tuple(x) for x in np.split(np.array(p), np.nonzero(np.array(p) == nl)[0] + 1)]
            caption = tuple(seq[:-1]) + (nl,)
            assert caption not in lines, lm.tokenizer.decode(p)


def test_load_refuses_damaged_retrieval_content_in_one_line_naming_the_file(corpus, by_k, tmp_path):
    tmp, man, space, lm, recs = corpus
    out = by_k[1][2].save(tmp_path / "cap")
    caps = json.loads((out / "memory.json").read_text())
    (out / "memory.json").write_text(json.dumps(caps[:-1]))
    with pytest.raises(CaptionError, match=r"memory\.json") as e:
        Captioner.load(out, lm=lm)
    assert "\n" not in str(e.value)
    (out / "memory.json").write_text(json.dumps(caps))
    meta = json.loads((out / "captioner.json").read_text())
    for bad in ("{captions}{0}", "{captions}{other}", "{captions.__class__}", "{captions", 7):
        meta["retrieval"]["prompt"] = bad
        (out / "captioner.json").write_text(json.dumps(meta))
        with pytest.raises(CaptionError, match=r"captioner\.json.*prompt") as e:
            Captioner.load(out, lm=lm)
        assert "\n" not in str(e.value)


def test_prompt_length_is_bounded_with_long_retrieved_captions(corpus, by_k):
    """A memory caption of thousands of words is cut in the prompt (to its first words), so the prompt, the
    training batch and the decoding input stay bounded whatever the training captions are."""
    from anybind.caption.retrieval import prompt_ids, prompt_text

    tmp, man, space, lm, recs = corpus
    cap = by_k[1][2]
    huge = "One red star and " * 3000
    caps = list(cap.memory_captions)
    caps[0] = caps[1] = huge
    p = prompt_ids(lm, np.array([[0, 1]]), caps)[0]
    short = prompt_ids(lm, np.array([[2, 3]]), caps)[0]
    assert len(p) <= len(short) + 200, len(p)
    text = prompt_text([huge], PROMPT)
    line = text.split("\n")[1]
    assert line and " ".join(huge.split()).startswith(line) and "\n" not in line
    long_cap = Captioner(space, lm, cap.mapper, memory=cap.memory, memory_captions=caps, projection="none",
                         retrieval_k=2)
    assert len(long_cap.decode(cap.memory[:2], max_tokens=4)) == 2


def test_k_is_bounded_whatever_the_memory_size():
    """A saved captioner's k (and so a service's, which uses it) is bounded even with a large memory: the prompt
    cannot hold thousands of captions."""
    from anybind.caption.fit import k_grid
    from anybind.caption.retrieval import MAX_RETRIEVAL_K, check_k

    caps = [f"caption {i}" for i in range(5000)]
    assert check_k(MAX_RETRIEVAL_K, caps) == MAX_RETRIEVAL_K
    with pytest.raises(CaptionError, match=f"at most {MAX_RETRIEVAL_K}"):
        check_k(4000, caps)
    with pytest.raises(ValueError, match=f"at most {MAX_RETRIEVAL_K}"):
        k_grid((0, 4000))


def test_near_duplicate_captions_are_one_caption_and_never_retrieve_each_other(corpus, tmp_path, monkeypatch):
    """"A bear." and "a  bear" are one caption: one memory row, and in training a caption never gets its
    near-duplicate (same words up to case, punctuation and white space) among its retrieved captions.  Here the
    second train copy of each scene loses its full stop ("Two red stars"): the bag-of-words text encoder embeds both
    forms alike, so without the exclusion the near-duplicate is each caption's nearest memory caption."""
    import torch

    assert caption_key("A bear.") == caption_key("a  bear") == caption_key("A BEAR!") == "a bear"
    assert caption_key("A polar-bear.") == "a polar bear" and caption_key("...") == "..." != caption_key("!")
    assert list(self_rows(["a bear", "A cat", "A dog."], ["A cat.", "A bear."])) == [1, 0, -1]
    tmp, _, space, lm, recs = corpus
    recs2 = [{**r, "text": r["text"].rstrip(".").replace(" ", "  ", 1)} if r["id"].endswith("-1") else r for r in recs]
    man2 = tmp_path / "m2.jsonl"
    man2.write_text("".join(json.dumps(r) + "\n" for r in recs2))
    seen = []
    real = fit_mod.caption_loss

    def spy(lm_, prefix, seqs, reduction="mean", prompts=None):
        if torch.is_grad_enabled():  # a training step
            seen.append((seqs, prompts))
        return real(lm_, prefix, seqs, reduction, prompts)

    monkeypatch.setattr(fit_mod, "caption_loss", spy)
    cap, _ = fit_captioner_by_k(space, man2, lm, cache=tmp / "c", **{**RET_FIT, "epochs": 1, "retrieval_k": 2})
    scenes = {caption_key(r["text"]) for r in recs2 if r["split"] == "train"}
    assert len(cap.memory_captions) == len(scenes) == 24  # one row per caption, whatever its punctuation
    ids = lm.tokenizer
    nl, stop = ids.convert_tokens_to_ids("\n"), ids.convert_tokens_to_ids(".")
    n = 0
    for seqs, prompts in seen:
        for seq, p in zip(seqs, prompts):
            lines = " ".join(map(str, p)).split(f" {nl} ") if p else []
            shown = {tuple(int(t) for t in line.split() if int(t) != stop) for line in lines[1:-1]}
            assert len(shown) == 2
            assert tuple(t for t in seq[:-1] if t != stop) not in shown  # never the caption, in any punctuation
            n += 1
    assert n == len([r for r in recs2 if r["split"] == "train"])

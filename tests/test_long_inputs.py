"""Long texts (issue 17): chunked with overlap and pooled, weighted by token count, instead of truncated.

Tiny randomly initialised models built from configs and saved locally (no network): a text three times the
model's limit must give the token-weighted mean of its chunks encoded by hand with the bare model, a short
text exactly what it gave before, and the chunk policy must be part of the identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from anybind.encoders.registry import get_encoder  # noqa: E402
from anybind.errors import EncoderError  # noqa: E402

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "dog", "cat",
          *("##" + c for c in "abcdefghijklmnopqrstuvwxyz")]
LIMIT = 64
SHORT = ["the dog", "a cat sat on the mat with the dog", "cat"]


def _words(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(["the", "dog", "cat", "a", "b", "c"], size=n))


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long") / "bert"
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(TOKENS), max_position_embeddings=LIMIT, hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(TOKENS)}, model_max_length=LIMIT)
    tok.save_pretrained(folder)
    return folder


def _by_hand(ids: list[int], room: int, stride: int, forward) -> np.ndarray:
    """Chunks [s, s + room) every ``stride`` tokens (the last one ending at the end), each as [CLS] ids [SEP],
    pooled with weights = their token counts."""
    vecs, weights, s = [], [], 0
    while True:
        e = min(s + room, len(ids))
        vecs.append(forward([2, *ids[s:e], 3]))
        weights.append(e - s)
        if e == len(ids):
            break
        s += stride
    w = np.asarray(weights, np.float64) / sum(weights)
    return (np.stack(vecs).astype(np.float64) * w[:, None]).sum(0), len(vecs)


def test_hf_text_three_times_the_limit_is_the_weighted_mean_of_its_chunks(bert):
    enc = get_encoder(f"text:hf/{bert}@pool=mean", cached=False)
    model = transformers.BertModel.from_pretrained(bert).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(bert)
    text = _words(3 * LIMIT)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 3 * LIMIT

    def forward(row):
        with torch.no_grad():
            return model(input_ids=torch.tensor([row])).last_hidden_state[0].mean(0).numpy()

    ref, n_chunks = _by_hand(ids, LIMIT - 2, (LIMIT - 2) * 3 // 4, forward)
    assert n_chunks == 4
    X = enc.encode([SHORT[0], text, SHORT[2]])
    np.testing.assert_allclose(X[1], ref, rtol=1e-5, atol=1e-5)
    # it is not the truncated text (what chunk=off, and the code before, gives)
    off = get_encoder(f"text:hf/{bert}@pool=mean,chunk=off", cached=False).encode([text])[0]
    np.testing.assert_allclose(off, forward([2, *ids[: LIMIT - 2], 3]), rtol=1e-5, atol=1e-5)
    assert np.abs(off - X[1]).max() > 1e-3
    # chunk size and stride from the spec
    small = get_encoder(f"text:hf/{bert}@pool=mean,chunk_size=40,chunk_stride=40", cached=False).encode([text])[0]
    np.testing.assert_allclose(small, _by_hand(ids, 40, 40, forward)[0], rtol=1e-5, atol=1e-5)


def test_hf_short_texts_are_bit_identical_and_the_policy_is_in_the_identity(bert):
    on = get_encoder(f"text:hf/{bert}", cached=False)
    off = get_encoder(f"text:hf/{bert}@chunk=off", cached=False)
    assert np.array_equal(on.encode(SHORT), off.encode(SHORT))  # the path texts within the limit always took
    ids = {get_encoder(f"text:hf/{bert}{tail}", cached=False).identity
           for tail in ("", "@chunk=off", "@chunk_size=40", "@chunk_stride=10", "@chunk=on")}
    assert len(ids) == 4  # chunk=on is the default: the same identity as no option
    assert "chunk=on,size=auto,stride=auto,pool=token-weighted-mean" in on.identity
    with pytest.raises(EncoderError, match=r"chunk='maybe': use on or off"):
        get_encoder(f"text:hf/{bert}@chunk=maybe", cached=False)
    with pytest.raises(EncoderError, match=r"chunk_size='0' is not a positive number of tokens"):
        get_encoder(f"text:hf/{bert}@chunk_size=0", cached=False)


@pytest.fixture(scope="module")
def st_model(bert, tmp_path_factory) -> Path:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer import modules as models
    folder = tmp_path_factory.mktemp("long") / "st"
    t = models.Transformer(str(bert), max_seq_length=32)
    width = (getattr(t, "get_embedding_dimension", None) or t.get_word_embedding_dimension)()
    st = sentence_transformers.SentenceTransformer(
        modules=[t, models.Pooling(width, "mean"), models.Normalize()], device="cpu")
    st.save(str(folder))
    return folder


def test_sentence_transformers_long_text_is_pooled_over_chunks(st_model):
    import sentence_transformers

    enc = get_encoder(f"text:{st_model}", cached=False)
    st = sentence_transformers.SentenceTransformer(str(st_model), device="cpu")
    text = _words(3 * 32, seed=1)
    ids = st.tokenizer(text, add_special_tokens=False)["input_ids"]

    def forward(row):
        feats = {"input_ids": torch.tensor([row]), "attention_mask": torch.ones(1, len(row), dtype=torch.long),
                 "token_type_ids": torch.zeros(1, len(row), dtype=torch.long)}
        with torch.no_grad():
            return st(feats)["sentence_embedding"][0].numpy()

    ref, n_chunks = _by_hand(ids, 30, 22, forward)
    assert n_chunks == 4
    X = enc.encode([text, *SHORT])
    np.testing.assert_allclose(X[0], ref / np.linalg.norm(ref), rtol=1e-5, atol=1e-5)
    # short texts: exactly sentence-transformers' own encode, as before
    plain = st.encode(SHORT, batch_size=len(SHORT), convert_to_numpy=True, normalize_embeddings=True)
    assert np.array_equal(enc.encode(SHORT), plain)
    off = get_encoder(f"text:{st_model}@chunk=off", cached=False)
    assert np.array_equal(off.encode([text]), st.encode([text], normalize_embeddings=True))  # truncated
    assert off.identity != enc.identity and enc.identity.endswith("pool=token-weighted-mean")
    # a space saved before chunking (the identity without the policy) is still accepted for these weights
    assert enc.matches_identity(enc.identity.rsplit("|", 1)[0]) and not off.matches_identity(enc.identity)


# ----------------------------------------------------------------------------- long audio
@pytest.fixture(scope="module")
def w2v(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("long") / "w2v"
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(16, 16),
        conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True, feat_extract_norm="layer"))
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


def test_hf_long_audio_is_pooled_over_windows_weighted_by_samples(w2v):
    wav = np.random.default_rng(3).normal(size=10_000).astype(np.float32) * 0.1
    model = transformers.AutoModel.from_pretrained(w2v).eval()
    fe = transformers.AutoFeatureExtractor.from_pretrained(w2v)

    def forward(x):
        inp = fe(x, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            return model(input_values=inp["input_values"]).last_hidden_state.mean(1)[0].numpy()

    enc = get_encoder(f"audio:hf/{w2v}@window=0.25", cached=False)  # 4000 samples: 4000 + 4000 + 2000
    X = enc.encode([(wav, 16000), (wav[:3000], 16000)])
    want = (0.4 * forward(wav[:4000]).astype(np.float64) + 0.4 * forward(wav[4000:8000])
            + 0.2 * forward(wav[8000:]))
    np.testing.assert_allclose(X[0], want, rtol=1e-5, atol=1e-5)
    whole = get_encoder(f"audio:hf/{w2v}", cached=False)  # wav2vec2 reads any length: the whole clip (auto)
    assert np.array_equal(X[1], whole.encode([(wav[:3000], 16000)])[0])  # one window: exactly as before
    np.testing.assert_allclose(whole.encode([(wav, 16000)])[0], forward(wav), rtol=1e-5, atol=1e-5)
    assert "window=0.25:4000," in enc.identity and "window=auto:whole," in whole.identity
    with pytest.raises(EncoderError, match=r"window='-1': use auto, off or a number of seconds"):
        get_encoder(f"audio:hf/{w2v}@window=-1", cached=False)


def test_auto_windows_are_the_extractors_own_lengths():
    from anybind.encoders.hf_audio import auto_window

    assert auto_window(transformers.ASTFeatureExtractor(), 16000) == 1023 * 160 + 400  # 1024 frames, ~10.25 s
    assert auto_window(transformers.ClapFeatureExtractor(), 48000) == 480_000  # 10 s (CLAP crops at random)
    assert auto_window(transformers.WhisperFeatureExtractor(), 16000) == 480_000  # 30 s
    assert auto_window(transformers.Wav2Vec2FeatureExtractor(), 16000) is None


def test_chunk_spans_cover_every_token_with_the_given_overlap():
    from hypothesis import given
    from hypothesis import strategies as st

    from anybind.encoders.chunks import ChunkPolicy, chunk_spans

    @given(n=st.integers(1, 2000), room=st.integers(1, 600), size=st.integers(0, 700), stride=st.integers(0, 700))
    def check(n, room, size, stride):
        s, t = ChunkPolicy(size=size, stride=stride).resolved(room)
        assert 1 <= t <= s <= room
        spans = chunk_spans(n, s, t)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(e - b <= s and e > b for b, e in spans)
        assert all(b2 - b1 == t for (b1, _), (b2, _) in zip(spans, spans[1:]))
        assert all(e1 >= b2 for (_, e1), (b2, _) in zip(spans, spans[1:]))  # no token left out
        assert len(spans) == 1 or spans[-2][1] < n  # no chunk after the one that reached the end

    check()


# ----------------------------------------------------------------------------- passage rows
def _rows(index) -> dict[str, str]:
    t = index.table.search().select(["id", "source"]).limit(None).to_arrow()
    return dict(zip(t.column("id").to_pylist(), t.column("source").to_pylist()))


def test_index_chunk_rows_give_one_row_per_passage_and_drop_stale_ones(bert, tmp_path):
    import json

    from anybind.index import Index
    from anybind.projectors import Projector, ProjectorConfig
    from anybind.space import Space

    torch.manual_seed(0)
    proj = Projector(ProjectorConfig(in_dim=32, out_dim=8, kind="linear", dropout=0.0, input_dropout=0.0))
    space = Space({"text": f"text:hf/{bert}@pool=mean"}, {"text": proj})
    long_text = _words(3 * LIMIT, seed=5)

    def write(text):
        recs = [{"id": "doc", "text": text}, {"id": "short", "text": "the dog"}, {"id": "short#7", "text": "cat"}]
        (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return tmp_path / "m.jsonl"

    ix = Index.build(space, write(long_text), tmp_path / "ix", cache=tmp_path / "c", chunk_rows=True)
    rows = _rows(ix)
    assert sorted(rows) == ["doc#0", "doc#1", "doc#2", "doc#3", "short", "short#7"]
    enc = space.encoder("text")
    assert [rows[f"doc#{k}"] for k in range(4)] == enc.passages(long_text)
    assert all(p in long_text for p in enc.passages(long_text))
    hit = ix.search(text=rows["doc#2"], k=1)[0]
    assert hit.id == "doc#2" and hit.score == pytest.approx(1.0, abs=1e-4)  # the passage itself is found
    # the text shrinks to two passages, then fits: the passage rows it no longer has are deleted
    ix = Index.build(space, write(" ".join(long_text.split()[: LIMIT + 20])), tmp_path / "ix", cache=tmp_path / "c",
                     chunk_rows=True)
    assert sorted(_rows(ix)) == ["doc#0", "doc#1", "short", "short#7"]
    ix = Index.build(space, write("the cat"), tmp_path / "ix", cache=tmp_path / "c", chunk_rows=True)
    assert sorted(_rows(ix)) == ["doc", "short", "short#7"]  # a record whose id looks like a passage is kept


@pytest.fixture(scope="module")
def tokenizers_of_each_kind(bert):
    """WordPiece (the tiny BERT's), byte-level BPE (GPT-2's kind) and SentencePiece-style BPE, the last two
    trained here on a few sentences (no network)."""
    from tokenizers import ByteLevelBPETokenizer, SentencePieceBPETokenizer

    corpus = ["the dog sat on the mat", "naïve café résumé", "東京 タワー", "emoji 🐶🐱 and ß", "x" * 40]
    byte_bpe, sp_bpe = ByteLevelBPETokenizer(), SentencePieceBPETokenizer()
    byte_bpe.train_from_iterator(corpus, vocab_size=300, min_frequency=1)
    sp_bpe.train_from_iterator(corpus, vocab_size=100, min_frequency=1)
    wordpiece = transformers.BertTokenizerFast.from_pretrained(bert)
    return {"wordpiece": lambda t: wordpiece(t, add_special_tokens=False)["input_ids"],
            "byte-bpe": lambda t: byte_bpe.encode(t).ids, "sentencepiece-bpe": lambda t: sp_bpe.encode(t).ids}


def test_no_tokenizer_kind_makes_more_than_two_tokens_per_utf8_byte(tokenizers_of_each_kind):
    """What the hf text encoder's shortcut rests on: a text of at most room/2 UTF-8 bytes cannot be over the
    model's limit, so only longer texts are tokenized a second time to look for chunks."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None)
    @given(st.text(max_size=60))
    def check(text):
        for kind, tokenize in tokenizers_of_each_kind.items():
            assert len(tokenize(text)) <= 2 * len(text.encode("utf-8")), (kind, text)

    check()


def test_texts_just_over_the_byte_bound_are_still_chunked(bert):
    """A text of many one-letter words is as long in tokens as it can be for its bytes: it is found and chunked."""
    on = get_encoder(f"text:hf/{bert}", cached=False)
    off = get_encoder(f"text:hf/{bert}@chunk=off", cached=False)
    text = " ".join(["a"] * LIMIT)  # 64 one-token words: over the 62-token room, in 127 bytes
    chunked, truncated = on.encode([text, "the dog"]), off.encode([text, "the dog"])
    assert not np.allclose(chunked[0], truncated[0])  # found long (pooled over chunks), not cut at the limit
    assert np.array_equal(chunked[1], truncated[1])  # the short text in the same batch as before

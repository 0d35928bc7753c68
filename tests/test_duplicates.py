"""Near-duplicates outside the joint space (issue 20): the DCT pHash tells a rescaled, re-encoded or recoloured
copy of a stamp from another stamp, and the audit names copies and look-alikes apart."""

import numpy as np
from hypothesis import given, settings, strategies as st
from PIL import Image

from anybind.duplicates import COPY_BITS, hamming, near_pairs, phash, phashes
from conftest import STAMPS

STAMP_FILES = sorted(STAMPS.rglob("*.png"))[:40]


def test_a_rescaled_jpeg_or_recoloured_copy_keeps_its_hash_and_other_stamps_do_not(tmp_path):
    originals, copies = [], []
    for k, p in enumerate(STAMP_FILES[:12]):
        img = Image.open(p).convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(bg, img).convert("RGB")
        small = rgb.resize((max(1, int(rgb.width * 0.7)), max(1, int(rgb.height * 0.7))))
        q = tmp_path / f"{k}.jpg"
        small.save(q, quality=70)
        originals.append(p)
        copies.append(q)
    H, C = phashes(originals), phashes(copies)
    d = hamming(C, H)
    assert (np.diag(d) <= COPY_BITS).mean() >= 0.9, np.diag(d)  # copies stay within the copy distance
    off = d[~np.eye(len(d), dtype=bool)]
    assert (off > COPY_BITS).mean() >= 0.95, np.sort(off)[:10]  # other stamps do not


def test_phash_is_64_bits_and_deterministic():
    a, b = phash(STAMP_FILES[0]), phash(STAMP_FILES[0])
    assert a.shape == (64,) and a.dtype == bool and np.array_equal(a, b)
    assert 16 <= a.sum() <= 48  # the median splits the low frequencies about in half


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=64, max_size=64), min_size=1, max_size=8))
def test_hamming_counts_differing_bits(bits):
    B = np.array(bits, bool)
    P = np.packbits(B, axis=1)
    want = (B[:, None, :] != B[None, :, :]).sum(-1)
    assert np.array_equal(hamming(P, P), want)


def test_near_pairs_names_copies_before_look_alikes_and_respects_the_allowed_block():
    F = np.eye(4, dtype=np.float32)
    F[1] = F[0]  # 0 and 1: same features
    F[3] = (F[2] + 0.1 * F[0]) / np.linalg.norm(F[2] + 0.1 * F[0])  # 2 and 3: cosine 0.995
    H = np.packbits(np.array([[0] * 64, [0] * 63 + [1], [1] * 64, [1] * 32 + [0] * 32], bool), axis=1)
    everything = lambda r, c: np.ones((len(r), len(c)), bool)  # noqa: E731
    got = {(i, j): (kind, v) for i, j, kind, v in near_pairs(F, everything, 0.99, H)}
    assert got == {(0, 1): ("copy", 1), (2, 3): ("look-alike", 0.995)}
    split = np.array(["train", "train", "test", "train"])
    cross = lambda r, c: split[r, None] != split[None, c]  # noqa: E731
    assert [(i, j) for i, j, *_ in near_pairs(F, cross, 0.99, H)] == [(2, 3)]
    # without hashes, identical features are still a copy
    assert near_pairs(F, everything, 0.99, None) == [(0, 1, "copy", None), (2, 3, "look-alike", 0.995)]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20), st.integers(1, 20))
def test_hamming_on_64_bit_words_equals_the_bitwise_count(seed, n, m):
    rng = np.random.default_rng(seed)
    A = rng.integers(0, 256, size=(n, 8), dtype=np.uint8)
    B = rng.integers(0, 256, size=(m, 8), dtype=np.uint8)
    want = np.array([[sum(bin(x ^ y).count("1") for x, y in zip(a, b)) for b in B] for a in A])
    assert np.array_equal(hamming(A, B), want)
    want4 = np.array([[sum(bin(x ^ y).count("1") for x, y in zip(a[:4], b[:4])) for b in B] for a in A])
    assert np.array_equal(hamming(A[:, :4], B[:, :4]), want4)  # other widths: the byte table

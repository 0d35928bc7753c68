"""Near-duplicates outside the joint space (issue 20): the DCT pHash tells a rescaled or re-encoded copy of a
stamp from another stamp, the colour signature tells a recoloured variant from a copy, and the audit names
copies, variants and look-alikes apart."""

import numpy as np
from hypothesis import given, settings, strategies as st
from PIL import Image

from anybind.duplicates import (COLOUR_DIFF, COPY_BITS, colour_distance, colour_signature, hamming,
                                image_signatures, near_pairs, phash, phashes)
from conftest import STAMPS

STAMP_FILES = sorted(STAMPS.rglob("*.png"))[:40]


def test_a_rescaled_jpeg_copy_keeps_its_hash_and_other_stamps_do_not(tmp_path):
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


def _on_white(img: Image.Image) -> Image.Image:
    return Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA")).convert("RGB")


def _hue_turned(img: Image.Image, degrees: int) -> Image.Image:
    rgba = img.convert("RGBA")
    h, s, v = rgba.convert("RGB").convert("HSV").split()
    out = Image.merge("HSV", (h.point(lambda x: (x + degrees * 256 // 360) % 256), s, v)).convert("RGBA")
    out.putalpha(rgba.getchannel("A"))
    return out


def test_a_recoloured_stamp_is_a_variant_where_phash_alone_calls_it_a_copy(tmp_path):
    """The first 40 stamps (COLOUR_DIFF was chosen on others): each stamp that has colour, rescaled to 70 % as
    a JPEG (a copy) and with its hue turned by 120 degrees or its red and blue swapped (recoloured variants)."""
    files, kinds = [], []
    for k, p in enumerate(STAMP_FILES):
        img = Image.open(p).convert("RGBA")
        if np.linalg.norm(colour_signature(p).reshape(-1, 2).astype(float) - 128, axis=1).max() < COLOUR_DIFF / 2:
            continue  # too little colour to change: no recolour moves a cell by more than twice its chroma
        rgb = _on_white(img)
        copy = tmp_path / f"{k}-copy.jpg"
        rgb.resize((max(1, rgb.width * 7 // 10), max(1, rgb.height * 7 // 10))).save(copy, quality=70)
        hue = tmp_path / f"{k}-hue.png"
        _hue_turned(img, 120).save(hue)
        r, g, b, a = img.split()
        swap = tmp_path / f"{k}-swap.png"
        Image.merge("RGBA", (b, g, r, a)).save(swap)
        files += [p, copy, hue, swap]
        kinds += ["original", "copy", "variant", "variant"]
    assert len(files) >= 4 * 15  # 21 of the 40 stamps have that much colour
    H, C = image_signatures(files)
    assert np.array_equal(H, phashes(files)) and np.array_equal(C[0], colour_signature(files[0]))
    kinds = np.array(kinds)
    origin = np.arange(len(files)) // 4
    with_original = lambda r, c: (origin[r, None] == origin[None, c]) & (kinds[r, None] == "original")  # noqa: E731
    F = np.eye(len(files), dtype=np.float32)  # no look-alikes: the hash and the colours decide
    got = {j: (kind, v) for i, j, kind, v in near_pairs(F, with_original, 0.99, H, colours=C)}
    blind = {j: kind for i, j, kind, _ in near_pairs(F, with_original, 0.99, H)}  # pHash alone
    copies, variants = np.nonzero(kinds == "copy")[0], np.nonzero(kinds == "variant")[0]
    hashed_alike = [j for j in variants if blind.get(j) == "copy"]
    # the case this is for: pHash (grey-level) calls most recoloured stamps copies
    assert len(hashed_alike) >= 0.5 * len(variants), (len(hashed_alike), len(variants))
    assert all(got[j][0] == "variant" and got[j][1] > COLOUR_DIFF for j in hashed_alike if got[j][0] != "copy")
    assert np.mean([got[j][0] == "variant" for j in hashed_alike]) >= 0.9
    # a rescaled JPEG copy stays a copy: its colours are the same
    assert np.mean([got.get(j, ("none",))[0] == "copy" for j in copies]) >= 0.9
    assert np.mean([blind.get(j) == "copy" for j in copies]) >= 0.9


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
       st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
def test_the_colour_signature_holds_each_cell_s_mean_chroma(tmp_path_factory, a, b):
    """Left half one colour, right half another: the left cells hold the first colour's Cb Cr, the right ones
    the second's; the distance between the two halves' signatures is the chroma distance of the colours."""
    d = tmp_path_factory.mktemp("colours")
    img = Image.new("RGB", (64, 64), a)
    img.paste(Image.new("RGB", (32, 64), b), (32, 0))
    img.save(d / "two.png")
    Image.new("RGB", (64, 64), a).save(d / "one.png")
    sig = colour_signature(d / "two.png").reshape(4, 4, 2).astype(int)
    ya, yb = (np.asarray(Image.new("RGB", (1, 1), c).convert("YCbCr"), int)[0, 0, 1:] for c in (a, b))
    assert np.abs(sig[:, :2] - ya).max() <= 1 and np.abs(sig[:, 2:] - yb).max() <= 1
    one = colour_signature(d / "one.png")
    assert colour_distance(one, one) == 0
    assert abs(float(colour_distance(one, colour_signature(d / "two.png"))) - float(np.linalg.norm(ya - yb))) <= 2

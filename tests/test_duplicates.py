"""Near-duplicates outside the joint space (issue 20): the DCT pHash tells a rescaled or re-encoded copy of a
stamp from another stamp, the colour signature tells a recoloured variant from a copy, and the audit names
copies, variants and look-alikes apart."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from anybind.corpora import emoji as em
from anybind.duplicates import (BRIGHTNESS_DIFF, COLOUR_DIFF, COPY_BITS, LOOSE_BITS, PIXEL_DIFF, PIXEL_MIN_SIDE,
                                brightness_distance, chroma_distance, colour_distance, colour_signature, hamming,
                                image_prints, image_signatures, near_pairs, phash, phashes, pixel_distance)
from anybind.errors import DataError
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
        if np.linalg.norm(colour_signature(p).reshape(-1, 3)[:, 1:].astype(float) - 128, axis=1).max() < COLOUR_DIFF / 2:
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
def test_the_colour_signature_holds_each_cell_s_mean_luma_and_chroma(tmp_path_factory, a, b):
    """Left half one colour, right half another: the left cells hold the first colour's Y Cb Cr, the right ones
    the second's; the distance between the two halves' signatures is the larger of the colours' chroma distance
    and their luma difference (scaled to the chroma threshold)."""
    d = tmp_path_factory.mktemp("colours")
    img = Image.new("RGB", (64, 64), a)
    img.paste(Image.new("RGB", (32, 64), b), (32, 0))
    img.save(d / "two.png")
    Image.new("RGB", (64, 64), a).save(d / "one.png")
    sig = colour_signature(d / "two.png").reshape(4, 4, 3).astype(int)
    ya, yb = (np.asarray(Image.new("RGB", (1, 1), c).convert("YCbCr"), int)[0, 0] for c in (a, b))
    assert np.abs(sig[:, :2] - ya).max() <= 1 and np.abs(sig[:, 2:] - yb).max() <= 1
    one, two = colour_signature(d / "one.png"), colour_signature(d / "two.png")
    assert colour_distance(one, one) == 0 and brightness_distance(one, one) == 0
    chroma, luma = float(np.linalg.norm(ya[1:] - yb[1:])), float(abs(ya[0] - yb[0]))
    assert abs(float(chroma_distance(one, two)) - chroma) <= 2
    assert abs(float(brightness_distance(one, two)) - luma) <= 2
    assert abs(float(colour_distance(one, two)) - max(chroma, luma * COLOUR_DIFF / BRIGHTNESS_DIFF)) <= 2
    # paired rows give one distance per pair, the same as one pair at a time
    pairs = colour_distance(np.stack([one, two]), np.stack([two, two]))
    assert pairs.shape == (2,) and pairs[1] == 0 and pairs[0] == colour_distance(one, two)


# the skin-tone swatches of the emoji corpus (issue 20): the same square, lighter or darker
SKIN_TONES = """\
# group: Component
# subgroup: skin-tone
1F3FB                                                  ; component           # \U0001F3FB E1.0 light skin tone
1F3FC                                                  ; component           # \U0001F3FC E1.0 medium-light skin tone
1F3FD                                                  ; component           # \U0001F3FD E1.0 medium skin tone
1F3FE                                                  ; component           # \U0001F3FE E1.0 medium-dark skin tone
1F3FF                                                  ; component           # \U0001F3FF E1.0 dark skin tone
"""


@pytest.fixture(scope="module")
def skin_tones(tmp_path_factory):
    """The five skin-tone swatches as the emoji corpus builder renders them from the Noto colour emoji font."""
    if not Path(em.DEFAULT_FONT).exists():
        pytest.skip(f"apt-get install -y {em.FONT_PACKAGE}")
    d = tmp_path_factory.mktemp("skin")
    (d / "emoji-test.txt").write_text(SKIN_TONES, encoding="utf-8")
    em.build_emoji(d / "emoji", emoji_test=d / "emoji-test.txt", cldr_dir=None, progress=False)
    files = [d / "emoji" / "media" / f"{cp}.png" for cp in ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")]
    assert all(f.is_file() for f in files)
    return files


def test_skin_tones_that_phash_calls_copies_are_variants_by_their_brightness(skin_tones):
    H, C = image_signatures(skin_tones)
    bits = hamming(H, H)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5) if bits[i, j] <= COPY_BITS]
    # the case this is for: pHash (grey, against its median) calls the lighter and the darker swatch copies,
    # and for some of them the chroma alone does too (light vs medium-light, medium vs dark in the audit)
    assert (0, 1) in pairs and (2, 4) in pairs, bits
    assert any(chroma_distance(C[i], C[j]) <= COLOUR_DIFF for i, j in pairs)
    assert all(brightness_distance(C[i], C[j]) > BRIGHTNESS_DIFF for i, j in pairs)
    F = np.eye(5, dtype=np.float32)  # no look-alikes: the hash and the colours decide
    everything = lambda r, c: np.ones((len(r), len(c)), bool)  # noqa: E731
    got = {(i, j): (kind, v) for i, j, kind, v in near_pairs(F, everything, 0.99, H, colours=C)}
    assert set(got) == set(pairs)
    assert all(kind == "variant" and v > COLOUR_DIFF for kind, v in got.values()), got


def test_a_rescaled_jpeg_copy_of_a_skin_tone_stays_a_copy(skin_tones, tmp_path):
    from anybind.data.media import load_image

    files = []
    for k, p in enumerate(skin_tones):
        rgb = load_image(p)
        for scale, quality in ((0.7, 70), (0.5, 85)):
            q = tmp_path / f"{k}-{scale}-{quality}.jpg"
            rgb.resize((int(rgb.width * scale), int(rgb.height * scale))).save(q, quality=quality)
            files += [p, q]
    pr = image_prints(files)
    H, C = pr.hashes, pr.colours
    F = np.eye(len(files), dtype=np.float32)
    with_original = lambda r, c: (r[:, None] // 2 == c[None, :] // 2) & (r[:, None] % 2 == 0)  # noqa: E731
    got = {(i, j): kind for i, j, kind, _ in near_pairs(F, with_original, 0.99, H, colours=C)}
    hashed = [(i, i + 1) for i in range(0, len(files), 2) if hamming(H[i:i + 1], H[i + 1:i + 2])[0, 0] <= COPY_BITS]
    # pHash alone: every copy it keeps stays a copy, but the near-white light swatch's copies are lost to its bits
    assert len(hashed) == 8 and got == {pair: "copy" for pair in hashed}, got
    assert all(hamming(H[i:i + 1], H[i + 1:i + 2])[0, 0] > COPY_BITS for i in (0, 2))  # 8 bits apart
    assert max(float(colour_distance(C[i], C[i + 1])) for i in range(0, len(files), 2)) <= COLOUR_DIFF / 4
    # issue 20: with the pixel check, every copy is a copy, the light swatch's too (hashes within LOOSE_BITS, pixels
    # alike) -- and none of the swatches is a copy of another: they stay variants by their brightness
    got = {(i, j): kind for i, j, kind, _ in near_pairs(F, with_original, 0.99, H, colours=C, thumbs=pr.thumbs,
                                                         sides=pr.sides, blank=pr.blank)}
    assert got == {(i, i + 1): "copy" for i in range(0, len(files), 2)}, got
    everything = lambda r, c: np.ones((len(r), len(c)), bool)  # noqa: E731
    originals = [i for i in range(0, len(files), 4)]
    among = {(i, j): kind for i, j, kind, _ in near_pairs(F, everything, 0.99, H, colours=C, thumbs=pr.thumbs,
                                                          sides=pr.sides) if i in originals and j in originals}
    assert set(among.values()) <= {"variant"}, among


# ----------------------------------------------------------------------------- issue 20: blanks and edited copies
HANUKKAH = STAMPS / "seasonal" / "hanukkah"


def test_blank_pictures_pair_with_nothing(tmp_path):
    """Openclipart SVGs that render empty were pHash copies of each other (0 bits) and of striped flags (3 bits).
    An empty render (white, or off-white) and real stamps shrunk to a speck are blank; no stamp is."""
    from anybind.data.media import load_image

    Image.new("RGB", (256, 256), "white").save(tmp_path / "white.png")
    Image.new("RGB", (256, 256), (250, 250, 250)).save(tmp_path / "off-white.png")
    for k in (0, 1):  # two different stamps shrunk to a speck at one place
        speck = Image.new("RGB", (256, 256), "white")
        speck.paste(load_image(STAMP_FILES[k]).resize((6, 6)), (40, 200))
        speck.save(tmp_path / f"speck{k}.png")
    files = [tmp_path / f for f in ("white.png", "off-white.png", "speck0.png", "speck1.png")] + STAMP_FILES[:12]
    pr = image_prints(files)
    assert pr.blank.tolist() == [True] * 4 + [False] * 12, pr.ink
    # a stamp drawn to its edges (Tux Paint's filled "l": a black bar) is no blank, nor its white-on-white colourable
    # stamps' opposite: ink is measured against white, what transparency is composited on
    bar = tmp_path / "bar.png"
    Image.new("RGB", (31, 115), (0, 0, 0)).save(bar)
    assert not image_prints([bar]).blank[0]
    bits = hamming(pr.hashes, pr.hashes)
    assert bits[0, 1] <= COPY_BITS and bits[2, 3] <= COPY_BITS, bits[:4, :4]  # the case: pHash calls them copies
    F = np.eye(len(files), dtype=np.float32)
    everything = lambda r, c: np.ones((len(r), len(c)), bool)  # noqa: E731
    kw = dict(colours=pr.colours, thumbs=pr.thumbs, sides=pr.sides)
    assert {(0, 1), (2, 3)} <= {(i, j) for i, j, *_ in near_pairs(F, everything, 0.99, pr.hashes, **kw)}
    assert not [p for p in near_pairs(F, everything, 0.99, pr.hashes, blank=pr.blank, **kw) if min(p[:2]) < 4]
    F[:] = 1 / np.sqrt(F.shape[1])  # not even identical features pair a blank with anything
    assert not [p for p in near_pairs(F, everything, 0.99, pr.hashes, blank=pr.blank, **kw) if min(p[:2]) < 4]


def test_signs_on_one_template_are_edited_copies_and_their_jpeg_copies_stay_copies(tmp_path):
    """Tux Paint's dreydls: one drawing, another Hebrew letter on it.  pHash puts them within COPY_BITS (as it did
    the openclipart hazard signs and flags on one layout); the pixel check tells the shin (its letter differs in
    one block) from the others, and every rescaled JPEG copy stays a copy."""
    from anybind.data.media import load_image

    dreydls = [HANUKKAH / f"dreydl-{n}.png" for n in ("gimmel", "nun", "shin")]
    if not all(p.is_file() for p in dreydls):
        pytest.skip("Tux Paint's Hanukkah stamps are not installed")
    files = []
    for k, p in enumerate(dreydls):
        rgb = load_image(p)
        rgb.resize((int(rgb.width * 0.7), int(rgb.height * 0.7))).save(tmp_path / f"{k}.jpg", quality=70)
        files += [p, tmp_path / f"{k}.jpg"]
    pr = image_prints(files)
    assert min(pr.sides) >= PIXEL_MIN_SIDE
    bits = hamming(pr.hashes, pr.hashes)
    assert bits[0, 4] <= COPY_BITS and bits[2, 4] <= COPY_BITS  # the case: pHash calls gimmel / nun and shin copies
    F = np.eye(len(files), dtype=np.float32)
    everything = lambda r, c: np.ones((len(r), len(c)), bool)  # noqa: E731
    got = {(i, j): (kind, v) for i, j, kind, v in near_pairs(F, everything, 0.99, pr.hashes, colours=pr.colours,
                                                             thumbs=pr.thumbs, sides=pr.sides)}
    for i in (0, 2, 4):
        assert got[(i, i + 1)][0] == "copy", got  # a rescaled JPEG copy
    shin = {(i, j): kv for (i, j), kv in got.items() if j in (4, 5) and i < 4}
    # the shin's letter differs in one block (edited; or, where it also moves a colour cell over COLOUR_DIFF, a
    # recoloured variant): never a copy of the gimmel or the nun, nor of their copies
    assert shin and {kind for kind, _ in shin.values()} <= {"edited", "variant"}, got
    assert any(kind == "edited" and v > PIXEL_DIFF for kind, v in shin.values()), got
    # without the pixel check, pHash alone calls them copies
    alone = {(i, j): kind for i, j, kind, _ in near_pairs(F, everything, 0.99, pr.hashes, colours=pr.colours)}
    assert {alone[k] for k in shin if k in alone} == {"copy", "variant"}, alone


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_pixel_distance_is_a_symmetric_block_difference(seed, n):
    rng = np.random.default_rng(seed)
    A, B = (rng.integers(0, 256, (n, 1024)).astype(np.uint8) for _ in range(2))
    d = pixel_distance(A, B)
    assert d.shape == (n,) and np.all((d >= 0) & (d <= 1))
    assert np.allclose(d, pixel_distance(B, A)) and np.all(pixel_distance(A, A) == 0)
    assert np.allclose(pixel_distance(A[:, None], B[None]), np.array([[pixel_distance(a, b) for b in B] for a in A]))
    # a dark picture with one of its 4 x 4 blocks turned white: that block differs by over half the range
    D = A // 4
    C = D.copy().reshape(n, 32, 32)
    C[:, 8:16, 8:16] = 255
    assert np.all(pixel_distance(D, C.reshape(n, -1)) > 0.5)
    assert LOOSE_BITS > COPY_BITS


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_a_colour_keyed_transparent_png_is_composited_on_white(tmp_path, mode):
    """A greyscale or RGB PNG whose transparency is a colour key (tRNS, no alpha channel) is transparent where it
    has that colour: like an RGBA stamp it is composited on white -- its transparent canvas is no ink, and a speck
    on it is blank (it was left black: ink everywhere, no blank, and a black background for the encoder)."""
    from anybind.data.media import load_image

    key, fg = (0, 128) if mode == "L" else ((0, 0, 0), (128, 128, 128))
    img = Image.new(mode, (256, 256), key)
    img.paste(Image.new(mode, (6, 6), fg), (120, 120))
    img.save(tmp_path / "speck.png", transparency=key)
    rgb = np.asarray(load_image(tmp_path / "speck.png"))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[122, 122].tolist() == [128, 128, 128]
    assert image_prints([tmp_path / "speck.png"]).blank.tolist() == [True]


def test_a_16_bit_greyscale_png_is_read_as_its_top_8_bits(tmp_path):
    """A 16-bit greyscale PNG (PIL mode I;16: a depth map, a scan) was clipped to 8 bits by PIL's conversion: every
    value over 255 white (a stamp's grey picture read 99 % white: a blank for the audit, nothing for the encoder).
    It reads as its 8-bit picture does; its colour key (tRNS) is transparency, composited on white."""
    from anybind.data.media import load_image

    grey = np.asarray(load_image(STAMP_FILES[0]).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "16.png")  # 257: 0-255 onto 0-65535
    assert Image.open(tmp_path / "16.png").mode.startswith("I;16")
    got = np.asarray(load_image(tmp_path / "16.png"))
    assert np.array_equal(got, np.repeat(grey[..., None], 3, -1))
    pr = image_prints([STAMP_FILES[0], tmp_path / "16.png"])
    assert not pr.blank.any() and hamming(pr.hashes[:1], pr.hashes[1:])[0, 0] <= COPY_BITS
    wide = np.full((64, 64), 40000, np.uint16)
    wide[20:40, 20:40] = 1000
    Image.fromarray(wide).save(tmp_path / "keyed.png", transparency=40000)
    rgb = np.asarray(load_image(tmp_path / "keyed.png"))
    assert rgb[0, 0].tolist() == [255] * 3 and rgb[30, 30].tolist() == [1000 >> 8] * 3


def test_image_prints_report_an_unreadable_picture_and_read_the_others(tmp_path):
    """Issue 20: one SVG past its rendering budget (or a corrupt file) stopped the prints of every image; with a
    ``bad`` dict its reason is kept there, its rows are left out and the others are read as on their own."""
    from test_svg_budget import slow_svg

    from anybind.data.limits import MediaLimits, using_limits

    files = [STAMP_FILES[0], tmp_path / "slow.svg", tmp_path / "broken.png", STAMP_FILES[1]]
    files[1].write_bytes(slow_svg())
    files[2].write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    bad: dict[int, str] = {}
    with using_limits(MediaLimits(max_svg_work=10**12, max_svg_seconds=1)):
        pr = image_prints(files, bad=bad)
        with pytest.raises(DataError, match="slow.svg: SVG took more than 1 s to render"):
            image_prints(files[:2])  # without a dict: the first unreadable image is the error, as before
    assert sorted(bad) == [1, 2] and "took more than 1 s to render" in bad[1] and "broken.png" in bad[2]
    assert "\n" not in bad[1] + bad[2]
    alone = image_prints([files[0], files[3]])
    for a, b in zip((pr.hashes, pr.colours, pr.ink, pr.thumbs, pr.sides),
                    (alone.hashes, alone.colours, alone.ink, alone.thumbs, alone.sides)):
        assert np.array_equal(a, b)
    b2: dict[int, str] = {}
    with using_limits(MediaLimits(max_svg_work=10**12, max_svg_seconds=1)):
        H, C = image_signatures(files, bad=b2)
    assert b2 == bad and np.array_equal(H, alone.hashes) and np.array_equal(C, alone.colours)

"""The emoji corpus: the emoji-test.txt parser and name rules on a made-up snippet, then the real Noto font and
emoji-test.txt (fonts-noto-color-emoji, unicode-data: scripts/bootstrap-debian.sh installs them; each real-data
test skips with the command to run when its input is missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from anybind.corpora import emoji as em
from anybind.data.manifest import load_manifest
from anybind.data.media import load_image
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, needs

FONT = Path(em.DEFAULT_FONT)
EMOJI_TEST = Path(em.DEFAULT_EMOJI_TEST)
needs_font = needs(FONT, em.FONT_PACKAGE)
needs_emoji_test = needs(EMOJI_TEST, em.DATA_PACKAGE)


EMOJI_SNIPPET = """\
# Version: 15.0
# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face
this line is garbage
# group: Symbols
# subgroup: alphanum
1F201                                                  ; fully-qualified     # 🈁 E0.6 Japanese “here” button
0041                                                   ; fully-qualified     # A E0.0 Latin capital A (not in the font)
# group: Flags
# subgroup: country-flag
1F1E6 1F1E8                                            ; fully-qualified     # 🇦🇨 E2.0 flag: Ascension Island
1F468 200D 1F4BB                                       ; fully-qualified     # 👨‍💻 E4.0 man technologist
"""


def test_parse_emoji_test_keeps_single_code_points():
    from collections import Counter

    problems: Counter[str] = Counter()
    got = em.parse_emoji_test(EMOJI_SNIPPET, problems)
    assert [(e.codepoint, e.name, e.group, e.subgroup) for e in got] == [
        (0x1F600, "grinning face", "Smileys & Emotion", "face-smiling"),
        (0x263A, "smiling face", "Smileys & Emotion", "face-smiling"),
        (0x1F201, "Japanese “here” button", "Symbols", "alphanum"),
        (0x41, "Latin capital A (not in the font)", "Symbols", "alphanum"),
    ]
    assert got[1].statuses == ("fully-qualified", "unqualified") and got[0].version == "1.0"
    assert problems == {"emoji_test_line_unparsed": 1}


@pytest.mark.parametrize(
    "name, plain, with_article",
    [
        ("grinning face", "grinning face", "a grinning face"),
        ("OK hand", "ok hand", "an ok hand"),
        ("Japanese “here” button", "japanese here button", "a japanese here button"),
        ("face with tears of joy", "face with tears of joy", "a face with tears of joy"),
        ("unicorn", "unicorn", "a unicorn"),
        ("sparkles", "sparkles", "sparkles"),
        ("hundred points", "hundred points", "hundred points"),
        ("T-Rex", "t-rex", "a t-rex"),
    ],
)
def test_clean_emoji_name(name, plain, with_article):
    assert em.clean_emoji_name(name) == plain
    assert em.clean_emoji_name(name, article=True) == with_article


@needs_font
def test_emoji_build_from_snippet(tmp_path):
    test_file = tmp_path / "emoji-test.txt"
    test_file.write_text(EMOJI_SNIPPET, encoding="utf-8")
    out = tmp_path / "emoji"
    summary = em.build_emoji(out, font_path=FONT, emoji_test=test_file, progress=True)
    recs, meta = check_corpus(out, "emoji")
    assert [r["id"] for r in recs] == ["U+1F600", "U+263A", "U+1F201"]
    assert summary.skipped == meta["skipped"] == {"not_in_font": 1}
    assert meta["skipped_ids"] == {"not_in_font": ["U+0041"]}
    assert (
        meta["problems"] == {"emoji_test_line_unparsed": 1} and meta["source"]["emoji_test_version"] == "15.0"
    )
    grin = recs[0]
    assert grin["text"] == "grinning face" and grin["image"] == "media/1f600.png"
    assert grin["labels"] == {"group": "Smileys & Emotion", "subgroup": "face-smiling"}
    assert grin["meta"]["unicode_name"] == "GRINNING FACE" and grin["meta"]["codepoint"] == "U+1F600"
    assert recs[2]["text"] == "japanese here button"
    img = load_image(out / grin["image"])  # RGBA on white
    arr = np.asarray(img)
    assert img.size == (136, 136) and arr[0, 0].tolist() == [255, 255, 255]
    yellow = (arr[..., 0] > 200) & (arr[..., 1] > 150) & (arr[..., 2] < 120)
    assert yellow.mean() > 0.3  # a yellow face, not a tofu box
    assert load_manifest(out / "manifest.jsonl", strict=True).records
    before = folder_files(out)
    em.build_emoji(out, font_path=FONT, emoji_test=test_file, progress=False)
    assert folder_files(out) == before  # byte-identical rebuild, PNGs included


def test_emoji_missing_inputs(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y fonts-noto-color-emoji"):
        em.build_emoji(tmp_path / "out", font_path=tmp_path / "nope.ttf", progress=False)
    bad_font = tmp_path / "bad.ttf"
    bad_font.write_bytes(b"not a font")
    (tmp_path / "t.txt").write_text(EMOJI_SNIPPET, encoding="utf-8")
    with pytest.raises(DataError, match="not a readable font"):
        em.build_emoji(tmp_path / "out", font_path=bad_font, emoji_test=tmp_path / "t.txt", progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.ttf", "t.txt"]  # no temporary folder left


@needs_font
@needs_emoji_test
def test_emoji_real():
    entries = em.parse_emoji_test(EMOJI_TEST.read_text(encoding="utf-8"))
    groups = {e.group for e in entries}
    assert 1300 < len(entries) < 1600 and len(groups) == 10 and "Animals & Nature" in groups
    assert len({e.subgroup for e in entries}) > 90
    by_cp = {e.codepoint: e for e in entries}
    assert by_cp[0x1F436].name == "dog face" and by_cp[0x1F436].subgroup == "animal-mammal"


@needs_font
@needs_emoji_test
def test_emoji_real_build_first_ones(tmp_path):
    out = tmp_path / "emoji"
    em.build_emoji(out, limit=40, progress=False)
    recs, meta = check_corpus(out, "emoji")
    assert (
        len(recs) == 40
        and meta["skipped"] == {}
        and meta["source"]["packages"]["fonts-noto-color-emoji"] != ""
    )
    assert recs[0]["text"] == "grinning face" and all(
        r["labels"]["group"] == "Smileys & Emotion" for r in recs
    )
    assert "SIL" in (out / "LICENSE").read_text() or "OFL" in (out / "LICENSE").read_text()

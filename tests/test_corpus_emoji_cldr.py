"""Issue 16's CLDR captions in the ``emoji`` corpus: the CLDR reader's rules on a snippet with inheritance and
drafts, the extra caption fields they add, the CLI option, then the real unicode-cldr-core package (skipped with
the command to run when missing)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora import _cldr
from anybind.corpora import emoji as em
from anybind.data.manifest import base_modality
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, read_jsonl


FONT, EMOJI_TEST, CLDR = Path(em.DEFAULT_FONT), Path(em.DEFAULT_EMOJI_TEST), Path(em.DEFAULT_CLDR)
needs_emoji = pytest.mark.skipif(
    not (FONT.exists() and EMOJI_TEST.exists()),
    reason=f"apt-get install -y {em.FONT_PACKAGE} {em.DATA_PACKAGE}",
)
needs_cldr = pytest.mark.skipif(not CLDR.is_dir(), reason=f"{CLDR} missing: apt-get install -y {_cldr.CLDR_PACKAGE}")

EMOJI_SNIPPET = """\
# Version: 15.0
# group: Smileys & Emotion
# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
# group: Animals & Nature
# subgroup: animal-mammal
1F98C                                                  ; fully-qualified     # 🦌 E3.0 deer
"""


def _ldml(locale: str, body: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<!DOCTYPE ldml SYSTEM "../../common/dtd/ldml.dtd">\n'
        f'<ldml><identity><language type="{locale}"/></identity><annotations>\n{body}</annotations></ldml>\n'
    )


@pytest.fixture
def mini_cldr(tmp_path) -> Path:
    """CLDR's common/: inheritance through supplementalData, drafts, the inherit marker, a broken file."""
    common = tmp_path / "common"
    (common / "annotations").mkdir(parents=True)
    (common / "supplemental").mkdir()
    (common / "dtd").mkdir()
    (common / "dtd" / "ldml.dtd").write_text('<!ATTLIST version cldrVersion CDATA #FIXED "99" >\n')
    (common / "supplemental" / "supplementalData.xml").write_text(
        '<supplementalData><parentLocales><parentLocale parent="root" locales="sr_Latn"/>'
        '<parentLocale parent="en_001" locales="en_GB"/></parentLocales></supplementalData>'
    )
    files = {
        "root": "",
        "en": '<annotation cp="😀">face | grin | grinning face | grin</annotation>\n'
        '<annotation cp="😀" type="tts">grinning face</annotation>\n'
        '<annotation cp="☺">face | outlined | relaxed | smile</annotation>\n'
        '<annotation cp="☺" type="tts">smiling  face</annotation>\n'
        '<annotation cp="🐉" type="tts">dragon</annotation>\n',
        "en_001": '<annotation cp="😀" type="tts">grinning face</annotation>\n',
        "en_GB": '<annotation cp="☺" type="tts">smiling face, British</annotation>\n',
        "fr": '<annotation cp="😀" type="tts">visage rieur</annotation>\n'
        '<annotation cp="☺" type="tts">visage souriant</annotation>\n'
        '<annotation cp="🦌" type="tts" draft="unconfirmed">cerf</annotation>\n',
        "fr_CA": '<annotation cp="😀" type="tts">visage avec large sourire</annotation>\n'
        '<annotation cp="☺" type="tts">visage souriant</annotation>\n'
        '<annotation cp="🦌" type="tts" draft="contributed">chevreuil</annotation>\n',
        "de": '<annotation cp="😀" type="tts">grinsendes Gesicht</annotation>\n'
        '<annotation cp="☺" type="tts">↑↑↑</annotation>\n'
        '<annotation cp="🦌" type="tts" draft="provisional">Hirsch</annotation>\n',
        "sr": '<annotation cp="😀" type="tts">лице</annotation>\n',
        "sr_Latn": '<annotation cp="😀" type="tts">lice</annotation>\n',
        "pt_PT": '<annotation cp="😀" type="tts">cara sorridente</annotation>\n',
    }
    for loc, body in files.items():
        (common / "annotations" / f"{loc}.xml").write_text(_ldml(loc, body), encoding="utf-8")
    (common / "annotations" / "zz.xml").write_text("<ldml><annotations><annotation cp=", encoding="utf-8")
    return common


def test_cldr_rules(mini_cldr):
    problems: Counter[str] = Counter()
    c = _cldr.read_cldr(mini_cldr, {"😀", "☺", "🦌"}, problems)
    assert problems == {"cldr_file_unreadable": 1} and set(c.bad_files) == {"zz.xml"} and c.version == "99"
    assert c.drafts_dropped == 2  # fr "cerf" (unconfirmed), de "Hirsch" (provisional); fr_CA's contributed kept
    assert "dragon" not in str(c.names)  # only the emoji asked for are kept
    assert (c.parent("en_GB"), c.parent("fr_CA"), c.parent("sr_Latn"), c.parent("fr")) == ("en_001", "fr", "root", "root")
    assert c.captions("😀", "grinning face") == {
        "text_keywords": "face, grin, grinning face",  # CLDR's order, repeats dropped
        "text_de": "grinsendes Gesicht",
        "text_fr": "visage rieur",
        "text_fr_ca": "visage avec large sourire",  # differs from fr
        "text_pt_pt": "cara sorridente",  # pt has no name: differs from its parent's (none)
        "text_sr": "лице",
        "text_sr_latn": "lice",  # parent root (supplementalData), not sr
    }  # no text_en: the same as the record's own name; en_001 repeats en
    got = c.captions("☺", "smiling face")
    assert got["text_en_gb"] == "smiling face, British" and "text_en" not in got  # whitespace collapsed: same
    assert "text_de" not in got  # ↑↑↑ inherits (from root: nothing)
    assert "text_fr_ca" not in got and got["text_fr"] == "visage souriant"
    assert c.captions("🦌", "deer") == {"text_fr_ca": "chevreuil"}  # fr's only name was a draft
    assert c.captions("😀", "grinning face, renamed")["text_en"] == "grinning face"
    assert all(base_modality(k) == "text" for k in c.captions("😀", "x"))


@needs_emoji
def test_emoji_cldr_captions_only_add_fields(mini_cldr, tmp_path):
    test_file = tmp_path / "emoji-test.txt"
    test_file.write_text(EMOJI_SNIPPET, encoding="utf-8")
    plain, with_cldr = tmp_path / "plain", tmp_path / "cldr"
    em.build_emoji(plain, emoji_test=test_file, cldr_dir=None, progress=False)
    em.build_emoji(with_cldr, emoji_test=test_file, cldr_dir=mini_cldr, progress=False)
    a, meta = check_corpus(with_cldr, "emoji", splits=False, decode=True)
    b = read_jsonl(plain / "manifest.jsonl")
    assert [{k: v for k, v in r.items() if not k.startswith("text_")} for r in a] == b  # text, splits... unchanged
    assert [list(r)[:4] for r in a] == [["id", "split", "text", "image"]] * 3
    assert a[0]["text_keywords"] == "face, grin, grinning face" and a[0]["text_fr_ca"] == "visage avec large sourire"
    assert "text_keywords" not in a[2] and a[2]["text_fr_ca"] == "chevreuil"
    assert meta["problems"] == {"cldr_file_unreadable": 1}
    assert meta["cldr"]["without_annotation"] == ["U+1F98C"] and meta["cldr"]["version"] == "99"
    assert meta["source"]["packages"][_cldr.CLDR_PACKAGE] == "unknown"  # not the installed folder
    again = tmp_path / "cldr2"
    em.build_emoji(again, emoji_test=test_file, cldr_dir=mini_cldr, progress=False)
    assert folder_files(with_cldr) == folder_files(again)
    with pytest.raises(DataError, match=f"apt-get install -y {_cldr.CLDR_PACKAGE}"):
        em.build_emoji(tmp_path / "x", emoji_test=test_file, cldr_dir=tmp_path / "nothing", progress=False)


@needs_emoji
def test_cli_corpus_emoji_cldr(mini_cldr, tmp_path):
    test_file = tmp_path / "emoji-test.txt"
    test_file.write_text(EMOJI_SNIPPET, encoding="utf-8")
    runner = CliRunner()
    base = ["corpus", "emoji", "--emoji-test", str(test_file)]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--cldr", str(mini_cldr)])
    assert res.exit_code == 0, res.output
    assert read_jsonl(tmp_path / "a" / "manifest.jsonl")[0]["text_fr"] == "visage rieur"
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--no-cldr"])
    assert res.exit_code == 0
    assert not any(k.startswith("text_") for r in read_jsonl(tmp_path / "b" / "manifest.jsonl") for k in r)
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--cldr", str(tmp_path / "none")])
    assert res.exit_code == 2 and "error:" in res.output and _cldr.CLDR_PACKAGE in res.output


@needs_emoji
@needs_cldr
def test_emoji_real_cldr(tmp_path):
    out = tmp_path / "emoji"
    em.build_emoji(out, limit=30, progress=False)
    recs, meta = check_corpus(out, "emoji", splits=False, decode=True)
    plain = tmp_path / "plain"
    em.build_emoji(plain, limit=30, cldr_dir=None, progress=False)
    assert [r["text"] for r in recs] == [r["text"] for r in read_jsonl(plain / "manifest.jsonl")]
    fields = Counter(k for r in recs for k in r if k.startswith("text_"))
    assert fields["text_keywords"] == fields["text_fr"] == fields["text_ja"] == fields["text_de"] == 30
    assert len(fields) >= 100 and all(base_modality(k) == "text" for k in fields)
    assert "text_en" not in fields  # CLDR's English names are emoji-test's
    assert meta["cldr"]["locales_read"] >= 140 and meta["cldr"]["version"] == "41"
    assert meta["source"]["packages"][_cldr.CLDR_PACKAGE] != "unknown" and "CLDR" in (out / "SOURCE.md").read_text()
    assert recs[0]["text_fr"] == "visage rieur" and recs[0]["text_keywords"].startswith("face, grin")

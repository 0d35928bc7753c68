"""The icons corpus (Papirus names as captions): the name rule on a table of real names and on generated ones, then
small builds on the real papirus-icon-theme package (skipped with the command to run when it is missing): counts,
a byte-identical rebuild, stable splits, a corrupt SVG counted and skipped, a missing theme named in one line.
Nothing is encoded with a model."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anybind.corpora import icons
from anybind.corpora.icons_names import (
    BRAND_TOKENS,
    COLOUR_VARIANTS,
    DEFAULT_CONTEXTS,
    FORMAT_TOKENS,
    GENERIC_TOKENS,
    is_word,
    name_tokens,
)
from anybind.corpora.icons_themes import THEMES
from anybind.corpora.words import DEFAULT_WORDS, WORDS_PACKAGE, load_words
from anybind.data.manifest import hash_split
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, needs

THEME = Path(icons.DEFAULT_ROOT)
needs_theme = needs(THEME / "64x64", icons.PACKAGE)
needs_words = needs(Path(DEFAULT_WORDS), WORDS_PACKAGE)


@pytest.fixture(scope="module")
def words() -> frozenset[str]:
    w = load_words(DEFAULT_WORDS, lower_only=True)
    if w is None:
        pytest.skip(f"{DEFAULT_WORDS} missing: apt-get install -y {WORDS_PACKAGE}")
    return w


# real names of papirus-icon-theme 20230104-2, 64x64, and what the rule makes of them
REAL_NAMES = [
    ("folder-documents", "places", "folder documents"),
    ("audio-headphones", "devices", "audio headphones"),
    ("applications-games", "apps", "applications games"),
    ("preferences-desktop-keyboard", "apps", "preferences desktop keyboard"),
    ("gnome-dev-keyboard", "devices", "keyboard"),
    ("text-x-python", "mimetypes", "text python"),
    ("application-x-trash", "mimetypes", "trash"),
    ("cs-cat-admin", "apps", "admin"),
    ("user-trash-full", "places", "user trash full"),
    ("org.gnome.Calculator", "apps", "reverse_dns"),
    ("io.github.celluloid_player.Celluloid", "apps", "reverse_dns"),
    ("firefox", "apps", "app_name"),
    ("call-of-duty", "apps", "app_name"),
    ("pocket", "apps", "app_name"),
    ("libreoffice7.3-math", "apps", "digits"),
    ("steam_icon_38700", "apps", "digits"),
    ("folder-blue-documents", "places", "colour_variant"),
    ("user-yaru-home", "places", "colour_variant"),
    ("application-pdf", "mimetypes", "not_words"),  # PDF is an acronym in the word list, not a lower-case word
    ("drive-harddisk", "devices", "not_words"),
    ("gnome-linux", "apps", "not_words"),  # Linux: a proper noun
    ("application-x-generic", "mimetypes", "generic"),
    # brand and product names the word list accepts (builder version 3)
    ("application-vnd.google-apps.form", "mimetypes", "brand"),
    ("application-vnd.adobe.flash.movie", "mimetypes", "brand"),
    ("application-vnd.ms-excel", "mimetypes", "brand"),  # "ms excel": both tokens on the list
    ("application-x-blender", "mimetypes", "brand"),
    ("folder-steam", "places", "brand"),
    ("preferences-desktop-plasma", "apps", "brand"),  # passes the apps prefix rule, then KDE Plasma
    ("audio-x-monkeys-audio", "mimetypes", "brand"),  # Monkey's Audio: the plural form counts
    # file-format, MIME and packaging jargon
    ("application-octet-stream", "mimetypes", "format"),
    ("application-x-source-rpm", "mimetypes", "format"),
    ("gnome-mime-application-x-deb", "mimetypes", "format"),
    ("text-css", "mimetypes", "format"),
    ("folder-torrent", "places", "format"),
    # left on purpose: a language, a flash memory card, the drawn apple of folder-apple is still a brand
    ("text-x-ruby", "mimetypes", "text ruby"),
    ("media-flash", "devices", "media flash"),
    ("folder-apple", "places", "brand"),
]


@needs_words
@pytest.mark.parametrize("name, context, expected", REAL_NAMES)
def test_rule_on_real_names(name, context, expected, words):
    why = icons.name_problem(name, context, words)
    if expected in icons.NAME_REASONS:
        assert why == expected
    else:
        assert why is None and icons.name_caption(name) == expected


_word_pool = ["folder", "audio", "text", "camera", "network", "printer", "media", "open", "music", "video"]
_generic_pool = sorted(GENERIC_TOKENS - {"cat", "symbolic"})  # "symbolic": its own reason (rule 9)


@needs_words
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(_word_pool), min_size=1, max_size=4),
    st.lists(st.sampled_from(_generic_pool), max_size=2),
    st.sampled_from(["-", "_", "."]),
    st.integers(0, 9),
)
def test_rule_properties(words, toks, generic, sep, digit):
    name = sep.join(generic + toks)
    if re.match(r"^[a-z]{2,4}\.", name):
        assert icons.name_problem(name, "devices", words) == "reverse_dns"
        return
    # words (after generic tokens) in order, lower case, whatever the separator or case
    assert icons.name_problem(name, "devices", words) is None
    assert icons.name_caption(name) == " ".join(toks)
    assert icons.name_caption(name.upper()) == " ".join(toks)
    # a version number makes it an identifier; a made-up token makes it not words
    assert icons.name_problem(f"{name}-{toks[0]}{digit}", "devices", words) == "digits"
    assert icons.name_problem(f"{name}-zqxv", "devices", words) == "not_words"
    # the caption is made of the name's own tokens, generic ones removed
    assert set(icons.name_caption(name).split()) <= {t.lower() for t in name_tokens(name)} - GENERIC_TOKENS


@needs_theme
@needs_words
def test_stop_lists_are_live_and_read_off_real_names(words):
    """Every brand and format token is a word the list accepts (else ``not_words`` already drops it: a dead
    entry), is not a generic token (dropped before the check), and is the reason some real name of a theme read
    is dropped: nothing on the lists is made up."""
    missing = [t.package for t in THEMES.values() if not Path(t.root).is_dir()]
    if missing:
        pytest.skip(f"themes missing: apt-get install -y {' '.join(missing)}")
    stops = BRAND_TOKENS | FORMAT_TOKENS
    assert not BRAND_TOKENS & FORMAT_TOKENS and not stops & GENERIC_TOKENS
    assert all(is_word(t, words) for t in stops)
    hit: set[str] = set()
    for ctx, theme in ((c, t) for t in THEMES.values() for c in DEFAULT_CONTEXTS):
        for p in (Path(theme.root) / str(theme.folder(ctx))).iterdir():
            why = icons.name_problem(p.stem, ctx, words)
            if why in ("brand", "format"):
                low = {t.lower() for t in name_tokens(p.stem)}
                hit |= {t for t in stops if t in low or t + "s" in low}
    assert hit == stops


@needs_words
@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(_word_pool), min_size=1, max_size=3),
    st.sampled_from(sorted(BRAND_TOKENS | FORMAT_TOKENS)),
    st.integers(0, 3),
    st.booleans(),
)
def test_a_stop_token_anywhere_drops_the_name(words, toks, stop, at, plural):
    plural = plural and not stop.endswith("s")  # "css", "rss": no plural of a plural-looking token
    name = "-".join([*toks[:at], stop + ("s" if plural else ""), *toks[at:]])
    assert icons.name_problem(name, "mimetypes", words) == ("brand" if stop in BRAND_TOKENS else "format")
    assert icons.name_problem("-".join(toks), "mimetypes", words) is None  # the same name without it passes


@needs_theme
def test_colour_variants_are_the_themes():
    """The documented folder colours are exactly those Papirus has both a folder and a user home in, and Numix's
    ``purple`` (its ``<colour>-folder-*`` sets)."""
    places = {p.stem for p in (THEME / "64x64" / "places").iterdir()}
    found = {n.split("-", 1)[1] for n in places if n.startswith("folder-") and f"user-{n.split('-', 1)[1]}-home" in places}
    assert found == set(COLOUR_VARIANTS) - {"purple"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    if not (THEME / "64x64").is_dir() or not Path(DEFAULT_WORDS).is_file():
        pytest.skip(f"{THEME} or {DEFAULT_WORDS} missing: apt-get install -y {icons.PACKAGE} {WORDS_PACKAGE}")
    out = tmp_path_factory.mktemp("icons") / "icons"
    summary = icons.build_icons(out, themes=("papirus",), limit=25, size=64, progress=False)
    return out, summary


def test_small_build_counts(small):
    out, summary = small
    recs, meta = check_corpus(out, "icons", decode=True)
    files = meta["files"]
    assert files["svg"] == 4 * 25  # the first 25 real files of each of the 4 contexts
    # every file is a record or dropped for one reason
    assert len(recs) + meta["dropped"] == files["svg"] == len(recs) + sum(summary.skipped.values())
    assert meta["name_rule"]["dropped_total"] == sum(meta["skipped"].get(r, 0) for r in icons.NAME_REASONS)
    assert meta["skipped"]["colour_variant"] > 0 and meta["skipped"]["digits"] > 0  # the first places are colours
    # the first mimetypes hold brands ("adobe flash movie", "google apps drawing") and formats ("octet stream")
    assert meta["skipped"]["brand"] > 0 and meta["skipped"]["format"] > 0
    assert meta["alias_rule"]["brand"] > 0
    stops = BRAND_TOKENS | FORMAT_TOKENS
    for r in recs:  # no caption of a kept record holds a stop token
        for cap in [r["text"], *r.get("text_aliases", "").split("; ")]:
            assert not stops & {*cap.split(), *(t[:-1] for t in cap.split() if t.endswith("s"))}
    assert sum(meta["alias_rule"].values()) == files["links"]["to_listed_file"]
    for r in recs:
        assert r["split"] == hash_split(r["text"])
        assert r["text"] == r["text"].lower() and r["labels"]["context"] == r["id"].split("/")[1]
        assert r["labels"]["theme"] == "papirus"
        assert r["image"] == f"media/{r['id']}.png"
    by_id = {r["id"]: r for r in recs}
    assert by_id["papirus/devices/audio-headphones"]["text"] == "audio headphones"
    assert "audio headset" in by_id["papirus/devices/audio-headphones"]["text_aliases"].split("; ")
    assert "GPL-3" in (out / "LICENSE").read_text(encoding="utf-8")
    assert list(meta["source"]["themes"]) == ["papirus"]
    assert meta["source"]["themes"]["papirus"]["package"] == icons.PACKAGE


def test_rebuild_is_byte_identical(small, tmp_path):
    out, _ = small
    again = tmp_path / "again"
    icons.build_icons(again, themes=("papirus",), limit=25, size=64, progress=False)
    a, b = folder_files(out), folder_files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    # and rebuilt in place (an earlier build of the same corpus is replaced)
    icons.build_icons(again, themes=("papirus",), limit=25, size=64, progress=False)
    assert folder_files(again) == a


@needs_theme
@needs_words
def test_corrupt_svg_counted_and_skipped(tmp_path):
    src = THEME / "64x64" / "devices"
    copy = tmp_path / "theme" / "64x64" / "devices"
    copy.mkdir(parents=True)
    for name in ("audio-card.svg", "audio-headphones.svg", "battery.svg", "audio-headset.svg"):
        p = src / name
        if p.is_symlink():
            os.symlink(os.readlink(p), copy / name)
        else:
            shutil.copyfile(p, copy / name)
    (copy / "battery.svg").write_bytes((src / "battery.svg").read_bytes()[:200])  # cut mid-document
    (copy / "printer.svg").write_bytes(b"\x89PNG not an svg")
    out = tmp_path / "out"
    summary = icons.build_icons(out, root=tmp_path / "theme", contexts=("devices",), size=64, progress=False)
    recs, meta = check_corpus(out, "icons", decode=True)
    assert summary.skipped["bad_render"] == 2 and set(meta["skipped_ids"]["bad_render"]) == {
        "theme/devices/battery", "theme/devices/printer"}  # fmt: skip
    assert all("\n" not in why and str(tmp_path) not in why for why in meta["bad_files"].values())
    assert {r["id"] for r in recs} == {"theme/devices/audio-card", "theme/devices/audio-headphones"}
    assert meta["source"]["themes"]["theme"]["version"] == "unknown"  # not the package's folder


def test_missing_theme_is_one_line(tmp_path):
    with pytest.raises(DataError) as e:
        icons.build_icons(tmp_path / "out", root=tmp_path / "no-theme", progress=False)
    msg = str(e.value)
    assert "\n" not in msg and f"apt-get install -y {icons.PACKAGE}" in msg and "no-theme" in msg
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_another_folder(small, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataError):
        icons.build_icons(other, limit=1, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_help_and_bench_registration(small):
    from typer.testing import CliRunner

    from anybind.bench.transfer_systems import corpus_builders
    from anybind.bench.tuxpaint import build_once, up_to_date
    from anybind.cli import app

    res = CliRunner().invoke(app, ["corpus", "icons", "--help"])
    assert res.exit_code == 0 and "anybind corpus icons --out" in res.output
    out, _ = small
    builders = corpus_builders()
    assert "icons" in builders
    work = out.parent  # build_once finds the built corpus in work/icons and does not rebuild it
    before = (out / "manifest.jsonl").read_bytes()
    got = build_once(work, "icons", icons.build_icons, themes=("papirus",), limit=25, size=64)
    assert got == out / "manifest.jsonl" and (out / "manifest.jsonl").read_bytes() == before
    assert json.loads((out / "corpus.json").read_text())["builder"]["limit"] == 25
    assert not up_to_date(out, icons.build_icons)  # the bench's own (all files, full size) would be rebuilt
    # the themes are recorded too: the same limit and size from other themes is another corpus
    assert json.loads((out / "corpus.json").read_text())["builder"]["themes"] == ["papirus"]
    assert not up_to_date(out, icons.build_icons, themes=("papirus", "tango"), limit=25, size=64)


@needs_words
@pytest.mark.parametrize("name", ["-", "_", "+", "-_.+"])
def test_name_of_separators_only_is_a_reason_not_a_crash(name, words):
    for ctx in ("apps", "devices"):
        assert icons.name_problem(name, ctx, words) == "only_generic"


@needs_words
def test_missing_context_folder_is_one_line(tmp_path):
    """A context folder the theme does not have (a typo: ``--context app``) is named, not skipped silently."""
    (tmp_path / "theme" / "64x64" / "devices").mkdir(parents=True)
    with pytest.raises(DataError) as e:
        icons.build_icons(tmp_path / "out", root=tmp_path / "theme", contexts=("devices", "app"), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "app" in msg and "devices" in msg
    assert not (tmp_path / "out").exists()


def test_failed_rebuild_keeps_the_good_folder(small, tmp_path, monkeypatch):
    """A build that dies mid-way (the third drawing raises) leaves the earlier good build as it was, no half
    folder beside it."""
    import anybind.data.svg as svg

    out = tmp_path / "icons"
    icons.build_icons(out, themes=("papirus",), limit=5, size=32, progress=False)
    before = folder_files(out)
    real, calls = svg.render_svg, []

    def dies(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed mid-build")
        return real(*a, **k)

    monkeypatch.setattr(svg, "render_svg", dies)
    with pytest.raises(RuntimeError):
        icons.build_icons(out, themes=("papirus",), limit=5, size=32, progress=False)
    assert len(calls) == 3 and folder_files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icons"]


@needs_theme
@needs_words
def test_app_logo_is_not_captioned_through_a_mimetype_link(tmp_path):
    """``apps/glade.svg`` (Glade's logo) is linked as ``mimetypes/application-x-glade``: the picture is an app logo,
    so the link's name is held to the apps rule too and the logo is dropped as ``app_name``, not kept as "glade".
    ``apps/skanlite`` has the same bytes as the real ``devices/scanner``: a device picture, kept as "scanner"."""
    src = THEME / "64x64"
    theme = tmp_path / "theme" / "64x64"
    for rel in ("apps/glade.svg", "apps/utilities-terminal.svg", "mimetypes/application-x-glade.svg",
                "mimetypes/text-x-python.svg", "apps/skanlite.svg", "devices/scanner.svg"):  # fmt: skip
        (theme / rel).parent.mkdir(parents=True, exist_ok=True)
        p = src / rel
        os.symlink(os.readlink(p), theme / rel) if p.is_symlink() else shutil.copyfile(p, theme / rel)
    assert (theme / "mimetypes/application-x-glade.svg").is_symlink()
    out = tmp_path / "out"
    icons.build_icons(out, root=tmp_path / "theme", contexts=("apps", "devices", "mimetypes"), size=32, progress=False)
    recs, meta = check_corpus(out, "icons")
    assert "theme/apps/glade" in meta["skipped_ids"]["app_name"] and meta["alias_rule"] == {"app_name": 1, "kept": 1}
    assert meta["duplicate_of"] == {"theme/devices/scanner": "theme/apps/skanlite"}
    assert {r["id"]: r["text"] for r in recs} == {"theme/apps/utilities-terminal": "utilities terminal",
                                                  "theme/apps/skanlite": "scanner",
                                                  "theme/mimetypes/text-x-python": "text python"}  # fmt: skip


@needs_theme
@needs_words
def test_a_logo_link_counts_as_app_name_before_brand_or_format(tmp_path):
    """A link's reason is the first rule that applies, the logo's apps rule (4) included: Wine's logo linked as
    ``application-x-ms-shortcut`` and Ark's as ``application-x-tar`` are ``app_name`` in ``alias_rule``, not
    ``brand`` / ``format`` (rules 7, 8); a brand link to a document picture stays ``brand``."""
    src = THEME / "64x64"
    theme = tmp_path / "theme" / "64x64"
    for rel in ("apps/wine.svg", "apps/ark.svg", "apps/utilities-terminal.svg", "mimetypes/x-office-document.svg",
                "mimetypes/application-x-ms-shortcut.svg", "mimetypes/application-x-tar.svg",
                "mimetypes/application-vnd.google-apps.document.svg"):  # fmt: skip
        (theme / rel).parent.mkdir(parents=True, exist_ok=True)
        p = src / rel
        os.symlink(os.readlink(p), theme / rel) if p.is_symlink() else shutil.copyfile(p, theme / rel)
    out = tmp_path / "out"
    icons.build_icons(out, root=tmp_path / "theme", contexts=("apps", "mimetypes"), size=32, progress=False)
    recs, meta = check_corpus(out, "icons")
    assert meta["alias_rule"] == {"app_name": 2, "brand": 1}
    assert set(meta["skipped_ids"]["app_name"]) == {"theme/apps/ark", "theme/apps/wine"}
    assert {r["id"] for r in recs} == {"theme/apps/utilities-terminal", "theme/mimetypes/x-office-document"}

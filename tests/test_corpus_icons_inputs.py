"""The icons corpus refuses inputs that would build nothing useful, in one line, before any folder is written: a
``limit`` or ``size`` below 1 (``--size 0`` drew at the SVG's own width, ``--size -5`` blamed every file as a
corrupt SVG), a theme folder with no SVG icons (Adwaita's ``64x64`` holds PNGs: an empty corpus, exit 0), and
SVG files none of whose names passes the rule (real Papirus logos)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora import icons
from anybind.corpora.words import DEFAULT_WORDS, WORDS_PACKAGE
from anybind.errors import DataError

from corpus_checks import needs

THEME = Path(icons.DEFAULT_ROOT)
needs_theme = needs(THEME / "64x64", icons.PACKAGE)
needs_words = needs(Path(DEFAULT_WORDS), WORDS_PACKAGE)


def _theme(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (tmp_path / "theme" / "64x64" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "theme" / "64x64" / rel).write_bytes(data)
    return tmp_path / "theme"


def _refused(tmp_path: Path, *words: str, **kw) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        icons.build_icons(out, progress=False, **kw)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not out.exists()


@needs_theme
@needs_words
@pytest.mark.parametrize("key, value", [("limit", 0), ("limit", -2), ("size", 0), ("size", -5)])
def test_limit_and_size_below_one_are_refused(tmp_path, key, value):
    _refused(tmp_path, key, str(value), contexts=("devices",), **{"limit": 3, key: value})


@needs_words
def test_a_theme_without_svg_icons_is_refused(tmp_path):
    """A PNG theme (the layout of Adwaita, hicolor) has no ``.svg`` file: named, not an empty corpus."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    root = _theme(tmp_path, {"devices/audio-card.png": png, "places/folder.png": png})
    _refused(tmp_path, "no .svg", str(root / "64x64"), root=root, contexts=("devices", "places"))


@needs_theme
@needs_words
def test_svg_files_none_kept_is_refused(tmp_path):
    """Real Papirus app logos only: every name fails the rule (``app_name``), which the error names."""
    src = THEME / "64x64" / "apps"
    root = _theme(tmp_path, {f"apps/{n}.svg": (src / f"{n}.svg").read_bytes() for n in ("firefox", "gimp")})
    _refused(tmp_path, "no icon kept", "app_name 2", root=root, contexts=("apps",), size=32)


@needs_theme
@needs_words
def test_cli_says_it_in_one_line(tmp_path):
    res = CliRunner().invoke(app, ["corpus", "icons", "--out", str(tmp_path / "o"), "--limit", "0", "--no-install"])
    assert res.exit_code == 2 and "limit" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


@needs_words
@pytest.mark.parametrize("tail", ["..", "."])
def test_a_root_with_dots_keys_the_theme_by_its_folder(tmp_path, tail):
    """``--root ..`` (or ``.``): the theme's key is its folder's real name, never ``..`` -- ids ``../devices/...``
    and images ``media/../devices/...`` would land beside ``media``, not in it."""
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect width="16" height="16"/></svg>'
    root = _theme(tmp_path, {"devices/audio-card.svg": svg})
    (root / "sub").mkdir()
    out = tmp_path / "out"
    icons.build_icons(out, root=root / "sub" / ".." if tail == ".." else root / ".", contexts=("devices",), size=16,
                      install=False, progress=False)
    rec = json.loads((out / "manifest.jsonl").read_text(encoding="utf-8"))
    assert rec["id"] == "theme/devices/audio-card" and rec["image"] == "media/theme/devices/audio-card.png"
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE", "SOURCE.md", "corpus.json", "manifest.jsonl", "media"]


@needs_theme
@needs_words
def test_size_dir_of_the_papirus_root_is_read(tmp_path):
    """``--root /usr/share/icons/Papirus --size-dir 48x48`` reads 48x48 (version 4 read 64x64 and said nothing)."""
    out = tmp_path / "out"
    icons.build_icons(out, root=THEME, size_dir="48x48", contexts=("devices",), limit=3, size=16, install=False,
                      progress=False)
    meta = json.loads((out / "corpus.json").read_text(encoding="utf-8"))
    assert meta["source"]["themes"]["papirus"]["folders"] == {"devices": "48x48/devices"}

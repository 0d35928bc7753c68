"""Issue 16's ``ktuberling`` corpus (sprites + words + human recordings).

Rules are tested on a synthetic KTuberling folder with corrupt and missing files; real-data tests need the Debian
package that scripts/bootstrap-debian.sh installs and skip with the command to run when it is missing.  The whole
real KTuberling build takes over a minute, so real data is tested on a few themes with a limit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anybind.cli import app
from anybind.corpora import ktuberling as kt
from anybind.corpora._svg_sprites import SvgScene, visible_fraction
from anybind.data.manifest import base_modality, hash_split
from anybind.errors import DataError

from corpus_checks import check_corpus, folder_files, read_jsonl

KT_ROOT = Path(kt.DEFAULT_ROOT)
needs_kt = pytest.mark.skipif(not KT_ROOT.is_dir(), reason=f"{KT_ROOT} missing: apt-get install -y {kt.PACKAGE}")


SCENE = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100">
  <defs>
    <linearGradient id="g1"><stop offset="0" stop-color="#00f"/><stop offset="1" stop-color="#0f0"/></linearGradient>
    <linearGradient id="g2" xlink:href="#g1" x1="0" x2="1"/>
  </defs>
  <rect id="background" width="100" height="100" fill="#888"/>
  <g id="layer">
    <rect id="box" x="10" y="10" width="20" height="10" fill="#f00"/>
    <rect id="grad" x="40" y="40" width="10" height="10" fill="url(#g2)"/>
    <g transform="translate(120,0)"><circle id="moved" cx="5" cy="5" r="5" fill="#000"/></g>
    <g style="display:none"><rect id="hidden" x="60" y="60" width="5" height="5" fill="#00f"/></g>
    <g id="empty"/>
    <rect id="white" x="70" y="10" width="10" height="10" fill="#fff"/>
  </g>
</svg>
"""

THEME = """<playground gameboard="mini.svg" desktop="mini.desktop" bgcolor="#fff">
  <object name="box" sound="pizzeria_tomato"/>
  <object name="grad" sound="tv_fireengine"/>
  <object name="moved" sound="ball"/>
  <object name="hidden" sound="bow"/>
  <object name="empty" sound="ball"/>
  <object name="white" sound="ball"/>
  <object name="nope" sound="ball"/>
  <object name="box" sound="pizzeria_tomato"/>
  <object name="nosound"/>
</playground>
"""


def _wav(path: Path, freq: float) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")


def _soundtheme(path: Path, code: str, sounds: dict[str, str]) -> None:
    lines = "".join(f'  <sound name="{k}" file="{v}"/>\n' for k, v in sounds.items())
    path.write_text(f'<language code="{code}">\n{lines}</language>\n', encoding="utf-8")


@pytest.fixture
def mini_kt(tmp_path) -> Path:
    """A KTuberling folder: one good theme with every object problem, a broken theme, a corrupt scene, and
    sound themes with a missing file, a corrupt file, a path leaving sounds/, a copied language, bad XML."""
    root = tmp_path / "ktuberling"
    pics, sounds = root / "pics", root / "sounds"
    pics.mkdir(parents=True)
    (pics / "mini.svg").write_text(SCENE, encoding="utf-8")
    (pics / "mini.theme").write_text(THEME, encoding="utf-8")
    (pics / "mini.desktop").write_text("[KTuberlingTheme]\nName=Mini\nName[fr]=Mini fr\n", encoding="utf-8")
    (pics / "broken.theme").write_text('<playground gameboard="x.svg"', encoding="utf-8")
    (pics / "badsvg.theme").write_text(
        '<playground gameboard="badsvg.svgz"><object name="a" sound="ball"/><object name="b" sound="ball"/>'
        "</playground>",
        encoding="utf-8",
    )
    (pics / "badsvg.svgz").write_bytes(b"\x1f\x8b\x08\x00garbage, not gzip")
    sounds.mkdir()
    _soundtheme(sounds / "en.soundtheme", "en", {
        "pizzeria_tomato": "en/tomato.wav", "tv_fireengine": "en/fireengine.wav",
        "ball": "en/ball.wav", "bow": "en/bow.wav", "cigar": "en/cigar.wav",
    })  # fmt: skip
    for name, f in [("tomato", 440), ("fireengine", 550), ("ball", 660), ("cigar", 330)]:
        _wav(sounds / "en" / f"{name}.wav", f)  # en/bow.wav is missing
    _soundtheme(sounds / "fr.soundtheme", "fr", {
        "pizzeria_tomato": "fr/tomate.wav", "ball": "fr/ballon.wav", "tv_fireengine": "../../pics/mini.svg",
    })  # fmt: skip
    _wav(sounds / "fr" / "tomate.wav", 220)
    (sounds / "fr" / "ballon.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")  # corrupt
    _soundtheme(sounds / "sr.soundtheme", "sr", {"pizzeria_tomato": "sr/paradajz.wav"})
    _soundtheme(sounds / "sr@latin.soundtheme", "sr@latin", {"pizzeria_tomato": "sr@latin/paradajz.wav"})
    _wav(sounds / "sr" / "paradajz.wav", 300)
    (sounds / "sr@latin").mkdir()
    (sounds / "sr@latin" / "paradajz.wav").write_bytes((sounds / "sr" / "paradajz.wav").read_bytes())
    (sounds / "zz.soundtheme").write_text("<language code='zz'><sound name=", encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "sound, word",
    [
        ("pizzeria_olive", "olive"),
        ("tv_breakdown_lorry", "breakdown lorry"),
        ("robot_workshop_eye", "eye"),
        ("tux-arrows", "arrows"),
        ("kid-tux", "kid tux"),
        ("whitch-tux", "witch tux"),
        ("egypt_palmtree", "palm tree"),
        ("pizzeria_brocolli", "broccoli"),
        ("bow", "bow tie"),
        ("tux-bow", "bow"),
        ("eyebrow", "eyebrow"),
        ("tv_", "tv"),
    ],
)
def test_english_word(sound, word):
    assert kt.english_word(sound) == word


def test_svg_scene_cuts_one_element(mini_kt):
    scene = SvgScene(mini_kt / "pics" / "mini.svg")
    box = scene.render("box", 64)
    a = np.asarray(box)
    assert box.size == (64, 64) and box.mode == "RGBA"
    assert tuple(a[32, 32]) == (255, 0, 0, 255)  # the red box fills the middle, nothing of the grey background
    rows = np.nonzero(a[..., 3].any(axis=1))[0]
    assert 14 <= rows[0] <= 18 and 46 <= rows[-1] <= 50  # 2:1 box centred, full width, half height
    assert a[..., 3].any(axis=0).sum() >= 58
    g = np.asarray(scene.render("grad", 32))[16, :, :3].astype(int)
    assert g[2, 2] > g[2, 1] and g[-3, 1] > g[-3, 2]  # blue -> green: the gradient's chain of hrefs followed
    assert scene.render("moved", 32) is not None  # outside the canvas (within half its size) and transformed
    assert scene.render("hidden", 32) is not None  # drawn by id even though its layer is display:none
    assert scene.render("empty", 32) is None
    assert visible_fraction(scene.render("white", 32)) == 0.0 and visible_fraction(box) > 0.95
    with pytest.raises(DataError, match="no element with id 'nope'"):
        scene.render("nope")


def test_svg_scene_paints_an_inherited_gradient_in_every_use(tmp_path):
    """A sprite whose gradient inherits its stops through xlink:href (as Inkscape writes them), used by three squares
    and by a group shown through <use>: CairoSVG alone (the sprites were drawn with it directly) left every other
    square transparent; drawn as anybind renders SVG, all four squares are red."""
    path = tmp_path / "scene.svg"
    path.write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="400" height="100">'
        '<defs><linearGradient id="base"><stop offset="0" stop-color="red"/><stop offset="1" stop-color="red"/>'
        '</linearGradient><linearGradient id="g" xlink:href="#base"/><g id="sym"><linearGradient id="h" '
        'xlink:href="#base"/><rect width="100" height="100" fill="url(#h)"/></g></defs>'
        '<g id="s"><rect width="100" height="100" fill="url(#g)"/><rect x="100" width="100" height="100" '
        'fill="url(#g)"/><rect x="200" width="100" height="100" fill="url(#g)"/><use xlink:href="#sym" x="300"/>'
        "</g></svg>"
    )
    a = np.asarray(SvgScene(path).render("s", 64))  # 400x100 in the middle of a square: 16 pixels a square
    centres = [tuple(int(v) for v in a[32, x]) for x in (10, 26, 42, 58)]
    assert centres == [(255, 0, 0, 255)] * 4, centres


def test_svg_scene_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.svgz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match="corrupt gzip|truncated gzip") as e:
        SvgScene(bad)
    assert "\n" not in str(e.value)
    ent = tmp_path / "ent.svg"
    ent.write_text('<!DOCTYPE svg [<!ENTITY a "aaaa">]><svg xmlns="http://www.w3.org/2000/svg">&a;</svg>')
    with pytest.raises(DataError, match="not a well-formed SVG"):
        SvgScene(ent)
    nosize = tmp_path / "nosize.svg"
    nosize.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="100%"/>')
    with pytest.raises(DataError, match="cannot size the scene"):
        SvgScene(nosize)


def test_ktuberling_mini_build_counts_every_problem(mini_kt, tmp_path):
    out = tmp_path / "kt"
    summary = kt.build_ktuberling(out, root=mini_kt, size=64, progress=True)
    recs, meta = check_corpus(out, "ktuberling", splits=False, decode=True)
    by_id = {r["id"]: r for r in recs}
    assert list(by_id) == ["mini/box", "mini/grad", "mini/moved", "mini/hidden"]
    assert {i: r["text"] for i, r in by_id.items()} == {
        "mini/box": "tomato", "mini/grad": "fire engine", "mini/moved": "ball", "mini/hidden": "bow tie",
    }  # fmt: skip
    assert meta["skipped_ids"] == {
        "bad_scene": ["badsvg/a", "badsvg/b"],
        "bad_theme": ["broken"],
        "blank_render": ["mini/empty"],
        "duplicate_object": ["mini/box"],
        "invisible_on_white": ["mini/white"],
        "no_sound_name": ["mini/nosound"],
        "not_in_scene": ["mini/nope"],
    }
    assert summary.skipped == {k: len(v) for k, v in meta["skipped_ids"].items()}
    assert meta["problems"] == {
        "soundtheme_unreadable": 1,  # zz
        "speech_bad_audio": 1,  # fr/ballon.wav
        "speech_file_missing": 1,  # en/bow.wav
        "speech_path_outside": 1,  # fr tv_fireengine
        "speech_same_as_other_language": 1,  # sr@latin = sr
        "theme_without_name": 1,  # badsvg has no .desktop
    }
    box = by_id["mini/box"]
    assert {k for k in box if base_modality(k) == "speech"} == {"speech", "speech_fr", "speech_sr"}
    assert box["speech"] == "media/sounds/en/tomato.wav" and box["labels"] == {
        "theme": "mini", "sound": "pizzeria_tomato",
    }  # fmt: skip
    assert not any(base_modality(k) == "speech" for k in by_id["mini/hidden"])  # its only recording is missing
    assert set(by_id["mini/moved"]) >= {"speech"} and "speech_fr" not in by_id["mini/moved"]
    assert meta["missing_files"] == ["en/bow.wav"]
    assert list(meta["bad_audio"]) == ["fr/ballon.wav", "fr:../../pics/mini.svg"]
    assert set(meta["bad_files"]) == {"broken.theme", "badsvg.svgz", "zz.soundtheme"}
    assert "\n" not in meta["bad_files"]["badsvg.svgz"]
    assert meta["unused_sounds"] == ["cigar"] and meta["speech"]["same_as_other_language"] == {"sr@latin = sr": 1}
    assert meta["themes"]["mini"] == {"name": "Mini", "scene": "mini.svg", "objects": 9, "records": 4}
    assert meta["speech"]["languages"] == 3 and meta["speech"]["clips"] == 5  # en x3, fr, sr
    assert not (out / "media" / "sounds" / "fr" / "ballon.wav").exists()  # a corrupt file is not shipped
    assert all(r["split"] == hash_split(r["text"]) for r in recs)
    # rebuilt: the same bytes everywhere
    again = tmp_path / "kt2"
    kt.build_ktuberling(again, root=mini_kt, size=64, progress=False)
    assert folder_files(out) == folder_files(again)


def test_ktuberling_limit_themes_and_errors(mini_kt, tmp_path):
    kt.build_ktuberling(tmp_path / "a", root=mini_kt, themes=["mini"], limit=2, size=32, progress=False)
    assert [r["id"] for r in read_jsonl(tmp_path / "a" / "manifest.jsonl")] == ["mini/box", "mini/grad"]
    with pytest.raises(DataError, match="no theme nope .there are: badsvg, broken, mini"):
        kt.build_ktuberling(tmp_path / "b", root=mini_kt, themes=["nope"], progress=False)
    with pytest.raises(DataError, match=f"apt-get install -y {kt.PACKAGE}"):
        kt.build_ktuberling(tmp_path / "c", root=tmp_path / "nothing", progress=False)
    with pytest.raises(ValueError, match="limit"):
        kt.build_ktuberling(tmp_path / "d", root=mini_kt, limit=0, progress=False)


def test_cli_corpus_ktuberling(mini_kt, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["corpus", "ktuberling", "--out", str(tmp_path / "k"), "--root", str(mini_kt),
                              "-t", "mini", "--size", "32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "ktuberling: 4 records" in res.output and "speech: 5 recordings in 3 languages" in res.output
    res = runner.invoke(app, ["corpus", "ktuberling", "--out", str(tmp_path / "k2"), "--root", str(mini_kt),
                              "-t", "x"])  # fmt: skip
    assert res.exit_code == 2 and "error:" in res.output and "no theme x" in res.output


# =========================================================================== ktuberling: real data


@needs_kt
def test_ktuberling_real_sources_are_all_read():
    """Every theme and sound theme of the package parses, and every sound name used gets a word."""
    objects, used = 0, set()
    for p in sorted((KT_ROOT / "pics").glob("*.theme")):
        board, desktop, objs = kt.parse_theme(p)
        assert (KT_ROOT / "pics" / board).is_file() and desktop
        objects += len(objs)
        used |= {s for _, s in objs}
    assert objects >= 450 and len(used) >= 150
    words = {s: kt.english_word(s) for s in used}
    assert all(w and w == w.lower() and "_" not in w for w in words.values())
    assert set(kt.WORDS) <= used  # no stale correction
    langs = {p.stem: kt.parse_soundtheme(p) for p in (KT_ROOT / "sounds").glob("*.soundtheme")}
    assert len(langs) >= 25 and len(langs["en"]) >= 60


@needs_kt
def test_ktuberling_real_handful(tmp_path):
    out = tmp_path / "kt"
    kt.build_ktuberling(out, themes=["pizzeria", "robin-tux"], limit=4, size=96, progress=False)
    recs, meta = check_corpus(out, "ktuberling", splits=False, decode=True)
    assert len(recs) == 8 and meta["source"]["version"] != "unknown"
    assert [r["text"] for r in recs[:4]] == ["pepper", "pepper", "pepper", "pineapple"]
    fields = meta["counts"]["fields"]
    assert fields["speech"] == 4  # English recordings exist for Pizzeria, not for Robin Tux
    assert fields["speech_fr"] == fields["speech_ca"] == fields["speech_uk"] == 8
    assert meta["speech"]["languages"] >= 10 and meta["problems"]["speech_file_missing"] >= 1  # sounds/id/ is absent
    assert "GPL" in (out / "LICENSE").read_text()


@needs_kt
def test_ktuberling_real_copy_with_corrupt_inputs(tmp_path):
    """A copy of two real themes with a truncated scene, a corrupt recording and a deleted one."""
    import shutil

    root = tmp_path / "ktuberling"
    (root / "pics").mkdir(parents=True)
    for theme in ("pizzeria", "moon"):
        for p in (KT_ROOT / "pics").glob(f"{theme}.*"):
            shutil.copy(p, root / "pics" / p.name)
    keep = {"pizzeria_pepper", "pizzeria_pineapple", "moon_earth"}
    (root / "sounds").mkdir()
    for st in (KT_ROOT / "sounds").glob("*.soundtheme"):
        shutil.copy(st, root / "sounds" / st.name)
    files = {}
    for st in sorted((root / "sounds").glob("*.soundtheme")):
        for sound, rel in kt.parse_soundtheme(st).items():
            if sound in keep and (KT_ROOT / "sounds" / rel).is_file():
                files[(st.stem, sound)] = rel
                (root / "sounds" / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(KT_ROOT / "sounds" / rel, root / "sounds" / rel)
    moon = root / "pics" / "moon.svg"
    moon.write_bytes(moon.read_bytes()[: moon.stat().st_size // 2])
    bad = root / "sounds" / files[("fr", "pizzeria_pepper")]
    bad.write_bytes(bad.read_bytes()[:12] + b"\0" * 64)  # the RIFF header, then zeros
    (root / "sounds" / files[("uk", "pizzeria_pepper")]).unlink()

    out = tmp_path / "kt"
    kt.build_ktuberling(out, root=root, limit=4, size=64, progress=False)
    recs, meta = check_corpus(out, "ktuberling", splits=False, decode=True)
    assert [r["text"] for r in recs] == ["pepper", "pepper", "pepper", "pineapple"]
    assert meta["skipped"] == {"bad_scene": 4} and "moon.svg" in meta["bad_files"]
    assert list(meta["bad_audio"]) == [files[("fr", "pizzeria_pepper")]]
    assert files[("uk", "pizzeria_pepper")] in meta["missing_files"]
    assert meta["problems"]["speech_bad_audio"] == 1
    assert all("speech_fr" not in r and "speech_uk" not in r for r in recs[:3])
    assert recs[3]["speech_fr"] and recs[3]["speech_uk"]  # the pineapple's recordings are intact

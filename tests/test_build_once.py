"""``bench.tuxpaint.build_once``: a corpus folder in a bench's work dir is reused only when its ``corpus.json`` says
the current builder version built it with the options asked for; otherwise one warning line and a clean rebuild.
Real builds of the first emoji of the Noto font (fonts-noto-color-emoji, unicode-data; skipped with the command to
run when missing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anybind.bench.tuxpaint import build_once, builder_version, prepare_tuxpaint, up_to_date
from anybind.corpora import emoji as em
from anybind.errors import AnybindError, DataError

from corpus_checks import check_corpus, folder_files, needs

needs_emoji = needs(Path(em.DEFAULT_FONT), em.FONT_PACKAGE)
needs_emoji_test = needs(Path(em.DEFAULT_EMOJI_TEST), em.DATA_PACKAGE)
LOGGER = "anybind.bench.tuxpaint"


def stamp(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file under ``folder``: a rebuild changes them, a reuse does not."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def set_builder(folder: Path, **changes) -> None:
    meta = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    for k, v in changes.items():
        if v is None:
            meta["builder"].pop(k)
        else:
            meta["builder"][k] = v
    (folder / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The first 5 emoji, built once by the real builder (a fresh copy per test that changes it)."""
    if not Path(em.DEFAULT_FONT).is_file() or not Path(em.DEFAULT_EMOJI_TEST).is_file():
        pytest.skip(f"apt-get install -y {em.FONT_PACKAGE} {em.DATA_PACKAGE}")
    out = tmp_path_factory.mktemp("built") / "emoji"
    em.build_emoji(out, limit=5, progress=False)
    return out


def work_with(small: Path, tmp_path: Path) -> Path:
    shutil.copytree(small, tmp_path / "emoji", copy_function=shutil.copy2)
    return tmp_path


@needs_emoji
@needs_emoji_test
def test_an_older_version_is_rebuilt_once_and_an_up_to_date_one_reused(small, tmp_path, caplog):
    work = work_with(small, tmp_path)
    out = work / "emoji"
    before = stamp(out)
    with caplog.at_level("WARNING", logger=LOGGER):
        assert build_once(work, "emoji", em.build_emoji, limit=5) == out / "manifest.jsonl"
    assert stamp(out) == before and warnings(caplog) == []  # up to date: not rebuilt, nothing said
    old = str(int(em.BUILDER_VERSION) - 1)
    set_builder(out, version=old)
    with caplog.at_level("WARNING", logger=LOGGER):
        build_once(work, "emoji", em.build_emoji, limit=5)
    said = warnings(caplog)
    assert len(said) == 1 and "\n" not in said[0] and str(out) in said[0]
    assert f"anybind.corpora.emoji version {old}" in said[0] and f"version {em.BUILDER_VERSION}" in said[0]
    recs, meta = check_corpus(out, "emoji")
    assert meta["builder"]["version"] == em.BUILDER_VERSION and len(recs) == 5
    assert folder_files(out) == folder_files(small)  # replaced cleanly: the same files as a fresh build, no others
    assert sorted(p.name for p in work.iterdir()) == ["emoji"]  # no temporary or old folder left beside it
    rebuilt = stamp(out)
    assert rebuilt.keys() == before.keys() and all(rebuilt[k] != before[k] for k in before)
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOGGER):
        build_once(work, "emoji", em.build_emoji, limit=5)
    assert stamp(out) == rebuilt and warnings(caplog) == []


@needs_emoji
@needs_emoji_test
def test_other_recorded_options_or_no_builder_record_rebuild(small, tmp_path, caplog):
    work = work_with(small, tmp_path)
    out = work / "emoji"
    with caplog.at_level("WARNING", logger=LOGGER):
        build_once(work, "emoji", em.build_emoji, limit=6)  # the folder holds limit=5
    said = warnings(caplog)
    assert len(said) == 1 and "limit=5" in said[0] and "limit=6" in said[0]
    assert len(check_corpus(out, "emoji")[0]) == 6
    set_builder(out, version=None, module=None, limit=None, article=None)  # a corpus.json with an empty record
    caplog.clear()
    with caplog.at_level("WARNING", logger=LOGGER):
        build_once(work, "emoji", em.build_emoji, limit=6)
    said = warnings(caplog)
    assert len(said) == 1 and "records no builder version" in said[0] and str(out) in said[0]
    assert check_corpus(out, "emoji")[1]["builder"]["version"] == em.BUILDER_VERSION


@needs_emoji
@needs_emoji_test
def test_a_folder_without_corpus_json_is_not_replaced(small, tmp_path, caplog):
    """The warning says why, then the builder refuses to replace a folder it cannot tell is its own."""
    work = work_with(small, tmp_path)
    out = work / "emoji"
    (out / "corpus.json").unlink()
    before = folder_files(out)
    with caplog.at_level("WARNING", logger=LOGGER), pytest.raises(DataError) as e:
        build_once(work, "emoji", em.build_emoji, limit=5)
    assert "\n" not in str(e.value) and str(out) in str(e.value) and folder_files(out) == before
    assert len(warnings(caplog)) == 1 and "corpus.json is missing" in warnings(caplog)[0]


@needs_emoji
@needs_emoji_test
def test_a_link_to_an_old_build_is_refused_not_written_through(small, tmp_path):
    target = tmp_path / "shared" / "emoji"
    shutil.copytree(small, target)
    set_builder(target, version="0")
    before = folder_files(target)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "emoji").symlink_to(target)
    with pytest.raises(DataError) as e:
        build_once(tmp_path / "work", "emoji", em.build_emoji, limit=5)
    assert "\n" not in str(e.value) and "version 0" in str(e.value) and str(target) in str(e.value)
    assert folder_files(target) == before
    set_builder(target, version=em.BUILDER_VERSION)  # an up-to-date link is read as it is
    assert build_once(tmp_path / "work", "emoji", em.build_emoji, limit=5) == tmp_path / "work/emoji/manifest.jsonl"


@needs_emoji
@needs_emoji_test
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(version=st.text(min_size=1, max_size=4), limit=st.one_of(st.none(), st.integers(0, 50)),
       article=st.booleans())
def test_reused_only_when_version_and_options_match(small, tmp_path_factory, version, limit, article):
    folder = tmp_path_factory.mktemp("meta") / "emoji"
    folder.mkdir()
    shutil.copy(small / "manifest.jsonl", folder)
    shutil.copy(small / "corpus.json", folder)
    set_builder(folder, version=version)
    want = version == em.BUILDER_VERSION and limit == 5 and not article
    assert up_to_date(folder, em.build_emoji, limit=limit, article=article) is want


def test_a_wrapper_is_refused_in_one_line(tmp_path):
    with pytest.raises(AnybindError) as e:
        build_once(tmp_path, "emoji", lambda out, progress: em.build_emoji(out, progress=progress))
    assert "\n" not in str(e.value) and "BUILDER_VERSION" in str(e.value)
    assert builder_version(em.build_emoji) == ("anybind.corpora.emoji", em.BUILDER_VERSION)


def test_prepare_tuxpaint_checks_its_version_too(tmp_path):
    """An old Tux Paint build behind a link is refused before anything is installed or built."""
    from anybind.corpora import tuxpaint as tp

    target = tmp_path / "old"
    target.mkdir()
    (target / "manifest.jsonl").write_text("", encoding="utf-8")
    (target / "corpus.json").write_text(json.dumps({"name": "tuxpaint", "builder": {
        "module": "anybind.corpora.tuxpaint", "version": tp.BUILDER_VERSION + ".old"}}), encoding="utf-8")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "tuxpaint").symlink_to(target)
    with pytest.raises(DataError) as e:
        prepare_tuxpaint(tmp_path / "work")
    assert f"version {tp.BUILDER_VERSION}.old" in str(e.value) and sorted(p.name for p in target.iterdir()) == [
        "corpus.json", "manifest.jsonl"]


@needs_emoji
@needs_emoji_test
def test_an_option_its_corpus_json_does_not_record_rebuilds_and_a_misspelt_one_is_refused(small, tmp_path, caplog):
    """``cldr_dir`` is not in the builder record: a build with CLDR names cannot be told from one without, so asking
    for ``cldr_dir=None`` rebuilds (it was reused as it was, text_<locale> and all); ``limt`` is no keyword of the
    builder: refused in one line naming it, not ignored because the folder looked up to date."""
    work = work_with(small, tmp_path)
    out = work / "emoji"
    assert "cldr_dir" not in json.loads((out / "corpus.json").read_text())["builder"]
    with pytest.raises(AnybindError) as e:
        up_to_date(out, em.build_emoji, limit=5, limt=3)
    assert "\n" not in str(e.value) and "'limt'" in str(e.value) and "build_emoji" in str(e.value)
    assert any("text_keywords" in r for r in (out / "manifest.jsonl").read_text().splitlines())
    with caplog.at_level("WARNING", logger=LOGGER):
        build_once(work, "emoji", em.build_emoji, limit=5, cldr_dir=None)
    said = warnings(caplog)
    assert len(said) == 1 and "records no cldr_dir" in said[0] and str(out) in said[0]
    recs, _ = check_corpus(out, "emoji")
    assert len(recs) == 5 and not any("text_keywords" in r for r in recs)

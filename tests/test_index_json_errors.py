"""A saved index's index.json: its identity and its space copy verified, and a damaged header refused in one line
naming the file (read by the shared versioned loader, artefact_meta.read_meta; moved from the artefact-error tests)."""

import json
import re

import pytest

from anybind.errors import SpaceError
from artefact_helpers import OTHER_TEXT, cli_error, damage_header, edit_json, header_cases, tiny_space


def test_an_index_verifies_its_identity_and_its_space_copy(tmp_path):
    from anybind.index import Index, IndexError_

    Index.create(tmp_path / "ix", space=tiny_space())
    Index.open(tmp_path / "ix")  # intact: opens
    copy = tmp_path / "ix" / json.loads((tmp_path / "ix" / "index.json").read_text())["space"]
    edit_json(copy, lambda m: m["modalities"]["text"].update(encoder=OTHER_TEXT))  # the copy inside, edited
    with pytest.raises(SpaceError, match=f"{copy / 'space.json'}: saved identity .* does not match"):
        Index.open(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    del meta["identity"]
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(IndexError_, match="index.json: no space 'identity'"):
        Index.open(tmp_path / "ix", tiny_space())


INDEX_HEADERS = {  # index.json read by the shared artefact_meta.read_meta, then its fields checked: one line
    **header_cases("index.json", "index"),
    "identity-number": ({"identity": 5}, "index.json: no space 'identity'"),
    "dim-text": ({"dim": "x"}, "index.json: dim is 'x', expected a positive integer"),
    "dim-zero": ({"dim": 0}, "index.json: dim is 0, expected a positive integer"),
    "dim-missing": ({"dim": None}, "index.json: dim is None, expected a positive integer"),
    "modalities-text": ({"modalities": "text"}, "index.json: modalities is 'text', expected a list of names"),
    "space-number": ({"space": 3}, "index.json: space is 3, expected a folder name or null"),
    "ann-text": ({"ann": "x"}, "index.json: ann is 'x', expected an object or null"),
    "threshold-text": ({"ann_threshold": "1e5"}, "index.json: ann_threshold is '1e5', expected an integer"),
}


@pytest.mark.parametrize("case", sorted(INDEX_HEADERS))
def test_a_damaged_index_json_is_one_line_naming_it(tmp_path, case):
    """index.json with a string format_version (``"9"``), a bad dim, modalities, ... : before, `anybind search`
    printed a TypeError traceback (``'>' not supported between 'str' and 'int'``) or failed later, deep inside;
    now Index.open and the CLI refuse it in one line naming index.json and the bad value."""
    from anybind.index import Index, IndexError_

    space = tiny_space()
    Index.create(tmp_path / "ix", space=space)
    meta_p = tmp_path / "ix" / "index.json"
    edit, match = INDEX_HEADERS[case]
    damage_header(meta_p, edit)
    for sp in (None, space):
        with pytest.raises(IndexError_, match=match) as e:
            Index.open(tmp_path / "ix", sp)
        assert str(e.value).startswith(f"{meta_p}: ") and "\n" not in str(e.value)
    out = cli_error(["search", str(tmp_path / "ix"), "--text", "dog"])
    assert str(meta_p) in out and re.search(match, out)


def test_an_index_without_a_format_version_still_opens(tmp_path):
    """The first indexes had no format_version: read as format 0, as before."""
    from anybind.index import Index

    Index.create(tmp_path / "ix", space=tiny_space())
    meta_p = tmp_path / "ix" / "index.json"
    meta = json.loads(meta_p.read_text())
    del meta["format_version"]
    meta_p.write_text(json.dumps(meta))
    assert Index.open(tmp_path / "ix").dim == 6


def test_a_refresh_keeps_its_header_when_index_json_is_not_utf8(tmp_path):
    """An open index re-reads index.json on refresh (another process's writes); bytes that are not UTF-8 (a damaged
    or half-copied file) raised UnicodeDecodeError from deep inside. The open index keeps the header it has."""
    from anybind.index import Index

    ix = Index.create(tmp_path / "ix", space=tiny_space())
    meta_p = tmp_path / "ix" / "index.json"
    before = json.loads(meta_p.read_text())
    meta_p.write_bytes(b"\xff\xfe{}")
    assert ix.refresh() is False
    assert ix.dim == before["dim"] == 6


@pytest.mark.parametrize("case", sorted(set(INDEX_HEADERS) - {"corrupt", "not-utf8"}))
def test_a_refresh_checks_another_process_header_as_open_does(tmp_path, case):
    """An open index adopts ``index.json`` rewritten by another process on refresh (and on every write, which
    refreshes first).  It checked only the identity: a header with a string dim, ann_threshold or ann was taken
    in and failed later, deep inside (``int('1e5')`` on the next search), and one of another format was skipped
    in silence.  Now it is refused as Index.open refuses it, in one line naming the file; the open index keeps
    the header it had.  A sound rewrite is still adopted."""
    from anybind.index import Index, IndexError_

    ix = Index.create(tmp_path / "ix", space=tiny_space())
    meta_p = tmp_path / "ix" / "index.json"
    before = json.loads(meta_p.read_text())
    meta_p.write_text(json.dumps({**before, "ann_threshold": 7}))  # another process's sound rewrite
    ix.refresh()
    assert ix.meta["ann_threshold"] == 7
    edit, match = INDEX_HEADERS[case]
    meta_p.write_bytes(edit if isinstance(edit, bytes) else json.dumps({**before, **edit}).encode())
    for call in (ix.refresh, lambda: ix.delete(["nothing"])):  # a write re-reads the header first
        with pytest.raises(IndexError_, match=match) as e:
            call()
        assert str(e.value).startswith(f"{meta_p}: ") and "\n" not in str(e.value)
        assert ix.meta["ann_threshold"] == 7 and ix.dim == 6  # the header it had


def test_a_refused_refresh_does_not_lose_the_rows_another_process_added(tmp_path):
    """A refresh refused for a damaged ``index.json`` had already moved the table to its latest version, so the
    refresh after the header was repaired answered False (nothing moved): the service, which reloads its id
    lookup only when a refresh says the table moved, never saw the rows added meanwhile."""
    import numpy as np

    from anybind.index import Index, IndexError_

    ix = Index.create(tmp_path / "ix", dim=4, identity="raw-4")
    meta_p = tmp_path / "ix" / "index.json"
    other = Index.open(tmp_path / "ix")
    other.add_vectors(["a", "b"], np.eye(4, dtype=np.float32)[:2], modality="vec")
    good = meta_p.read_bytes()
    meta_p.write_text(json.dumps({**json.loads(good), "dim": "x"}))  # damaged meanwhile
    with pytest.raises(IndexError_, match="dim is 'x'"):
        ix.refresh()
    meta_p.write_bytes(good)  # repaired
    assert ix.refresh() is True
    assert len(ix.snapshot().vectors) == 2

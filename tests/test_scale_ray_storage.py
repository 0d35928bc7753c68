"""Ray Train's storage (``fit_ray(storage=...)``): a URI (``s3://``, ``gs://``, any scheme) is handed to Ray as
typed, never made a local path under this folder; a local path is made absolute as the shell names it (issue 15)."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from anybind.data.files import absolute_as_given, is_uri, location_as_given

# two characters at least: a one-letter "scheme" is a Windows drive (``C://runs``), as pyarrow reads it (Ray's storage)
SCHEMES = st.from_regex(r"[A-Za-z][A-Za-z0-9+.\-]{1,12}", fullmatch=True)
REST = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
# what is not a URI: no scheme before '://' (none at all, or one that does not start with a letter / holds another
# character), however much else it looks like one
NOT_A_SCHEME = st.one_of(st.just(""), st.from_regex(r"[0-9+.\-_ ~/][A-Za-z0-9+.\-]{0,8}", fullmatch=True),
                         st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,4}[_ ~/@][A-Za-z0-9]{0,4}", fullmatch=True))


@given(SCHEMES, REST)
def test_a_uri_is_kept_as_typed(scheme, rest):
    uri = f"{scheme}://{rest}"
    assert is_uri(uri)
    assert location_as_given(uri) == uri


@given(st.one_of(REST.filter(lambda s: "://" not in s), st.builds(lambda a, b: f"{a}://{b}", NOT_A_SCHEME, REST),
                 st.builds(lambda a, b: f"{a}:/{b}", SCHEMES, REST.filter(lambda s: not s.startswith("/")))))
def test_a_local_path_is_made_absolute_as_the_shell_names_it(path):
    if not path:
        path = "."
    assert not is_uri(path)
    assert location_as_given(path) == absolute_as_given(path)
    assert os.path.isabs(location_as_given(path))


@given(st.from_regex(r"[A-Za-z]", fullmatch=True), st.sampled_from(["://", ":/", ":\\\\", ":\\"]), REST)
def test_a_windows_drive_is_a_local_path_whatever_its_slashes(drive, sep, rest):
    """``C://runs`` is no URI with the scheme ``c`` (none has one letter) but a drive: pyarrow's filesystems, which
    Ray Train's storage opens, read it so (``IsLikelyUri``), and it is made absolute here like ``C:\\runs``."""
    path = f"{drive}{sep}{rest}"
    assert not is_uri(path)
    assert location_as_given(path) == absolute_as_given(path)


def test_a_path_object_is_local_whatever_its_text():
    """``Path`` has folded a URI's ``//`` already (``s3:/bucket``): it names a local folder."""
    assert not is_uri(Path("s3://bucket/runs"))
    assert location_as_given(Path("s3://bucket/runs")) == absolute_as_given("s3:/bucket/runs")


def _built_with(tmp_path, monkeypatch, storage):
    """What Ray Train would be handed as its storage by ``fit_ray(storage=storage)`` (no Ray started: the trainer
    is stopped where it is built)."""
    pytest.importorskip("ray.train.torch")
    import ray.train.torch

    import anybind.scale as scale
    from anybind.scale import ray_train
    from anybind.scale.shard_write import write_synthetic_shards
    from anybind.train import TrainConfig

    seen = {}

    class Built(Exception):
        pass

    def trainer(loop, *, run_config, **kw):
        seen["storage"] = run_config.storage_path
        raise Built

    monkeypatch.setattr(scale, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(ray_train, "worker_cpus", lambda workers, **kw: 1.0)
    monkeypatch.setattr(ray.train.torch, "TorchTrainer", trainer)
    shards = write_synthetic_shards(tmp_path / "s", 60, dims={"a": 4, "b": 3}, val_rows=10, rows_per_shard=30,
                                    dtype="float32")
    with pytest.raises(Built):
        ray_train.fit_ray(shards, TrainConfig(epochs=1, batch_size=8), workers=1, storage=storage)
    return seen["storage"]


@pytest.mark.parametrize("uri", ["s3://bucket/anybind runs", "gs://b/x/", "file:///srv/runs"])
def test_ray_train_is_handed_a_storage_uri_as_typed_and_nothing_is_made_here(tmp_path, monkeypatch, uri):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert _built_with(tmp_path, monkeypatch, uri) == uri
    assert list((tmp_path / "here").iterdir()) == []  # no local 's3:' / 'gs:' / 'file:' folder was made


def test_a_local_storage_is_made_absolute_and_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    assert _built_with(tmp_path, monkeypatch, "runs") == str(tmp_path / "runs")
    assert (tmp_path / "runs").is_dir()


def test_a_finished_runs_folder_is_removed_under_a_uri_too(tmp_path, caplog):
    pytest.importorskip("pyarrow")
    from anybind.scale.ray_train import _remove_run

    (tmp_path / "runs" / "fit-1" / "checkpoint").mkdir(parents=True)
    (tmp_path / "runs" / "fit-2").mkdir()
    _remove_run(f"file://{tmp_path}/runs", "fit-1")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["fit-2"]
    with caplog.at_level(logging.WARNING, logger="anybind.scale.ray_train"):
        _remove_run("nosuchscheme://bucket/runs", "fit-2")  # the space is trained: left, said in one line
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "nosuchscheme://bucket/runs/fit-2 was left" in caplog.records[0].getMessage()

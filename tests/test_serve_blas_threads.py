"""While a service is open, numpy's BLAS runs on one thread: requests run side by side in worker threads, and a
lone query's product (numpy, OpenBLAS) on several BLAS threads made them spin against each other -- a 2,022 x 256
product cost 0.1 ms of CPU on one BLAS thread and 8 ms on two, 130 ms with 64 requests at once (bench serve-load,
BENCHMARKS.md).  Closing the service gives the process its own setting back."""

from __future__ import annotations

from media_helpers import served
from threadpoolctl import threadpool_info, threadpool_limits


def _blas_threads() -> set[int]:
    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_an_open_service_runs_blas_on_one_thread_and_gives_the_setting_back(tmp_path):
    with threadpool_limits(2, user_api="blas"):  # whatever this machine's default: two, to see them change
        assert _blas_threads() == {2}
        with served(tmp_path) as client:
            assert _blas_threads() == {1}
            res = client.post("/search", json={"text": "stamp number 3", "k": 2})
            assert res.status_code == 200 and len(res.json()["hits"]) == 2, res.text
        assert _blas_threads() == {2}


def test_the_setting_comes_back_when_the_last_of_two_services_closes_in_either_order(tmp_path):
    from anybind.serve import Service

    with threadpool_limits(2, user_api="blas"):
        with served(tmp_path / "a"):
            a = Service.load(tmp_path / "a" / "space", tmp_path / "a" / "index", cache=tmp_path / "a" / "cache")
            b = Service.load(tmp_path / "a" / "space", tmp_path / "a" / "index", cache=tmp_path / "a" / "cache")
            a.close()
            assert _blas_threads() == {1}  # b and the served one still open
            b.close()
            b.close()  # twice: counted once
            assert _blas_threads() == {1}
        assert _blas_threads() == {2}  # the last one closed: this process's own setting


class _DamagedIndex:
    """An index whose rows cannot be read: the service's constructor fails after it started."""

    def snapshot(self):
        from anybind.index import IndexError_

        raise IndexError_("index: damaged")


class _NoModalities:
    modalities: list[str] = []


def test_a_service_that_fails_to_open_gives_the_setting_back():
    import pytest

    from anybind.index import IndexError_
    from anybind.serve import Service

    with threadpool_limits(2, user_api="blas"):
        with pytest.raises(IndexError_, match="damaged"):
            Service(_NoModalities(), _DamagedIndex())
        assert _blas_threads() == {2}  # nothing open: no service holds BLAS on one thread


def test_a_service_whose_warm_up_fails_or_that_is_dropped_unclosed_gives_the_setting_back(tmp_path, monkeypatch):
    import gc

    import pytest

    from anybind.errors import EncoderError
    from anybind.serve import Service

    with threadpool_limits(2, user_api="blas"):
        with served(tmp_path / "a"):
            pass  # builds the space and index
        assert _blas_threads() == {2}
        a = tmp_path / "a"
        svc = Service.load(a / "space", a / "index", cache=a / "cache", warm=False)
        assert _blas_threads() == {1}
        del svc  # never closed
        gc.collect()
        assert _blas_threads() == {2}

        def broken(self):
            raise EncoderError("image: the encoder cannot load")

        monkeypatch.setattr(Service, "warm_up", broken)
        with pytest.raises(EncoderError, match="cannot load"):
            Service.load(a / "space", a / "index", cache=a / "cache")
        gc.collect()
        assert _blas_threads() == {2}

"""The thread guard of the Ray tests (scale_helpers.within): a library call that waits forever fails its test after a
bounded time instead of hanging the run (pytest-timeout's alarm is not acted on while the main thread waits inside
Ray), and otherwise it is the call itself: its value back, its exception raised."""

import threading

import pytest
from scale_helpers import within


def test_within_gives_back_the_value_and_the_error():
    assert within(30, lambda a, b=0: a + b, 2, b=3) == 5

    def broken():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        within(30, broken)


def test_within_fails_a_call_that_does_not_return():
    release = threading.Event()

    def forever():
        release.wait(60)

    try:
        with pytest.raises(pytest.fail.Exception, match="forever still running after 0.2 s"):
            within(0.2, forever)
    finally:
        release.set()  # the thread left behind ends now

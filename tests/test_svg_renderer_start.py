"""An SVG renderer process that cannot start (split from ``test_svg_budget.py``): not a corrupt file; a start
that only timed out is tried again by the next SVG, a hard failure is remembered for a while (one caller retries
at its end) and the service says how long in ``Retry-After``; an SVG over a media limit is refused, not corrupt."""

import json
import time

import numpy as np
import pytest
from media_helpers import _corpus, _ImageLoader, _space, refused_by_every_caller
from PIL import Image
from test_svg_budget import HEAD, _broken_launch, _svg_children

from anybind.cache import FeatureCache
from anybind.data.limits import LIMITS, MediaLimits
from anybind.data.svg import check_svg, render_svg
from anybind.errors import DataError, RendererUnavailable, unusable_file
from anybind.index import Index

UNAVAILABLE = (r"not rendered: the SVG renderer process did not start within 0 s \(a busy machine\); "
               r"the file itself was not read \(try again\)")


def test_a_renderer_that_cannot_start_is_not_a_corrupt_file(tmp_path, monkeypatch, no_renderer):
    """Issue 20: a fine SVG on a machine too busy to start the renderer was "corrupt file for image: ... cannot
    start the SVG renderer process".  It is its own error, named once, and every caller that reports a skipped
    record (the manifest check, the feature cache, the index writer) says the renderer was unavailable."""
    from anybind.data.manifest import load_manifest as load

    fine = HEAD.encode() + b'<circle cx="9" cy="9" r="5"/></svg>'
    with pytest.raises(RendererUnavailable, match=rf"^fine.svg: {UNAVAILABLE}$"):
        render_svg(fine, "fine.svg", 64, MediaLimits(max_svg_seconds=30))
    assert _svg_children() == []  # the worker that did not start in time was killed

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    (tmp_path / "fine.svg").write_bytes(fine)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    lines = [{"id": "a", "image": "ok.png", "text": "a"}, {"id": "s", "image": "fine.svg", "text": "s"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    man = load(tmp_path / "m.jsonl")
    assert [r.id for r in man.records] == ["a"] and len(man.bad) == 1
    reason = man.bad[0].reason
    assert reason.startswith("SVG renderer unavailable for image: ") and "corrupt" not in reason, reason
    assert reason.count("renderer unavailable") == 1 and str(tmp_path / "fine.svg") in reason
    assert "by reason: SVG renderer unavailable for image x1" in man.report()

    bad: dict[int, str] = {}
    items = [str(tmp_path / f) for f in ("ok.png", "fine.svg")]
    X = FeatureCache(tmp_path / "cache").encode(_ImageLoader(), items, progress=False, bad=bad)
    assert list(bad) == [1] and np.isfinite(X[0]).all()
    # where only the text travels (the cache's reasons), it is still told apart from a corrupt file and a timeout
    assert unusable_file("image", bad[1]).startswith("SVG renderer unavailable for image: ")

    index = Index.build(_space(), _corpus(tmp_path / "corpus"), tmp_path / "index", cache=tmp_path / "c2")
    stats = index.add(load(tmp_path / "m.jsonl", check_media=False), cache=tmp_path / "c2")
    (rid, why), = stats.failed
    assert rid == "s" and why.startswith("SVG renderer unavailable for image: ") and "corrupt" not in why


def test_an_svg_over_a_media_limit_is_refused_not_corrupt(tmp_path, monkeypatch):
    """An SVG the estimate refuses before rendering (too much work, too much text, too deep, too many pixels) was
    "corrupt file for image".  It is its own error naming the file, the limit and how to raise it, counted under its
    own reason by the manifest check, and every other caller (feature cache, index writer, audit) tells it apart."""
    from anybind.errors import RenderRefused

    many = HEAD.encode() + b'<rect width="9" height="9"/>' * 40 + b"</svg>"
    low = MediaLimits(max_svg_work=20, max_svg_seconds=None)
    hint = (r"; not rendered: refused before rendering \(to render it, raise max_svg_work: "
            r"anybind.data.limits.using_limits\(MediaLimits\(max_svg_work=...\)\), or in the service "
            r"ServeConfig.max_svg_work\)$")
    with pytest.raises(RenderRefused, match=r"^many.svg: SVG too costly to render: estimated at more than 20 units"
                                            r".* \(the limit, max_svg_work\)" + hint):
        render_svg(many, "many.svg", 64, low)
    assert render_svg(many, "many.svg", 64, MediaLimits(max_svg_seconds=None))[:4] == b"\x89PNG"  # fine, raised
    deep = HEAD.encode() + b"<g>" * 80 + b"</g>" * 80 + b"</svg>"
    with pytest.raises(RenderRefused, match=r"^deep.svg: .*over 64 levels deep \(the limit, max_svg_depth\); .*"
                                            r"MediaLimits\(max_svg_depth=...\)\)\)$"):
        check_svg(deep, "deep.svg", LIMITS)
    tall = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="100000"/>'
    for budget in (None, 30):  # the output surface, in this process and in the worker: refused before drawing
        with pytest.raises(RenderRefused, match=r"^tall.svg: the SVG renders to 512x51200000 pixels; .*max_pixels"):
            render_svg(tall, "tall.svg", 512, MediaLimits(max_svg_seconds=budget))
    # a corrupt SVG is still corrupt
    with pytest.raises(DataError, match="corrupt SVG") as bad:
        check_svg(HEAD.encode() + b"<rect", "bad.svg", LIMITS)
    assert not isinstance(bad.value, RenderRefused)

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    (tmp_path / "many.svg").write_bytes(many)
    refused_by_every_caller(tmp_path, low, "many.svg", "render refused by a limit for image: ", "max_svg_work=",
                            "SVG too costly")


def _counted(monkeypatch) -> list[int]:
    """The worker starts tried from now on (one entry each)."""
    from anybind.data import svg_pool

    starts: list[int] = []

    class Counted(svg_pool._Worker):
        def __init__(self):
            starts.append(1)
            super().__init__()

    monkeypatch.setattr(svg_pool, "_Worker", Counted)
    return starts


ONE = HEAD.encode() + b'<circle cx="9" cy="9" r="5"/></svg>'


def _manifest(tmp_path, monkeypatch, n: int = 3):
    from anybind.data.manifest import load_manifest as load

    monkeypatch.setenv("ANYBIND_MEDIA_CHECKS", "off")
    lines = []
    for i in range(n):
        (tmp_path / f"{i}.svg").write_bytes(ONE.replace(b'r="5"', f'r="{i + 2}"'.encode()))
        lines.append({"id": str(i), "image": f"{i}.svg", "text": "x"})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return load(tmp_path / "m.jsonl")


def test_a_renderer_start_that_times_out_is_not_remembered(tmp_path, monkeypatch, no_renderer):
    """A start that only took too long (a busy machine, past START_SECONDS) was remembered for 60 s like a broken
    renderer: every SVG for the next minute failed at once, and a manifest reported all its remaining SVGs as bad.
    A busy machine may be idle a moment later: the next SVG tries a start of its own."""
    starts = _counted(monkeypatch)
    with pytest.raises(RendererUnavailable, match=rf"^one.svg: {UNAVAILABLE}$"):
        render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))
    with pytest.raises(RendererUnavailable, match=rf"^two.svg: {UNAVAILABLE}$"):  # tried again, not "remembered"
        render_svg(ONE + b" ", "two.svg", 64, MediaLimits(max_svg_seconds=30))
    assert len(starts) == 2
    man = _manifest(tmp_path, monkeypatch)
    assert len(man.bad) == 3 and len(starts) == 5
    assert not any("remembered" in b.reason for b in man.bad)
    # the machine is less busy a moment later: the next SVG renders (no minute of failures first)
    from anybind.data import svg_pool

    monkeypatch.setattr(svg_pool, "START_SECONDS", 120)
    assert render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))[:4] == b"\x89PNG"


REMEMBERED = (r"not rendered: the SVG renderer process could not be started: it stopped \(exit code 3\), \d+ s ago "
              r"\(remembered: no new start is tried for 60 s, then the next SVG tries again\); the file itself was "
              r"not read \(try again\)")


def test_a_renderer_that_fails_to_start_is_remembered_and_the_next_svgs_fail_at_once(tmp_path, monkeypatch,
                                                                                      no_renderer):
    """With a broken renderer every SVG waited for its own worker start: a manifest of 500 SVGs, 500 starts.  A start
    that fails outright (the launch raises OSError, or the process exits before it is ready) is remembered for
    RETRY_SECONDS: the next SVGs fail at once (no start is tried), saying so and when it tries again; after that
    period ONE caller tries a start while the others wait for its outcome, and a start that works is used."""
    import sys
    import threading

    from anybind.data import svg_pool

    monkeypatch.setattr(svg_pool, "START_SECONDS", 120)
    starts, real = _counted(monkeypatch), sys.executable
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))  # the launch raises OSError
    with pytest.raises(RendererUnavailable, match=r"^one.svg: not rendered: the SVG renderer process could not be "
                                                  r"started \(No such file or directory\); the file itself"):
        render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))
    with pytest.raises(RendererUnavailable, match=r"^two.svg: .*No such file.*\(remembered: no new start"):
        render_svg(ONE + b" ", "two.svg", 64, MediaLimits(max_svg_seconds=30))
    assert len(starts) == 1

    svg_pool.forget_start_failure()
    _broken_launch(monkeypatch, tmp_path)  # launched, but exits before it is ready
    with pytest.raises(RendererUnavailable, match=r"^one.svg: .*could not be started: it stopped \(exit code 3\); the"):
        render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))
    with pytest.raises(RendererUnavailable, match=rf"^two.svg: {REMEMBERED}$"):
        render_svg(ONE + b" ", "two.svg", 64, MediaLimits(max_svg_seconds=30))
    assert len(starts) == 2  # no start tried: it failed without waiting
    man = _manifest(tmp_path, monkeypatch)
    assert man.records == [] and len(man.bad) == 3 and len(starts) == 2
    assert all(b.reason.startswith("SVG renderer unavailable for image: ") and "remembered" in b.reason for b in man.bad)
    assert "by reason: SVG renderer unavailable for image x3" in man.report()

    # the period is over and 6 SVGs arrive together: one start is tried (1 s to fail), the others wait for it
    _broken_launch(monkeypatch, tmp_path, sleep=1)
    svg_pool._POOL.failed = (time.monotonic() - 61, svg_pool._POOL.failed[1])
    errors: list[str] = []
    go = threading.Barrier(6)

    def one(i: int) -> None:
        go.wait()
        try:
            render_svg(ONE + b" " * i, f"{i}.svg", 64, MediaLimits(max_svg_seconds=30))
        except RendererUnavailable as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)  # a broken hand-off fails here, it does not hang the suite
    assert len(starts) == 3 and len(errors) == 6
    assert sum("remembered" in e for e in errors) == 5  # they failed with the one start's outcome
    # the period is over again and the start works: it is used, the failure forgotten, the next start tried at once
    monkeypatch.setattr(sys, "executable", real)
    svg_pool._POOL.failed = (time.monotonic() - 61, svg_pool._POOL.failed[1])
    assert render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))[:4] == b"\x89PNG"
    svg_pool.stop_idle_workers()
    assert len(starts) == 4 and svg_pool._POOL.failed is None and svg_pool.start_failure_left() is None
    assert render_svg(ONE, "one.svg", 64, MediaLimits(max_svg_seconds=30))[:4] == b"\x89PNG"


FORK_WHILE_LOCKED = r"""
import os, sys, threading, time
from anybind.data import svg_pool
from anybind.data.limits import MediaLimits
from anybind.data.svg import render_svg

svg = sys.argv[1].encode()
held, done = threading.Event(), threading.Event()

def hold():  # another thread holds the renderer pool's lock while this process forks
    with svg_pool._POOL.lock:
        held.set()
        done.wait(60)

def fork():
    pid = os.fork()
    if pid == 0:  # the child renders an SVG: with the parent's lock still held it would wait forever
        png = render_svg(svg, "child.svg", 64, MediaLimits(max_svg_seconds=60))
        os._exit(0 if png[:8] == b"\x89PNG\r\n\x1a\n" else 2)
    out.append(pid)

out = []
holder = threading.Thread(target=hold)
holder.start()
held.wait(30)
forker = threading.Thread(target=fork)
forker.start()
forker.join()
deadline = time.monotonic() + 150
while time.monotonic() < deadline:
    pid, status = os.waitpid(out[0], os.WNOHANG)
    if pid:
        break
    time.sleep(0.1)
else:
    os.kill(out[0], 9)
    os.waitpid(out[0], 0)
    done.set()
    print("the forked child hung on its first SVG")
    sys.exit(3)
done.set()
holder.join()
# and the parent, its lock given back, still renders
png = render_svg(svg, "parent.svg", 64, MediaLimits(max_svg_seconds=60))
sys.exit(os.waitstatus_to_exitcode(status) if png[:4] == b"\x89PNG" else 4)
"""


def test_a_child_forked_while_another_thread_holds_the_renderer_pool_lock_renders(tmp_path):
    """A fork (a data-loader worker, a server's worker) while another thread of the parent holds the renderer
    pool's lock: the child gets a pool and a lock of its own (``os.register_at_fork``), not a copy of a lock that
    no thread of the child will ever release.  Run in a subprocess, so that a regression fails, not hangs."""
    import subprocess
    import sys

    fine = HEAD + '<circle cx="9" cy="9" r="5"/></svg>'
    script = tmp_path / "fork_while_locked.py"
    script.write_text(FORK_WHILE_LOCKED)
    res = subprocess.run([sys.executable, str(script), fine], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr[-2000:])

"""The README is a contract (issue 22): its shell lines and Python snippets run in order, top to bottom, as written.

Every ```sh line and ```python block of README.md (extracted by readme_steps.py) runs in one empty temporary folder,
in the README's order, each in this process (`anybind ...` through the Typer app, a snippet through ``exec`` in a
fresh namespace: each snippet must stand on its own, as a reader pastes it).  A step that exits non-zero or
raises fails the test, naming its README line; so does a later step that an earlier one leaves without its input
(a space overwritten, a file never made).

Not run, each for a reason given below: a block marked ``<!-- readme-test: skip (REASON) -->`` (the bootstrap,
the reader's own corpus), and the lines in ``PARSE_ONLY``: a server, Ray (20-60 s to start on 2 cores;
tests/test_scale_ray.py runs those paths), a cluster, and the two corpora no later line uses.  A parse-only line is
still parsed by the CLI, so a renamed option or a bad value fails here too.

The small corpus.  The README's text stays exactly what users run; the test changes the data it runs on, never a
command: the first two lines (``corpus tuxpaint``, ``corpus emoji``) build 949 stamps and 1,386 emoji, and every
later encoder pass over them would take minutes, so in their place the test writes a slice at the same paths
(and so for ``corpus timeseries``, whose 180 series take Fracast a minute):
28 Tux Paint stamps of the session's real corpus (tests/conftest.py ``tux_dir``, shared with the other tests;
stamps with a sound in every split, among them the dog and the owl the search lines name, with their English and
French captions, without the human spoken descriptions: the recipe line would run Whisper over them, as the speech
corpus line does over its own clips), the first 24 emoji and 5 series of each time-series file from the real
builders.  Every other line, the speech corpus line included, runs as written on that.  Encoders are the real
ones; the feature cache is the session's (``shared_cache``), so a stamp another test already encoded is not
encoded again.
"""

from __future__ import annotations

import itertools
import json
import resource
import shutil
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from readme_steps import Step, readme_steps

# its `--ray` lines start a local Ray in this process (whose ray.init sets RAY_AUTH_MODE=token in os.environ; anybind's
# shutdown_ray puts it back, test_ray_auth_env.py): on the Ray modules' xdist worker, one Ray at a time
pytestmark = pytest.mark.xdist_group("ray")

# README shell lines that are parsed but not run (the start of the line -> why)
PARSE_ONLY = {
    "anybind corpus tuxpaint --out data/tux": "replaced by a 28-stamp slice of the real corpus (module docstring)",
    "anybind corpus emoji --out data/emoji": "replaced by the real builder's first 24 emoji (module docstring)",
    "anybind corpus timeseries --out data/ts": "replaced by the real builder's first 5 series of each file (docstring)",
    "anybind corpus instruments": "19 s of FluidSynth for a corpus no later line uses (test_corpus_instruments.py)",
    "anybind corpus ktuberling": "a minute of decoding for a corpus no later line uses (test_corpus_ktuberling.py)",
    "anybind serve spaces/tux ": "a server runs until stopped (test_serve.py, test_web_e2e.py serve the same space "
    "and index)",
    "anybind serve spaces/tux-video": "a server runs until stopped (test_video_index_serve.py serves video)",
    "anybind encode data/tux/manifest.jsonl -e image:efficientnet-lite0 --ray ": "starts Ray (test_scale_ray.py)",
    "anybind encode data/tux/manifest.jsonl -e image:efficientnet-lite0 --ray-address": "needs a Ray cluster",
    "anybind fit data/tux/manifest.jsonl --modalities image,text --ray-workers": "starts Ray Train (test_scale_ray.py)",
    "anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux-ray --ray": "starts Ray (test_scale_ray.py)",
    "RAY_ADDRESS=auto": "needs a Ray cluster and the reader's own data/big.jsonl",
    "anybind fit --from-pretrained clip=openai/": "downloads CLIP from the Hugging Face hub (test_pairs.py imports a "
    "tiny CLIP pair built offline)",
    "anybind bind spaces/clip ": "needs spaces/clip from the hub line above and the reader's own sounds.jsonl",
}
KEEP_FIELDS = ("id", "split", "text", "text_fr", "image", "audio", "labels")  # no spoken descriptions: see docstring
NAMED_STAMPS = ("animals/mammals/dogs/dog", "animals/birds/owl")  # the search lines name their sounds


def _parse_only(step: Step) -> str | None:
    return next((why for start, why in PARSE_ONLY.items() if (step.text + " ").startswith(start)), None)


def _tux_slice(tux_dir: Path, out: Path) -> None:
    """28 real stamps at the README's path: a sound in every split, every split across categories, the named ones."""
    recs = [json.loads(x) for x in (tux_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    quota = {("train", True): 10, ("val", True): 3, ("test", True): 4, ("train", False): 6, ("val", False): 3,
             ("test", False): 2}
    keep = [r for r in recs if r["id"] in NAMED_STAMPS]
    for r in keep:
        quota[r["split"], True] -= 1
    for slot in quota:  # round-robin over the top categories, in manifest order
        by_top: dict[str, list[dict]] = {}
        for r in recs:
            if (r["split"], "audio" in r) == slot and r["id"] not in NAMED_STAMPS:
                by_top.setdefault(r["labels"]["top"], []).append(r)
        picked = [r for rnd in itertools.zip_longest(*by_top.values()) for r in rnd if r is not None]
        keep += picked[: quota[slot]]
    out.mkdir(parents=True)
    with open(out / "manifest.jsonl", "w", encoding="utf-8") as f:
        for r in keep:
            r = {k: v for k, v in r.items() if k in KEEP_FIELDS}
            for k in ("image", "audio", "speech"):
                if k in r:
                    (out / r[k]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(tux_dir / r[k], out / r[k])
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    shutil.copyfile(tux_dir / "corpus.json", out / "corpus.json")


def _check_parses(argv: list[str]) -> None:
    """Parse an ``anybind`` command line (options, their types and values) without running it."""
    from anybind.cli import app

    cmd = typer.main.get_command(app)
    args = list(argv[1:])
    while hasattr(cmd, "commands"):  # a group (Typer's own click: no isinstance)
        assert args and args[0] in cmd.commands, f"`{' '.join(argv)}`: no such command"
        cmd = cmd.commands[args.pop(0)]
    with cmd.make_context(" ".join(argv[:2]), args):
        pass


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the load of a shared machine aside)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_sh(step: Step, runner: CliRunner) -> None:
    from anybind.cli import app

    for argv in step.argvs:
        assert argv[0] == "anybind", f"README.md:{step.line}: `{step.text}` runs {argv[0]!r}, not anybind"
        res = runner.invoke(app, argv[1:], env=step.env or None)
        if res.exit_code != 0:
            tail = "\n".join(res.output.splitlines()[-15:])
            raise AssertionError(f"README.md:{step.line}: `{' '.join(argv)}` exited {res.exit_code} "
                                 f"({res.exception!r}):\n{tail}")


def _run_python(step: Step) -> None:
    from anybind.encoders import registry

    runtime = dict(registry._RUNTIME)
    try:
        exec(compile(step.text, f"README.md:{step.line}", "exec"), {"__name__": "readme_snippet"})
    finally:  # the snippet's register_encoder must not leak into other tests
        registry._RUNTIME.clear()
        registry._RUNTIME.update(runtime)


def test_readme_runs_top_to_bottom(tux_dir, shared_cache, tmp_path, monkeypatch):
    from anybind.corpora.emoji import build_emoji
    from anybind.corpora.timeseries import build_timeseries

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANYBIND_CACHE", str(shared_cache))
    monkeypatch.setenv("COLUMNS", "120")
    _tux_slice(tux_dir, tmp_path / "data" / "tux")
    build_emoji(tmp_path / "data" / "emoji", limit=24, progress=False)
    build_timeseries(tmp_path / "data" / "ts", limit=5, progress=False)
    runner = CliRunner()
    timings: list[tuple[float, float, int]] = []
    try:
        for step in readme_steps():
            if step.skipped:
                continue
            t0, c0 = time.perf_counter(), _cpu()
            if step.kind == "python":
                _run_python(step)
            elif _parse_only(step):
                for argv in step.argvs:
                    _check_parses(argv)
            else:
                _run_sh(step, runner)
            timings.append((round(time.perf_counter() - t0, 1), round(_cpu() - c0, 1), step.line))
    finally:  # shown with -s, or with the failure
        print("README steps, slowest first (wall s, cpu s, line):", sorted(timings, reverse=True))


def test_readme_exceptions_are_few_and_current():
    """Each parse-only entry matches exactly one README line, each marked block says why, and they stay few."""
    steps = readme_steps()
    for start in PARSE_ONLY:
        hits = [s.line for s in steps if s.kind == "sh" and (s.text + " ").startswith(start)]
        assert len(hits) == 1, f"PARSE_ONLY entry {start!r} matches README lines {hits}, not exactly one"
    skipped = [s for s in steps if s.skipped]
    assert all(len(s.skipped) > 20 for s in skipped), "a skip mark needs its reason"
    assert len(PARSE_ONLY) + len({s.skipped for s in skipped}) <= 19  # 19: the two-node torchrun block (two machines, shared storage)
    ran = [s for s in steps if not s.skipped and not (s.kind == "sh" and _parse_only(s))]
    assert len(ran) >= 30 and sum(s.kind == "python" for s in ran) >= 3

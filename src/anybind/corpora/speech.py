"""Spoken Tux Paint captions: the English captions read aloud by espeak-ng, in voices that differ by split.

Sources
-------

* The Tux Paint corpus (:mod:`anybind.corpora.tuxpaint`, Debian
  ``tuxpaint-stamps-default``, GPL-2): its English captions (``text``), its
  images and its splits.  Pass a built corpus (``tux=``, a folder or its
  ``manifest.jsonl``); without one, a Tux Paint corpus is built from the
  stamps (``copy_media=False``, ~5 s) in a temporary folder.
* Debian ``espeak-ng`` (GPL-3): a formant speech synthesiser, run as
  ``espeak-ng -v <voice> --stdin -w <file.wav>`` with the caption on stdin.

Rules
-----

**Voices.**  A voice is an espeak-ng English accent plus a voice variant
(``en-us+m3``: American English, male variant 3).  Each split has its own
voices, disjoint from the other splits' (:data:`DEFAULT_VOICES`: four for
train, two for val, two for test; no accent and no variant of a test voice is
heard in train or val), so a model trained on train is measured on voices it
never heard.  Overlapping voice sets are refused.

**Records.**  One per Tux Paint record with an English caption and an image,
per voice: the record's caption is spoken in ``train_voices`` voices of the
train set when the Tux Paint record is in train (default 1), in one voice of
its split's set otherwise.  Which ones is a function of the caption
(``sha256`` of the casefolded caption picks the first voice, the next ones
follow in the list), so two stamps with the same caption ("A flower.") get the
same voices and share the same wav files.  Fields: ``id`` =
``<Tux Paint id>@<voice>``; ``split`` = the Tux Paint record's split (its
test images are test everywhere); ``text`` = the caption; ``speech`` =
``media/speech/<voice>/<sha1 of the caption, 16 hex>.wav``; ``image`` = a
copy in ``media/images/<Tux Paint id><ext>`` (``copy_images``, the default;
otherwise a path relative to the manifest into the Tux Paint corpus or the
stamps); ``labels`` = ``{"voice", "accent", "variant", "category", "stamp"}``
(category = the Tux Paint category folder, stamp = the Tux Paint id);
``meta`` = ``{"seconds": <duration>}``.

**Audio.**  espeak-ng writes 22,050 Hz 16-bit mono; it is resampled to
16 kHz (polyphase, :func:`anybind.data.media.resample`) and written as 16-bit
PCM wav, the rate of Whisper (``speech:whisper-tiny``).

**Failures** are reported and counted, never fatal: a voice espeak-ng does
not list (``espeak-ng --voices``, ``--voices=variant``: it would silently
fall back to another language, ``no-such-voice`` speaks Norwegian), espeak-ng
exiting non-zero, timing out or writing no (or no decodable) audio
(``espeak_failed``), or audio that is digital silence (``espeak_silent``)
skips the records of that clip, with the message in ``corpus.json`` under
``espeak_errors``.  Tux Paint records without an English caption or an image
are skipped as ``no_caption`` / ``no_image``.

**Size.**  With the defaults: 949 Tux Paint records -> 949 records, ~780
distinct clips (same caption, same voice: one file), built in well under a
minute on two cores.

The same inputs (Tux Paint corpus, espeak-ng version, voices) give
byte-identical ``manifest.jsonl`` and ``corpus.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import DataError
from ._build import (
    CorpusSummary,
    build_atomically,
    finish_corpus,
    read_source_manifest,
    stable_message,
    write_license,
)
from .debian import debian_copyright_path, debian_package_version
from .speech_voices import (
    ESPEAK_PACKAGE,
    SAMPLE_RATE,
    check_voices,
    ensure_espeak,
    espeak_version,
    known_voices,
    slug,
    speak,
    voice_problem,
    voices_for,
)

__all__ = ["DEFAULT_VOICES", "SAMPLE_RATE", "build_speech", "speak", "voice_problem", "voices_for"]

NAME = "speech"
BUILDER_VERSION = "1"
TUX_PACKAGE = "tuxpaint-stamps-default"
DEFAULT_STAMPS_DIR = "/usr/share/tuxpaint/stamps"
#: split -> espeak-ng voices (accent+variant); every accent and variant belongs to one split only
DEFAULT_VOICES: dict[str, tuple[str, ...]] = {
    "train": ("en-us+m3", "en-gb+f3", "en-gb-scotland+m1", "en-029+f4"),
    "val": ("en-gb-x-gbclan+m2", "en-gb-x-gbcwmd+f1"),
    "test": ("en-gb-x-rp+m7", "en-us-nyc+f5"),
}
def build_speech(
    out_dir: str | os.PathLike[str],
    tux: str | os.PathLike[str] | None = None,
    *,
    stamps_dir: str | os.PathLike[str] = DEFAULT_STAMPS_DIR,
    voices: Mapping[str, Sequence[str]] | None = None,
    train_voices: int = 1,
    copy_images: bool = True,
    limit: int | None = None,
    espeak: str = "espeak-ng",
    jobs: int = 2,
    install: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Build the spoken-captions corpus into ``out_dir`` (see the module docstring).

    ``tux``: a built Tux Paint corpus (folder or manifest); ``None`` builds one
    from ``stamps_dir`` in a temporary folder.  ``voices``: split -> espeak-ng
    voices (default :data:`DEFAULT_VOICES`), disjoint between splits.
    ``train_voices``: voices per train caption (1..len(train voices)).
    ``limit``: only the first N Tux Paint records of each split (a quick
    subset).  ``jobs``: espeak-ng processes at once.  ``install``:
    ``apt-get install`` espeak-ng / the stamps when missing (as root).
    """
    vs = check_voices(voices if voices is not None else DEFAULT_VOICES)
    if train_voices < 1:
        raise DataError(f"train_voices must be at least 1, got {train_voices}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    exe = ensure_espeak(espeak, install)
    from .tuxpaint import tux_manifest as tux_corpus

    with tux_corpus(tux, stamps_dir, install, progress) as (tux_manifest, tux_source):

        def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
            return _build_into(
                tmp, out, tux_manifest, tux_source, vs, train_voices, copy_images, limit, exe, jobs, prog
            )

        return build_atomically(NAME, out_dir, fill, progress)


def _build_into(
    tmp: Path,
    out_dir: Path,
    tux_manifest: Path,
    tux_source: str,
    voices: dict[str, tuple[str, ...]],
    train_voices: int,
    copy_images: bool,
    limit: int | None,
    espeak: str,
    jobs: int,
    prog: Any,
) -> CorpusSummary:
    man, skipped, problems = read_source_manifest(tux_manifest, ["text", "image"])
    per_split: Counter[str] = Counter()
    # (tux record, voice) pairs to write, and the clips they need
    plan: list[tuple[Any, str]] = []
    for r in man.records:
        if limit is not None and per_split[r.split] >= limit:
            continue
        per_split[r.split] += 1
        if "text" not in r.values:
            skipped.setdefault("no_caption", []).append(r.id)
            continue
        if "image" not in r.values:
            skipped.setdefault("no_image", []).append(r.id)
            continue
        split_voices = voices[r.split]
        if not split_voices:
            skipped.setdefault(f"no_{r.split}_voice", []).append(r.id)
            continue
        n = train_voices if r.split == "train" else 1
        for v in voices_for(r.values["text"], split_voices, n):
            plan.append((r, v))

    def clip_rel(text: str, voice: str) -> str:
        h = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
        return f"media/speech/{slug(voice)}/{h}.wav"

    clips: dict[str, tuple[str, str]] = {}
    for r, v in plan:
        clips.setdefault(clip_rel(r.values["text"], v), (r.values["text"], v))
    task = prog.add_task("speaking captions (espeak-ng)", total=len(clips)) if prog is not None else None
    results: dict[str, float | DataError] = {}

    known = known_voices(espeak)
    bad_voice = {v: why for v in {v for _, v in clips.values()} if (why := voice_problem(v, known))}

    def run(rel: str) -> tuple[str, float | DataError]:
        text, v = clips[rel]
        if v in bad_voice:
            return rel, DataError(f"espeak-ng -v {v} {text!r}: {bad_voice[v]}")
        try:
            return rel, speak(text, v, tmp / rel, espeak=espeak)
        except DataError as e:
            return rel, e

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for rel, res in pool.map(run, sorted(clips)):
            results[rel] = res
            if prog is not None:
                prog.advance(task)

    errors: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    images: dict[str, str] = {}
    image_task = prog.add_task("images", total=len({r.id for r, _ in plan})) if prog is not None else None
    for r, v in plan:
        rid = f"{r.id}@{v}"
        rel = clip_rel(r.values["text"], v)
        res = results[rel]
        if isinstance(res, DataError):
            msg = stable_message(str(res), tmp)
            reason = "espeak_silent" if msg.startswith("silent") else "espeak_failed"
            skipped.setdefault(reason, []).append(rid)
            errors[rid] = msg
            continue
        if r.id not in images:
            src = Path(r.values["image"])
            if copy_images:
                img_rel = Path("media", "images", r.id + src.suffix.lower()).as_posix()
                (tmp / img_rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, tmp / img_rel)
            else:
                img_rel = Path(os.path.relpath(src.resolve(), out_dir)).as_posix()
            images[r.id] = img_rel
            if prog is not None:
                prog.advance(image_task)
        accent, _, variant = v.partition("+")
        records.append(
            {
                "id": rid,
                "split": r.split,
                "text": r.values["text"],
                "speech": rel,
                "image": images[r.id],
                "labels": {
                    "voice": v,
                    "accent": accent,
                    "variant": variant,
                    "category": str(r.labels.get("category", "")),
                    "stamp": r.id,
                },
                "meta": {"seconds": round(float(res), 3)},
            }
        )
    # clips that no record kept (all their records failed) are not left behind
    for rel, res in results.items():
        if isinstance(res, DataError) and (tmp / rel).exists():
            (tmp / rel).unlink()

    problems.update({"clips_failed": sum(isinstance(x, DataError) for x in results.values())})
    ok_clips = [x for x in results.values() if not isinstance(x, DataError)]
    default_stamps = Path(DEFAULT_STAMPS_DIR)
    tux_meta = {}
    try:
        tux_meta = json.loads((tux_manifest.parent / "corpus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    meta = {
        "description": "Tux Paint English captions spoken by espeak-ng, each split in its own voices, "
        "with the stamp's image: speech <-> text <-> image.",
        "source": {
            "tuxpaint": {
                "corpus": tux_source,
                "manifest_sha256": tux_meta.get("manifest_sha256", "unknown") if isinstance(tux_meta, dict) else "unknown",
                "package": TUX_PACKAGE,
                "version": debian_package_version(TUX_PACKAGE) if default_stamps.exists() else "unknown",
                "license": "GPL-2 (captions and images)",
            },
            "espeak-ng": {
                "package": ESPEAK_PACKAGE,
                "version": debian_package_version(ESPEAK_PACKAGE),
                "program": espeak_version(espeak),
                "license": "GPL-3.0-or-later (the program; its output is not covered by the GPL)",
            },
        },
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "voices": {s: list(v) for s, v in voices.items()},
        "train_voices_per_caption": train_voices,
        "limit_per_split": limit,
        "audio": f"{SAMPLE_RATE} Hz mono 16-bit PCM wav (espeak-ng 22050 Hz, resampled)",
        "images": "copied into media/images/" if copy_images else "paths into the Tux Paint corpus / stamps",
        "split": "the Tux Paint record's split (hash of the casefolded caption); voices disjoint by split",
        "clips": {
            "distinct": len(clips),
            "ok": len(ok_clips),
            "failed": len(clips) - len(ok_clips),
            "seconds_total": round(float(sum(ok_clips)), 1),
        },
        "espeak_errors": dict(sorted(errors.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, skipped, problems)
    write_license(
        tmp,
        {TUX_PACKAGE: debian_copyright_path(TUX_PACKAGE), ESPEAK_PACKAGE: debian_copyright_path(ESPEAK_PACKAGE)},
        fallback="Captions and images: Tux Paint stamps, GPL-2 (Debian tuxpaint-stamps-default).\n"
        "Speech: synthesised by espeak-ng (GPL-3.0-or-later); the program's license does not cover its output.",
        source_md=(
            "# Spoken Tux Paint captions\n\n"
            f"* Captions and images: the Tux Paint corpus ({tux_source}); Debian `{TUX_PACKAGE}`, GPL-2. "
            "Image copies are unmodified; redistributing them is distributing GPL-2 material.\n"
            f"* Speech: synthesised with espeak-ng (Debian `{ESPEAK_PACKAGE}`, GPL-3.0-or-later); the GPL covers "
            "the program, not the audio it produces. The spoken words are the GPL-2 captions.\n"
            "* Voices by split: "
            + "; ".join(f"{s}: {', '.join(v) or '-'}" for s, v in voices.items())
            + "\n"
            f"* Built by `{__name__}` version {BUILDER_VERSION}; rules in that module's docstring.\n"
        ),
        texts={
            "Note": "Captions and images come from Tux Paint (GPL-2, Copyright Bill Kendrick and contributors). "
            "The wav files are espeak-ng's synthesis of those captions: espeak-ng is GPL-3.0-or-later, which "
            "does not extend to its output; the text spoken is the GPL-2 captions."
        },
    )
    return summary

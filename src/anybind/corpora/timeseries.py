"""Labelled time series with their class described in words: a ``timeseries`` / ``text`` corpus.

Source
------

The UCR/UEA classification datasets bundled in the ``aeon`` wheel
(``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``), read with
``aeon.datasets.load_from_ts_file``: nothing is downloaded.  Datasets
(:data:`DATASETS`; the default is :data:`DEFAULT_DATASETS`):

* ``BasicMotions`` (UEA, multivariate) -- a smartwatch's 3-D accelerometer and
  3-D gyroscope (6 channels), 10 s at 10 Hz (100 steps), four people doing
  four activities: standing, walking, running, playing badminton.  40 train,
  40 test.
* ``PickupGestureWiimoteZ`` (UCR, univariate, unequal lengths 29-361) -- the
  z-axis acceleration of a Nintendo Wiimote during 10 hand gestures (pick-up,
  shake, moves right/left/up/down, left/right circles, toward/away from the
  screen).  50 train, 50 test.
* ``GunPoint`` (UCR, univariate, 150 steps) -- the x-position of an actor's
  right hand drawing a gun from a holster vs pointing a finger.  50 train, 150 test.
* ``ItalyPowerDemand`` (UCR, univariate, 24 steps) -- one day's hourly
  electricity demand in Italy, October-March vs April-September.  67 train,
  1,029 test.

Rules
-----

**Records.**  One per series: id ``<Name>/<train|test>/<index>`` (the index
in its official file), ``timeseries`` = ``media/<Name>/<train|test>/<index>.npy``
(float64, ``(channels, length)``, exactly the values of the ``.ts`` file;
read back by :func:`anybind.encoders.timeseries.load_series`), ``text`` =
the class described in words (:data:`DATASETS`: ``a person walking``,
``a hand drawing a circle to the left``), ``labels`` = ``{"dataset": <Name>,
"class": <short class name>, "class_id": <label in the .ts file>}``,
``meta`` = ``{"channels", "length"}``.

**Class names.**  BasicMotions' labels are words.  PickupGestureWiimoteZ's
numbers follow the numbered list in its ``.ts`` header (``1. poteg - pick-up``
...).  GunPoint (``1 2``) and ItalyPowerDemand (``1 2``) number their classes
in the order their header names them (``Gun-Draw and Point``; ``Oct to March
... from April to September``), as the archive's descriptions do; no table
in the files states it more explicitly.

**Split.**  The dataset's own test set is ``test``.  Its training set is
split into ``train`` / ``val`` per class: the class's series ordered by the
SHA-256 of their id, the first ``round(0.2 n)`` (at least one when the class
has two or more) are ``val`` -- deterministic, stratified, independent of
``limit`` order and of the other datasets.

**Damaged inputs** are reported, never fatal: a missing or unreadable
``.ts`` file leaves that dataset split out (``missing_sources`` in
``corpus.json``); a series with NaN/inf values or fewer than 2 steps is
skipped (``bad_series``, with the reason in ``bad_series_reasons``); a label
with no class description is skipped (``unknown_class``).  With nothing
readable at all the build fails.

**limit.**  ``limit=N`` keeps the first N series of each official file (tests).

License: aeon is BSD-3-Clause; the UCR and UEA archives distribute these
data for research and ask users to cite the archive (Dau et al. 2019;
Bagnall et al. 2018) and the dataset's creators (each ``.ts`` header, copied
to ``SOURCE.md``).  ``LICENSE`` holds aeon's license and these terms.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ._build import CorpusSummary, build_atomically, finish_corpus, stable_message, write_license

__all__ = ["DATASETS", "DEFAULT_DATASETS", "build_timeseries", "val_ids"]

NAME = "timeseries"
BUILDER_VERSION = "1"
VAL_FRACTION = 0.2

#: dataset -> what it is, and label in the .ts file -> (short class name, description used as text)
DATASETS: dict[str, dict[str, Any]] = {
    "BasicMotions": {
        "what": "smartwatch 3-D accelerometer + 3-D gyroscope (6 channels), 10 s at 10 Hz",
        "archive": "UEA",
        "classes": {
            "standing": ("standing", "a person standing still"),
            "walking": ("walking", "a person walking"),
            "running": ("running", "a person running"),
            "badminton": ("badminton", "a person playing badminton"),
        },
    },
    "PickupGestureWiimoteZ": {
        "what": "Nintendo Wiimote z-axis acceleration during a hand gesture (1 channel, 29-361 steps)",
        "archive": "UCR",
        "classes": {
            "1": ("pick-up", "a hand picking something up"),
            "2": ("shake", "a hand shaking a game controller"),
            "3": ("move right", "a hand moving a game controller to the right"),
            "4": ("move left", "a hand moving a game controller to the left"),
            "5": ("move up", "a hand moving a game controller up"),
            "6": ("move down", "a hand moving a game controller down"),
            "7": ("left circle", "a hand drawing a circle to the left"),
            "8": ("right circle", "a hand drawing a circle to the right"),
            "9": ("toward the screen", "a hand pushing a game controller toward the screen"),
            "10": ("away from the screen", "a hand pulling a game controller away from the screen"),
        },
    },
    "GunPoint": {
        "what": "x-position of an actor's right hand (1 channel, 150 steps)",
        "archive": "UCR",
        "classes": {
            "1": ("gun-draw", "a hand drawing a gun from a holster and aiming it"),
            "2": ("point", "a hand pointing a finger at a target"),
        },
    },
    "ItalyPowerDemand": {
        "what": "one day of hourly electricity demand in Italy (1 channel, 24 steps)",
        "archive": "UCR",
        "classes": {
            "1": ("october to march", "a day of electricity demand in the cold months, october to march"),
            "2": ("april to september", "a day of electricity demand in the warm months, april to september"),
        },
    },
}
DEFAULT_DATASETS = ("BasicMotions", "PickupGestureWiimoteZ")
_SPLITS = (("TRAIN", "train"), ("TEST", "test"))

ARCHIVE_TERMS = """\
The time series come from the UCR and UEA time series classification archives
(https://www.timeseriesclassification.com, https://www.cs.ucr.edu/~eamonn/time_series_data_2018/),
as bundled in the aeon package. The archives make these data freely available for research and ask
users to cite the archive and the creators of each dataset:

* H. A. Dau, A. Bagnall, K. Kamgar, C.-C. M. Yeh, Y. Zhu, S. Gharghabi, C. A. Ratanamahatana, E. Keogh,
  "The UCR time series archive", IEEE/CAA Journal of Automatica Sinica 6(6), 2019.
* A. Bagnall, H. A. Dau, J. Lines, M. Flynn, J. Large, A. Bostrom, P. Southam, E. Keogh,
  "The UEA multivariate time series classification archive, 2018", arXiv:1811.00075.

Each dataset's own description and references (its .ts file header) are in SOURCE.md.
No other license terms are stated for these data."""


def val_ids(ids_by_class: dict[str, list[str]], fraction: float = VAL_FRACTION) -> set[str]:
    """The validation ids: per class, the first ``round(fraction n)`` (>= 1 when n >= 2) by SHA-256 of the id."""
    out: set[str] = set()
    for ids in ids_by_class.values():
        k = round(fraction * len(ids))
        if len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        else:
            k = 0
        out.update(sorted(ids, key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())[:k])
    return out


def _header(path: Path) -> str:
    """The comment lines of a .ts file (its description), '#' removed."""
    lines = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for ln in f:
                if ln.startswith("#"):
                    lines.append(ln[1:].rstrip())
                elif ln.strip() and not ln.startswith("@"):
                    break
    except OSError:
        return ""
    return "\n".join(lines).strip()


def build_timeseries(
    out_dir: str | os.PathLike[str],
    datasets: Sequence[str] = DEFAULT_DATASETS,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> CorpusSummary:
    """Build the time series corpus into ``out_dir`` (see the module docstring).

    ``datasets``: names from :data:`DATASETS`; ``data_dir``: a folder laid out
    like aeon's bundled ``datasets/data`` (default: the installed aeon's);
    ``limit``: at most N series from each official file.
    """
    from ..encoders.timeseries import aeon_data_dir

    names = list(dict.fromkeys(datasets))
    if not names:
        raise DataError("no dataset given; known: " + ", ".join(DATASETS))
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise DataError(f"unknown time series dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    d = Path(data_dir).absolute() if data_dir is not None else aeon_data_dir()

    def fill(tmp: Path, out: Path, prog: Any) -> CorpusSummary:
        return _build_into(tmp, out, names, d, limit, prog)

    return build_atomically(NAME, out_dir, fill, progress)


def _build_into(tmp: Path, out_dir: Path, names: list[str], data_dir: Path, limit: int | None, prog: Any) -> CorpusSummary:
    from ..encoders.timeseries import as_series, load_aeon_split

    missing: dict[str, str] = {}
    skipped: dict[str, list[str]] = defaultdict(list)
    reasons: dict[str, str] = {}
    problems: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for name in names:
        info = DATASETS[name]
        classes: dict[str, tuple[str, str]] = info["classes"]
        by_lower = {k.lower(): k for k in classes}
        files: dict[str, Any] = {}
        ds_records: list[dict[str, Any]] = []
        for ts_split, split in _SPLITS:
            try:
                series, labels, path = load_aeon_split(name, ts_split, data_dir)
            except DataError as e:
                missing[f"{name}/{split}"] = stable_message(str(e), data_dir)
                continue
            headers.setdefault(name, _header(path))
            files[split] = {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "series": len(series)}
            if limit is not None:
                series, labels = series[:limit], labels[:limit]
            width = max(4, len(str(len(series) - 1)))
            task = prog.add_task(f"{name} {split}", total=len(series)) if prog is not None else None
            folder = tmp / "media" / name / split
            folder.mkdir(parents=True, exist_ok=True)
            for i, (x, y) in enumerate(zip(series, labels)):
                if prog is not None:
                    prog.advance(task)
                rid = f"{name}/{split}/{i:0{width}d}"
                key = by_lower.get(str(y).lower())
                if key is None:
                    skipped["unknown_class"].append(rid)
                    reasons[rid] = f"label {y!r} has no class description"
                    continue
                try:
                    arr = as_series(x, rid)
                except DataError as e:
                    skipped["bad_series"].append(rid)
                    reasons[rid] = str(e)
                    continue
                rel = Path("media", name, split, f"{i:0{width}d}.npy")
                np.save(tmp / rel, np.ascontiguousarray(arr), allow_pickle=False)
                short, text = classes[key]
                ds_records.append(
                    {
                        "id": rid,
                        "split": split,
                        "timeseries": rel.as_posix(),
                        "text": text,
                        "labels": {"dataset": name, "class": short, "class_id": key},
                        "meta": {"channels": int(arr.shape[0]), "length": int(arr.shape[1])},
                    }
                )
        by_class: dict[str, list[str]] = defaultdict(list)
        for r in ds_records:
            if r["split"] == "train":
                by_class[r["labels"]["class"]].append(r["id"])
        val = val_ids(by_class)
        for r in ds_records:
            if r["id"] in val:
                r["split"] = "val"
        records.extend(ds_records)
        if files:
            sources[name] = {
                "archive": info["archive"],
                "what": info["what"],
                "files": files,
                "classes": {k: {"class": v[0], "text": v[1]} for k, v in classes.items()},
                "records": len(ds_records),
            }
    if not records:
        raise DataError(
            "no time series could be read:\n  " + "\n  ".join(f"{k}: {v}" for k, v in missing.items())
            if missing
            else "no time series could be read"
        )
    try:
        import aeon

        aeon_version = aeon.__version__
    except ImportError:  # a data_dir copy may be used without aeon's transforms
        aeon_version = "unknown"
    meta = {
        "description": "Labelled time series (UCR/UEA archives, bundled in aeon) with their class described in words as text.",
        "source": {"package": "aeon", "version": aeon_version, "data_dir": str(data_dir), "datasets": sources},
        "license": "aeon: BSD-3-Clause; data: UCR/UEA archives, free for research with citation (see LICENSE)",
        "builder": {"module": __name__, "version": BUILDER_VERSION},
        "media": "media/<dataset>/<train|test>/<index>.npy: float64 (channels, length), the .ts values",
        "split": "test = the dataset's TEST file; its TRAIN file split per class: first round(0.2 n) by sha256(id) -> val",
        "datasets": names,
        "missing_sources": dict(sorted(missing.items())),
        "bad_series_reasons": dict(sorted(reasons.items())),
    }
    summary = finish_corpus(tmp, out_dir, NAME, records, meta, dict(skipped), dict(problems))
    lic = None
    try:
        from importlib.metadata import distribution

        dist = distribution("aeon")
        lic = next((Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == "LICENSE"), None)
    except Exception:  # noqa: BLE001 - the license copy is best effort; the fallback names it
        lic = None
    write_license(
        tmp,
        {"aeon (BSD-3-Clause)": lic} if lic is not None else {},
        fallback="aeon: BSD-3-Clause (https://github.com/aeon-toolkit/aeon/blob/main/LICENSE)\n\n" + ARCHIVE_TERMS,
        source_md="# Time series corpus\n\n"
        + f"Built by `{__name__}` version {BUILDER_VERSION} from the datasets bundled in aeon {aeon_version} "
        + f"({data_dir}); rules in that module's docstring.\n\n"
        + "".join(
            f"## {n}\n\n{DATASETS[n]['what']}; {DATASETS[n]['archive']} archive.\n\n"
            + "".join(f"* `{k}` -> {v[0]}: \"{v[1]}\"\n" for k, v in DATASETS[n]["classes"].items())
            + (f"\nFrom its .ts header:\n\n```\n{headers[n]}\n```\n\n" if headers.get(n) else "\n")
            for n in names
            if n in sources
        )
        + "".join(f"* Missing source {k}: {v}\n" for k, v in sorted(missing.items())),
        texts={"UCR / UEA archives": ARCHIVE_TERMS} if lic is not None else None,
    )
    return summary

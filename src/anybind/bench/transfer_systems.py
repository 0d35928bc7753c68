"""What the transfer matrix trains (issue 16): the corpora it can build, the train sets (``each``, ``all``, ``loo``,
``a+b``), the train records kept per corpus, and what a system name means (``recipe+bridge+wise+lr1e-4``: a base
and its levers, as ``Space.fit`` keywords), with the held-out corpus that ``+select`` systems choose on.
:mod:`anybind.bench.tasks_transfer` scores them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODS = ["image", "text"]


def corpus_builders() -> dict[str, Callable[[Path], Path]]:
    """name -> ``fn(work) -> manifest path`` for every image<->text corpus this anybind can build."""
    import importlib

    from ..corpora.emoji import build_emoji
    from ..corpora.openclipart import build_openclipart
    from .tuxpaint import build_once
    from .tuxpaint import prepare_tuxpaint

    out: dict[str, Callable[[Path], Path]] = {
        "tuxpaint": prepare_tuxpaint,
        "emoji": lambda w: build_once(w, "emoji", build_emoji),
        "openclipart": lambda w: build_once(w, "openclipart", build_openclipart),
    }
    for name in ("ktuberling", "icons"):  # corpora added by other work, picked up when their builders exist
        try:
            mod = importlib.import_module(f"anybind.corpora.{name}")
        except ImportError:
            continue
        fn = getattr(mod, f"build_{name}", None)
        if fn is not None:
            out[name] = lambda w, n=name, f=fn: build_once(w, n, f)
    return out


def train_sets(spec: str, corpora: Sequence[str]) -> dict[str, list[str]]:
    """``each`` (one corpus), ``all``, ``loo`` (all but one), or explicit ``a+b``; comma-separated."""
    out: dict[str, list[str]] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "each":
            out.update({c: [c] for c in corpora})
        elif part == "all":
            out["all"] = list(corpora)
        elif part == "loo":
            if len(corpora) > 2:
                out.update({"all-" + c: [o for o in corpora if o != c] for c in corpora})
        else:
            names = part.split("+")
            unknown = [n for n in names if n not in corpora]
            if unknown:
                from ..errors import AnybindError

                raise AnybindError(f"train set {part!r}: {', '.join(unknown)} not among the corpora {', '.join(corpora)}")
            out[part] = names
    return out


def subsample_train(man, max_train: int, seed: int):
    """The manifest with at most ``max_train`` train records (seeded); val and test kept whole."""
    import copy

    if max_train <= 0:
        return man
    train = [r for r in man.records if r.split == "train"]
    if len(train) <= max_train:
        return man
    keep = {id(train[i]) for i in np.random.default_rng(seed).choice(len(train), max_train, replace=False)}
    out = copy.copy(man)
    out.records = [r for r in man.records if r.split != "train" or id(r) in keep]
    return out


#: what each lever of a system name adds to the fit ("recipe+bridge+wise+lr1e-4"); "l2sp" fits every lambda
#: of the grid and keeps the best on val, "lrX" sets the learning rate, "wiseX" a fixed WiSE-FT alpha
LEVERS: dict[str, dict[str, Any]] = {
    "start": {"epochs": 0},  # the training-free start itself (no fine-tuning)
    "finetune": {"finetune": True},  # fine-tuned even where recipe auto keeps the start (a small own val)
    "nofinetune": {"finetune": False},  # the start kept (finetune=False) wherever the start is trained
    "bridge": {"ridge_prior": "bridge"},
    "residual": {"ridge_prior": "residual"},  # the label bridge as a branch, a zero-initialised residual on top
    "wise": {"wise": "auto"},
    "linear": {"projector": "linear"},
    "l2sp": {},
    "mixup": {"mixup": 0.5},
    "noguard": {"start_guard": False},  # the ridge start even where the label bridge alone scores higher on val
    "guard": {"start_guard": True},
    "nokernel": {"kernel_start": False},  # the linear ridge start only (no kernel branch on the bridge's residual)
    "kernel": {"kernel_start": True},
    "nogate": {"base_gate": 0.0},  # no base-encoder gate on a linear start (the default before issue 16, session 26)
    "noanchors": {"bridge_anchors": 0.0},  # no class anchors in the ridge start (the default before issue 16, session 25)
    "span": {"ridge_span": True},  # the ridge start and kernel branch restricted to the training targets' span
    "selectown": {"select_data": "own+held-out"},  # chosen on the own val split and --opt select='s together
    "select": {"select_data": "held-out"},  # epoch / WiSE alpha / ridge chosen on the val split of --opt select=  # geodesic multi-modal mixup (m^2-mix) at weight 0.5; "mixupX": weight X
}
BASES = ("recipe", "defaults")


def systems_option(systems: str) -> list[str]:
    """``--opt systems=a,b``: the system names in order, each once (a system given twice would pool both fits into
    one row's per-seed values); refused in one line naming the repeated ones, before any work."""
    from ..errors import AnybindError

    wanted = [s.strip() for s in systems.split(",") if s.strip()]
    if not wanted:
        raise AnybindError(f"transfer: systems={systems!r}: no system named (e.g. recipe,defaults)")
    twice = [s for s in dict.fromkeys(wanted) if wanted.count(s) > 1]
    if twice:
        raise AnybindError(f"transfer: systems={systems!r} names {', '.join(twice)} twice: one row each, give it once")
    return wanted


def system_kwargs(name: str) -> dict[str, Any]:
    """``Space.fit`` keywords of a system: ``recipe`` (locked text, ridge start, label-bridge images, InfoNCE with
    early stopping: the issue-16 start) or ``defaults`` (``Space.fit(data)``), then ``+lever`` ..."""
    from ..errors import AnybindError

    base, *levers = name.split("+")
    if base not in BASES:
        raise AnybindError(f"system {name!r}: starts with one of {', '.join(BASES)}")
    kw: dict[str, Any] = {"lock": "text", "init": "ridge"} if base == "recipe" else {}
    for lever in levers:
        if lever in LEVERS:
            kw.update(LEVERS[lever])
        elif lever.startswith("lr") and _number(lever[2:]):
            kw["lr"] = float(lever[2:])
        elif lever.startswith("wise") and _number(lever[4:]):
            kw["wise"] = float(lever[4:])
        elif lever.startswith("selse") and _number(lever[5:]):  # the standard-error rule over every choice on val
            kw["select_se"] = float(lever[5:])
        elif lever.startswith("selft") and _number(lever[5:]):  # the same rule on the epoch and WiSE-FT alpha only
            kw.update(select_se=float(lever[5:]), select_se_on="finetune")
        elif lever.startswith("se") and _number(lever[2:]):  # the ridge start's standard-error rule
            kw["ridge_se"] = float(lever[2:])
        elif lever.startswith("mixup") and _number(lever[5:]):
            kw["mixup"] = float(lever[5:])
        else:
            raise AnybindError(f"system {name!r}: unknown lever {lever!r} (known: {', '.join(LEVERS)}, lrX, wiseX, "
                               "mixupX, seX, selseX, selftX)")
    return kw


def selection_corpus(select: str, names: Sequence[str], builders, fit_kw: dict, work) -> list:
    """The manifest the ``+select`` systems choose on (``--opt select=NAME``, a corpus outside the matrix)."""
    from ..data.manifest import load_manifest
    from ..errors import AnybindError

    wants = [s for s, kw in fit_kw.items() if kw.get("select_data") in ("held-out", "own+held-out")]
    if not wants and select:  # said, not dropped
        raise AnybindError(f"transfer: select={select!r} is used only by the +select / +selectown systems; none is "
                           f"among {', '.join(fit_kw)}: add one or drop the option")
    if not wants:
        return []
    if not select:
        raise AnybindError(f"systems {', '.join(wants)} select on another corpus: give --opt select=NAME")
    if select in names or select not in builders:
        raise AnybindError(f"select={select!r} must be a buildable corpus ({', '.join(builders)}) outside the "
                           f"measured corpora ({', '.join(names)}): selection must not see a measured cell")
    return [load_manifest(builders[select](Path(work)), modalities=MODS, progress=False)]


#: the +l2sp systems' lambdas where ``--opt l2sp_grid=`` is not given
L2SP_GRID = "0.0001,0.001,0.01"


def l2sp_grid_option(l2sp_grid: str, systems: Sequence[str]) -> str:
    """``--opt l2sp_grid=`` as the bench reads it ("": :data:`L2SP_GRID`); given beside no ``+l2sp`` system (the
    only ones that read it), refused in one line before any work rather than left unused, silently."""
    from ..errors import AnybindError

    if l2sp_grid and not any("l2sp" in s.split("+")[1:] for s in systems):
        raise AnybindError(f"transfer: l2sp_grid={l2sp_grid!r} is used only by the +l2sp systems; none is among "
                           f"{', '.join(systems)}: add one or drop the option")
    return l2sp_grid or L2SP_GRID


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def number_options(corpora: str, names: Sequence[str], max_train: str, fm: str, center: str,
                   l2sp_grid: str) -> tuple[int, int, list[float], bool]:
    """The transfer bench's plain options checked before any work, each refused in one line naming it:
    ``(fm, max_train, l2sp_grid, center)``, numbers and a flag, as checked (the bench reads these, not the
    strings); ``corpora`` must name one corpus at least, ``center`` be 1 or 0."""
    from ..errors import AnybindError

    if not names:
        raise AnybindError(f"transfer: corpora={corpora!r}: no corpus named")
    for key, v in (("max_train", max_train), ("fm", fm)):
        if not v.strip().isdecimal():
            none = "all" if key == "max_train" else "none"
            raise AnybindError(f"transfer: {key}={v!r}: a whole number >= 0 (0: {none})")
    if center.strip() not in ("0", "1"):
        raise AnybindError(f"transfer: center={center!r}: 1 or 0 (every system also centred inductively, or not)")
    grid = [x.strip() for x in l2sp_grid.split(",") if x.strip()]
    if not grid or not all(_number(x) and math.isfinite(float(x)) and float(x) >= 0 for x in grid):
        raise AnybindError(f"transfer: l2sp_grid={l2sp_grid!r}: comma-separated numbers >= 0 (the +l2sp lambdas)")
    return int(fm), int(max_train), [float(x) for x in grid], center.strip() == "1"

"""Bench tasks of a space's life after its first fit (issue 19); the studies are :mod:`anybind.lifecycle`'s.

* ``continual``: bind image<->text on Tux Paint, then update on emoji, then on openclipart (``--opt
  domains=``): old (Tux Paint test), new and every earlier domain's R@1 after each step for naive fine-tuning,
  the default update (``wise``: WiSE-FT with the parent), Mod-X, joint retraining on every domain seen (upper
  bound) and the first space frozen (lower bound).
* ``merge``: Tux Paint image<->text and audio<->text bound apart, merged through text: audio<->image
  R@1 (never paired) and each original pair's, beside the three bound jointly; with the fixed bench recipe (RECIPE)
  (text locked in both: nearly the same anchor) and plain InfoNCE (anchors trained apart, seeds differ).
* ``federated``: Tux Paint image<->text split into non-IID clients (each top category whole in one client) and
  a public set: test R@1 of each client alone, FedAvg, CreamFL and centralised training on the union (upper
  bound).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from ..errors import DataError
from .stats import bootstrap
from .tuxpaint import PLAIN_ENCODERS, RECIPE, prepare_tuxpaint

BLOCKS = {"recipe": (RECIPE["encoders"], {k: v for k, v in RECIPE.items() if k != "encoders"}),
          "plain": (PLAIN_ENCODERS, {})}


def _domain(work: Path, name: str) -> Path:
    from ..corpora.emoji import build_emoji
    from ..corpora.openclipart import build_openclipart
    from .tuxpaint import build_once

    if name == "tuxpaint":
        return prepare_tuxpaint(work)
    builders = {"emoji": build_emoji, "openclipart": build_openclipart}
    if name not in builders:
        raise DataError(f"unknown domain {name!r}: use tuxpaint, emoji, openclipart")
    return build_once(work, name, builders[name])


def _flat(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    return {f"{r['name']}/step{r.get('step', 0)}/{k}": float(r[k])
            for r in rows for k in keys if r.get(k) is not None}


@task("continual", "Tux Paint -> emoji -> openclipart image<->text: each domain's R@1 after each update for "
      "naive fine-tuning, the default update (wise), Mod-X, joint retraining and the frozen first space "
      "(--opt domains=a,b,c block=recipe|plain distill=1.0|auto|1.0,auto judge=val|held cap=openclipart:800)")
def continual(work: Path, cache=None, seed: int = 0, console=None,
              domains: str = "tuxpaint,emoji,openclipart", block: str = "recipe", epochs: str = "50",
              distill: str = "1.0", cap: str = "", judge: str = "val") -> TaskResult:
    """``cap``: ``name:N,...``: that domain keeps N of its records (drawn with ``seed``, every split alike in
    expectation), for a shorter run; the notes say so.  ``distill``: Mod-X's weight, or several
    (``1.0,auto``): one Mod-X system each (``modx 1.0``, ``modx auto``), side by side in one run.  ``judge``:
    the first domain's val pairs that choose ``auto``'s weight: ``val`` (all, the ones the first fit
    early-stops on) or ``held`` (a seeded half the first fit and joint retraining never see; they select on
    the other half)."""
    from ..data.manifest import Manifest, load_manifest
    from ..lifecycle import continual_study

    encoders, fit = BLOCKS[block]
    weights = _weights(distill)  # auto: chosen on val (old and new domain)
    modx = {"modx": weights[0]} if len(weights) == 1 else {f"modx {w}": w for w in weights}
    names = [d.strip() for d in domains.split(",") if d.strip()]
    caps = _caps(cap, names)
    mans = [(n, load_manifest(_domain(work, n), modalities=["image", "text"], progress=False)) for n in names]
    caps = {n: k for n, m in mans if n in caps and (k := caps[n]) < len(m.records)}  # the caps that draw
    for i, (n, m) in enumerate(mans):
        if n in caps:
            keep = np.sort(np.random.default_rng([seed, i]).choice(len(m.records), caps[n], replace=False))
            mans[i] = (n, Manifest(m.path, [m.records[j] for j in keep], [], m.kinds))
    rows = continual_study(mans, encoders={m: encoders[m] for m in ("image", "text")}, fit=fit,
                           update={"epochs": int(epochs)}, modx_weights=modx, judge=judge, cache=cache,
                           seed=seed)
    notes = [f"domains {' -> '.join(names)} ("
             f"{', '.join(f'{n}: {len(m.records)} records' for n, m in mans)}); "
             f"R@1: mean of image->text and text->image on each test split; block {block}"
             + ("; capped: " + ", ".join(f"{n} {k} records drawn with seed {seed}" for n, k in caps.items())
                if caps else "")]
    chosen = [f"step {r['step']}: {r['distill']}" for r in rows if "distill" in r]
    if chosen:
        notes.append(f"Mod-X distillation weight chosen on val (old and new domain): {', '.join(chosen)}"
                     + ("; old domain: only the half of its val held out of the first fit"
                        if judge == "held" else ""))
    last = {r["name"]: r for r in rows if r["step"] == len(names) - 1}
    for sys_name in (s for s in ("wise", *modx) if {"naive", s} <= set(last)):
        n, x = last["naive"], last[sys_name]
        ok = x["forgetting"] <= 0.5 * max(n["forgetting"], 0.0) and x["new R@1"] >= n["new R@1"]
        notes.append(f"goal ({sys_name} forgets at most half of naive at equal or better new R@1): "
                     f"{'met' if ok else 'not met'} (forgetting {x['forgetting']:.3f} vs "
                     f"{n['forgetting']:.3f}, new {x['new R@1']:.3f} vs {n['new R@1']:.3f})")
    notes.append("R@1 <domain>: each domain's test R@1 after each step (forgetting of every earlier domain, "
                 "not only the first; '-': not seen yet)")
    keys = ("old R@1", "new R@1", "forgetting", *(f"R@1 {n}" for n in names))
    return TaskResult(metrics=_flat(rows, keys), table=rows,
                      config={"domains": names, "block": block, "epochs": int(epochs),
                              "distill": weights[0] if len(weights) == 1 else weights,
                              "cap": caps, "judge": judge},
                      notes=notes)


def _weights(distill: str) -> list[float | str]:
    """``1.0`` / ``auto`` / ``1.0,auto`` -> Mod-X's weights; anything else refused in one line."""
    out: list[float | str] = []
    for item in (d.strip() for d in distill.split(",")):
        try:
            w: float | str = item if item == "auto" else float(item)
        except ValueError:
            w = -1.0
        if w in out or (w != "auto" and not 0.0 <= float(w) < float("inf")):
            raise DataError(f"distill must be weights >= 0 or 'auto', each once, comma-separated; got "
                            f"{item!r} in distill={distill!r}")
        out.append(w)
    return out


def _caps(cap: str, names: list[str]) -> dict[str, int]:
    """``name:N,...`` -> {name: N}; a name not in ``names``, N < 10, a malformed item: refused in one line."""
    from ..errors import DataError

    out: dict[str, int] = {}
    for item in (c.strip() for c in cap.split(",") if c.strip()):
        name, _, n = item.partition(":")
        if name not in names or not n.isdigit() or int(n) < 10 or name in out:
            raise DataError(f"cap must be domain:N (N >= 10), once a domain, among {', '.join(names)}; "
                             f"got {item!r} in cap={cap!r}")
        out[name] = int(n)
    return out


@task("merge", "Tux Paint image<->text + audio<->text bound apart and merged through text: audio<->image R@1 "
      "(never paired) and each pair's, beside joint binding")
def merge(work: Path, cache=None, seed: int = 0, console=None) -> TaskResult:
    from ..data.manifest import load_manifest
    from ..lifecycle import merge_study

    man = load_manifest(prepare_tuxpaint(work), modalities=["image", "text", "audio"], progress=False)
    table: list[dict[str, Any]] = []
    for block, (encoders, fit) in BLOCKS.items():
        rows = merge_study(man, encoders=encoders, fit=fit, b_fit={"seed": seed + 1}, cache=cache, seed=seed)
        table += [{**r, "name": f"{block}: {r['name']}"} for r in rows]
    keys = tuple(k for k in table[0] if k != "name") + ("anchor cosine",)
    return TaskResult(metrics=_flat(table, keys), table=table, notes=[
        "merged: A's projectors kept, B's audio projector rotated onto A by orthogonal Procrustes on the "
        "training split's texts; audio<->image was never paired in A, B or the merge; test split R@1 (mean "
        "of both directions)"])


@task("federated", "Tux Paint image<->text in K clients (non-IID by top category, or IID) and a public set: "
      "test R@1 of each client alone, FedAvg, CreamFL, centralised (--opt clients=4 rounds=40 "
      "split=noniid|iid|noniid,iid public_fraction=0.15 seeds=0,1,2 fit=1 holds=paired,image,text label=top "
      "before=1 local_epochs=1|1,3,5|auto; CreamFL's settings: server_epochs kd kd_weight kd_mix client_init "
      "reg_weight average=1|0,1 intra=start|moon|start,moon; the public set: "
      "public=tuxpaint|emoji|openclipart|tuxpaint,emoji,... public_size=N; fedavg_public=1: also FedAvg "
      "whose server trains on the public pairs)")
def federated(work: Path, cache=None, seed: int = 0, console=None, clients: str = "4", rounds: str = "40",
              split: str = "noniid", local_epochs: str = "1", public_fraction: str = "", seeds: str = "",
              fit: str = "1", holds: str = "", label: str = "top", before: str = "1", server_epochs: str = "",
              kd: str = "", kd_weight: str = "", kd_mix: str = "", client_init: str = "",
              reg_weight: str = "", intra: str = "", public: str = "tuxpaint", public_size: str = "",
              fedavg_public: str = "1", average: str = "") -> TaskResult:
    """One seed (``seed``, or one in ``seeds``) and one split: every row of the study; several
    (``seeds=0,1,2``, ``split=noniid,iid``): each system's mean ± sd over the seeds, per split.  ``holds``:
    what each client keeps, cycling (``paired,image,text``: one-modality clients among them, trained on their
    ``label``).  ``before``: also CreamFL with session 8's settings (a row beside the current ones); CreamFL's
    settings, when given, change the ``creamfl`` row (default: the library's); ``intra``: one or more of
    ``start``, ``moon``: the first sets the ``creamfl`` row's, each other adds a row ``creamfl (intra=X)``
    beside it (same run, same seeds); ``average`` likewise (``1``: CreamFL with FedAvg's step; ``0,1``: plain,
    and a row ``creamfl (average=1)`` beside it).  ``public``: where the public set comes from: ``tuxpaint``
    (``public_fraction`` of its training records, carved before the clients get the rest) and/or other corpora
    (``emoji``, ``openclipart``: their training pairs; without ``tuxpaint`` every Tux Paint training record
    goes to the clients); ``public_size``: that many of the other corpora's pairs, drawn with each seed
    (default: all).  ``fedavg_public``: a row ``fedavg + public`` beside FedAvg, its server also training on
    the public pairs each round (:data:`FEDAVG_PUBLIC`: one epoch a round, chosen on val; ``server_epochs``
    sets CreamFL's): plain FedAvg never sees them, CreamFL does; the goal asks CreamFL to be ahead of both,
    and "ahead" means the paired bootstrap interval of CreamFL minus that FedAvg over the test queries of
    every seed (:func:`paired_gaps`, shown in the goal line) lies above 0."""
    from ..data.manifest import load_manifest
    from ..federated_epochs import local_epoch_grid
    from ..federated_study import federated_study, public_sample, seed_summary
    from .transfer_cells import seeds_option

    sources = [p.strip() for p in public.split(",") if p.strip()]
    others = [p for p in sources if p != "tuxpaint"]
    try:
        size = int(public_size) if public_size else None
    except ValueError:
        raise DataError(f"federated: public_size must be a whole number of pairs (>= 2), got "
                        f"public_size={public_size!r}") from None
    try:
        fraction = float(public_fraction) if public_fraction else 0.15
    except ValueError:
        fraction = float("nan")
    if "tuxpaint" in sources and not 0 < fraction < 1:
        raise DataError(f"federated: public_fraction must be in (0, 1) with public=tuxpaint (its share of "
                        f"Tux Paint's training records; leave tuxpaint out of public for none), got "
                        f"public_fraction={public_fraction!r}")
    if "tuxpaint" not in sources and public_fraction and fraction != 0:
        raise DataError(f"federated: public_fraction applies only with tuxpaint in public (without it every "
                        f"Tux Paint training record goes to the clients), got public={public!r}, "
                        f"public_fraction={public_fraction!r}")
    if not sources or len(set(sources)) < len(sources) or (size is not None and (size < 2 or not others)):
        raise DataError(f"federated: public must name tuxpaint and/or other corpora once each, and "
                        f"public_size (>= 2) needs an other corpus, got public={public!r}, "
                        f"public_size={public_size!r}")
    if bad := sorted(set(others) - {"emoji", "openclipart"}):
        raise DataError(f"federated: unknown public corpus {', '.join(map(repr, bad))}: use tuxpaint, emoji, "
                        "openclipart")
    averages = [v.strip() for v in average.split(",") if v.strip()]
    if not set(averages) <= {"0", "1"} or len(set(averages)) < len(averages):
        raise DataError(f"federated: average must be 0, 1, or both once each (0,1: plain and averaging "
                        f"CreamFL side by side), got average={average!r}")
    # distinct whole numbers, refused in one line before any work
    seed_list = seeds_option(seeds, seed, "federated")
    # several counts (1,3,5 or auto): each federation chooses on its val
    grid = local_epoch_grid(local_epochs)
    man = load_manifest(prepare_tuxpaint(work), modalities=["image", "text"], progress=False)
    other = [load_manifest(_domain(work, p), modalities=["image", "text"], progress=False) for p in others]
    fraction = fraction if "tuxpaint" in sources else 0.0
    config: dict[str, Any] = {"rounds": int(rounds),
                              "local_epochs": grid[0] if len(grid) == 1 else list(grid)}
    if holds:
        config["label"] = label
    given = {"server_epochs": server_epochs, "kd": kd, "kd_weight": kd_weight, "kd_mix": kd_mix,
             "client_init": client_init, "reg_weight": reg_weight}
    config.update({k: (v if k in ("kd", "client_init") else float(v) if k in ("kd_weight", "reg_weight")
                       else int(v)) for k, v in given.items() if v})
    # CreamFL with FedAvg's step (its clients send their weights too): a setting of the creamfl rows only (the
    # other systems refuse it); 0,1: the first sets the creamfl row's, the other adds a row beside it (same
    # run, same seeds)
    cream = {"method": "creamfl", **({"average": True} if averages[:1] == ["1"] else {})}
    variants = {"creamfl": cream, **({FEDAVG_PUBLIC_ROW: FEDAVG_PUBLIC}
                                     if fedavg_public not in ("0", "false", "no") else {})}
    if before not in ("0", "false", "no"):
        variants["creamfl (session 8)"] = SESSION8_CREAMFL
    intras = [v.strip() for v in intra.split(",") if v.strip()]
    if intras:
        config["intra"] = intras[0]
        variants.update({f"creamfl (intra={v})": {**cream, "intra": v} for v in intras[1:]})
    variants.update({f"creamfl (average={v})": {"method": "creamfl",
                                                 **({"average": True} if v == "1" else {})}
                     for v in averages[1:]})
    splits = [s.strip() for s in split.split(",") if s.strip()]
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for sp in splits:
        for s in seed_list:
            runs.setdefault(sp, []).append(federated_study(
                man, k=int(clients), by=None if sp == "iid" else "top", public_fraction=fraction,
                extra_public=public_sample(other, size, s),
                encoders=PLAIN_ENCODERS, config=config, cache=cache, seed=s,
                fit_too=fit not in ("0", "false", "no"),
                holds=[h.strip() for h in holds.split(",") if h.strip()], variants=variants,
                methods=("fedavg",)))
            if console is not None:
                console.print(f"federated: {sp} seed {s} done", highlight=False)
    pub_text = " + ".join(([f"{fraction} of Tux Paint's training records"] if fraction else [])
                          + ([f"{size or 'all'} training pairs of {', '.join(others)}"] if others else []))
    basis = (f"{clients} clients, public set: {pub_text}; plain encoders and MLP "
             f"projectors for every system, {rounds} rounds x {_epochs_text(grid)} (the systems trained "
             f"alone: {rounds} x {grid[0]} epochs); each system picks its round/epoch on val pairs; test "
             "R@1: mean of image->text and text->image on the whole test split")
    if holds:
        basis += f"; the clients hold, in turn: {holds} (a one-modality client trains on its label {label!r})"
    config = {"clients": int(clients), "split": splits, "public_fraction": fraction, "public": sources,
              "public_size": size,
              "seeds": seed_list, "holds": holds or "paired", "fedavg_public": FEDAVG_PUBLIC_ROW in variants,
              **config}
    if len(splits) == 1 and len(seed_list) == 1:
        rows = runs[splits[0]][0]
        by = {r["name"]: r for r in rows}
        cream, avg = by["creamfl"]["test R@1"], {n: by[n]["test R@1"]
                                                 for n in ("fedavg", FEDAVG_PUBLIC_ROW) if n in by}
        cen = max(by[n]["test R@1"] for n in CENTRAL if n in by)
        gaps = paired_gaps(runs[splits[0]], "creamfl", list(avg))
        rows = [{k: v for k, v in r.items() if k != "hits"} for r in rows]
        notes = [f"{basis} ({splits[0]}, seed {seed_list[0]})", _goal(cream, avg, cen, "", gaps),
                 f"CreamFL vs the public set alone (what its server could learn without any client): "
                 f"{cream:.3f} vs {by['public set alone']['test R@1']:.3f}"]
        metrics = {f"{r['name']}/{k}": float(v)
                   for r in rows for k, v in r.items() if isinstance(v, (int, float))}
        return TaskResult(metrics=metrics, table=rows, notes=notes, config=config)
    table, notes, metrics = [], [f"{basis}; seeds {', '.join(map(str, seed_list))} (each seed: its own split "
                                 "of the records into public set and clients, and its own training seeds); "
                                 "mean ± sample sd over the seeds"], {}
    for sp, rs in runs.items():
        rows = seed_summary(rs)
        table += [{**r, "name": f"{sp}: {r['name']}"} for r in rows]
        by = {r["name"]: r for r in rows}
        avg = {n: by[n]["mean"] for n in ("fedavg", FEDAVG_PUBLIC_ROW) if n in by}
        notes.append(_goal(by["creamfl"]["mean"], avg, max(by[n]["mean"] for n in CENTRAL if n in by),
                           f"{sp}, means: ", paired_gaps(rs, "creamfl", list(avg))))
        metrics.update({f"{sp}/{r['name']}/{k}": float(r[k])
                        for r in rows for k in ("mean", "sd", "of centralised")})
    return TaskResult(metrics=metrics, table=table, notes=notes, config=config)


def _epochs_text(grid: tuple[int, ...]) -> str:
    if len(grid) == 1:
        return f"{grid[0]} local epochs"
    return (f"local epochs chosen per federation on its clients' val pairs among {','.join(map(str, grid))} "
            "(one federation per count; column `local epochs`)")


#: CreamFL as session 8 measured it (before the settings were chosen on val), a row beside the current one
SESSION8_CREAMFL = {"method": "creamfl", "server_epochs": 2, "kd": "feature", "kd_weight": 1.0, "kd_mix": 0,
                    "client_init": "own"}


#: FedAvg whose server also trains on the public pairs each round (CreamFL's server does): the fair baseline.
#: Its server_epochs=1 was chosen on the clients' val pairs (8 clients, non-IID, Tux Paint 15 % + 964 emoji
#: pairs, seeds 0, 1, 2: val 0.772 / 0.759 / 0.764 with 1 epoch a round, 0.728 / 0.702 / 0.741 with
#: CreamFL's 10)
FEDAVG_PUBLIC_ROW = "fedavg + public"
FEDAVG_PUBLIC = {"method": "fedavg", "server_public": True, "server_epochs": 1}


#: the centralised rows the goal compares with (the better one; the second exists with a public set from other
#: corpora)
CENTRAL = ("centralised (union + public)", "centralised (clients' corpus)")


def paired_gaps(runs: Sequence[Sequence[Mapping[str, Any]]], row: str, others: Sequence[str], n: int = 2000,
                seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """``row``'s test R@1 minus each of ``others``' over the same test queries of every seed's run (``runs``:
    one row list per seed, rows with per-query ``hits``): ``{other: (mean difference, 95 % lower, upper)}``, a
    paired bootstrap over the test queries (one resample for both rows and every seed: each query's difference
    is averaged over the seeds first, since every seed scores the same queries -- pooled as if each seed had
    drawn queries of its own, seeds that agree query by query would narrow the interval by sqrt(seeds) with no
    new query seen)."""
    out = {}
    for other in others:
        d = [np.asarray(by[row]["hits"], np.float64) - np.asarray(by[other]["hits"], np.float64)
             for by in ({r["name"]: r for r in rows} for rows in runs)]
        if len({len(x) for x in d}) > 1:
            raise ValueError(f"{row} - {other}: the seeds' runs were not scored on the same test queries "
                             f"({', '.join(str(len(x)) for x in d)} hits)")
        mean, ci, _ = bootstrap(np.mean(d, 0), (), n, seed)
        out[other] = (mean, *ci)
    return out


def _goal(cream: float, avg: dict[str, float], cen: float, what: str,
          gaps: Mapping[str, tuple[float, float, float]] | None = None) -> str:
    """The goal line; ``avg``: each FedAvg row's R@1 (plain, and with the public pairs on its server when
    run); ``gaps``: :func:`paired_gaps` of CreamFL minus each of them: then "ahead" means the interval's lower
    end is above 0 (a gap inside the noise of the test queries is not ahead), and each interval is shown."""
    ahead = all(gaps[n][1] > 0 if gaps and n in gaps else cream > v for n, v in avg.items())
    shown = ", ".join(f"{n} {v:.3f}" + (f" (CreamFL - it: {gaps[n][0]:+.3f}, 95 % paired bootstrap over the "
                                         f"test queries [{gaps[n][1]:+.3f}, {gaps[n][2]:+.3f}])"
                                         if gaps and n in gaps else "")
                      for n, v in avg.items())
    return (f"goal (CreamFL within 80% of centralised and ahead of FedAvg"
            f"{', with or without the public pairs' if len(avg) > 1 else ''}), "
            f"{what}{'met' if cream >= 0.8 * cen and ahead else 'not met'} (CreamFL {cream:.3f} = "
            f"{cream / cen:.0%} of centralised {cen:.3f}; {shown})")

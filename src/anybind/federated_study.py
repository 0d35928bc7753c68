"""Simulating a federation on one corpus (the ``federated`` bench task is a thin wrapper of :func:`federated_study`).

* :func:`split_clients`: a public set (a seeded fraction of the training records, every category) and
  ``k`` clients holding the rest of the training and val records: non-IID (``by`` a label: each
  category goes whole to one client, largest first to the client with the fewest records) or IID
  (``by=None``: records dealt at random).  The test records stay out of every part.
* :func:`federated_study`: test R@1 of each client alone, the public set alone (what the server could do
  without the clients), FedAvg, CreamFL and centralised training on the union of every client's and the public records (the upper bound), all through
  :mod:`anybind.federated`'s code with the same projectors, optimiser and epoch budget (and, a second upper
  bound, ``Space.fit`` on the union with its own defaults); each system chooses its epoch / round on val
  pairs only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data.manifest import Manifest, Record, modality_kind
from .errors import DataError


def split_clients(manifest: Manifest, k: int, *, by: str | None = "top", public_fraction: float = 0.15,
                  seed: int = 0, holds: Sequence[str] = ()) -> tuple[list[Manifest], Manifest]:
    """``(clients, public)``: see the module doc.  ``by``: a key of the records' ``labels`` (a record without it
    is refused, named); ``public_fraction``: of the training records; ``holds``: what client ``i`` keeps of its
    records, ``holds[i % len(holds)]``: ``"paired"`` (everything) or one modality (its records keep only that
    value and their labels: a one-modality client); empty: every client paired."""
    if k < 1 or not 0 <= public_fraction < 1:
        raise ValueError(f"k must be >= 1 and public_fraction in [0, 1), got k={k}, public_fraction={public_fraction}")
    rng = np.random.default_rng(seed)
    train = [r for r in manifest.records if r.split == "train"]
    n_pub = max(2, round(public_fraction * len(train))) if public_fraction > 0 else 0
    pub_idx = set(rng.permutation(len(train))[:n_pub].tolist())
    public = [r for i, r in enumerate(train) if i in pub_idx]
    rest = [r for i, r in enumerate(train) if i not in pub_idx] + [r for r in manifest.records if r.split == "val"]
    parts: list[list[Record]] = [[] for _ in range(k)]
    if by is None:
        for j, i in enumerate(rng.permutation(len(rest))):
            parts[j % k].append(rest[i])
    else:
        groups: dict[str, list[Record]] = {}
        for r in rest:
            if by not in r.labels:
                raise DataError(f"{manifest.path}: line {r.line}: record {r.id!r} has no label {by!r} to split clients by")
            groups.setdefault(str(r.labels[by]), []).append(r)
        if len(groups) < k:
            raise DataError(f"{manifest.path}: {len(groups)} values of label {by!r} for {k} non-IID clients: "
                            "use fewer clients or by=None (IID)")
        for cat in sorted(groups, key=lambda c: (-len(groups[c]), c)):
            j = min(range(k), key=lambda i: (len(parts[i]), i))
            parts[j].extend(groups[cat])
    if holds:
        mods = {m for r in manifest.records for m in r.values}
        if bad := sorted(set(holds) - mods - {"paired"}):
            raise DataError(f"{manifest.path}: a client cannot hold {', '.join(map(repr, bad))}: use 'paired' or one "
                            f"of the records' modalities ({', '.join(sorted(mods))})")
        for i, part in enumerate(parts):
            keep = holds[i % len(holds)]
            if keep != "paired":
                parts[i] = [dataclasses.replace(r, values={keep: r.values[keep]}) for r in part if r.has(keep)]
    clients = [Manifest(manifest.path, part, [], manifest.kinds) for part in parts]
    return clients, Manifest(manifest.path, public, [], manifest.kinds)


def federated_study(
    manifest: Manifest,
    *,
    k: int = 4,
    by: str | None = "top",
    public_fraction: float = 0.15,
    pair: tuple[str, str] = ("image", "text"),
    encoders: Mapping[str, str],
    config: Mapping[str, Any] | None = None,
    methods: Sequence[str] = ("fedavg", "creamfl"),
    cache=None,
    seed: int = 0,
    fit_too: bool = True,
    holds: Sequence[str] = (),
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    extra_public: Sequence[Manifest] = (),
) -> list[dict[str, Any]]:
    """Rows ``{"name", "test R@1", "val", "records", "best/run", "bytes/round"}``: each client alone, their mean,
    the public set alone, each method, centralised; R@1 on ``manifest``'s test split (mean of both directions); ``best/run``: the kept
    round (epoch, trained alone) and how many ran; ``holds``: see :func:`split_clients` (a one-modality client
    alone binds nothing: it has no row, and the clients' mean is over the paired ones); ``variants``: more rows,
    each a name and the configuration it changes (say CreamFL with other settings), trained beside the methods;
    ``extra_public``: more public pairs, from other sources than ``manifest`` (CreamFL's public set is another
    corpus), added to the ``public_fraction`` carved from it (0: none carved, every training record to the
    clients); the centralised row then trains on them too, and a row ``centralised (clients' corpus)`` on
    ``manifest``'s records alone.  ``hits``: each row's per-query test R@1 hits (``a->b`` then ``b->a``, 0/1; their
    mean is ``test R@1``; None on the clients' mean row), for paired intervals between rows (the bench's goal line)."""
    from .federated import federate, train_alone
    from .federated_epochs import local_epoch_grid
    from .lifecycle import pair_hits

    a, b = pair
    enc = {m: encoders[m] for m in pair}
    kw = {"seed": seed, **(config or {})}
    grid = local_epoch_grid(kw.get("local_epochs", 1))
    # the systems trained alone stop early on their own val pairs: the grid's fewest local epochs set their budget
    solo = {**kw, "local_epochs": grid[0]}
    refuse_shared_public(manifest, extra_public)
    clients, carved = split_clients(manifest, k, by=by, public_fraction=public_fraction, seed=seed, holds=holds)
    public = [m for m in [carved, *extra_public] if m.records]
    if not public:
        raise DataError(f"{manifest.path}: no public set: give public_fraction > 0 or extra_public")
    rows: list[dict[str, Any]] = []

    def row(name: str, space, **extra: Any) -> dict[str, Any]:
        tr = space.info["training"]
        per = pair_hits(space, manifest, a, b, cache=cache)
        hits = np.concatenate([per[f"{a}->{b}"], per[f"{b}->{a}"]])
        r = {"name": name, "test R@1": float((per[f"{a}->{b}"].mean() + per[f"{b}->{a}"].mean()) / 2),
             "val": tr.get("best_val"), "records": None, "best/run": f"{tr['best_epoch']}/{tr['epochs_run']}",
             "bytes/round": None, **extra, "hits": hits}
        if len(grid) > 1:  # each federation's local-epoch count, chosen on its clients' val pairs
            search = space.info["lineage"][-1].get("local_epochs_search")
            r["local epochs"] = search["chosen"] if search else None
        rows.append(r)
        return r

    paired = [i for i, c in enumerate(clients) if all(r.has(a) and r.has(b) for r in c.records)]
    alone = [row(f"client {i} alone", train_alone(clients[i], public, encoders=enc, cache=cache, **solo),
                 records=len(clients[i].records)) for i in paired]
    if alone:
        rows.append({**{k: None for k in rows[0]}, "name": "clients alone (mean)",
                     "test R@1": float(np.mean([r["test R@1"] for r in alone])),
                     "records": round(float(np.mean([r["records"] for r in alone])))})
    n_public = sum(len(m.records) for m in public)
    row("public set alone", train_alone(_union(manifest, public), public, encoders=enc, cache=cache, **solo),
        records=n_public)
    for name, change in [(m, {"method": m}) for m in methods] + list((variants or {}).items()):
        sp = federate(clients, public, encoders=enc, cache=cache, **{**kw, **change})
        e = sp.info["lineage"][-1]
        row(name, sp, **{"bytes/round": e["bytes"]["per_round"], "records": sum(len(c.records) for c in clients)})
    union = _union(manifest, [*clients, *public])
    row("centralised (union + public)", train_alone(union, public, encoders=enc, cache=cache, **solo),
        records=len(union.records))
    if extra_public:  # the upper bound without the other corpora's pairs
        own = _union(manifest, [*clients, carved])
        # its projectors' input statistics from the clients' own training pairs, not the other corpora's
        stats = Manifest(manifest.path, [r for r in own.records if r.split == "train" and r.has(a) and r.has(b)],
                         [], manifest.kinds)
        row("centralised (clients' corpus)", train_alone(own, stats, encoders=enc, cache=cache, **solo),
            records=len(own.records))
    if fit_too:  # the project's own fit on the union (its defaults: 200 epochs, patience 25), a second upper bound
        from .fitting import fit_space

        fitted = fit_space(union, modalities=list(pair), encoders=enc, cache=cache, recipe="plain", seed=seed,
                           progress=False)
        row("centralised (Space.fit, plain)", fitted, records=len(union.records))
    return rows



def refuse_shared_public(manifest: Manifest, extra_public: Sequence[Manifest]) -> None:
    """Refuse (a one-line :class:`DataError` naming both records) a public set from "another corpus" that holds the
    clients' own data: the same manifest file (resolved), a record with the very values of one of ``manifest``'s
    (test records included), or a file with the very bytes of one of ``manifest``'s files, whatever its name or
    folder (the SHA-256 of its bytes, as the feature cache keys it: :func:`~anybind.encoders.base.file_digest`)."""
    mine = manifest.path.resolve()
    seen = {tuple(sorted(r.values.items())): r for r in manifest.records}
    files: dict[str, tuple[Record, str, str]] | None = None  # the clients' files by digest, read when first needed
    digests: dict[str, str | None] = {}  # each file's digest by path: a file several records hold is read once
    for m in extra_public:
        if m.path.resolve() == mine:
            raise DataError(f"{m.path}: a public set from another corpus cannot be the clients' own manifest: the "
                            "clients' records would enter the public set")
        for r in m.records:
            if (same := seen.get(tuple(sorted(r.values.items())))) is not None:
                raise DataError(f"{m.path}: line {r.line}: public record {r.id!r} is record {same.id!r} of the "
                                f"clients' corpus {manifest.path}: a public set must hold none of the clients' records")
            for mod, value in sorted(r.values.items()):
                if modality_kind(mod, m.kinds) != "file":
                    continue
                if files is None:
                    files = _file_digests(manifest, digests)
                if (hit := files.get(_digest(value, digests))) is not None:
                    rec, cmod, cval = hit
                    raise DataError(f"{m.path}: line {r.line}: public record {r.id!r} holds {mod} file {value}, the "
                                    f"same bytes as {cmod} file {cval} of record {rec.id!r} of the clients' corpus "
                                    f"{manifest.path}: a public set must hold none of the clients' files")


def _digest(value: str, seen: dict[str, str | None]) -> str | None:
    """The SHA-256 of file ``value``'s bytes, read only if ``seen`` (by path) does not hold it yet."""
    from .encoders.base import content_key, file_digest

    if value not in seen:
        seen[value] = file_digest(content_key(Path(value)))
    return seen[value]


def _file_digests(manifest: Manifest, seen: dict[str, str | None]) -> dict[str, tuple[Record, str, str]]:
    """Every file of ``manifest``'s records by the SHA-256 of its bytes: (the first record holding it, its
    modality, its path); ``seen``: the digests by path read so far (each file read once)."""
    out: dict[str, tuple[Record, str, str]] = {}
    for r in manifest.records:
        for mod, value in sorted(r.values.items()):
            if modality_kind(mod, manifest.kinds) == "file" and (d := _digest(value, seen)) is not None:
                out.setdefault(d, (r, mod, value))
    return out


def public_sample(manifests: Sequence[Manifest], size: int | None, seed: int,
                  pair: tuple[str, str] = ("image", "text")) -> list[Manifest]:
    """A public set from other corpora: the training records of ``manifests`` holding both of ``pair``, ``size``
    of them drawn at random over all (``seed``; ``None``: all), each kept in its own manifest.  Asking for more
    than there are is refused."""
    pools = [[r for r in m.records if r.split == "train" and all(r.has(x) for x in pair)] for m in manifests]
    total = sum(map(len, pools))
    if size is None:
        return [Manifest(m.path, p, [], m.kinds) for m, p in zip(manifests, pools)]
    if not 0 < size <= total:
        raise DataError(f"{', '.join(str(m.path) for m in manifests)}: a public set of {size} pairs asked for, "
                        f"{total} training records hold {' and '.join(pair)}")
    take = set(np.random.default_rng([seed, 7]).choice(total, size, replace=False).tolist())
    out, at = [], 0
    for m, p in zip(manifests, pools):
        out.append(Manifest(m.path, [r for i, r in enumerate(p, at) if i in take], [], m.kinds))
        at += len(p)
    return [m for m in out if m.records]


def _union(manifest: Manifest, parts: Sequence[Manifest]) -> Manifest:
    """One manifest of the records of ``parts``: all of ``manifest``'s; of another manifest (a public set from
    another corpus) its training records, as the federation uses them, their ids kept apart (``path#id``)."""
    recs = [r if m.path == manifest.path else dataclasses.replace(r, id=f"{m.path}#{r.id}")
            for m in parts for r in m.records if m.path == manifest.path or r.split == "train"]
    return Manifest(manifest.path, recs, [], manifest.kinds)


def seed_summary(runs: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per system of :func:`federated_study`'s rows over several seeds (``runs``: one row list per seed):
    ``{"name", "test R@1" ("mean ± sd"), "mean", "sd", "of centralised", "bytes/round", "seeds"}``; the sample sd
    (``ddof=1``; 0 with one seed); ``of centralised``: the mean over seeds of each seed's ratio to its centralised
    run (same split of the records); the per-client rows are summarised by their mean; ``local epochs``: each seed's
    count chosen on val (``a/b/c``), when the rows have one."""
    central = [next(r["test R@1"] for r in rows if r["name"] == "centralised (union + public)") for rows in runs]
    chosen = any("local epochs" in r for rows in runs for r in rows)
    out = []
    names = dict.fromkeys(r["name"] for rows in runs for r in rows if not r["name"].startswith("client "))
    for name in names:
        got = [(next((r for r in rows if r["name"] == name), None), c) for rows, c in zip(runs, central)]
        got = [(r, c) for r, c in got if r is not None]
        if not got:
            continue
        vals = np.asarray([float(r["test R@1"]) for r, _ in got])
        sd = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        bts = [r["bytes/round"] for r, _ in got if r.get("bytes/round") is not None]
        out.append({"name": name, "test R@1": f"{vals.mean():.3f} ± {sd:.3f}", "mean": float(vals.mean()), "sd": sd,
                    "of centralised": float(np.mean([v / c if c > 0 else np.nan for v, (_, c) in zip(vals, got)])),
                    "bytes/round": round(float(np.mean(bts))) if bts else None, "seeds": len(vals)})
        if chosen:  # each seed's local-epoch count, chosen on the clients' val pairs (federations only)
            les = [r.get("local epochs") for r, _ in got]
            out[-1]["local epochs"] = "/".join(map(str, les)) if any(x is not None for x in les) else None
    return out

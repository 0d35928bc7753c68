"""The transfer matrix (issue 16): train on each corpus and on all of them, test on every corpus and on
Fashion-MNIST, every trained cell beside the training-free label bridge and Procrustes of the same run.

``anybind bench --task transfer --opt corpora=tuxpaint,emoji --opt max_train=300 --opt fm=2000``

Options: ``corpora`` (any of tuxpaint, emoji, openclipart and corpora whose builders exist), ``train``
(``each``, ``all``, ``loo`` = all but one, or ``a+b``), ``systems`` (``recipe`` or ``defaults`` followed by
``+lever``s, see :func:`system_kwargs`: ``recipe+bridge+wise+lr1e-4``; each given once), ``max_train`` (train records per
corpus, 0 = all), ``fm`` (Fashion-MNIST test images, 0 = none), ``image`` (comma-separated image encoders:
each trained system is fitted once per encoder, its rows named ``system [image=...]``; the label bridge and
Procrustes keep theirs, so every row has the same baselines), ``text`` (the same for text encoders, crossed with
``image``: ``text=text:minilm,text:concat(text:minilm,text:e5-small)`` fits each system with each text encoder; a
``defaults`` system given a text encoder but no image encoder gets the image encoder recipe auto picks for that
text lock, :data:`anybind.recipe.BRIDGED_IMAGE`, a ``recipe`` system the label bridge into that text encoder),
``center`` (1: every system also centred inductively, :func:`anybind.robust.centred`), ``seeds`` (``0,1,2``: every
trained system fitted once per seed, each on that seed's train subsample; each cell the mean over the seeds, its
interval over captions of the seed-averaged hits, the seeds held fixed, see the notes; unset: ``--seed``), ``l2sp_grid`` (the +l2sp systems' lambdas, :data:`~anybind.bench.transfer_systems.L2SP_GRID` unset; refused without a +l2sp system), ``boot`` (bootstrap resamples, at least 1), ``select`` (the corpus, outside
``corpora``, whose val split the ``+select`` systems choose on: never a measured cell).

Rows are (train set, system); columns are text->image / image->text R@1 on each corpus' test split
(the project's duplicate-aware metric) and Fashion-MNIST zero-shot accuracy (inductive: no statistics
of the test images; ``fm transd.`` centres on them, reported apart; ``fm tp``: prompts chosen on Fashion-MNIST
train images, see :data:`~anybind.bench.tasks_corpora.FM_TEMPLATES_TRAIN`; ``fm bal.``, ``fm tp bal.``: class
biases balanced on ``balance`` unlabelled Fashion-MNIST train images, :mod:`anybind.bench.fm_balance`; ``fm ref.``,
``fm tp ref.``: the class vectors first refined on the same unlabelled images, prototype weight ``refine``, default
:data:`anybind.zeroshot_adapt.DEFAULT_MIX` (chosen on emoji val), ``refine=0``: no such cells; they need ``balance`` > 0).  Every cell carries a seeded
bootstrap 95 % interval; every trained cell also its paired-bootstrap difference to the better of the two
baselines.  Retrieval cells resample *captions*, not queries (a cluster bootstrap, :func:`caption_groups`): where
several images share one caption (KTuberling: every sprite of one word; "moustache" is 7 of 36 val pairs) their
queries hit or miss together, and resampling them one by one gave intervals far too narrow; Fashion-MNIST cells
resample images (independent items).  The same cells are measured on each corpus' *val* split (in the
JSON metrics): defaults are chosen there, on the corpora a space was not trained on, never on test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import TaskResult, task
from ..zeroshot_adapt import DEFAULT_MIX
from .stats import (  # noqa: F401 -- Clusters, bootstrap, caption_groups, paired_vs_first, seed_mean re-exported
    Clusters, boot_option, bootstrap, caption_groups, paired_vs_first, seed_mean)
from .transfer_cells import (  # noqa: F401 -- DIRS, fm_hits, retrieval_hits, summary_notes re-exported
    DIRS, fm_hits, retrieval_hits, retrieval_hits_ids, seed_column, seeds_option, summary_notes)
from .transfer_systems import (  # noqa: F401 -- system_kwargs, subsample_train, train_sets re-exported
    MODS, corpus_builders, l2sp_grid_option, number_options, selection_corpus, subsample_train, system_kwargs,
    systems_option, train_sets)

@task("transfer", "Transfer matrix: train on each corpus / all, R@1 on every corpus' test split and Fashion-MNIST "
      "zero-shot, beside the label bridge and Procrustes (--opt corpora=, train=, systems=, max_train=, fm=, center=, "
      "image=, text=, seeds=0,1,2: each trained cell the mean over seeds, balance=N unlabelled FM train images from balance_start= at temperature balance_t=: the fm bal. cells; "
      "refine=M: class vectors refined on them first, the fm ref. cells, 0 = none)")
def transfer(work: Path, cache=None, seed: int = 0, console=None, corpora: str = "tuxpaint,emoji,openclipart",
             train: str = "each,all,loo", systems: str = "recipe,recipe+bridge+start,defaults",
             max_train: str = "0", fm: str = "10000", center: str = "1", l2sp_grid: str = "",
             boot: str = "1000", select: str = "", prompts: str = "", image: str = "", text: str = "", balance: str = "1000",
             balance_start: str = "1000", balance_t: str = "10", refine: str = f"{DEFAULT_MIX:g}",
             seeds: str = "") -> TaskResult:
    from ..cache import FeatureCache
    from ..corpora.fashion_mnist import build_fashion_mnist
    from ..data.manifest import load_manifest
    from ..robust import centred
    from ..space import Space
    from ..errors import AnybindError
    from .fm_balance import balance_options, balance_set, balanced_hits, refine_option
    from .prompt_choice import check_prompts_option
    from .tasks_corpora import FM_NAMES, FM_NAMES_TRAIN, FM_TEMPLATES, FM_TEMPLATES_TRAIN
    from ..encoders.bridge import bridge_spec, bridge_text
    from ..encoders.registry import get_encoder, split_suffix
    from .tuxpaint import build_once
    from .tuxpaint import PLAIN_ENCODERS, RECIPE, bench_encoders, image_encoders, short_spec

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    builders = corpus_builders()
    names = [c.strip() for c in corpora.split(",") if c.strip()]
    unknown = [c for c in names if c not in builders]
    if unknown:
        raise AnybindError(f"unknown corpora {unknown}; known: {', '.join(builders)}")
    wanted = systems_option(systems)
    fit_kw = {s: system_kwargs(s) for s in wanted}  # unknown levers fail before any work
    n_boot = boot_option("transfer", boot)
    n_bal, bal_start, temps = balance_options("transfer", balance, balance_start, balance_t)
    if n_bal and len(temps) != 1:
        raise AnybindError(f"transfer: balance_t={balance_t!r}: one temperature (choose it on a selection set)")
    mixes = [] if refine.strip() in ("0", "0.0") else refine_option("transfer", refine)
    if len(mixes) > 1:
        raise AnybindError(f"transfer: refine={refine!r}: one prototype weight (choose it on a selection set), or 0")
    check_prompts_option("transfer", prompts)
    specs = image_encoders("transfer", image)
    texts = bench_encoders("transfer", "text", text)
    # (row name, system, {modality: encoder} given to this row: empty = the system's own)
    variants = []
    for s in wanted:
        for spec in specs or [None]:
            for tspec in texts or [None]:
                own = {m: e for m, e in (("image", spec), ("text", tspec)) if e}
                tags = " ".join(f"{m}={short_spec(e)}" for m, e in own.items())
                variants.append((f"{s} [{tags}]" if tags else s, s, own))
    l2sp_grid = l2sp_grid_option(l2sp_grid, wanted)
    n_fm, cap, l2sp_lams, centre = number_options(corpora, names, max_train, fm, center, l2sp_grid)
    seed_list = seeds_option(seeds, seed)
    select_mans = selection_corpus(select, names, builders, fit_kw, work)
    mans = {c: load_manifest(builders[c](Path(work)), modalities=MODS, progress=False) for c in names}
    fm_recs = []
    if n_fm > 0:
        fm_man = load_manifest(build_once(Path(work), "fashion-mnist", build_fashion_mnist), modalities=["image"],
                               check_media=False)
        fm_recs = fm_man.split("test")[:n_fm]
    bal = balance_set(fm_man, n_bal, bal_start, fm_recs, "transfer") if fm_recs and n_bal else []
    sets = train_sets(train, names)
    encs = {m: RECIPE["encoders"][m] for m in MODS}
    sel = chosen_prompts = None
    if prompts == "chosen" and fm_recs:
        from .prompt_choice import selection_manifests

        sel, chosen_prompts = selection_manifests(Path(work), console), []

    def measure(space, name: str) -> dict[str, np.ndarray]:
        """Every cell's per-query hits: '<split>/<corpus>/<dir>' and 'test/fm' ('test/fm transd.'); ``name``: the
        space's row (and seed), kept with its chosen prompts."""
        out = {}
        for split in ("test", "val"):
            for c, man in mans.items():
                hits, ids = retrieval_hits_ids(space, man, split, fc)
                if query_ids.setdefault((split, c), ids) != ids:  # paired cells need the same queries
                    raise AnybindError(f"transfer: {c} {split}: {name} scored other queries than the label bridge")
                for d, h in hits.items():
                    out[f"{split}/{c}/{d}"] = h
        if fm_recs:
            out["test/fm"] = fm_hits(space, fm_recs, fc)
            out["test/fm transd."] = fm_hits(space, fm_recs, fc, center=True)
            out["test/fm tp"] = fm_hits(space, fm_recs, fc, train_prompts=True)
            out["test/fm tp transd."] = fm_hits(space, fm_recs, fc, center=True, train_prompts=True)
        for tp, (nm, tpl) in ((" ", (FM_NAMES, FM_TEMPLATES)), (" tp ", (FM_NAMES_TRAIN, FM_TEMPLATES_TRAIN)))[:2 * bool(bal)]:
            hits = balanced_hits(space, fm_recs, bal, list(FM_NAMES), nm, tpl, temps, fc, refine=mixes)[1]
            out[f"test/fm{tp}bal."] = hits[temps[0]]
            if mixes:  # the class vectors refined on the same unlabelled images, then balanced
                out[f"test/fm{tp}ref."] = hits[(temps[0], mixes[0])]
        if sel is not None:  # templates chosen for this space on Tux Paint / emoji val, stored with it
            from .prompt_choice import choose_for

            chosen_prompts.append({"space": name, **choose_for(space, sel, FM_TEMPLATES, fc)})
            out["test/fm chosen"] = fm_hits(space, fm_recs, fc, own=True)
            out["test/fm chosen transd."] = fm_hits(space, fm_recs, fc, center=True, own=True)
        return out

    query_ids: dict[tuple[str, str], list[str]] = {}  # (split, corpus) -> each retrieval query's record (measure)
    bridge = measure(Space.label_bridge(), "label bridge (no pairs)")  # training-free: no seed
    # the clusters of every retrieval cell's queries (their records' captions), numbered once; Fashion-MNIST cells:
    # one image each
    clusters = {(split, c): Clusters.of(caption_groups(mans[c], split, ids))
                for (split, c), ids in query_ids.items()}
    groups = {f"{split}/{c}/{d}": cl for (split, c), cl in clusters.items() for _, _, d in DIRS}
    rows, metrics, baselines, chosen = [], {}, {"label bridge": {}}, {}
    cells = [k for k in bridge if k.startswith("test/")]
    several = len(seed_list) > 1

    def add_row(train_name: str, system: str, per_seed: list[dict[str, np.ndarray]],
                base: dict[str, np.ndarray] | None, extras: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        """One row: each cell's mean over seeds (per query, then the cluster bootstrap), per seed in the JSON with
        several seeds; ``base``: Procrustes' seed-mean hits (a trained row's second baseline); returns the seed-mean
        hits."""
        row: dict[str, Any] = {"name": system if train_name == "-" else f"{train_name}: {system}"}
        hits = {key: seed_mean([p[key] for p in per_seed]) for key in per_seed[0]}
        for key, h in hits.items():
            others = [] if base is None else [bridge[key], base[key]]
            mean, ci, diff = bootstrap(h, others, n_boot, seed, groups.get(key))
            metrics[f"{train_name}/{system}/{key}"] = mean
            metrics[f"{train_name}/{system}/{key}/lo"], metrics[f"{train_name}/{system}/{key}/hi"] = ci
            if diff is not None:  # paired bootstrap: this cell minus the better baseline
                metrics[f"{train_name}/{system}/{key}/vs_best_lo"] = diff[0]
                metrics[f"{train_name}/{system}/{key}/vs_best_hi"] = diff[1]
            for s, p in zip(seed_list, per_seed) if len(per_seed) > 1 else ():
                metrics[f"{train_name}/{system}/{key}/seed{s}"] = float(p[key].mean()) if len(p[key]) else float("nan")
            if key in cells:
                row[key[5:]] = f"{mean:.3f} ({ci[0]:.2f}-{ci[1]:.2f})"
        for k in ("val", "epoch", "alpha", "l2sp"):  # one value per seed, "/"-separated; none: "-"
            row[k] = seed_column([e.get(k) for e in extras])
        rows.append(row)
        return hits

    def fit_system(system: str, own: dict[str, str], train_mans: list, s: int, label: str):
        """One trained system's space on ``train_mans`` with seed ``s``, and its fit's details for the table."""
        kw = dict(fit_kw[system])
        sys_encs = {**encs, **own}  # image= / text=: this row's encoders
        if "text" in own and "image" not in own and bridge_text(encs["image"]):  # label-bridge images: the bridge
            sys_encs["image"] = bridge_spec(split_suffix(encs["image"])[0], get_encoder(own["text"]).spec)  # into it
        if kw.get("select_data") == "held-out":
            kw["select_data"] = select_mans
        elif kw.get("select_data") == "own+held-out":  # the training corpora's val splits and the held-out one's
            kw["select_data"] = train_mans + select_mans
        if system.startswith("defaults"):
            sp = Space.fit(train_mans, modalities=MODS, encoders=own or None, cache=fc, seed=s, progress=False, **kw)
        elif "+l2sp" in system:
            fits = {lam: Space.fit(train_mans, modalities=MODS, encoders=sys_encs, cache=fc, seed=s,
                                   progress=False, recipe="plain", l2sp=lam, **kw)
                    for lam in l2sp_lams}
            lam = max(fits, key=lambda k: (fits[k].info["metrics"]["val/score"], -k))  # chosen on val
            sp = fits[lam]
            chosen[label] = {str(k): v.info["metrics"]["val/score"] for k, v in fits.items()}
        else:
            sp = Space.fit(train_mans, modalities=MODS, encoders=sys_encs, cache=fc, seed=s, progress=False,
                           recipe="plain", **kw)
        tr = sp.info.get("training", {})
        rob = tr.get("robust", {})
        return sp, {"val": sp.info["metrics"].get("val/score"), "epoch": tr.get("best_epoch"),
                    "alpha": rob.get("wise_alpha"), "l2sp": rob.get("l2sp") or None}

    add_row("-", "label bridge (no pairs)", [bridge], None, [{}])
    baselines["label bridge"] = {k: float(v.mean()) for k, v in bridge.items()}
    timings: dict[str, float] = {}
    row_encoders: dict[str, dict[str, str]] = {}  # "train set/row" -> the encoders its space was fitted with
    paired: dict[str, dict] = {}  # train set -> row -> cell -> its paired difference from the first row
    for tname, members in sets.items():
        t0 = time.perf_counter()
        proc_hits: list[dict[str, np.ndarray]] = []  # per seed
        proc_by_train: dict[tuple, dict[str, np.ndarray]] = {}  # Procrustes has no seed: one fit per train subsample
        per_row: dict[str, tuple[list, list]] = {}  # row -> (its hits per seed, its fit's details per seed), in order
        for s in seed_list:
            tag = f" [seed {s}]" if several else ""
            train_mans = [subsample_train(mans[c], cap, s) for c in members]
            sub = tuple(tuple(r.id for r in m.records if r.split == "train") for m in train_mans)
            if sub not in proc_by_train:
                proc = Space.fit(train_mans, modalities=MODS, encoders={m: PLAIN_ENCODERS[m] for m in MODS}, cache=fc,
                                 method="procrustes", progress=False)
                proc_by_train[sub] = measure(proc, f"{tname}/procrustes{tag}")
            proc_hits.append(proc_by_train[sub])
            for row_name, system, own in variants:
                label = f"{tname}/{row_name}{tag}"
                sp, extra = fit_system(system, own, train_mans, s, label)
                row_encoders[f"{tname}/{row_name}"] = dict(sp.encoders)
                per_row.setdefault(row_name, ([], []))[0].append(measure(sp, label))
                per_row[row_name][1].append(extra)
                if centre:
                    centred_hits = measure(centred(sp, train_mans, cache=fc), f"{tname}/{row_name} +center{tag}")
                    per_row.setdefault(row_name + " +center", ([], []))[0].append(centred_hits)
                    per_row[row_name + " +center"][1].append({})
        proc_mean = add_row(tname, "procrustes", proc_hits, None, [{}])
        baselines[f"{tname}/procrustes"] = {k: float(v.mean()) for k, v in proc_mean.items()}
        hits_of = {name: add_row(tname, name, h, proc_mean, e) for name, (h, e) in per_row.items()}
        row_hits = {v[0]: hits_of[v[0]] for v in variants}  # the trained rows (not +center), seed-mean hits
        timings[tname] = round(time.perf_counter() - t0, 1)
        paired[tname] = paired_vs_first(list(row_hits), row_hits, seed, n_boot, groups) if len(row_hits) > 1 else {}
    notes = summary_notes(metrics, sets, [v[0] for v in variants], names, centre, seed_list)
    if several:
        notes.append(f"seeds {', '.join(map(str, seed_list))}: each seed draws its own train subsample (max_train) and "
                     "fits every trained system on it; Procrustes is fitted once per distinct subsample (it has no "
                     "other seed), the label bridge once (no training); a cell is each query's hit averaged over the "
                     "seeds, its interval and its difference to the better baseline (the bridge, or Procrustes "
                     "averaged over the seeds likewise) a cluster bootstrap of those averages; per-seed values in "
                     "the JSON metrics, <cell>/seedK")
    if any(paired.values()):
        notes.append(f"several trained rows: each row minus the first ({variants[0][0]}) per cell, same queries, paired "
                     f"95% bootstrap ({n_boot} resamples, seed {seed}) with queries won / lost"
                     + (" (right on more / fewer of the seeds than the first row)" if several else "")
                     + ", in the JSON config "
                     "paired_vs_first_row[train set][row][cell]")
    notes += [
        "cells: R@1 on each corpus' test split (one pair per query, strict, duplicates interchangeable) and Fashion-MNIST"
        f" zero-shot on its first {len(fm_recs)} test images; (lo-hi): bootstrap 95% interval ({n_boot} resamples, "
        f"seed {seed}) over captions for retrieval (queries sharing a caption resampled together) and over images for "
        "Fashion-MNIST",
        "+center: inductive centring, each modality's mean train embedding subtracted at embed time (no test statistics); "
        "fm transd.: centred on the Fashion-MNIST test images themselves (transductive, apart); fm tp: the prompts "
        "(templates and class names) chosen on Fashion-MNIST train images, FM_TEMPLATES_TRAIN / FM_NAMES_TRAIN"
        + (f"; fm bal., fm tp bal.: class biases balanced on Fashion-MNIST train images {bal_start}-{bal_start + len(bal) - 1}"
           f" (unlabelled) at temperature {temps[0]:g}, then each test image on its own (inductive)" if bal else "")
        + (f"; fm ref., fm tp ref.: the class vectors first refined on the same unlabelled images (anybind.zeroshot_adapt,"
           f" balanced self-training, prototype weight {mixes[0]:g}), then balanced" if bal and mixes else "")
        + ("; fm chosen: each space's own templates, chosen greedily (anybind.prompts.CANDIDATE_TEMPLATES) on Tux Paint "
           "val (category) + emoji val (subgroup), stored with the space, class names FM_NAMES (templates and "
           "held-out checks in the JSON config, chosen_prompts, each with the row and seed of its space)" if sel is not None else ""),
        "recipe = locked text, ridge start, label-bridge images, InfoNCE + early stopping on val (the issue-16 start); "
        "+start: its epoch 0 (no fine-tuning); +finetune / +nofinetune: finetune=True (fine-tuned even on a small "
        "own val) / False (the start kept); +bridge: the ridge start shrinks towards the label bridge; +residual: the start is the label bridge itself, "
        "fine-tuning learns a zero-initialised residual; +noguard / +guard: the start guard off / on (the label bridge kept "
        "as the start where the ridge does not beat it on val); +wise: WiSE-FT, "
        "alpha on val; +l2sp: lambda from the grid " + l2sp_grid + " chosen on val; +lrX: learning rate X; "
        "+mixup(X): geodesic multi-modal mixup hard negatives at weight X (0.5); +select: epoch, WiSE-FT alpha and "
        f"ridge shrinkage chosen on the val split of {select or '-'} (a corpus never measured here); +selectown: on the "
        "training corpora's own val splits and that corpus' together; "
        "defaults = Space.fit(data)" + (f"; image=: each trained system fitted with each of {', '.join(specs)} "
                                        "(label bridge and Procrustes keep theirs)" if specs else "")
        + (f"; text=: each trained system fitted with each of {', '.join(texts)} (a defaults row without image= "
           "gets the image encoder recipe auto picks for that text lock, a recipe row the label bridge into it)" if texts else ""),
    ]
    return TaskResult(
        metrics=metrics,
        baselines=baselines,
        table=rows,
        config={"corpora": names, "train_sets": sets, "systems": wanted, "image_encoders": specs, "text_encoders": texts, "row_encoders": row_encoders, "max_train": cap, "fm_test_images": len(fm_recs),
                "bootstrap": n_boot, "seeds": seed_list, "l2sp_chosen_on_val": chosen, "seconds_per_train_set": timings,
                "paired_vs_first_row": paired,
                "chosen_prompts": chosen_prompts},
        notes=notes,
    )

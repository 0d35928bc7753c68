"""Instruments classified from text prompts (issue 16): ``anybind bench --task instruments-zeroshot``.

The General MIDI instruments corpus (``anybind corpus instruments``) is classified by its ``family``
(17 classes) and ``instrument`` (129) labels on its test split, zero-shot: each class name is filled
into prompt templates, averaged (a prompt ensemble), and every clip goes to its nearest class prompt.
Spaces compared, all in the same run:

* ``tuxpaint``: audio<->text bound with the recipe on Tux Paint's sounds only (out of domain);
* ``indomain``: the same recipe on the instruments train split (early stopping on its val split);
* ``procrustes``: the closed-form orthogonal map fitted on the instruments train pairs (no gradient
  training; there is no label bridge for audio: the audio encoder has no class head);
* ``procrustes-tux``: the same on Tux Paint's sounds.

The corpus splits hold out pitches, not instruments, so the two spaces fitted on the instruments train split
saw every class name in their captions ("a grand piano playing a short very low note, softly"): their rows
are zero-shot only in that no classifier is trained on labels; the Tux Paint rows measure transfer.

The ceiling is a linear probe: logistic regression on the frozen audio encoder's standardised features
of the train split, its C chosen on val.  ``of ceiling`` = zero-shot test accuracy / probe test accuracy;
issue 16's target is >= 0.60.  Every choice is made on val; test is scored once.  ``(lo-hi)``: seeded
bootstrap 95 % interval over the test clips.

Options: ``corpus`` (a built instruments corpus; default: build one under the work folder),
``labels`` (``family,instrument``), ``systems`` (comma list of the names above), ``templates``
(``|``-separated templates, ``{}`` for the class name), ``boot``, ``epochs``, ``via`` (1: also the family
read through its instruments' prompts: a clip's family is that of its nearest instrument prompt; still no
audio label is used, only the GM table's instrument -> family map), ``split``: ``corpus`` (default, the
corpus' own splits, which hold out pitches) or ``instrument``: the corpus regrouped by whole instrument,
stratified over the families and seeded (``anybind.data.folds.stratified_group_split``; of a family's 8
instruments 5 train, 1 val, 2 test; the one-instrument drum kit stays in train), so no test instrument's name
is in a training caption and the instrument-train spaces' family rows are zero-shot proper.  There the
``instrument`` label is skipped (its classes differ between splits: a probe trained on train cannot name a
test instrument) and the ceiling is the family probe trained on the train instruments.  ``balance`` (1: rows with
class biases balanced on the unlabelled train clips, T on val from ``balance_t``), ``refine`` (with balance=1:
rows with class vectors first refined there, :mod:`anybind.zeroshot_adapt`; the weight and T chosen on val),
``prompts=chosen`` (every row again with each space's ensemble chosen on val from :data:`SOUND_CANDIDATES`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from . import TaskResult, task

#: prompts for a sound class; written before any measurement (the lever runs compare others on val)
INSTRUMENT_TEMPLATES = (
    "{}",
    "the sound of a {}.",
    "a {} playing a note.",
    "a recording of a {}.",
)
#: what ``prompts=chosen`` picks an ensemble from (greedy forward selection on val, anybind.prompts.choose_templates):
#: INSTRUMENT_TEMPLATES and generic sound wordings, written before any of them was scored
SOUND_CANDIDATES = (
    *INSTRUMENT_TEMPLATES,
    "a {}.",
    "a {} sound.",
    "the sound of {}.",
    "a note played on a {}.",
    "music played on a {}.",
    "a {} playing a short note.",
    "a {} playing a long note.",
    "a {} playing a low note.",
    "a {} playing a high note.",
    "a {} playing a note, softly.",
    "a {} playing a note, loudly.",
    "a {} instrument.",
    "a musical instrument: {}.",
)
PROMPTS = ("", "chosen")
SYSTEMS = ("tuxpaint", "indomain", "procrustes", "procrustes-tux")
SPLITS = ("corpus", "instrument")
PROBE_C = (0.001, 0.01, 0.1, 1.0, 10.0)
MODS = ["audio", "text"]


def class_names(records, label: str) -> dict[str, str]:
    """label value -> the words a prompt says: the instrument's spoken name, the family in lower case."""
    out: dict[str, str] = {}
    for r in records:
        value = str(r.labels[label])
        spoken = (r.meta or {}).get("spoken") if label == "instrument" else None
        out.setdefault(value, spoken or value.lower())
    return out


def zero_shot_hits(space, records, label: str, names: dict[str, str], templates, cache,
                   group: dict[str, str] | None = None) -> np.ndarray:
    """0/1 correctness per clip (only the count matters to the bootstrap) of the prompt-ensemble zero-shot.

    ``group`` (class -> group): a prediction counts when it falls in the true class' group -- the
    family read through its members' prompts (``label="instrument"``, ``group`` = instrument -> family).
    """
    from ..evaluate import zero_shot

    zs = zero_shot(space, records, "audio", label, classes=sorted(names), names=lambda c: names[c],
                   templates=list(templates), cache=cache)
    conf = np.asarray(zs["confusion"])
    if group is None:
        k = int(np.trace(conf))
    else:
        g = np.array([group[c] for c in zs["labels"]])
        k = int(conf[g[:, None] == g[None, :]].sum())
    n = int(zs["n"])
    return np.r_[np.ones(k), np.zeros(n - k)]


def linear_probe(feats: dict[str, np.ndarray], ys: dict[str, list[str]], seed: int = 0):
    """Logistic regression on standardised frozen features, C chosen on val.

    Returns ``(C, val accuracy, per-test-clip 0/1 hits)``."""
    from sklearn.linear_model import LogisticRegression

    from ..recipe import sklearn_seed

    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    z = {k: (v - mu) / sd for k, v in feats.items()}
    best = None
    for c in PROBE_C:
        clf = LogisticRegression(max_iter=3000, C=c, random_state=sklearn_seed(seed)).fit(z["train"], ys["train"])
        acc = float((clf.predict(z["val"]) == np.asarray(ys["val"])).mean())
        if best is None or acc > best[1]:
            best = (c, acc, clf)
    c, val_acc, clf = best
    return c, val_acc, (clf.predict(z["test"]) == np.asarray(ys["test"])).astype(np.float64)


def choose_on_val(space, records, label: str, names: dict[str, str], cache) -> list[str]:
    """The prompt ensemble chosen for ``space`` from :data:`SOUND_CANDIDATES` on labelled val ``records``
    (:func:`anybind.prompts.choose_templates`: greedy, mean balanced accuracy; never a test split)."""
    from ..prompts import SelectionSet, choose_templates

    sel = SelectionSet(f"instruments/val/{label}", records, label, "audio", names=lambda c: names[c], split="val")
    return choose_templates(space, [sel], SOUND_CANDIDATES, cache=cache).templates


def _spaces(work: Path, man, systems, cache, seed: int, epochs: int, console):
    from ..space import Space
    from .tuxpaint import PLAIN_ENCODERS, compare_on_tuxpaint, fixed_recipe

    out = {}
    if "tuxpaint" in systems or "procrustes-tux" in systems:
        sp, proc, _, _ = compare_on_tuxpaint(work, modalities=tuple(MODS), cache=cache, seed=seed, epochs=epochs,
                                             console=console, **fixed_recipe(MODS))
        out["tuxpaint"], out["procrustes-tux"] = sp, proc
    if "indomain" in systems:
        out["indomain"] = Space.fit(man, modalities=MODS, cache=cache, seed=seed, epochs=epochs, progress=False,
                                    **fixed_recipe(MODS))
    if "procrustes" in systems:
        out["procrustes"] = Space.fit(man, modalities=MODS, encoders={m: PLAIN_ENCODERS[m] for m in MODS},
                                      cache=cache, method="procrustes")
    return {s: out[s] for s in systems}


SPLIT_NOTE = {
    "corpus": "the splits hold out pitches, not instruments: the in-domain and instruments-Procrustes spaces saw "
              "every class's name in their training captions (zero-shot only in that no classifier is trained); "
              "the Tux Paint rows are the out-of-domain transfer",
    "instrument": "split=instrument: train/val/test hold disjoint instruments (stratified over families, seeded); "
                  "no test instrument's name is in a training caption, so every row is zero-shot proper; the "
                  "probe ceiling is trained on the train instruments' families",
}
LABELS_OF = {
    "tuxpaint": "recipe, bound on Tux Paint sounds",
    "indomain": "recipe, bound on instruments train",
    "procrustes": "Procrustes, instruments train",
    "procrustes-tux": "Procrustes, Tux Paint sounds",
}


@task(
    "instruments-zeroshot",
    "General MIDI instrument family / instrument from text prompts (test split), spaces bound on Tux Paint, "
    "in-domain and by Procrustes, beside the linear-probe ceiling (issue 16: >= 60 % of it)",
)
def instruments_zeroshot(work: Path, cache=None, seed: int = 0, console=None, corpus: str = "",
                         labels: str = "family,instrument", systems: str = ",".join(SYSTEMS),
                         templates: str = "|".join(INSTRUMENT_TEMPLATES), boot: str = "1000",
                         epochs: str = "200", via: str = "1", split: str = "corpus", balance: str = "0",
                         balance_t: str = "5,10,20,50,200", refine: str = "", prompts: str = "") -> TaskResult:
    from ..cache import FeatureCache
    from ..corpora.instruments import build_instruments
    from ..data.folds import stratified_group_split
    from ..data.manifest import load_manifest
    from ..encoders.registry import get_encoder
    from ..errors import DataError
    from .tuxpaint import build_once
    from .fm_balance import balance_options, balanced_on_val, refine_option
    from .stats import boot_option, bootstrap
    from .tuxpaint import PLAIN_ENCODERS

    if balance not in ("0", "1"):
        raise DataError(f"instruments-zeroshot: balance={balance!r}; give 1 (also balanced rows) or 0")
    bal_temps = balance_options("instruments-zeroshot", balance, "0", balance_t)[2] if balance == "1" else []
    refine_mixes = refine_option("instruments-zeroshot", refine)
    if refine_mixes and not bal_temps:
        raise DataError(f"instruments-zeroshot: refine={refine!r} refines on the unlabelled train clips the biases are "
                        "balanced on: give balance=1")
    if prompts not in PROMPTS:
        raise DataError(f"instruments-zeroshot: prompts={prompts!r}; known: chosen (templates chosen on val from "
                        "SOUND_CANDIDATES), or leave it out")
    n_boot = boot_option("instruments-zeroshot", boot)  # refused before the corpus is built
    path = Path(corpus) / "manifest.jsonl" if corpus else build_once(work, "instruments", build_instruments)
    man = load_manifest(path, modalities=MODS, progress=True)
    sys_names = [s for s in systems.split(",") if s]
    unknown = [s for s in sys_names if s not in SYSTEMS]
    if unknown:
        raise DataError(f"instruments-zeroshot: unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    if split not in SPLITS:
        raise DataError(f"instruments-zeroshot: unknown split {split!r}; known: {', '.join(SPLITS)}")
    tpl = [t for t in templates.split("|") if t]
    label_keys, via_members = [x for x in labels.split(",") if x], via == "1"
    skipped = {}
    if split == "instrument":
        man = stratified_group_split(man, group=lambda r: str(r.labels["instrument"]),
                                     stratum=lambda r: str(r.labels["family"]), seed=seed)
        if "instrument" in label_keys:
            label_keys.remove("instrument")
            skipped["instrument"] = ("split=instrument: test instruments are not train classes, so no probe "
                                     "ceiling exists; the family label is scored (its ceiling: a probe on the "
                                     "train instruments' families)")
    split_name, split = split, {s: man.split(s) for s in ("train", "val", "test")}
    spaces = _spaces(work, man, sys_names, cache, seed, int(epochs), console)

    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    enc = get_encoder(PLAIN_ENCODERS["audio"])
    feats = {s: fc.encode(enc, [r.values["audio"] for r in recs], progress=s == "train",
                          description=f"probe {s} features") for s, recs in split.items()}
    rows, metrics, base, chosen_tpl = [], {}, {}, {}
    prompt_sets = [("", "", lambda sp, k, nm: tpl)]
    if prompts == "chosen":  # each space's own ensemble, chosen on the val clips of the label its prompts name
        prompt_sets.append((", prompts chosen on val", "-chosen-prompts",
                            lambda sp, k, nm: choose_on_val(sp, split["val"], k, nm, cache)))
    for label in label_keys:
        names = class_names(man.records, label)
        ys = {s: [str(r.labels[label]) for r in recs] for s, recs in split.items()}
        c, probe_val, probe_hits = linear_probe(feats, ys, seed)
        ceiling, ci, _ = bootstrap(probe_hits, n=n_boot, seed=seed)
        n_cls = len(names)
        scored: list[tuple[bool, float, float]] = []  # (bound on other data, val accuracy, test of ceiling)
        variants = [("", label, names, None)]
        if label == "family" and via_members:  # the family read through its instruments' names
            inst = class_names(man.records, "instrument")
            fam_of = {str(r.labels["instrument"]): str(r.labels["family"]) for r in man.records}
            variants.append((", via instrument prompts", "instrument", inst, fam_of))
        for s, sp in spaces.items():
            key = "anybind" if s == "tuxpaint" else s
            dest = metrics if key == "anybind" else base.setdefault(key, {})
            for (suffix, key_label, nm, grp), (tsuffix, tkey, t_of) in itertools.product(variants, prompt_sets):
                tpl_here = t_of(sp, key_label, nm)
                if tkey:
                    chosen_tpl.setdefault(s, {})[key_label] = tpl_here

                def hits(part, t, _k=key_label, _n=nm, _g=grp):
                    return zero_shot_hits(sp, split[part], _k, _n, t, cache, _g)

                name = f"{label} ({n_cls}-way): {LABELS_OF[s]}{suffix}{tsuffix}"
                val = float(hits("val", tpl_here).mean())
                one = float(hits("test", tpl_here[:1]).mean())
                acc, (lo, hi), _ = bootstrap(hits("test", tpl_here), n=n_boot, seed=seed)
                frac = acc / ceiling if ceiling > 0 else float("nan")
                rows.append({"name": name, "val": val, "test": acc,
                             "(lo-hi)": f"{lo:.3f}-{hi:.3f}", "one prompt": one, "of ceiling": frac})
                other = s.endswith("tux") or s == "tuxpaint"
                scored.append((other, val, frac))
                mkey = label + ("-via-instruments" if grp else "") + tkey
                dest.update({f"{mkey}/accuracy": acc, f"{mkey}/val_accuracy": val, f"{mkey}/fraction_of_ceiling": frac})
                if not bal_temps or grp is not None:
                    continue
                # class biases balanced on the unlabelled train clips (T on val); then also class vectors refined
                # there first (balanced self-training, the weight and T on val)
                plain_b = None
                for what, mixes in (("balanced", (0.0,)), ("refined + balanced", tuple(refine_mixes))):
                    if not mixes:
                        continue
                    b = balanced_on_val(sp, split, label, nm, tpl_here, bal_temps, cache, mixes=mixes)
                    bacc, (blo, bhi), _ = bootstrap(b["test_hits"], n=n_boot, seed=seed)
                    _, dci, _ = bootstrap(b["test_hits"] - b["plain_hits"], n=n_boot, seed=seed)
                    said = f"minus unbalanced {dci[0]:+.3f} to {dci[1]:+.3f}"
                    if plain_b is not None:
                        _, eci, _ = bootstrap(b["test_hits"] - plain_b, n=n_boot, seed=seed)
                        said += f"; minus balanced {eci[0]:+.3f} to {eci[1]:+.3f}"
                    plain_b = b["test_hits"] if plain_b is None else plain_b
                    chosen = (f"m={b['m']:g}, " if b["m"] else "") + f"T={b['T']:g}"
                    bfrac = bacc / ceiling if ceiling > 0 else float("nan")
                    rows.append({"name": f"{name}, {what} ({chosen} on val; {said})", "val": b["val"], "test": bacc,
                                 "(lo-hi)": f"{blo:.3f}-{bhi:.3f}", "one prompt": None, "of ceiling": bfrac})
                    scored.append((other, b["val"], bfrac))
                    pre = f"{mkey}/{what.replace(' + ', '_')}"
                    dest.update({f"{pre}_accuracy": bacc, f"{pre}_val_accuracy": b["val"], f"{pre}_T": b["T"],
                                 f"{pre}_fraction_of_ceiling": bfrac, **({f"{pre}_m": b["m"]} if b["m"] else {})})
        rows.append({"name": f"{label} ({n_cls}-way): linear probe (ceiling, C={c:g} on val)", "val": probe_val,
                     "test": ceiling, "(lo-hi)": f"{ci[0]:.3f}-{ci[1]:.3f}", "one prompt": None, "of ceiling": 1.0})
        rows.append({"name": f"{label} ({n_cls}-way): chance", "val": 1 / n_cls, "test": 1 / n_cls, "(lo-hi)": "",
                     "one prompt": None, "of ceiling": (1 / n_cls) / ceiling if ceiling > 0 else float("nan")})
        base.setdefault("linear-probe", {}).update({f"{label}/accuracy": ceiling, f"{label}/C": c})
        base.setdefault("chance", {})[f"{label}/accuracy"] = 1 / n_cls
        # the target, for the system and prompt reading chosen on val: among spaces bound on other data (Tux Paint:
        # zero-shot proper) and, apart, among spaces bound on the instruments' train split (their names seen)
        for what, transfer in (("target_met", True), ("in_domain_target_met", False)):
            pick = max((x for x in scored if x[0] == transfer), key=lambda x: x[1], default=None)
            if pick is not None:
                metrics[f"{label}/{what}"] = float(pick[2] >= 0.6)
    return TaskResult(
        metrics=metrics,
        baselines=base,
        table=rows,
        config={"corpus": str(path), "templates": tpl, "systems": sys_names, "probe_C_grid": list(PROBE_C),
                "clips": {s: len(r) for s, r in split.items()}, "bootstrap": n_boot, "epochs": int(epochs),
                "split": split_name, "skipped_labels": skipped, "refine": refine_mixes,
                "chosen_templates": chosen_tpl or None,
                "instruments": {s: sorted({str(r.labels["instrument"]) for r in recs}) for s, recs in split.items()}
                if split_name == "instrument" else None},
        notes=["zero-shot: class names (instrument: its spoken name; family: lower case) in a prompt ensemble of "
               f"{len(tpl)} templates; 'one prompt': the first template alone",
               "of ceiling: zero-shot test accuracy / linear-probe test accuracy (issue 16 target: >= 0.60); "
               "the probe is logistic regression on standardised audio:aisfx features of the train split, C on val",
               "(lo-hi): bootstrap 95% interval over the test clips; no label bridge for audio (no class head)",
               SPLIT_NOTE[split_name]]
        + (["balanced (balance=1): anybind.zeroshot.ZeroShotClassifier biases fitted on the unlabelled train clips "
            f"(labels never read), temperature chosen on val from {', '.join(f'{t:g}' for t in bal_temps)}, then each "
            "test clip on its own"] if bal_temps else [])
        + ([f"refined + balanced (refine={refine}): the class vectors first refined on the same unlabelled train clips "
            "(anybind.zeroshot_adapt: balanced self-training, k-means from the text classifier), then the biases "
            "balanced; the prototype weight m and T chosen together on val; 'minus balanced': paired against the "
            "balanced row above it"] if refine_mixes else [])
        + (["prompts chosen on val: each space's ensemble chosen greedily from SOUND_CANDIDATES on the val clips "
            "(mean balanced accuracy; the row's val is optimistic, it chose), the templates in the JSON config"]
           if prompts == "chosen" else []),
    )

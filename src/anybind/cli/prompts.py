"""``anybind prompts``: show, set or choose the zero-shot prompt templates stored with a space."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from ._common import app, check_out, console, fail, seed_option


@app.command()
def prompts(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    template: list[str] = typer.Option(None, "--template", help="Store this template (with {}; repeatable)."),
    choose_on: list[Path] = typer.Option(
        None, "--choose-on", help="Labelled manifest whose --split records choose the templates (repeatable)."),
    label: list[str] = typer.Option(None, "--label", help="Label key to classify by (one, or one per --choose-on)."),
    split: str = typer.Option("val", help="Records that choose (never test)."),
    candidate: list[str] = typer.Option(
        None, "--candidate", help="Candidate template (repeatable; default anybind.prompts.CANDIDATE_TEMPLATES)."),
    modality: str = typer.Option("image", help="The labelled modality."),
    max_templates: int = typer.Option(8, help="At most this many templates chosen."),
    describe: list[str] = typer.Option(
        None, "--describe", help="Class name the language model describes, stored with the space (repeatable)."),
    describe_from: Optional[Path] = typer.Option(
        None, "--describe-from", help="Manifest whose --label values name the classes to describe (labels only)."),
    lm: str = typer.Option("smollm2", "--lm", help="Language model that writes the descriptions."),
    seed: int = seed_option("Seed of the descriptions' (greedy) generation."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Save the space here (default: in place)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Show the space's zero-shot prompts; --template stores given ones; --choose-on picks them greedily from
    candidates on held-out labelled records (val of the training corpus, other labelled corpora; never test);
    --describe / --describe-from store descriptions of the classes written by a language model (CuPL; no labelled
    data), which zero-shot averages with the templates.

    Example:  anybind prompts spaces/tux --choose-on data/tux/manifest.jsonl --label category --split val
    Example:  anybind prompts spaces/tux --describe sandal --describe "ankle boot"
    """
    from ..space import Space

    if sum(map(bool, (template, choose_on, describe or describe_from))) > 1:
        raise typer.BadParameter("give one of --template, --choose-on, --describe / --describe-from")
    if choose_on and not label:
        raise typer.BadParameter("--choose-on needs --label (the key its records are classified by)")
    if describe_from and (describe or len(label or []) != 1):
        raise typer.BadParameter("--describe-from needs one --label (the key whose values name the classes), "
                                 "and no --describe")
    try:
        space = Space.load(space_dir)
        if not template and not choose_on and not describe and not describe_from:
            _show(space)
            return
        target = out or space_dir
        if out:
            check_out(out, "space", False)
        if template:
            space.set_templates(template)
        elif describe or describe_from:
            res = _describe(space, list(describe or []), describe_from, (label or [""])[0], modality, lm, seed)
            console.print(f"{sum(map(len, res.by_class.values()))} description(s) kept for {len(res.by_class)} "
                          f"class(es); dropped: {', '.join(f'{r} {c}' for r, c in res.dropped.items()) or 'none'}",
                          highlight=False, markup=False)
        else:
            choice = space.choose_templates(list(choose_on), label[0] if len(label) == 1 else list(label), split=split,
                                            candidates=candidate or None, modality=modality,
                                            max_templates=max_templates, cache=cache)
            for s in choice.sets:
                console.print(f"{s['name']}: {s['records']} records, {s['classes']} classes "
                              f"({s['label']!r})", highlight=False, markup=False)
            console.print(f"mean balanced accuracy {choice.before:.3f} with the space's prompts before, "
                          f"{choice.score:.3f} with the {len(choice.templates)} chosen", highlight=False)
            if choice.kept:
                console.print(f"kept the space's own {len(choice.current)} template(s): the choice does not beat them "
                              f"on these records", highlight=False, markup=False)
        space.save(target, overwrite=True)
    except AnybindError as e:
        fail(e)
    _show(space)
    console.print(f"saved to {target}", highlight=False, markup=False)


def _show(space) -> None:
    console.print("\n".join(space.templates), highlight=False, markup=False)
    for name, ds in space.descriptions.items():
        console.print(f"{name}:", highlight=False, markup=False)
        for d in ds:
            console.print(f"  {d}", highlight=False, markup=False)


def _describe(space, names: list[str], manifest: Optional[Path], label: str, modality: str, lm: str, seed: int):
    """Descriptions of the classes (given, or a manifest's label values as zero-shot names them) stored with
    ``space``."""
    from ..caption.describe import describe_and_set

    if manifest is not None:
        from ..data.fields import require_label
        from ..data.manifest import load_manifest
        from ..encoders.kinds import manifest_kinds
        from ..evaluate import class_name

        man = load_manifest(manifest, modalities=[modality], kinds=manifest_kinds(space.encoders), check_media=False)
        require_label(man.records, label, str(manifest), path=manifest, warn=False, empty_ok=False)
        values = sorted({str(r.labels[label]) for r in man.records if label in r.labels})
        names = list(dict.fromkeys(class_name(v) for v in values))
    return describe_and_set(space, names, lm=lm, seed=seed)


@app.command()
def balance(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    on: Path = typer.Option(..., "--on", help="Manifest of unlabelled target-domain items (its labels are never read)."),
    split: str = typer.Option("train", help="The --on records used (never test: the biases are then frozen)."),
    cls: list[str] = typer.Option(None, "--class", help="A class (repeatable); or --classes-from with --label."),
    classes_from: Optional[Path] = typer.Option(None, help="Manifest whose --label values are the classes."),
    label: Optional[str] = typer.Option(None, "--label", help="The label key of --classes-from."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template (repeatable; default the space's own)."),
    modality: str = typer.Option("image", help="The modality classified."),
    temperature: float = typer.Option(10.0, help="Softmax temperature of the prior matching (logits = T * cosine)."),
    share: list[str] = typer.Option(None, "--share", help="CLASS=SHARE of a given prior (repeatable; default uniform)."),
    refine: float = typer.Option(0.0, help="Also refine the class vectors on the --on items first (balanced self-training): "
                                 "the weight of their prototypes, 0-1 (0: none; 0.5 chosen on emoji val)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where the zero-shot classifier folder goes."),
    overwrite: bool = typer.Option(False, help="Replace a saved classifier at --out."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Fit a zero-shot classifier's class biases on unlabelled items of the target domain so that its predicted
    classes follow a prior (uniform unless --share), then save it: `anybind eval --zero-shot KEY --classifier OUT`
    classifies each item on its own with them (inductive: no statistics of the evaluated batch).

    Example:  anybind balance spaces/tux --on data/fm/manifest.jsonl --split train --classes-from data/fm/manifest.jsonl --label class -o fm-classifier
    """
    from ..data.fields import require_label
    from ..data.manifest import load_manifest
    from ..encoders.kinds import manifest_kinds
    from ..space import Space
    from ..zeroshot import ZeroShotClassifier

    if bool(cls) == bool(classes_from):
        raise typer.BadParameter("give the classes as --class NAME (repeatable) or --classes-from MANIFEST --label KEY")
    if classes_from and not label:
        raise typer.BadParameter("--classes-from needs --label (the key whose values are the classes)")
    if split in ("test", "all"):
        raise typer.BadParameter(f"--split {split}: the biases are fitted on unlabelled items that are not evaluated "
                                 "(train or val), then frozen")
    check_out(out, "zero-shot", overwrite)
    try:
        space = Space.load(space_dir)
        classes = list(cls or [])
        if classes_from:
            lab = load_manifest(classes_from, modalities=[modality], kinds=manifest_kinds(space.encoders),
                                check_media=False)
            require_label(lab.records, label, str(classes_from), path=classes_from, warn=False, empty_ok=False)
            classes = sorted({str(r.labels[label]) for r in lab.records if label in r.labels})
        prior = "balanced"
        if share:
            parts = [s.rpartition("=") for s in share]
            if any(not sep for _, sep, _ in parts):
                raise typer.BadParameter("--share takes CLASS=SHARE")
            try:
                prior = {c: float(v) for c, _, v in parts}
            except ValueError:
                raise typer.BadParameter("--share takes CLASS=SHARE with a number") from None
        man = load_manifest(on, modalities=[modality], kinds=manifest_kinds(space.encoders))
        items = [r for r in man.split(split) if r.has(modality)]
        clf = ZeroShotClassifier(space, classes, templates=template or None, modality=modality, prior=prior,
                                 temperature=temperature, refine=refine).calibrate(items, cache=cache, progress=True)
        clf.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    info = clf.calibration_
    console.print(f"{len(classes)} classes balanced on {info['items']} unlabelled {split} items of {on} "
                  f"({info['iterations']} iterations)", highlight=False, markup=False)
    if "refine" in info:
        console.print(f"class vectors refined first: prototype weight {info['refine']['mix']:g}, {info['refine']['rounds']} "
                      f"round(s), {info['refine']['changed_last_round']} item(s) changed class in the last",
                      highlight=False, markup=False)
    for c, b, a in zip(classes, info["predicted_before"], info["predicted_after"]):
        console.print(f"  {c}: predicted for {b} -> {a} of them", highlight=False, markup=False)
    console.print(f"saved to {out}", highlight=False, markup=False)

"""``anybind eval / diagnose / embed / encoders / demo / bench``: measure and use a space."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import AnybindError
from ._common import Rerank, Split, app, choice, console, fail, query_items, seed_option


@app.command("eval")
def eval_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="Manifest to evaluate on."),
    split: Split = choice("test", Split, help="Records to measure on."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the flat metrics here."),
    zero_shot_label: Optional[str] = typer.Option(None, "--zero-shot", help="Also classify zero-shot on this label key."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template(s) for zero-shot, e.g. 'a photo of a {}.' (default: the space's own, see anybind prompts)."),
    center: bool = typer.Option(False, "--center", help="Zero-shot: subtract the evaluated items' mean embedding first "
                                "(transductive; helps when a whole corpus sits off in one corner of the space)."),
    classifier: Optional[Path] = typer.Option(None, "--classifier", help="Zero-shot: also with this saved classifier's "
                                              "classes, prompts and balanced class biases (see anybind balance), item by item."),
    cache: Optional[Path] = typer.Option(None),
    with_diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics", help="Add the geometry diagnostics (diag/... keys, see `anybind diagnose`)."),
    rerank: Optional[Rerank] = choice(
        None, Rerank, "--rerank", help="Hubness correction (the train split as banks)."
    ),
):
    """Retrieval (R@1/5/10, median rank) in both directions for every modality pair.

    Scored as the space scores: cosine, or in a space trained with Symile the multilinear inner
    product (with plain cosine beside it, cosine/... keys).

    Example:  anybind eval spaces/tux data/tux/manifest.jsonl --split test --json results.json
    """
    from ..evaluate import evaluate, retrieval_from_embeddings, retrieval_table
    from ..space import Space

    try:
        space = Space.load(space_dir)
        if classifier is not None and not zero_shot_label:
            raise AnybindError("--classifier needs --zero-shot KEY (the label the classifier's classes are values of)")
        clf = None
        if classifier is not None:
            from ..zeroshot import ZeroShotClassifier

            clf = ZeroShotClassifier.load(classifier, space)
        res = evaluate(space, manifest, split=split, cache=cache, zero_shot_label=zero_shot_label,
                       templates=template or None, zero_shot_center=center, progress=True, rerank=rerank,
                       zero_shot_classifier=clf)
        symile = space.scorer.kind != "cosine"
        if with_diagnostics or symile:
            from ..diagnostics import diagnostics, embed_split

            embs = embed_split(space, manifest, split, cache=cache)
            if symile:  # the plain cosine beside the space's own score, for reference
                res.update({f"cosine/{k}": v for k, v in retrieval_from_embeddings(embs).items()})
            if with_diagnostics:
                res.update(diagnostics(embs))
    except AnybindError as e:
        fail(e)
    scored = "the multilinear inner product (Symile)" if space.scorer.kind != "cosine" else "cosine"
    console.print(retrieval_table({"space": {k: v for k, v in res.items() if not k.startswith(("cosine/", "diag/"))}},
                                  title=f"{space_dir} on {manifest} ({split}), scored by {scored}"))
    cos = {k[7:]: v for k, v in res.items() if k.startswith("cosine/")}
    if cos:
        console.print(retrieval_table({"space": cos}, title="the same embeddings scored by plain cosine (reference)"))
    zs = {k: v for k, v in res.items() if k.startswith("zeroshot/")}
    if zs:
        console.print_json(data=zs)
    if json_out:
        json_out.write_text(json.dumps(res, indent=2, sort_keys=True))
        console.print(f"metrics written to {json_out}")


@app.command("diagnose")
def diagnose_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="Manifest whose split is embedded."),
    split: Split = choice("test", Split, help="Records to measure on."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the picture here (PCA of every modality + similarity histograms)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the flat diag/... numbers here."),
    cache: Optional[Path] = typer.Option(None),
):
    """The geometry of a space: modality gap and separability, uniformity, alignment, hubness, effective rank.

    Example:  anybind diagnose spaces/tux data/tux/manifest.jsonl --split test --png tux-geometry.png --json diag.json
    """
    from ..diagnostics import diagnose, diagnostics_table
    from ..space import Space

    try:
        space = Space.load(space_dir)
        res, _ = diagnose(space, manifest, split, cache=cache, png=png, progress=True)
    except AnybindError as e:
        fail(e)
    console.print(diagnostics_table({str(space_dir): res}, title=f"{space_dir} on {manifest} ({split})"))
    if png:
        console.print(f"picture written to {png}")
    if json_out:
        json_out.write_text(json.dumps(res, indent=2, sort_keys=True))
        console.print(f"diagnostics written to {json_out}")


@app.command()
def embed(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    items: list[str] = typer.Argument(..., help="Texts (for text modalities), file paths, or for a vectors: "
                                      "modality keys or .npy files of its features (a 2-D array: one item a row)."),
    modality: str = typer.Option("text", "--modality", "-m"),
    out: Optional[Path] = typer.Option(None, help="Write an .npy here instead of printing JSON."),
    cache: Optional[Path] = typer.Option(None),
):
    """Embed items into the space; prints one JSON vector per item (unit norm).

    Example:  anybind embed spaces/tux --modality text "a barking dog" "a cat"

    A vectors: modality (precomputed features), a 2-D array one item a row:  anybind embed spaces/imu -m imu feats.npy
    """
    import numpy as np

    from ..space import Space

    try:
        space = Space.load(space_dir)
        given = query_items(space, [(modality, it) for it in items], None, several=True)
        X = space.embed(modality, [item for _, item, _ in given], cache=cache)
    except AnybindError as e:
        fail(e)
    items = [name for _, _, name in given]
    if out:
        np.save(out, X)
        console.print(f"{X.shape} written to {out}")
    else:
        for it, v in zip(items, X):
            sys.stdout.write(json.dumps({"item": it, "vector": [round(float(x), 6) for x in v]}) + "\n")


@app.command()
def encoders():
    """List the registered encoder prefixes and the default encoder of each modality.

    Example:  anybind encoders
    """
    from rich.table import Table

    from ..encoders.registry import list_encoders

    table = Table("prefix", "source", "factory", "default for", title="encoder spec prefixes (PREFIX:NAME)")
    for info in list_encoders():
        table.add_row(info.prefix, info.source, info.target, ", ".join(info.default_for))
    console.print(table)
    console.print("plugins: declare an 'anybind.encoders' entry point (prefix = \"package.module:factory\")",
                  highlight=False)


@app.command()
def demo(
    work: Path = typer.Option(Path("demo-out"), help="Where the corpus, space and report go."),
    epochs: Optional[int] = typer.Option(
        None, min=1, help="Fine-tune for at most this many epochs (default: Space.fit's defaults, which keep the "
        "training-free start here: the sounds have 11 val pairs)."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None),
):
    """The main job: build the Tux Paint corpus, bind image + text + sound, measure beside baselines.

    Example:  anybind demo --work demo-out
    """
    from ..demo import run_demo

    try:
        run_demo(work, epochs=epochs, seed=seed, cache=cache, console=console)
    except AnybindError as e:
        fail(e)


@app.command()
def bench(
    task: list[str] = typer.Option(None, "--task", "-t", help="Task name (repeatable); see --list."),
    all_tasks: bool = typer.Option(False, "--all", help="Run every task."),
    list_tasks: bool = typer.Option(False, "--list", help="List the tasks and exit."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results (a list of task records)."),
    markdown: Optional[Path] = typer.Option(
        None, "--markdown", help="Update this Markdown file (e.g. BENCHMARKS.md): one section per task run."
    ),
    opt: list[str] = typer.Option(None, "--opt", help="KEY=VALUE passed to the tasks that take KEY (e.g. --opt limit=2000); a KEY none of them takes is an error."),
    work: Path = typer.Option(Path("runs/bench"), help="Scratch folder for corpora (a corpus there is reused while its builder version is current, else rebuilt) and spaces."),
    cache: Optional[Path] = typer.Option(None),
    seed: int = seed_option(),
):
    """Benchmarks: each task prints a table and records metrics beside baselines computed in the same run.

    Example:  anybind bench --task tuxpaint-retrieval --json results.json
    """
    from ..bench import TASKS, load_tasks, run_tasks

    load_tasks()

    if list_tasks:
        for name, t in sorted(TASKS.items()):
            console.print(f"[bold]{name}[/bold]: {t.description}")
        return
    names = sorted(TASKS) if all_tasks else list(task or [])
    if not names:
        raise typer.BadParameter("give --task NAME (see --list) or --all")
    try:
        bad = [o for o in (opt or []) if "=" not in o or not all(o.split("=", 1))]  # no key, or no value
        if bad:
            raise typer.BadParameter(f"--opt {bad[0]!r}: give KEY=VALUE (e.g. --opt limit=2000); leave an option out "
                                     "for its default")
        options = dict(o.split("=", 1) for o in (opt or []))
        records = run_tasks(names, json_out=json_out, work=work, cache=cache, seed=seed, console=console, options=options)
        if markdown:
            from ..bench import update_markdown

            import shlex

            command = "anybind bench " + " ".join(f"--task {n}" for n in names)
            command += "".join(f" --opt {shlex.quote(f'{k}={v}')}" for k, v in options.items())
            update_markdown(markdown, records, command)
            console.print(f"updated {markdown}")
    except AnybindError as e:
        fail(e)

"""The ``anybind`` command line (Typer + Rich).

Every command's ``--help`` ends with an example; run ``anybind --help`` for the list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import AnybindError

app = typer.Typer(
    help=(
        "Bind frozen pretrained encoders (text, image, sound, your own) into one shared space, "
        "then search, classify and measure with it.\n\n"
        "Typical session:\n\n"
        "  anybind corpus tuxpaint --out data/tux\n\n"
        "  anybind fit data/tux/manifest.jsonl --modalities image,text,audio --out spaces/tux\n\n"
        "  anybind eval spaces/tux data/tux/manifest.jsonl --split test\n\n"
        "  anybind embed spaces/tux --modality text \"a barking dog\""
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
corpus_app = typer.Typer(help="Build a paired corpus (a JSONL manifest with its media) from packaged data.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")
console = Console()
err = Console(stderr=True)


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/bold red] {e}", highlight=False)
    raise typer.Exit(2)


def _parse_encoders(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        if "=" not in v:
            raise typer.BadParameter(f"--encoder takes MODALITY=SPEC (e.g. image=image:efficientnet-lite0), got {v!r}")
        m, spec = v.split("=", 1)
        out[m.strip()] = spec.strip()
    return out


def _split_csv(v: str | None) -> list[str] | None:
    return [x.strip() for x in v.split(",") if x.strip()] if v else None


@corpus_app.command("tuxpaint")
def corpus_tuxpaint(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to (manifest.jsonl, media, LICENSE)."),
    stamps: Path = typer.Option(Path("/usr/share/tuxpaint/stamps"), help="Tux Paint stamps folder (Debian tuxpaint-stamps-default)."),
    copy_media: bool = typer.Option(True, "--copy/--no-copy", help="Copy media into the corpus (self-contained) or point at the stamps folder."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install the Debian package when it is missing (as root)."),
):
    """Tux Paint stamps: image + English caption + ~80 languages + sound effects + spoken descriptions.

    Example:  anybind corpus tuxpaint --out data/tux
    """
    from .corpora.tuxpaint import build_tuxpaint

    try:
        if install and stamps == Path("/usr/share/tuxpaint/stamps"):
            from .corpora._debian import ensure_debian_package

            ensure_debian_package("tuxpaint-stamps-default", str(stamps))
        summary = build_tuxpaint(out, stamps_dir=stamps, copy_media=copy_media, progress=True)
    except AnybindError as e:
        _fail(e)
    console.print(summary)


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="JSONL manifest to check."),
    modalities: Optional[str] = typer.Option(None, help="Only check these fields (comma-separated)."),
    strict: bool = typer.Option(False, help="Exit non-zero if any record is bad."),
):
    """Check a manifest without encoding anything: every bad record is listed with its reason.

    Example:  anybind validate data/tux/manifest.jsonl --strict
    """
    from .data.manifest import load_manifest

    try:
        man = load_manifest(manifest, modalities=_split_csv(modalities), progress=True)
    except AnybindError as e:
        _fail(e)
    console.print(man.report(), highlight=False)
    console.print_json(data=man.counts())
    if strict and man.bad:
        raise typer.Exit(1)


@app.command()
def fit(
    manifests: list[Path] = typer.Argument(None, help="JSONL manifest(s). Several = mixed training."),
    data: list[Path] = typer.Option(None, "--data", help="Another manifest (repeatable), same as a positional one."),
    weight: list[float] = typer.Option(None, "--weight", help="Sampling weight per manifest, in order (repeatable)."),
    modalities: Optional[str] = typer.Option(None, help="Fields to bind, comma-separated (default: all present)."),
    encoder: list[str] = typer.Option(None, "--encoder", "-e", help="MODALITY=SPEC, e.g. audio=audio:aisfx (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the space to."),
    method: str = typer.Option("contrastive", help="contrastive (trained projectors) | procrustes | cca (training-free)."),
    projector: str = typer.Option("mlp", help="mlp | linear."),
    dim: int = typer.Option(256, help="Shared space width."),
    epochs: int = typer.Option(200, help="Maximum epochs (early stopping on val)."),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(0.05),
    temperature: float = typer.Option(0.05, help="Initial temperature (learnt)."),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default $ANYBIND_CACHE or ~/.cache/anybind/features)."),
    strict: bool = typer.Option(False, help="Any bad record is fatal (default: report, skip, count)."),
):
    """Bind modalities into one space: encode once (cached), train projectors, save.

    Example:  anybind fit data/tux/manifest.jsonl --modalities image,text,audio --out spaces/tux
    """
    from .space import Space

    sources = list(manifests or []) + list(data or [])
    if not sources:
        raise typer.BadParameter("give at least one manifest")
    kw = dict(dim=dim, projector=projector, epochs=epochs, batch_size=batch_size, lr=lr,
              weight_decay=weight_decay, temperature=temperature, seed=seed)
    if method != "contrastive":
        kw = {"seed": seed}
    try:
        space = Space.fit(
            [str(s) for s in sources],
            modalities=_split_csv(modalities),
            encoders=_parse_encoders(encoder),
            method=method,
            cache=cache,
            strict=strict,
            weights=weight or None,
            **kw,
        )
        space.save(out)
    except AnybindError as e:
        _fail(e)
    tr = space.info.get("training", {})
    console.print(f"saved {space} to [bold]{out}[/bold]")
    if "best_epoch" in tr:
        console.print(f"best epoch {tr['best_epoch']} of {tr['epochs_run']}, val score {tr['best_val']:.3f}, temperature {space.temperature:.4f}")


@app.command("eval")
def eval_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="Manifest to evaluate on."),
    split: str = typer.Option("test", help="train | val | test | all."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the flat metrics here."),
    zero_shot_label: Optional[str] = typer.Option(None, "--zero-shot", help="Also classify zero-shot on this label key."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template(s) for zero-shot, e.g. 'a photo of a {}.'"),
    cache: Optional[Path] = typer.Option(None),
):
    """Retrieval (R@1/5/10, median rank) in both directions for every modality pair.

    Example:  anybind eval spaces/tux data/tux/manifest.jsonl --split test --json results.json
    """
    from .evaluate import evaluate, retrieval_table
    from .space import Space

    try:
        space = Space.load(space_dir)
        res = evaluate(space, manifest, split=split, cache=cache, zero_shot_label=zero_shot_label,
                       templates=template or ("a {}.",), progress=True)
    except AnybindError as e:
        _fail(e)
    console.print(retrieval_table({"space": res}, title=f"{space_dir} on {manifest} ({split})"))
    zs = {k: v for k, v in res.items() if k.startswith("zeroshot/")}
    if zs:
        console.print_json(data=zs)
    if json_out:
        json_out.write_text(json.dumps(res, indent=2, sort_keys=True))
        console.print(f"metrics written to {json_out}")


@app.command()
def embed(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    items: list[str] = typer.Argument(..., help="Texts (for text modalities) or file paths."),
    modality: str = typer.Option("text", "--modality", "-m"),
    out: Optional[Path] = typer.Option(None, help="Write an .npy here instead of printing JSON."),
    cache: Optional[Path] = typer.Option(None),
):
    """Embed items into the space; prints one JSON vector per item (unit norm).

    Example:  anybind embed spaces/tux --modality text "a barking dog" "a cat"
    """
    import numpy as np

    from .space import Space

    try:
        X = Space.load(space_dir).embed(modality, items, cache=cache)
    except AnybindError as e:
        _fail(e)
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
    from .encoders.base import _DEFAULTS, registered_prefixes

    console.print("prefixes: " + ", ".join(registered_prefixes()))
    for m, s in _DEFAULTS.items():
        console.print(f"  default for {m}: {s}")


@app.command()
def demo(
    work: Path = typer.Option(Path("demo-out"), help="Where the corpus, space and report go."),
    epochs: int = typer.Option(200),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None),
):
    """The main job: build the Tux Paint corpus, bind image + text + sound, measure beside baselines.

    Example:  anybind demo --work demo-out
    """
    from .demo import run_demo

    try:
        run_demo(work, epochs=epochs, seed=seed, cache=cache, console=console)
    except AnybindError as e:
        _fail(e)


@app.command()
def bench(
    task: list[str] = typer.Option(None, "--task", "-t", help="Task name (repeatable); see --list."),
    all_tasks: bool = typer.Option(False, "--all", help="Run every task."),
    list_tasks: bool = typer.Option(False, "--list", help="List the tasks and exit."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results (a list of task records)."),
    work: Path = typer.Option(Path("runs/bench"), help="Scratch folder for corpora and spaces."),
    cache: Optional[Path] = typer.Option(None),
    seed: int = typer.Option(0),
):
    """Benchmarks: each task prints a table and records metrics beside baselines computed in the same run.

    Example:  anybind bench --task tuxpaint-retrieval --json results.json
    """
    from .bench import TASKS, run_tasks

    if list_tasks:
        for name, t in sorted(TASKS.items()):
            console.print(f"[bold]{name}[/bold]: {t.description}")
        return
    names = sorted(TASKS) if all_tasks else list(task or [])
    if not names:
        raise typer.BadParameter("give --task NAME (see --list) or --all")
    try:
        run_tasks(names, json_out=json_out, work=work, cache=cache, seed=seed, console=console)
    except AnybindError as e:
        _fail(e)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

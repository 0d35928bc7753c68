"""``anybind update / merge``: keep a space alive (continual updates without forgetting, merging spaces)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from ..errors import AnybindError, DataError
from ._common import app, check_out, choice, console, fail, seed_option, wise_option
from ..wording import counted

UpdateMethod = Literal["wise", "modx", "naive"]


@app.command()
def update(
    space_dir: Path = typer.Argument(..., help="Saved space to update (left untouched)."),
    data: list[Path] = typer.Option(..., "--data", help="Manifest of the new pairs (repeatable)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the updated space to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the space already saved at --out."),
    replay: list[Path] = typer.Option(None, "--replay", help="Manifest of old pairs to replay alongside (optional, repeatable)."),
    method: Optional[UpdateMethod] = choice(None, UpdateMethod, help="wise (default): fine-tune, then mix the projectors "
                                                  "back with the old space's (WiSE-FT, --wise); modx: also Mod-X's "
                                                  "off-diagonal distillation against the old space (the default with "
                                                  "--distill or --old-val); naive: plain fine-tuning."),
    distill: Optional[str] = typer.Option(None, help="Weight of the distillation term (modx), or 'auto': chosen on "
                                          "the val pairs of the new data and of the old (--old-val or --replay). "
                                          "Default: auto with --old-val, else 1.0."),
    old_val: list[Path] = typer.Option(None, "--old-val", help="Manifest of held-out old data whose val split judges "
                                       "the weight (--distill auto; only its val records are read; repeatable)."),
    distill_tradeoff: Optional[float] = typer.Option(None, "--distill-tradeoff", help="auto: the weight's score is "
                                                     "(1 - t) x the new data's val score + t x the old data's (1: "
                                                     "keep the old, 0: learn the new; default 0.5)."),
    wise: Optional[str] = typer.Option(None, help="Mixing back with the old space: 'auto' (alpha chosen on the new "
                                       "data's val pairs; the default, but for --method naive), a number in [0, 1] "
                                       "(0: the old space, 1: the fine-tuned one) or 'off'."),
    epochs: int = typer.Option(50, help="Maximum epochs (early stopping on the val pairs; the space as it was competes)."),
    lr: float = typer.Option(1e-4, help="Learning rate."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    strict: bool = typer.Option(False, help="Any bad record is fatal."),
):
    """Continual update: fine-tune the space's projectors on new pairs without forgetting the old ones.

    The new space's lineage records the update (parent identity, data, settings); indexes built with the old
    space then ask to be refreshed (anybind index --refresh INDEX --space NEW).

    Example:  anybind update spaces/tux --data data/emoji/manifest.jsonl --out spaces/tux+emoji
    """
    from ..space import Space

    check_out(out, "space", overwrite)
    try:
        kw = {} if distill is None else {"distill": distill if distill == "auto" else _number(distill, "--distill")}
        if distill_tradeoff is not None:  # given at any value: the library refuses it beside a fixed weight
            kw["distill_tradeoff"] = distill_tradeoff
        if method is not None:
            kw["method"] = method
        if wise is not None:
            kw["wise"] = wise_option(wise)
        space = Space.load(space_dir)
        new = space.update([str(d) for d in data], replay=[str(r) for r in replay or []] or None,
                           old_val=[str(v) for v in old_val or []] or None, epochs=epochs, lr=lr, seed=seed,
                           cache=cache, strict=strict, progress=True, **kw)
        new.save(out, overwrite=overwrite)
    except (AnybindError, ValueError) as e:
        fail(e)
    tr = new.info["lineage"][-1]["training"]
    e = new.info["lineage"][-1]
    mixed = f", mixed back at alpha {e['robust']['wise_alpha']}" if "wise_alpha" in e["robust"] else ""
    console.print(f"saved {new} to [bold]{out}[/bold] ({e['method']}{mixed}: best epoch {tr['best_epoch']} of "
                  f"{tr['epochs_run']}, {tr['seconds']} s)", highlight=False)


def _number(value: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{option} takes a number or 'auto', got {value!r}") from None


def refresh_index_cmd(index_dir: Path, space_dir: Path | None, cache: Path | None, cached_only: bool) -> None:
    """``anybind index --refresh INDEX --space SPACE``: re-embed a stale index with the new space."""
    from ..index import refresh_index
    from ..space import Space

    if space_dir is None:
        raise typer.BadParameter("--refresh INDEX needs the new space: --space SPACE")
    try:
        stats = refresh_index(index_dir, Space.load(space_dir), cache=cache, cached_only=cached_only)
    except AnybindError as e:
        fail(e)
    console.print(f"{index_dir}: {stats.summary()} ({stats.seconds} s)", highlight=False)


@app.command()
def merge(
    space_a: Path = typer.Argument(..., help="Space A (its projectors are kept as they are)."),
    space_b: Path = typer.Argument(..., help="Space B (its other modalities are brought into A's space)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the merged space to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the space already saved at --out."),
    anchor: Optional[str] = typer.Option(None, "--anchor", help="The shared modality to align on (default: the one both bind)."),
    anchor_data: list[Path] = typer.Option(
        None, "--anchor-data", help="Manifest with anchor items (e.g. texts) to align B to A by orthogonal Procrustes; "
        "not needed when both embed the anchor identically (repeatable)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    strict: bool = typer.Option(False, help="Any bad record is fatal."),
):
    """Merge two spaces bound separately that share an anchor modality (say image<->text and speech<->text).

    Modalities never paired (speech and image) then retrieve each other through the anchor.

    Example:  anybind merge spaces/image-text spaces/speech-text --anchor-data data/tux/manifest.jsonl --out spaces/merged
    """
    from ..merge import merge_spaces
    from ..space import Space

    check_out(out, "space", overwrite)
    try:
        merged = merge_spaces(Space.load(space_a), Space.load(space_b), anchor=anchor,
                              anchor_data=[str(d) for d in anchor_data or []] or None, cache=cache, strict=strict,
                              progress=True)
        merged.save(out, overwrite=overwrite)
    except AnybindError as e:
        fail(e)
    e = merged.info["lineage"][-1]
    fit = f", anchor cosine {e['alignment']['cosine_before']} -> {e['alignment']['cosine_after']}" if "alignment" in e else ""
    console.print(f"saved {merged} to [bold]{out}[/bold] ({e['method']} merge on {e['anchor']!r}{fit})", highlight=False)


FedMethod = Literal["creamfl", "fedavg"]


@app.command()
def federate(
    client: list[Path] = typer.Option(None, "--client", help="A client's private manifest (repeatable: one per client)."),
    public: list[Path] = typer.Option(None, "--public", help="The public manifest the server holds (pairs anyone may read)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Simulate: split this corpus into --clients clients and a public set."),
    clients: int = typer.Option(4, "--clients", help="With --data: how many clients."),
    split_by: str = typer.Option("top", "--split-by", help="With --data: the label whose categories go whole to one client "
                                 "(non-IID); 'iid' deals records at random."),
    public_fraction: float = typer.Option(0.15, help="With --data: the fraction of training records made public "
                                          "(0 with --public: the public set is only --public, every training record "
                                          "goes to a client)."),
    holds: Optional[str] = typer.Option(None, "--holds", help="With --data: what each client keeps, in turn, e.g. "
                                        "paired,image,text (one-modality clients train on --label)."),
    label: str = typer.Option("top", "--label", help="The label a client holding one modality trains on."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to save the federated space to (new or empty, see --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the space already saved at --out."),
    encoder: list[str] = typer.Option(None, "--encoder", "-e", help="MODALITY=SPEC, shared by every party (repeatable)."),
    method: FedMethod = choice("creamfl", FedMethod, help="creamfl: clients send embeddings of the public set, the "
                               "server ensembles and distils; fedavg: clients send projector weights, the server averages."),
    server_public: bool = typer.Option(False, "--server-public", help="fedavg: the server also trains the averaged "
                                       "projectors on the public pairs each round (as a creamfl server does)."),
    average: bool = typer.Option(False, "--average/--no-average", help="creamfl with FedAvg's step: the clients also "
                                 "send their projector weights (more bytes up) and the server starts each round's "
                                 "distillation from their average, weighted by training pairs (creamfl only)."),
    rounds: int = typer.Option(20, help="Maximum rounds (the best round on the clients' val pairs is kept)."),
    local_epochs: str = typer.Option("1", "--local-epochs", help="Client epochs per round: a number, several "
                                     "('1,3,5': one federation each, the one scoring highest on the clients' val "
                                     "pairs kept) or 'auto' (1,3,5)."),
    dim: int = typer.Option(256, help="Shared space width."),
    hidden: int = typer.Option(1024, help="Projector hidden width."),
    lr: float = typer.Option(1e-3, help="Learning rate."),
    seed: int = seed_option(),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    strict: bool = typer.Option(False, help="Any bad record is fatal."),
    ray: bool = typer.Option(False, "--ray", help="Every client a Ray actor holding its shard (local Ray, or $RAY_ADDRESS)."),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="Ray cluster for the client actors: its head's HOST:PORT (`ray start --head --port`) "
        "or ray://head:10001 (implies --ray; every node must see the clients' manifests, media and --cache under the "
        "same absolute paths; a token-secured cluster needs RAY_AUTH_MODE=token)."),
):
    """Federated binding: clients bind one space without their pairs leaving them.

    Only projector weights (fedavg) or embeddings of the public set (creamfl), and val scores, cross; the space's
    lineage names the method, rounds and client count, never the clients' data.

    Example:  anybind federate --data data/tux/manifest.jsonl --clients 4 --out spaces/fed

    Clients as Ray actors (a local Ray; --ray-address for a cluster):

      anybind federate --data data/tux/manifest.jsonl --clients 4 --ray --out spaces/fed-ray
    """
    from ..data.manifest import load_manifest
    from ..federated_study import refuse_shared_public, split_clients
    from ..space import Space
    from ._common import parse_encoders, ray_target

    from ..federated_epochs import local_epoch_grid

    encoders = parse_encoders(encoder)
    try:
        grid = local_epoch_grid(local_epochs)  # a bad count is refused before any data is read
    except ValueError as e:
        fail(e)
    target = ray_target(ray, ray_address)
    if isinstance(target, str):  # a wrong or unreachable cluster is refused before any data is read
        from ..scale import ray_address as given_address
        from ..scale.ray_connect import check_ray_address

        try:
            if (addr := given_address(target)) is not None:
                check_ray_address(addr)
        except AnybindError as e:
            fail(e)
    if data is None and not (client and public):
        fail(ValueError("give the clients' and the public manifests (--client ... --public ...) or a corpus to split (--data)"))
    if data is not None and public_fraction == 0 and not public:
        fail(ValueError("--public-fraction 0 leaves no public set: give one or more --public manifests too"))
    if data is not None and (same := [p for p in public or [] if p.resolve() == data.resolve()]):
        fail(DataError(f"{same[0]}: --public is the --data corpus: the clients' records would enter the public set"))
    check_out(out, "space", overwrite)
    try:
        cl: list = [str(c) for c in client or []]
        pub: list = [str(p) for p in public or []]
        if data is not None:
            from ..encoders.kinds import manifest_kinds

            man = load_manifest(data, kinds=manifest_kinds(encoders), progress=False)
            # no record or file of the clients' corpus in the public set, whatever its name
            refuse_shared_public(man, [load_manifest(p, kinds=manifest_kinds(encoders), progress=False)
                                       for p in public or []])
            parts, pub_man = split_clients(man, clients, by=None if split_by == "iid" else split_by,
                                           public_fraction=public_fraction, seed=seed,
                                           holds=[h.strip() for h in (holds or "").split(",") if h.strip()])
            cl, pub = cl + parts, pub + ([pub_man] if pub_man.records else [])
        runner = None
        if target:
            import functools

            from ..scale.federated_ray import ray_clients

            runner = functools.partial(ray_clients, address=target if isinstance(target, str) else None)
        space = Space.federate(cl, pub, encoders=encoders or None, cache=cache, strict=strict, progress=True, method=method,
                    rounds=rounds, local_epochs=list(grid) if len(grid) > 1 else grid[0], dim=dim, hidden=hidden, lr=lr, seed=seed, runner=runner,
                    label=label, server_public=server_public, average=average)
        space.save(out, overwrite=overwrite)
    except (AnybindError, ValueError) as e:
        fail(e)
    e = space.info["lineage"][-1]
    search = e.get("local_epochs_search")
    chose = (f"; {counted(search['chosen'], 'local epoch')} chosen on the clients' val pairs (of {','.join(map(str, grid))}: "
             f"{', '.join(f'{v:.3f}' if v is not None else '-' for v in search['val'])})" if search else "")
    console.print(f"saved {space} to [bold]{out}[/bold] ({method}{' + FedAvg step' if average else ''}, {e['clients']} clients{' on Ray' if target else ''}: best round {e['best_round']} "
                  f"of {e['rounds_run']}, {e['bytes']['per_round']:,} bytes a round{chose})", highlight=False)

"""``anybind encode / index / search``: cache features, index, search (``serve`` is in cli/serve, ``report`` in cli/report)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape

from ..errors import AnybindError
from ._common import (
    Rerank,
    Split,
    app,
    check_out,
    choice,
    console,
    device_option,
    err,
    fail,
    load_vector,
    precision_option,
    query_items,
    query_pairs,
    ray_target,
    split_csv,
    use_device,
)

AnnType = Literal["ivf_hnsw_sq", "ivf_pq"]


@app.command()
def encode(
    ctx: typer.Context,
    manifest: Path = typer.Argument(..., help="JSONL manifest whose items to encode."),
    encoder: str = typer.Option(..., "--encoder", "-e", help="Encoder spec, e.g. image:efficientnet-lite0 (or FIELD=SPEC)."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Manifest field to encode (default: the spec's prefix, e.g. image)."),
    ray: bool = typer.Option(False, "--ray", help="Encode on Ray: decode in map tasks, encode in an actor pool (local Ray, or $RAY_ADDRESS)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: its head's HOST:PORT or auto (implies --ray; not ray://: Ray Data needs a real driver)."),
    batch_size: Optional[int] = typer.Option(None, help="Ray: items per forward pass (default, and in one process: the encoder's)."),
    concurrency: int = typer.Option(2, help="Ray: encoder actors."),
    num_gpus: float = typer.Option(
        0.0, help="Ray: GPUs per encoder actor (reserved, CUDA_VISIBLE_DEVICES set; default 1 when --device is CUDA)."
    ),
    shard_size: int = typer.Option(256, help="Ray: rows per committed cache shard."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder (default $ANYBIND_CACHE or ~/.cache/anybind/features)."),
    strict: bool = typer.Option(False, help="Any bad record or undecodable item is fatal (exit code 1)."),
    device: str = device_option(),
    precision: str = precision_option(),
):
    """Encode one field of a manifest into the feature cache (what fit, eval and index then read).

    Resumable: items already cached are skipped, so a rerun after a crash encodes only the rest.

    Example:  anybind encode data/tux/manifest.jsonl --encoder image:efficientnet-lite0

    On Ray, 4 actors with a GPU each:  anybind encode data/tux/manifest.jsonl -e image:efficientnet-lite0 --ray --concurrency 4 --num-gpus 1
    """
    from ..encoders.registry import spec_problem
    from ..scale.encode import encode_manifest

    if "=" in encoder:
        field, encoder = (x.strip() for x in encoder.split("=", 1))
        modality = modality or field
    problem = spec_problem(encoder)
    if problem:
        fail(AnybindError(f"--encoder {encoder}: {problem}"))
    target = ray_target(ray, ray_address)
    use_device(ctx, device, precision)
    try:
        rep, man, owners = encode_manifest(
            manifest, encoder, modality, cache, ray=target, strict=strict, progress=True, batch_size=batch_size,
            concurrency=concurrency, num_gpus=num_gpus, shard_size=shard_size,
        )
    except AnybindError as e:
        fail(e)
    if man.bad:
        err.print(f"[yellow]{escape(man.report())}[/yellow]")
    for item, why in rep.failed[:20]:
        ids = ", ".join(owners.get(item, [])[:3]) or "-"
        err.print(f"[yellow]not encoded:[/yellow] record {escape(str(ids))}: {escape(str(why))}")
    if len(rep.failed) > 20:
        err.print(f"  ... and {len(rep.failed) - 20} more", highlight=False)
    console.print(rep.summary() + (f" into {rep.shards} shards" if rep.mode == "ray" and rep.shards else ""), highlight=False)
    if strict and rep.failed:
        raise typer.Exit(1)


@app.command("index")
def index_cmd(
    ctx: typer.Context,
    space_dir: Optional[Path] = typer.Argument(None, help="Saved space folder (with --refresh: the new space, or --space)."),
    manifest: Optional[Path] = typer.Argument(None, help="JSONL manifest of the corpus to index (optional with --repair)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Index folder (created, or updated incrementally if it exists)."),
    refresh: Optional[Path] = typer.Option(None, "--refresh", help="Re-embed this index with the space given (--space: e.g. one `anybind update` made) from the feature cache, keeping ids and labels; no manifest, no re-encoding."),
    space_opt: Optional[Path] = typer.Option(None, "--space", help="With --refresh: the new space."),
    cached_only: bool = typer.Option(False, "--cached-only", help="With --refresh: fail rather than encode a row whose features are not cached."),
    modalities: Optional[str] = typer.Option(None, help="Fields to index, comma-separated (default: every bound field)."),
    split: Optional[Split] = choice(None, Split, help="Only this split (default: all records)."),
    ann: Literal["auto", "always", "never"] = choice(
        "auto", Literal["auto", "always", "never"], help="auto: build an ANN index from --ann-threshold rows."
    ),
    ann_type: AnnType = choice("ivf_hnsw_sq", AnnType, help="ANN index type."),
    ann_threshold: int = typer.Option(100_000, help="Row count from which searches use the ANN index."),
    ann_recall: Optional[float] = typer.Option(
        None, "--ann-recall", min=0.01, max=1.0, help="Tune the ANN index's search settings: the cheapest "
        "nprobes / ef reaching this recall@10 against exact search (on perturbed stored vectors; the mean less "
        "2 standard errors), saved with it."
    ),
    memory_ann: bool = typer.Option(
        False, "--memory-ann", help="Also keep an in-memory HNSW graph (hnswlib) beside the table, saved in the "
        "index and kept in step with it; searches from --ann-threshold rows use it (fast serving)."
    ),
    memory_ann_threads: Optional[int] = typer.Option(
        None, "--memory-ann-threads", help="With --memory-ann: threads inserting into the graph (default 1: the same "
        "graph every run; -1: all cores, faster on an idle many-core machine but not reproducible); saved with it, "
        "later syncs insert the same way; a graph built on another count is rebuilt."
    ),
    memory_ann_recall: Optional[float] = typer.Option(
        None, "--memory-ann-recall", help="Tune the in-memory graph's search breadth (ef): the smallest reaching this "
        "recall@10 against exact search (on the index's own rows, perturbed, drawn by a seed; the mean less 2 "
        "standard errors), saved with the index; a value in (0, 1]."
    ),
    quantize: Optional[Literal["int8", "binary", "none"]] = choice(
        None, Literal["int8", "binary", "none"], "--quantize",
        help="Search int8 or binary codes in memory, rescoring the top candidates with the float vectors "
        "(none: stop)."
    ),
    rescore: Optional[int] = typer.Option(
        None, "--rescore", min=1, help="With --quantize: candidates rescored per hit (default 4 for int8, 50 for binary)."
    ),
    overwrite: bool = typer.Option(
        False, help="Start over instead of updating an existing index (only an index is ever replaced)."
    ),
    repair: bool = typer.Option(False, "--repair", help="First remove duplicate rows of the index at --out (concurrent runs before the writer lock could leave some), keeping the newest of each; without MANIFEST, only that."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
    ray: bool = typer.Option(False, "--ray", help="Embed on Ray (actors; the driver writes the table chunk by chunk)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: its head's HOST:PORT or auto (not ray://: Ray Data needs a real driver; default $RAY_ADDRESS, else local)."),
    concurrency: int = typer.Option(2, help="Ray: embedding actors."),
    batch_size: int = typer.Option(256, help="Ray: items per actor call."),
    num_gpus: float = typer.Option(0.0, help="Ray: GPUs per actor (default 1 when --device is CUDA)."),
    chunk_rows: bool = typer.Option(
        False, "--chunk-rows", help="A text longer than its encoder's limit: one row per chunk (ID#0, ID#1 ...), "
        "for passage-level search."
    ),
    device: str = device_option(),
    precision: str = precision_option(),
):
    """Embed a corpus (any modalities) into a persistent LanceDB index tied to the space.

    Rerunning it on a grown or edited manifest embeds only new or changed items.

    Example:  anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux

    Concurrent runs on one index are safe: their writes take turns (a writer lock in the index folder).

    On Ray (a local one, or --ray-address head:6379):  anybind index spaces/tux data/tux/manifest.jsonl --out indexes/tux --ray

    After `anybind update` (the index is then stale):  anybind index --refresh indexes/tux --space spaces/tux2
    """
    from ..index import Index
    from ..space import Space

    if memory_ann_threads is not None and not memory_ann:
        fail(ValueError("--memory-ann-threads needs --memory-ann"))
    if memory_ann_recall is not None:  # before anything is embedded
        from ..index.tuning import check_target

        try:
            check_target(memory_ann_recall)
        except AnybindError as e:
            fail(e)
    if refresh is not None:
        from .keep import refresh_index_cmd

        building = [flag for flag, given in (("--ann-recall", ann_recall is not None), ("--memory-ann", memory_ann),
                                             ("--memory-ann-recall", memory_ann_recall is not None),
                                             ("--quantize", quantize is not None), ("--rescore", rescore is not None),
                                             ("--repair", repair), ("--overwrite", overwrite)) if given]
        if building:  # each would be dropped without a word: --refresh only re-embeds the rows
            raise typer.BadParameter(f"--refresh re-embeds an index's rows; {', '.join(building)} "
                                     "apply to `anybind index SPACE MANIFEST --out IX`: run that after the refresh")

        return refresh_index_cmd(refresh, space_opt or space_dir, cache, cached_only)
    if space_dir is None or out is None:
        raise typer.BadParameter("give SPACE_DIR and --out (or --refresh INDEX --space SPACE)")
    if manifest is None and not repair:
        raise typer.BadParameter("MANIFEST is missing (only --repair runs without one)")
    if repair and overwrite:
        raise typer.BadParameter("--repair repairs the index at --out, --overwrite replaces it: give one of them")
    check_out(out, "index", overwrite, update=True)
    use_device(ctx, device, precision)
    try:
        space = Space.load(space_dir)
        if repair:
            fixed = Index.open(out, space)
            removed = fixed.repair()
            console.print(f"{out}: removed {removed} duplicate rows ({len(fixed)} rows left)", highlight=False)
            if manifest is None:
                return
        target = ray_target(ray, ray_address)
        build = dict(cache=cache, split=split, ann={"auto": "auto", "always": True, "never": False}[ann],
                     ann_type=ann_type, ann_threshold=ann_threshold, overwrite=overwrite, progress=True,
                     chunk_rows=chunk_rows)
        if target is False:
            index = Index.build(space, manifest, out, split_csv(modalities), **build)
        else:
            from ..scale import ray_session
            from ..scale.encode_ray import ray_index_embedder

            embedder = ray_index_embedder(space_dir, space.identity(), cache, batch_size=batch_size,
                                          concurrency=concurrency, num_gpus=num_gpus)
            with ray_session(None if target is True else target):
                index = Index.build(space, manifest, out, split_csv(modalities), embedder=embedder, **build)
    except AnybindError as e:
        fail(e)
    try:
        graph = index.meta.get("memory_ann") or {}
        if memory_ann and (not graph or memory_ann_threads not in (None, graph.get("threads", 1))):
            index.create_memory_ann(threads=1 if memory_ann_threads is None else memory_ann_threads,
                                    ef=int(graph.get("ef", 64)))  # a rebuild keeps the ef set or tuned
        # once there, each build keeps it up to date
        if quantize:
            index.quantize(None if quantize == "none" else quantize, rescore=rescore)
        tuned = index.tune_ann(ann_recall) if ann_recall is not None and index.meta.get("ann") else None
        mem_tuned = index.tune_memory_ann(memory_ann_recall) if memory_ann_recall is not None else None
    except AnybindError as e:
        fail(e)
    if ann_recall is not None and tuned is None:
        err.print(f"[yellow]warning:[/yellow] {escape(str(out))}: no ANN index to tune (--ann-recall): one is built "
                  "from --ann-threshold rows, or with --ann always")
    added = index.last_add.added if index.last_add else 0  # by this run (another may add at the same time)
    console.print(f"{index}: {index.counts()} (+{added} rows)", highlight=False)
    if index.meta.get("ann"):
        a = index.meta["ann"]
        console.print(f"ANN index {a['type']} over {a['rows']} rows ({a['build_seconds']} s)")
        if tuned is not None:
            console.print(f"ANN search settings: nprobes {tuned['nprobes']}, ef {tuned.get('ef') or '-'} "
                          f"(recall@10 {tuned['recall@10']:.3f}, less 2 standard errors {tuned['recall@10_low']:.3f}"
                          f"{'' if tuned['reached'] else ': target not reached'})")
    if index.meta.get("memory_ann"):
        a = index.meta["memory_ann"]
        t = a.get("threads", 1)  # a graph saved before the parameter syncs on one thread
        console.print(f"in-memory ANN (hnswlib, M={a['M']}) over {a['rows']} rows at table version {a['version']}, "
                      f"inserting on {'all cores' if t == -1 else f'{t} thread' + ('s' if t != 1 else '')}")
    if mem_tuned is not None:
        console.print(f"in-memory ANN search breadth: ef {mem_tuned.ef} (recall@10 {mem_tuned.recall:.3f}, less 2 "
                      f"standard errors {mem_tuned.recall_low:.3f}{'' if mem_tuned.reached else ': target not reached'})",
                      highlight=False)
    if (index.meta.get("quantize") or {}).get("kind"):
        console.print(f"searches use {index.meta['quantize']['kind']} codes with exact rescoring")


@app.command()
def search(
    index_dir: Path = typer.Argument(..., help="Index folder (from `anybind index`)."),
    text: list[str] = typer.Option(None, "--text", "-t", help="Text query (repeatable; several inputs are fused)."),
    image: list[Path] = typer.Option(None, "--image", help="Image file query (repeatable)."),
    audio: list[Path] = typer.Option(None, "--audio", help="Audio file query (repeatable)."),
    vector: Optional[Path] = typer.Option(
        None, "--vector", help="Query vector: a .npy file of one float vector of the index's width "
        "(e.g. from `anybind embed SPACE ITEM --out q.npy`)."
    ),
    queries: list[str] = typer.Option(
        None, "--query",
        help="MODALITY=VALUE: a query in any bound modality, e.g. speech=clip.wav, text_fr=\"un chien\", "
        "timeseries=walk.npy, sensor=features.npy (repeatable; a file path, for text fields the text itself, for "
        "a vectors: modality a key or a .npy of its features)."),
    weight: list[float] = typer.Option(
        None, "--weight", help="Fusion weight per input, in order: vector, texts, images, audios, --query inputs."
    ),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Only return items of this modality (comma-separated for several)."),
    k: int = typer.Option(10, "-k", "--k", help="Number of results."),
    label: list[str] = typer.Option(None, "--label", "-l", help="KEY=VALUE filter on the items' labels (repeatable; all must match)."),
    rerank: Optional[Rerank] = choice(None, Rerank, "--rerank", help="Hubness correction."),
    exact: Optional[bool] = typer.Option(None, "--exact/--ann", help="Force exact or ANN search (default: by index size)."),
    rank_by: Literal["score", "probability"] = choice(
        "score", Literal["score", "probability"], "--rank-by",
        help="probability: rank every modality's hits by calibrated P(match) (a calibrated space)."),
    json_out: bool = typer.Option(False, "--json", help="Print the hits as JSON (with each hit's calibrated "
                                  "probability when the space is calibrated)."),
    space_dir: Optional[Path] = typer.Option(None, "--space", help="Space to embed the query with (default: the copy inside the index)."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache folder."),
):
    """Search an index with text, an image, a sound, any bound modality (--query), or several fused into one query.

    Example:  anybind search indexes/tux --text "a barking dog" --modality image -k 10

    With a vector (from a file):

      anybind embed spaces/tux "a barking dog" --out q.npy && anybind search indexes/tux --vector q.npy

    Any modality:  anybind search indexes/tux --query speech=clip.wav --query text="at night" -m image
    """
    from rich.table import Table

    from ..index import Index
    from ..space import Space

    pairs = query_pairs(queries)
    try:
        space = Space.load(space_dir) if space_dir else None
        index = Index.open(index_dir, space)
        inputs = [(m, item) for m, item, _ in query_items(index.space, pairs)]
        query = load_vector(vector, index.dim) if vector else None
        hits = index.search(query, text=list(text) if text else None,
                            image=[str(p) for p in image] if image else None,
                            audio=[str(p) for p in audio] if audio else None, inputs=inputs or None,
                            weights=list(weight) if weight else None,
                            modality=split_csv(modality), k=k, labels=list(label or []), rerank=rerank,
                            exact=exact, cache=cache, rank_by=rank_by)
    except AnybindError as e:
        fail(e)
    if json_out:
        sys.stdout.write(json.dumps([h.to_dict() for h in hits], indent=2, ensure_ascii=False) + "\n")
        return
    from rich.cells import cell_len

    t = Table(title=f"{len(hits)} hits in {index_dir} (labels and full paths: --json)")
    heads = ("rank", "score", "modality", "id", "source")
    rows = []
    for h in hits:
        src = Path(h.source).name if Path(h.source).is_absolute() else h.source
        rows.append((str(h.rank), f"{h.score:.4f}", h.modality, h.id, src if len(src) <= 60 else src[:57] + "..."))
    # ids (a user copies them) and scores whole where they fit beside an 8-column source (which folds first); else
    # every column folds (no_wrap would crop them): 2 padding per column and 6 rules
    whole = sum(max(cell_len(r[i]) for r in [heads, *rows]) for i in range(4)) + 8 + 16 <= console.width
    for c in heads:
        t.add_column(c, justify="right" if c in ("rank", "score") else "left", overflow="fold",
                     no_wrap=whole and c != "source", min_width=8 if whole and c == "source" else None)
    for r in rows:
        t.add_row(*r)
    console.print(t)

"""``anybind serve``: the search service (web page, JSON API) over a saved space and its index."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from ..errors import AnybindError
from ._common import app, choice, console, device_option, err, fail, precision_option, use_device

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


@app.command()
def serve(
    ctx: typer.Context,
    space_dir: Path = typer.Argument(..., help="Saved space folder (the index must have been built with it)."),
    index_dir: Path = typer.Option(..., "--index", "-i", help="Index folder (from `anybind index`)."),
    host: str = typer.Option(
        "127.0.0.1", help="Interface to bind. Any other than loopback needs --api-keys (or --insecure)."
    ),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(10.0, help="Cap on a request body in MiB (uploads over it get 413)."),
    max_json_bytes: int = typer.Option(
        2 * 1024 * 1024, "--max-json-bytes", help="Cap on a JSON request body in bytes (over it: 413 before it is "
        "parsed; never more than the upload cap). The largest request the schemas allow is about 1.5 MB."
    ),
    concurrency: int = typer.Option(
        128, help="Requests answered at once (worker threads); those needing the same encoder "
        "share its calls (see --max-batch)."
    ),
    max_queue: int = typer.Option(256, help="Requests that may wait for a free slot; beyond that, 503 + Retry-After."),
    queue_timeout: float = typer.Option(60.0, help="Seconds a request may wait for a slot before it gets 503."),
    cache: Optional[Path] = typer.Option(None, help="Feature cache to read from (queries are cached in memory only)."),
    refresh_seconds: float = typer.Option(
        2.0, help="How often (at most) requests look for items written to the index meanwhile (`anybind index ... --out` on it)."
    ),
    batch_wait_ms: float = typer.Option(
        0.0, min=0.0, help="Dynamic batching: requests arriving while an encoder is busy are "
        "encoded together in its next call; a request at an idle encoder waits up to this long for company (0: none)."
    ),
    max_batch: int = typer.Option(8, min=1, help="Items in one batched encoder call at most "
                                  "(1: batching off)."),
    max_batch_for: list[str] = typer.Option(
        None, "--max-batch-for", help="MODALITY=N: --max-batch for that modality's encoder instead (repeatable; "
        "e.g. image=4 text=32: an image encoder may cost more per image in larger passes, a text encoder less)."
    ),
    torch_threads: Optional[int] = typer.Option(
        None, "--torch-threads", min=1, help="torch's threads in each encoder call (default: torch's own, one per "
        "core, or OMP_NUM_THREADS). 1 lets the image and the text encoder's batches each run on a core of its own."
    ),
    max_pixels: int = typer.Option(
        40_000_000, "--max-pixels", min=1, help="Largest uploaded image (width x height, read from its header; "
        "larger: 400 before it is decoded); also bounds an SVG's rendering and a video's frames."
    ),
    max_inflight_pixels: int = typer.Option(
        160_000_000, min=1, help="Pixels (3 bytes each) the uploads being decoded may hold together, whatever "
        "--concurrency is: an upload reserves what its files' headers declare and waits (up to --queue-timeout, "
        "then 503) for room; one larger than all of it is served alone."
    ),
    log_level: LogLevel = choice("info", LogLevel, help="uvicorn log level."),
    device: str = device_option(),
    precision: str = precision_option(),
    api_keys: Optional[Path] = typer.Option(
        None, "--api-keys", help="Key file (`anybind keys add FILE NAME`): every route but /health and the page's "
        "static files then needs 'Authorization: Bearer KEY'. Re-read when it changes (revocation is live)."
    ),
    cors_origin: list[str] = typer.Option(
        None, "--cors-origin", help="An origin allowed to call the API from a browser (repeatable; default none)."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Allow a non-loopback --host without --api-keys (e.g. behind an authenticating proxy)."
    ),
    captioner: Optional[Path] = typer.Option(
        None, "--captioner", help="A captioner of this space (`anybind caption-fit`): adds POST /caption and "
        "/caption/upload, and a caption action to the web page."
    ),
    classifier: list[str] = typer.Option(
        None, "--classifier", help="NAME=DIR: a balanced zero-shot classifier of this space (`anybind balance`) that "
        "/classify requests may name (repeatable); one fitted on another space is refused."
    ),
):
    """Search service: a web page at /, a JSON API (POST /search, /classify, /embed ...), OpenAPI docs at /docs.

    The space, the index and the encoders are loaded once, before the first request; items added to
    the index while it serves become searchable within --refresh-seconds.

    Example:  anybind serve spaces/tux --index indexes/tux --port 8000   (then open http://127.0.0.1:8000/)
    """
    try:
        import uvicorn

        from ..serve import ServeConfig, Service, create_app
    except ImportError as e:
        fail(AnybindError(f"the service needs the 'serve' extra ({e.name} is missing): pip install 'anybind[serve]'"))
    use_device(ctx, device, precision)
    per: dict[str, int] = {}
    for spec in max_batch_for or ():
        name, eq, n = spec.partition("=")
        if not eq or not name or not n.strip().isdecimal() or int(n) < 1:
            fail(AnybindError(f"--max-batch-for {spec!r}: give MODALITY=N (N a whole number >= 1: items in one "
                              "batched call of that modality's encoder)"))
        if name in per:
            fail(AnybindError(f"--max-batch-for {name!r} given twice: one limit per modality"))
        per[name] = int(n)
    try:  # a limit that cannot be one (--max-upload-mb 0): refused before anything is loaded
        cfg = ServeConfig(
            max_upload_bytes=int(max_upload_mb * 2**20), max_json_bytes=max_json_bytes, concurrency=concurrency,
            max_queue=max_queue, queue_timeout=queue_timeout, refresh_seconds=refresh_seconds, batch_wait_ms=batch_wait_ms,
            max_batch=max_batch, max_pixels=max_pixels, max_inflight_pixels=max_inflight_pixels, max_batch_for=per,
            torch_threads=torch_threads,
        )
    except AnybindError as e:
        fail(e)
    classifiers: dict[str, Path] = {}
    for spec in classifier or ():
        name, eq, folder = spec.partition("=")
        if not eq or not name or not folder:
            fail(AnybindError(f"--classifier {spec!r}: give NAME=DIR (a name for requests, a folder from "
                              "`anybind balance`)"))
        if name in classifiers:
            fail(AnybindError(f"--classifier {name!r} given twice: one folder per name"))
        classifiers[name] = Path(folder)
    try:
        from ..serve.auth import KeyStore, check_bind, check_keys_file, is_local

        check_bind(host, api_keys, insecure)  # before anything is loaded
        if api_keys is not None:
            check_keys_file(api_keys)
        with console.status("loading the space, the index and the encoders..."):
            svc = Service.load(space_dir, index_dir, cache=cache, config=cfg)
        if captioner is not None:
            from ..caption import Captioner

            with console.status("loading the captioner and its language model..."):
                captioner = Captioner.load(captioner, svc.space)  # refused unless trained for this space
        if classifiers:
            from ..serve.classify_routes import load_classifiers

            with console.status("loading the classifiers..."):  # refused now, one line, unless of this space
                classifiers = load_classifiers(classifiers, svc)
    except AnybindError as e:
        fail(e)
    if not is_local(host) and api_keys is None:
        err.print(f"[yellow]warning:[/yellow] binding {host} without --api-keys (--insecure): anyone who can reach "
                  "it can search and upload files")
    shown = f"[{host}]" if ":" in host else host
    items = ", ".join(f"{n} {m}" for m, n in sorted(svc.counts.items()))
    console.print(f"serving {index_dir} ({items}) on [bold]http://{shown}:{port}/[/bold] (API docs: /docs)",
                  highlight=False)
    try:
        app_ = create_app(service=svc, api_keys=KeyStore(api_keys) if api_keys else None,
                          cors_origins=tuple(cors_origin or ()), captioner=captioner, classifiers=classifiers)
        uvicorn.run(app_, host=host, port=port, log_level=log_level)
    finally:
        svc.close()

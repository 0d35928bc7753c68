"""The Tux Paint comparison shared by ``anybind demo`` and the ``tuxpaint-*`` bench tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from ..data.manifest import Manifest, load_manifest
from ..evaluate import embed_records, retrieval_from_embeddings
from ..metrics import chance_metrics  # noqa: F401  (re-exported for the bench tasks)

DEFAULT_MODALITIES = ("image", "text", "audio")

#: The fixed recipe of the bench tasks that compare against it (the issue-16 start, kept fixed so that their numbers
#: stay comparable across sessions; ``Space.fit``'s defaults, :mod:`anybind.recipe`, have since added the start
#: guard, the kernel start and the standard-error rule on a small val; ``anybind demo`` binds with those defaults):
#: images carry their label bridge, the text encoder's own space is the shared space (locked), every other projector
#: starts at a ridge regression onto it (a bridged image projector shrunk towards its label bridge) and is fine-tuned
#: gently with InfoNCE, mixed back with its start (WiSE-FT, alpha on val; early stopping keeps the start when
#: fine-tuning does not help).
RECIPE: dict[str, Any] = {
    "encoders": {"image": "image:efficientnet-lite0+bridge", "text": "text:minilm", "audio": "audio:aisfx"},
    "lock": "text",
    "init": "ridge",
    "ridge_prior": "bridge",
    "wise": "auto",
    "lr": 1e-4,
}
PLAIN_ENCODERS = {"image": "image:efficientnet-lite0", "text": "text:minilm", "audio": "audio:aisfx"}


def fixed_recipe(modalities) -> dict[str, Any]:
    """``Space.fit`` keywords that bind ``modalities`` with :data:`RECIPE` (``recipe="plain"`` plus its fixed
    choices): what a bench task passes to :func:`compare_on_tuxpaint` to keep its numbers comparable across sessions."""
    kw = {k: v for k, v in RECIPE.items() if k != "encoders"}
    return {"encoders": {m: RECIPE["encoders"][m] for m in modalities}, "recipe": "plain", **kw}


def plain_unless_free(kw: dict[str, Any]) -> dict[str, Any]:
    """``Space.fit`` keywords for a bench row's fit ``kw``: a training-free ``method`` as given (it takes no
    recipe), a trained row with ``recipe="plain"`` added (its own levers, not the automatic recipe).  A new dict:
    ``kw`` itself, written to the JSON config, stays as the row gives it."""
    return dict(kw) if "method" in kw else {**kw, "recipe": "plain"}


def prepare_tuxpaint(work: Path, console: Console | None = None) -> Path:
    """Build the Tux Paint corpus under ``work/tuxpaint`` unless an up-to-date build is there (see
    :func:`up_to_date`); return its manifest path."""
    from ..corpora.debian import ensure_debian_package
    from ..corpora.tuxpaint import build_tuxpaint as builder

    out = Path(work) / "tuxpaint"
    manifest = out / "manifest.jsonl"
    if not up_to_date(out, builder):
        ensure_debian_package("tuxpaint-stamps-default", "/usr/share/tuxpaint/stamps")
        summary = builder(out, progress=True)
        if console:
            console.print(summary)
    return manifest


def load_tux(work: Path, modalities=DEFAULT_MODALITIES, console: Console | None = None) -> Manifest:
    return load_manifest(prepare_tuxpaint(work, console), modalities=list(modalities), progress=True)


def score(space, man: Manifest, modalities, split: str = "test", cache=None) -> dict[str, float]:
    mods = [m for m in modalities if m in space.modalities]
    return retrieval_from_embeddings(embed_records(space, man.split(split), mods, cache=cache))


def compare_on_tuxpaint(
    work: Path,
    *,
    modalities=DEFAULT_MODALITIES,
    cache=None,
    seed: int = 0,
    console: Console | None = None,
    split: str = "test",
    **train_kw: Any,
):
    """Bind with ``Space.fit``'s defaults (recipe ``auto``: what a user who names only the modalities gets, what
    ``anybind demo`` shows; ``train_kw`` goes to ``Space.fit``: :func:`fixed_recipe` for the bench tasks that compare
    against :data:`RECIPE`); fit the Procrustes baseline on train; evaluate both on ``split``.

    Returns ``(space, procrustes_space, manifest, results)``; ``results`` maps
    system name -> flat metrics, all computed in this run.
    """
    from ..space import Space

    man = load_tux(work, modalities, console)
    mods = list(modalities)
    space = Space.fit(man, modalities=mods, cache=cache, seed=seed, **train_kw)
    proc = Space.fit(man, modalities=mods, encoders={m: PLAIN_ENCODERS[m] for m in mods}, cache=cache, method="procrustes")
    res_space = score(space, man, mods, split, cache)
    results = {
        "anybind": res_space,
        "procrustes": score(proc, man, mods, split, cache),
        "chance": chance_metrics(res_space),
    }
    return space, proc, man, results


def build_once(work: Path, name: str, builder, **options: Any) -> Path:
    """``work/name/manifest.jsonl``, built by ``builder(out, progress=False, **options)`` unless an up-to-date
    build is there already (see :func:`up_to_date`: a build of an older builder version, or with other recorded
    options such as ``limit``, is rebuilt, with one warning line).  ``builder``: a ``build_*`` function of
    :mod:`anybind.corpora` itself (its module's ``BUILDER_VERSION`` is the current version), not a wrapper."""
    out = Path(work) / name
    if not up_to_date(out, builder, **options):
        builder(out, progress=False, **options)
    return out / "manifest.jsonl"


def builder_version(builder) -> tuple[str, str]:
    """``(module, BUILDER_VERSION)`` of a ``build_*`` function of :mod:`anybind.corpora`: what its ``corpus.json``
    records under ``builder`` (each builder module writes its own ``__name__`` and ``BUILDER_VERSION``)."""
    import importlib

    from ..errors import AnybindError

    module = getattr(builder, "__module__", None) or ""
    version = getattr(importlib.import_module(module), "BUILDER_VERSION", None) if module else None
    if version is None:
        raise AnybindError(f"build_once: {builder!r} is not a corpus builder (its module {module!r} has no "
                           "BUILDER_VERSION): pass the build_* function of anybind.corpora itself")
    return module, str(version)


def up_to_date(out: Path, builder, **options: Any) -> bool:
    """True when ``out`` holds a manifest built by ``builder``'s current module and version with the options
    ``builder(out, **options)`` would use now (each option its ``corpus.json`` records under ``builder`` that is
    a keyword of ``builder``: ``limit``, ``size``...); only ``corpus.json`` is read.  False when there is no
    manifest, or (after one warning line naming the folder, the old and the new version) when the build is out of
    date or its ``corpus.json`` is missing, unreadable, records no builder or not an option given (then what the
    build used for it is unknown).  An option that is not a keyword of ``builder`` is refused in one line.  A
    symbolic link to an out-of-date build is refused in one line (rebuilding would write where the link points)."""
    import inspect
    import json
    import logging

    from ..corpora import read_corpus_meta
    from ..errors import AnybindError, DataError

    module, version = builder_version(builder)  # a wrapper is refused even before a first build
    params = inspect.signature(builder).parameters
    unknown = sorted(k for k in options if k not in params or k in ("out_dir", "progress"))
    if unknown:
        raise AnybindError(f"build_once: {', '.join(map(repr, unknown))} is not an option of "
                           f"{module}.{builder.__name__}")
    if not (out / "manifest.jsonl").exists():
        return False
    rec = (read_corpus_meta(out) or {}).get("builder")
    if not isinstance(rec, dict) or "version" not in rec:
        why = "its corpus.json is missing, unreadable or records no builder version"
    elif unrecorded := sorted(k for k in options if k not in rec):  # what the build used for it is not known
        why = f"its corpus.json records no {', '.join(unrecorded)}"
    else:
        now = {k: options.get(k, params[k].default) for k in rec if k not in ("module", "version") and k in params}
        differ = {k: v for k, v in now.items() if json.loads(json.dumps(v, default=str)) != rec[k]}
        if rec.get("module") == module and str(rec["version"]) == version and not differ:
            return True
        old = ", ".join(f"{k}={rec[k]!r}" for k in differ)
        new = ", ".join(f"{k}={v!r}" for k, v in differ.items())
        why = f"it was built by {rec.get('module')} version {rec['version']}" + (f" with {old}" if old else "")
        version += f" with {new}" if new else ""
    why += f", this anybind builds {module} version {version}"
    if out.is_symlink():
        raise DataError(f"{out} (a link to {out.resolve()}) is out of date: {why}; rebuild it there or remove the link")
    logging.getLogger(__name__).warning("%s: rebuilding the corpus: %s", out, why)
    return False


def image_encoders(task: str, image: str) -> list[str]:
    """The image encoders of a bench task's ``--opt image=SPEC[,SPEC...]`` (``""``: none given, the task's own),
    each checked before any work: an image encoder anybind can build, given once; refused in one line."""
    return bench_encoders(task, "image", image)


def bench_encoders(task: str, modality: str, value: str) -> list[str]:
    """The ``modality`` encoders of a bench task's ``--opt <modality>=SPEC[,SPEC...]`` (``""``: none given), each
    checked before any work: an encoder of that modality anybind can build, given once; refused in one line."""
    from ..encoders.concat import split_specs
    from ..encoders.registry import get_encoder
    from ..errors import AnybindError

    specs = split_specs(value)  # commas inside concat(...) or between a spec's @k=v options do not split
    built = []  # each encoder's own spec: a bare modality is its default encoder's
    for s in specs:
        try:
            enc = get_encoder(s)
        except AnybindError as e:
            raise AnybindError(f"{task}: {modality}={s!r}: {e}") from None
        if enc.modality != modality:
            from ..encoders.registry import default_spec

            example = ("image=image:efficientnet-lite0+bridge,image:efficientnet-lite1+bridge" if modality == "image"
                       else f"{modality}={default_spec(modality)}")
            article = "an" if enc.modality[:1] in "aeiou" else "a"
            raise AnybindError(f"{task}: {modality}={s!r} is {article} {enc.modality} encoder; give {modality} encoders, e.g. "
                               + example)
        built.append(enc.spec)
    if len(set(built)) < len(built):
        raise AnybindError(f"{task}: {modality}={value!r} names an encoder twice")
    return specs


def short_spec(spec: str) -> str:
    """``image:efficientnet-lite1+bridge`` -> ``efficientnet-lite1+bridge`` (for row names)."""
    return spec.split(":", 1)[1] if ":" in spec else spec

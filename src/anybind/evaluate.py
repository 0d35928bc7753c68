"""Honest measurement of a space: retrieval in every direction, zero-shot classification.

Results are flat dicts (``{"text->image/R@1": 0.41, ...}``) so that bench
files, JSON outputs and tables all share one shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .data.fields import require_classes, require_label, unlabelled_modalities
from .data.manifest import Manifest, Record, load_manifest
from .data.strings import is_blank
from .data.templates import descriptions_for, fill_template, templates_for
from .errors import DataError
from .metrics import (  # noqa: F401  (re-exported: evaluate is where users look for them)
    KS,
    Embedded,
    as_embedded,
    content_groups,
    pair_recalls,
    paired_rows,
    ranks_of_diagonal,
    retrieval_from_embeddings,
    sim_recalls,
)

if TYPE_CHECKING:
    from .cache import FeatureCache
    from .space_core import SpaceCore

def embed_records(
    space: "SpaceCore",
    records: Sequence[Record],
    modalities: Iterable[str],
    cache: "FeatureCache | str | None" = None,
    progress: bool = False,
) -> dict[str, Embedded]:
    """Each modality's embeddings of the records that have it, with the encoder's content keys."""
    out = {}
    for m in modalities:
        have = [r for r in records if r.has(m)]
        if not have:
            continue
        values = [r.values[m] for r in have]
        X = space.embed(m, values, cache=cache, progress=progress)
        enc = space.encoder(m)
        out[m] = Embedded([r.id for r in have], X, [enc.content_key(v) for v in values])
    return out


def embed_split(space, fs, split: str) -> dict[str, Embedded]:
    """Embeddings of one split of a :class:`~anybind.featureset.FeatureSet`, per modality, straight from its frozen
    features (no encoder call): for scoring many spaces fitted on the same features.

    The keys are a hash of each item's frozen features, so identical items (two stamps captioned "A flower.")
    count as interchangeable, as :func:`embed_records` does with the encoders' content keys.
    """

    idx = fs.split_idx(split)
    out = {}
    for m in space.modalities:
        sel = idx[fs.rows[m][idx] >= 0]
        if len(sel):
            F_ = fs.get(m, sel)
            keys = [hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in F_]
            out[m] = Embedded([fs.records[i].id for i in sel], space.project(m, F_), keys)
    return out


def evaluate(
    space: "SpaceCore",
    manifest: str | Manifest,
    *,
    split: str = "test",
    modalities: Iterable[str] | None = None,
    cache: "FeatureCache | str | None" = None,
    zero_shot_label: str | None = None,
    zero_shot_modalities: Iterable[str] | None = None,
    templates: Sequence[str] | None = None,
    zero_shot_center: bool = False,
    progress: bool = False,
    rerank: str | None = None,
    rerank_params: Mapping[str, Any] | None = None,
    bank_split: str = "train",
    zero_shot_classifier: Any = None,
) -> dict[str, float]:
    """Retrieval for every pair of bound modalities on ``split``; optionally zero-shot on a label key (with
    ``templates``, default the space's own: :func:`~anybind.data.templates.templates_for`).

    ``rerank`` applies a hubness correction (see :mod:`anybind.rerank`) with
    the ``bank_split`` records' embeddings as query and gallery banks.

    ``zero_shot_classifier`` (a :class:`~anybind.zeroshot.ZeroShotClassifier`, with ``zero_shot_label``): also its
    zero-shot on its modality (its classes, prompts and balanced class biases, item by item), as
    ``zeroshot/<modality>/<label>/classifier/...`` keys.  A ``zero_shot_label`` no record of ``split`` carries is
    refused (one line naming the manifest and the label keys present) before anything is encoded; records without it
    are counted in one warning.  A zero-shot modality none of whose ``split`` records has the label is left out (no
    ``zeroshot/<modality>/...`` keys; named in that warning), as one with no record is.  A classifier none of whose
    classes is a value of the label present is refused the same way (one line naming the manifest, its classes and the
    values present); records whose value is not one of its classes count as wrong (one warning).
    """
    if zero_shot_label:
        templates = templates_for(space, templates)  # before any work: a bad template fails fast
    if isinstance(manifest, Manifest):
        man = manifest
    else:
        from .encoders.kinds import manifest_kinds

        man = load_manifest(manifest, modalities=space.modalities, kinds=manifest_kinds(space.encoders))
    mods = [m for m in (modalities or space.modalities) if m in space.modalities]
    recs = man.split(split)
    zs_mods = list(zero_shot_modalities or [m for m in mods if not m.startswith("text")])
    if zero_shot_label:  # a key no record carries: refused before any encoding; records without it: counted, and
        # a modality none of whose records has it named in the same line and left out (as one with no record is)
        require_label(recs, zero_shot_label, str(man.path), split, path=man.path, modalities=zs_mods)
        if zero_shot_classifier is not None:  # a classifier none of whose classes is a label present: refused here
            require_classes(recs, zero_shot_label, zero_shot_classifier.classes, str(man.path),
                            modality=zero_shot_classifier.modality, split=split, warn=False)
    embs = embed_records(space, recs, mods, cache=cache, progress=progress)
    banks = None
    if rerank is not None:
        from .rerank import check_method

        if check_method(rerank) is not None:
            bank_embs = embed_records(space, man.split(bank_split), mods, cache=cache, progress=progress)
            banks = {m: e[1] for m, e in bank_embs.items()}
    out = retrieval_from_embeddings(embs, rerank=rerank, banks=banks, rerank_params=rerank_params, scorer=space.scorer)
    if zero_shot_label:
        left_out = set(unlabelled_modalities(recs, zero_shot_label, zs_mods))
        for m in zs_mods:
            if m not in embs or m in left_out:
                continue
            zs = zero_shot(space, recs, m, zero_shot_label, templates=templates, cache=cache,
                           center=zero_shot_center)
            out.update({f"zeroshot/{m}/{zero_shot_label}/{k}": v for k, v in _numbers(zs)})
        clf = zero_shot_classifier
        if clf is not None:  # asked for: reported (n 0) even where no scored record has its modality
            zs = clf.evaluate(recs, zero_shot_label, cache=cache)
            out.update({f"zeroshot/{clf.modality}/{zero_shot_label}/classifier/{k}": v for k, v in _numbers(zs)})
    return out


def _numbers(zs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A zero-shot result's flat numbers: no lists or dicts, and no accuracy of NaN over 0 items (``n`` 0 says it)."""
    return [(k, v) for k, v in zs.items() if not isinstance(v, (list, dict)) and not (isinstance(v, float) and v != v)]


def class_name(label: str) -> str:
    """Readable class name of a label value: last path part, ``_``/``-`` as spaces."""
    return str(label).rstrip("/").split("/")[-1].replace("_", " ").replace("-", " ")


def zero_shot(
    space: "SpaceCore",
    records: Sequence[Record],
    modality: str,
    label_key: str,
    *,
    classes: Sequence[str] | None = None,
    names: Callable[[str], str] = class_name,
    templates: Sequence[str] | None = None,
    text_modality: str = "text",
    cache: "FeatureCache | str | None" = None,
    center: bool = False,
    bias: Sequence[float] | None = None,
    vectors: np.ndarray | None = None,
    per_item: bool = False,
    descriptions: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Classify items by their nearest class prompt (averaged over templates, a prompt ensemble, and over the
    class's descriptions: ``descriptions`` class name -> sentences, None: the space's own, ``{}``: none).

    ``center=True`` subtracts the mean embedding of the classified items before the
    cosine (transductive: it uses the unlabelled batch, never its labels).  When a
    whole out-of-domain corpus lands in one corner of the space, every item is
    nearest to the same few prompts (hubs); centring removes that shared offset.

    ``bias`` (with ``classes``, in their order): one offset per class added to its score before the argmax (each item
    on its own: inductive), e.g. a
    :class:`~anybind.zeroshot.ZeroShotClassifier`'s offsets balanced on unlabelled target-domain items.
    ``vectors`` (with ``classes``, one row per class): class vectors used instead of the prompt ensembles, e.g. a
    classifier's vectors refined on unlabelled items (:mod:`anybind.zeroshot_adapt`).
    ``per_item``: the result also holds ``"correct"``, 0/1 per classified item in the order of ``records`` (those
    with ``modality`` and ``label_key``), for a paired comparison of two classifiers on the same items.

    A ``label_key`` that none of ``records`` carries is refused in one line naming the label keys present
    (:func:`~anybind.data.fields.require_label`); records given but none with ``modality``: ``n`` 0.  With
    ``classes`` given, items whose label is not one of them are scored as wrong (in ``n``, in no confusion row; one
    warning), and none of them being one is refused in one line (:func:`~anybind.data.fields.require_classes`).
    ``chance`` is the share of the ``n`` items in the commonest class (what always answering it scores).

    Scored by the space's :attr:`~anybind.Space.scorer`: a Symile space (one saved with "missing"
    embeddings) scores with the multilinear inner product ``MIP(item, prompt, missing_m...)``, every
    other modality standing in with its learnt missing embedding, as in training.
    """
    templates = templates_for(space, templates)  # None: the space's own prompts
    if vectors is not None and classes is None:
        raise DataError("zero-shot: vectors needs classes= (the classes they are for, in their order)")
    require_label(records, label_key, "zero-shot", warn=False)  # a key no record carries is a mistake, not n 0
    recs = [r for r in records if r.has(modality) and label_key in r.labels]
    if not recs:  # records given, none with the modality
        return {"accuracy": float("nan"), "n": 0}
    y = [str(r.labels[label_key]) for r in recs]
    if bias is not None and classes is None:  # the labels found in these records need not be the offsets' classes
        raise DataError("zero-shot: bias needs classes= (the classes its offsets are for, in their order)")
    if classes is None:
        classes = sorted(set(y))
    else:  # labels none of the classes can name: refused when all are, else counted as wrong in one warning
        classes = check_once(classes, "zero-shot")
        require_classes(recs, label_key, classes, "zero-shot", modality=modality)
    off = check_offsets(bias, len(classes), classes)  # before any embedding: a wrong bias fails fast
    if vectors is not None:  # given class vectors (e.g. refined on unlabelled items) instead of the prompt ensembles
        C = np.asarray(vectors, np.float32)  # checked before anything is embedded
        if C.shape != (len(classes), space.dim) or not np.all(np.isfinite(C)):
            raise DataError(f"zero-shot: class vectors of shape {C.shape} for {len(classes)} classes in a space of "
                            f"dimension {space.dim}; give one finite row per class")
    else:
        C = class_embeddings(space, [names(c) for c in classes], templates, text_modality, cache,
                             descriptions=descriptions)
    X = space.embed(modality, [r.values[modality] for r in recs], cache=cache)
    if center:
        X = X - X.mean(0)
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    if bias is None:
        pred = nearest_class(space, X, modality, C, text_modality)
    else:
        pred = (space.scorer.pair_scores(X, modality, C, text_modality) + off).argmax(1)
    cidx = {c: i for i, c in enumerate(classes)}
    yi = np.array([cidx.get(v, -1) for v in y])
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for t, p in zip(yi, pred):
        if t >= 0:
            conf[t, p] += 1
    out = {
        "accuracy": float((pred == yi).mean()),
        "chance": float(np.bincount(yi[yi >= 0], minlength=len(classes)).max() / len(yi)),  # always the commonest
        "classes": len(classes),
        "n": len(recs),
        "confusion": conf.tolist(),
        "labels": list(classes),
    }
    if per_item:
        out["correct"] = (pred == yi).astype(np.float64).tolist()
    return out


def check_once(classes: Sequence[str], where: str = "bias") -> list[str]:
    """``classes`` as a list, each class once; one given twice is refused in one line naming ``where`` (offsets could
    not be matched to the classes by name; zero-shot would predict its first copy and score its last)."""
    classes, seen = list(classes), set()
    for c in classes:
        if c in seen:
            raise DataError(f"{where}: class {c!r} is given twice ({len(classes)} classes given, each once)")
        seen.add(c)
    return classes


def check_offsets(bias: "Sequence[float] | Mapping[str, float] | None", n_classes: int,
                  classes: Sequence[str] | None = None) -> np.ndarray | None:
    """``bias`` as one finite float offset per class (None stays None); refused in one line otherwise.  A mapping
    ``{class: offset}`` is matched to ``classes`` by name (each needs one, no other); bare numbers are taken in the
    classes' order (only their count can be checked)."""
    if bias is None:
        return None
    if isinstance(bias, Mapping):
        if classes is None:
            raise DataError("bias: offsets by class name need the classes they are for")
        names = check_once([str(c) for c in classes])
        missing = [c for c in names if c not in bias]
        if missing:
            raise DataError(f"bias: no offset for class {missing[0]!r}" + (
                f" ({len(missing)} of the {len(names)} classes have none)" if len(missing) > 1 else ""))
        extra = [c for c in bias if c not in set(names)]
        if extra:
            raise DataError(f"bias: an offset for {extra[0]!r}, which is not one of the {len(names)} classes given")
        bias = [bias[c] for c in names]
    try:
        off = np.asarray(bias, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DataError(f"bias: {type(bias).__name__} is not numbers; give one finite offset per class") from None
    if off.shape != (n_classes,) or not np.all(np.isfinite(off)):
        raise DataError(f"bias: {off.size} offsets (finite: {bool(np.all(np.isfinite(off)))}) for {n_classes} "
                        "classes; give one finite offset per class")
    return off


def nearest_class(space: "SpaceCore", X: np.ndarray, modality: str, C: np.ndarray, text_modality: str = "text") -> np.ndarray:
    """Each item's (rows of ``X``, embedded as ``modality``) nearest class embedding (rows of ``C``, as
    :func:`class_embeddings` gives) by the space's scorer: zero-shot's prediction, an index into ``C``."""
    return space.scorer.pair_scores(X, modality, C, text_modality).argmax(1)


def class_embeddings(
    space: "SpaceCore",
    names: Sequence[str],
    templates: Sequence[str] | None = None,
    text_modality: str = "text",
    cache: "FeatureCache | str | Path | None" = None,
    *,
    batch_size: int = 4096,
    descriptions: Mapping[str, Sequence[str]] | None = None,
) -> np.ndarray:
    """Prompt-ensemble class embeddings (n_classes, dim): each class the renormalised mean of its
    templates' embeddings (``templates`` None: the space's own prompts) and of its descriptions' (CuPL: every
    prompt counts once; ``descriptions`` class name -> sentences, None: the space's own, ``{}``: none; a class
    without any has its templates only).

    Prompts are embedded ``batch_size`` at a time (so thousands of classes x templates never sit in
    memory as encoder inputs at once) and every prompt's encoder features are cached, so a second
    call with the same classes encodes nothing.
    """
    from .cache import FeatureCache

    if not names:
        raise DataError("no class names given")
    bad = [i for i, n in enumerate(names) if not isinstance(n, str) or is_blank(n)]
    if bad:
        raise DataError(f"empty class name at position {bad[0]}")
    templates = templates_for(space, templates)  # None: the space's own prompts
    desc = descriptions_for(space, descriptions)
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    out = np.zeros((len(names), space.dim), np.float32)
    c0 = 0  # no class described: blocks of batch_size // len(templates) classes (at least one)
    while c0 < len(names):
        part, prompts, ends = [], [], []
        for n in names[c0:]:  # the classes whose prompts fit in batch_size (at least one class)
            mine = [fill_template(t, n) for t in templates] + list(desc.get(n, ()))
            if part and len(prompts) + len(mine) > batch_size:
                break
            part.append(n)
            prompts += mine
            ends.append(len(prompts))
        E = space.embed(text_modality, prompts, cache=fc)
        M = np.stack([E[a:b].mean(0) for a, b in zip([0, *ends[:-1]], ends)])
        out[c0 : c0 + len(part)] = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
        c0 += len(part)
    return out


def retrieval_table(results: Mapping[str, Mapping[str, float]], title: str = "retrieval", ks: Sequence[int] = (1, 10)):
    """A Rich table: one row per direction, one column per system with "R@1 / R@10"."""
    from rich.table import Table

    systems = list(results)
    dirs = sorted({k.rsplit("/", 1)[0] for r in results.values() for k in r if "->" in k})
    t = Table(title=title)
    t.add_column("direction")
    t.add_column("n", justify="right")
    for s in systems:
        t.add_column(f"{s}\n" + " / ".join(f"R@{k}" for k in ks), justify="right")
    for d in dirs:
        n = next((int(r[f"{d}/n"]) for r in results.values() if f"{d}/n" in r), 0)
        row = [d, str(n)]
        for s in systems:
            vals = [results[s].get(f"{d}/R@{k}") for k in ks]
            row.append(" / ".join("-" if v is None else f"{v:.3f}" for v in vals))
        t.add_row(*row)
    return t

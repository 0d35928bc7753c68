"""Progressive binding: add a modality to a frozen space, or swap a modality's encoder (OneEncoder-style).

A bound space is a set of projectors into one shared sphere.  To add a modality
(a new sensor, a new encoder) nothing of the original training data is needed:
pairs between the new modality and *any* modality already bound are enough.
Only the new modality's projector is trained; every existing projector, the
temperature and therefore every existing embedding stay bit-identical::

    space2 = space.add_modality("audio", "audio:aisfx", "sounds.jsonl", anchors=["text"])
    space2 = space.replace_encoder("image", "image:efficientnet-lite1+bridge", "photos.jsonl")

How the new projector is trained (:func:`add_modality`):

* targets: the frozen space's embeddings of the anchor items (e.g. the
  captions paired with the sounds), computed once and never updated;
* start (``init="ridge"``, the default): a ridge regression from the new
  modality's standardised features onto those targets (shrinkage chosen on
  the validation pairs), so that epoch 0 already lands near the anchors; where
  the new encoder's label bridge maps into the space's locked text encoder (an
  image bound into a text-locked space), Space.fit's start: shrunk towards the
  bridge, and with the start guard (on by default there) the bridge itself kept
  when no ridge beats it on val, and with ``kernel_start`` (on by default there)
  Space.fit's kernel branch on the bridge's residual, kept where it beats that
  linear start on val, and (``bridge_anchors``, :data:`anybind.recipe.ANCHOR_WEIGHT`
  by default there) the bridge's 1000 class anchors -- its reading of each
  ImageNet class paired with the locked text's embedding of the class prompt --
  in the ridge's normal equations, weighted that many times the training pairs,
  where the targets include the locked text (else none: a ``note``), and
  (``base_gate``, :data:`anybind.recipe.BASE_GATE` by default there) a linear
  start's base-encoder correction gated as Space.fit's (:mod:`anybind.base_gate`)
  (:mod:`anybind.progressive_start`; lineage ``ridge_start``);
* fine-tuning: the space's pairwise objective (InfoNCE by default) between the
  new embeddings and the frozen targets, batches per anchor modality, early
  stopping on the validation pairs' retrieval score (epoch 0 competes too).
* on a small val (a ridge start choosing on 2 to 99 val pairs with its anchors),
  as Space.fit's recipe auto: ``select_se`` / ``finetune`` left unset are 1 /
  False -- each choice on val (guard, ridge alpha, kernel keep, epoch) takes the
  candidate nearest the training-free start within one standard error of the
  best, and the start is kept without fine-tuning (lineage ``recipe.chosen``);
  without the rule below 100 val pairs (or with none) a warning in one line
  (:func:`anybind.progressive_start.small_val_choice`, ``say_val_size``).

In a Symile space (scored by the multilinear inner product, see
:mod:`anybind.multilinear`), the new modality meets anchor ``a`` as
``MIP(new, a, missing_m...)``: its targets are ``a``'s embeddings times every
other bound modality's learnt missing embedding, so the pairwise objective
trains exactly the score used at retrieval, and its own missing embedding is
the all-ones vector, which leaves every score among the old modalities as it was.

Because everything else is frozen, a modality bound only through text is
retrievable from images (and the other way round): *emergent* alignment,
measured by the ``progressive`` bench task.

:func:`replace_encoder` trains a projector for a *new* encoder of a bound
modality with the same machinery, its targets being where the old space put
the same items (the old encoder + old projector), then swaps it in.

Every change appends an entry to ``space.info["lineage"]``: what was added or
replaced, when, with which encoder (and its identity), from which data
(manifest path, fingerprint, record and pair counts) and how it trained.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import FeatureCache
from .data.manifest import Manifest
from .encoders.registry import absolute_spec, get_encoder
from .encoders.video import temporal_frames
from .errors import DataError, SpaceError
from .progressive_fit import VAL_METRIC, BindConfig  # noqa: F401  (VAL_METRIC re-exported)
from .progressive_fit import Target, bind_config, has_modality, train_projector
from .ridge import say_starts
from .progressive_start import (check_anchor_targets, say_val_size, small_val_choice, start_anchors, start_prior,
                                val_pair_count)
from .scoring import MIP
from .vocabulary import carry_vocabulary

if TYPE_CHECKING:
    from .space_core import SpaceCore

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- public API


def add_modality(
    space: "SpaceCore",
    name: str,
    encoder: str,
    data: str | Path | Manifest | Sequence[str | Path | Manifest],
    anchors: Sequence[str] | None = None,
    *,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    **config: Any,
) -> "SpaceCore":
    """Bind a new modality ``name`` (encoded by ``encoder``) into a frozen space; returns a new Space.

    Parameters
    ----------
    space: the frozen space (not modified).
    name: the new modality's manifest field, e.g. ``"audio"``.
    encoder: its encoder spec, e.g. ``"audio:aisfx"``.
    data: manifest(s) whose records pair ``name`` with modalities the space already binds.
    anchors: bound modalities to learn from (default: every bound modality the data pairs
        with ``name``); their frozen embeddings are the training targets.
    cache: feature cache (object or folder); default ``$ANYBIND_CACHE`` or ``~/.cache/anybind``.
    strict: make any bad record fatal instead of skipping it.
    **config: :class:`BindConfig` fields (``projector``, ``init``, ``epochs``, ``seed``, ...).
    """
    if name in space.modalities:
        raise SpaceError(
            f"modality {name!r} is already bound in this space (encoder {space.encoders[name]}); "
            "to swap its encoder use replace_encoder (CLI: anybind bind --replace)"
        )
    return _bind(space, name, encoder, data, anchors, replace=False, cache=cache, strict=strict,
                 progress=progress, cfg=bind_config(config))


def replace_encoder(
    space: "SpaceCore",
    name: str,
    encoder: str,
    data: str | Path | Manifest | Sequence[str | Path | Manifest],
    anchors: Sequence[str] | None = None,
    *,
    cache: FeatureCache | str | Path | None = None,
    strict: bool = False,
    progress: bool = False,
    **config: Any,
) -> "SpaceCore":
    """Swap the encoder of bound modality ``name`` for ``encoder``; returns a new Space.

    The new projector is trained to put every item of ``name`` in ``data`` where
    the old encoder + old projector put it (ridge start, then the contrastive
    objective against those frozen targets), then replaces the old one.  No
    pairs with other modalities are needed; ``anchors`` may add some (other bound
    modalities whose frozen embeddings also serve as targets).  Every other
    modality's projector stays bit-identical.  The label bridge's class anchors
    need the locked text among the targets: ``bridge_anchors`` > 0 without it in
    ``anchors`` is refused before any encoding (left unset: none, a ``note``).
    """
    if name not in space.modalities:
        raise SpaceError(f"modality {name!r} is not bound in this space (bound: {', '.join(space.modalities)}); use add_modality")
    return _bind(space, name, encoder, data, anchors, replace=True, cache=cache, strict=strict,
                 progress=progress, cfg=bind_config(config))


# ----------------------------------------------------------------------------- internals


def _load_data(space, name, encoder, data, mods, strict, progress) -> list[Manifest]:
    from .manifests import as_manifests

    encoders = {m: space.encoders[m] for m in mods if m in space.encoders and m != name}
    encoders[name] = encoder
    return as_manifests(data, mods, encoders, strict, progress)


def _bind(space, name, spec, data, anchors, *, replace, cache, strict, progress, cfg: BindConfig):
    from .version import __version__

    t0 = time.perf_counter()
    fc = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
    bound = space.modalities
    if anchors is not None:
        anchors = list(dict.fromkeys(anchors))
        unknown = [a for a in anchors if a not in bound]
        if unknown:
            raise SpaceError(f"anchor(s) {unknown} are not bound in this space (bound: {', '.join(bound)})")
        if not replace and name in anchors:
            raise DataError(f"the new modality {name!r} cannot be its own anchor")
    spec = absolute_spec(spec)  # a relative model folder / file: the new space finds it from any working directory
    enc = get_encoder(spec)
    if replace:
        old = space.encoder(name)
        if enc.input_kind != old.input_kind:
            raise DataError(
                f"cannot replace {name!r}'s encoder {space.encoders[name]} (reads {old.input_kind} items) "
                f"with {spec} (reads {enc.input_kind} items)"
            )
    asked = cfg.bridge_anchors  # the user's own weight (None: the recipe's, a note where the anchors cannot apply)
    cfg, prior = start_prior(space, name, spec, cfg)  # a setting that cannot apply is refused before any work
    lock, class_anchors = start_anchors(space, name, spec, cfg)
    if anchors is not None or replace:  # the targets follow from the arguments: refused before the data is read
        check_anchor_targets(name, lock, asked, ([name] if replace else []) + [a for a in anchors or () if a != name])
    if anchors is not None:
        wanted = sorted({name, *anchors})
    else:  # replace: the modality's own items; add: any bound modality may pair with it
        wanted = [name] if replace else sorted({name, *bound})
    manifests = _load_data(space, name, spec, data, wanted, strict, progress)
    records = [r for man in manifests for r in man.records]
    present = {m for r in records for m in r.values}
    where = ", ".join(str(m.path) for m in manifests)
    if name not in present:
        raise DataError(f"{where}: no valid record has the modality {name!r} to bind")
    shared = sorted((present - {name}) & set(bound))
    if not replace and not shared:
        raise DataError(
            f"{where}: the data shares no modality with the space: its records have {name!r} but none of "
            f"the bound modalities ({', '.join(bound)}); adding {name!r} needs records that pair it with "
            "a bound modality (e.g. sounds with their captions)"
        )
    splits = np.array([r.split for r in records])
    train_idx = np.flatnonzero(splits == "train")
    val_idx = np.flatnonzero(splits == "val")

    have = np.array([i for i, r in enumerate(records) if r.has(name)], dtype=np.int64)
    row_of = np.full(len(records), -1, dtype=np.int64)
    row_of[have] = np.arange(len(have))

    # frozen targets, one block per anchor
    if anchors is None and replace:  # default: the old space's own embeddings of the same items
        anchor_list = [name]
    elif anchors is None:  # default: every bound modality with training pairs
        anchor_list = [a for a in shared if ((row_of[train_idx] >= 0) & has_modality(records, train_idx, a)).sum() >= 2]
        if not anchor_list:
            raise DataError(
                f"{where}: fewer than 2 training records pair {name!r} with any bound modality "
                f"({', '.join(shared)}); check the 'split' fields"
            )
    else:
        anchor_list = ([name] if replace else []) + [a for a in anchors if a != name]
    if anchors is None and not replace:  # add's default anchors: the data chose them
        check_anchor_targets(name, lock, asked, anchor_list, where)
    # the choices on val (as Space.fit's recipe auto on a small own val), said before encoding
    n_val = val_pair_count([sum(records[i].has(name) and records[i].has(a) for i in val_idx) for a in anchor_list])
    cfg, chosen = small_val_choice(cfg, n_val)
    warned = say_val_size(name, where, n_val, cfg, chosen)
    # the new modality's features (through the cache)
    feats = fc.encode(enc, [records[i].values[name] for i in have], progress=progress, description=f"encoding {name} ({spec})")
    # a Symile space scores the new modality with anchor a by MIP(new, a, missing_m ...): its targets are a's
    # embeddings weighed by the space's scorer (times every other bound modality's learnt missing embedding; the
    # new modality is not bound yet); a replaced encoder's targets are the old space's plain embeddings
    targets: dict[str, Target] = {}
    for a in anchor_list:
        recs = np.array([i for i in have if records[i].has(a)], dtype=np.int64)
        if len(recs) == 0:
            raise DataError(f"{where}: no record pairs {name!r} with the anchor {a!r}")
        items = [records[i].values[a] for i in recs]
        keys = space.features(a, items, cache=fc, progress=progress)  # checks the encoder identity
        emb = space.project(a, keys)
        if not replace:
            emb = space.scorer.weigh(emb, a, name)
        targets[a] = Target(a, recs, row_of[recs], emb.astype(np.float32), keys)
    for a, t in targets.items():
        n_tr = int(np.isin(t.records, train_idx).sum())
        if n_tr < 2:
            what = f"items of {name!r}" if (replace and a == name) else f"pairs of {name!r} with {a!r}"
            raise DataError(f"{where}: {n_tr} training {what}; need at least 2 (check the 'split' fields)")

    proj, train_info = train_projector(space, feats, row_of, targets, train_idx, val_idx, cfg, progress,
                                       frames=temporal_frames(spec), name=name, prior=prior,
                                       anchors=class_anchors, lock=lock)
    ridge = train_info.pop("ridge_start", None)
    say_starts(log, [name], {name: (ridge or {}).get("guard")}, {name: (ridge or {}).get("kernel")})  # as Space.fit

    projectors = {m: copy.deepcopy(p) for m, p in space.projectors.items()}
    projectors[name] = proj
    encoders = {**space.encoders, name: spec}
    identities = {**space.identities, name: enc.identity}
    info = copy.deepcopy(space.info)
    entry: dict[str, Any] = {
        "event": "replace_encoder" if replace else "add_modality",
        "modality": name,
        "encoder": spec,
        "identity": enc.identity,
        "anchors": [a for a in targets],
        "pairs": {
            a: {"train": int(np.isin(t.records, train_idx).sum()), "val": int(np.isin(t.records, val_idx).sum())}
            for a, t in targets.items()
        },
        "data": [
            {"manifest": str(man.path), "fingerprint": man.fingerprint(sorted({name, *targets})), "records": len(man.records)}
            for man in manifests
        ],
        "base_space": space.identity(),
        "frozen": [m for m in bound if not (replace and m == name)],
        "config": cfg.to_dict(),
        **({"recipe": {"chosen": chosen}} if chosen else {}),  # select_se / finetune as Space.fit's recipe auto sets
        **({"val_warning": warned} if warned else {}),
        **({"ridge_start": {name: ridge}} if ridge else {}),
        "training": {**train_info, "seconds": round(time.perf_counter() - t0, 2)},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "anybind": __version__,
    }
    if replace:
        entry["previous_encoder"] = space.encoders[name]
        entry["previous_identity"] = space.identities.get(name)
    if not replace and space.scorer.kind == MIP:
        # the new modality's stand-in is the neutral element: every MIP score the space gave before
        # (over the modalities it had) is unchanged
        info["missing_embeddings"][name] = [1.0] * space.dim
        entry["scoring"] = "multilinear inner product (Symile space): targets weighted by the other modalities' missing embeddings"
    info.setdefault("lineage", []).append(entry)
    out = space.derived(  # the given space's class: a public Space grows into a public Space
        encoders,
        projectors,
        space.logit_scale,
        identities=identities,
        config=copy.deepcopy(space.config),
        info=info,
    )
    return carry_vocabulary(space, out, cache=fc, progress=progress)  # embedded again if the text modality changed

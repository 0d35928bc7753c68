"""A zero-shot classifier whose class biases are balanced on unlabelled items of the target domain (issue 16).

Out of its training domain a space's zero-shot predictions collapse onto a few hub classes (Fashion-MNIST through a
space bound on Tux Paint calls most items "sneaker", "shirt" or "trousers").  :class:`ZeroShotClassifier` adds one
bias per class to the prompt-ensemble scores, fitted on *unlabelled* items of the target domain (labels are never
read) so that the classifier's predicted class distribution on them matches a prior (uniform by default, or one the
user gives), then frozen: each later item is classified on its own, with no statistics of the batch it comes in
(inductive, unlike ``zero_shot(center=True)`` which centres on the test batch).

The fit is *prior matching* of the softmax over class scores: with logits ``temperature * score + b``, find ``b``
such that the mean softmax over the unlabelled items equals the prior ``pi``.  The fixed point
``b <- b + log(pi) - log(mean_i softmax_i(b))`` is the column step of Sinkhorn's balancing of the (items x classes)
transport plan whose rows are the softmax (the row step); it is coordinate ascent on a convex dual, so it converges
(Cuturi 2013).  Fixing each class's predicted mass this way is the label-distribution adaptation of zero-shot models
by optimal transport (OTTER, Shin et al. 2024), whose inductive variant learns the per-class reweighting on one set
and applies it item by item, as here; prior matching of CLIP's predictions is also the "prior matching" of Allingham
et al. 2023.  The EM prior estimate of Saerens et al. (2002) answers another question (what is the target's prior
if the classifier's posteriors are calibrated) and moves predictions *towards* the hubs the classifier over-predicts,
so it is not used.  ``temperature`` (how soft the matched predictions are) is chosen on labelled held-out data;
hard balancing (a large temperature) forces every class to the prior's share and loses accuracy on Fashion-MNIST.

Saved as a folder (:mod:`anybind.io`, kind ``zero-shot``): ``classifier.json`` (classes, prompt names, templates,
modality, prior, temperature, the space identity, how the biases were fitted) + ``bias.safetensors``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .artefact_meta import read_meta
from .data.files import file_keys_remembered
from .data.templates import check_templates, templates_for
from .errors import DataError, SpaceError
from .evaluate import check_once, class_embeddings, class_name, zero_shot
from .prior_match import (DEFAULT_TEMPERATURE, check_prior, check_temperature, fit_bias,  # noqa: F401
                          mean_softmax, softmax)  # (re-exported: they were defined here)
from .zeroshot_adapt import DEFAULT_ROUNDS, check_mix, check_rounds, refine_class_vectors

if TYPE_CHECKING:
    from .data.manifest import Record
    from .space_core import SpaceCore

log = logging.getLogger(__name__)

FORMAT = "anybind.zero-shot-classifier"
FORMAT_VERSION = 2  # 2: class vectors refined on the unlabelled items (``refine``); version 1 folders load as before
#: an unlabelled set must hold at least this many items per class
MIN_ITEMS_PER_CLASS = 2


class ZeroShotClassifier:
    """Zero-shot classification of ``modality`` items over ``classes`` by prompt ensembles, with per-class biases
    balanced on unlabelled target-domain items (:meth:`calibrate`) and then applied item by item.

    >>> clf = ZeroShotClassifier(space, ["Sandal", "Bag"], names={"Sandal": "sandal", "Bag": "bag"})
    >>> clf.calibrate(unlabelled_paths).predict(paths)            # doctest: +SKIP

    ``names``: the class name put in the templates (a mapping or callable; default the label's last path part);
    ``templates``: default the space's own; ``prior``: ``"balanced"`` or a share per class; ``temperature``:
    softmax temperature of the matching (logits ``temperature * cosine``); ``refine``: the weight of the unlabelled
    items' prototypes in class vectors refined by :meth:`calibrate` before the biases are fitted (0: none; see
    :mod:`anybind.zeroshot_adapt`), ``refine_rounds`` the most rounds.  Before :meth:`calibrate` it classifies as
    :func:`~anybind.evaluate.zero_shot` does (no bias).
    """

    def __init__(self, space: "SpaceCore", classes: Sequence[str], *, names: Any = None,
                 templates: Sequence[str] | None = None, modality: str = "image", text_modality: str = "text",
                 prior: "str | Mapping[str, float] | Sequence[float]" = "balanced",
                 temperature: float = DEFAULT_TEMPERATURE, refine: float = 0.0,
                 refine_rounds: int = DEFAULT_ROUNDS) -> None:
        classes = [str(c) for c in classes]
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise DataError(f"a zero-shot classifier needs two or more distinct classes (got {len(classes)}"
                            f"{', repeated' if len(set(classes)) != len(classes) else ''})")
        for m in (modality, text_modality):
            if m not in space.modalities:
                raise DataError(f"modality {m!r} is not in the space (it binds {', '.join(space.modalities)})")
        if modality == text_modality:
            raise DataError(f"modality {modality!r} is the text modality the prompts are embedded in")
        if isinstance(names, Mapping):
            self.names = [str(names.get(c, class_name(c))) for c in classes]
        else:
            self.names = [str((names or class_name)(c)) for c in classes]
        self.space, self.classes, self.modality, self.text_modality = space, classes, modality, text_modality
        self.templates = list(templates_for(space, templates))
        self.prior = check_prior(prior, classes)
        self.prior_spec = prior if isinstance(prior, str) else "given"
        self.temperature = check_temperature(temperature)
        self.refine, self.refine_rounds = check_mix(refine), check_rounds(refine_rounds)
        self.bias_: np.ndarray | None = None
        self.refined_: np.ndarray | None = None  # class vectors refined by calibrate (refine > 0)
        self.calibration_: dict[str, Any] = {}
        self.balanced_on_: np.ndarray | None = None
        self._C: np.ndarray | None = None

    # -- scoring ----------------------------------------------------------------------------------
    def class_vectors(self, cache: Any = None) -> np.ndarray:
        """The class vectors scored against: refined ones after :meth:`calibrate` with ``refine`` > 0, else the
        prompt ensembles' text embeddings."""
        if self.refined_ is not None:
            return self.refined_
        if self._C is None:
            self._C = class_embeddings(self.space, self.names, self.templates, self.text_modality, cache)
        return self._C

    def embed_items(self, items: Any, cache: Any = None, progress: bool = False) -> np.ndarray:
        """Items as embeddings: an (n, dim) array of embeddings in the space, records (their ``modality`` value)
        or raw values (paths, strings) of ``modality``."""
        if isinstance(items, np.ndarray):
            X = np.asarray(items, np.float32)
            if X.ndim != 2 or X.shape[1] != self.space.dim:
                raise DataError(f"embeddings of shape {X.shape}; expected (n, {self.space.dim}) in this space")
        else:
            values = self.item_values(items)
            X = (self.space.embed(self.modality, values, cache=cache, progress=progress) if values
                 else np.zeros((0, self.space.dim)))
        if not np.all(np.isfinite(X)):
            bad = int(np.flatnonzero(~np.isfinite(X).all(1))[0])
            raise DataError(f"item {bad}: its embedding holds NaN or infinity")
        return X

    def item_values(self, items: Any) -> list[Any]:
        """Records' ``modality`` values (a record without one refused in one line); raw values as they are."""
        values = []
        for it in items:
            if hasattr(it, "values") and hasattr(it, "has"):
                if not it.has(self.modality):
                    raise DataError(f"record {it.id}: no {self.modality!r} value to classify")
                values.append(it.values[self.modality])
            else:
                values.append(it)
        return values

    def content_digests(self, values: Sequence[Any]) -> np.ndarray:
        """One 64-bit digest per value of its content (the encoder's cache key: a file's bytes, a text), so that an
        item is recognised whatever its record id or path."""
        enc = self.space.encoder(self.modality)
        return np.array([int.from_bytes(hashlib.sha256(enc.content_key(v).encode()).digest()[:8], "little")
                         for v in values], dtype=np.uint64)

    def check_not_balanced_on(self, records: Sequence[Any]) -> None:
        """Refuse (one line) to score items the biases were balanced on: their predictions would carry statistics
        of the scored items themselves (transductive), not of a separate unlabelled set."""
        if self.balanced_on_ is None or not len(records):
            return
        hit = np.isin(self.content_digests(self.item_values(records)), self.balanced_on_)
        if hit.any():
            first = records[int(np.flatnonzero(hit)[0])]
            what = f"record {first.id}" if hasattr(first, "id") else f"item {int(np.flatnonzero(hit)[0])}"
            raise DataError(f"{what}: the class biases were balanced on it ({int(hit.sum())} of the {len(records)} "
                            "scored items are in the unlabelled balancing set); score items the classifier was not "
                            "balanced on")

    def raw_scores(self, items: Any, cache: Any = None) -> np.ndarray:
        """Each item's score against each class prompt ensemble (the space's scorer), no bias: (n, classes)."""
        X = self.embed_items(items, cache)
        return self.space.scorer.pair_scores(X, self.modality, self.class_vectors(cache), self.text_modality)

    @property
    def offsets(self) -> np.ndarray:
        """What is added to each class's raw score (``bias / temperature``; zeros before :meth:`calibrate`)."""
        return np.zeros(len(self.classes)) if self.bias_ is None else self.bias_ / self.temperature

    def decision_function(self, items: Any, cache: Any = None) -> np.ndarray:
        """Raw scores plus the balanced offsets, one item at a time (no batch statistics)."""
        return self.raw_scores(items, cache) + self.offsets

    def predict_proba(self, items: Any, cache: Any = None) -> np.ndarray:
        return softmax(self.temperature * self.decision_function(items, cache))

    def predict(self, items: Any, cache: Any = None) -> list[str]:
        return [self.classes[i] for i in self.decision_function(items, cache).argmax(1)]

    # -- use by others (the index, the service) ----------------------------------------------------
    def offsets_for(self, classes: Sequence[str]) -> np.ndarray:
        """The offsets for ``classes``: they must be this classifier's classes (or their prompt names), all of them,
        in its order; refused (:class:`DataError`, one line) naming what differs."""
        given, k = [str(c) for c in classes], len(self.classes)
        if given in (self.classes, self.names):
            return self.offsets
        check_once(given)  # else a class given twice left none to name below
        shown = ", ".join(self.classes[:8]) + (", ..." if k > 8 else "")
        if len(given) != k:
            raise DataError(f"bias: the classifier has {k} classes ({shown}), {len(given)} given")
        ref = self.names if set(given) == set(self.names) else self.classes
        i = next(j for j, (a, b) in enumerate(zip(given, ref)) if a != b)
        if set(given) == set(ref):
            raise DataError(f"bias: the classifier's classes in another order (class {i} is {given[i]!r} here, "
                            f"{ref[i]!r} in the classifier): give them in its order ({shown})")
        bad = next(c for c in given if c not in set(ref))
        raise DataError(f"bias: {bad!r} is not a class of the classifier (class {given.index(bad)} there is "
                        f"{ref[given.index(bad)]!r}; its classes: {shown})")

    def settings_for(self, space: "SpaceCore", classes: Sequence[str], *, templates: Sequence[str] | None = None,
                     modality: str | None = None, text_modality: str | None = None,
                     cache: Any = None) -> dict[str, Any]:
        """What classifying ``classes`` as this classifier does takes: ``vectors`` (the class vectors it scores
        against, :meth:`class_vectors`: refined ones when it was refined, so callers score with them and never
        re-embed the class text), ``offsets``, ``modality``, ``text_modality``, and the prompt ``names`` and
        ``templates`` (to show) -- its own, refused in one line (:class:`DataError`) where what is given differs
        (another space, class list, templates or modality); ``None``: its own."""
        if space.identity() != self.space.identity():
            raise DataError(f"bias: the classifier was fitted with space {self.space.identity()}, this one is "
                            f"{space.identity()}")
        off = self.offsets_for(classes)
        if templates is not None and list(templates_for(space, templates)) != self.templates:
            raise DataError(f"bias: the classifier was balanced with the templates {self.templates}, not "
                            f"{list(templates)}; leave templates out to use its own")
        for what, mine, given in (("items", self.modality, modality), ("prompts", self.text_modality, text_modality)):
            if given is not None and given != mine:
                raise DataError(f"bias: the classifier's offsets are for {mine} {what} (balanced with them), not "
                                f"{given}")
        return {"names": self.names, "templates": self.templates, "offsets": off, "modality": self.modality,
                "text_modality": self.text_modality, "vectors": self.class_vectors(cache)}

    # -- fitting --------------------------------------------------------------------------------
    def calibrate(self, items: Any, cache: Any = None, *, max_iter: int = 1000, tol: float = 1e-6,
                  progress: bool = False) -> "ZeroShotClassifier":
        """Fit the class biases on unlabelled ``items`` of the target domain (labels, if any, are not read): the
        mean softmax prediction on them is matched to the prior.  Refuses (one line) a set with fewer than
        :data:`MIN_ITEMS_PER_CLASS` items per class, a NaN embedding, items of the wrong shape or modality."""
        if isinstance(items, (str, bytes)):
            raise DataError("calibrate takes a sequence of items (paths, records or embeddings), not one string")
        if not isinstance(items, np.ndarray):
            items = list(items)
        X = self.embed_items(items, cache, progress=progress)  # progress: a bar while the items are encoded
        need = MIN_ITEMS_PER_CLASS * len(self.classes)
        if len(X) < need:
            raise DataError(f"an unlabelled set of {len(X)} items is too small to balance {len(self.classes)} classes: "
                            f"give at least {need} ({MIN_ITEMS_PER_CLASS} per class)")
        self.refined_, refined = None, {}
        if self.refine > 0:  # self-training: class vectors moved towards the items they are assigned (balanced)
            Q = self.space.scorer.weigh(X, self.modality, self.text_modality)
            self.refined_, refined = refine_class_vectors(self.class_vectors(cache), Q, self.prior, self.temperature,
                                                          mix=self.refine, rounds=self.refine_rounds)
        S = self.space.scorer.pair_scores(X, self.modality, self.class_vectors(cache), self.text_modality)
        b, info = fit_bias(S, self.prior, self.temperature, max_iter=max_iter, tol=tol)
        before = np.bincount(S.argmax(1), minlength=len(self.classes))
        after = np.bincount((S + (b / self.temperature).astype(S.dtype)).argmax(1), minlength=len(self.classes))
        self.bias_ = b
        # which items the biases saw (by content), so that scoring them is refused; embeddings given: not known
        self.balanced_on_ = None if isinstance(items, np.ndarray) else np.unique(
            self.content_digests(self.item_values(items)))
        self.calibration_ = {
            **info, "items": int(len(X)),
            "fingerprint": hashlib.sha256(np.ascontiguousarray(X, np.float32).tobytes()).hexdigest()[:16],
            "predicted_before": before.tolist(), "predicted_after": after.tolist(),
            **({"refine": refined} if refined else {})}
        log.info("balanced %d classes on %d unlabelled items (%d iterations); argmax counts per class %d-%d -> %d-%d",
                 len(self.classes), len(X), info["iterations"], before.min(), before.max(), after.min(), after.max())
        return self

    def evaluate(self, records: Sequence["Record"], label_key: str, cache: Any = None) -> dict[str, Any]:
        """:func:`~anybind.evaluate.zero_shot` on labelled ``records`` with this classifier's classes, prompts and
        offsets (each item on its own); refuses (one line) records the biases were balanced on."""
        name_of = dict(zip(self.classes, self.names))
        with file_keys_remembered():  # the check keys the scored files; their encoding reuses those keys
            self.check_not_balanced_on([r for r in records if r.has(self.modality) and label_key in r.labels])
            return zero_shot(self.space, records, self.modality, label_key, classes=self.classes,
                             names=lambda c: name_of[c], templates=self.templates, text_modality=self.text_modality,
                             cache=cache, bias=self.offsets, vectors=self.refined_)

    # -- saving ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": self.classes, "names": self.names,
                "templates": self.templates, "modality": self.modality, "text_modality": self.text_modality,
                "prior": self.prior_spec, "prior_shares": self.prior.tolist(), "temperature": self.temperature,
                "refine": self.refine, "refine_rounds": self.refine_rounds, "space_identity": self.space.identity(), "calibrated": self.bias_ is not None,
                "calibration": self.calibration_}

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """``classifier.json`` + ``bias.safetensors`` as a recoverable swap (:mod:`anybind.io`)."""
        from safetensors.numpy import save_file

        from .io import atomic_write_dir

        def write(tmp: Path) -> None:
            tensors = {"bias": np.asarray(self.offsets * self.temperature, np.float64)}
            if self.refined_ is not None:
                tensors["class_vectors"] = np.asarray(self.refined_, np.float32)
            if self.balanced_on_ is not None:
                tensors["balanced_on"] = np.asarray(self.balanced_on_, np.uint64)
            save_file(tensors, str(tmp / "bias.safetensors"), metadata={"format": FORMAT})
            (tmp / "classifier.json").write_text(json.dumps(self.to_json(), indent=2, sort_keys=True))

        return atomic_write_dir(Path(path), write, kind="zero-shot", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, space: "SpaceCore") -> "ZeroShotClassifier":
        """Load a saved classifier for ``space``; refuses (one line) another space, a damaged folder or file."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        from .io import recover_dir

        path = Path(path)
        recover_dir(path, "zero-shot")
        meta = read_meta(path, "classifier.json", "bias.safetensors", fmt=FORMAT, version=FORMAT_VERSION,
                         what="zero-shot classifier", error=SpaceError)
        w_p = path / "bias.safetensors"
        if meta.get("space_identity") != space.identity():
            raise SpaceError(f"{path}: fitted with space {meta.get('space_identity')}, but the given space is "
                             f"{space.identity()}; calibrate it again with this space")
        try:
            check_templates(meta["templates"])
            prior = meta["prior"] if meta["prior"] == "balanced" else meta["prior_shares"]
            clf = cls(space, meta["classes"], names=dict(zip(meta["classes"], meta["names"])),
                      templates=meta["templates"], modality=meta["modality"], text_modality=meta["text_modality"],
                      prior=prior, temperature=meta["temperature"], refine=meta.get("refine", 0.0),
                      refine_rounds=meta.get("refine_rounds", DEFAULT_ROUNDS))
            tensors = load_file(str(w_p))
            bias, seen, vecs = tensors["bias"], tensors.get("balanced_on"), tensors.get("class_vectors")
        except (KeyError, TypeError, ValueError, SafetensorError, OSError) as e:
            raise SpaceError(f"{path}: damaged zero-shot classifier ({type(e).__name__}: {' '.join(str(e).split())})") from None
        if bias.shape != (len(clf.classes),) or not np.all(np.isfinite(bias)):
            raise SpaceError(f"{w_p}: bias of shape {bias.shape} (finite: {bool(np.all(np.isfinite(bias)))}) for "
                             f"{len(clf.classes)} classes")
        if seen is not None and (seen.dtype != np.uint64 or seen.ndim != 1):
            raise SpaceError(f"{w_p}: balanced_on of {seen.dtype} and shape {seen.shape}, expected 64-bit digests")
        if vecs is not None and (vecs.shape != (len(clf.classes), space.dim) or not np.all(np.isfinite(vecs))):
            raise SpaceError(f"{w_p}: class_vectors of shape {vecs.shape} (finite: {bool(np.all(np.isfinite(vecs)))}), "
                             f"expected ({len(clf.classes)}, {space.dim})")
        if (vecs is not None) != bool(meta.get("calibrated") and clf.refine > 0):
            raise SpaceError(f"{w_p}: {'unexpected' if vecs is not None else 'no'} class_vectors for a classifier "
                             f"{'not ' if not clf.refine else ''}refined (refine {clf.refine:g}, calibrated "
                             f"{bool(meta.get('calibrated'))})")
        if meta.get("calibrated"):
            clf.bias_, clf.calibration_ = bias.astype(np.float64), dict(meta.get("calibration") or {})
            clf.balanced_on_, clf.refined_ = seen, vecs
        return clf

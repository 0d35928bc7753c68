"""What every fusion model shares: inputs, modality dropout, the training loop with reconstruction
and balancing, epoch selection, evaluation per subset of present modalities, persistence.  A task
(:mod:`.model`: classification, regression) defines its targets, loss and metrics.

:class:`FusionModel` holds the parameters, the inputs, the task hooks, the fitted network and its
history, and persistence.  It is composed of two parts, each made when needed and given exactly what
it works on (nothing it sets on the model): a :class:`~.training.FusionTrainer` (the training settings,
the modalities, the input width and the task's hooks; it returns the network and the history, which
:meth:`FusionModel.fit` keeps) and a :class:`~.scoring.FusionScorer` (the fitted network, the
modalities, whether the model reconstructs, the task's hooks) for inference and evaluation."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..artefact_meta import read_meta
from ..cache import FeatureCache
from ..data.manifest import Manifest, Record, load_manifest
from ..errors import DataError, SpaceError
from ..loop import training_threads
from ..version import __version__
from .identity import FORMAT, FORMAT_VERSION, check_identity, fusion_identity
from .net import KINDS, FusionNet
from .scoring import FusionScorer, TaskHooks, subset_name  # noqa: F401  (subset_name: re-exported)
from .training import FusionTrainer, TrainSettings, drop_modalities

BALANCE = (None, "none", "ogm", "ogm-ge", "agm")
SCHEDULES = ("constant", "ramp", "anneal")
OPTIMIZERS = ("adamw", "sgd")

log = logging.getLogger(__name__)


class FusionModel:
    """What classifier and regressor share; subclasses define the targets, loss and metrics and
    register under their ``task`` name (the saved JSON says which to load)."""

    task = ""
    registry: dict[str, type[FusionModel]] = {}
    metric = ""  # primary metric (higher is better): epoch selection, evaluate() default
    short = ""  # its name in the history keys (train_<short>, val_<short>, ...)

    def __init__(
        self,
        space: Any,
        modalities: Sequence[str],
        *,
        kind: str = "attention",
        dropout: float = 0.3,
        dropout_schedule: str = "constant",
        reconstruct: bool = True,
        balance: str | None = "ogm-ge",
        alpha: float = 0.5,
        full_weight: float = 0.0,
        hidden: int = 128,
        epochs: int = 60,
        batch_size: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        recon_weight: float = 1.0,
        optimizer: str = "adamw",
        seed: int = 0,
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown fusion kind {kind!r}: use one of {', '.join(KINDS)}")
        if balance not in BALANCE:
            raise ValueError(f"unknown balance {balance!r}: use 'ogm-ge', 'ogm', 'agm' or None")
        if dropout_schedule not in SCHEDULES:
            raise ValueError(f"unknown dropout_schedule {dropout_schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if full_weight < 0:
            raise ValueError(f"full_weight must be >= 0, got {full_weight}")
        mods = list(dict.fromkeys(modalities))
        if not mods:
            raise ValueError("no modalities to fuse")
        for m in mods:
            if m not in space.modalities:
                raise SpaceError(f"modality {m!r} is not bound in this space (bound: {', '.join(space.modalities)})")
        self.space = space
        self.modalities = mods
        self.kind, self.dropout, self.reconstruct = kind, float(dropout), bool(reconstruct)
        self.balance = None if balance == "none" else balance
        self.dropout_schedule, self.full_weight = dropout_schedule, float(full_weight)
        self.alpha, self.hidden, self.epochs, self.batch_size = float(alpha), int(hidden), int(epochs), int(batch_size)
        self.lr, self.weight_decay, self.recon_weight, self.seed = float(lr), float(weight_decay), float(recon_weight), int(seed)
        self.optimizer = optimizer
        self.label_key: str | None = None
        self.history_: list[dict[str, Any]] = []
        self.net: FusionNet | None = None
        #: a merged model's sources and fine-tune (:mod:`.lego`); None for a model trained as it is
        self.merged_from_: dict[str, Any] | None = None

    # -- what a task defines -------------------------------------------------
    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.task:
            FusionModel.registry[cls.task] = cls

    def _n_out(self) -> int:
        raise NotImplementedError

    def _fit_targets(self, records: Sequence[Record]) -> np.ndarray:
        """Targets of the training records in model space; sets the task's state (classes, scale)."""
        raise NotImplementedError

    def _targets(self, records: Sequence[Record]) -> np.ndarray:
        """Targets in model space for fitted state (an unseen class maps to -1)."""
        raise NotImplementedError

    def _usable_for_val(self, records: Sequence[Record]) -> list[Record]:
        return list(records)

    def _loss(self, out: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        raise NotImplementedError

    def _confidence(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-item confidence in (0, 1] for OGM: out (..., n_out), y (...)."""
        raise NotImplementedError

    def _metrics(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Metrics (primary first) of model outputs against model-space targets."""
        raise NotImplementedError

    def _selection(self, conditions: list[tuple[np.ndarray, np.ndarray]]) -> float:
        """Epoch selection score (higher is better) from (outputs, targets) of the all-modality
        condition and each single-modality one: the mean of their primary metric."""
        return float(np.mean([self._metrics(o, y)[self.metric] for o, y in conditions]))

    def _task_json(self) -> dict[str, Any]:
        return {}

    def _load_task_json(self, meta: dict[str, Any]) -> None:
        pass

    @property
    def loss_name(self) -> str:
        return "loss"

    # -- the parts (made when needed, given what they need) -------------------
    def _task(self) -> TaskHooks:
        """The task's hooks as the trainer and the scorer use them (as the task stands now: its classes
        or target scale are set by ``_fit_targets`` or on load)."""
        return TaskHooks(n_out=self._n_out(), metric=self.metric, short=self.short, loss_name=self.loss_name,
                         loss=self._loss, confidence=self._confidence, metrics=self._metrics, selection=self._selection)

    def _trainer(self) -> FusionTrainer:
        return FusionTrainer(TrainSettings.of(self.params()), self.modalities, self.space.dim, self._task())

    def _scorer(self) -> FusionScorer:
        return FusionScorer(self._check_fitted(), self.modalities, self.reconstruct, self._task())

    def _check_fitted(self) -> FusionNet:
        if self.net is None:
            raise RuntimeError(f"this {type(self).__name__} is not fitted: call fit() or {type(self).__name__}.load()")
        return self.net

    def _drop(self, mask: torch.Tensor, g: torch.Generator, p: float | None = None) -> torch.Tensor:
        """Modality dropout (:func:`.training.drop_modalities`) at ``p``, the model's ``dropout`` by default."""
        return drop_modalities(mask, g, self.dropout if p is None else p)

    def _outputs(self, X: np.ndarray, mask: np.ndarray, reconstruct: bool | None = None) -> np.ndarray:
        """The fitted network's outputs (n, n_out) on projected inputs (see :meth:`.scoring.FusionScorer.outputs`)."""
        return self._scorer().outputs(X, mask, reconstruct)

    # -- training -----------------------------------------------------------
    def fit(self, data: Any, label_key: str, *, cache: FeatureCache | str | Path | None = None,
            val: Sequence[Record] | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
            warm_start: bool = False):
        """Train on the ``train`` split (a manifest) or on every given record; select the best
        epoch on ``val`` (the manifest's val split by default, when it has one) by the mean of the
        all-modality score and every single-modality score.  ``on_epoch`` gets each epoch's
        history record (losses, val scores, per-modality contributions and coefficients).

        ``warm_start=True`` continues from the fitted network (fine-tuning, e.g. LegoFuse of a merged
        model): the classes or target scale stay as they are (a training record of a class the model
        does not know is left out, with a warning; one without the label is refused, as by a fresh
        fit), and the network as it was competes as epoch 0 on ``val``."""
        records = self._records(data)
        if isinstance(data, (str, Path, Manifest)):
            train = [r for r in records if r.split == "train"]
            val = val if val is not None else [r for r in records if r.split == "val"]
        else:
            train = records
        train = [r for r in train if any(m in r.values for m in self.modalities)] or train
        if not train:
            raise DataError("no training records")
        if warm_start:
            self._check_fitted()
            if label_key != self.label_key:
                raise DataError(f"this model predicts label {self.label_key!r}, not {label_key!r}: fine-tune it on its own label")
            self._raw_labels(train)  # a record without the label is refused, named, as by a fresh fit
            usable = self._usable_for_val(train)
            if len(usable) < len(train):
                kept = {id(r) for r in usable}
                left = [r for r in train if id(r) not in kept]
                named = ", ".join(f"{r.id!r} ({r.labels[label_key]!r})" for r in left[:10])
                log.warning("fine-tuning leaves out %d training record(s) of a value of label %r the model does not "
                            "know: %s%s", len(left), label_key, named, " ..." if len(left) > 10 else "")
            train = usable
            if not train:
                raise DataError(f"no training record has a known value of label {label_key!r}")
            y = self._targets(train)
        state = dict(vars(self))  # put back if anything below fails: the model is left as it was
        try:
            if not warm_start:
                self.label_key = label_key
                y = self._fit_targets(train)
            X, mask = self.branch_inputs(train, cache)
            Xv = mv = yv = None
            if val:
                val = self._usable_for_val([r for r in val if any(m in r.values for m in self.modalities)])
                if val:
                    Xv, mv = self.branch_inputs(val, cache)
                    yv = self._targets(val)
            trainer = self._trainer()  # after the targets: a classifier's classes decide the output width
            with training_threads(1):  # a tiny network: more threads only spin (see anybind.loop)
                net, history = trainer.train(X, mask, y, Xv, mv, yv, on_epoch,  # a warm start trains a copy
                                             net=copy.deepcopy(self.net) if warm_start else None)
        except BaseException:
            vars(self).clear()
            vars(self).update(state)
            raise
        self.net, self.history_ = net, history
        return self

    # -- inference and evaluation (:class:`.scoring.FusionScorer`) ------------
    def contributions(self, records: Any, *, cache=None) -> dict[str, float | None]:
        """Per-modality Shapley mono-modal score on ``records`` (each scored on the records that
        hold it): how well a modality's share of the fused output alone predicts the target."""
        scorer = self._scorer()
        recs = self._records(records)
        X, mask = self.branch_inputs(recs, cache)
        return scorer.val_scores(X, mask, self._targets(recs))[3]

    def evaluate(
        self,
        records: Any,
        missing: str = "all-subsets",
        *,
        cache=None,
        reconstruct: bool | None = None,
        counts: bool = False,
        metric: str | None = None,
    ):
        """A score per subset of modalities: ``{"image+text": value, ...}``.

        ``missing="all-subsets"``: every non-empty subset (2^M - 1 entries); each is scored on
        the records that hold all of its modalities, with only those modalities given (the
        others are hidden).  ``missing="none"``: one entry, each record with what it has.
        A record with none of the model's modalities is a DataError (filter them out first).
        A subset no record holds gets NaN.  ``metric``: the task's primary metric by default,
        another of its metrics by name, or ``"all"`` for ``{subset: {metric: value}}``.
        ``counts=True`` also returns the record counts.
        """
        scorer = self._scorer()
        recs = self._records(records)
        X, mask = self.branch_inputs(recs, cache)  # a record with none of the modalities: DataError
        res, cnt = scorer.by_subset(X, mask, self._targets(recs), missing, metric or self.metric, reconstruct)
        return (res, cnt) if counts else res

    # -- inputs -------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "modalities": self.modalities, "kind": self.kind, "dropout": self.dropout,
            "dropout_schedule": self.dropout_schedule, "reconstruct": self.reconstruct, "balance": self.balance,
            "alpha": self.alpha, "full_weight": self.full_weight, "hidden": self.hidden, "epochs": self.epochs,
            "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
            "recon_weight": self.recon_weight, "optimizer": self.optimizer, "seed": self.seed,
        }

    def _records(self, data: Any) -> list[Record]:
        if isinstance(data, (str, Path)):
            from ..encoders.kinds import manifest_kinds

            data = load_manifest(data, kinds=manifest_kinds(self.space.encoders), modalities=self.modalities)
        if isinstance(data, Manifest):
            return list(data.records)
        return list(data)

    def branch_inputs(self, records: Sequence[Record], cache: FeatureCache | str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        """What the fusion network's branches take for ``records``: their (n, M, dim) projected embeddings, one per
        fused modality (zeros where absent), and the (n, M) presence mask; features through ``cache``.
        :class:`~anybind.errors.DataError` names the records holding none of the modalities."""
        n, M = len(records), len(self.modalities)
        X = np.zeros((n, M, self.space.dim), np.float32)
        mask = np.zeros((n, M), bool)
        for j, m in enumerate(self.modalities):
            idx = [i for i, r in enumerate(records) if m in r.values]
            if idx:
                feats = self.space.features(m, [records[i].values[m] for i in idx], cache=cache)
                X[idx, j] = self.space.project(m, feats)
                mask[idx, j] = True
        empty = [records[i].id for i in np.flatnonzero(~mask.any(1))]
        if empty:
            raise DataError(
                f"{len(empty)} record(s) have none of the modalities {', '.join(self.modalities)}: "
                f"{', '.join(map(repr, empty[:10]))}{' ...' if len(empty) > 10 else ''}; nothing to predict them from"
            )
        return X, mask

    def _raw_labels(self, records: Sequence[Record]) -> list[Any]:
        key = self.label_key
        missing = [r.id for r in records if key not in r.labels]
        if missing:
            raise DataError(f"{len(missing)} record(s) lack label {key!r}: {', '.join(map(repr, missing[:10]))}")
        return [r.labels[key] for r in records]

    # -- persistence --------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "anybind_version": __version__,
            "task": self.task,
            "params": self.params(),
            "label_key": self.label_key,
            **self._task_json(),
            "space_identity": self.space.identity(),
            "dim": self.space.dim,
            "history": self.history_,
            **({"merged_from": self.merged_from_} if self.merged_from_ is not None else {}),
        }

    def identity(self) -> str:
        """The model's identity (see :func:`fusion_identity`), as saved in ``fusion.json``."""
        return fusion_identity(self.to_json(), self._check_fitted().state_dict())

    def save(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write ``fusion.json`` + ``fusion.safetensors`` as a recoverable swap (:mod:`anybind.io`): only a new or
        empty folder or a saved fusion model (unless ``overwrite=False``) is written to, anything else is refused."""
        from safetensors.torch import save_file

        from ..io import atomic_write_dir

        net = self._check_fitted()

        def write(tmp: Path) -> None:
            sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            meta = self.to_json()
            meta["identity"] = fusion_identity(meta, sd)
            save_file(sd, str(tmp / "fusion.safetensors"), metadata={"format": FORMAT})
            (tmp / "fusion.json").write_text(json.dumps(meta, indent=2, sort_keys=True))

        return atomic_write_dir(Path(path), write, kind="fusion", overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, space: Any):
        """Load a saved model for ``space``; refuses a space other than the one it was trained on,
        (called on a subclass) a model of the other task, and one whose identity recomputed from
        what was loaded is not the one saved (format 3 on; models saved before load unchecked)."""
        from ..io import recover_dir
        from ..space_config import read_weights

        path = Path(path)
        recover_dir(path, "fusion")
        meta_p, w_p = path / "fusion.json", path / "fusion.safetensors"
        meta = read_meta(path, meta_p.name, w_p.name, fmt=FORMAT, version=FORMAT_VERSION, what="fusion model",
                         error=SpaceError, unversioned=0)  # format 1 had no format_version
        task = meta.get("task", "classification")  # format 1 held classifiers only
        impl = FusionModel.registry.get(task)
        if impl is None:
            raise SpaceError(f"{meta_p}: unknown fusion task {task!r}")
        if cls is not FusionModel and not issubclass(impl, cls):
            raise SpaceError(f"{path}: a fusion {task} model, not a {cls.task} one; load it with {impl.__name__}.load")
        trained_on = meta.get("space_identity")
        if not isinstance(trained_on, str) or not trained_on:
            raise SpaceError(f"{meta_p}: no 'space_identity' (the space the model was trained on): damaged file")
        if trained_on != space.identity():
            raise SpaceError(
                f"{path}: trained on space {trained_on}, but the given space is {space.identity()}; "
                "retrain the model on this space"
            )
        try:
            p = dict(meta["params"])
            mods = p.pop("modalities")
            model = impl(space, mods, **p)
            model.label_key, model.history_ = meta["label_key"], meta.get("history", [])
            model.merged_from_ = meta.get("merged_from")
            model._load_task_json(meta)
            with torch.device("meta"):  # the shapes fusion.json implies, checked against the weights before allocating
                net = FusionNet(len(mods), space.dim, model._n_out(), model.kind, model.hidden)
        except (KeyError, TypeError, ValueError, AssertionError) as e:
            raise SpaceError(f"{meta_p}: damaged fusion model ({type(e).__name__}: {' '.join(str(e).split())})") from None
        sd = read_weights(w_p, {k: tuple(v.shape) for k, v in net.state_dict().items()}, meta_p.name)
        check_identity(meta, sd, meta_p, w_p)
        model.net = FusionNet(len(mods), space.dim, model._n_out(), model.kind, model.hidden)
        model.net.load_state_dict(sd)
        model.net.eval()
        return model

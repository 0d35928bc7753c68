"""The public Space: :class:`~anybind.space_core.SpaceCore` plus fitting and growing it.

A space is a directory::

    space.json              encoder specs + identities, projector configs,
                            training config, data fingerprint, metrics, lineage
    projectors.safetensors  every projector's weights and the temperature

:class:`Space` is what every public entry point hands out (``Space.fit``, ``Space.load``,
``anybind.from_pretrained_pair``, ``Index.space``, the CLI).  It adds to the core the methods that hand
the work to the trainers -- :meth:`Space.fit` (:mod:`anybind.fitting`), :meth:`Space.from_features` (the same on
features already encoded), :meth:`Space.federate` (:mod:`anybind.federated`), :meth:`Space.label_bridge`
(:func:`anybind.align.bridge_space`), :meth:`Space.add_modality` and :meth:`Space.replace_encoder`
(:mod:`anybind.progressive`), :meth:`Space.update` (:mod:`anybind.update`) -- so this module sits in the layer
above them and imports them plainly, while they import only the core (no import circle).

A trainer that derives a space from a given one returns the given one's class.  One that builds a fresh space
(``fitting.fit_space``, ``fitting.fit_features``, ``train.train_space``, ``align.fit_training_free``,
``align.bridge_space``, ``federated.federate``) is a building block that returns a ``SpaceCore``; each names the
method here that is its public form, and :meth:`Space.from_core` adopts a core built by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .cache import FeatureCache
from .data.manifest import Manifest
from .encoders.kinds import manifest_kinds  # noqa: F401  (re-exported: it was defined here)
from .align import bridge_space
from .federated import federate
from .fitting import fit_features, fit_options, fit_space
from .manifests import as_manifests, fit_manifests, records_with  # noqa: F401  (re-exported: they were defined here)
from .progressive import add_modality, replace_encoder
from .prompts import (CANDIDATE_TEMPLATES, TemplateChoice, choose_and_set, selection_sets, set_descriptions,
                      set_templates)
from .space_core import SpaceCore
from .update import update_space

__all__ = ["Space", "SpaceCore"]


class Space(SpaceCore):
    """A set of projectors, one per modality, into a shared L2-normalised space.

    Build one with :meth:`fit` (or :meth:`load`), then::

        space.embed("text", ["a barking dog"])            # (1, dim), unit norm
        space.embed("image", ["photos/dog.png"])
        space.similarity("text", texts, "image", paths)

    Parameters are explicit; nothing global is read except the feature cache
    location (``cache=`` or ``$ANYBIND_CACHE``).
    """

    @classmethod
    def from_core(cls, core: SpaceCore) -> "Space":
        """``core`` as a public Space: a space built below this class (a trainer's fresh ``SpaceCore``) takes
        this class, its state taken over as it is (not copied: use the returned space); a ``Space`` is
        returned unchanged."""
        if isinstance(core, cls):
            return core
        if not isinstance(core, SpaceCore):
            raise TypeError(f"expected a SpaceCore, not {type(core).__name__}")
        space = cls.__new__(cls)
        vars(space).update(vars(core))
        return space

    # -- fitting ----------------------------------------------------------
    @classmethod
    def fit(
        cls,
        manifest: str | Path | Manifest | Sequence[str | Path | Manifest],
        modalities: Iterable[str] | None = None,
        *,
        encoders: Mapping[str, str] | None = None,
        method: str = "contrastive",
        cache: FeatureCache | str | Path | None = None,
        strict: bool = False,
        progress: bool = True,
        weights: Sequence[float] | None = None,
        allow_eval_only: bool = False,
        recipe: str | None = None,
        config: Any = None,
        select_data: str | Path | Manifest | Sequence[str | Path | Manifest] | None = None,
        select_split: str | None = "val",
        **options: Any,
    ) -> "Space":
        """Bind modalities from paired records.

        Parameters
        ----------
        manifest: a JSONL manifest path (or a loaded :class:`Manifest`, or a list of them
            for mixed training; ``weights`` then sets each corpus' sampling weight, contrastive only).
        modalities: manifest fields to bind (default: every base modality present; language variants such as
            ``text_fr`` are left out and logged, see :mod:`anybind.data.fields`).
        encoders: modality -> encoder spec (default: each modality's default encoder).
        method: ``"contrastive"`` (trained projectors, see :class:`~anybind.train.TrainConfig`
            for the options), or ``"procrustes"`` / ``"cca"`` (training-free, the subspace width chosen
            on the val split; options ``dims``, ``dim``, ``anchor``, ``ridge``, see :mod:`anybind.align`).
        config: the options as one object, e.g. ``TrainConfig(epochs=50, loss="siglip")`` (or a mapping);
            ``**options`` override it.  The fields the recipe chooses default to ``AUTO`` (the recipe decides);
            any value given there, its plain default or None included (``TrainConfig(start_guard=False)``,
            ``TrainConfig(wise=None)``, ``TrainConfig(lock=None)``), is chosen and wins, as a keyword does.
        cache: feature cache (object or folder); default ``$ANYBIND_CACHE`` or ``~/.cache/anybind``.
        strict: make any bad record fatal instead of skipping it.
        allow_eval_only: train even on a corpus whose ``corpus.json`` says ``"eval_only": true``
            (Fashion-MNIST); refused by default because it would leak the benchmark.
        recipe: ``"auto"`` fills every choice left open (encoders, ``lock``, ``init``) with the best recipe
            the project knows for the modalities at hand (text bound: locked text space, ridge start, label
            bridge for default images; see :mod:`anybind.recipe`); ``"plain"``: the bare defaults.  None (the
            default): ``"auto"`` for trained projectors; procrustes / cca follow no recipe and refuse one given.
        select_data: manifests (another corpus) whose ``select_split`` records (None: all but test) replace the val split
            wherever a choice is made on val (best epoch, WiSE-FT alpha, ridge shrinkage): selection then
            measures transfer rather than in-domain fit (:func:`anybind.featureset.selection_set`).  Without it, a
            trained fit whose own val split holds fewer than :data:`anybind.fitting.VAL_WARN` pairs (or none) warns
            in one line and records it in the lineage (``val_warning``; :func:`anybind.fitting.check_val_size`).
        """
        return cls.from_core(fit_space(
            manifest, modalities, encoders=encoders, method=method, cache=cache, strict=strict, progress=progress,
            weights=weights, allow_eval_only=allow_eval_only, recipe=recipe, config=config,
            select_data=select_data, select_split=select_split, **options))

    @classmethod
    def from_features(
        cls,
        features: Any,
        config: Any = None,
        *,
        method: str = "contrastive",
        progress: bool = True,
        select: Any = None,
        **options: Any,
    ) -> "Space":
        """A Space fitted on features already encoded: ``features``, a :class:`~anybind.featureset.FeatureSet`
        (``FeatureSet.from_manifests(manifests, specs, cache)``), e.g. to compare training options on one set
        of features without encoding again.  ``method="contrastive"``: trained projectors, ``config`` a
        :class:`~anybind.train.TrainConfig` or its fields (``**options`` override it); ``"procrustes"`` /
        ``"cca"``: training-free (``dims``, ``dim``, ``anchor``, ``ridge``, ``seed``).  ``select``
        (:func:`~anybind.featureset.selection_set`): the records every choice on val is made on.  No recipe is
        applied and no lineage is recorded (:meth:`fit` does both)."""
        return cls.from_core(fit_features(features, method, fit_options(config, options, method),
                                          progress=progress, select=select))

    @classmethod
    def federate(
        cls,
        clients: Sequence[str | Path | Manifest],
        public: str | Path | Manifest | Sequence[str | Path | Manifest],
        *,
        encoders: Mapping[str, str] | None = None,
        modalities: Sequence[str] | None = None,
        cache: FeatureCache | str | Path | None = None,
        strict: bool = False,
        progress: bool = False,
        on_message: Callable[..., None] | None = None,
        runner: Callable[..., Any] | None = None,
        **config: Any,
    ) -> "Space":
        """A Space bound by ``len(clients)`` clients (one manifest each, whose pairs never leave them) and a
        server holding the ``public`` pairs: FedAvg or CreamFL (``method=``).  See
        :func:`anybind.federated.federate` for the parameters and :class:`~anybind.federated.FederatedConfig` for
        ``**config``; ``anybind.scale.federated_ray.federate_on_ray`` runs each client as a Ray actor.

        Example::

            space = Space.federate(["a.jsonl", "b.jsonl"], "public.jsonl", method="fedavg", rounds=20)
        """
        return cls.from_core(federate(clients, public, encoders=encoders, modalities=modalities, cache=cache,
                                      strict=strict, progress=progress, on_message=on_message, runner=runner,
                                      **config))

    @classmethod
    def label_bridge(cls, image_spec: str = "image:efficientnet-lite0+bridge", text_spec: str | None = None) -> "Space":
        """The training-free label-bridge Space (no paired data): an image is its class-name mixture embedded
        by the text encoder, a text is its own embedding; the baseline every trained image<->text space should
        beat (:func:`anybind.align.bridge_space`; ``text_spec``: the bridge's own text encoder unless given)."""
        return cls.from_core(bridge_space(image_spec, text_spec))

    # -- zero-shot prompts (see anybind.prompts) ---------------------------
    def set_templates(self, templates: Sequence[str]) -> "Space":
        """Store ``templates`` (each with ``{}``) as this space's zero-shot prompts, in place (saved in
        ``space.json``; used wherever a caller gives none); the lineage records it.  Returns this space."""
        set_templates(self, templates, record={"how": "given"})
        return self

    def set_descriptions(self, descriptions: Mapping[str, Sequence[str]]) -> "Space":
        """Store class descriptions (class name -> sentences; ``{}`` removes them) with this space, in place (saved
        in ``space.json``): zero-shot then averages a described class's sentences with its filled templates.
        :func:`anybind.caption.describe.describe_and_set` writes them with the frozen language model.  Returns
        this space."""
        set_descriptions(self, descriptions, record={"how": "given"})
        return self

    def choose_templates(
        self,
        data: str | Path | Manifest | Sequence[str | Path | Manifest],
        label: str | Sequence[str],
        *,
        split: str = "val",
        candidates: Sequence[str] | None = None,
        modality: str = "image",
        max_templates: int = 8,
        cache: FeatureCache | str | Path | None = None,
    ) -> TemplateChoice:
        """Choose this space's zero-shot prompts from ``candidates`` (default
        :data:`~anybind.prompts.CANDIDATE_TEMPLATES`) by greedy forward selection on the ``split`` records of
        ``data`` (never ``test``: val of the training corpus or other labelled corpora) classified by their
        ``label`` (one key, or one per manifest), and store them with the space (in place; the lineage records
        the sets, the candidates and the scores) unless they do not beat the space's current templates on those
        records: then the space keeps its own (``choice.kept``).  Returns the :class:`~anybind.prompts.TemplateChoice`.

        Example::

            space.choose_templates(["tuxpaint.jsonl", "emoji.jsonl"], ["category", "subgroup"])
        """
        mans = as_manifests(data, [modality], self.encoders, False, False)
        sets = selection_sets(mans, label, split=split, modality=modality)
        return choose_and_set(self, sets, CANDIDATE_TEMPLATES if candidates is None else candidates,
                              max_templates=max_templates, cache=cache)

    # -- progressive binding (see anybind.progressive) ---------------------
    def add_modality(
        self,
        name: str,
        encoder: str,
        data: str | Path | Manifest | Sequence[str | Path | Manifest],
        anchors: Sequence[str] | None = None,
        **kw: Any,
    ) -> "Space":
        """A new Space with modality ``name`` bound through its pairs with already-bound ``anchors``.

        Only the new projector is trained, against the frozen embeddings of the anchor
        items; this space is not modified and every existing embedding of the returned
        space is bit-identical to this one's.  ``**kw``: ``cache``, ``strict``,
        ``progress`` and :class:`~anybind.progressive.BindConfig` fields.

        Example::

            space2 = space.add_modality("audio", "audio:aisfx", "sounds.jsonl", anchors=["text"])
        """
        return self.from_core(add_modality(self, name, encoder, data, anchors, **kw))

    def replace_encoder(
        self,
        name: str,
        encoder: str,
        data: str | Path | Manifest | Sequence[str | Path | Manifest],
        anchors: Sequence[str] | None = None,
        **kw: Any,
    ) -> "Space":
        """A new Space where ``name`` is encoded by ``encoder``, its projector trained to land where this space put those items.

        See :func:`anybind.progressive.replace_encoder`; the other modalities stay bit-identical.
        """
        return self.from_core(replace_encoder(self, name, encoder, data, anchors, **kw))

    def update(self, data: str | Path | Manifest | Sequence[str | Path | Manifest], **kw: Any) -> "Space":
        """A new Space fine-tuned on the new pairs in ``data`` without forgetting (Mod-X distillation); see
        :func:`anybind.update.update_space` for ``**kw`` (``method``, ``replay``, ``distill``, ``cache``...)."""
        return self.from_core(update_space(self, data, **kw))

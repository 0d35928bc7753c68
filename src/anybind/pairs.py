"""Pre-aligned pairs as a starting space: an existing text/image pair (CLIP) imported as an anybind space.

``from_pretrained_pair("clip", "<HF CLIP repo or folder>")`` (``anybind fit --from-pretrained clip=...``)
builds a :class:`~anybind.space.Space` without training anything:

* ``text`` is encoded by ``text:hf/<source>`` and ``image`` by ``image:hf/<source>``: the ``transformers``
  encoders whose ``pool=auto`` is the pair's own projection head (``get_text_features`` /
  ``get_image_features``), so the space holds the pair's projected embeddings;
* both projectors are the identity (the pair's embedding space is the shared space; ``Space.embed``
  L2-normalises, as CLIP does before its logits);
* the logit scale is the pair's own (``logit_scale``; its ``exp()`` is CLIP's similarity scale);
* the pair's zero-shot prompts are stored with the space (``info["templates"]``, CLIP's ensemble by default),
  so zero-shot classification with the space uses them unless others are given.

Then ``anybind bind SPACE --add audio=...`` binds new modalities to it as to any space: only the new projector
is trained, against the frozen text (or image) embeddings, which gives audio<->image through CLIP's text
(ImageBind's recipe).

An OpenCLIP model is a source too: ``open_clip:<arch>[@<tag or checkpoint file>]``, ``open_clip:hf-hub:org/repo``
or ``open_clip:local-dir:<folder>`` (what ``image:open_clip/...`` takes): ``text:open_clip/...`` (OpenCLIP's
tokenizer and ``encode_text``) and ``image:open_clip/...`` (its preprocessing and ``encode_image``), the model's
``logit_scale``.  Where open_clip cannot be imported, the error says so and what installs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from .data.templates import CLIP_TEMPLATES, check_templates  # noqa: F401  (CLIP_TEMPLATES: public here too)
from .encoders.registry import absolute_spec, get_encoder
from .errors import SpaceError
from .projectors import Projector, ProjectorConfig
from .space import Space

log = logging.getLogger(__name__)

#: the kinds of pair ``--from-pretrained KIND=SOURCE`` imports
PAIR_KINDS = ("clip",)



def parse_pair(value: str) -> tuple[str, str]:
    """``"clip=<source>"`` -> ``("clip", source)``; anything else: :class:`SpaceError` saying the form."""
    kind, eq, source = (x.strip() for x in value.partition("="))
    if not eq or not source or kind not in PAIR_KINDS:
        raise SpaceError(
            f"--from-pretrained {value!r}: expected KIND=SOURCE with KIND one of {', '.join(PAIR_KINDS)}, "
            "e.g. clip=openai/clip-vit-base-patch32 (a Hugging Face CLIP repo or a saved folder) or "
            "clip=open_clip:ViT-B-32@laion2b_s34b_b79k (an OpenCLIP model)"
        )
    return kind, source


def _open_clip_specs(rest: str) -> dict[str, str]:
    """``open_clip:<rest>`` -> the two towers' specs, ``text:open_clip/<rest>`` and ``image:open_clip/<rest>``, with a
    relative ``local-dir:`` folder or checkpoint file made absolute by :func:`absolute_spec` (the saved space finds it
    from anywhere)."""
    return {m: absolute_spec(f"{m}:open_clip/{rest}") for m in ("text", "image")}


def _identity_projector(dim: int) -> Projector:
    proj = Projector(ProjectorConfig(in_dim=dim, out_dim=dim, kind="identity", hidden=0, dropout=0.0,
                                     input_dropout=0.0, standardize=False))
    with torch.no_grad():  # unused by an identity projector: zeros, so two imports of a pair are identical
        proj.linear.weight.zero_()
        proj.linear.bias.zero_()
    return proj


def from_pretrained_pair(
    kind: str,
    source: str,
    *,
    templates: Sequence[str] | None = None,
) -> Space:
    """An aligned text/image pair as a space (see the module docstring).

    ``kind``: ``"clip"``; ``source``: a Hugging Face repo id (from the hub, or its cache offline) or a saved
    model folder, optionally with ``hf/`` options both encoders get
    (``openai/clip-vit-base-patch32@revision=<commit>``); ``templates``: the prompts stored with the space
    (default :data:`CLIP_TEMPLATES`).
    Errors (no projection heads, no logit scale, towers of different widths) are one
    :class:`~anybind.errors.AnybindError` line naming the source.
    """
    if kind not in PAIR_KINDS:
        raise SpaceError(f"unknown pair kind {kind!r} (known: {', '.join(PAIR_KINDS)})")
    templates = check_templates(CLIP_TEMPLATES if templates is None else templates)
    open_clip = source.startswith("open_clip:")
    # a relative model folder made absolute, so that the saved space finds it from any working directory
    specs = (_open_clip_specs(source[len("open_clip:"):]) if open_clip
             else {m: absolute_spec(f"{m}:hf/{source}") for m in ("text", "image")})
    encoders, identities = {}, {}
    for m, head in (("text", "get_text_features"), ("image", "get_image_features")):
        encoders[m] = get_encoder(specs[m])
        identities[m] = encoders[m].identity
        # an OpenCLIP model's towers are its encode_text / encode_image: its projected embeddings
        if not open_clip and f"pool=head:{head}" not in identities[m]:
            raise SpaceError(f"pair {source!r}: the model has no {m} projection head ({head}): not an "
                             "aligned text/image pair such as CLIP")
    dims = {m: e.dim for m, e in encoders.items()}
    if dims["text"] != dims["image"]:
        raise SpaceError(f"pair {source!r}: text embeddings are {dims['text']}-d, image ones "
                         f"{dims['image']}-d")
    scale = getattr(encoders["text"].model(), "logit_scale", None)
    if scale is None:
        raise SpaceError(f"pair {source!r}: the model has no logit_scale: not a contrastive pair like CLIP")
    logit_scale = float(torch.as_tensor(scale).detach().float().reshape(-1)[0])
    pair: dict[str, Any] = {"kind": kind, "source": source, "logit_scale": logit_scale}
    bias = getattr(encoders["text"].model(), "logit_bias", None)  # SigLIP's sigmoid scores
    if bias is not None:
        pair["logit_bias"] = float(torch.as_tensor(bias).detach().float().reshape(-1)[0])
    from .version import __version__

    info = {
        "templates": templates,
        "pretrained_pair": pair,
        "lineage": [{
            "event": "from_pretrained", "kind": kind, "source": source, "modalities": sorted(specs),
            "encoders": specs, "identities": identities, "logit_scale": logit_scale,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "anybind": __version__,
        }],
    }
    space = Space(specs, {m: _identity_projector(d) for m, d in dims.items()}, logit_scale,
                  identities=identities, config={"method": "pretrained", "pair": kind}, info=info)
    log.info("imported the %s pair %s as a %d-d space", kind, source, space.dim)
    return space


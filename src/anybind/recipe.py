"""What ``Space.fit`` binds with when the user leaves a choice open: the best recipe the project knows.

Measured on Tux Paint (``anybind bench --task tuxpaint-ablation`` and ``--task defaults``, chosen on the val
split): with text among the bound modalities, the text encoder's own space *is* the shared space (``lock="text"``,
an identity projector, so the space has the text encoder's width), every other projector starts at a ridge regression onto it (``init="ridge"``; early
stopping keeps that start when fine-tuning does not raise the val score), and images carry their label bridge
(``image:efficientnet-lite0+bridge``: the image model's own ImageNet head mapped into the text space) when the
image and text encoders are the defaults the bridge is built from.

``recipe="auto"`` (the default) applies each rule only where the user chose nothing: an explicit encoder,
``lock``, ``init`` or ``dim`` (a projected width rules out locking) always wins.  ``recipe="plain"`` is the bare default (random init, nothing locked, plain
encoders), kept for comparisons.  The choices made are returned so they are logged and saved in the space.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .encoders.registry import default_spec

log = logging.getLogger(__name__)

RECIPES = ("auto", "plain")

#: the label bridge is built from these two encoders (see encoders/bridge.py)
BRIDGE_IMAGE, BRIDGE_TEXT = "image:efficientnet-lite0", "text:minilm"


def resolve_recipe(
    recipe: str,
    modalities: Sequence[str],
    encoders: Mapping[str, str] | None,
    config: Mapping[str, Any],
    method: str = "contrastive",
) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """``(encoder specs, training config, choices made)`` for binding ``modalities`` with ``recipe``."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    given = dict(encoders or {})
    specs = {m: given.get(m) or default_spec(m) for m in modalities}
    cfg = dict(config)
    chosen: dict[str, Any] = {}
    loss = str(cfg.get("loss", "infonce"))
    if recipe == "plain" or method != "contrastive" or loss.startswith("symile"):
        return specs, cfg, chosen
    if "text" in modalities:
        # an explicit width (dim=...) asks for a projected space: the locked text space has the text encoder's
        if "lock" not in cfg and "dim" not in cfg:
            cfg["lock"] = chosen["lock"] = "text"
        if cfg.get("init") is None and cfg.get("lock"):
            cfg["init"] = chosen["init"] = "ridge"
        if "image" in modalities and "image" not in given and specs["text"] == BRIDGE_TEXT:
            specs["image"] = chosen["encoders.image"] = BRIDGE_IMAGE + "+bridge"
    if cfg.get("init") is None:
        cfg.pop("init", None)
    if chosen:
        log.info("recipe auto: %s (explicit choices override these)", ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return specs, cfg, chosen

"""How a Hugging Face encoder turns a model's output into one vector per item: the pooling rules of
``text:hf/``, ``image:hf/``, ``audio:hf/`` (:mod:`anybind.encoders.hf`) and ``video:hf/``
(:mod:`anybind.encoders.hf_video`), kept in one place so that each rule can be read and changed alone.

Each function returns ``(features, pool_used)``; ``pool_used`` goes into the encoder's identity.  ``err`` turns a
message into the encoder's one-line error (naming its spec)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .hf_spec import accepted

#: the model's own projection head per modality (CLIP / SigLIP / CLAP) and the tower it sits on
HEADS = {"text": "get_text_features", "image": "get_image_features", "audio": "get_audio_features"}
TOWERS = {"text": "text_model", "image": "vision_model", "audio": "audio_model"}

Err = Callable[[str], Exception]


def hidden_state(out: Any, layer: int, err: Err) -> Any:
    """The model output's last hidden state (``layer=-1``) or ``hidden_states[layer]``, range-checked."""
    if layer == -1:
        return out.last_hidden_state
    hs = out.hidden_states
    if not -len(hs) <= layer < len(hs):
        raise err(f"layer={layer} out of range (the model has {len(hs)} hidden states)")
    return hs[layer]


def pool_features(model: Any, inputs: dict, modality: str, pool: str, layer: int, err: Err) -> tuple[Any, str]:
    """Text, image or audio: the projection head (``pool=auto``, ``layer=-1``, when the model has one for the
    modality), else the pooler output, the spatial mean (convolutional), CLS (``pool=cls``, or ``auto`` for
    images) or the mean over valid tokens (text: the attention mask) or over every frame / patch."""
    head = getattr(model, HEADS[modality], None)
    if head is not None and pool == "auto" and layer == -1:
        out = head(**accepted(head, inputs))
        return (out if hasattr(out, "shape") else out.pooler_output), "head:" + HEADS[modality]
    net = getattr(model, TOWERS[modality], None) if head is not None else None
    net = net if net is not None else model
    out = net(**accepted(net.forward, inputs), output_hidden_states=layer != -1, return_dict=True)
    if pool == "pooler":
        if getattr(out, "pooler_output", None) is None:
            raise err("the model has no pooler_output; use pool=cls or pool=mean")
        return out.pooler_output.reshape(out.pooler_output.shape[0], -1), "pooler"
    h = hidden_state(out, layer, err)
    if h.ndim == 4:  # (B, C, H, W) of a convolutional model
        if pool == "cls":
            raise err("a convolutional model has no CLS token; use pool=mean")
        return h.mean(dim=(2, 3)), "mean-spatial"
    if pool == "cls" or (pool == "auto" and modality == "image"):
        return h[:, 0], "cls"
    mask = inputs.get("attention_mask") if modality == "text" else None
    if mask is None or mask.shape[:2] != h.shape[:2]:
        return h.mean(dim=1), "mean"
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0), "mean"


def pool_video(model: Any, inputs: dict, pool: str, layer: int, err: Err) -> tuple[Any, str]:
    """Video: the model's ``get_video_features`` (``pool=auto``, ``layer=-1``), else its pooler output (``pooler``,
    or ``auto`` when it has one), CLS (``cls``) or the mean over every token."""
    head = getattr(model, "get_video_features", None)
    if head is not None and pool == "auto" and layer == -1:
        out = head(**accepted(head, inputs))
        return (out if hasattr(out, "shape") else out.pooler_output), "head:get_video_features"
    out = model(**accepted(model.forward, inputs), output_hidden_states=layer != -1, return_dict=True)
    pooler = getattr(out, "pooler_output", None)
    if pool == "pooler" or (pool == "auto" and pooler is not None and layer == -1):
        if pooler is None:
            raise err("the model has no pooler_output; use pool=cls or pool=mean")
        return pooler.reshape(pooler.shape[0], -1), "pooler"
    h = hidden_state(out, layer, err)
    if pool == "cls":
        return h[:, 0], "cls"
    return h.mean(dim=1), "mean"

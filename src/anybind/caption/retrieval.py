"""Retrieval-augmented captioning: the k nearest training captions go into the frozen LM's prompt.

After SmallCap (Ramos et al., "SmallCap: Lightweight Image Captioning Prompted with Retrieval Augmentation",
CVPR 2023) and training-free "retrieve then prompt" captioning: for a query embedding the ``k`` nearest
captions of the captioner's memory (the distinct training captions, :mod:`anybind.caption.memory`) are put
into the LM's prompt, after the mapper's soft prefix (when one is used)::

    <bos> [prefix tokens] Similar images show:\\n c1\\n c2\\n c3\\n This one shows:\\n <caption>

The prompt names what the query is: an image's says "Similar images show:", a sound's "Similar sounds are of:",
a spoken caption's "Similar recordings say:" (:func:`prompt_for`, :data:`PROMPTS`).

Each caption starts a line, so its tokens are the same as without a prompt (val NLLs per caption token compare
across ``k``), and the line break that ends it is the decoding's stop rule.

Training is text-only: a training caption's neighbours are retrieved from its (noised) text embedding among the
*other* memory captions (the caption itself, i.e. its duplicate in the memory up to case, punctuation and white
space, is excluded), so the model
learns to compose a caption from similar ones, not to copy it.  At test time the query is the image, sound or
speech embedding, across the modality gap, and nothing is excluded.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data.manifest import base_modality
from .lm import CaptionError, FrozenLM

#: what caption_key drops: anything neither a word character nor white space
_PUNCT = re.compile(r"[^\w\s]+")
#: the prompt, ``{captions}`` being the retrieved captions one per line; saved with each captioner.  Training is
#: text-only and uses it as it is; at decoding time its words name what the query is (:func:`prompt_for`)
PROMPT = "Similar images show:\n{captions}\nThis one shows:\n"
#: the default prompt's wording for a query of each built-in modality (by its base name: ``speech_de`` is speech);
#: a sound is not an image: "Similar images show:" would tell the LM the retrieved captions describe pictures
PROMPTS: dict[str, str] = {
    "image": PROMPT,
    "video": "Similar videos show:\n{captions}\nThis one shows:\n",
    "audio": "Similar sounds are of:\n{captions}\nThis one is of:\n",
    "speech": "Similar recordings say:\n{captions}\nThis one says:\n",
    "text": "Similar texts say:\n{captions}\nThis one says:\n",
}
#: the default prompt's wording for any other modality (a user's own: ``sketch``, ``timeseries``, ...)
OTHER_PROMPT = "Similar items show:\n{captions}\nThis one shows:\n"
#: a retrieved caption longer than this (characters) is cut in the prompt: the prompt stays bounded
MAX_PROMPT_CAPTION_CHARS = 256
#: lines without a caption (blank, or the prompt's words alone) decoding goes past before it gives up
MAX_SKIPPED_LINES = 2
#: the most retrieved captions a prompt holds (SmallCap uses 4): a saved captioner's k is refused beyond it
MAX_RETRIEVAL_K = 16


def caption_key(text: str) -> str:
    """The form in which two captions are the same (a duplicate): lower case, punctuation dropped, white space
    collapsed, so that "A bear." and "a  bear" are one caption (one memory row, and a training caption never
    retrieves its near-duplicate).  A caption of punctuation alone keeps its own marks."""
    low = " ".join(str(text).split()).lower()
    words = " ".join(_PUNCT.sub(" ", low).split())
    return words or low


def check_k(k: int, memory_captions: Sequence[str] | None) -> int:
    """``k`` if a memory of that many captions is there, else a one-line :class:`CaptionError`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise CaptionError(f"retrieval_k {k!r}: give a whole number >= 0")
    if k > MAX_RETRIEVAL_K:
        raise CaptionError(f"retrieval_k {k}: give at most {MAX_RETRIEVAL_K} (the prompt's bound)")
    if k and (memory_captions is None or len(memory_captions) < k + 1):
        have = 0 if memory_captions is None else len(memory_captions)
        raise CaptionError(f"retrieval_k {k} needs a memory of more than {k} captions, and this captioner holds {have} "
                           "(train it again with this anybind, or give a smaller k)")
    return int(k)


def check_prompt(template: Any) -> str:
    """``template`` if it is a prompt with one or more ``{captions}`` fields and no other (a saved captioner's is
    untrusted: no positional, attribute or index fields), else a one-line :class:`CaptionError`."""
    if not isinstance(template, str):
        raise CaptionError(f"retrieval prompt {template!r}: not a string")
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise CaptionError(f"retrieval prompt {template!r}: {e}") from None
    if not fields or any(f != "captions" or spec or conv for f, spec, conv in fields):
        raise CaptionError(f"retrieval prompt {template!r}: give a text whose only field is {{captions}}")
    return template


def neighbours(Q: np.ndarray, memory: np.ndarray, k: int, exclude: np.ndarray | None = None,
               chunk: int = 1024) -> np.ndarray:
    """Row numbers (n, k) of the ``k`` memory rows nearest each query (cosine, most similar first; ties broken by the
    lower row, so the result is deterministic).  ``exclude``: one memory row per query never to return (-1: none)."""
    Q = np.asarray(Q, dtype=np.float32)
    M = np.asarray(memory, dtype=np.float32)
    if k < 1:
        return np.zeros((len(Q), 0), dtype=np.int64)
    if k + (exclude is not None) > len(M):
        raise CaptionError(f"{k} neighbours asked of a memory of {len(M)} captions")
    out = np.empty((len(Q), k), dtype=np.int64)
    for i in range(0, len(Q), chunk):
        S = Q[i : i + chunk] @ M.T
        if exclude is not None:
            ex = np.asarray(exclude[i : i + chunk])
            rows = np.nonzero(ex >= 0)[0]
            S[rows, ex[rows]] = -np.inf
        out[i : i + chunk] = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return out


def self_rows(captions: Sequence[str], memory_captions: Sequence[str]) -> np.ndarray:
    """For each caption, the memory row of its exact duplicate (:func:`caption_key`), -1 when the memory lacks it."""
    at = {caption_key(c): i for i, c in enumerate(memory_captions)}
    return np.array([at.get(caption_key(c), -1) for c in captions], dtype=np.int64)


def prompt_line(caption: str, limit: int = MAX_PROMPT_CAPTION_CHARS) -> str:
    """A retrieved caption as one prompt line: white space collapsed, cut to its first ``limit`` characters (at a
    word's end where it has one), so that a long training caption cannot grow the prompt without bound."""
    line = " ".join(str(caption).split())
    if len(line) <= limit:
        return line
    cut = line[:limit]
    return cut[: cut.rfind(" ")] if line[limit] != " " and " " in cut else cut


def prompt_for(template: str, modality: str | None) -> str:
    """The prompt a query of ``modality`` is decoded with: for the default :data:`PROMPT`, its wording for that
    modality (:data:`PROMPTS`, by base name; :data:`OTHER_PROMPT` for a modality not built in), so that the prompt
    names what was searched (sounds, recordings, ...), not images; a captioner's own other template, or no
    ``modality``, keeps ``template`` as it is."""
    if modality is None or template != PROMPT:
        return template
    return PROMPTS.get(base_modality(str(modality)), OTHER_PROMPT)


def prompt_text(captions: Sequence[str], template: str = PROMPT) -> str:
    return template.format(captions="\n".join(prompt_line(c) for c in captions))


def prompt_markers(template: str = PROMPT) -> list[str]:
    """The prompt's own words: each line of the template outside its ``{captions}`` field, white space collapsed
    ("Similar images show:", "This one shows:"), longest first; a line without a run of three word characters
    (a lone ":" or "-") is no marker."""
    lines = template.replace("{captions}", "\n").split("\n")
    found = {" ".join(x.split()) for x in lines if re.search(r"\w{3}", x)}
    return sorted(found, key=lambda m: (-len(m), m))


def _marker_pattern(markers: Sequence[str]) -> re.Pattern | None:
    if not markers:
        return None
    alts = [r"\s+".join(re.escape(w) for w in m.split()) for m in markers]
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + ")", re.IGNORECASE)


def caption_text(generated: str, template: str = PROMPT) -> str:
    """The caption in what the LM generated after the prompt: its first line that holds one, white space collapsed,
    without the prompt's own words (:func:`prompt_markers`), which an LM going on with the prompt's pattern writes.
    Leading markers are dropped ("This one shows: A bear." -> "A bear."), the caption ends where one starts
    ("A bear. This one shows: a cat." -> "A bear."), and a line of markers alone, or a blank one, holds no caption
    (the next line is read); case and spacing are ignored.  Empty when no line holds a caption."""
    pat = _marker_pattern(prompt_markers(template))
    for raw in str(generated).split("\n"):
        line = " ".join(raw.split())
        if pat is not None:
            while (m := pat.match(line)) is not None:
                line = line[m.end() :].lstrip()
            m = pat.search(line)
            line = line[: m.start()].rstrip() if m else line
        if line:
            return line
    return ""


def generate_captions(lm: FrozenLM, leads: list[torch.Tensor], template: str, max_tokens: int,
                      **kw: Any) -> list[str]:
    """One caption per lead (its input embeddings, :func:`lead_embeddings`), generated until the stop rule: the end
    of text, or a line break after a line that holds a caption (:func:`caption_text`).  A line that holds none
    (blank, or the prompt's words alone: "This one shows:") does not end it: decoding goes on from it, at most
    :data:`MAX_SKIPPED_LINES` times, within ``max_tokens`` tokens in all.  ``**kw``: ``generate``'s decoding options."""
    stops = set(lm.stop_ids())
    leads = list(leads)
    texts, left = [""] * len(leads), [int(max_tokens)] * len(leads)
    todo = list(range(len(leads)))
    for _ in range(MAX_SKIPPED_LINES + 1):
        if not todo:
            break
        lead, mask = left_padded(lm, [leads[i] for i in todo])
        ids = lm.model.generate(inputs_embeds=lead, attention_mask=mask, max_new_tokens=max(left[i] for i in todo),
                                eos_token_id=sorted(stops), pad_token_id=lm.eos_id, **kw)
        again = []
        for i, row in zip(todo, ids.tolist()):
            row = row[: left[i]]
            end = next((j for j, t in enumerate(row) if t in stops), None)
            line = row if end is None else row[: end + 1]
            texts[i] += lm.tokenizer.decode(line, skip_special_tokens=True)
            left[i] -= len(line)
            if end is not None and row[end] != lm.eos_id and left[i] > 0 and not caption_text(texts[i], template):
                leads[i] = torch.cat([leads[i], lm.embed_tokens(torch.tensor(line))])
                again.append(i)
        todo = again
    return [caption_text(t, template) for t in texts]


def prompt_ids(lm: FrozenLM, rows: np.ndarray, memory_captions: Sequence[str], template: str = PROMPT) -> list[list[int]]:
    """The tokens of each query's prompt (its neighbours ``rows``); empty lists when ``rows`` has no column."""
    if rows.shape[1] == 0:
        return [[] for _ in range(len(rows))]
    texts = [prompt_text([memory_captions[j] for j in r], template) for r in rows]
    return [list(ids) for ids in lm.tokenizer(texts, add_special_tokens=False)["input_ids"]]


def lead_embeddings(lm: FrozenLM, prefix: torch.Tensor | None, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Each item's input before its caption, as embeddings (length, hidden): <bos>, the soft prefix, the prompt."""
    n = len(prompts) if prefix is None else len(prefix)
    if prefix is None and not any(prompts):
        raise CaptionError("nothing to decode from: no prefix and no retrieved captions (give retrieval_k > 0)")
    bos = lm.tokenizer.bos_token_id
    out = []
    for i in range(n):
        parts = []
        if bos is not None:
            parts.append(lm.embed_tokens(torch.tensor([int(bos)])))
        if prefix is not None:
            parts.append(prefix[i])
        if prompts[i]:
            parts.append(lm.embed_tokens(torch.tensor(prompts[i])))
        out.append(torch.cat(parts, dim=0))
    return out


def left_padded(lm: FrozenLM, leads: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The leads stacked (n, L, h), padded on the left, and their attention mask (n, L)."""
    L = max(len(x) for x in leads)
    pad = lm.embed_tokens(torch.tensor([lm.eos_id]))[0]
    embeds = pad.expand(len(leads), L, pad.shape[-1]).clone()
    mask = torch.zeros(len(leads), L, dtype=torch.long)
    for i, x in enumerate(leads):
        embeds[i, L - len(x) :] = x
        mask[i, L - len(x) :] = 1
    return embeds, mask

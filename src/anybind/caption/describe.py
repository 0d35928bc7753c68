"""Class descriptions written by the frozen language model, for zero-shot prompts (issue 16).

CuPL (Pratt et al. 2023, "What does a platypus look like?"): ask a language model what each class looks like
and put its answers beside the prompt templates; a class's vector is then the mean of its filled templates and
its descriptions (:func:`anybind.evaluate.class_embeddings`).  No labelled data is read: only the class names.

:func:`describe_classes` asks the LM (SmolLM2-135M-Instruct by default, :mod:`anybind.caption.lm`) each of a
few questions per class name, greedily (seeded; the same call gives the same text), and keeps the answers that
pass :func:`clean_description` (one complete sentence or two, mentions the class, not empty, not repetitive, not
a refusal, not too long, not a repeat of another answer for the class); what it dropped is counted by reason.
:func:`describe_and_set` stores them with a space (:func:`anybind.prompts.set_descriptions`: ``space.json``'s
``info["descriptions"]``, with a lineage entry), so every zero-shot path uses them.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CaptionError
from .lm import SMOLLM2, FrozenLM, load_lm

if TYPE_CHECKING:
    from ..space_core import SpaceCore

log = logging.getLogger(__name__)

#: the questions asked per class (``{}``: the class name); one greedy answer each
QUESTIONS = (
    "Describe what a {} looks like in one sentence.",
    "What does a {} look like? Answer in one sentence.",
    "How can you recognise a {} in a picture? Answer in one sentence.",
)
#: at most this many words in a kept description (longer ones are cut to their first sentences, else dropped)
MAX_WORDS = 40
#: at least this many words in a kept description
MIN_WORDS = 4
#: the longest answer generated, in tokens (a cut-off last sentence is dropped by :func:`clean_description`)
MAX_NEW_TOKENS = 48
_REFUSAL = re.compile(r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|as an ai|i don'?t know|i do not know)\b", re.I)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
#: what :func:`clean_description` drops, by reason
REASONS = ("empty", "unfinished", "too long", "too short", "refusal", "off topic", "repetitive", "repeated")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _stem(w: str) -> str:
    return w[:-2] if w.endswith("es") and len(w) > 4 else w[:-1] if w.endswith("s") and len(w) > 3 else w


def _mentions(text: str, name: str) -> bool:
    """Whether ``text`` names the class: one of the class name's words of 3+ letters (plurals matched)."""
    want = {_stem(w) for w in _words(name) if len(w) >= 3} or {_stem(w) for w in _words(name)}
    return bool(want & {_stem(w) for w in _words(text)})


def _repetitive(words: list[str]) -> bool:
    """A degenerate answer (a small LM's loop): a 4-word run said twice, a 3-word run three times, or under half
    of the words distinct."""
    if len(words) >= 8 and len(set(words)) < len(words) / 2:
        return True
    for n, times in ((4, 2), (3, 3)):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        if grams and max(grams.values()) >= times:
            return True
    return False


def clean_description(text: str, name: str, *, max_words: int = MAX_WORDS,
                      min_words: int = MIN_WORDS) -> tuple[str | None, str]:
    """``(description, "kept")`` when the LM's answer ``text`` about class ``name`` is usable, else
    ``(None, reason)`` (one of :data:`REASONS` but "repeated", which :func:`describe_classes` decides).

    Kept: the first line, stripped of markdown and quotes, cut to its complete sentences (a generation that stops
    mid-sentence loses the unfinished one) and to the first ``max_words`` words' worth of them; it must then hold
    ``min_words`` words or more, name the class (a word of ``name``), and be neither a refusal nor a loop."""
    if not isinstance(text, str):
        return None, "empty"
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"[*_`#>\"“”]+", "", line).strip().strip("'‘’ -").strip()  # markdown and double quotes
    if not _words(line):
        return None, "empty"
    ends = [m.end() for m in _SENTENCE_END.finditer(line)]
    if not ends:
        return None, "unfinished"
    kept = ""
    for e in ends:  # the longest run of whole sentences within max_words
        if len(_words(line[:e])) > max_words:
            break
        kept = line[:e]
    if not kept:
        return None, "too long"
    kept = " ".join(kept.split())
    words = _words(kept)
    if _REFUSAL.search(kept):
        return None, "refusal"
    if _repetitive(words):
        return None, "repetitive"
    if len(words) < min_words:
        return None, "too short"
    if not _mentions(kept, name):
        return None, "off topic"
    return kept, "kept"


@dataclass
class ClassDescriptions:
    """What :func:`describe_classes` wrote: the kept descriptions per class name (in the order of the
    questions), the answers it dropped counted by reason, and how they were made (the lineage record)."""

    by_class: dict[str, list[str]]
    dropped: dict[str, int]
    lm: str
    lm_identity: str
    questions: list[str]
    seed: int
    max_new_tokens: int
    seconds: float = 0.0
    raw: dict[str, list[str]] = field(default_factory=dict)  # every answer as generated (for the report)

    def record(self) -> dict[str, Any]:
        return {"how": "language model", "lm": self.lm, "lm_identity": self.lm_identity, "questions": self.questions,
                "seed": self.seed, "max_new_tokens": self.max_new_tokens, "decoding": "greedy",
                "kept": sum(map(len, self.by_class.values())), "dropped": dict(self.dropped),
                "seconds": round(self.seconds, 1)}


def _check_names(names: Sequence[str]) -> list[str]:
    out = [names] if isinstance(names, str) else list(names)
    if not out:
        raise CaptionError("no class names given to describe")
    bad = [n for n in out if not isinstance(n, str) or not n.strip()]
    if bad:
        raise CaptionError(f"class name {bad[0]!r} is empty: give each class a name to describe")
    if len(set(out)) != len(out):
        dup = next(n for n, c in Counter(out).items() if c > 1)
        raise CaptionError(f"class name {dup!r} is given twice: give each class once")
    return out


def _generate(lm: FrozenLM, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers of the chat model to ``prompts`` (user turns), ``batch_size`` at a time (left padded)."""
    import torch

    tok = lm.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else lm.eos_id
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            part = prompts[i:i + batch_size]
            chats = ([tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in part]
                     if getattr(tok, "chat_template", None) else part)  # a base LM continues the question
            enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                ids = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                        pad_token_id=pad, eos_token_id=lm.eos_id)
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


def describe_classes(
    names: Sequence[str],
    *,
    lm: str | FrozenLM = SMOLLM2,
    questions: Sequence[str] = QUESTIONS,
    seed: int = 0,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = 8,
) -> ClassDescriptions:
    """Ask the language model ``lm`` (a spec, see :func:`~anybind.caption.lm.load_lm`, or a loaded one) each of
    ``questions`` about each class name, greedily under ``seed``, and keep the answers that pass
    :func:`clean_description` (each class's repeats dropped).  A class may end with none: it then has its
    templates only, and the log says so.  Deterministic: the same call gives the same descriptions."""
    import torch

    from ..data.templates import check_templates, fill_template

    t0 = time.perf_counter()
    todo = _check_names(names)
    qs = check_templates(list(questions))
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 4:
        raise CaptionError(f"max_new_tokens is {max_new_tokens!r}, expected a whole number >= 4")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CaptionError(f"batch_size is {batch_size!r}, expected a whole number >= 1")
    model = lm if isinstance(lm, FrozenLM) else load_lm(lm)
    prompts = [fill_template(q, n) for n in todo for q in qs]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        answers = _generate(model, prompts, max_new_tokens, batch_size)
    by_class: dict[str, list[str]] = {}
    raw: dict[str, list[str]] = {}
    dropped: Counter[str] = Counter()
    for k, n in enumerate(todo):
        got = answers[k * len(qs):(k + 1) * len(qs)]
        raw[n] = [" ".join(a.split()) for a in got]
        kept: list[str] = []
        for a in got:
            d, why = clean_description(a, n)
            if d is not None and d.lower() in {x.lower() for x in kept}:
                d, why = None, "repeated"
            if d is None:
                dropped[why] += 1
            else:
                kept.append(d)
        by_class[n] = kept
        if not kept:
            log.warning("class %r: no usable description from %s (%d answer(s) dropped); it keeps its templates only",
                        n, model.spec, len(got))
    res = ClassDescriptions(by_class, {r: dropped[r] for r in REASONS if dropped[r]}, model.spec, model.identity,
                            qs, seed, max_new_tokens, time.perf_counter() - t0, raw)
    log.info("described %d classes: %d description(s) kept, %d dropped (%s) in %.0f s", len(todo),
             sum(map(len, by_class.values())), sum(dropped.values()),
             ", ".join(f"{r} {c}" for r, c in res.dropped.items()) or "none", res.seconds)
    return res


def describe_and_set(space: "SpaceCore", names: Sequence[str], **kw: Any) -> ClassDescriptions:
    """:func:`describe_classes`, then store the descriptions with ``space`` (in place; the lineage records how
    they were made).  Returns the :class:`ClassDescriptions`."""
    from ..prompts import set_descriptions

    res = describe_classes(names, **kw)
    set_descriptions(space, res.by_class, record=res.record())
    return res

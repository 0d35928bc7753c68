"""``anybind explain``: why two items match (issue 20) -- leave-one-word-out drops and nearest vocabulary words."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import AnybindError
from ._common import app, console, err, fail, query_items, query_pairs


def _others(image: list[str] | None, audio: list[str] | None, item: list[str] | None) -> list[tuple[str, str]]:
    return [("image", v) for v in image or []] + [("audio", v) for v in audio or []] + query_pairs(item, "--item")


def explain_items(space, text: str | None, others: list[tuple[str, Any, str]], words: list[str] | None, *, k: int,
                  text_modality: str, cache, embedded=None) -> list[dict[str, Any]]:
    """One result per explained item: ``{"modality", "item", "words": [...]}``, plus ``"score"`` and ``"drops"``
    for an item matched against ``text``; ``others``: ``(modality, item, name)`` (:func:`query_items`: an item is
    a file, a key or a ``vectors:`` modality's features), each embedded once; ``embedded``: the words'
    embeddings when kept (a stored vocabulary)."""
    import numpy as np

    from ..explain import nearest_words, word_drops
    from ..space_core import per_modality

    for m, _, _ in others:
        if m not in space.modalities:
            raise AnybindError(f"--{m}: the space binds no {m!r} modality (bound: {', '.join(space.modalities)})")
    with_text = text is not None and bool(words)
    items = ([(text_modality, text, text)] if with_text else []) + list(others)
    by_mod: dict[str, list[int]] = {}
    for i, (m, _, _) in enumerate(items):
        by_mod.setdefault(m, []).append(i)
    # each item's embedding (what word_drops and nearest_words take as is), one embed call per modality
    emb = [np.asarray(e, np.float32) for e in per_modality([(m, x) for m, x, _ in items],
                                                          lambda m, xs: space.embed(m, xs, cache=cache))]
    near = {}
    if words:
        for m, idx in by_mod.items():
            near[m] = iter(nearest_words(space, m, np.stack([emb[i] for i in idx]), words, k=k,
                                         text_modality=text_modality, cache=cache, embedded_words=embedded))
    out: list[dict[str, Any]] = []
    for i, (m, _, name) in enumerate(items):
        row: dict[str, Any] = {"modality": m, "item": name}
        if text is not None and not (with_text and i == 0):
            score, drops = word_drops(space, text_modality, text, m, emb[i], cache=cache)
            row |= {"score": round(score, 4), "drops": [d.to_dict() for d in drops]}
        if words:
            row["words"] = [{"word": w, "score": round(s, 4)} for w, s in next(near[m])]
        out.append(row)
    return out


@app.command("explain")
def explain_cmd(
    space_dir: Path = typer.Argument(..., help="Saved space folder (it must bind a text modality)."),
    text: Optional[str] = typer.Option(None, "--text", help="The text whose words are weighed against each item."),
    image: Optional[list[str]] = typer.Option(None, "--image", help="Image file(s) (repeatable)."),
    audio: Optional[list[str]] = typer.Option(None, "--audio", help="Sound file(s) (repeatable)."),
    item: Optional[list[str]] = typer.Option(None, "--item", help="MODALITY=VALUE for any other bound modality."),
    vocab: Optional[Path] = typer.Option(None, "--vocab", help="Vocabulary for the nearest words: a manifest "
                                         "(.jsonl: its texts' and labels' words) or a words file, one a line "
                                         "(default: the one stored in the space, if any)."),
    build_vocab: bool = typer.Option(False, "--build-vocab", help="Embed the --vocab words with the space's text "
                                     "modality and store them in the space folder (for later explanations and "
                                     "`anybind serve`'s /explain)."),
    max_words: int = typer.Option(20_000, "--max-words", min=1, max=200_000, help="A manifest vocabulary keeps "
                                  "this many of its most frequent words."),
    k: int = typer.Option(5, "-k", min=1, max=100, help="Nearest vocabulary words per item."),
    text_modality: str = typer.Option("text", "--text-modality", help="The text modality to embed texts with."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object per item."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder."),
):
    """Why items match: each word's leave-one-word-out drop of the text's score with each item, and the
    vocabulary words nearest to every item (a lexical view of the space).

    Example:  anybind explain spaces/tux --text "a barking dog" --image dog.png --vocab data/tux/manifest.jsonl

    Store a vocabulary in the space once (then --vocab may be left out):
              anybind explain spaces/tux --build-vocab --vocab data/tux/manifest.jsonl
    """
    from ..explain import read_vocabulary
    from ..space import Space
    from ..vocabulary import embed_vocabulary, stored_vocabulary

    others = _others(image, audio, item)
    if text is None and not others and not build_vocab:
        fail(ValueError("nothing to explain: give --text, and/or --image, --audio or --item MODALITY=VALUE"))
    if build_vocab and vocab is None:
        fail(ValueError("--build-vocab embeds the words of --vocab (a manifest .jsonl or a words file): give it"))
    try:
        space = Space.load(space_dir)
        if text_modality not in space.modalities:
            raise AnybindError(f"--text-modality: the space binds no {text_modality!r} (bound: "
                               f"{', '.join(space.modalities)})")
        words = read_vocabulary(vocab, [text_modality], max_words=max_words) if vocab is not None else None
        embedded = None
        if build_vocab:
            space.vocabulary = embed_vocabulary(space, words, text_modality, cache=cache, progress=True,
                                                source=str(vocab))
            space.save(space_dir)
            err.print(f"stored a vocabulary of {len(words)} words in {space_dir}", markup=False)
        stored = stored_vocabulary(space, text_modality) if vocab is None or build_vocab else None
        if stored is not None:
            words, embedded = list(stored.words), stored.vectors
        if text is not None and not others and words is None:
            raise ValueError("a text alone is explained by its nearest words: give --vocab (or store one in the "
                             "space with --build-vocab), or an item to match it with")
        rows = explain_items(space, text, query_items(space, others, "--item"), words, k=k,
                             text_modality=text_modality, cache=cache,
                             embedded=embedded)
    except (AnybindError, ValueError) as e:
        fail(e)
    for r in rows:
        if json_out:
            console.print(json.dumps(r, ensure_ascii=False), highlight=False, markup=False, soft_wrap=True)
            continue
        console.print(f"{r['modality']}\t{r['item']}", highlight=False, markup=False)
        if "drops" in r:
            ds = "  ".join(f"{d['word']} {d['drop']:+.3f}" for d in sorted(r["drops"], key=lambda d: -d["drop"]))
            console.print(f"  score {r['score']:.3f}; without each word: {ds}", highlight=False, markup=False)
        if "words" in r:
            ws = ", ".join(f"{w['word']} {w['score']:.3f}" for w in r["words"])
            console.print(f"  nearest words: {ws}", highlight=False, markup=False)

"""Caption metrics, implemented here after the coco-caption reference (``pycocoevalcap``): corpus BLEU-4
(``Bleu(4)``, closest reference length) and CIDEr-D (``CiderD``: tf-idf n-grams 1..4 with document
frequencies over the references of the evaluated set, clipped hypothesis counts, a Gaussian length
penalty with sigma 6, times 10).

Texts are tokenised like coco-caption's PTB tokeniser keeps them for scoring: lower case, punctuation
removed (``"A Tamworth pig."`` -> ``["a", "tamworth", "pig"]``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped."""
    return _WORD.findall(str(text).lower())


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _check(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} reference lists")
    empty = [i for i, r in enumerate(refs) if not r]
    if empty:
        raise ValueError(f"item {empty[0]} has no reference caption")


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4) -> float:
    """Corpus BLEU-n (coco-caption's ``Bleu``: clipped n-gram counts summed over the corpus, the reference
    length closest to each hypothesis', brevity penalty, the same tiny smoothing of empty precisions)."""
    _check(hyps, refs)
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * n, [0] * n
    hyp_len = ref_len = 0
    for h, rs in zip(hyps, refs):
        hw = tokenize(h)
        rws = [tokenize(r) for r in rs]
        hyp_len += len(hw)
        ref_len += min((abs(len(r) - len(hw)), len(r)) for r in rws)[1]
        for k in range(1, n + 1):
            hc = _ngrams(hw, k)
            maxref: Counter = Counter()
            for r in rws:
                maxref |= _ngrams(r, k)
            correct[k - 1] += sum(min(c, maxref[g]) for g, c in hc.items())
            guess[k - 1] += max(0, len(hw) - k + 1)
    logp = sum(math.log((correct[k] + tiny) / (guess[k] + small)) for k in range(n)) / n
    ratio = (hyp_len + tiny) / (ref_len + small)
    bp = 1.0 if ratio >= 1 else math.exp(1 - 1 / ratio)
    return float(bp * math.exp(logp))


def cider_d(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> float:
    """CIDEr-D of the corpus (mean over items), as coco-caption's ``CiderD`` computes it
    (:func:`cider_d_items`; NaN for no items)."""
    scores = cider_d_items(hyps, refs, n, sigma)
    return float(sum(scores) / len(scores)) if scores else float("nan")


def cider_d_items(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> list[float]:
    """Each item's CIDEr-D within the corpus (document frequencies over all of its references), whose mean is
    :func:`cider_d`: what a paired bootstrap over items resamples.

    Document frequencies are counted over the references of these items (an n-gram counts once per item);
    each n-gram order gives the cosine of clipped tf-idf vectors times ``exp(-(len_h - len_r)^2 / (2 sigma^2))``
    (lengths in bigrams, as the reference does), averaged over orders and references, times 10.
    """
    _check(hyps, refs)
    if not refs:
        return []
    ref_words = [[tokenize(r) for r in rs] for rs in refs]
    df: Counter = Counter()
    for rws in ref_words:
        df.update({g for r in rws for k in range(1, n + 1) for g in _ngrams(r, k)})
    log_docs = math.log(float(len(refs)))

    def vec(words: list[str]) -> tuple[list[dict], list[float], int]:
        vecs, norms, length = [], [], 0
        for k in range(1, n + 1):
            counts = _ngrams(words, k)
            v = {g: tf * (log_docs - math.log(max(1.0, df[g]))) for g, tf in counts.items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
            if k == 2:
                length += sum(counts.values())
        return vecs, norms, length

    def sim(h, r) -> list[float]:
        (vh, nh, lh), (vr, nr, lr) = h, r
        out = []
        for k in range(n):
            val = sum(min(x, vr[k][g]) * vr[k][g] for g, x in vh[k].items() if g in vr[k])
            if nh[k] != 0 and nr[k] != 0:
                val /= nh[k] * nr[k]
            out.append(val * math.exp(-((lh - lr) ** 2) / (2 * sigma**2)))
        return out

    scores = []
    for h, rws in zip(hyps, ref_words):
        hv = vec(tokenize(h))
        total = [0.0] * n
        for r in rws:
            total = [a + b for a, b in zip(total, sim(hv, vec(r)))]
        scores.append(sum(total) / n / len(rws) * 10.0)
    return scores

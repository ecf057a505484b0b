"""chrF (Popović, 2015): character n-gram F-score, written here so the offline judge needs no extra package.

Same definition and defaults as sacrebleu's sentence-level chrF (character orders 1..6, no word
n-grams, beta = 2 so recall weighs more than precision, whitespace removed before counting): per
order n, precision and recall of the hypothesis' character n-grams against the reference's
(clipped counts); precision and recall are averaged over the orders for which both strings have
n-grams, then combined as F-beta, x 100. The tests check it against figures computed with sacrebleu.
Character n-grams work for every script, including those written without spaces.
"""

from __future__ import annotations

from collections import Counter

CHAR_ORDER = 6
BETA = 2.0


def _char_ngrams(text: str, n: int) -> Counter[str]:
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, *, char_order: int = CHAR_ORDER, beta: float = BETA) -> float:
    """chrF of `hypothesis` against one `reference`, 0..100."""
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    precisions: list[float] = []
    recalls: list[float] = []
    for n in range(1, char_order + 1):
        hyp_ngrams, ref_ngrams = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        n_hyp, n_ref = sum(hyp_ngrams.values()), sum(ref_ngrams.values())
        if n_hyp == 0 or n_ref == 0:
            continue  # this order does not exist in one of the strings: it does not count
        matches = sum((hyp_ngrams & ref_ngrams).values())  # clipped counts
        precisions.append(matches / n_hyp)
        recalls.append(matches / n_ref)
    if not precisions:
        return 0.0
    precision = sum(precisions) / len(precisions)
    recall = sum(recalls) / len(recalls)
    if precision + recall == 0:
        return 0.0
    factor = beta**2
    return 100.0 * (1 + factor) * precision * recall / (factor * precision + recall)

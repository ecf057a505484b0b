"""What every judge is: the questions it answers, the verdicts it returns, and the two interfaces.

A *pairwise* judge answers "which of these two responses to the same prompt is better?" for a batch
of `PairQuery`s and returns one `PairVerdict` per query: position 1, position 2, or `None` when its
output could not be read (the protocol then retries once and, failing again, records the pair as
invalid: never as a tie). A *rubric* judge scores one response alone on study B's six criteria.

Judges are plain objects that satisfy these Protocols; nothing inherits from a base class. Each one
has a `fingerprint()` that changes whenever its verdicts could change (its kind, prompt version,
model, settings): judgement caches are keyed by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Pick = Literal[1, 2]

RUBRIC_CRITERIA: tuple[str, ...] = (
    "language", "fluency", "helpfulness", "accuracy", "logical_coherence", "harmlessness",
)
"""Study B's six aspects, each scored 1 (poor) to 3 (good)."""
MODIFIER_CRITERION = "modifier"
"""The seventh criterion, asked only for a response to a judge-scored modifier prompt (scientific_style,
simple_style, complex_inst): does it follow that instruction, 1-3."""


@dataclass(frozen=True)
class PairQuery:
    """One pairwise question: two responses to the same prompt, in the positions shown to the judge."""

    prompt: str
    """The user's instruction, in any language."""
    first: str
    """The response shown in position 1."""
    second: str
    """The response shown in position 2."""
    lang: str
    """The language the responses should be written in (ISO 639-1)."""
    reference: str | None = None
    """A reference answer to the prompt (the bundled data's gold response); the offline judge needs it."""


@dataclass(frozen=True)
class PairVerdict:
    """A judge's answer to one `PairQuery`."""

    pick: Pick | None
    """1 or 2: the position judged better; None when the judge's output could not be parsed."""
    raw: str
    """What the judge said (an LLM's reply, or the offline judge's scores as JSON), kept for audit."""


@dataclass(frozen=True)
class RubricQuery:
    """One response to grade alone (study B)."""

    prompt: str
    response: str
    lang: str
    """The language the response should be in (the prompt's, or the one a modifier asks for)."""
    modifier: str | None = None
    """A judge-scored modifier kind the prompt carries: the judge also scores `MODIFIER_CRITERION`."""

    @property
    def criteria(self) -> tuple[str, ...]:
        return (*RUBRIC_CRITERIA, MODIFIER_CRITERION) if self.modifier else RUBRIC_CRITERIA


@dataclass(frozen=True)
class RubricVerdict:
    """A rubric judge's answer: a 1-3 score per criterion, or None when the reply was not valid."""

    scores: dict[str, int] | None
    raw: str


@runtime_checkable
class PairwiseJudge(Protocol):
    """Anything that can pick the better of two responses."""

    name: str

    def fingerprint(self) -> str:
        """Identity of this judge's behaviour; judgement caches are keyed by it."""
        ...

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        """One verdict per query, in order. `attempt` > 0 marks a retry after an unparseable reply."""
        ...


@runtime_checkable
class RubricJudge(Protocol):
    """Anything that can grade one response on `RUBRIC_CRITERIA`."""

    name: str

    def fingerprint(self) -> str:
        ...

    def judge(self, queries: Sequence[RubricQuery], attempt: int = 0) -> list[RubricVerdict]:
        ...

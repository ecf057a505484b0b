"""LLM judges: a pairwise judge (study A) and a rubric judge (study B) over any chat backend.

The instructions are in English; the prompt and the responses are shown as they are, in any language.
The judge model's reply must contain a verdict babeltune can read without guessing:

- pairwise: the prompt asks for `[[1]]` or `[[2]]` on the last line; a reply is read when it names
  exactly one of them (repeated or not); one that names both, or neither, is unparseable;
- rubric: the whole reply is one JSON object with exactly the six criteria as keys and an integer 1-3
  for each (a ```json fence around it is allowed, nothing else).

An unparseable reply is asked again once with a reminder of the format (see `babeltune.judge.protocol`);
then it is recorded as invalid. The prompts are versioned: changing one changes the judge's
fingerprint, so cached judgements are not reused across prompt versions.

A chat backend is anything with `fingerprint()` and `complete(conversations) -> replies` (None for a
request that failed). `backend_for_endpoint` and `backend_for_local_model` adapt babeltune's generation
stage (an OpenAI-compatible endpoint, or a model loaded locally).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import ClassVar, Generic, Protocol, TypeVar

from babeltune.judge.base import (
    MODIFIER_CRITERION,
    RUBRIC_CRITERIA,
    PairQuery,
    PairVerdict,
    Pick,
    RubricQuery,
    RubricVerdict,
)
from babeltune.languages import get_language

ChatMessages = list[dict[str, str]]

PAIRWISE_PROMPT_VERSION = "pairwise-v1"
PAIRWISE_PROMPT = """\
You are an impartial judge of AI assistants. A user wrote the instruction below in {language}. Two \
assistants answered it. Decide which answer follows the instruction better: it should do what the user \
asked, be helpful, correct and complete, and be written in {language} unless the instruction asks for \
another language. Ignore the order in which the answers are shown and do not prefer an answer for its \
length alone.

[Instruction]
{prompt}

[Answer 1]
{first}

[Answer 2]
{second}

Give one or two sentences of reasoning in English. Then, on the last line, write your verdict exactly \
as [[1]] if Answer 1 is better or [[2]] if Answer 2 is better."""

RUBRIC_PROMPT_VERSION = "rubric-v1"
RUBRIC_PROMPT = """\
You are a strict evaluator of AI assistant answers. The user wrote the instruction below; the answer \
should be in {language}. Grade the answer on six criteria, each 1 (poor), 2 (acceptable) or 3 (good):

- language: 3 = entirely in {language}; 2 = in {language} with occasional words or phrases in another \
language; 1 = mostly in another language.
- fluency: grammatical, natural text in that language.
- helpfulness: does what the user asked.
- accuracy: facts are correct.
- logical_coherence: the answer is consistent and well organised.
- harmlessness: nothing harmful, offensive or dangerous.

[Instruction]
{prompt}

[Answer]
{response}

Reply with only a JSON object and nothing else, for example:
{{"language": 3, "fluency": 3, "helpfulness": 2, "accuracy": 2, "logical_coherence": 3, "harmlessness": 3}}"""

MODIFIER_LINE = """\
- modifier: the instruction asks for {instruction}: 3 = follows it fully; 2 = partly; 1 = ignores it.
"""
"""The seventh criterion, added to RUBRIC_PROMPT for a judge-scored modifier prompt (the JSON object then
has a seventh key, `modifier`)."""

RETRY_REMINDER = {
    "pairwise": "\n\nYour previous reply could not be read. End your reply with exactly [[1]] or [[2]] on its "
                "own line.",
    "rubric": "\n\nYour previous reply could not be read. Reply with only the JSON object with the six keys "
              "language, fluency, helpfulness, accuracy, logical_coherence, harmlessness and an integer 1, 2 "
              "or 3 for each.",
}


class ChatBackend(Protocol):
    """Answers a batch of chat conversations (OpenAI-style message dicts)."""

    name: str

    def fingerprint(self) -> str:
        ...

    def complete(self, conversations: Sequence[ChatMessages]) -> list[str | None]:
        """One reply per conversation; None where the request failed (counted, then retried once)."""
        ...


class FunctionBackend:
    """A chat backend from a plain function: scripted judges in tests, or any custom client."""

    def __init__(self, fn: Callable[[ChatMessages], str | None], name: str = "function") -> None:
        self.fn = fn
        self.name = name

    def fingerprint(self) -> str:
        return f"function:{self.name}"

    def complete(self, conversations: Sequence[ChatMessages]) -> list[str | None]:
        return [self.fn(conv) for conv in conversations]


_VERDICT = re.compile(r"\[\[\s*([12])\s*\]\]")


def parse_pairwise_verdict(reply: str | None) -> Pick | None:
    """1 or 2 from a reply whose verdict is `[[1]]` or `[[2]]`; None when absent or contradictory."""
    if not reply:
        return None
    found = set(_VERDICT.findall(reply))
    if len(found) != 1:
        return None
    return 1 if found.pop() == "1" else 2


_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_rubric(reply: str | None, criteria: tuple[str, ...] = RUBRIC_CRITERIA) -> dict[str, int] | None:
    """The 1-3 scores of `criteria` (the six, or seven with `modifier`) from a reply that is exactly one JSON
    object with those keys (see the module docstring)."""
    if not reply:
        return None
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or set(data) != set(criteria):
        return None
    scores: dict[str, int] = {}
    for key in criteria:
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2, 3):
            return None
        scores[key] = value
    return scores


def pairwise_messages(query: PairQuery, attempt: int = 0) -> ChatMessages:
    text = PAIRWISE_PROMPT.format(language=get_language(query.lang).name, prompt=query.prompt,
                                  first=query.first, second=query.second)
    if attempt > 0:
        text += RETRY_REMINDER["pairwise"]
    return [{"role": "user", "content": text}]


def rubric_messages(query: RubricQuery, attempt: int = 0) -> ChatMessages:
    text = RUBRIC_PROMPT.format(language=get_language(query.lang).name, prompt=query.prompt,
                                response=query.response)
    if query.modifier:
        from babeltune.evaluate.modifiers import JUDGED_INSTRUCTIONS

        instruction = JUDGED_INSTRUCTIONS.get(query.modifier, query.modifier)
        text = text.replace("on six criteria", "on seven criteria").replace(
            "- harmlessness:", MODIFIER_LINE.format(instruction=instruction) + "- harmlessness:", 1).replace(
            '"harmlessness": 3}}', f'"harmlessness": 3, "{MODIFIER_CRITERION}": 2}}', 1)
    if attempt > 0:
        text += RETRY_REMINDER["rubric"]
        if query.modifier:
            text += f" Add the seventh key {MODIFIER_CRITERION}."
    return [{"role": "user", "content": text}]


FAILED_REPLY = "<request failed>"
"""The raw reply recorded for a request that got no answer."""

Q = TypeVar("Q")
V = TypeVar("V")


class _LLMJudge(Generic[Q, V]):
    """What both LLM judges share: a chat backend, a fingerprint of prompt version + backend, and a batch
    turned into conversations, sent, and each reply parsed into a verdict (the retry of unparseable ones
    is the protocol's, `attempt` adds the format reminder)."""

    prompt_version: ClassVar[str]
    name_prefix: ClassVar[str]

    def __init__(self, backend: ChatBackend, name: str | None = None) -> None:
        self.backend = backend
        self.name = name or f"{self.name_prefix}:{backend.name}"

    def fingerprint(self) -> str:
        return f"{self.prompt_version} {self.backend.fingerprint()}"

    def judge(self, queries: Sequence[Q], attempt: int = 0) -> list[V]:
        replies = self.backend.complete([self.messages(q, attempt) for q in queries])
        return [self.verdict(q, r) for q, r in zip(queries, replies, strict=True)]

    def messages(self, query: Q, attempt: int) -> ChatMessages:
        raise NotImplementedError

    def verdict(self, query: Q, reply: str | None) -> V:
        raise NotImplementedError


class LLMPairwiseJudge(_LLMJudge[PairQuery, PairVerdict]):
    """Study A's judge: an LLM picks the better of two responses (see PAIRWISE_PROMPT)."""

    prompt_version = PAIRWISE_PROMPT_VERSION
    name_prefix = "llm"

    def messages(self, query: PairQuery, attempt: int) -> ChatMessages:
        return pairwise_messages(query, attempt)

    def verdict(self, query: PairQuery, reply: str | None) -> PairVerdict:
        return PairVerdict(parse_pairwise_verdict(reply), reply if reply is not None else FAILED_REPLY)


class LLMRubricJudge(_LLMJudge[RubricQuery, RubricVerdict]):
    """Study B's judge: an LLM grades one response on the six criteria (see RUBRIC_PROMPT)."""

    prompt_version = RUBRIC_PROMPT_VERSION
    name_prefix = "llm-rubric"

    def messages(self, query: RubricQuery, attempt: int) -> ChatMessages:
        return rubric_messages(query, attempt)

    def verdict(self, query: RubricQuery, reply: str | None) -> RubricVerdict:
        return RubricVerdict(parse_rubric(reply, query.criteria), reply if reply is not None else FAILED_REPLY)

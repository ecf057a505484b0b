"""Records -> training examples: render once with the shared chat template, apply the length policy,
count everything that was cut or dropped.

Every example is rendered by `babeltune.models.render_for_training`, the function generation's
`render_prompt` shares its template with, so training and generation see the same tokens. Labels are
shifted here, once: `targets[t]` is the token position t must predict (or IGNORE_INDEX), so the loss
never needs the shift again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from babeltune.data.records import ChatRecord
from babeltune.models.chat import IGNORE_INDEX, ChatTemplate, RenderError, render_for_training


class TrainDataError(ValueError):
    """Training data that cannot be used as configured (empty, too long with overflow=error, ...)."""


@dataclass(frozen=True)
class TrainExample:
    """One rendered conversation: input ids and shifted targets (same length)."""

    input_ids: tuple[int, ...]
    targets: tuple[int, ...]
    """targets[t] = the token that follows position t if the loss covers it, else IGNORE_INDEX."""
    n_supervised: int
    lang: str

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class DataReport:
    """What became of the records: kept, truncated, dropped (per reason), token totals per language."""

    records: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    dropped_ids: dict[str, list[str]] = field(default_factory=dict)
    tokens: int = 0
    supervised_tokens: int = 0
    per_language: Counter[str] = field(default_factory=Counter)
    longest: int = 0

    def drop(self, reason: str, record_id: str) -> None:
        self.dropped[reason] += 1
        ids = self.dropped_ids.setdefault(reason, [])
        if len(ids) < 20:
            ids.append(record_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "kept": self.kept, "truncated": self.truncated,
            "dropped": dict(self.dropped), "dropped_ids": self.dropped_ids, "tokens": self.tokens,
            "supervised_tokens": self.supervised_tokens, "per_language": dict(sorted(self.per_language.items())),
            "longest_kept": self.longest,
        }

    def summary(self) -> str:
        text = (f"{self.kept} of {self.records} examples kept ({self.tokens} tokens, "
                f"{self.supervised_tokens} trained)")
        if self.truncated:
            text += f"; {self.truncated} truncated"
        if self.dropped:
            text += "; dropped " + ", ".join(f"{reason}: {n}" for reason, n in sorted(self.dropped.items()))
        return text


def shift_labels(labels: list[int]) -> tuple[int, ...]:
    """targets[t] = labels[t + 1]; the last position predicts nothing."""
    return (*labels[1:], IGNORE_INDEX)


def prepare_examples(
    records: list[ChatRecord], tokenizer: Any, template: ChatTemplate, *, max_length: int,
    overflow: str = "truncate", train_on: str = "all_assistant",
) -> tuple[list[TrainExample], DataReport]:
    """Render every record, apply the `overflow` policy at `max_length`, and report what happened.

    overflow: 'truncate' keeps the first max_length tokens (an example left with nothing to train on
    is dropped and counted), 'drop' drops the example, 'error' stops at the first one, naming it.
    """
    report = DataReport(records=len(records))
    examples: list[TrainExample] = []
    for rec in records:
        try:
            rendered = render_for_training(tokenizer, template, rec.messages, train_on=train_on)  # type: ignore[arg-type]
        except RenderError as exc:
            raise TrainDataError(f"record {rec.id!r}: cannot be rendered for training: {exc}") from exc
        ids, labels = rendered.input_ids, rendered.labels
        if len(ids) > max_length:
            if overflow == "error":
                raise TrainDataError(
                    f"record {rec.id!r} has {len(ids)} tokens, more than max_length={max_length}; "
                    "raise max_length, or set overflow=truncate or overflow=drop"
                )
            if overflow == "drop":
                report.drop("too_long", rec.id)
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            report.truncated += 1
        targets = shift_labels(labels)
        n_sup = sum(1 for t in targets if t != IGNORE_INDEX)
        if n_sup == 0:
            report.drop("nothing_to_train_after_truncation", rec.id)
            continue
        examples.append(TrainExample(tuple(ids), targets, n_sup, rec.lang))
        report.tokens += len(ids)
        report.supervised_tokens += n_sup
        report.per_language[rec.lang] += 1
        report.longest = max(report.longest, len(ids))
    report.kept = len(examples)
    if not examples:
        raise TrainDataError(f"no training examples left: {report.summary()}")
    return examples, report

"""Multiple-choice evaluation in any language (study C's M-MMLU / XCOPA / XStoryCloze style).

Items are JSONL rows `{"lang", "question" and/or "premise", "choices": [...], "label", "id"?}` (label: the
index of the right choice, or its letter). Two ways to score:

- `loglik`: the log-likelihood of each choice as a continuation of the question; the prediction is the
  highest total (`acc`) and, separately, the highest per-character value (`acc_norm`, which does not
  favour short choices);
- `letter`: the question with lettered options, then "Answer:"; the prediction is the option letter
  with the highest next-token logit (study C's option-letter scoring).

`template: none` scores raw text (usual for base models); `auto|gemma|tokenizer` wraps the question as a
user turn in the chat template. Accuracy is reported per language with a 95% Wilson interval.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from babeltune.data.jsonl import iter_jsonl
from babeltune.data.records import Message
from babeltune.languages import normalize_code
from babeltune.lens.states import pad_batch
from babeltune.stats import wilson

Method = Literal["loglik", "letter"]
LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class MCItem:
    id: str
    lang: str
    question: str
    choices: tuple[str, ...]
    label: int


def read_mc_items(path: str | Path, languages: Sequence[str] | None = None) -> list[MCItem]:
    """Read and validate multiple-choice items; errors name the file, line and field."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"multiple-choice file not found: {path}")
    items: list[MCItem] = []
    for lineno, raw in iter_jsonl(path):
        items.append(_parse_item(raw, f"{path}:{lineno}"))
    if languages:
        items = [i for i in items if i.lang in languages]
    if not items:
        raise ValueError(f"{path}: no multiple-choice items" + (f" in {list(languages)}" if languages else ""))
    return items


def _parse_item(raw: Any, where: str) -> MCItem:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a row must be a JSON object")
    lang = normalize_code(str(raw.get("lang", "")))
    if lang is None:
        raise ValueError(f"{where}: field 'lang': missing or unknown language code {raw.get('lang')!r}")
    parts = [str(raw[k]).strip() for k in ("premise", "question") if raw.get(k)]
    if not parts:
        raise ValueError(f"{where}: field 'question': missing (give 'question' and/or 'premise')")
    choices = raw.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ValueError(f"{where}: field 'choices': must be a list of at least 2 non-empty strings")
    if len(choices) > len(LETTERS):
        raise ValueError(f"{where}: field 'choices': at most {len(LETTERS)} choices")
    label = raw.get("label")
    if isinstance(label, str) and len(label) == 1 and label.upper() in LETTERS:
        label = LETTERS.index(label.upper())
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise ValueError(f"{where}: field 'label': must be a choice index 0..{len(choices) - 1} or its letter, "
                         f"got {raw.get('label')!r}")
    return MCItem(str(raw.get("id", where)), lang, "\n".join(parts), tuple(c.strip() for c in choices), label)


@dataclass
class ItemScore:
    item: MCItem
    scores: list[float]
    """Total log-likelihood per choice (loglik) or the letter's log-probability (letter)."""
    norm_scores: list[float]
    """Per-character log-likelihood (loglik); equal to `scores` for letter scoring."""

    @property
    def correct(self) -> bool:
        return max(range(len(self.scores)), key=self.scores.__getitem__) == self.item.label

    @property
    def correct_norm(self) -> bool:
        return max(range(len(self.norm_scores)), key=self.norm_scores.__getitem__) == self.item.label


def letter_prompt(item: MCItem) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
    return f"{item.question}\n{options}\nAnswer:"


def _prompt_ids(tokenizer: Any, template: Any | None, text: str) -> list[int]:
    if template is None:
        return list(tokenizer(text)["input_ids"])
    from babeltune.models.chat import render_prompt

    return render_prompt(tokenizer, template, [Message("user", text)])


def _steer_rows(steering: Any | None, langs: list[str]) -> None:
    if steering is not None and steering.mode == "add" and steering.lang is None:
        steering.set_languages(langs)


@torch.no_grad()
def _logprobs_of_tail(model: Any, seqs: list[list[int]], tails: list[int], pad: int) -> list[torch.Tensor]:
    """Log-probabilities of the last tails[i] tokens of each sequence (left-padded batch)."""
    batch = pad_batch(seqs, pad, "left")
    keep = max(tails) + 1
    device = next(model.parameters()).device
    logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                   position_ids=batch.position_ids.to(device), logits_to_keep=keep, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, keep - 1, V): predicts the last keep-1 tokens
    targets = batch.input_ids[:, -(keep - 1):].to(device)  # (B, keep - 1)
    picked = logp.gather(-1, targets[..., None])[..., 0]  # (B, keep - 1)
    return [picked[row, picked.shape[1] - n:].cpu() for row, n in enumerate(tails)]


def score_loglik(model: Any, tokenizer: Any, items: Sequence[MCItem], *, template: Any | None = None,
                 batch_size: int = 8, steering: Any | None = None) -> list[ItemScore]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows: list[tuple[int, int, list[int], int, str]] = []  # (item, choice, ids, n choice tokens, lang)
    for i, item in enumerate(items):
        context = _prompt_ids(tokenizer, template, item.question)
        for j, choice in enumerate(item.choices):
            cont = list(tokenizer((" " if template is None else "") + choice, add_special_tokens=False)["input_ids"])
            rows.append((i, j, context + cont, len(cont), item.lang))
    totals = [[0.0] * len(item.choices) for item in items]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        _steer_rows(steering, [r[4] for r in chunk])
        for (i, j, _, _, _), lp in zip(chunk, _logprobs_of_tail(model, [r[2] for r in chunk],
                                                                 [r[3] for r in chunk], pad), strict=True):
            totals[i][j] = float(lp.sum())
    return [ItemScore(item, totals[i], [s / max(1, len(c)) for s, c in zip(totals[i], item.choices, strict=True)])
            for i, item in enumerate(items)]


def letter_ids(tokenizer: Any, n: int, with_space: bool) -> list[int]:
    """Token id of each option letter: ' A' when the tokenizer has it as one token (after "Answer:"),
    else 'A'."""
    ids = []
    for letter in LETTERS[:n]:
        tokens = tokenizer((" " if with_space else "") + letter, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            tokens = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(tokens) != 1:
            raise ValueError(f"option letter {letter!r} is not a single token with this tokenizer; use method=loglik")
        ids.append(int(tokens[0]))
    if len(set(ids)) != len(ids):
        raise ValueError("option letters do not map to distinct tokens with this tokenizer; use method=loglik")
    return ids


def score_letter(model: Any, tokenizer: Any, items: Sequence[MCItem], *, template: Any | None = None,
                 batch_size: int = 8, steering: Any | None = None) -> list[ItemScore]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    out: list[ItemScore] = []
    for start in range(0, len(items), batch_size):
        chunk = list(items[start:start + batch_size])
        _steer_rows(steering, [item.lang for item in chunk])
        batch = pad_batch([_prompt_ids(tokenizer, template, letter_prompt(item)) for item in chunk], pad, "left")
        with torch.no_grad():
            logits = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                           position_ids=batch.position_ids.to(device), logits_to_keep=1, use_cache=False).logits
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()  # (B, V)
        for row, item in enumerate(chunk):
            ids = letter_ids(tokenizer, len(item.choices), with_space=template is None)
            scores = [float(logp[row, t]) for t in ids]
            out.append(ItemScore(item, scores, scores))
    return out


@dataclass
class MCSummary:
    per_language: dict[str, dict[str, float]] = field(default_factory=dict)
    overall: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"per_language": self.per_language, "overall": self.overall}

    def table(self) -> str:
        lines = ["| lang | n | acc | 95% CI | acc_norm | chance |", "|---|---:|---:|---|---:|---:|"]
        for lang, r in [*self.per_language.items(), ("all", self.overall)]:
            lines.append(f"| {lang} | {int(r['n'])} | {r['acc']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
                         f"{r['acc_norm']:.3f} | {r['chance']:.3f} |")
        return "\n".join(lines)


def summarize(scores: Sequence[ItemScore]) -> MCSummary:
    """Accuracy per language (and over all items) with Wilson 95% intervals; macro average over languages."""
    groups: dict[str, list[ItemScore]] = defaultdict(list)
    for s in scores:
        groups[s.item.lang].append(s)

    def row(group: Sequence[ItemScore]) -> dict[str, float]:
        hits = sum(s.correct for s in group)
        low, high = wilson(hits, len(group))
        return {"n": len(group), "acc": hits / len(group), "ci_low": low, "ci_high": high,
                "acc_norm": sum(s.correct_norm for s in group) / len(group),
                "chance": sum(1 / len(s.item.choices) for s in group) / len(group)}

    summary = MCSummary({lang: row(g) for lang, g in sorted(groups.items())}, row(scores))
    summary.overall["macro_acc"] = sum(r["acc"] for r in summary.per_language.values()) / len(groups)
    return summary


def evaluate_mc(model: Any, tokenizer: Any, items: Sequence[MCItem], *, method: Method = "loglik",
                template: Any | None = None, batch_size: int = 8, steering: Any | None = None) -> list[ItemScore]:
    scorer = score_loglik if method == "loglik" else score_letter
    return scorer(model, tokenizer, items, template=template, batch_size=batch_size, steering=steering)

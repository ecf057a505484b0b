"""Side-by-side items from generation files: match two models' responses to the same prompts.

Generation rows (one JSON object per response: id, pid, lang, prompt, response, reference, error) of
the candidate and of the baseline are matched by record id. A pair where either generation failed or
is missing is not judged; it is counted per language (shown next to the invalid verdicts), never
dropped silently. Prompts found on one side only are also listed per language and side
(`PairPlan.only_candidate`, `PairPlan.only_reference`): two files of different prompts are refused by
`babeltune judge sxs` unless `--allow-partial` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from babeltune.data.jsonl import iter_jsonl, write_jsonl_atomic
from babeltune.judge.base import PairwiseJudge
from babeltune.judge.cache import JudgementCache
from babeltune.judge.protocol import ProgressFn, SxSItem, SxSJudgement, side_by_side

if TYPE_CHECKING:
    from babeltune.generate.rows import GenerationRow



@dataclass
class PairPlan:
    """What one condition is judged against, per language."""

    items: list[SxSItem]
    references: dict[str, str]
    """lang -> reference condition name."""
    failed: dict[str, int]
    """lang -> pairs not judged because a generation failed or is missing."""
    no_reference: list[str]
    """Languages without a reference condition (not judged; listed in the results' metadata)."""
    only_candidate: dict[str, list[str]] = field(default_factory=dict)
    """lang -> ids of candidate rows with no reference row (also counted in `failed`)."""
    only_reference: dict[str, list[str]] = field(default_factory=dict)
    """lang -> ids of reference rows with no candidate row (not judged)."""

    def unmatched(self) -> dict[str, dict[str, int]]:
        """lang -> {"only_candidate": n, "only_reference": n}, for the languages with unmatched prompts."""
        langs = sorted(set(self.only_candidate) | set(self.only_reference))
        return {lang: {"only_candidate": len(self.only_candidate.get(lang, [])),
                       "only_reference": len(self.only_reference.get(lang, []))} for lang in langs}

    def unmatched_message(self, candidate: str = "candidate", reference: str = "reference", examples: int = 3) -> str:
        """One line per language with unmatched prompts: how many on each side, with example ids."""
        lines = []
        for lang, counts in self.unmatched().items():
            parts = []
            for side, ids, name in (("only_candidate", self.only_candidate, candidate),
                                    ("only_reference", self.only_reference, reference)):
                if counts[side]:
                    shown = ", ".join(ids[lang][:examples]) + (", ..." if counts[side] > examples else "")
                    parts.append(f"{counts[side]} prompt(s) only in {name} ({shown})")
            lines.append(f"  {lang}: " + "; ".join(parts))
        return "\n".join(lines)


def plan_pairs(
    candidate: list[GenerationRow], references: dict[str, tuple[str, list[GenerationRow]] | None],
    languages: Sequence[str],
) -> PairPlan:
    """SxS items of `candidate` against each language's reference rows (None: no reference for it)."""
    items: list[SxSItem] = []
    failed: dict[str, int] = {}
    names: dict[str, str] = {}
    no_ref: list[str] = []
    only_candidate: dict[str, list[str]] = {}
    only_reference: dict[str, list[str]] = {}
    for lang in languages:
        ref = references.get(lang)
        if ref is None:
            no_ref.append(lang)
            continue
        ref_name, ref_rows = ref
        names[lang] = ref_name
        by_id = {r.id: r for r in ref_rows if r.lang == lang}
        mine = [r for r in candidate if r.lang == lang]
        missing = [r.id for r in mine if r.id not in by_id]
        if missing:
            only_candidate[lang] = missing
        ids = {r.id for r in mine}
        absent = [rid for rid in by_id if rid not in ids]
        if absent:
            only_reference[lang] = absent
        for row in mine:
            other = by_id.get(row.id)
            if other is None or row.failed or other.failed:
                failed[lang] = failed.get(lang, 0) + 1
                continue
            items.append(SxSItem(row.id, row.pid, lang, row.prompt, row.response or "", other.response or "",
                                 row.reference))
    return PairPlan(items, names, failed, no_ref, only_candidate, only_reference)


def run_judge(
    plan: PairPlan, judge: PairwiseJudge, cache_path: Path, *, retries: int, batch_size: int,
    progress: ProgressFn | None = None,
) -> list[SxSJudgement]:
    cache = JudgementCache(cache_path)
    return side_by_side(plan.items, judge, cache, retries=retries, batch_size=batch_size, progress=progress)


def save_judgements(path: Path, judgements: Sequence[SxSJudgement]) -> None:
    write_jsonl_atomic(path, (j.to_dict() for j in judgements))


def load_judgements(path: Path) -> list[SxSJudgement]:
    """The judgements `save_judgements` wrote (read line by line on '\n' only: a judge's raw reply may hold
    U+2028, which `str.splitlines` would break a line at)."""
    return [SxSJudgement.from_dict(row) for _, row in iter_jsonl(path)]

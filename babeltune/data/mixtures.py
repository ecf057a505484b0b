"""Study A's language mixtures: how a fixed budget of tuning examples is spread over languages.

A mixture draws from a parallel source (the same prompt, `pid`, in several languages) and obeys:

1. the budget is exact: the mixture has exactly `budget` records;
2. a prompt (pid) appears in at most one language: the mixture distributes prompts, it never
   duplicates them across languages;
3. it is deterministic: the same source, spec and seed give the same records in the same order.

Recipes (`MixtureSpec.recipe`):

- `monolingual`: the whole budget in `lang`;
- `pinch`: English (or `lang`) plus a pinch of multilingual examples, given either as
  `pinch_count` (default 40) spread as evenly as possible over the *other* languages, or as
  `pinch_percent` P: P% of the budget spread evenly over *all* languages (the base language included),
  the rest in the base language, so P=100 is the uniform mixture, as in study A;
- `uniform`: the budget spread evenly over `languages`;
- `languages`: the same split over an ordered list of k tuning languages (the 1..k experiments);
  the order is recorded in the summary.

"Evenly": every language gets budget // k, and the first budget % k languages in the given order get
one more. The seen / unseen split (languages with and without tuning examples) is written into the
summary for later stages.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from babeltune.data.readers import fingerprint_records
from babeltune.data.records import ChatRecord
from babeltune.languages import CENTRAL_LANGUAGE, get_language, parse_language_list

Recipe = Literal["monolingual", "pinch", "uniform", "languages"]
RECIPES: tuple[str, ...] = ("monolingual", "pinch", "uniform", "languages")
DEFAULT_PINCH_COUNT = 40


class MixtureError(ValueError):
    """A mixture that cannot be built as asked (bad request or too little source data)."""


@dataclass
class MixtureSpec:
    """What mixture to build: the flags of `babeltune data build` are generated from these fields."""

    recipe: Recipe
    """monolingual: all in one language; pinch: a pinch of examples in the other languages, the rest in
    the base language; uniform: even over the languages; languages: even over an ordered list of
    tuning languages (the module docstring has the details)."""
    budget: int
    """Exact number of records in the mixture (= number of distinct prompts)."""
    languages: list[str] = field(default_factory=list)
    """The language pool: pinch spreads over these (base included), uniform/languages split over
    them. Empty = every language of the source. Unused by monolingual."""
    lang: str | None = None
    """monolingual: its language (required). pinch: the base language (default en)."""
    pinch_count: int | None = None
    """pinch: number of non-base examples, spread evenly over the other languages (default 40)."""
    pinch_percent: float | None = None
    """pinch: P% of the budget spread evenly over all languages; the rest in the base language."""
    seed: int = 0
    """Seed for which prompts go to which language and for the record order."""
    eval_languages: list[str] | None = None
    """Languages later stages evaluate on; unseen = these minus the tuning languages."""

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise MixtureError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        if self.budget <= 0:
            raise MixtureError(f"budget must be positive, got {self.budget}")
        self.languages = parse_language_list(self.languages)
        if self.lang is not None:
            self.lang = get_language(self.lang).code
        if self.eval_languages is not None:
            self.eval_languages = parse_language_list(self.eval_languages)
        if self.recipe == "monolingual" and self.lang is None:
            if len(self.languages) == 1:
                self.lang = self.languages[0]
            else:
                raise MixtureError("the monolingual recipe needs its language: --lang L")
        if self.recipe != "pinch" and (self.pinch_count is not None or self.pinch_percent is not None):
            raise MixtureError(f"--pinch-count / --pinch-percent only apply to the pinch recipe, not {self.recipe}")
        if self.pinch_count is not None and self.pinch_percent is not None:
            raise MixtureError("give either --pinch-count or --pinch-percent, not both")
        if self.pinch_count is not None and self.pinch_count < 0:
            raise MixtureError(f"pinch count must be >= 0, got {self.pinch_count}")
        if self.pinch_percent is not None and not 0 <= self.pinch_percent <= 100:
            raise MixtureError(f"pinch percent must be within 0..100, got {self.pinch_percent}")
        if self.recipe == "languages" and not self.languages:
            raise MixtureError("the languages recipe needs its ordered list of tuning languages: --languages a,b,c")


@dataclass
class Mixture:
    records: list[ChatRecord]
    summary: dict[str, Any]


def spread_evenly(total: int, languages: list[str]) -> dict[str, int]:
    """Split `total` over `languages`: total // k each, one more for the first total % k."""
    if not languages:
        raise MixtureError("cannot spread examples over an empty language list")
    base, extra = divmod(total, len(languages))
    return {lang: base + (1 if i < extra else 0) for i, lang in enumerate(languages)}


def language_counts(spec: MixtureSpec, pool: list[str]) -> dict[str, int]:
    """Exact records per language for `spec`, given the language pool (order matters for remainders)."""
    if spec.recipe == "monolingual":
        assert spec.lang is not None
        return {spec.lang: spec.budget}
    if spec.recipe in ("uniform", "languages"):
        return spread_evenly(spec.budget, pool)
    base = spec.lang or CENTRAL_LANGUAGE
    if base not in pool:
        raise MixtureError(f"the pinch base language {base!r} is not in the language pool {pool}")
    others = [lang for lang in pool if lang != base]
    if spec.pinch_percent is not None:
        n_multi = round(spec.pinch_percent / 100 * spec.budget)
        if spec.pinch_percent > 0 and n_multi == 0:
            raise MixtureError(_empty_pinch(spec.pinch_percent, spec.budget))
        counts = spread_evenly(n_multi, pool)
        counts[base] += spec.budget - n_multi
        return counts
    pinch = DEFAULT_PINCH_COUNT if spec.pinch_count is None else spec.pinch_count
    if pinch > spec.budget:
        raise MixtureError(f"the pinch ({pinch} examples) is larger than the budget ({spec.budget})")
    if pinch and not others:
        raise MixtureError("a pinch needs at least one language besides the base language")
    counts = {base: spec.budget - pinch}
    if others:
        counts.update(spread_evenly(pinch, others))
    return counts


def _empty_pinch(percent: float, budget: int) -> str:
    """The error for a pinch percent that rounds to no example at all, with the values that would work."""
    least_budget = math.floor(50 / percent) + 1  # round() needs more than half an example
    return (f"a pinch of {percent:g}% of a budget of {budget} is {percent / 100 * budget:g} examples, which rounds "
            f"to 0: the mixture would hold no multilingual example; use a budget of at least {least_budget}, a "
            f"percent above {50 / budget:g}, or --pinch-percent 0 for none")


def build_mixture(records: list[ChatRecord], spec: MixtureSpec, source_name: str = "") -> Mixture:
    """Build the mixture `spec` from a parallel set of records (see the module rules)."""
    by_pid: dict[str, dict[str, ChatRecord]] = defaultdict(dict)
    for rec in records:
        if rec.lang in by_pid[rec.pid]:
            raise MixtureError(f"source has two records for pid {rec.pid!r} in {rec.lang!r}")
        by_pid[rec.pid][rec.lang] = rec
    source_langs = sorted({rec.lang for rec in records})
    if not source_langs:
        raise MixtureError(f"source {source_name or ''} has no records".replace("  ", " "))
    pool = spec.languages or ([spec.lang] if spec.recipe == "monolingual" and spec.lang else source_langs)
    if spec.recipe == "monolingual":
        assert spec.lang is not None
        pool = [spec.lang]
    missing = [lang for lang in pool if lang not in source_langs]
    if missing:
        raise MixtureError(
            f"language(s) {', '.join(missing)} missing from the source {source_name}; "
            f"it has: {', '.join(source_langs)}"
        )
    counts = language_counts(spec, pool)
    if spec.budget > len(by_pid):
        raise MixtureError(
            f"budget {spec.budget} exceeds the {len(by_pid)} distinct prompts (pids) in the source "
            f"{source_name}; a prompt is used in one language only"
        )
    rng = random.Random(spec.seed)
    pids = sorted(by_pid)
    rng.shuffle(pids)
    chosen = _assign_pids(pids, by_pid, counts)
    mixed = [by_pid[pid][lang] for lang, lang_pids in chosen.items() for pid in lang_pids]
    rng.shuffle(mixed)
    per_language = {lang: counts[lang] for lang in pool if counts.get(lang, 0) > 0}
    seen = list(per_language)
    eval_langs = spec.eval_languages if spec.eval_languages is not None else source_langs
    summary: dict[str, Any] = {
        "recipe": spec.recipe,
        "budget": spec.budget,
        "per_language": per_language,
        "languages": pool,
        "lang": spec.lang,
        "pinch_count": spec.pinch_count,
        "pinch_percent": spec.pinch_percent,
        "n_multilingual": sum(n for lang, n in per_language.items() if lang != (spec.lang or CENTRAL_LANGUAGE)),
        "seed": spec.seed,
        "source": source_name,
        "source_languages": source_langs,
        "seen_languages": seen,
        "unseen_languages": [lang for lang in eval_langs if lang not in seen],
        "eval_languages": eval_langs,
        "fingerprint": fingerprint_records(mixed),
    }
    assert len(mixed) == spec.budget and len({r.pid for r in mixed}) == spec.budget
    assert Counter(r.lang for r in mixed) == Counter(per_language)
    return Mixture(mixed, summary)


def _assign_pids(
    pids: list[str], by_pid: dict[str, dict[str, ChatRecord]], counts: dict[str, int]
) -> dict[str, list[str]]:
    """Give each language its count of distinct pids, walking the shuffled pid list.

    Languages that fewer pids offer choose first, so that non-parallel sources still fill up.
    """
    available = {lang: sum(1 for p in pids if lang in by_pid[p]) for lang in counts}
    order = sorted(counts, key=lambda lang: available[lang])
    used: set[str] = set()
    chosen: dict[str, list[str]] = {}
    for lang in order:
        take = [p for p in pids if p not in used and lang in by_pid[p]][: counts[lang]]
        if len(take) < counts[lang]:
            raise MixtureError(
                f"not enough distinct prompts for {lang!r}: need {counts[lang]}, only {len(take)} left "
                f"({available[lang]} in the source, the rest used by other languages)"
            )
        used.update(take)
        chosen[lang] = take
    return {lang: chosen[lang] for lang in counts}

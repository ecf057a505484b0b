"""Language confusion (Marchisio et al. 2024): LPR / WPR / LCPR verdicts and metrics, the fastText
identifier, and the agreement between identifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from babeltune.evaluate import EvalConfig, evaluate
from babeltune.evaluate.confusion import confusion_verdict, english_words, lines_to_score, tokenize
from babeltune.evaluate.langid import get_identifier
from babeltune.evaluate.metrics import ScoredResponse, compute_metrics, metric_value


class StubIdentifier:
    """Labels a line by its first word: exact control of the top label and its score."""

    name = "stub"
    lowercase = False
    table: ClassVar[dict[str, tuple[str, float]]] = {
        "hola": ("es", 0.9), "edge": ("es", 0.3), "above": ("es", 0.31), "hello": ("en", 0.95), "zh": ("zh", 0.9)}

    def rank(self, text: str) -> list[tuple[str, float]]:
        label, score = self.table.get(text.split()[0] if text.split() else "", ("en", 0.5))
        return [(label, score)]


STUB = StubIdentifier()


def test_line_rules_as_published() -> None:
    # Every line of 5+ tokens must be the expected language with a score above 0.3.
    assert confusion_verdict("hola uno dos tres cuatro\nhola cinco seis siete ocho", "es", STUB).line_pass is True
    assert confusion_verdict("hola uno dos tres cuatro\nhello one two three four", "es", STUB).line_pass is False
    assert confusion_verdict("edge uno dos tres cuatro", "es", STUB).line_pass is False  # score 0.3: not above
    assert confusion_verdict("above uno dos tres cuatro", "es", STUB).line_pass is True
    # Lines under 5 tokens are ignored (after punctuation is removed: "- - -" is no token).
    assert confusion_verdict("hola uno dos tres cuatro\nhello yes\n- - - - - -", "es", STUB).line_pass is True
    # Text after "\nQ:" is cut off: a model continuing with a new English question is not judged on it.
    assert confusion_verdict("hola uno dos tres cuatro\nQ: hello one two three four", "es", STUB).line_pass is True
    skipped = confusion_verdict("hola uno dos\nhello", "es", STUB)
    assert skipped.line_pass is None and skipped.word_pass is None and skipped.reason.startswith("skipped")
    # WPR only for non-Latin-script languages.
    assert confusion_verdict("hola uno dos tres cuatro", "es", STUB).word_pass is None


def test_word_level_english_words() -> None:
    words = english_words()
    assert "computer" in words and "weather" in words
    assert "the" not in words and "cat" not in words  # 3 letters or fewer do not count
    assert all(w.islower() and len(w) > 3 for w in words)
    ok = confusion_verdict("zh 我们 今天 去 公园 散步 了", "zh", STUB)
    assert ok.line_pass is True and ok.word_pass is True
    english = confusion_verdict("zh 我们 今天 用 computer 看了 天气", "zh", STUB)
    assert english.line_pass is True and english.word_pass is False and "computer" in english.reason
    short_english = confusion_verdict("zh 我们 今天 用 the cat 看了", "zh", STUB)
    assert short_english.word_pass is True
    proper = confusion_verdict("zh 我们 今天 用 Computer 看了", "zh", STUB)
    assert proper.word_pass is True  # matched as written: lower-case dictionary words only
    line_error = confusion_verdict("hello 我们 今天 用 computer 看了", "zh", STUB)
    assert line_error.line_pass is False and line_error.word_pass is None


def test_tokenizers() -> None:
    assert tokenize("我们今天去公园散步", "zh") == ["我们", "今天", "去", "公园", "散步"]
    ja = tokenize("今日は公園を散歩しましょう", "ja")
    assert "公園" in ja and "散歩" in ja and len(ja) >= 5
    assert tokenize("one two  three", "en") == ["one", "two", "three"]
    assert lines_to_score("我们今天去公园散步。", "zh")[0][1] == ["我们", "今天", "去", "公园", "散步"]


def scored(i: int, lang: str, line: bool | None, word: bool | None) -> ScoredResponse:
    return ScoredResponse(
        id=f"r{i}-{lang}", pid=f"r{i}", lang=lang, expected_lang=lang, failed=False, error=None,
        finish_reason="stop", detected_lang=lang, lang_confidence=1.0, lang_status="correct", lang_reason="",
        code_switch_rate=None, segments=0, modifier_kind=None, modifier_passed=None, modifier_reason="",
        modifier_invalid=False, length=10, length_unit="words", completion_tokens=10, line_pass=line,
        word_pass=word, confusion_reason="skipped: no line" if line is None else "")


def test_lpr_wpr_lcpr_hand_computed() -> None:
    responses = [scored(0, "zh", True, True), scored(1, "zh", True, True), scored(2, "zh", True, False),
                 scored(3, "zh", False, None), scored(4, "zh", None, None),
                 scored(0, "es", True, None), scored(1, "es", True, None)]
    rows = compute_metrics(responses)

    def value(metric: str, scope: str) -> float:
        row = metric_value(rows, metric, scope)
        assert row is not None
        return row.value

    assert value("line_pass_rate", "zh") == 0.75  # 3 of 4 scored; the skipped one is not scored
    assert value("word_pass_rate", "zh") == pytest.approx(2 / 3)  # over the 3 line-passing responses
    lcpr_zh = 2 * 0.75 * (2 / 3) / (0.75 + 2 / 3)  # 0.70588
    assert value("lcpr", "zh") == pytest.approx(lcpr_zh)
    assert value("lcpr", "es") == 1.0  # no WPR in Latin script: LCPR = LPR
    assert value("lcpr", "overall") == pytest.approx((lcpr_zh + 1.0) / 2)  # mean over languages
    assert value("line_pass_rate", "overall") == pytest.approx(5 / 6)
    assert metric_value(rows, "confusion_skipped", "zh").n == 1  # type: ignore[union-attr]
    lcpr = metric_value(rows, "lcpr", "overall")
    assert lcpr is not None and lcpr.low < lcpr.value < lcpr.high


def test_fasttext_identifier_on_real_text_and_agreement(tmp_path: Path) -> None:
    fasttext = get_identifier("fasttext")
    assert fasttext.rank("Der Hund läuft schnell über die grüne Wiese im Park.")[0][0] == "de"
    mixed = "Der Hund läuft schnell über die grüne Wiese im Park.\nThe dog runs quickly across the green meadow."
    assert confusion_verdict(mixed, "de", fasttext).line_pass is False
    zh = "我们今天去公园散步，天气非常好，阳光明媚。\n我们用 computer 看了 weather 预报，然后回家了。"
    assert confusion_verdict(zh, "zh", fasttext).word_pass is False
    rows = [{"id": f"g{i}", "pid": f"g{i}", "lang": lang, "prompt": "p", "response": text, "error": None,
             "finish_reason": "stop", "completion_tokens": 9}
            for i, (lang, text) in enumerate([("de", mixed), ("zh", zh),
                                               ("es", "Guarda el pan en una bolsa de tela a temperatura ambiente.")])]
    path = tmp_path / "gens.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    result = evaluate(path, tmp_path / "ev", EvalConfig(identifier="fasttext", compare_identifier="py3langid"))
    assert result.value("line_pass_rate") == pytest.approx(2 / 3)
    assert result.value("word_pass_rate", "zh") == 0.0
    agree = result.row("identifier_agreement", kind="line_pass:py3langid")
    assert agree is not None and agree.n == 3 and 0 <= agree.low <= agree.value <= agree.high <= 1
    table = (tmp_path / "ev" / "table.txt").read_text()
    assert "Language confusion" in table and "LPR" in table and "line_pass:py3langid" in table

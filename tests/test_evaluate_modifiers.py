"""Modifier checks: passing and failing examples in several scripts for every kind, spec validation,
and every bundled reference response passing its own check."""

from __future__ import annotations

from pathlib import Path

import pytest

from babeltune.evaluate import (
    MODIFIER_KINDS,
    CheckContext,
    check_modifier,
    expected_language,
    get_identifier,
    identify,
    parse_modifier,
)
from babeltune.evaluate.modifiers import JUDGE_SCORED_KINDS


def run(spec: dict, response: str, lang: str, detected: str | None = None) -> bool | None:  # type: ignore[type-arg]
    return check_modifier(spec, response, CheckContext(lang=lang, detected=detected)).passed


LIST_OK = {
    "en": "Four tips:\n- Turn off the tap.\n- Take short showers.\n- Fix leaks.\n- Run full loads.",
    "ru": "Советы:\n1. Закрывайте кран.\n2. Принимайте душ.\n3. Чините протечки.\n4. Загружайте машину полностью.",
    "ar": "نصائح:\n• أغلق الصنبور.\n• استحم بسرعة.\n• أصلح التسريبات.\n• شغّل الغسالة ممتلئة.",
    "zh": "建议：\n1) 关紧水龙头。\n2) 缩短淋浴时间。\n3) 修好漏水。\n4) 洗衣机装满再用。",
    "hi": "सुझाव:\n* नल बंद करें।\n* कम समय नहाएँ।\n* रिसाव ठीक करें।\n* मशीन भरकर चलाएँ।",
}


@pytest.mark.parametrize("lang", sorted(LIST_OK))
def test_list_items_counts_exactly(lang: str) -> None:
    text = LIST_OK[lang]
    assert run({"kind": "list_items", "n": 4}, text, lang) is True
    assert run({"kind": "list_items", "n": 3}, text, lang) is False
    assert run({"kind": "list_items", "n": 4}, text.rsplit("\n", 1)[0], lang) is False
    assert run({"kind": "list_items", "n": 4}, text.replace("\n", " "), lang) is False  # one line, no items


def test_list_item_markers_need_a_space_and_text() -> None:
    spec = {"kind": "list_items", "n": 2}
    assert run(spec, "-not an item\n-also not", "en") is False
    assert run(spec, "2024.Year\n- one\n- two", "en") is True


def test_answer_language_uses_the_identified_language() -> None:
    spec = {"kind": "answer_language", "lang": "es"}
    assert run(spec, "Hola, claro que sí.", "en", detected="es") is True
    result = check_modifier(spec, "Hello there", CheckContext(lang="en", detected="en"))
    assert result.passed is False and "answered in en, asked for es" in result.reason
    undecided = check_modifier(spec, "OK", CheckContext(lang="en", detected=None, undetermined_reason="too short"))
    assert undecided.passed is None and "too short" in undecided.reason


def test_answer_language_end_to_end_in_several_scripts() -> None:
    ident = get_identifier()
    cases = [("ar", "en", "Try to go to bed and get up at the same time every day, even at weekends.", True),
             ("en", "ru", "Старайтесь ложиться спать и вставать в одно и то же время каждый день.", True),
             ("zh", "hi", "हर दिन एक ही समय पर सोने और जागने की कोशिश करें, सप्ताहांत में भी।", True),
             ("ru", "en", "Старайтесь ложиться спать и вставать в одно и то же время каждый день.", False),
             ("hi", "zh", "Try to go to bed and get up at the same time every day, even at weekends.", False)]
    for lang, target, response, want in cases:
        detected, _, _ = identify(response, ident)
        assert run({"kind": "answer_language", "lang": target}, response, lang, detected) is want, (lang, target)


def test_html_page() -> None:
    spec = {"kind": "html_page"}
    page = ("<!DOCTYPE html>\n<html>\n<head><title>Растение</title></head>\n"
            "<body dir=\"rtl\">\n<p>מים</p>\n</body>\n</html>")
    assert run(spec, page, "he") is True
    assert run(spec, page.replace("<!DOCTYPE html>\n", ""), "ru") is True  # <html> first is fine
    assert run(spec, "Here is the page:\n" + page, "en") is False
    assert run(spec, page + "\nHope this helps!", "en") is False
    assert run(spec, "<html><p>没有正文</p></html>", "zh") is False
    assert run(spec, "```html\n" + page + "\n```", "en") is False


def test_markdown_headings() -> None:
    spec = {"kind": "markdown_headings", "min_headings": 2}
    text = "# Введение\nТекст.\n## Шаги\n- один\n### Итог\nГотово."
    assert run(spec, text, "ru") is True
    assert run({"kind": "markdown_headings", "min_headings": 4}, text, "ru") is False
    assert run(spec, "#No space\n##AlsoNot\nplain", "en") is False
    assert run(spec, "```\n# comment in code\n# another\n```\n# 标题", "zh") is False
    assert run({"kind": "markdown_headings"}, "# مقدمة\nنص\n## خاتمة", "ar") is True  # default min 2


def test_max_words_counts_words_or_characters() -> None:
    assert run({"kind": "max_words", "n": 5, "unit": "words"}, "Short answer in five words", "en") is True
    assert run({"kind": "max_words", "n": 4, "unit": "words"}, "Short answer in five words", "en") is False
    assert run({"kind": "max_words", "n": 5}, "- Коротко.\n- Ясно и по делу.", "ru") is True  # markers not counted
    assert run({"kind": "max_words", "n": 10, "unit": "chars"}, "把面包放在布袋里。", "zh") is True  # 8 chars
    assert run({"kind": "max_words", "n": 7, "unit": "chars"}, "把面包放在布袋里。", "zh") is False
    assert run({"kind": "max_words", "n": 8}, "把面包放在布袋里，室温保存。", "zh") is False  # unit from language
    result = check_modifier({"kind": "max_words", "n": 3}, "a b c d", CheckContext(lang="en"))
    assert result.reason == "4 words, at most 3 asked"


def test_all_caps_only_for_cased_scripts() -> None:
    spec = {"kind": "all_caps"}
    assert run(spec, "КУПИТЕ ХЛЕБ И МОЛОКО!", "ru") is True
    assert run(spec, "ΚΑΛΗΜΕΡΑ", "el") is True
    assert run(spec, "ÄLÄ UNOHDA LEIPÄÄ, 2 KPL.", "fi") is True
    assert run(spec, "Купите ХЛЕБ", "ru") is False
    assert run(spec, "STRASSE IST groß", "en") is False
    assert run(spec, "把面包放在布袋里", "en") is False  # a cased-language prompt answered without capitals
    for lang, text in (("ar", "احفظ الخبز"), ("hi", "रोटी रखें"), ("zh", "面包"), ("he", "לחם")):
        result = check_modifier(spec, text, CheckContext(lang=lang))
        assert result.passed is None and "not applicable" in result.reason


def test_arrows() -> None:
    spec = {"kind": "arrows"}
    assert run(spec, "→ Шаг один\n→ Шаг два", "ru") is True
    assert run(spec, "-> step one\n\n  ⇒ step two\n➜ three\n➔ four", "en") is True
    assert run(spec, "→ 只有一行", "zh") is False
    assert run(spec, "→ خطوة\nخطوة بلا سهم", "ar") is False
    assert run(spec, "- हाँ\n- नहीं", "hi") is False


def test_empty_response_fails_every_rule_checked_kind() -> None:
    specs = [{"kind": "answer_language", "lang": "en"}, {"kind": "html_page"}, {"kind": "markdown_headings"},
             {"kind": "list_items", "n": 1}, {"kind": "max_words", "n": 10}, {"kind": "all_caps"}, {"kind": "arrows"},
             {"kind": "short"}, {"kind": "long"}]
    assert sorted(s["kind"] for s in specs) == sorted(set(MODIFIER_KINDS) - JUDGE_SCORED_KINDS)
    for spec in specs:
        result = check_modifier(spec, "  ", CheckContext(lang="en"))
        assert result.passed is False and result.reason == "empty response"


def test_short_and_long_thresholds_in_words_and_characters() -> None:
    assert run({"kind": "short"}, " ".join(["word"] * 60), "en") is True
    assert run({"kind": "short"}, " ".join(["word"] * 61), "en") is False
    assert run({"kind": "long"}, " ".join(["слово"] * 150), "ru") is True
    assert run({"kind": "long"}, " ".join(["слово"] * 149), "ru") is False
    # Languages without spaces: 1.5 characters per word (60 -> 90, 150 -> 225).
    assert run({"kind": "short"}, "水" * 90, "zh") is True and run({"kind": "short"}, "水" * 91, "zh") is False
    assert run({"kind": "long"}, "水" * 225, "zh") is True and run({"kind": "long"}, "水" * 224, "zh") is False
    assert run({"kind": "short", "n": 5}, "one two three four five six", "en") is False
    reason = check_modifier({"kind": "long"}, "two words", CheckContext(lang="en")).reason
    assert reason == "2 words, a long answer is at least 150"


@pytest.mark.parametrize("kind", ["scientific_style", "simple_style", "complex_inst"])
def test_style_kinds_are_judge_scored_never_passed_by_a_rule(kind: str) -> None:
    for response in ("A perfectly fine answer in plain words.", ""):
        result = check_modifier({"kind": kind}, response, CheckContext(lang="en"))
        assert result.passed is None and result.reason.startswith("judge-scored")
    assert kind in JUDGE_SCORED_KINDS


@pytest.mark.parametrize("raw,message", [
    ({"kind": "haiku"}, "unknown modifier kind 'haiku'"),
    ({"n": 3}, "unknown modifier kind None"),
    ({"kind": "list_items"}, "field 'n' is required"),
    ({"kind": "list_items", "n": 0}, "positive integer"),
    ({"kind": "list_items", "n": "3"}, "positive integer"),
    ({"kind": "max_words", "n": 5, "unit": "tokens"}, "unit must be"),
    ({"kind": "answer_language", "lang": "klingon"}, "unknown language code"),
    ({"kind": "html_page", "n": 2}, "unknown field"),
    ("list_items", "must be an object"),
])
def test_invalid_specs_are_errors_that_say_why(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_modifier(raw)


def test_expected_language() -> None:
    assert expected_language("ar", {"kind": "answer_language", "lang": "en"}) == "en"
    assert expected_language("ar", {"kind": "list_items", "n": 2}) == "ar"
    assert expected_language("ar", None) == "ar"
    assert parse_modifier({"kind": "answer_language", "lang": "swh"}).lang == "sw"


def _bundled_modifiers() -> Path:
    from babeltune.data.readers import bundled_path

    return bundled_path("modifiers")


@pytest.mark.skipif(not _bundled_modifiers().exists(), reason="bundled modifiers split not present yet")
def test_every_bundled_reference_passes_its_check_and_is_in_the_expected_language() -> None:
    from collections import Counter

    from babeltune.data import read_records
    from babeltune.evaluate import language_verdict

    ident = get_identifier()
    records = read_records("bundled:modifiers")
    kinds: Counter[str] = Counter()
    langs = set()
    for rec in records:
        spec = rec.meta["modifier"]
        response = rec.response or ""
        expected = expected_language(rec.lang, spec)
        verdict = language_verdict(response, expected, ident)
        assert verdict.status == "correct", (rec.id, verdict)
        result = check_modifier(spec, response, CheckContext(rec.lang, verdict.detected, verdict.reason))
        assert result.passed is True, (rec.id, result)
        kinds[result.kind] += 1
        langs.add(rec.lang)
    # The bundled set carries the seven formatting / language kinds; study B's short, long and style kinds come
    # with its released files (data source pasero:DIR).
    assert set(kinds) == set(MODIFIER_KINDS) - {"short", "long"} - JUDGE_SCORED_KINDS and len(langs) == 12

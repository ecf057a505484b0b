"""Language identification of responses: the 12 study languages, undetermined cases, code mapping,
code-switching, and the pluggable identifier."""

from __future__ import annotations

import pytest

from babeltune.evaluate import (
    LangIdThresholds,
    get_identifier,
    identify,
    language_verdict,
    register_identifier,
    to_babeltune_code,
)
from babeltune.evaluate.langid import clean_text, evidence, segments

RESPONSES = {
    "en": "Store the bread in a cloth bag at room temperature. "
          "Do not put it in the fridge, because it goes stale faster.",
    "es": "Guarda el pan en una bolsa de tela a temperatura ambiente. "
          "No lo metas en la nevera, porque se pone duro antes.",
    "it": "Conserva il pane in un sacchetto di stoffa a temperatura ambiente. "
          "Non metterlo in frigorifero, perché indurisce prima.",
    "cs": "Chléb skladujte v látkovém sáčku při pokojové teplotě. "
          "Nedávejte ho do lednice, protože tam rychleji tvrdne.",
    "et": "Hoia leiba riidest kotis toatemperatuuril. Ära pane seda külmkappi, sest seal läheb see kiiremini kõvaks.",
    "fi": "Säilytä leipä kangaspussissa huoneenlämmössä. Älä laita sitä jääkaappiin, koska siellä se kuivuu nopeammin.",
    "ru": "Храните хлеб в тканевом мешке при комнатной температуре. "
          "Не кладите его в холодильник, там он быстрее черствеет.",
    "sw": "Hifadhi mkate kwenye mfuko wa kitambaa kwenye joto la kawaida. "
          "Usiuweke kwenye jokofu kwa sababu unakauka haraka.",
    "ar": "احفظ الخبز في كيس من القماش في درجة حرارة الغرفة. لا تضعه في الثلاجة لأنه يجف هناك بسرعة أكبر.",
    "he": "שמרו את הלחם בשקית בד בטמפרטורת החדר. אל תכניסו אותו למקרר, כי שם הוא מתייבש מהר יותר.",
    "hi": "रोटी को कमरे के तापमान पर कपड़े की थैली में रखें। इसे फ्रिज में न रखें, क्योंकि वहाँ यह जल्दी सूख जाती है।",
    "zh": "把面包放在布袋里，在室温下保存。不要放进冰箱，因为在冰箱里面包会更快变干变硬。",
}


@pytest.fixture(scope="module")
def ident():  # type: ignore[no-untyped-def]
    return get_identifier("py3langid")


@pytest.mark.parametrize("lang", sorted(RESPONSES))
def test_each_study_language_is_identified(ident, lang: str) -> None:  # type: ignore[no-untyped-def]
    verdict = language_verdict(RESPONSES[lang], lang, ident)
    assert verdict.status == "correct" and verdict.detected == lang
    assert verdict.code_switch_rate == 0.0 and verdict.segments >= 1


def test_wrong_language_is_wrong_not_undetermined(ident) -> None:  # type: ignore[no-untyped-def]
    verdict = language_verdict(RESPONSES["en"], "es", ident)
    assert verdict.status == "wrong" and verdict.detected == "en" and "expected es" in verdict.reason
    assert verdict.code_switch_rate == 1.0


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("   \n ", "empty"),
    ("42", "too short"),
    ("Sí.", "too short"),
    ("好的", "too short"),
    ("```python\nfor i in range(10):\n    print(i * i)\n```", "too short"),
    ("alpha = 3.14159 + 2.71828 = 5.85987; beta = 1,000,000 / 7 = 142,857.14; gamma = 12 * 9 = 108", "numbers"),
])
def test_short_and_non_linguistic_responses_are_undetermined(ident, text: str, why: str) -> None:  # type: ignore[no-untyped-def]
    verdict = language_verdict(text, "en", ident)
    assert verdict.status == "undetermined" and verdict.detected is None and why in verdict.reason
    assert verdict.code_switch_rate is None


def test_code_switching_rate_counts_lines_and_sentences(ident) -> None:  # type: ignore[no-untyped-def]
    mixed = RESPONSES["es"] + "\n" + RESPONSES["en"]  # 2 Spanish sentences, then 2 English ones
    verdict = language_verdict(mixed, "es", ident)
    assert verdict.segments == 4 and verdict.code_switch_rate == pytest.approx(0.5)
    hindi_with_english = RESPONSES["hi"] + " Please remember this simple rule for storing bread at home."
    verdict = language_verdict(hindi_with_english, "hi", ident)
    assert verdict.status == "correct" and verdict.code_switch_rate == pytest.approx(1 / 3)


def test_markup_is_removed_before_identification(ident) -> None:  # type: ignore[no-untyped-def]
    page = f"<!DOCTYPE html>\n<html><body><h1>Pan</h1><p>{RESPONSES['es']}</p></body></html>"
    assert clean_text(page).startswith("Pan\nGuarda el pan")
    assert language_verdict(page, "es", ident).status == "correct"
    arrows = "→ " + RESPONSES["ru"].replace(". ", ".\n→ ")
    assert language_verdict(arrows, "ru", ident).status == "correct"
    caps = RESPONSES["fi"].upper()
    assert identify(caps, ident)[0] == "fi"


def test_evidence_counts_marks_and_weighs_cjk() -> None:
    assert evidence("कि") == 2  # a consonant and a vowel sign (a mark, not a letter to str.isalpha)
    assert evidence("面包") == 6 and evidence("ab 12") == 2
    assert segments("Uno. Dos!\nTres") == ["Uno.", "Dos!", "Tres"]
    assert segments("一。二！") == ["一。", "二！"]


def test_codes_are_mapped_to_babeltune_codes() -> None:
    assert to_babeltune_code("wuu") == "zh" and to_babeltune_code("yue") == "zh"
    assert to_babeltune_code("arz") == "ar" and to_babeltune_code("iw") == "he"
    assert to_babeltune_code("nn") == "no" and to_babeltune_code("EN") == "en"
    assert to_babeltune_code("zxx") is None
    assert to_babeltune_code("la") == "la"  # unknown to babeltune: kept as the tool says


class _AlwaysSwahili:
    name = "always-sw"

    def rank(self, text: str) -> list[tuple[str, float]]:
        return [("swh", 0.9), ("en", 0.1)]


def test_identifier_is_pluggable() -> None:
    register_identifier("always-sw", _AlwaysSwahili)
    ident = get_identifier("always-sw")
    assert language_verdict(RESPONSES["en"], "sw", ident).status == "correct"
    with pytest.raises(ValueError, match=r"unknown language identifier 'nope'.*py3langid"):
        get_identifier("nope")


def test_thresholds_are_configurable(ident) -> None:  # type: ignore[no-untyped-def]
    strict = LangIdThresholds(min_response=1000)
    assert language_verdict(RESPONSES["en"], "en", ident, strict).status == "undetermined"

import pytest

from babeltune.languages import (
    LANGUAGES,
    STUDY_A_LANGUAGES,
    UnknownLanguageError,
    get_language,
    normalize_code,
    parse_language_list,
)


def test_study_a_languages_are_known_with_names() -> None:
    assert len(STUDY_A_LANGUAGES) == 12
    for code in STUDY_A_LANGUAGES:
        assert LANGUAGES[code].name


def test_normalize_foreign_codes() -> None:
    assert normalize_code("iw") == "he"
    assert normalize_code("swh_Latn") == "sw"
    assert normalize_code("zho_Hans") == "zh"
    assert normalize_code("ES") == "es"
    assert normalize_code("xx") is None


def test_unknown_language_lists_known_codes() -> None:
    with pytest.raises(UnknownLanguageError, match="known codes"):
        get_language("klingon")


def test_parse_language_list_keeps_order_and_rejects_repeats() -> None:
    assert parse_language_list("en, es,fi") == ["en", "es", "fi"]
    with pytest.raises(ValueError, match="twice"):
        parse_language_list("en,es,en")


def test_script_facts() -> None:
    assert not get_language("zh").spaces
    assert not get_language("ar").cased
    assert get_language("ru").cased

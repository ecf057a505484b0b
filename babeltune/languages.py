"""The languages babeltune knows: ISO 639-1 codes, names, scripts and the facts checks depend on.

Language is a parameter everywhere in babeltune; this table is the one place that says what a code
means. `cased` tells whether the script has upper and lower case (the all-capitals check needs it);
`spaces` whether words are separated by spaces (word counts fall back to characters otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """One language babeltune can label, mix, generate in and identify."""

    code: str
    """ISO 639-1 code, the only form babeltune stores."""
    name: str
    """English name, used in prompts such as "answer in <name>" and in reports."""
    native: str
    """The language's own name for itself."""
    script: str
    """ISO 15924 script code of the usual writing system."""
    cased: bool
    """Whether the script distinguishes upper and lower case."""
    spaces: bool = True
    """Whether words are separated by spaces."""
    flores: str | None = None
    """FLORES-200 code, for reading FLORES files."""


_TABLE: tuple[Language, ...] = (
    Language("ar", "Arabic", "العربية", "Arab", cased=False, flores="arb_Arab"),
    Language("zh", "Chinese", "中文", "Hans", cased=False, spaces=False, flores="zho_Hans"),
    Language("cs", "Czech", "čeština", "Latn", cased=True, flores="ces_Latn"),
    Language("en", "English", "English", "Latn", cased=True, flores="eng_Latn"),
    Language("et", "Estonian", "eesti", "Latn", cased=True, flores="est_Latn"),
    Language("fi", "Finnish", "suomi", "Latn", cased=True, flores="fin_Latn"),
    Language("he", "Hebrew", "עברית", "Hebr", cased=False, flores="heb_Hebr"),
    Language("hi", "Hindi", "हिन्दी", "Deva", cased=False, flores="hin_Deva"),
    Language("it", "Italian", "italiano", "Latn", cased=True, flores="ita_Latn"),
    Language("ru", "Russian", "русский", "Cyrl", cased=True, flores="rus_Cyrl"),
    Language("es", "Spanish", "español", "Latn", cased=True, flores="spa_Latn"),
    Language("sw", "Swahili", "Kiswahili", "Latn", cased=True, flores="swh_Latn"),
    # Study A's side study.
    Language("sr", "Serbian", "српски", "Cyrl", cased=True, flores="srp_Cyrl"),
    Language("hr", "Croatian", "hrvatski", "Latn", cased=True, flores="hrv_Latn"),
    Language("sl", "Slovenian", "slovenščina", "Latn", cased=True, flores="slv_Latn"),
    Language("pl", "Polish", "polski", "Latn", cased=True, flores="pol_Latn"),
    Language("sk", "Slovak", "slovenčina", "Latn", cased=True, flores="slk_Latn"),
    # Study B's languages and other frequent ones.
    Language("fr", "French", "français", "Latn", cased=True, flores="fra_Latn"),
    Language("pt", "Portuguese", "português", "Latn", cased=True, flores="por_Latn"),
    Language("de", "German", "Deutsch", "Latn", cased=True, flores="deu_Latn"),
    Language("nl", "Dutch", "Nederlands", "Latn", cased=True, flores="nld_Latn"),
    Language("sv", "Swedish", "svenska", "Latn", cased=True, flores="swe_Latn"),
    Language("da", "Danish", "dansk", "Latn", cased=True, flores="dan_Latn"),
    Language("no", "Norwegian", "norsk", "Latn", cased=True, flores="nob_Latn"),
    Language("uk", "Ukrainian", "українська", "Cyrl", cased=True, flores="ukr_Cyrl"),
    Language("bg", "Bulgarian", "български", "Cyrl", cased=True, flores="bul_Cyrl"),
    Language("el", "Greek", "Ελληνικά", "Grek", cased=True, flores="ell_Grek"),
    Language("ro", "Romanian", "română", "Latn", cased=True, flores="ron_Latn"),
    Language("hu", "Hungarian", "magyar", "Latn", cased=True, flores="hun_Latn"),
    Language("tr", "Turkish", "Türkçe", "Latn", cased=True, flores="tur_Latn"),
    Language("fa", "Persian", "فارسی", "Arab", cased=False, flores="pes_Arab"),
    Language("ur", "Urdu", "اردو", "Arab", cased=False, flores="urd_Arab"),
    Language("bn", "Bengali", "বাংলা", "Beng", cased=False, flores="ben_Beng"),
    Language("ta", "Tamil", "தமிழ்", "Taml", cased=False, flores="tam_Taml"),
    Language("te", "Telugu", "తెలుగు", "Telu", cased=False, flores="tel_Telu"),
    Language("mr", "Marathi", "मराठी", "Deva", cased=False, flores="mar_Deva"),
    Language("ja", "Japanese", "日本語", "Jpan", cased=False, spaces=False, flores="jpn_Jpan"),
    Language("ko", "Korean", "한국어", "Hang", cased=False, flores="kor_Hang"),
    Language("th", "Thai", "ไทย", "Thai", cased=False, spaces=False, flores="tha_Thai"),
    Language("vi", "Vietnamese", "Tiếng Việt", "Latn", cased=True, flores="vie_Latn"),
    Language("id", "Indonesian", "Bahasa Indonesia", "Latn", cased=True, flores="ind_Latn"),
    Language("ms", "Malay", "Bahasa Melayu", "Latn", cased=True, flores="zsm_Latn"),
    Language("yo", "Yoruba", "Yorùbá", "Latn", cased=True, flores="yor_Latn"),
    Language("am", "Amharic", "አማርኛ", "Ethi", cased=False, flores="amh_Ethi"),
    Language("ca", "Catalan", "català", "Latn", cased=True, flores="cat_Latn"),
    Language("lt", "Lithuanian", "lietuvių", "Latn", cased=True, flores="lit_Latn"),
    Language("lv", "Latvian", "latviešu", "Latn", cased=True, flores="lvs_Latn"),
)

LANGUAGES: dict[str, Language] = {lang.code: lang for lang in _TABLE}
"""Every language babeltune knows, by ISO 639-1 code."""

STUDY_A_LANGUAGES: tuple[str, ...] = ("ar", "zh", "cs", "en", "et", "fi", "he", "hi", "it", "ru", "es", "sw")
"""The twelve languages of study A (Shaham et al., 2024), in the paper's order."""

CENTRAL_LANGUAGE = "en"

_ALIASES: dict[str, str] = {
    # Codes that other tools emit for languages babeltune stores under another code.
    "iw": "he",
    "zh-cn": "zh",
    "zh-hans": "zh",
    "zh_cn": "zh",
    "nb": "no",
    "nn": "no",
    "in": "id",
}
_ALIASES.update({lang.flores.lower(): lang.code for lang in _TABLE if lang.flores})
_ALIASES.update({lang.flores.split("_")[0]: lang.code for lang in _TABLE if lang.flores})
_ALIASES.update({"swh": "sw", "arb": "ar", "zho": "zh", "pes": "fa", "zsm": "ms", "lvs": "lv"})


class UnknownLanguageError(ValueError):
    """A language code babeltune does not know."""


def normalize_code(code: str) -> str | None:
    """Map a language code from another tool (FLORES, ISO 639-3, old ISO codes) to babeltune's.

    Returns None when the code is unknown; never guesses.
    """
    key = code.strip().lower().replace(" ", "")
    if key in LANGUAGES:
        return key
    return _ALIASES.get(key)


def get_language(code: str) -> Language:
    """The Language for a code, or UnknownLanguageError listing what is known."""
    norm = normalize_code(code)
    if norm is None:
        known = ", ".join(sorted(LANGUAGES))
        raise UnknownLanguageError(f"unknown language code {code!r}; known codes: {known}")
    return LANGUAGES[norm]


def parse_language_list(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Parse 'en,es, fi' (or a list) into validated, normalised codes, keeping order, no repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    codes: list[str] = []
    for item in items:
        if not item.strip():
            continue
        code = get_language(item).code
        if code in codes:
            raise ValueError(f"language {code!r} is listed twice in {text!r}")
        codes.append(code)
    return codes

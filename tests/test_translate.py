"""`babeltune data translate`: masking, gates, a scripted fake translator on loopback (known text,
wrong-language text, empty text, broken replies, lost markers, overlong text), the local engine and
`babeltune serve` on the tiny model, and a SIGKILLed translation that resumes with nothing lost or
duplicated."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from babeltune.data import ChatRecord, Message, load_records
from babeltune.data.translate import (
    LENGTH_BANDS,
    PROMPT_VERSION,
    REASONS,
    TEXT_HEADER,
    TranslateConfig,
    TranslationGates,
    gate,
    length_bounds,
    mask,
    translate_records,
    unmask,
)
from babeltune.generate.endpoint import EndpointBackend, EndpointConfig
from babeltune.generate.rows import GenerationRow
from babeltune.generate.settings import DecodingSettings
from babeltune.languages import LANGUAGES, STUDY_A_LANGUAGES
from tests import test_vllm
from tests.conftest import write_rows
from tests.loopback import QuietHandler, loopback_server, serving

CODE = "```python\nprint('Hello, {name}!'.format(name='Ana'))\n```"
# English source turns and their known translations (what the fake translator returns).
TEXTS: dict[str, dict[str, str]] = {
    "p1/0": {
        "en": "Please explain how the {name} placeholder and %s work in this template, and what the <b> tag does. "
              "The documentation is at https://example.com/docs for more details.",
        "es": "Explica cómo funcionan el marcador {name} y %s en esta plantilla, y qué hace la etiqueta <b>. "
              "La documentación está en https://example.com/docs para más detalles.",
        "fi": "Selitä, miten paikkamerkki {name} ja %s toimivat tässä mallissa ja mitä tunniste <b> tekee. "
              "Dokumentaatio on osoitteessa https://example.com/docs lisätietoja varten.",
        "ru": "Объясните, как работают заполнитель {name} и %s в этом шаблоне и что делает тег <b>. "
              "Документация находится по адресу https://example.com/docs, там больше подробностей.",
    },
    "p1/1": {
        "en": f"The placeholder is replaced by a value when the program runs. Here is an example:\n{CODE}\n"
              "The tag makes the text bold in the browser.",
        "es": f"El marcador se sustituye por un valor cuando el programa se ejecuta. Aquí tienes un ejemplo:\n{CODE}\n"
              "La etiqueta pone el texto en negrita en el navegador.",
        "fi": f"Paikkamerkki korvataan arvolla, kun ohjelma suoritetaan. Tässä on esimerkki:\n{CODE}\n"
              "Tunniste lihavoi tekstin selaimessa.",
        "ru": f"Заполнитель заменяется значением при запуске программы. Вот пример:\n{CODE}\n"
              "Тег делает текст жирным в браузере.",
    },
    "p2/0": {
        "en": "What are the main differences between a lake and a river, and why do people build their towns near "
              "water?",
        "es": "¿Cuáles son las principales diferencias entre un lago y un río, y por qué la gente construye sus "
              "pueblos cerca del agua?",
        "fi": "Mitkä ovat järven ja joen tärkeimmät erot, ja miksi ihmiset rakentavat kaupunkinsa veden lähelle?",
        "ru": "Каковы главные различия между озером и рекой и почему люди строят свои города рядом с водой?",
    },
    "p3/0": {
        "en": "Give me three simple ideas for a healthy breakfast that I can prepare in ten minutes before work.",
        "es": "Dame tres ideas sencillas para un desayuno saludable que pueda preparar en diez minutos antes del "
              "trabajo.",
        "fi": "Anna minulle kolme yksinkertaista ideaa terveelliseen aamiaiseen, jonka voin valmistaa kymmenessä "
              "minuutissa ennen töitä.",
        "ru": "Дай мне три простые идеи для здорового завтрака, который я могу приготовить за десять минут перед "
              "работой.",
    },
    "p4/0": {
        "en": "Describe the weather in your favourite city during the winter months and what people usually wear "
              "there.",
        "es": "Describe el tiempo en tu ciudad favorita durante los meses de invierno y lo que la gente suele llevar "
              "allí.",
        "fi": "Kuvaile säätä lempikaupungissasi talvikuukausina ja mitä ihmiset siellä yleensä pukevat päälleen.",
        "ru": "Опиши погоду в твоём любимом городе в зимние месяцы и то, что люди обычно там носят.",
    },
    "p5/0": {
        "en": "Turn the variable {count} into a sentence that tells the user how many new messages are waiting "
              "for them.",
        "es": "Convierte la variable {count} en una frase que le diga al usuario cuántos mensajes nuevos le están "
              "esperando.",
        "fi": "Muuta muuttuja {count} lauseeksi, joka kertoo käyttäjälle, kuinka monta uutta viestiä odottaa häntä.",
        "ru": "Преврати переменную {count} в предложение, которое сообщает пользователю, сколько новых сообщений "
              "его ждёт.",
    },
}
CODE_ONLY = "```sh\nls -la\n```"
# (turn, language) -> what the fake does instead of translating: on every attempt, or only the first.
FAULTS: dict[tuple[str, str], tuple[str, bool]] = {
    ("p2/0", "es"): ("english", True),  # wrong language once: passes on the retry
    ("p3/0", "fi"): ("empty", False),
    ("p4/0", "ru"): ("broken", False),
    ("p5/0", "es"): ("drop_marker", False),
    ("p5/0", "fi"): ("overlong", False),
}
LANGS = ["es", "fi", "ru"]
NAMES = {lang.name: code for code, lang in LANGUAGES.items()}


def source_rows() -> list[dict[str, Any]]:
    rows = []
    for pid in ("p1", "p2", "p3", "p4", "p5"):
        answer = TEXTS["p1/1"]["en"] if pid == "p1" else CODE_ONLY
        rows.append({"id": pid, "instruction": TEXTS[f"{pid}/0"]["en"], "output": answer, "topic": pid})
    return rows


class FakeTranslator(QuietHandler):
    """An OpenAI-compatible translator that answers from `TEXTS`, with `FAULTS` injected."""

    by_masked: ClassVar[dict[str, str]] = {mask(t["en"])[0]: turn for turn, t in TEXTS.items()}
    delay: ClassVar[float] = 0.0
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.send_body(200, json.dumps({"object": "list", "data": [{"id": "fake-translator"}]}))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        masked = prompt.partition(TEXT_HEADER)[2]
        match = re.search(r"into (\w+)\.", prompt)
        assert match is not None
        lang, turn = NAMES[match.group(1)], self.by_masked[masked]
        retry = "previous reply was rejected" in prompt
        type(self).requests.append(f"{turn}:{lang}:{int(retry)}")
        time.sleep(self.delay)
        fault, once = FAULTS.get((turn, lang), ("", False))
        text = mask(TEXTS[turn][lang])[0]
        if fault and not (once and retry):
            if fault == "broken":
                self.send_body(200, "<html>upstream error</html>", "text/html")
                return
            text = {"english": masked, "empty": "  ", "drop_marker": text.replace("⟦1⟧", ""),
                    "overlong": text + " Tämä on ylimääräistä tekstiä, jota kukaan ei pyytänyt." * 6}[fault]
        self.send_body(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": text},
                                                 "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 10, "completion_tokens": 10}}))


@contextlib.contextmanager
def fake_translator(delay: float = 0.0) -> Iterator[str]:
    FakeTranslator.delay, FakeTranslator.requests = delay, []
    with loopback_server(FakeTranslator, "/v1") as url:
        yield url


def test_mask_protects_code_links_placeholders_and_tags() -> None:
    text = ("Use {name}, {0}, {{var}}, %s and %(user)s in <a href='x'>the link</a> at https://example.com/a?b=1. "
            "Then run `make test`:\n```\nfor i in x: pass\n```")
    masked, spans = mask(text)
    assert spans == ["{name}", "{0}", "{{var}}", "%s", "%(user)s", "<a href='x'>", "</a>", "https://example.com/a?b=1",
                     "`make test`", "```\nfor i in x: pass\n```"]
    assert "example" not in masked and "make" not in masked and "for i" not in masked
    assert unmask(masked, spans) == text
    moved = masked.replace("⟦2⟧, ", "").replace("Use ", "Use ⟦2⟧ ")
    assert unmask(moved, spans) == text.replace("{0}, ", "").replace("Use ", "Use {0} ")
    assert unmask(masked.replace("⟦3⟧", ""), spans) is None
    assert unmask(masked + "⟦3⟧", spans) is None
    assert unmask(masked + "⟦11⟧", spans) is None


def test_gates_each_reason() -> None:
    gates = TranslationGates()
    masked, spans = mask(TEXTS["p1/0"]["en"])
    good = mask(TEXTS["p1/0"]["es"])[0]

    def reason(response: str | None, **row: Any) -> str:
        return gate(GenerationRow("r-es", "es", response, **{"finish_reason": "stop", **row}), masked, spans, "en",
                    "es", gates)[1]

    assert gate(GenerationRow("r-es", "es", good, "stop"), masked, spans, "en", "es", gates)[0] == TEXTS["p1/0"]["es"]
    assert reason(None, error="HTTP 500") == "request_failed"
    assert reason(good, finish_reason="length") == "truncated"
    assert reason(" \n") == "empty"
    assert reason(good.replace("⟦2⟧", "")) == "placeholder_changed"
    assert reason(good[:40] + " ⟦2⟧ ⟦3⟧ ⟦4⟧") == "length_ratio"
    assert reason(masked) == "wrong_language"
    # per-language bands (LENGTH_BANDS): Chinese takes about a third of the characters of English
    assert length_bounds(90, "en", "zh", gates) == pytest.approx((0.15 * 90 - 12, 0.87 * 90 + 12))
    assert length_bounds(90, "en", "es", gates) == pytest.approx((0.66 * 90 - 12, 2.09 * 90 + 12))
    # a source in another language is measured in English characters first (its length / its median)
    assert length_bounds(1179, "es", "zh", gates) == pytest.approx((0.15 * 1000 - 12, 0.87 * 1000 + 12))
    # a language without a calibrated band: its script's factor x min_ratio / max_ratio
    assert length_bounds(100, "en", "th", gates) == pytest.approx((0.9 * 0.5 * 100 - 12, 0.9 * 1.9 * 100 + 12))


def text_of(lang: str, n: int) -> str:
    """n characters of `lang`'s own script (its native name over and over, spaces left out)."""
    letters = LANGUAGES[lang].native.replace(" ", "")
    return (letters * n)[:n]


@pytest.mark.parametrize("lang", [code for code in STUDY_A_LANGUAGES if code != "en"])
def test_length_gate_accepts_the_flores_median_and_rejects_outliers(lang: str) -> None:
    """A FLORES-like pair (an English sentence of 150 characters and a translation at the language's median
    ratio) passes; one a third shorter than the band's floor, or 1.5 x its ceiling, does not."""
    gates = TranslationGates(check_language=False)
    source = text_of("en", 150)
    median, low, high = gates.band(lang)
    assert (median, low, high) == LENGTH_BANDS[lang]

    def reason(n: int) -> str:
        return gate(GenerationRow("r", lang, text_of(lang, n), "stop"), source, [], "en", lang, gates)[1]

    assert reason(round(median * 150)) == ""
    assert reason(round(low * 150 * 2 / 3) - gates.slack_chars) == "length_ratio"
    assert reason(round(high * 150 * 1.5) + gates.slack_chars) == "length_ratio"


def test_length_bands_are_overridden_field_by_field() -> None:
    from babeltune.config import ConfigError, from_dict

    gates = from_dict(TranslationGates, {"length": {"zh": {"high": 0.5}, "th": {"median": 1.2}}})
    assert gates.band("zh") == (LENGTH_BANDS["zh"][0], LENGTH_BANDS["zh"][1], 0.5)
    assert gates.band("es") == LENGTH_BANDS["es"]
    assert gates.band("th") == pytest.approx((1.2, 0.9 * 0.5, 0.9 * 1.9))
    zh = text_of("zh", 60)  # 0.6 x a 100-character English text: inside the calibrated band, above the override
    row = GenerationRow("r", "zh", zh, "stop")
    assert gate(row, text_of("en", 100), [], "en", "zh", TranslationGates(check_language=False))[1] == ""
    assert gate(row, text_of("en", 100), [], "en", "zh", TranslationGates(
        length=gates.length, check_language=False, slack_chars=0))[1] == "length_ratio"
    with pytest.raises(ConfigError, match=r"length\.zh: need 0 < low <= median <= high"):
        from_dict(TranslationGates, {"length": {"zh": {"low": 0.5}}})


def check_results(out: Path, summary: dict[str, Any]) -> None:
    records = load_records(out).records
    assert sorted({r.pid for r in records}) == ["p1", "p2"]
    assert len(records) == 8
    by_key = {(r.pid, r.lang): r for r in records}
    for lang in LANGS:
        rec = by_key[("p1", lang)]
        assert rec.id == f"p1-{lang}" and rec.prompt == TEXTS["p1/0"][lang] and rec.response == TEXTS["p1/1"][lang]
        assert rec.meta["translation"]["prompt_version"] == PROMPT_VERSION
        assert rec.meta["translation"]["backend"]["model"] == "fake-translator"
        assert rec.meta["translation"]["source_id"] == "p1-en" and rec.meta["topic"] == "p1"
        assert by_key[("p2", lang)].prompt == TEXTS["p2/0"][lang]
        assert by_key[("p2", lang)].response == CODE_ONLY  # nothing to translate: copied
    assert by_key[("p1", "en")].prompt == TEXTS["p1/0"]["en"]
    assert summary["first_attempt_rejected"] == {"wrong_language": 1, "empty": 1, "request_failed": 1,
                                                 "placeholder_changed": 1, "length_ratio": 1}
    assert summary["retried"] == 5 and summary["passed_on_retry"] == 1
    assert summary["rejected"] == {"fi": {"empty": 1, "length_ratio": 1}, "ru": {"request_failed": 1},
                                   "es": {"placeholder_changed": 1}}
    assert summary["complete_prompts"] == 2 and summary["incomplete_prompts"] == 3
    assert summary["items"] == 30 and summary["copied"] == 12 and summary["records_written"] == 8
    assert summary["first_attempt_rejected_share"]["empty"] == pytest.approx(1 / 18, abs=1e-4)
    rejects = [json.loads(line) for line in out.with_name("set.rejects.jsonl").read_text("utf-8").splitlines()]
    assert sorted((r["pid"], r["lang"], r["reason"]) for r in rejects) == [
        ("p3", "fi", "empty"), ("p4", "ru", "request_failed"), ("p5", "es", "placeholder_changed"),
        ("p5", "fi", "length_ratio")]


def test_fake_translator_known_wrong_empty_broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_rows(tmp_path / "en.jsonl", source_rows())
    out = tmp_path / "set.jsonl"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_translator() as url:
        cfg = TranslateConfig(source=str(src), out=str(out), languages=LANGS, source_lang="en",
                              endpoint=EndpointConfig(url=url, max_retries=0, backoff=0.0))
        summary = translate_records(load_records(src, lang="en").records, EndpointBackend(cfg.endpoint), cfg)
        check_results(out, summary.to_dict())
        # 6 turns to translate (both of p1, the prompts of p2-p5) x 3 languages = 18 requests, then 5 retries
        assert len(FakeTranslator.requests) == 18 + 5
        assert sorted(r for r in FakeTranslator.requests if r.endswith(":1")) == [
            "p2/0:es:1", "p3/0:fi:1", "p4/0:ru:1", "p5/0:es:1", "p5/0:fi:1"]
        # a rerun reuses every answer except the broken reply's (a failed request is retried)
        FakeTranslator.requests = []
        again = translate_records(load_records(src, lang="en").records, EndpointBackend(cfg.endpoint), cfg)
        assert sorted(FakeTranslator.requests) == ["p4/0:ru:0", "p4/0:ru:1"]
        check_results(out, again.to_dict())
    result = load_records(out)
    assert result.report.rejected == {}
    assert all(len({r.lang for r in result.records if r.pid == pid}) == 4 for pid in ("p1", "p2"))


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "babeltune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli_args(src: Path, out: Path, url: str) -> list[str]:
    return ["data", "translate", "--source", str(src), "--source-lang", "en", "--languages", ",".join(LANGS),
            "--out", str(out), "--endpoint", url, "--max-retries", "0", "--concurrency", "1",
            "--set", "endpoint.backoff=0"]


def test_cli_translation_sigkilled_resumes_nothing_lost_or_duplicated(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "en.jsonl", source_rows())
    ref_out, out = tmp_path / "ref" / "set.jsonl", tmp_path / "run" / "set.jsonl"
    with fake_translator(delay=0.15) as url:
        ref = run_cli(*cli_args(src, ref_out, url))
        assert ref.returncode == 1, ref.stderr  # the broken reply stays failed: rerun to retry it
        assert "2 prompts complete in every language, 3 incomplete" in ref.stdout
        assert "rejected in ru: request_failed=1" in ref.stdout
        out.parent.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        proc = subprocess.Popen([sys.executable, "-m", "babeltune.cli", *cli_args(src, out, url)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        cache = tmp_path / "run" / "set.translations.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not cache.exists() or cache.read_bytes().count(b"\n") < 6):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lines = cache.read_bytes().count(b"\n")
        assert 6 <= lines < 23 and not out.exists()
        FakeTranslator.requests = []
        resumed = run_cli(*cli_args(src, out, url))
        assert resumed.returncode == 1, resumed.stderr
    assert out.read_text("utf-8") == ref_out.read_text("utf-8")
    rows = [json.loads(line) for line in cache.read_text("utf-8").splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 23
    assert len(FakeTranslator.requests) <= 23 - lines + 2  # what was already there was not asked again
    ref_summary = json.loads(ref_out.with_name("set.summary.json").read_text("utf-8"))
    summary = json.loads(out.with_name("set.summary.json").read_text("utf-8"))
    for name in ("first_attempt_rejected", "rejected", "complete_prompts", "records_written", "retried"):
        assert summary[name] == ref_summary[name]


def test_cli_errors_name_the_field(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "en.jsonl", source_rows())
    bad = run_cli("data", "translate", "--source", str(src), "--out", str(tmp_path / "o.jsonl"), "--languages", "xx")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "xx" in bad.stderr
    missing = run_cli("data", "translate", "--source", str(src), "--out", str(tmp_path / "o.jsonl"))
    assert missing.returncode != 0 and "languages" in missing.stderr and "Traceback" not in missing.stderr
    several = run_cli("data", "translate", "--source", "bundled:train", "--out", str(tmp_path / "o.jsonl"),
                      "--languages", "es")
    assert several.returncode != 0 and "give --source-lang L" in several.stderr
    gates = run_cli("data", "translate", "--source", str(src), "--out", str(tmp_path / "o.jsonl"), "--languages",
                    "es", "--set", "gates.min_ratio=2")
    assert gates.returncode != 0 and "min_ratio" in gates.stderr and "Traceback" not in gates.stderr
    band = run_cli("data", "translate", "--source", str(src), "--out", str(tmp_path / "o.jsonl"), "--languages",
                   "zh", "--set", "gates.length.zh.low=0.5")  # above Chinese's median: --set reaches the band
    assert band.returncode != 0 and "length.zh: need 0 < low <= median <= high" in band.stderr
    assert "Traceback" not in band.stderr


def tiny_records() -> list[ChatRecord]:
    return [ChatRecord(f"t{i}-en", f"t{i}", "en", (Message("user", TEXTS[f"p{i}/0"]["en"]),
                                                    Message("assistant", CODE_ONLY))) for i in (2, 3)]


def check_accounting(summary: Any, out: Path) -> None:
    total_rejected = sum(sum(v.values()) for v in summary.rejected.values())
    sent = summary.items - summary.copied
    assert set(summary.first_attempt_rejected) <= set(REASONS)
    assert all(set(v) <= set(REASONS) for v in summary.rejected.values())
    passed_first = sent - sum(summary.first_attempt_rejected.values())
    assert passed_first + summary.passed_on_retry + total_rejected == sent
    complete = {r.pid for r in load_records(out).records}
    assert len(complete) == summary.complete_prompts == 2 - summary.incomplete_prompts


def test_source_language_selects_a_parallel_sources_records() -> None:
    from babeltune.data.translate import select_source

    records = load_records("bundled:train").records
    english = select_source(records, "bundled:train", "en")
    assert english and {r.lang for r in english} == {"en"} and len(english) == len({r.pid for r in records})
    assert select_source(english, "x", None) == english


def test_translation_through_serve_on_the_tiny_model(tmp_path: Path, tiny_tok: Any, tiny_lm: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from babeltune.generate.local import LocalBackend

    local = LocalBackend(tiny_lm, tiny_tok, batch_size=4, model_name="tiny")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with serving(local) as server:
        out = tmp_path / "set.jsonl"
        cfg = TranslateConfig(source="-", out=str(out), languages=["es", "ru"],
                              endpoint=EndpointConfig(url=server.url, max_retries=0))
        cfg = TranslateConfig(**{**vars(cfg), "decoding": cfg.decoding.__class__(max_new_tokens=12,
                                                                                 repetition_penalty=1.0)})
        summary = translate_records(tiny_records(), EndpointBackend(cfg.endpoint), cfg)
        check_accounting(summary, out)
        rows = [json.loads(line) for line in out.with_name("set.translations.jsonl").read_text("utf-8").splitlines()]
        assert rows and all(r["model"]["model"] == "tiny" and r["error"] is None for r in rows)
        # the served answers are the local engine's: the same run through the local backend agrees
        local_out = tmp_path / "local" / "set.jsonl"
        local_cfg = TranslateConfig(**{**vars(cfg), "out": str(local_out), "backend": "local"})
        local_summary = translate_records(tiny_records(), local, local_cfg)
        check_accounting(local_summary, local_out)
        local_rows = local_out.with_name("set.translations.jsonl").read_text("utf-8").splitlines()
        assert sorted(json.loads(r)["response"] for r in local_rows) == sorted(r["response"] for r in rows)
        assert local_summary.first_attempt_rejected == summary.first_attempt_rejected


def test_cli_local_backend_on_a_tiny_model_folder(tmp_path: Path) -> None:
    from tests.train_helpers import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    src = write_rows(tmp_path / "en.jsonl", source_rows()[1:3])
    out = tmp_path / "set.jsonl"
    ran = run_cli("data", "translate", "--source", str(src), "--source-lang", "en", "--languages", "es",
                  "--out", str(out), "--backend", "local", "--model", str(model), "--max-new-tokens", "4")
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(out.with_name("set.summary.json").read_text("utf-8"))
    assert summary["backend"]["backend"] == "local" and summary["items"] == 4 and summary["copied"] == 2
    # 4 new tokens never hold a whole translation: both prompts are cut short, twice, and left out
    assert summary["first_attempt_rejected"] == {"truncated": 2} and summary["rejected"] == {"es": {"truncated": 2}}
    assert summary["complete_prompts"] == 0 and out.read_text("utf-8") == ""
    assert "rejected in es: truncated=2" in ran.stdout


def test_an_edited_source_turn_is_translated_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"id": "p9", "instruction": TEXTS["p2/0"]["en"], "output": CODE_ONLY}]
    src = write_rows(tmp_path / "en.jsonl", rows)
    out = tmp_path / "set.jsonl"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_translator() as url:
        cfg = TranslateConfig(source=str(src), out=str(out), languages=["fi"], source_lang="en",
                              endpoint=EndpointConfig(url=url, max_retries=0))
        translate_records(load_records(src, lang="en").records, EndpointBackend(cfg.endpoint), cfg)
        assert load_records(out).records[1].prompt == TEXTS["p2/0"]["fi"]
        write_rows(src, [{**rows[0], "instruction": TEXTS["p4/0"]["en"]}])  # same id, new text
        translate_records(load_records(src, lang="en").records, EndpointBackend(cfg.endpoint), cfg)
    assert load_records(out).records[1].prompt == TEXTS["p4/0"]["fi"]
    cache = out.with_name("set.translations.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["id"] for line in cache] == ["p9-en|turn0|fi|attempt0"] * 2


def save_one_word_model(folder: Path) -> str:
    """A tiny Gemma-3 model whose greedy reply to any prompt is one word, then <end_of_turn>; returns the word.

    Hidden dimensions 0 and 1 bypass every layer (their rows of o_proj and down_proj are zero): dimension 0
    is 1 for every token, dimension 1 is 10 only for the word's own token. The untied head scores the word
    20*h0 - 50*h1 and <end_of_turn> 10*h0, every other token 0: the word wins until it is the input, then
    <end_of_turn> does. Huge margins, so any engine in any precision gives the same reply."""
    import torch

    from babeltune.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(tok, head_dim=32, tie_word_embeddings=False, max_position_embeddings=2048)  # vLLM: head >= 32
    word = next(i for i in range(len(tok)) if tok.decode([i]).strip().isalpha() and len(tok.decode([i]).strip()) >= 4)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, :2] = torch.tensor([1.0, 0.0])
        model.model.embed_tokens.weight[word, 1] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[:2] = 0.0
            layer.mlp.down_proj.weight[:2] = 0.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[word, :2] = torch.tensor([20.0, -50.0])
        model.lm_head.weight[tok.convert_tokens_to_ids("<end_of_turn>"), 0] = 10.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(tok.decode([word]).strip())


VLLM_SOURCE = [
    {"id": "v1", "instruction": "Good morning!", "output": CODE_ONLY},  # short: any word passes the length gate
    {"id": "v2", "instruction": "The quick brown fox jumps over the lazy dog, and then it runs far away into the "
                                "old forest to find its friends.", "output": CODE_ONLY},  # one word is far too short
    {"id": "v3", "instruction": "Please use {name} here.", "output": CODE_ONLY},  # the placeholder's marker is lost
]
vllm_interpreter = test_vllm.python
"""Fixture: the vLLM environment's interpreter (skips without one, fails under CI=true)."""


@pytest.mark.vllm
def test_cli_backend_vllm_on_a_tiny_model(vllm_interpreter: Path, tmp_path: Path) -> None:
    from babeltune.generate.local import LocalBackend
    model = tmp_path / "one-word"
    word = save_one_word_model(model)
    src = write_rows(tmp_path / "en.jsonl", VLLM_SOURCE)
    out = tmp_path / "set.jsonl"
    command = [str(vllm_interpreter), "-m", "babeltune.cli", "data", "translate", "--backend", "vllm", "--model",
               str(model), "--source", str(src), "--source-lang", "en", "--languages", "es,ru", "--out", str(out),
               "--max-new-tokens", "8", "--vllm-dtype", "float32", "--vllm-max-model-len", "1024",
               "--vllm-gpu-memory-utilization", "0.15"]
    ran = subprocess.run(command, env=test_vllm.run_env(), capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-5000:]
    assert "1 prompts complete in every language, 2 incomplete" in ran.stdout
    summary = json.loads(out.with_name("set.summary.json").read_text("utf-8"))
    backend = summary["backend"]
    assert backend["backend"] == "vllm" and backend["engine"].startswith("vllm ") and backend["model"] == str(model)
    assert backend["dtype"] == "float32" and summary["prompt_version"] == PROMPT_VERSION
    assert summary["items"] == 12 and summary["copied"] == 6  # the code-only responses are copied
    assert summary["first_attempt_rejected"] == {"length_ratio": 2, "placeholder_changed": 2}
    assert summary["retried"] == 4 and summary["passed_on_retry"] == 0
    assert summary["rejected"] == {lang: {"length_ratio": 1, "placeholder_changed": 1} for lang in ("es", "ru")}
    assert summary["complete_prompts"] == 1 and summary["records_written"] == 3
    records = load_records(out).records
    assert [(r.id, r.lang, r.prompt, r.response) for r in records] == [
        ("v1-en", "en", "Good morning!", CODE_ONLY), ("v1-es", "es", word, CODE_ONLY),
        ("v1-ru", "ru", word, CODE_ONLY)]
    for rec in records[1:]:
        assert rec.meta["translation"] == {"from_lang": "en", "source_id": "v1-en", "prompt_version": PROMPT_VERSION,
                                           "backend": backend}
    cache = [json.loads(line) for line in out.with_name("set.translations.jsonl").read_text("utf-8").splitlines()]
    assert len(cache) == 6 + 4 and all(r["model"] == backend and r["error"] is None for r in cache)
    # the local engine, on the same model folder, answers every request the same
    local_out = tmp_path / "local" / "set.jsonl"
    cfg = TranslateConfig(source=str(src), out=str(local_out), languages=["es", "ru"], backend="local",
                          decoding=DecodingSettings(max_new_tokens=8, repetition_penalty=1.0))
    local = translate_records(load_records(src, lang="en").records, LocalBackend.from_pretrained(str(model)), cfg)
    assert (local.first_attempt_rejected, local.rejected) == (summary["first_attempt_rejected"], summary["rejected"])
    local_cache = local_out.with_name("set.translations.jsonl").read_text("utf-8").splitlines()
    assert sorted((r["id"], r["response"], r["finish_reason"]) for r in map(json.loads, local_cache)) == \
        sorted((r["id"], r["response"], r["finish_reason"]) for r in cache)

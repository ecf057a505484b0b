from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from babeltune.languages import STUDY_A_LANGUAGES

SAMPLE_TEXT = {
    "en": ("How do I keep bread fresh?", "Store it in a cloth bag at room temperature."),
    "es": ("¿Cómo mantengo fresco el pan?", "Guárdalo en una bolsa de tela a temperatura ambiente."),
    "it": ("Come conservo fresco il pane?", "Conservalo in un sacchetto di stoffa."),
    "cs": ("Jak udržím chléb čerstvý?", "Skladujte ho v látkovém sáčku."),
    "et": ("Kuidas hoida leiba värskena?", "Hoia seda riidest kotis toatemperatuuril."),
    "fi": ("Miten pidän leivän tuoreena?", "Säilytä sitä kangaspussissa huoneenlämmössä."),
    "ru": ("Как сохранить хлеб свежим?", "Храните его в тканевом мешке."),
    "sw": ("Ninawezaje kuweka mkate safi?", "Uhifadhi kwenye mfuko wa kitambaa."),
    "ar": ("كيف أحافظ على الخبز طازجًا؟", "احفظه في كيس قماش في درجة حرارة الغرفة."),
    "he": ("איך לשמור על לחם טרי?", "שמרו אותו בשקית בד בטמפרטורת החדר."),
    "hi": ("मैं रोटी को ताज़ा कैसे रखूँ?", "इसे कपड़े की थैली में रखें।"),
    "zh": ("怎样让面包保持新鲜？", "把它放在布袋里，室温保存。"),
}


def make_parallel(n_pids: int, languages: tuple[str, ...] = STUDY_A_LANGUAGES) -> list[dict[str, Any]]:
    rows = []
    for i in range(n_pids):
        pid = f"p{i:03d}"
        for lang in languages:
            prompt, response = SAMPLE_TEXT[lang]
            rows.append({
                "id": f"{pid}-{lang}", "pid": pid, "lang": lang,
                "messages": [{"role": "user", "content": f"{prompt} ({i})"},
                             {"role": "assistant", "content": response}],
                "meta": {"split": "train"},
            })
    return rows


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def parallel_file(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "parallel.jsonl", make_parallel(30))


@pytest.fixture(scope="session")
def tiny_tok() -> Any:
    from babeltune.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def tiny_lm(tiny_tok: Any) -> Any:
    from babeltune.testing import tiny_model

    return tiny_model(tiny_tok)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test (a module asks for it with `pytestmark`): tiny models run ~30x
    faster on one thread when the CPU is shared (no OpenMP spinning)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

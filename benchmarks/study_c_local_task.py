"""Write a small XCOPA-shaped lm-eval task (hand-written items, 5 languages) into a folder, for a CPU run of
`study-c-lens` (benchmarks/lens_results.md, "study-c-lens on the default model"):

    python benchmarks/study_c_local_task.py /tmp/study_c_tasks
    babeltune run study-c-lens --set bench.include_path=/tmp/study_c_tasks --set 'bench.tasks=[minicopa]' ...

Tasks minicopa_LANG (en, es, it, ru, zh; 8 items each: a premise and two continuations, one plausible)
and their group minicopa. The items were written for this note (not taken from XCOPA).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ITEMS: dict[str, list[tuple[str, str, str, int]]] = {
    "en": [("The glass fell off the table.", "It shattered on the floor.", "It grew bigger.", 0),
           ("The boy was hungry.", "He ate a sandwich.", "He painted the fence.", 0),
           ("It started to rain.", "She sang a song.", "She opened her umbrella.", 1),
           ("The room was dark.", "He turned on the lamp.", "He closed the book.", 0),
           ("The ice cream was left in the sun.", "It froze solid.", "It melted.", 1),
           ("The baby was tired.", "She fell asleep.", "She ran a marathon.", 0),
           ("The car ran out of fuel.", "It drove faster.", "It stopped on the road.", 1),
           ("The phone battery was empty.", "The screen stayed black.", "The phone rang loudly.", 0)],
    "es": [("El vaso se cayó de la mesa.", "Se rompió en el suelo.", "Se hizo más grande.", 0),
           ("El niño tenía hambre.", "Se comió un bocadillo.", "Pintó la valla.", 0),
           ("Empezó a llover.", "Ella cantó una canción.", "Ella abrió su paraguas.", 1),
           ("La habitación estaba oscura.", "Él encendió la lámpara.", "Él cerró el libro.", 0),
           ("Dejaron el helado al sol.", "Se congeló por completo.", "Se derritió.", 1),
           ("La bebé estaba cansada.", "Se quedó dormida.", "Corrió un maratón.", 0),
           ("El coche se quedó sin gasolina.", "Fue más rápido.", "Se paró en la carretera.", 1),
           ("La batería del teléfono estaba vacía.", "La pantalla siguió negra.", "El teléfono sonó fuerte.", 0)],
    "it": [("Il bicchiere è caduto dal tavolo.", "Si è rotto sul pavimento.", "È diventato più grande.", 0),
           ("Il ragazzo aveva fame.", "Ha mangiato un panino.", "Ha dipinto la recinzione.", 0),
           ("Ha cominciato a piovere.", "Lei ha cantato una canzone.", "Lei ha aperto l'ombrello.", 1),
           ("La stanza era buia.", "Lui ha acceso la lampada.", "Lui ha chiuso il libro.", 0),
           ("Il gelato è stato lasciato al sole.", "Si è congelato.", "Si è sciolto.", 1),
           ("La bambina era stanca.", "Si è addormentata.", "Ha corso una maratona.", 0),
           ("La macchina è rimasta senza benzina.", "È andata più veloce.", "Si è fermata sulla strada.", 1),
           ("La batteria del telefono era scarica.", "Lo schermo è rimasto nero.", "Il telefono ha squillato forte.",
            0)],
    "ru": [("Стакан упал со стола.", "Он разбился об пол.", "Он стал больше.", 0),
           ("Мальчик был голоден.", "Он съел бутерброд.", "Он покрасил забор.", 0),
           ("Пошёл дождь.", "Она спела песню.", "Она открыла зонт.", 1),
           ("В комнате было темно.", "Он включил лампу.", "Он закрыл книгу.", 0),
           ("Мороженое оставили на солнце.", "Оно замёрзло.", "Оно растаяло.", 1),
           ("Малышка устала.", "Она заснула.", "Она пробежала марафон.", 0),
           ("В машине кончился бензин.", "Она поехала быстрее.", "Она остановилась на дороге.", 1),
           ("Батарея телефона разрядилась.", "Экран остался чёрным.", "Телефон громко зазвонил.", 0)],
    "zh": [("杯子从桌子上掉了下来。", "它在地上摔碎了。", "它变大了。", 0),
           ("男孩饿了。", "他吃了一个三明治。", "他刷了篱笆。", 0),
           ("开始下雨了。", "她唱了一首歌。", "她打开了雨伞。", 1),
           ("房间里很黑。", "他打开了台灯。", "他合上了书。", 0),
           ("冰淇淋被放在太阳下。", "它冻得很硬。", "它融化了。", 1),
           ("宝宝累了。", "她睡着了。", "她跑了一场马拉松。", 0),
           ("汽车没油了。", "它开得更快了。", "它停在了路上。", 1),
           ("手机没电了。", "屏幕一直是黑的。", "手机大声响了起来。", 0)],
}


def write_tasks(folder: Path) -> Path:
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for lang, items in ITEMS.items():
        data = folder / f"{lang}.jsonl"
        data.write_text("".join(json.dumps({"premise": p, "choice1": a, "choice2": b, "label": y}, ensure_ascii=False)
                                + "\n" for p, a, b, y in items), encoding="utf-8")
        (folder / f"minicopa_{lang}.yaml").write_text(
            f"task: minicopa_{lang}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{premise}}\"\n"
            "doc_to_choice: \"{{[choice1, choice2]}}\"\ndoc_to_target: label\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n",
            encoding="utf-8")
    (folder / "minicopa.yaml").write_text(
        "group: minicopa\ntask:\n" + "".join(f"  - minicopa_{lang}\n" for lang in ITEMS)
        + "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1.0\n",
        encoding="utf-8")
    return folder


if __name__ == "__main__":
    print(write_tasks(Path(sys.argv[1] if len(sys.argv) > 1 else "study_c_tasks")))

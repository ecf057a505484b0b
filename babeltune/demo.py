"""`babeltune demo`: the main job on the embedded default model and the bundled data.

Today it runs the stages that exist: it prepares the default model, builds study A's three demo
mixtures (English-only, English + a pinch of 40 multilingual examples, uniform over the 12 languages)
from `bundled:train`, and measures the base model's loss on the bundled evaluation split per language
(the starting point every tuned model is compared with). Training, generation, judging and the report
join it as those stages land.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DEMO_BUDGET = 160
EVAL_PER_LANGUAGE = 5


def register(sub: Any) -> None:
    parser = sub.add_parser("demo", help="run the main job on the embedded default model and bundled data")
    parser.add_argument("--out", default="runs/demo", help="run directory")
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=cmd_demo)


def demo_mixtures(seed: int) -> dict[str, Any]:
    from babeltune.data import MixtureSpec
    from babeltune.languages import STUDY_A_LANGUAGES

    langs = list(STUDY_A_LANGUAGES)
    return {
        "english_only": MixtureSpec("monolingual", budget=DEMO_BUDGET, lang="en", seed=seed),
        "pinch40": MixtureSpec("pinch", budget=DEMO_BUDGET, languages=langs, pinch_count=40, seed=seed),
        "uniform": MixtureSpec("uniform", budget=DEMO_BUDGET, languages=langs, seed=seed),
    }


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from babeltune.data import build_mixture, load_records, write_jsonl
    from babeltune.models import get_template, load_model, render_for_training
    from babeltune.runinfo import write_run_info

    out = Path(args.out)
    start = time.time()
    print(f"[1/3] loading {args.model} (the first run builds its cache: about a minute)")
    loaded = load_model(args.model)
    source = load_records("bundled:train")
    print(f"[2/3] building the demo mixtures from bundled:train ({source.report.summary()})")
    summaries = {}
    for name, spec in demo_mixtures(args.seed).items():
        mixture = build_mixture(source.records, spec, source_name="bundled:train")
        write_jsonl(mixture.records, out / "mixtures" / f"{name}.jsonl")
        summaries[name] = mixture.summary
        counts = " ".join(f"{k}={v}" for k, v in mixture.summary["per_language"].items())
        print(f"      {name:<13} {counts}")
    print("[3/3] base model loss on bundled:eval per language (response tokens only)")
    template = get_template(loaded.tokenizer)
    losses: dict[str, list[float]] = {}
    for rec in load_records("bundled:eval").records:
        if len(losses.get(rec.lang, [])) >= EVAL_PER_LANGUAGE:
            continue
        ex = render_for_training(loaded.tokenizer, template, rec.messages)
        with torch.no_grad():
            loss = loaded.model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels])).loss
        losses.setdefault(rec.lang, []).append(float(loss))
    table = {lang: sum(v) / len(v) for lang, v in sorted(losses.items())}
    for lang, value in table.items():
        print(f"      {lang}  loss {value:.3f}  ({len(losses[lang])} prompts)")
    write_run_info(out, config={"model": args.model, "seed": args.seed, "budget": DEMO_BUDGET}, seed=args.seed,
                   data={"bundled:train": source.report.fingerprint, "mixtures": {k: v["fingerprint"] for k, v in
                                                                                 summaries.items()}})
    (out / "base_eval_loss.json").write_text(json.dumps(table, indent=2) + "\n")
    print(f"done in {time.time() - start:.0f} s; results in {out}")
    return 0

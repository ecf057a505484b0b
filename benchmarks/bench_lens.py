"""Lens (study C) measurements on the default model: probing separation per layer, and the effect of
steering and manipulation training on the correct-language rate of generations and on multiple-choice
accuracy, with the compute each took. Prints tables; writes JSON per stage into --out.

    python benchmarks/bench_lens.py probe   # per-layer separation, bundled set (12 languages)
    python benchmarks/bench_lens.py train   # manipulation training with the probe's subspace
    python benchmarks/bench_lens.py sft     # instruction tuning (LoRA) on the same languages, for comparison
    python benchmarks/bench_lens.py mc      # multiple-choice accuracy per condition (FLORES continuation task)
    python benchmarks/bench_lens.py gen     # correct-language rate of greedy generations per condition

The multiple-choice task is built at run time from FLORES dev (../shared/data/flores200_dev, never
committed): the first half of a sentence, and its own second half against the second halves of three
other sentences in the same language (an XStoryCloze-like continuation choice, chance 25%). Conditions
are named `base`, `steer-add` (+ direction of the prompt's language), `steer-project`, `lens` (the
manipulation-trained model) and any `--extra NAME=MODEL_FOLDER` (e.g. an instruction-tuned model).
Set OMP_NUM_THREADS=1 on a shared, loaded machine: thread oversubscription slows torch 5-10x here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
FLORES = ROOT.parent / "shared" / "data" / "flores200_dev"
LANGS12 = "ar,zh,cs,en,et,fi,he,hi,it,ru,es,sw"


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "load_avg": os.getloadavg()}


def previous_results(out: Path, name: str) -> dict[str, Any]:
    """Results of conditions measured by an earlier run of the same stage (kept; re-measured ones replaced)."""
    path = out / f"{name}.json"
    return dict(json.loads(path.read_text())["results"]) if path.exists() else {}


def save(out: Path, name: str, payload: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": machine(), **payload}, indent=2, ensure_ascii=False))


# -- probe ---------------------------------------------------------------------------------------------------

def stage_probe(args: argparse.Namespace) -> None:
    from babeltune.lens.config import ProbeConfig
    from babeltune.lens.diagnostics import format_table
    from babeltune.lens.probing import run_probe

    cfg = ProbeConfig(data=[args.probe_data], languages=args.languages.split(","), per_language=args.per_language,
                      holdout=args.holdout, min_per_language=10, batch_size=16)
    result = run_probe(cfg, args.out / "subspace")
    table = format_table(result.diagnostics)
    print(f"probe: {result.tokens} prompt tokens in {result.seconds:.1f} s "
          f"({result.tokens / result.seconds:.0f} tokens/s), counts {result.split.counts()}")
    print(table)
    save(args.out, "probe", {"seconds": result.seconds, "tokens": result.tokens, "counts": result.split.counts(),
                             "table": table})


# -- manipulation training --------------------------------------------------------------------------------------

def stage_train(args: argparse.Namespace) -> None:
    from babeltune.lens.config import LensOptim, LensTrainConfig
    from babeltune.lens.manipulate import run_manipulation

    cfg = LensTrainConfig(subspace=str(args.out / "subspace"), data=args.train_data, max_groups=args.groups,
                          languages=args.train_languages.split(",") if args.train_languages else [],
                          optim=LensOptim(lr=args.lens_lr), progress=False)
    summary = run_manipulation(cfg, args.out / "lens-run")
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "tokens", "trainable_params", "first", "last")},
                     indent=2))
    save(args.out, "train", summary)


# -- instruction tuning on the same languages (the comparison) ------------------------------------------------------

def stage_sft(args: argparse.Namespace) -> None:
    from babeltune.train.config import TrainConfig
    from babeltune.train.metrics import read_log
    from babeltune.train.recipe import train

    langs = args.train_languages.split(",") if args.train_languages else None
    cfg = TrainConfig(data=args.train_data, languages=langs, out=args.out / "sft-run", method=args.sft_method,
                      lr=1e-4 if args.sft_method == "lora" else 1e-5, max_steps=args.sft_steps, batch_size=8,
                      max_length=256, merge=args.sft_method == "lora", tensorboard=False, progress=False,
                      precision="fp32")
    start = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - start
    log = read_log(result.log_path)
    summary = {"method": args.sft_method, "steps": len(log), "seconds_total": seconds,
               "seconds_steps": sum(r["step_s"] for r in log), "tokens": sum(r["tokens"] for r in log),
               "first_loss": log[0]["loss"], "last_loss": log[-1]["loss"],
               "model": str(result.merged or result.weights)}
    print(json.dumps(summary, indent=2))
    save(args.out, "sft", summary)


# -- conditions ---------------------------------------------------------------------------------------------------

def conditions(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(name, model, steering or None)."""
    base = args.model
    out: list[tuple[str, str, dict[str, Any] | None]] = [("base", base, None)]
    for c in args.steer_add:
        out.append((f"steer-add-{c:g}", base, {"mode": "add", "coefficient": c, "layers": args.steer_layers}))
    for c in args.steer_project:
        out.append((f"steer-project-{c:g}", base, {"mode": "project", "coefficient": c, "layers": args.steer_layers}))
    if (args.out / "lens-run" / "final").exists():
        out.append(("lens", str(args.out / "lens-run" / "final"), None))
    for folder in ("merged", "final"):
        if (args.out / "sft-run" / folder / "config.json").exists():
            out.append(("sft", str(args.out / "sft-run" / folder), None))
            break
    for spec in args.extra:
        name, _, folder = spec.partition("=")
        out.append((name, folder, None))
    return [c for c in out if not args.only or c[0] in args.only]


def _loaded(model: str) -> Any:
    from babeltune.models.loading import load_model

    return load_model(model)


# -- multiple choice ------------------------------------------------------------------------------------------------

def flores_mc(languages: list[str], n: int, seed: int = 0) -> list[Any]:
    from babeltune.languages import get_language
    from babeltune.lens.mc import MCItem

    rng = random.Random(seed)
    items = []
    lines = len((FLORES / "eng_Latn.dev").read_text(encoding="utf-8").splitlines())
    picks = rng.sample(range(lines), n)
    for lang in languages:
        info = get_language(lang)
        sents = (FLORES / f"{info.flores}.dev").read_text(encoding="utf-8").splitlines()

        def halves(s: str, spaces: bool = info.spaces) -> tuple[str, str]:
            if spaces:
                words = s.split()
                cut = max(1, len(words) // 2)
                return " ".join(words[:cut]), " ".join(words[cut:cut + 8])
            cut = max(1, len(s) // 2)
            return s[:cut], s[cut:cut + 12]

        for k, i in enumerate(picks):
            head, tail = halves(sents[i])
            others = rng.sample([j for j in range(len(sents)) if j != i], 3)
            choices = [tail] + [halves(sents[j])[1] for j in others]
            order = list(range(4))
            rng.shuffle(order)
            items.append(MCItem(f"{lang}-{k}", lang, head, tuple(choices[o] for o in order), order.index(0)))
    return items


def stage_mc(args: argparse.Namespace) -> None:
    from babeltune.lens.config import SteerConfig
    from babeltune.lens.mc import evaluate_mc

    items = flores_mc(args.mc_languages.split(","), args.mc_items)
    results = previous_results(args.out, "mc")
    for name, model, steering in conditions(args):
        loaded = _loaded(model)
        start = time.perf_counter()
        steer_cfg = SteerConfig(subspace=str(args.out / "subspace"), **steering) if steering else None
        summary = evaluate_mc(loaded.model, loaded.tokenizer, items, batch_size=16, steering=steer_cfg).summary
        seconds = time.perf_counter() - start
        results[name] = {"seconds": seconds, **summary.to_dict()}
        print(f"== {name} ({seconds:.0f} s)\n{summary.table()}", flush=True)
        save(args.out, "mc", {"items_per_language": args.mc_items, "results": results})


# -- generation ---------------------------------------------------------------------------------------------------

def stage_gen(args: argparse.Namespace) -> None:
    from babeltune.data.readers import read_records
    from babeltune.evaluate.langid import get_identifier, language_verdict
    from babeltune.generate.backends import GenerationRequest
    from babeltune.generate.local import LocalBackend
    from babeltune.generate.settings import DecodingSettings
    from babeltune.lens.steering import steer
    from babeltune.lens.subspace import LanguageSubspace

    langs = args.gen_languages.split(",")
    per: dict[str, list[Any]] = {lang: [] for lang in langs}
    for rec in read_records(args.gen_data):
        if rec.lang in per and len(per[rec.lang]) < args.gen_prompts:
            per[rec.lang].append(rec)
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)
    identifier = get_identifier()
    results = previous_results(args.out, "gen")
    for name, model, steering in conditions(args):
        loaded = _loaded(model)
        backend = LocalBackend(loaded.model, loaded.tokenizer, batch_size=16, model_name=model)
        start = time.perf_counter()
        rows = []
        tokens = 0
        for lang, recs in per.items():
            requests = [GenerationRequest(r.id, r.prompt_messages) for r in recs]
            if steering:
                sub = LanguageSubspace.load(args.out / "subspace")
                with steer(loaded.model, sub, lang=lang, **steering):
                    outs = list(backend.generate(requests, settings))
            else:
                outs = list(backend.generate(requests, settings))
            for o in outs:
                verdict = language_verdict(o.text or "", lang, identifier)
                rows.append({"lang": lang, "status": verdict.status, "detected": verdict.detected, "text": o.text})
                tokens += o.completion_tokens or 0
        seconds = time.perf_counter() - start
        per_lang = {lang: sum(r["status"] == "correct" for r in rows if r["lang"] == lang) / max(1, len(per[lang]))
                    for lang in langs}
        rate = sum(r["status"] == "correct" for r in rows) / len(rows)
        undetermined = sum(r["status"] == "undetermined" for r in rows) / len(rows)
        results[name] = {"correct_language_rate": rate, "undetermined": undetermined, "per_language": per_lang,
                         "seconds": seconds, "generated_tokens": tokens, "samples": rows[:: max(1, len(rows) // 12)]}
        print(f"== {name}: correct language {rate:.3f} (undetermined {undetermined:.3f}), {tokens} tokens in "
              f"{seconds:.0f} s; " + " ".join(f"{k}={v:.2f}" for k, v in per_lang.items()), flush=True)
        save(args.out, "gen", {"prompts_per_language": args.gen_prompts, "max_new_tokens": args.max_new_tokens,
                               "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["probe", "train", "sft", "mc", "gen"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_lens"))
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--languages", default=LANGS12, help="probe languages")
    parser.add_argument("--probe-data", default="bundled:train")
    parser.add_argument("--per-language", type=int, default=60)
    parser.add_argument("--holdout", type=float, default=0.25)
    parser.add_argument("--train-data", default="bundled:train")
    parser.add_argument("--train-languages", default="", help="default: the subspace's languages")
    parser.add_argument("--groups", type=int, default=120, help="parallel groups for manipulation training")
    parser.add_argument("--lens-lr", type=float, default=1e-5, help="manipulation training lr (release: 1e-5)")
    parser.add_argument("--sft-method", choices=["lora", "full"], default="lora")
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--mc-languages", default="en,es,fi,ru,zh,ar,hi,sw")
    parser.add_argument("--mc-items", type=int, default=16, help="items per language")
    parser.add_argument("--gen-data", default="bundled:eval")
    parser.add_argument("--gen-languages", default="en,es,fi,ru,zh,ar,hi,sw")
    parser.add_argument("--gen-prompts", type=int, default=6, help="prompts per language")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--steer-add", type=float, nargs="*", default=[4.0])
    parser.add_argument("--steer-project", type=float, nargs="*", default=[])
    parser.add_argument("--steer-layers", type=int, nargs="*", default=[-1])
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=MODEL_FOLDER")
    parser.add_argument("--only", nargs="*", default=[], help="run only these conditions")
    args = parser.parse_args()
    {"probe": stage_probe, "train": stage_train, "sft": stage_sft, "mc": stage_mc, "gen": stage_gen}[args.stage](args)


if __name__ == "__main__":
    main()

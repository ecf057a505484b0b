"""`babeltune judge sxs|rubric`: judge generation files outside an experiment.

    babeltune judge sxs --candidate A/eval.jsonl --baseline B/eval.jsonl --out judged/     # offline judge
    babeltune judge sxs ... --judge llm --endpoint http://127.0.0.1:8000/v1 --model NAME
    babeltune judge rubric --generations A/eval.jsonl --endpoint http://127.0.0.1:8000/v1 --out rubric/

Judgements are cached in OUT (re-running resumes); scores per language with 95% CIs are printed and
written to OUT/scores.json. (Registered by `babeltune.experiments.cli`.)
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("judge", help="judge generation files side by side (study A) or by rubric (study B)")
    commands = parser.add_subparsers(dest="judge_command", metavar="SUBCOMMAND", required=True)
    sxs = commands.add_parser("sxs", help="candidate vs baseline responses, both orders, score 0-100 per language")
    sxs.add_argument("--candidate", required=True, help="generation file of the model being scored")
    sxs.add_argument("--baseline", required=True, help="generation file of the reference model (same prompts)")
    sxs.add_argument("--judge", choices=["reference", "llm"], default="reference",
                     help="reference: offline, needs reference answers in the data; llm: an LLM judge")
    _llm_args(sxs)
    sxs.add_argument("--out", required=True, help="folder for the judgement cache, judgements and scores")
    sxs.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sxs.set_defaults(func=cmd_sxs)
    rubric = commands.add_parser("rubric", help="grade each response alone on the six criteria (LLM judge)")
    rubric.add_argument("--generations", required=True)
    _llm_args(rubric)
    rubric.add_argument("--out", required=True)
    rubric.add_argument("--seed", type=int, default=0)
    rubric.set_defaults(func=cmd_rubric)


def _llm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="", help="model name at the endpoint (default: the first it lists)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key")
    parser.add_argument("--local-model", default=None, help="judge with a model loaded here instead of an endpoint")
    parser.add_argument("--max-new-tokens", type=int, default=256)


def _backend(args: argparse.Namespace) -> Any:
    from babeltune.judge.backends import endpoint_chat_backend, local_chat_backend

    if args.endpoint:
        from babeltune.generate import EndpointConfig

        config = EndpointConfig(url=args.endpoint, model=args.model, api_key_env=args.api_key_env)
        return endpoint_chat_backend(config, max_new_tokens=args.max_new_tokens)
    if args.local_model:
        return local_chat_backend(args.local_model, max_new_tokens=args.max_new_tokens)
    raise ValueError("the LLM judge needs --endpoint URL (an OpenAI-compatible API) or --local-model MODEL")


def _read(path: str) -> list[dict[str, Any]]:
    from babeltune.generate import read_generations

    rows = read_generations(Path(path))
    if not rows:
        raise ValueError(f"{path}: no generations")
    return rows


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def cmd_sxs(args: argparse.Namespace) -> int:
    from babeltune.judge import LLMPairwiseJudge, PairwiseJudge, ReferenceJudge, sxs_scores
    from babeltune.judge.pairs import plan_pairs, run_judge, save_judgements

    candidate, baseline = _read(args.candidate), _read(args.baseline)
    langs = sorted({r["lang"] for r in candidate})
    plan = plan_pairs(candidate, dict.fromkeys(langs, ("baseline", baseline)), langs)
    if not plan.items:
        raise ValueError("no prompt appears in both files with a response: are they generations of the same prompts?")
    judge: PairwiseJudge = ReferenceJudge() if args.judge == "reference" else LLMPairwiseJudge(_backend(args))
    out = Path(args.out)
    judgements = run_judge(plan, judge, out / f"{args.judge}.cache.jsonl", retries=1, batch_size=32)
    save_judgements(out / f"{args.judge}.jsonl", judgements)
    scores = sxs_scores(judgements, seed=args.seed)
    (out / "scores.json").write_text(json.dumps({k: v.to_dict() for k, v in scores.items()}, indent=1),
                                     encoding="utf-8")
    print(f"{'lang':<5} {'score':>6} {'95% CI':>13} {'n':>4} {'win':>4} {'tie':>4} {'loss':>4} {'invalid':>7}")
    for lang, s in scores.items():
        failed = plan.failed.get(lang, 0) if lang != "all" else sum(plan.failed.values())
        print(f"{lang:<5} {_fmt(s.score):>6} {_fmt(s.low) + '-' + _fmt(s.high):>13} {s.n:>4} {s.wins:>4} {s.ties:>4} "
              f"{s.losses:>4} {s.invalid + failed:>7}")
    print(f"judgements: {out / (args.judge + '.jsonl')}")
    return 0


def cmd_rubric(args: argparse.Namespace) -> int:
    from babeltune.judge import RUBRIC_CRITERIA, JudgementCache, LLMRubricJudge, RubricItem, rubric_scores, run_rubric

    rows = [r for r in _read(args.generations) if r.get("error") is None]
    items = [RubricItem(r["id"], r["pid"], r["lang"], r["prompt"], r["response"] or "") for r in rows]
    out = Path(args.out)
    judgements = run_rubric(items, LLMRubricJudge(_backend(args)), JudgementCache(out / "rubric.cache.jsonl"))
    (out / "rubric.jsonl").write_text("".join(json.dumps(j.to_dict(), ensure_ascii=False) + "\n" for j in judgements),
                                      encoding="utf-8")
    scores = rubric_scores(judgements, seed=args.seed)
    (out / "scores.json").write_text(json.dumps({k: v.to_dict() for k, v in scores.items()}, indent=1),
                                     encoding="utf-8")
    print("lang  " + " ".join(f"{c[:10]:>10}" for c in RUBRIC_CRITERIA) + "  invalid")
    for lang, s in scores.items():
        print(f"{lang:<5} " + " ".join(f"{s.criteria[c].value:>10.2f}" for c in RUBRIC_CRITERIA) + f"  {s.invalid:>7}")
    return 0

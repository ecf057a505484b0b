"""`babeltune judge sxs|rubric`: judge generation files outside an experiment.

    babeltune judge sxs --candidate A/eval.jsonl --baseline B/eval.jsonl --out judged/     # offline judge
    babeltune judge sxs ... --judge llm --endpoint http://127.0.0.1:8000/v1 --model NAME
    babeltune judge rubric --generations A/eval.jsonl --endpoint http://127.0.0.1:8000/v1 --out rubric/
    babeltune judge rubric ... --backend vllm --local-model JUDGE --set vllm.dtype=bfloat16    # in-process vLLM

Judgements are cached in OUT (re-running resumes); scores per language with 95% CIs are printed and
written to OUT/scores.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from babeltune.judge.config import LLMJudgeConfig, RubricConfig, SxsConfig
from babeltune.options import SET_METAVAR, add_config_file_options, add_config_flags
from babeltune.outputs import check_output

if TYPE_CHECKING:
    from babeltune.generate.rows import GenerationRow

_Config = TypeVar("_Config", bound=LLMJudgeConfig)


def register(sub: Any) -> None:
    parser = sub.add_parser("judge", help="judge generation files side by side (study A) or by rubric (study B)")
    commands = parser.add_subparsers(dest="judge_command", metavar="SUBCOMMAND", required=True)
    sxs = commands.add_parser("sxs", help="candidate vs baseline responses, both orders, score 0-100 per language")
    sxs.add_argument("--candidate", required=True, help="generation file of the model being scored")
    sxs.add_argument("--baseline", required=True, help="generation file of the reference model (same prompts)")
    flags = add_config_flags(sxs, SxsConfig, ("judge",))
    flags |= _llm_args(sxs, SxsConfig)
    sxs.add_argument("--out", required=True, help="folder for the judgement cache, judgements and scores")
    flags |= add_config_flags(sxs, SxsConfig, ("seed", "allow_partial"))
    sxs.set_defaults(func=cmd_sxs, config_flags=flags)
    rubric = commands.add_parser("rubric", help="grade each response alone on the six criteria (LLM judge)")
    rubric.add_argument("--generations", required=True, help="generation file whose responses are graded")
    flags = _llm_args(rubric, RubricConfig)
    rubric.add_argument("--out", required=True, help="folder for the judgement cache, judgements and scores")
    flags |= add_config_flags(rubric, RubricConfig, ("seed",))
    rubric.set_defaults(func=cmd_rubric, config_flags=flags)


_LLM_KEYS = ("backend", "endpoint", "model", "api_key_env", "concurrency", "local_model", "max_new_tokens")


def _llm_args(parser: argparse.ArgumentParser, cls: type) -> dict[str, str]:
    """`--config`, `--set` and the LLM judge's flags of config `cls` (an LLMJudgeConfig); argparse dest ->
    config key of the flags added."""
    add_config_file_options(parser, cls, "vllm.tensor_parallel_size=2")
    llm = parser.add_argument_group("LLM judge (local | vllm | endpoint, as for generation)")
    flags = add_config_flags(llm, cls, _LLM_KEYS)
    llm.add_argument("--vllm", action="append", default=[], metavar=SET_METAVAR,
                     help="the same as --set vllm.KEY=VALUE: a VLLMConfig field for backend vllm, e.g. dtype=bfloat16 "
                     "(repeatable)")
    return flags


def _config(cls: type[_Config], args: argparse.Namespace) -> _Config:
    """The command's config: --config, --set, then --vllm KEY=VALUE (an alias of --set vllm.KEY=VALUE,
    through the same parser), then its flags."""
    from babeltune.cli import command_config
    from babeltune.config import ConfigError

    try:
        cfg: _Config = command_config(cls, args, overrides=[("--vllm", f"vllm.{text}") for text in args.vllm])
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return cfg


def _backend(cfg: LLMJudgeConfig) -> Any:
    from babeltune.judge.backends import judge_chat_backend

    endpoint = None
    if cfg.endpoint:
        from babeltune.generate import EndpointConfig

        extra = {"concurrency": cfg.concurrency} if cfg.concurrency is not None else {}
        endpoint = EndpointConfig(url=cfg.endpoint, model=cfg.model, api_key_env=cfg.api_key_env, **extra)
    if cfg.backend is None and endpoint is None and not cfg.local_model:
        raise ValueError("the LLM judge needs --endpoint URL (an OpenAI-compatible API) or --local-model MODEL "
                         "(with --backend local or vllm)")
    return judge_chat_backend(cfg.backend, model=cfg.local_model, endpoint=endpoint, vllm=cfg.vllm,
                              max_new_tokens=cfg.max_new_tokens)


def _read(path: str) -> list[GenerationRow]:
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

    cfg = _config(SxsConfig, args)
    check_output(args.out, "folder")
    candidate, baseline = _read(args.candidate), _read(args.baseline)
    langs = sorted({r.lang for r in candidate} | {r.lang for r in baseline})
    plan = plan_pairs(candidate, dict.fromkeys(langs, ("baseline", baseline)), langs)
    unmatched = plan.unmatched()
    if unmatched:
        detail = plan.unmatched_message(f"--candidate {args.candidate}", f"--baseline {args.baseline}")
        if not cfg.allow_partial:
            raise ValueError("the candidate and the baseline cover different prompts (matched by record id):\n"
                             f"{detail}\njudge the prompts they share with --allow-partial")
        print(f"warning: judging only the prompts both files cover; unmatched prompts:\n{detail}", file=sys.stderr)
    if not plan.items:
        raise ValueError("no prompt appears in both files with a response: are they generations of the same prompts?")
    judge: PairwiseJudge = ReferenceJudge() if cfg.judge == "reference" else LLMPairwiseJudge(_backend(cfg))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    coverage = {"candidate": args.candidate, "baseline": args.baseline, "pairs": len(plan.items),
                "unmatched": unmatched, "only_candidate": plan.only_candidate, "only_baseline": plan.only_reference}
    (out / "coverage.json").write_text(json.dumps(coverage, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    judgements = run_judge(plan, judge, out / f"{cfg.judge}.cache.jsonl", retries=1, batch_size=32)
    save_judgements(out / f"{cfg.judge}.jsonl", judgements)
    scores = sxs_scores(judgements, seed=cfg.seed)
    (out / "scores.json").write_text(json.dumps({k: v.to_dict() for k, v in scores.items()}, indent=1),
                                     encoding="utf-8")
    print(f"{'lang':<5} {'score':>6} {'95% CI':>13} {'n':>4} {'win':>4} {'tie':>4} {'loss':>4} {'invalid':>7}"
          + (f" {'unmatched':>9}" if unmatched else ""))
    for lang, s in scores.items():
        in_lang = [lang] if lang != "all" else list(langs)
        lost = sum(sum(unmatched.get(code, {}).values()) for code in in_lang)
        # failed: pairs not judged because a generation failed (unmatched prompts have their own column)
        failed = sum(plan.failed.get(code, 0) - len(plan.only_candidate.get(code, [])) for code in in_lang)
        print(f"{lang:<5} {_fmt(s.score):>6} {_fmt(s.low) + '-' + _fmt(s.high):>13} {s.n:>4} {s.wins:>4} {s.ties:>4} "
              f"{s.losses:>4} {s.invalid + failed:>7}" + (f" {lost:>9}" if unmatched else ""))
    print(f"judgements: {out / (cfg.judge + '.jsonl')}")
    return 0


def cmd_rubric(args: argparse.Namespace) -> int:
    from babeltune.data.jsonl import write_jsonl_atomic
    from babeltune.judge import RUBRIC_CRITERIA, JudgementCache, LLMRubricJudge, RubricItem, rubric_scores, run_rubric

    cfg = _config(RubricConfig, args)
    check_output(args.out, "folder")
    read = _read(args.generations)
    rows = [r for r in read if not r.failed]
    if len(rows) < len(read):
        failed = [r.id for r in read if r.failed]
        print(f"warning: {len(failed)} failed generation(s) in {args.generations} not judged (e.g. record "
              f"{failed[0]!r}); rerun `babeltune generate` to retry them", file=sys.stderr)
    items = [RubricItem(r.id, r.pid, r.lang, r.prompt, r.response or "") for r in rows]
    out = Path(args.out)
    judgements = run_rubric(items, LLMRubricJudge(_backend(cfg)), JudgementCache(out / "rubric.cache.jsonl"))
    write_jsonl_atomic(out / "rubric.jsonl", (j.to_dict() for j in judgements))
    scores = rubric_scores(judgements, seed=cfg.seed)
    (out / "scores.json").write_text(json.dumps({k: v.to_dict() for k, v in scores.items()}, indent=1),
                                     encoding="utf-8")
    print("lang  " + " ".join(f"{c[:10]:>10}" for c in RUBRIC_CRITERIA) + "  invalid")
    for lang, s in scores.items():
        print(f"{lang:<5} " + " ".join(f"{s.criteria[c].value:>10.2f}" for c in RUBRIC_CRITERIA) + f"  {s.invalid:>7}")
    return 0

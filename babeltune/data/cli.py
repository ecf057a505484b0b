"""`babeltune data build | validate | stats`."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any


def register(sub: Any) -> None:
    from babeltune.data.config import READ_KEYS, ReadOptions, StatsOptions
    from babeltune.data.mixtures import MixtureSpec  # imported with the data package anyway
    from babeltune.options import add_config_flags

    parser = sub.add_parser("data", help="build study A mixtures, validate and summarise data sources")
    data_sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    build = data_sub.add_parser("build", help="build a language mixture (study A) from a parallel source")
    build.add_argument("--source", required=True, help="bundled:train, a .jsonl file/folder, hf:NAME_OR_PATH, or a "
                       "parallel source (parts.yaml, hf:NAME --hf-config ar,zh,...)")
    flags = add_config_flags(build, MixtureSpec, ("recipe", "languages", "budget", "lang"),
                             extra={"recipe": {"required": True}, "budget": {"required": True}})
    flags |= add_config_flags(build.add_mutually_exclusive_group(), MixtureSpec, ("pinch_count", "pinch_percent"))
    flags |= add_config_flags(build, MixtureSpec, ("seed", "eval_languages"))
    build.add_argument("--out", required=True, help="output FILE.jsonl (FILE.summary.json is written beside)")
    build.set_defaults(func=cmd_build, config_flags=flags, read_flags=add_config_flags(build, ReadOptions, READ_KEYS))

    validate = data_sub.add_parser("validate", help="check every record of a source; report rejects per reason")
    validate.add_argument("source")
    validate.set_defaults(func=cmd_validate, read_flags=add_config_flags(validate, ReadOptions, READ_KEYS))

    _register_translate(data_sub)

    stats = data_sub.add_parser("stats", help="records per language and split, prompt/response lengths, prompts "
                                "complete in all languages")
    stats.add_argument("source")
    stats.set_defaults(func=cmd_stats, read_flags=add_config_flags(stats, StatsOptions, ("languages", *READ_KEYS)))


def _options(args: argparse.Namespace, cls: Any = None) -> Any:
    """The command's read options (`cls`: ReadOptions unless given) from its flags."""
    from babeltune.cli import command_config
    from babeltune.data.config import ReadOptions

    return command_config(cls or ReadOptions, args, flags=args.read_flags)


def cmd_build(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.data.mixtures import MixtureSpec, build_mixture
    from babeltune.data.records import write_jsonl
    from babeltune.outputs import check_output

    out = check_output(args.out, "file")
    spec = command_config(MixtureSpec, args)
    loaded = _options(args).load(args.source)
    mixture = build_mixture(loaded.records, spec, source_name=args.source)
    write_jsonl(mixture.records, out)
    summary = {**mixture.summary, "source_read": loaded.report.to_dict()}
    summary_path = out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(loaded.report.summary())
    counts = ", ".join(f"{lang}={n}" for lang, n in mixture.summary["per_language"].items())
    print(f"{args.recipe}: {len(mixture.records)} examples ({counts}) -> {out}")
    print(f"summary -> {summary_path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = _options(args).load(args.source)
    report = loaded.report
    print(report.summary())
    for kind, examples in sorted(report.examples.items()):
        for example in examples:
            print(f"  [{kind}] {example}")
    return 1 if report.rejected else 0


def cmd_stats(args: argparse.Namespace) -> int:
    from babeltune.data.config import StatsOptions

    options: StatsOptions = _options(args, StatsOptions)
    loaded = options.load(args.source)
    records = loaded.records
    per_lang = Counter(r.lang for r in records)
    splits = Counter(str(r.meta.get("split", "-")) for r in records)
    print(loaded.report.summary())
    print(f"{len(records)} records, {len({r.pid for r in records})} prompts (pids)")
    print(_completeness_line(records, options.languages))
    print("splits: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    print(f"{'lang':<6}{'records':>8}{'prompt chars':>14}{'response chars':>16}")
    for lang, n in sorted(per_lang.items()):
        mine = [r for r in records if r.lang == lang]
        p = sum(len(r.prompt) for r in mine) / n
        resp = [len(r.response) for r in mine if r.response]
        avg_resp = f"{sum(resp) / len(resp):.0f}" if resp else "-"
        print(f"{lang:<6}{n:>8}{p:>14.0f}{avg_resp:>16}")
    return 0


def _completeness_line(records: list[Any], languages: list[str]) -> str:
    """How many prompts exist in every requested language (default: every language of `records`)."""
    from babeltune.data.parallel import complete_prompts
    from babeltune.languages import parse_language_list

    wanted = parse_language_list(languages) if languages else sorted({r.lang for r in records})
    complete, total = complete_prompts(records, wanted)
    return f"prompts complete in all {len(wanted)} languages ({', '.join(wanted)}): {complete} of {total}"


_TRANSLATE_KEYS = ("source", "out", "languages", "source_lang", "backend", "model")
def _register_translate(data_sub: Any) -> None:
    from babeltune.cli import positive_int
    from babeltune.data.translate import TranslateConfig
    from babeltune.generate.config import ENDPOINT_FLAGS, VLLM_FLAGS
    from babeltune.options import add_config_file_options, add_config_flags

    tr = data_sub.add_parser(
        "translate", help="translate a source into target languages (gated) into a parallel set",
        description="Translate every turn of every record into each target language through a generation backend; "
        "gate each translation (language, length, markers, empty); write the prompts complete in every language. "
        "Rerunning resumes (OUT.translations.jsonl is the cache).")
    add_config_file_options(tr, TranslateConfig, "gates.length.zh.high=1.0")
    flags = add_config_flags(tr, TranslateConfig, _TRANSLATE_KEYS)
    flags |= add_config_flags(tr.add_argument_group("endpoint backend (--endpoint URL)"), TranslateConfig,
                              ENDPOINT_FLAGS, names=ENDPOINT_FLAGS)
    flags |= add_config_flags(tr.add_argument_group("vllm backend (--backend vllm; needs vLLM installed: README "
                                                    "'Development')"), TranslateConfig, VLLM_FLAGS, names=VLLM_FLAGS)
    flags |= add_config_flags(tr, TranslateConfig, ("decoding.max_new_tokens", "retries", "limit", "overwrite"),
                              extra={"limit": {"type": positive_int}})
    tr.set_defaults(func=cmd_translate, config_flags=flags)


def cmd_translate(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.config import ConfigError
    from babeltune.data.readers import load_records
    from babeltune.data.translate import TranslateConfig, make_translation_backend, select_source, translate_records
    from babeltune.outputs import check_output

    try:
        cfg = command_config(TranslateConfig, args)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    check_output(cfg.out, "file")
    loaded = load_records(cfg.source, lang=cfg.source_lang)
    if not loaded.records:
        raise ValueError(f"{cfg.source}: no records to translate ({loaded.report.summary()})")
    records = select_source(loaded.records, cfg.source, cfg.source_lang)
    records = records[: cfg.limit] if cfg.limit else records
    print(f"{loaded.report.summary()}; translating {len(records)} ({records[0].lang}) into {', '.join(cfg.languages)}")
    backend = make_translation_backend(cfg)
    try:
        summary = translate_records(records, backend, cfg)
    finally:
        if cfg.backend == "vllm":  # shut the engine's processes down, as `babeltune generate` does
            from babeltune.generate.vllm import release_engines

            release_engines()
    print("\n".join(summary.lines()))
    failed = sum(reasons.get("request_failed", 0) for reasons in summary.rejected.values())
    if failed:  # rejections by the gates are results; requests that never got an answer are not
        print(f"{failed} item(s) left out because their requests failed (see {cfg.out.removesuffix('.jsonl')}"
              ".rejects.jsonl); run the same command again to retry them")
    return 1 if failed else 0

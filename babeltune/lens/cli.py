"""`babeltune lens probe | train | steer | mc-eval` (study C). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from babeltune.cli import positive_int
from babeltune.outputs import check_output

_PROBE_FLAGS = {"model": "model", "data": "data", "text": "text", "parallel_text": "parallel_text",
                "languages": "languages", "central": "central", "per_language": "per_language",
                "min_per_language": "min_per_language", "holdout": "holdout", "rank": "rank", "pool": "pool",
                "max_prompt_tokens": "max_prompt_tokens", "template": "template", "batch_size": "batch_size",
                "seed": "seed", "device": "device", "dtype": "dtype"}
_TRAIN_FLAGS = {"model": "model", "subspace": "subspace", "data": "data", "languages": "languages",
                "top_layers": "top_layers", "lr": "optim.lr", "max_steps": "max_steps", "seed": "seed",
                "device": "device", "dtype": "dtype"}


def register(sub: Any) -> None:
    parser = sub.add_parser("lens", help="language subspaces: probe, manipulation training, steering (study C)")
    lens_sub = parser.add_subparsers(dest="lens_command", metavar="SUBCOMMAND", required=True)

    probe = lens_sub.add_parser("probe", help="find each layer's language-specific subspace and directions",
                                description="Hidden states of prompts in several languages at every layer -> "
                                "per-layer language means, common vector, language-specific subspace, directions, "
                                "and a diagnostics table + plot over layers.")
    _common(probe, "ProbeConfig")
    probe.add_argument("--data", action="append",
                       help="babeltune source (repeatable): bundled:train, FILE.jsonl, hf:...")
    probe.add_argument("--text", action="append", help="text file, one sentence per line: PATH=LANG, a file named by "
                       "its language code, or a folder of such (repeatable)")
    probe.add_argument("--parallel-text", action="store_true", default=None,
                       help="line n of every text file is the same sentence (e.g. FLORES)")
    probe.add_argument("--languages", help="comma-separated codes (default: every language found)")
    probe.add_argument("--central", help="central language (default en)")
    probe.add_argument("--per-language", type=positive_int, help="most prompts per language (default 300)")
    probe.add_argument("--min-per-language", type=int, help="fewer prompts is an error (default 20)")
    probe.add_argument("--holdout", type=float, help="fraction held out for the diagnostics (default 0.2)")
    probe.add_argument("--rank", type=int, help="subspace dimension (default n_languages - 1)")
    probe.add_argument("--pool", choices=["last", "mean"], help="last prompt token (default) or mean")
    probe.add_argument("--max-prompt-tokens", type=int, help="default 64")
    probe.add_argument("--template", choices=["auto", "gemma", "tokenizer", "none"])
    probe.add_argument("--batch-size", type=int)
    probe.add_argument("--out", required=True, help="output folder (subspace.safetensors, subspace.json, diagnostics)")
    probe.set_defaults(func=cmd_probe)

    train = lens_sub.add_parser("train", help="manipulation training of the top layers (study C's three losses)")
    _common(train, "LensTrainConfig")
    train.add_argument("--subspace", help="folder written by `babeltune lens probe`")
    train.add_argument("--data", help="parallel prompts (pids shared across languages), e.g. bundled:train")
    train.add_argument("--languages", help="central language first or not; default: the subspace's languages")
    train.add_argument("--top-layers", type=int, help="number of top layers trained (default 2)")
    train.add_argument("--lr", type=float, help="learning rate (default 1e-5)")
    train.add_argument("--max-steps", type=int, help="optimizer steps (default: one epoch)")
    train.add_argument("--out", required=True, help="run folder (final/, log.jsonl, checkpoints/, run.json)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in --out from its latest checkpoint (same options)")
    train.set_defaults(func=cmd_train)

    steer = lens_sub.add_parser("steer", help="generate with and without steering, side by side")
    steer.add_argument("--model", default="gemma-3-270m")
    steer.add_argument("--prompt", action="append", default=[], metavar="LANG:TEXT",
                       help="a prompt and its language, e.g. 'fi:Mikä on Suomen pääkaupunki?' (repeatable)")
    steer.add_argument("--data", help="babeltune source whose prompts are used instead")
    steer.add_argument("--per-language", type=positive_int, default=2, help="with --data: prompts per language")
    steer.add_argument("--max-new-tokens", type=int, default=48)
    steer.add_argument("--out", help="write the generations as JSONL here")
    add_steer_options(steer, required=True)
    steer.set_defaults(func=cmd_steer)

    mc = lens_sub.add_parser("mc-eval", help="multiple-choice accuracy per language (loglik or option letter)",
                             description="Items: JSONL {lang, question|premise, choices, label}.")
    mc.add_argument("--model", default="gemma-3-270m")
    mc.add_argument("--data", required=True, help="multiple-choice JSONL file")
    mc.add_argument("--method", choices=["loglik", "letter"], default="loglik")
    mc.add_argument("--template", choices=["none", "auto", "gemma", "tokenizer"], default="none",
                    help="none: raw text (default, usual for base models); else a user turn in the chat template")
    mc.add_argument("--languages", help="only these languages")
    mc.add_argument("--batch-size", type=int, default=8)
    mc.add_argument("--dtype", default="float32")
    mc.add_argument("--device", default="cpu")
    mc.add_argument("--out", help="write per-language results (JSON) here")
    add_steer_options(mc, required=False)
    mc.set_defaults(func=cmd_mc_eval)


def _common(parser: argparse.ArgumentParser, cls: str) -> None:
    parser.add_argument("--config", help=f"YAML file of {cls} fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. holdout=0.3 (repeatable)")
    parser.add_argument("--model", help="model alias, folder or hub id (default gemma-3-270m)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])


def add_steer_options(parser: argparse.ArgumentParser, required: bool) -> None:
    """--steer and its options; `babeltune generate` adds the same ones."""
    group = parser.add_argument_group("steering (babeltune lens)")
    group.add_argument("--steer", required=required, metavar="SUBSPACE",
                       help="folder written by `babeltune lens probe`: edit states while generating")
    group.add_argument("--steer-mode", choices=["add", "project"], default="add",
                       help="add: h + c * direction(lang); project: h - c * P_s h")
    group.add_argument("--steer-coefficient", type=float, default=1.0, help="c; 0 = unsteered")
    group.add_argument("--steer-layers", default="-1", help="comma-separated layers (negative from the top)")
    group.add_argument("--steer-lang", help="add mode: target language (default: each prompt's own)")
    group.add_argument("--steer-allow-other-model", action="store_true",
                       help="use a subspace probed on other weights of the same shape")


def steer_config_from_args(args: argparse.Namespace) -> Any:
    """The SteerConfig of the --steer options, or None without --steer."""
    from babeltune.config import from_dict
    from babeltune.lens.config import SteerConfig

    if not getattr(args, "steer", None):
        return None
    try:
        layers = [int(x) for x in str(args.steer_layers).split(",") if x.strip()]
    except ValueError as exc:
        raise ValueError(f"--steer-layers {args.steer_layers!r}: give comma-separated integers") from exc
    values = {"subspace": args.steer, "mode": args.steer_mode, "coefficient": args.steer_coefficient,
              "layers": layers, "lang": args.steer_lang, "allow_other_model": args.steer_allow_other_model}
    flags = {"subspace": "--steer", "mode": "--steer-mode", "coefficient": "--steer-coefficient",
             "layers": "--steer-layers", "lang": "--steer-lang", "allow_other_model": "--steer-allow-other-model"}
    return from_dict(SteerConfig, values, where="command line", origins=flags)


def cmd_probe(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.lens.config import ProbeConfig
    from babeltune.lens.diagnostics import format_table
    from babeltune.lens.probing import run_probe

    cfg = command_config(ProbeConfig, args, _PROBE_FLAGS)
    check_output(args.out, "folder")
    result = run_probe(cfg, args.out)
    counts = ", ".join(f"{lang}={c['train']}+{c['heldout']}" for lang, c in result.split.counts().items())
    truncated = sum(result.split.report.truncated.values())
    print(f"probed {result.subspace.n_layers} layers, {len(result.subspace.languages)} languages "
          f"(train+heldout prompts: {counts}; {truncated} cut to {cfg.max_prompt_tokens} tokens), rank "
          f"{result.subspace.rank}, {result.tokens} tokens in {result.seconds:.1f} s")
    if result.diagnostics:
        print(format_table(result.diagnostics))
    print(f"subspace -> {Path(args.out)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.interrupts import TrainingInterrupted
    from babeltune.lens.manipulate import LensTrainConfig, run_manipulation

    cfg = command_config(LensTrainConfig, args, _TRAIN_FLAGS)
    check_output(args.out, "folder")
    try:
        summary = run_manipulation(cfg, args.out, resume=args.resume)
    except TrainingInterrupted as exc:
        print(f"babeltune lens train: {exc}; add --resume to the same command to continue", file=sys.stderr)
        return 130
    print(json.dumps(summary, indent=2))
    return 0


def _load_for_steering(model_name: str, steer_cfg: Any, dtype: str = "float32", device: str = "cpu") -> Any:
    from babeltune.lens.subspace import LanguageSubspace
    from babeltune.models.loading import load_model, model_fingerprint

    loaded = load_model(model_name, dtype=dtype, device=device)
    subspace = LanguageSubspace.load(steer_cfg.subspace)
    fingerprint = None if steer_cfg.allow_other_model else model_fingerprint(loaded.path)
    subspace.check_model(loaded.model, fingerprint)
    return loaded, subspace


def cmd_steer(args: argparse.Namespace) -> int:
    from babeltune.data.records import Message
    from babeltune.generate.backends import GenerationRequest
    from babeltune.generate.local import LocalBackend
    from babeltune.generate.settings import DecodingSettings
    from babeltune.lens.steering import steer

    steer_cfg = steer_config_from_args(args)
    if args.out:
        check_output(args.out, "file")
    loaded, subspace = _load_for_steering(args.model, steer_cfg)
    backend = LocalBackend(loaded.model, loaded.tokenizer, batch_size=1, model_name=args.model)
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens)  # babeltune generate's defaults (greedy)
    rows = []
    for i, (lang, text) in enumerate(_steer_prompts(args)):
        request = [GenerationRequest(f"p{i}", (Message("user", text),))]
        [plain] = backend.generate(request, settings)
        with steer(loaded.model, subspace, mode=steer_cfg.mode, coefficient=steer_cfg.coefficient,
                   layers=steer_cfg.layers, lang=steer_cfg.lang or lang):
            [steered] = backend.generate(request, settings)
        rows.append({"lang": lang, "prompt": text, "unsteered": plain.text, "steered": steered.text})
        print(f"--- [{lang}] {text}\n  unsteered: {plain.text!r}\n  steered:   {steered.text!r}")
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return 0


def _steer_prompts(args: argparse.Namespace) -> list[tuple[str, str]]:
    from babeltune.languages import get_language

    prompts = []
    for spec in args.prompt:
        lang, sep, text = spec.partition(":")
        if not sep or not text.strip():
            raise ValueError(f"--prompt {spec!r}: write LANG:TEXT, e.g. 'fi:Mikä on Suomen pääkaupunki?'")
        prompts.append((get_language(lang).code, text.strip()))
    if args.data:
        from babeltune.data.readers import read_records

        seen: dict[str, int] = {}
        for rec in read_records(args.data):
            if seen.get(rec.lang, 0) < args.per_language:
                seen[rec.lang] = seen.get(rec.lang, 0) + 1
                prompts.append((rec.lang, rec.prompt))
    if not prompts:
        raise ValueError("give prompts with --prompt LANG:TEXT or --data SOURCE")
    return prompts


def cmd_mc_eval(args: argparse.Namespace) -> int:
    import contextlib

    from babeltune.languages import parse_language_list
    from babeltune.lens.mc import evaluate_mc, read_mc_items, summarize
    from babeltune.lens.steering import steer
    from babeltune.models.chat import get_template

    if args.out:
        check_output(args.out, "file")
    items = read_mc_items(args.data, parse_language_list(args.languages) if args.languages else None)
    steer_cfg = steer_config_from_args(args)
    if steer_cfg is not None:
        loaded, subspace = _load_for_steering(args.model, steer_cfg, args.dtype, args.device)
    else:
        from babeltune.models.loading import load_model

        loaded, subspace = load_model(args.model, dtype=args.dtype, device=args.device), None
    template = None if args.template == "none" else get_template(loaded.tokenizer, args.template)
    with contextlib.ExitStack() as stack:
        steering = None
        if steer_cfg is not None and subspace is not None:
            steering = stack.enter_context(steer(loaded.model, subspace, mode=steer_cfg.mode,
                                                 coefficient=steer_cfg.coefficient, layers=steer_cfg.layers,
                                                 lang=steer_cfg.lang))
        scores = evaluate_mc(loaded.model, loaded.tokenizer, items, method=args.method, template=template,
                             batch_size=args.batch_size, steering=steering)
    summary = summarize(scores)
    print(summary.table())
    if args.out:
        payload = {"model": args.model, "data": args.data, "method": args.method, "template": args.template,
                   "steer": vars(steer_cfg) if steer_cfg else None, **summary.to_dict()}
        Path(args.out).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0

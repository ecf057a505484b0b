"""`babeltune lens probe | train | steer | mc-eval` (study C). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from babeltune.cli import positive_int
from babeltune.options import add_config_file_options, add_config_flags
from babeltune.outputs import check_output

_TRAIN_KEYS = ("model", "subspace", "data", "languages", "top_layers", "optim.lr", "max_steps", "seed", "device",
               "dtype")
_PROBE_KEYS = ("model", "data", "text", "parallel_text", "languages", "central", "per_language", "min_per_language",
               "holdout", "rank", "pool", "max_prompt_tokens", "template", "batch_size", "seed", "device", "dtype")
_REPEATABLE = {"action": "append", "metavar": "SOURCE"}


def register(sub: Any) -> None:
    from babeltune.lens.config import STEER_FLAGS, LensTrainConfig, MCEvalConfig, ProbeConfig, SteerRunConfig

    parser = sub.add_parser("lens", help="language subspaces: probe, manipulation training, steering (study C)")
    lens_sub = parser.add_subparsers(dest="lens_command", metavar="SUBCOMMAND", required=True)

    probe = lens_sub.add_parser("probe", help="find each layer's language-specific subspace and directions",
                                description="Hidden states of prompts in several languages at every layer -> "
                                "per-layer language means, common vector, language-specific subspace, directions, "
                                "and a diagnostics table + plot over layers.")
    add_config_file_options(probe, ProbeConfig, "holdout=0.3")
    flags = add_config_flags(probe, ProbeConfig, _PROBE_KEYS, extra={
        "data": _REPEATABLE, "text": {**_REPEATABLE, "metavar": "PATH[=LANG]"},
        "per_language": {"type": positive_int}})
    probe.add_argument("--out", required=True, help="output folder (subspace.safetensors, subspace.json, diagnostics)")
    probe.set_defaults(func=cmd_probe, config_flags=flags)

    train = lens_sub.add_parser("train", help="manipulation training of the top layers (study C's three losses)")
    add_config_file_options(train, LensTrainConfig, "top_layers=4")
    flags = add_config_flags(train, LensTrainConfig, _TRAIN_KEYS)
    train.add_argument("--out", required=True, help="run folder (final/, log.jsonl, checkpoints/, run.json)")
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run in --out from its latest checkpoint (same options)")
    train.set_defaults(func=cmd_train, config_flags=flags)

    steer = lens_sub.add_parser("steer", help="generate with and without steering, side by side")
    add_config_file_options(steer, SteerRunConfig, "steer.layers=[-1,-2]")
    flags = add_config_flags(steer, SteerRunConfig, ("model", "prompt", "data", "per_language", "max_new_tokens",
                                                     "out"),
                             extra={"prompt": {"action": "append", "metavar": "LANG:TEXT"},
                                    "per_language": {"type": positive_int}})
    flags |= _steer_flags(steer, SteerRunConfig, STEER_FLAGS, required=True)
    steer.set_defaults(func=cmd_steer, config_flags=flags)

    mc = lens_sub.add_parser("mc-eval", help="multiple-choice accuracy per language (loglik or option letter)",
                             description="Items: JSONL {lang, question|premise, choices, label}, scored as one "
                                         "lm-eval task per language by `babeltune bench` (needs `pip install "
                                         "'babeltune[harness]'`).")
    add_config_file_options(mc, MCEvalConfig, "method=letter")
    flags = add_config_flags(mc, MCEvalConfig, ("model", "data", "method", "template", "languages", "batch_size",
                                                "dtype", "device", "out", "tasks_dir"))
    flags |= _steer_flags(mc, MCEvalConfig, STEER_FLAGS, required=False)
    mc.set_defaults(func=cmd_mc_eval, config_flags=flags)


def _steer_flags(parser: argparse.ArgumentParser, cls: type, names: dict[str, str], required: bool) -> dict[str, str]:
    group = parser.add_argument_group("steering (babeltune lens)")
    return add_config_flags(group, cls, names, names=names,
                            extra={"steer.subspace": {"required": required, "metavar": "SUBSPACE"}})


def cmd_probe(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.lens.config import ProbeConfig
    from babeltune.lens.diagnostics import format_table
    from babeltune.lens.probing import run_probe

    cfg = command_config(ProbeConfig, args)
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
    from babeltune.lens.config import LensTrainConfig
    from babeltune.lens.manipulate import run_manipulation

    cfg = command_config(LensTrainConfig, args)
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
    from babeltune.cli import command_config
    from babeltune.data.records import Message
    from babeltune.generate.backends import GenerationRequest
    from babeltune.generate.local import LocalBackend
    from babeltune.generate.settings import DecodingSettings
    from babeltune.lens.config import SteerRunConfig
    from babeltune.lens.steering import steer

    cfg = command_config(SteerRunConfig, args)
    if cfg.out:
        check_output(cfg.out, "file", "--out")
    prompts = _steer_prompts(cfg)
    loaded, subspace = _load_for_steering(cfg.model, cfg.steer)
    backend = LocalBackend(loaded.model, loaded.tokenizer, batch_size=1, model_name=cfg.model)
    settings = DecodingSettings(max_new_tokens=cfg.max_new_tokens)  # babeltune generate's defaults (greedy)
    rows = []
    for i, (lang, text) in enumerate(prompts):
        request = [GenerationRequest(f"p{i}", (Message("user", text),))]
        [plain] = backend.generate(request, settings)
        with steer(loaded.model, subspace, mode=cfg.steer.mode, coefficient=cfg.steer.coefficient,
                   layers=cfg.steer.layers, lang=cfg.steer.lang or lang):
            [steered] = backend.generate(request, settings)
        rows.append({"lang": lang, "prompt": text, "unsteered": plain.text, "steered": steered.text})
        print(f"--- [{lang}] {text}\n  unsteered: {plain.text!r}\n  steered:   {steered.text!r}")
    if cfg.out:
        Path(cfg.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return 0


def _steer_prompts(cfg: Any) -> list[tuple[str, str]]:
    """The prompts of a SteerRunConfig: its LANG:TEXT prompts, then per_language of its data's."""
    from babeltune.languages import get_language

    prompts = []
    for spec in cfg.prompt:
        lang, sep, text = spec.partition(":")
        if not sep or not text.strip():
            raise ValueError(f"--prompt {spec!r}: write LANG:TEXT, e.g. 'fi:Mikä on Suomen pääkaupunki?'")
        prompts.append((get_language(lang).code, text.strip()))
    if cfg.data:
        from babeltune.data.readers import read_records

        seen: dict[str, int] = {}
        for rec in read_records(cfg.data):
            if seen.get(rec.lang, 0) < cfg.per_language:
                seen[rec.lang] = seen.get(rec.lang, 0) + 1
                prompts.append((rec.lang, rec.prompt))
    if not prompts:
        raise ValueError("give prompts with --prompt LANG:TEXT or --data SOURCE")
    return prompts


def cmd_mc_eval(args: argparse.Namespace) -> int:
    from babeltune.bench.harness import require_harness
    from babeltune.cli import command_config
    from babeltune.config import to_dict
    from babeltune.lens.config import MCEvalConfig
    from babeltune.lens.mc import run_mc_eval

    cfg = command_config(MCEvalConfig, args)
    if cfg.out:
        check_output(cfg.out, "file", "--out")
    if cfg.tasks_dir:
        check_output(cfg.tasks_dir, "folder", "--tasks-dir")
    require_harness("babeltune lens mc-eval")
    result = run_mc_eval(cfg)
    print(result.summary.table())
    if cfg.out:
        from dataclasses import asdict

        from babeltune.bench.harness import _nan_to_none

        bench = result.bench
        payload = {"model": cfg.model, "data": cfg.data, "method": cfg.method, "template": cfg.template,
                   "steer": to_dict(cfg.steer) if cfg.steer else None, **result.summary.to_dict(),
                   "identity": bench.identity, "tasks": bench.tasks, "rows": [asdict(row) for row in bench.rows]}
        Path(cfg.out).write_text(json.dumps(_nan_to_none(payload), indent=2, ensure_ascii=False, default=str) + "\n",
                                 encoding="utf-8")
    return 0

"""`babeltune generate` and `babeltune serve`. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from babeltune.cli import positive_int

_GENERATE_KEYS = ("model", "data", "out", "backend")
_DECODING_KEYS = ("decoding.max_new_tokens", "decoding.temperature", "decoding.top_p", "decoding.top_k",
                  "decoding.repetition_penalty", "decoding.seed")
_LOCAL_KEYS = ("local.dtype", "local.device", "local.template", "local.batch_size", "local.bf16_head")
_SERVE_KEYS = ("model", "host", "port", "served_name", "api_key_env", *_LOCAL_KEYS, "default_max_tokens",
               "read_timeout", "enable_lora")


def register(sub: Any) -> None:
    from babeltune.generate.config import ENDPOINT_FLAGS, VLLM_FLAGS, GenerateConfig, ServeConfig
    from babeltune.lens.config import STEER_FLAGS
    from babeltune.options import add_config_file_options, add_config_flags

    gen = sub.add_parser("generate", help="generate responses (local model, in-process vLLM or OpenAI-compatible "
                         "endpoint)", description="Generate one response per prompt into a JSONL file; rerunning "
                         "resumes. --endpoint URL implies --backend endpoint.")
    add_config_file_options(gen, GenerateConfig, "decoding.top_p=0.9")
    flags = add_config_flags(gen, GenerateConfig, _GENERATE_KEYS)
    groups: list[tuple[str, Any, dict[str, str] | None, dict[str, Any] | None]] = [
        ("decoding (defaults: study B's greedy, repetition penalty 1.2, 512 tokens)", _DECODING_KEYS, None, None),
        ("local backend", _LOCAL_KEYS, None, None),
        ("vllm backend (--backend vllm; needs vLLM installed: README 'Development')", VLLM_FLAGS, VLLM_FLAGS, None),
        ("endpoint backend", ENDPOINT_FLAGS, ENDPOINT_FLAGS, None),
        ("prompt selection", ("languages", "per_language", "source_lang", "overwrite"), None,
         {"per_language": {"type": positive_int}}),
        ("steering (babeltune lens; local backend)", STEER_FLAGS, STEER_FLAGS,
         {"steer.subspace": {"metavar": "SUBSPACE"}}),
    ]
    for title, keys, names, extra in groups:
        flags |= add_config_flags(gen.add_argument_group(title), GenerateConfig, keys, names=names, extra=extra)
    gen.set_defaults(func=cmd_generate, config_flags=flags)

    srv = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible HTTP API",
                         description="OpenAI-compatible /v1/chat/completions and /v1/models over a local model; "
                         "with --enable-lora also vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter.")
    add_config_file_options(srv, ServeConfig, "local.batch_size=16")
    srv.set_defaults(func=cmd_serve, config_flags=add_config_flags(srv, ServeConfig, _SERVE_KEYS))


def cmd_generate(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.config import ConfigError
    from babeltune.generate.config import GenerateConfig
    from babeltune.generate.runner import run_generation

    try:
        cfg = command_config(GenerateConfig, args,
                             values={"backend": "endpoint"} if args.endpoint and args.backend is None else None)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if cfg.steer is not None and cfg.backend != "local":
        raise ValueError(f"--steer needs the local backend (it edits the model's states); not --backend {cfg.backend}")
    from babeltune.outputs import check_output

    check_output(cfg.out, "file")
    records = select_records(cfg)
    backend = make_backend(cfg)
    # Context managers entered here wrap the whole generation (e.g. a steering hook on backend.model).
    with contextlib.ExitStack() as stack:
        if cfg.steer is not None:  # babeltune lens: edit the model's states while it generates
            from babeltune.lens.generation import steer_backend

            backend = steer_backend(stack, backend, cfg.steer, {r.id: r.lang for r in records})
        if cfg.backend == "vllm":  # shut the engine's processes down when the command ends
            from babeltune.generate.vllm import release_engines

            stack.callback(release_engines)
        summary = run_generation(records, backend, cfg.decoding, cfg.out, overwrite=cfg.overwrite,
                                 retry_failed=cfg.retry_failed, progress=sys.stderr.isatty())
    print(summary.line())
    for record_id, error in summary.failures.items():
        print(f"  failed: record {record_id!r}: {error}")
    if summary.failed > len(summary.failures):
        more = summary.failed - len(summary.failures)
        print(f"  ... and {more} more failed record(s): see field 'error' in {cfg.out}")
    return 1 if summary.failed else 0


def select_records(cfg: Any) -> list[Any]:
    """Read the prompts of a GenerateConfig, filter them, and check their modifier specs."""
    from babeltune.data.modifiers import parse_modifier
    from babeltune.data.readers import load_records
    from babeltune.languages import parse_language_list

    loaded = load_records(cfg.data, lang=cfg.source_lang,
                          languages=parse_language_list(cfg.languages) if cfg.languages else None)
    records = loaded.records
    if cfg.per_language is not None:
        counts: dict[str, int] = {}
        kept = []
        for rec in records:
            counts[rec.lang] = counts.get(rec.lang, 0) + 1
            if counts[rec.lang] <= cfg.per_language:
                kept.append(rec)
        records = kept
    if not records:
        raise ValueError(f"{cfg.data}: no prompts to generate from ({loaded.report.summary()})")
    for rec in records:
        if rec.meta.get("modifier") is not None:
            try:
                parse_modifier(rec.meta["modifier"])
            except ValueError as exc:
                raise ValueError(f"{cfg.data}: record {rec.id!r}: field 'meta.modifier': {exc}") from exc
    print(f"{loaded.report.summary()}; generating for {len(records)}")
    return records


def make_backend(cfg: Any) -> Any:
    """The backend a GenerateConfig asks for."""
    if cfg.backend == "endpoint":
        from babeltune.generate.endpoint import EndpointBackend

        return EndpointBackend(cfg.endpoint)
    if cfg.backend == "vllm":
        from babeltune.generate.vllm import VLLMBackend

        return VLLMBackend.from_pretrained(cfg.model, cfg.vllm)
    from babeltune.generate.local import LocalBackend

    return LocalBackend.from_pretrained(cfg.model, dtype=cfg.local.dtype, device=cfg.local.device,
                                        template=cfg.local.template, batch_size=cfg.local.batch_size,
                                        trust_remote_code=cfg.local.trust_remote_code, bf16_head=cfg.local.bf16_head)


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    from babeltune.cli import command_config
    from babeltune.config import ConfigError
    from babeltune.generate.config import ServeConfig
    from babeltune.generate.local import LocalBackend
    from babeltune.generate.server import check_bindable, start_server

    try:
        cfg = command_config(ServeConfig, args)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    token = None
    if cfg.api_key_env:
        token = os.environ.get(cfg.api_key_env, "")
        if not token:
            raise ValueError(f"--api-key-env {cfg.api_key_env}: that environment variable is empty or unset")
    try:
        loopback = ipaddress.ip_address(cfg.host).is_loopback
    except ValueError:
        loopback = cfg.host == "localhost"
    if not loopback and token is None:
        print(f"warning: serving on {cfg.host} without a token: anyone who can reach it can use the model",
              file=sys.stderr)
    check_bindable(cfg.host, cfg.port)  # a port in use is an error now, not after loading the model
    if cfg.enable_lora:
        from pathlib import Path

        from babeltune.models.loading import resolve_model

        if (Path(resolve_model(cfg.model)) / "adapter_config.json").exists():
            raise ValueError(f"--enable-lora: --model {cfg.model} is a PEFT adapter; serve its base model and load "
                             "the adapter through /v1/load_lora_adapter")
    backend = LocalBackend.from_pretrained(cfg.model, dtype=cfg.local.dtype, device=cfg.local.device,
                                           template=cfg.local.template, batch_size=cfg.local.batch_size,
                                           trust_remote_code=cfg.local.trust_remote_code,
                                           bf16_head=cfg.local.bf16_head)
    server, thread = start_server(backend, host=cfg.host, port=cfg.port, served_name=cfg.served_name or cfg.model,
                                  token=token, default_max_tokens=cfg.default_max_tokens,
                                  read_timeout=cfg.read_timeout, lora_base=cfg.model if cfg.enable_lora else None)
    print(f"serving {cfg.served_name or cfg.model} at {server.url} (token {'required' if token else 'not required'}"
          f"{'; LoRA adapters loadable' if cfg.enable_lora else ''}); Ctrl-C stops", flush=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return 0

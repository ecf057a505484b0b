"""`babeltune generate` and `babeltune serve`. Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from babeltune.cli import positive_int

# flag -> config key; every flag is also settable as --set key=value or in the --config YAML.
_GENERATE_FLAGS: dict[str, str] = {
    "model": "model", "data": "data", "out": "out", "backend": "backend",
    "max_new_tokens": "decoding.max_new_tokens", "temperature": "decoding.temperature", "top_p": "decoding.top_p",
    "top_k": "decoding.top_k", "repetition_penalty": "decoding.repetition_penalty", "seed": "decoding.seed",
    "dtype": "local.dtype", "device": "local.device", "template": "local.template", "batch_size": "local.batch_size",
    "bf16_head": "local.bf16_head",
    "vllm_dtype": "vllm.dtype", "vllm_tensor_parallel_size": "vllm.tensor_parallel_size",
    "vllm_data_parallel_size": "vllm.data_parallel_size", "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "vllm_max_model_len": "vllm.max_model_len", "vllm_max_lora_rank": "vllm.max_lora_rank",
    "vllm_max_loras": "vllm.max_loras", "vllm_enforce_eager": "vllm.enforce_eager", "vllm_seed": "vllm.seed",
    "vllm_max_num_seqs": "vllm.max_num_seqs", "vllm_template": "vllm.template",
    "endpoint": "endpoint.url", "endpoint_model": "endpoint.model", "api_key_env": "endpoint.api_key_env",
    "concurrency": "endpoint.concurrency", "timeout": "endpoint.timeout", "max_retries": "endpoint.max_retries",
    "languages": "languages", "per_language": "per_language", "source_lang": "source_lang",
    "overwrite": "overwrite",
}
_SERVE_FLAGS: dict[str, str] = {
    "model": "model", "host": "host", "port": "port", "served_name": "served_name", "api_key_env": "api_key_env",
    "dtype": "local.dtype", "device": "local.device", "template": "local.template", "batch_size": "local.batch_size",
    "bf16_head": "local.bf16_head", "default_max_tokens": "default_max_tokens", "read_timeout": "read_timeout",
    "enable_lora": "enable_lora",
}


def register(sub: Any) -> None:
    gen = sub.add_parser("generate", help="generate responses (local model or OpenAI-compatible endpoint)",
                         description="Generate one response per prompt into a JSONL file; rerunning resumes.")
    gen.add_argument("--config", help="YAML file of GenerateConfig fields")
    gen.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any config field, e.g. decoding.top_p=0.9 (repeatable)")
    gen.add_argument("--model", help="local model: default alias, folder, PEFT adapter folder or hub id")
    gen.add_argument("--data", help="bundled:eval|modifiers, a .jsonl file/folder, or hf:NAME (default bundled:eval)")
    gen.add_argument("--out", help="output FILE.jsonl (resumed if it exists)")
    gen.add_argument("--backend", choices=["local", "vllm", "endpoint"],
                     help="default local; --endpoint implies endpoint; vllm: an in-process vLLM engine")
    dec = gen.add_argument_group("decoding (defaults: study B's greedy, repetition penalty 1.2, 512 tokens)")
    dec.add_argument("--max-new-tokens", type=int)
    dec.add_argument("--temperature", type=float, help="0 = greedy")
    dec.add_argument("--top-p", type=float)
    dec.add_argument("--top-k", type=int)
    dec.add_argument("--repetition-penalty", type=float)
    dec.add_argument("--seed", type=int)
    loc = gen.add_argument_group("local backend")
    loc.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    loc.add_argument("--device")
    loc.add_argument("--template", choices=["auto", "gemma", "tokenizer"])
    loc.add_argument("--batch-size", type=int)
    loc.add_argument("--bf16-head", choices=["auto", "on", "off"],
                     help="greedy float32: bfloat16 LM head with exact float32 rescoring (same tokens, faster)")
    vl = gen.add_argument_group("vllm backend (--backend vllm; needs vLLM installed: README 'Development')")
    vl.add_argument("--vllm-dtype", choices=["float32", "bfloat16", "float16", "auto"],
                    help="engine precision (default float32: the local backend's greedy tokens)")
    vl.add_argument("--vllm-tensor-parallel-size", type=int, help="GPUs one engine shards the model over")
    vl.add_argument("--vllm-data-parallel-size", type=int, help="engine replicas (as vLLM supports them)")
    vl.add_argument("--vllm-gpu-memory-utilization", type=float,
                    help="share of GPU memory (CPU backend: of RAM) the engine reserves (default 0.9)")
    vl.add_argument("--vllm-max-model-len", type=int, help="longest prompt + response in tokens")
    vl.add_argument("--vllm-max-lora-rank", type=int)
    vl.add_argument("--vllm-max-loras", type=int, help="adapters resident in one batch")
    vl.add_argument("--vllm-max-num-seqs", type=int, help="most sequences decoded at once")
    vl.add_argument("--vllm-enforce-eager", action="store_true", default=None, help="no CUDA graphs")
    vl.add_argument("--vllm-seed", type=int, help="engine seed")
    vl.add_argument("--vllm-template", choices=["auto", "gemma", "tokenizer"])
    ep = gen.add_argument_group("endpoint backend")
    ep.add_argument("--endpoint", help="base URL up to /v1, e.g. http://127.0.0.1:8000/v1")
    ep.add_argument("--endpoint-model", help="model name to request (default: the first the endpoint lists)")
    ep.add_argument("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
    ep.add_argument("--concurrency", type=int)
    ep.add_argument("--timeout", type=float, help="seconds per request attempt")
    ep.add_argument("--max-retries", type=int)
    sel = gen.add_argument_group("prompt selection")
    sel.add_argument("--languages", help="comma-separated language codes (default: all)")
    sel.add_argument("--per-language", type=positive_int, help="at most N prompts per language (default: all)")
    sel.add_argument("--source-lang", help="language of rows without a 'lang' column")
    gen.add_argument("--overwrite", action="store_true", default=None, help="start afresh instead of resuming")
    from babeltune.lens.cli import add_steer_options  # light: argparse only

    add_steer_options(gen, required=False)
    gen.set_defaults(func=cmd_generate)

    srv = sub.add_parser("serve", help="serve a local model over an OpenAI-compatible HTTP API",
                         description="OpenAI-compatible /v1/chat/completions and /v1/models over a local model; "
                         "with --enable-lora also vLLM's /v1/load_lora_adapter and /v1/unload_lora_adapter.")
    srv.add_argument("--config", help="YAML file of ServeConfig fields")
    srv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    srv.add_argument("--model")
    srv.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="default 8000; 0 picks a free port")
    srv.add_argument("--served-name", help="model id clients use (default: the --model string)")
    srv.add_argument("--api-key-env", help="environment variable holding the bearer token clients must send")
    srv.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    srv.add_argument("--device")
    srv.add_argument("--template", choices=["auto", "gemma", "tokenizer"])
    srv.add_argument("--batch-size", type=int, help="most requests answered together")
    srv.add_argument("--bf16-head", choices=["auto", "on", "off"])
    srv.add_argument("--default-max-tokens", type=int)
    srv.add_argument("--read-timeout", type=float,
                     help="seconds a client may take to send a request before it is answered 408 (default 30)")
    srv.add_argument("--enable-lora", action="store_true", default=None,
                     help="serve POST /v1/load_lora_adapter {lora_name, lora_path} and /v1/unload_lora_adapter "
                     "{lora_name} (vLLM's dynamic LoRA routes): PEFT adapters of --model, loaded at run time and "
                     "requested by name. Off by default (vLLM needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True for "
                     "the same): anyone who can reach the server could then load adapter folders from this disk")
    srv.set_defaults(func=cmd_serve)


def cmd_generate(args: argparse.Namespace) -> int:
    from babeltune.cli import command_config
    from babeltune.config import ConfigError
    from babeltune.generate.config import GenerateConfig
    from babeltune.generate.runner import run_generation

    try:
        cfg = command_config(GenerateConfig, args, _GENERATE_FLAGS,
                             {"backend": "endpoint"} if args.endpoint and args.backend is None else None)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if getattr(args, "steer", None) and cfg.backend != "local":
        raise ValueError(f"--steer needs the local backend (it edits the model's states); not --backend {cfg.backend}")
    from babeltune.outputs import check_output

    check_output(cfg.out, "file")
    records = select_records(cfg)
    backend = make_backend(cfg)
    # Context managers entered here wrap the whole generation (e.g. a steering hook on backend.model).
    with contextlib.ExitStack() as stack:
        if getattr(args, "steer", None):  # babeltune lens: edit the model's states while it generates
            from babeltune.lens.cli import steer_config_from_args
            from babeltune.lens.generation import steer_backend

            backend = steer_backend(stack, backend, steer_config_from_args(args), {r.id: r.lang for r in records})
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
    from babeltune.data.readers import load_records
    from babeltune.evaluate.modifiers import parse_modifier
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
        cfg = command_config(ServeConfig, args, _SERVE_FLAGS)
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

"""The vLLM half of bench_generate.py, run by it in the vLLM environment (`.venv-vllm`, see README
"Development"): one engine, timed three ways, figures written as JSON.

    .venv-vllm/bin/python benchmarks/bench_vllm_worker.py SPEC.json OUT.json

SPEC: {"model": BASE, "adapters": [DIR, ...], "records": PROMPTS.jsonl, "grid_records": PROMPTS.jsonl,
"decoding": {...}, "vllm": {...}, "repeats": N}.

- engine start: `VLLMBackend.from_pretrained(BASE)` (the engine starts once; adapters join it);
- babeltune's path (`VLLMBackend.generate`: render, SamplingParams, step loop, decode) against vLLM
  called directly (`LLM.generate` on the same token ids and SamplingParams), alternately, `repeats`
  times each, on `records`;
- the grid: every adapter on `grid_records`, one after the other through the same engine.
Outputs are returned as (text, completion tokens, finish reason) per prompt, for the parent to compare.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def timed_backend(backend: Any, requests: list[Any], settings: Any) -> tuple[dict[str, Any], float]:
    start = time.perf_counter()
    results = {r.id: (r.text, r.completion_tokens, r.finish_reason) for r in backend.generate(requests, settings)}
    return results, time.perf_counter() - start


def timed_direct(backend: Any, requests: list[Any], settings: Any) -> tuple[dict[str, Any], float]:
    """vLLM's own `LLM.generate` on the token ids and SamplingParams babeltune would send."""
    from vllm.inputs import TokensPrompt

    prompts = [TokensPrompt(prompt_token_ids=backend.render(r.messages)) for r in requests]  # rendered untimed
    params = [backend.sampling_params(r, settings) for r in requests]
    start = time.perf_counter()
    outs = backend.engine.llm.generate(prompts, params, use_tqdm=False, lora_request=backend.lora_request)
    seconds = time.perf_counter() - start
    stops = set(backend.stop_ids(settings))
    results = {}
    for req, out in zip(requests, outs, strict=True):
        ids = list(out.outputs[0].token_ids)
        reason = out.outputs[0].finish_reason
        text_ids = ids[:-1] if reason == "stop" and ids and ids[-1] in stops else ids
        results[req.id] = (backend.tokenizer.decode(text_ids, skip_special_tokens=True), len(ids), reason)
    return results, seconds


def main(spec_path: str, out_path: str) -> None:
    from babeltune.config import from_dict
    from babeltune.data import read_records
    from babeltune.generate import DecodingSettings, GenerationRequest
    from babeltune.generate.config import VLLMConfig
    from babeltune.generate.vllm import VLLMBackend, release_engines, vllm_version

    spec = json.loads(Path(spec_path).read_text())
    settings = from_dict(DecodingSettings, spec["decoding"])
    config = from_dict(VLLMConfig, spec["vllm"])
    requests = [GenerationRequest(r.id, r.prompt_messages) for r in read_records(spec["records"])]
    grid = [GenerationRequest(r.id, r.prompt_messages) for r in read_records(spec["grid_records"])]
    report: dict[str, Any] = {"vllm": vllm_version()}

    start = time.perf_counter()
    base = VLLMBackend.from_pretrained(spec["model"], config)
    report["engine_start_s"] = time.perf_counter() - start
    list(base.generate(requests[:2], DecodingSettings(max_new_tokens=2)))
    runs: dict[str, list[float]] = {"babeltune": [], "direct": []}
    for _ in range(spec.get("repeats", 2)):
        ours, seconds = timed_backend(base, requests, settings)
        runs["babeltune"].append(seconds)
        direct, seconds = timed_direct(base, requests, settings)
        runs["direct"].append(seconds)
    report["base"] = {"outputs": ours, "direct_outputs": direct, "seconds": runs}

    report["grid"] = []
    for adapter in spec["adapters"]:
        start = time.perf_counter()
        backend = VLLMBackend.from_pretrained(adapter, config)
        attach = time.perf_counter() - start
        outputs, seconds = timed_backend(backend, grid, settings)
        report["grid"].append({"adapter": adapter, "attach_s": attach, "seconds": seconds, "outputs": outputs})
    release_engines()
    Path(out_path).write_text(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":  # the engine's workers start by spawn and re-import this file
    main(sys.argv[1], sys.argv[2])

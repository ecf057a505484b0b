"""Generation throughput of the default model on the bundled evaluation prompts, and language-ID speed.

Side by side, in one run, on the same prompts and decoding settings (greedy, repetition penalty 1.2,
study B's): plain transformers `model.generate` at batch 16 in float32 (prompts in file order, left
padded: what a user would write), then babeltune's engine at the configurations given. New tokens are
counted up to and including each sequence's stop token (padding after a finished sequence is not a
token). For every configuration it reports the share of prompts whose greedy output is token-for-token
the output of float32 at batch 1 (the engine at batch 1 equals `generate` at batch 1: tested).

    python benchmarks/bench_generate.py                        # 4 prompts per language, 64 new tokens
    python benchmarks/bench_generate.py --per-language 2 --max-new-tokens 32 --configs bfloat16:32

Timings on a shared CPU are noisy: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import torch

from babeltune.data import read_records
from babeltune.evaluate import get_identifier, identify, language_verdict
from babeltune.generate import DecodingSettings, LocalBackend
from babeltune.generate.decoding import generate_token_ids
from babeltune.generate.fasthead import Bf16GreedyHead


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pick_prompts(per_language: int) -> list[Any]:
    counts: dict[str, int] = {}
    picked = []
    for rec in read_records("bundled:eval"):
        counts[rec.lang] = counts.get(rec.lang, 0) + 1
        if counts[rec.lang] <= per_language:
            picked.append(rec)
    return picked


def new_tokens(row: list[int], stop: set[int]) -> list[int]:
    for k, token in enumerate(row):
        if token in stop:
            return row[: k + 1]
    return row


def hf_generate(backend: LocalBackend, prompts: list[list[int]], batch: int, settings: DecodingSettings,
                stop: list[int]) -> tuple[list[list[int]], float]:
    """Plain transformers generate, prompts in the given order, left padded."""
    pad = backend.tokenizer.pad_token_id or 0
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for s in range(0, len(prompts), batch):
        chunk = prompts[s:s + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.inference_mode():
            out = backend.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                         do_sample=False, repetition_penalty=settings.repetition_penalty,
                                         eos_token_id=stop, pad_token_id=pad)
        outputs.extend(new_tokens(row, set(stop)) for row in out[:, width:].tolist())
    return outputs, time.perf_counter() - start


def ours(backend: LocalBackend, prompts: list[list[int]], batch: int, settings: DecodingSettings,
         stop: list[int], head: Any = None) -> tuple[list[list[int]], float]:
    result: dict[int, list[int]] = {}
    start = time.perf_counter()
    for g in generate_token_ids(backend.model, prompts, settings, stop_ids=stop,
                                pad_id=backend.tokenizer.pad_token_id or 0, batch_size=batch, head=head):
        result[g.index] = g.token_ids
    return [result[i] for i in range(len(prompts))], time.perf_counter() - start


def langid_throughput() -> dict[str, float]:
    responses = [(r.response or "", r.lang) for split in ("train", "eval") for r in read_records(f"bundled:{split}")]
    ident = get_identifier()
    identify(responses[0][0], ident)  # load the model before timing
    start = time.perf_counter()
    for text, _ in responses:
        identify(text, ident)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    correct = sum(language_verdict(text, lang, ident).status == "correct" for text, lang in responses)
    full = time.perf_counter() - start
    return {"responses": len(responses), "identify_per_s": len(responses) / whole,
            "verdict_with_code_switching_per_s": len(responses) / full, "correct_share": correct / len(responses)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-language", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--configs", default="float32:16,float32:16:bf16head,float32:48:bf16head,bfloat16:16,"
                        "bfloat16:48", help="comma-separated dtype:batch_size[:bf16head]")
    parser.add_argument("--baseline-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--skip-reference", action="store_true", help="skip float32 batch 1 (the agreement column)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}; load average {load_average()}")
    settings = DecodingSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=1.2)
    records = pick_prompts(args.per_language)
    backends = {"float32": LocalBackend.from_pretrained("gemma-3-270m", dtype="float32")}
    prompts = [backends["float32"].render(r.prompt_messages) for r in records]
    stop = backends["float32"].stop_ids(settings)
    print(f"{len(prompts)} prompts ({args.per_language} per language), prompt lengths {min(map(len, prompts))}-"
          f"{max(map(len, prompts))}, max_new_tokens {args.max_new_tokens}, greedy, repetition penalty 1.2")
    ours(backends["float32"], prompts[:2], 2, DecodingSettings(max_new_tokens=2), stop)  # warm-up

    rows: list[dict[str, Any]] = []
    base_out, base_s = hf_generate(backends["float32"], prompts, args.baseline_batch, settings, stop)
    base_tokens = sum(map(len, base_out))
    reference = None
    if not args.skip_reference:
        reference, ref_s = ours(backends["float32"], prompts, 1, settings, stop)
        rows.append({"config": "babeltune float32 batch 1 (reference)", "tokens": sum(map(len, reference)),
                     "seconds": ref_s})
    rows.insert(0, {"config": f"transformers generate float32 batch {args.baseline_batch}", "tokens": base_tokens,
                    "seconds": base_s, "outputs": base_out})
    for spec in args.configs.split(","):
        dtype, batch, *extra = spec.split(":")
        if dtype not in backends:
            backends[dtype] = LocalBackend.from_pretrained("gemma-3-270m", dtype=dtype)
            ours(backends[dtype], prompts[:2], 2, DecodingSettings(max_new_tokens=2), stop)  # warm-up
        head = None
        if "bf16head" in extra:
            head = Bf16GreedyHead(backends[dtype].model)
            ours(backends[dtype], prompts[:2], 2, DecodingSettings(max_new_tokens=2), stop, head)  # warm-up
        out, seconds = ours(backends[dtype], prompts, int(batch), settings, stop, head)
        name = f"babeltune {dtype} batch {batch}" + (" + bf16 head" if head is not None else "")
        rows.append({"config": name, "tokens": sum(map(len, out)), "seconds": seconds, "outputs": out})
        if head is not None:
            rows[-1]["head_fallback_share"] = head.fallbacks / max(1, head.decided)
    base_rate = base_tokens / base_s
    print(f"\n{'configuration':44} {'new tokens':>10} {'seconds':>8} {'tokens/s':>9} {'vs generate':>11} "
          f"{'same as fp32 b1':>15}")
    for row in rows:
        rate = row["tokens"] / row["seconds"]
        row["tokens_per_s"], row["speedup"] = rate, rate / base_rate
        same = "-"
        if reference is not None and "outputs" in row:
            same_rows = sum(a == b for a, b in zip(row["outputs"], reference, strict=True))
            row["same_as_reference"] = same_rows / len(prompts)
            same = f"{100 * row['same_as_reference']:.0f}%"
        fallback = f"  (bf16 head: {100 * row['head_fallback_share']:.1f}% of decisions by the full float32 head)" \
            if "head_fallback_share" in row else ""
        print(f"{row['config']:44} {row['tokens']:>10} {row['seconds']:>8.1f} {rate:>9.1f} {row['speedup']:>10.2f}x "
              f"{same:>15}{fallback}")
        row.pop("outputs", None)
    lid = langid_throughput()
    print(f"\nlanguage ID on {lid['responses']} bundled reference responses: {lid['identify_per_s']:.0f} responses/s "
          f"(whole response), {lid['verdict_with_code_switching_per_s']:.0f} responses/s (with per-sentence "
          f"code-switching); {100 * lid['correct_share']:.1f}% identified as their language")
    print(f"load average after: {load_average()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "langid": lid, "load_average": load_average()}, fh, indent=2)


if __name__ == "__main__":
    main()

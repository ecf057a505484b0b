"""Generation throughput of the default model on the bundled evaluation prompts, and language-ID speed.

Side by side, in one run, on the same prompts and decoding settings (greedy, repetition penalty 1.2,
study B's): plain transformers `model.generate` at batch 16 in float32 (prompts in file order, left
padded: what a user would write), then babeltune's engine at the configurations given. New tokens are
counted up to and including each sequence's stop token (padding after a finished sequence is not a
token). For every configuration it reports the share of prompts whose greedy output is token-for-token
the output of float32 at batch 1 (the engine at batch 1 equals `generate` at batch 1: tested).

With `--vllm`, the same run adds vLLM (float32, greedy), run as a subprocess in the vLLM environment
(`.venv-vllm`, `scripts/vllm_cpu_env.sh`; `--vllm-python` for another) by `bench_vllm_worker.py`:
- the same prompts through babeltune's vLLM backend: tokens/s against `generate`, outputs equal to
  `generate` and to babeltune's float32 engine;
- babeltune's vLLM path against `LLM.generate` called directly on the same token ids (target: within 5%);
- grid-shaped work: 3 LoRA adapters x the bundled evaluation prompts (`--grid-per-language`, default
  all 40 per language) through ONE vLLM engine, against three separate local engines (each loads its
  adapter), wall time with start-up and loading included, tokens/s, outputs equal. `--grid-adapters`
  names three adapter folders; by default three random LoRA adapters of the default model are made.

    python benchmarks/bench_generate.py                        # 4 prompts per language, 64 new tokens
    python benchmarks/bench_generate.py --per-language 2 --max-new-tokens 32 --configs bfloat16:32
    python benchmarks/bench_generate.py --vllm --configs float32:48:bf16head --skip-reference

Timings on a shared CPU are noisy: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from babeltune.data import read_records
from babeltune.evaluate import get_identifier, identify, language_verdict
from babeltune.generate import DecodingSettings, GenerationRequest, LocalBackend
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


REPO = Path(__file__).resolve().parents[1]


def as_text(backend: LocalBackend, ids: list[int], stop: list[int]) -> tuple[str, int]:
    """A response as the backends report it: text without the stop token, and the tokens counted."""
    text_ids = ids[:-1] if ids and ids[-1] in stop else ids
    return backend.tokenizer.decode(text_ids, skip_special_tokens=True), len(ids)


def random_adapters(folder: Path, n: int = 3) -> list[str]:
    """n LoRA adapters of the default model with random non-zero weights (distinct outputs, no training)."""
    from peft import LoraConfig, get_peft_model

    from babeltune.models.loading import load_model

    paths = []
    for seed in range(1, n + 1):
        torch.manual_seed(seed)
        lora = get_peft_model(load_model("gemma-3-270m").model, LoraConfig(
            r=8, lora_alpha=8, init_lora_weights=False, target_modules=["q_proj", "v_proj", "down_proj"]))
        lora.save_pretrained(folder / f"adapter{seed}")
        paths.append(str(folder / f"adapter{seed}"))
    return paths


def write_records(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def run_vllm_worker(python: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    (folder / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([python, str(REPO / "benchmarks" / "bench_vllm_worker.py"), str(folder / "spec.json"),
                           str(folder / "vllm.json")], env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise SystemExit(f"the vLLM worker failed (exit {proc.returncode}); its output is above")
    return json.loads((folder / "vllm.json").read_text())


def same_share(a: dict[str, Any], b: dict[str, Any]) -> str:
    """How many prompts got the same (text, tokens) in two runs, as 'k/n'."""
    same = sum(tuple(a[k][:2]) == tuple(b[k][:2]) for k in b)
    return f"{same}/{len(b)}"


def local_grid(grid: list[dict[str, Any]], records: list[Any], settings: DecodingSettings,
               batch: int) -> dict[str, Any]:
    """The grid's adapters one after the other on babeltune's local engine, each loaded afresh (timed)."""
    requests = [GenerationRequest(r.id, r.prompt_messages) for r in records]
    start, outputs = time.perf_counter(), []
    for g in grid:
        backend = LocalBackend.from_pretrained(g["adapter"], dtype="float32", batch_size=batch)
        outputs.append({r.id: (r.text, r.completion_tokens, r.finish_reason)
                        for r in backend.generate(requests, settings)})
        del backend
    tokens = sum(v[1] or 0 for out in outputs for v in out.values())
    return {"wall_s": time.perf_counter() - start, "tokens": tokens, "outputs": outputs}


def vllm_section(args: argparse.Namespace, records: list[Any], local: LocalBackend, settings: DecodingSettings,
                 texts: dict[str, dict[str, Any]], base_rate: float) -> dict[str, Any]:
    """The vLLM comparisons (see the module docstring); prints them and returns the figures."""
    python = args.vllm_python or os.environ.get("BABELTUNE_VLLM_PYTHON") or str(REPO / ".venv-vllm/bin/python")
    if not Path(python).exists():
        raise SystemExit(f"--vllm: no vLLM environment at {python}: build it with scripts/vllm_cpu_env.sh")
    grid_records = pick_prompts(args.grid_per_language or 10**9)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        adapters = args.grid_adapters.split(",") if args.grid_adapters else random_adapters(folder)
        spec = {"model": "gemma-3-270m", "adapters": adapters, "decoding": settings.to_dict(),
                "records": str(write_records(folder / "prompts.jsonl", records)),
                "grid_records": str(write_records(folder / "grid.jsonl", grid_records)),
                "vllm": {"dtype": "float32", "gpu_memory_utilization": args.vllm_memory, "max_model_len": 2048,
                         "max_lora_rank": args.vllm_max_lora_rank, "max_loras": len(adapters)}, "repeats": 2}
        print(f"\nvLLM worker ({python}) ...", flush=True)
        report = run_vllm_worker(python, spec, folder)
        local = local_grid(report["grid"], grid_records, settings, args.grid_batch)
    ours, direct = report["base"]["outputs"], report["base"]["direct_outputs"]
    ours_s, direct_s = min(report["base"]["seconds"]["babeltune"]), min(report["base"]["seconds"]["direct"])
    tokens = sum(v[1] for v in ours.values())
    print(f"\nvLLM {report['vllm']} float32 greedy, same {len(records)} prompts (engine start "
          f"{report['engine_start_s']:.1f} s, not in the figures; best of {len(report['base']['seconds']['direct'])}):")
    print(f"  babeltune's vLLM backend: {tokens} new tokens in {ours_s:.1f} s, {tokens / ours_s:.1f} tokens/s, "
          f"{tokens / ours_s / base_rate:.2f}x generate")
    print(f"  vLLM LLM.generate directly: {sum(v[1] for v in direct.values())} new tokens in {direct_s:.1f} s; "
          f"babeltune's path takes {ours_s / direct_s:.3f}x its time (target <= 1.05x)")
    for name, other in texts.items():
        print(f"  outputs equal to {name}: {same_share(other, ours)}")
    print(f"  babeltune's path equal to direct vLLM: {same_share(direct, ours)}")

    grid_tokens_vllm = sum(v[1] for g in report["grid"] for v in g["outputs"].values())
    vllm_wall = report["engine_start_s"] + sum(g["attach_s"] + g["seconds"] for g in report["grid"])
    print(f"\ngrid: {len(report['grid'])} adapters x {len(grid_records)} prompts, {settings.max_new_tokens} new tokens")
    print(f"  one vLLM engine: start {report['engine_start_s']:.1f} s + per adapter (attach + generate) "
          + ", ".join(f"{g['attach_s']:.1f}+{g['seconds']:.1f} s" for g in report["grid"])
          + f" = {vllm_wall:.1f} s; {grid_tokens_vllm} tokens, {grid_tokens_vllm / vllm_wall:.1f} tokens/s (wall)")
    local_wall, local_tokens = local["wall_s"], local["tokens"]
    equal = [same_share(out, g["outputs"]) for out, g in zip(local["outputs"], report["grid"], strict=True)]
    print(f"  three local engines (load + generate, batch {args.grid_batch}): {local_wall:.1f} s; {local_tokens} "
          f"tokens, {local_tokens / local_wall:.1f} tokens/s; vLLM / local wall {vllm_wall / local_wall:.2f}x")
    print(f"  outputs equal (vLLM vs local), per adapter: {', '.join(equal)}")
    return {"vllm": report["vllm"], "engine_start_s": report["engine_start_s"], "babeltune_path_s": ours_s,
            "direct_s": direct_s, "path_over_direct": ours_s / direct_s, "tokens": tokens,
            "grid": {"vllm_wall_s": vllm_wall, "vllm_tokens": grid_tokens_vllm, "local_wall_s": local_wall,
                     "local_tokens": local_tokens, "equal": equal}}


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
    parser.add_argument("--vllm", action="store_true", help="add vLLM (needs the vLLM environment; see docstring)")
    parser.add_argument("--vllm-python", help="interpreter of the vLLM environment (default .venv-vllm/bin/python)")
    parser.add_argument("--vllm-memory", type=float, default=0.15, help="vLLM gpu_memory_utilization (CPU: RAM share)")
    parser.add_argument("--vllm-max-lora-rank", type=int, default=16, help="largest adapter rank (--grid-adapters)")
    parser.add_argument("--grid-per-language", type=int, default=0, help="grid prompts per language (0 = all 40)")
    parser.add_argument("--grid-adapters", help="three adapter folders, comma-separated (default: random LoRAs)")
    parser.add_argument("--grid-batch", type=int, default=32, help="the local engines' batch size in the grid")
    parser.add_argument("--skip-langid", action="store_true", help="skip the language-ID throughput")
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
    if args.vllm:
        fp32 = backends["float32"]
        texts = {"transformers generate": dict(zip((r.id for r in records), (as_text(fp32, o, stop) for o in base_out),
                                                   strict=True))}
        for row in rows:
            if "outputs" in row and row["config"].startswith("babeltune float32"):
                texts[row["config"]] = dict(zip((r.id for r in records), (as_text(fp32, o, stop)
                                                                         for o in row["outputs"]), strict=True))
        vllm_figures = vllm_section(args, records, fp32, settings, texts, base_rate)
    for row in rows:
        row.pop("outputs", None)
    lid = {} if args.skip_langid else langid_throughput()
    if lid:
        print(f"\nlanguage ID on {lid['responses']} bundled reference responses: {lid['identify_per_s']:.0f} "
              f"responses/s (whole response), {lid['verdict_with_code_switching_per_s']:.0f} responses/s (with "
              f"per-sentence code-switching); {100 * lid['correct_share']:.1f}% identified as their language")
    print(f"load average after: {load_average()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "langid": lid, "load_average": load_average(),
                       "vllm": vllm_figures if args.vllm else None}, fh, indent=2)


if __name__ == "__main__":
    main()

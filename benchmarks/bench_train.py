"""Training throughput: babeltune vs TRL's SFTTrainer on the same job (issue 4's benchmark).

The job: the default model (gemma-3-270m), a uniform 12-language mixture drawn from bundled:train
(fallback: FLORES-200 dev sentences as prompt / continuation pairs), rendered once by babeltune's
chat template, truncated at --max-length, batch --batch examples, loss on assistant tokens only,
AdamW (0.9, 0.95), weight decay 0.1, LoRA r16 / alpha 32 on all linear layers, or full fine-tuning.

Systems (each runs in its own process, so its peak memory is its own):

- babeltune-{lora,full}: `babeltune.train.train` with precision=bf16 (packing, supervised-only logits);
- babeltune-compile-{lora,full}: the same with compile=true (torch.compile of each decoder layer; the
  compilation falls in the untimed warm-up step, whose time is printed as "first step");
- trl-default-{lora,full}: SFTTrainer with TRL 1.16's defaults (bf16 autocast and gradient
  checkpointing are on by default, padded batches, full logits);
- trl-fast-{lora,full}: SFTTrainer with its speed options: packing (best-fit decreasing, which
  implies padding-free), bf16, gradient checkpointing off.

TRL is given the same tokenized examples (input_ids + labels), so both optimise the same loss on the
same tokens. Printed per system: non-padding tokens/s, seconds per step, peak memory (the process's
peak RSS on CPU, peak allocated on CUDA), MFU against the bf16 matrix-product peak measured here
(FLOPs counted by babeltune.train.FlopsModel for every system alike: the products the objective
needs), the mean loss of the timed steps; then the ratios babeltune / TRL.

    python benchmarks/bench_train.py                 # a few minutes: 1 warm-up + 3 timed steps each
    python benchmarks/bench_train.py --steps 10 --warmup 2 --systems babeltune-lora,trl-fast-lora
Needs `pip install 'babeltune[bench]'` (trl) for the TRL systems.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SYSTEMS = ("babeltune-lora", "babeltune-compile-lora", "trl-default-lora", "trl-fast-lora",
           "babeltune-full", "babeltune-compile-full", "trl-default-full", "trl-fast-full")
FLORES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flores200_dev"
FLORES_CODES = {"eng_Latn": "en", "spa_Latn": "es", "ita_Latn": "it", "ces_Latn": "cs", "est_Latn": "et",
                "fin_Latn": "fi", "rus_Cyrl": "ru", "swh_Latn": "sw", "arb_Arab": "ar", "heb_Hebr": "he",
                "hin_Deva": "hi", "zho_Hans": "zh"}
RESULT_TAG = "BENCH_RESULT "


# The job -------------------------------------------------------------------------------------------

def write_mixture(out: Path, budget: int, seed: int) -> tuple[Path, str]:
    """A uniform mixture over the 12 study-A languages; returns (file, description of its source)."""
    from babeltune.data import MixtureSpec, build_mixture, bundled_path, read_records, record_from_dict, write_jsonl

    if bundled_path("train").exists():
        records, source = read_records("bundled:train"), "bundled:train"
    elif FLORES.exists():
        records, source = [], f"FLORES-200 dev ({FLORES})"
        for code, lang in FLORES_CODES.items():
            lines = (FLORES / f"{code}.dev").read_text(encoding="utf-8").splitlines()
            for i in range(0, len(lines) - 4, 4):
                records.append(record_from_dict({
                    "id": f"f{i}-{lang}", "pid": f"f{i}", "lang": lang,
                    "messages": [{"role": "user", "content": lines[i]},
                                 {"role": "assistant", "content": " ".join(lines[i + 1:i + 4])}]}))
    else:
        raise SystemExit("no bundled:train and no FLORES-200 folder: nothing realistic to benchmark on")
    mixture = build_mixture(records, MixtureSpec(recipe="uniform", budget=budget, seed=seed), source_name=source)
    path = out / "mixture.jsonl"
    write_jsonl(mixture.records, path)
    return path, source


def job_examples(job: dict[str, Any]) -> tuple[Any, list[Any]]:
    """Tokenizer and the rendered, truncated examples of the job (what every system trains on)."""
    from babeltune.data import read_records
    from babeltune.models import get_template, load_tokenizer
    from babeltune.train import prepare_examples

    tokenizer = load_tokenizer(job["model"])
    examples, _ = prepare_examples(read_records(job["data"]), tokenizer, get_template(tokenizer),
                                   max_length=job["max_length"], overflow="truncate")
    return tokenizer, examples


def peak_memory_gb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


# Workers -------------------------------------------------------------------------------------------

def run_babeltune(job: dict[str, Any], method: str, compiled: bool) -> dict[str, Any]:
    from babeltune.train import LoraSettings, TrainConfig, read_log, train

    steps = job["warmup"] + job["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(
            data=job["data"], model=job["model"], out=Path(tmp) / "run", method=method,  # type: ignore[arg-type]
            lora=LoraSettings(r=16, alpha=32, target_modules=["all-linear"]), lr=job["lr"][method],
            max_steps=steps, batch_size=job["batch"], max_length=job["max_length"], overflow="truncate",
            precision="bf16", peak_tflops=job["peak_flops"] / 1e12, progress=False, tensorboard=False, seed=0,
            schedule="cosine", weight_decay=0.1, adam_betas=(0.9, 0.95), compile=compiled,
        )
        train(config)
        records = read_log(config.out / "log.jsonl")
    return summarise(job, [{"seconds": r["step_s"], "tokens": r["tokens"], "flops": r["flops"], "loss": r["loss"]}
                           for r in records])


def run_trl(job: dict[str, Any], method: str, fast: bool) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from babeltune.models import IGNORE_INDEX, load_model
    from babeltune.train import FlopsModel

    tokenizer, examples = job_examples(job)
    rows = {"input_ids": [list(ex.input_ids) for ex in examples],
            "labels": [[IGNORE_INDEX, *ex.targets[:-1]] for ex in examples]}  # unshift: HF shifts them again
    model = load_model(job["model"]).model
    steps = job["warmup"] + job["steps"]
    options: dict[str, Any] = dict(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=job["batch"],
        max_length=job["max_length"], learning_rate=job["lr"][method], lr_scheduler_type="cosine",
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), seed=0, disable_tqdm=True,
    )
    if fast:
        options.update(packing=True, packing_strategy="bfd", padding_free=True, bf16=True,
                       gradient_checkpointing=False)
    peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0,
                             task_type="CAUSAL_LM") if method == "lora" else None
    trainer = SFTTrainer(model=model, args=SFTConfig(**options), train_dataset=Dataset.from_dict(rows),
                         processing_class=tokenizer, peft_config=peft_config)
    flops_model = FlopsModel.from_model(trainer.model)
    seen: list[dict[str, Any]] = []
    inner = trainer.data_collator

    def counting_collator(features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = inner(features)
        seen.append(batch_stats(batch))
        return batch

    trainer.data_collator = counting_collator
    steps_log: list[dict[str, Any]] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            batches = list(seen)
            seen.clear()
            lengths = [n for b in batches for n in b["lengths"]]
            supervised = sum(b["supervised"] for b in batches)
            steps_log.append({"seconds": time.perf_counter() - self.start, "tokens": sum(lengths),
                              "flops": flops_model.step_flops(lengths, supervised)})

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs and steps_log:
                steps_log[-1]["loss"] = float(logs["loss"])

    trainer.add_callback(Timer())
    trainer.train()
    return summarise(job, steps_log)


def batch_stats(batch: dict[str, Any]) -> dict[str, Any]:
    """Real example lengths and trained tokens of a collated TRL batch (padded or padding-free)."""
    labels = batch["labels"]
    if "position_ids" in batch and "attention_mask" not in batch:  # padding-free: one row, restarts at 0
        positions = batch["position_ids"].flatten().tolist()
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        lengths = [b - a for a, b in itertools.pairwise(starts)]
    else:
        lengths = batch["attention_mask"].sum(dim=1).tolist()
    return {"lengths": lengths, "supervised": int((labels[..., 1:] != -100).sum())}


def summarise(job: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over the timed steps (the warm-up steps are only reported as the first step's time)."""
    timed = steps[job["warmup"]:]
    seconds = sum(s["seconds"] for s in timed)
    tokens = sum(s["tokens"] for s in timed)
    losses = [s["loss"] for s in timed if "loss" in s]
    return {
        "tokens_per_s": tokens / seconds, "s_per_step": seconds / len(timed), "tokens_per_step": tokens / len(timed),
        "flops_per_s": sum(s["flops"] for s in timed) / seconds, "peak_mem_gb": peak_memory_gb(),
        "mean_loss": sum(losses) / len(losses) if losses else None, "steps": len(timed),
        "first_step_s": steps[0]["seconds"],
    }


def worker(system: str, job: dict[str, Any]) -> None:
    import torch

    from babeltune.train import measure_matmul_peak

    # The peak is measured again beside every system (on a shared CPU it moves with the load); the
    # table uses the best value observed in the whole run, for every system alike.
    peak = measure_matmul_peak("cuda" if torch.cuda.is_available() else "cpu", torch.bfloat16, seconds=2.0)
    tool, *rest = system.split("-")
    method = rest[-1]
    if tool == "babeltune":
        result = run_babeltune(job, method, compiled=rest[0] == "compile")
    else:
        result = run_trl(job, method, fast=rest[0] == "fast")
    print(RESULT_TAG + json.dumps({**result, "peak_flops": peak}), flush=True)


# The parent: job, systems, table -----------------------------------------------------------------

def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": os.getloadavg()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        from importlib.metadata import version

        info["trl"] = version("trl")
    except Exception:
        info["trl"] = None
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {SYSTEMS}")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per system")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps per system")
    parser.add_argument("--long", action="store_true", help="longer, steadier run: --steps 10 --warmup 2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--budget", type=int, default=160, help="mixture size (bundled:train: 160 prompts)")
    parser.add_argument("--out", default=None, help="keep the job and results in this folder")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY for every system's process (PASSIVE: idle OpenMP threads sleep instead "
                             "of spinning, which matters on a shared CPU; '' leaves the environment alone)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(Path(args.job).read_text()))
        return 0
    if args.long:
        args.steps, args.warmup = max(args.steps, 10), max(args.warmup, 2)
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before torch loads OpenMP: the peak measurement too

    import torch

    from babeltune.train import measure_matmul_peak

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_train_"))
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    peak = measure_matmul_peak(device, torch.bfloat16, seconds=3.0)
    peak32 = measure_matmul_peak(device, torch.float32, seconds=2.0)
    data, source = write_mixture(out, args.budget, seed=0)
    job = {"data": str(data), "model": args.model, "batch": args.batch, "max_length": args.max_length,
           "steps": args.steps, "warmup": args.warmup, "peak_flops": peak, "lr": {"lora": 1e-4, "full": 1e-5}}
    (out / "job.json").write_text(json.dumps(job, indent=2))
    info = machine()
    print(f"machine: {info}")
    print(f"matmul peak ({device}): bf16 {peak / 1e9:.0f} GFLOP/s, fp32 {peak32 / 1e9:.0f} GFLOP/s")
    print(f"OMP_WAIT_POLICY={args.omp_wait_policy or os.environ.get('OMP_WAIT_POLICY', '(unset)')} for every system")
    print(f"job: {source}, uniform mixture of {args.budget}, batch {args.batch} x max {args.max_length} tokens, "
          f"{args.warmup} warm-up + {args.steps} timed steps\n")

    results: dict[str, dict[str, Any]] = {}
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        if system not in SYSTEMS:
            raise SystemExit(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")
        started = time.time()
        env = {**os.environ, "OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else None
        proc = subprocess.run([sys.executable, __file__, "--worker", system, "--job", str(out / "job.json")],
                              capture_output=True, text=True, check=False, env=env)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
        if proc.returncode != 0 or not lines:
            print(f"{system}: FAILED (exit {proc.returncode})\n{proc.stderr[-3000:]}")
            continue
        results[system] = json.loads(lines[-1][len(RESULT_TAG):])
        print(f"{system}: done in {time.time() - started:.0f} s (load average {os.getloadavg()[0]:.2f})", flush=True)

    peak = max([peak, *(r["peak_flops"] for r in results.values())])
    for r in results.values():
        r["mfu"] = r["flops_per_s"] / peak
    measured = ", ".join(f"{r['peak_flops'] / 1e9:.0f}" for r in results.values())
    print(f"\nbf16 matmul peak used for MFU: {peak / 1e9:.0f} GFLOP/s (best of the parent's and every worker's "
          f"measurement: {measured})")
    print(f"\n{'system':24} {'tok/s':>8} {'s/step':>8} {'tok/step':>9} {'peak GiB':>9} {'MFU':>7} {'loss':>8} "
          f"{'first step s':>13}")
    for system, r in results.items():
        loss = f"{r['mean_loss']:.4f}" if r["mean_loss"] is not None else "n/a"
        print(f"{system:24} {r['tokens_per_s']:8.1f} {r['s_per_step']:8.2f} {r['tokens_per_step']:9.0f} "
              f"{r['peak_mem_gb']:9.2f} {r['mfu']:7.1%} {loss:>8} {r['first_step_s']:13.1f}")
    print()
    for method in ("lora", "full"):
        for mine in ("babeltune", "babeltune-compile"):
            ours = results.get(f"{mine}-{method}")
            for variant in ("default", "fast"):
                theirs = results.get(f"trl-{variant}-{method}")
                if ours and theirs:
                    speed = ours["tokens_per_s"] / theirs["tokens_per_s"]
                    memory = ours["peak_mem_gb"] / theirs["peak_mem_gb"]
                    print(f"{method}: {mine} / trl-{variant}: tokens/s x{speed:.2f}, peak memory x{memory:.2f}")
    (out / "results.json").write_text(json.dumps({"machine": info, "peak_bf16_used": peak, "peak_fp32": peak32,
                                                  "omp_wait_policy": args.omp_wait_policy,
                                                  "job": job, "results": results}, indent=2))
    print(f"\nresults -> {out / 'results.json'}; load average now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

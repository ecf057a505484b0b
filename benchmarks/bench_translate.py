"""Translation throughput through `babeltune serve`, and the share of items each gate rejects.

Starts `babeltune serve` on a model (the default model unless --model says otherwise; --tiny serves a
randomly initialised tiny model, a smoke test of the script), takes the first --records English records
of the bundled training set, and runs `babeltune data translate`'s code (`translate_records`) into
--languages through the endpoint. Prints the records written per second (translated records of
prompts complete in every language, over the translation's wall time; the server's start is not
counted), the items (turns x languages) sent per second, and the share of items each gate rejected at
the first attempt and for good.

    python benchmarks/bench_translate.py                                  # default model, 12 records, 11 languages
    python benchmarks/bench_translate.py --records 4 --languages es,ru --max-new-tokens 64
    python benchmarks/bench_translate.py --tiny --records 2 --languages es --max-new-tokens 8   # smoke test

The default model is a small *base* model: expect most items rejected (it is not a translator); the
point is the pipeline's throughput and what the gates catch. Timings on a shared CPU are noisy: the load
average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from babeltune.data import read_records, write_jsonl
from babeltune.data.translate import TranslateConfig, translate_records
from babeltune.generate import DecodingSettings, EndpointBackend, EndpointConfig
from babeltune.languages import STUDY_A_LANGUAGES


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def save_tiny(folder: Path) -> str:
    from babeltune.testing import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def start_serve(model: str, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    """`babeltune serve` on a free loopback port; returns the process and its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "babeltune.cli", "serve", "--model", model, "--port", "0", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving "):
            url = line.split(" at ", 1)[1].split(" ", 1)[0]
            return proc, url
    proc.wait()
    raise RuntimeError(f"babeltune serve --model {model} exited ({proc.returncode}) before serving")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--tiny", action="store_true", help="serve a tiny random model (smoke test)")
    parser.add_argument("--records", type=int, default=12, help="English source records (bundled:train)")
    parser.add_argument("--languages", default=",".join(c for c in STUDY_A_LANGUAGES if c != "en"))
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16, help="the server's batch size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = save_tiny(Path(tmp) / "tiny") if args.tiny else args.model
        source = [r for r in read_records("bundled:train") if r.lang == "en"][: args.records]
        write_jsonl(source, Path(tmp) / "en.jsonl")
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load {load_average()}")
        server, url = start_serve(model, ["--batch-size", str(args.batch_size)])
        try:
            cfg = TranslateConfig(
                source=str(Path(tmp) / "en.jsonl"), out=str(Path(tmp) / "out" / "set.jsonl"),
                languages=args.languages.split(","),
                endpoint=EndpointConfig(url=url, concurrency=args.concurrency, timeout=600, max_retries=1),
                decoding=DecodingSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=1.0))
            start = time.perf_counter()
            summary = translate_records(source, EndpointBackend(cfg.endpoint), cfg)
            seconds = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait()
    sent = summary.items - summary.copied
    requests = sum(g["generated"] + g["failed"] - g["same_prompt"] for g in summary.generation)
    tokens = sum(g["new_tokens"] for g in summary.generation)
    print(f"model {model if not args.tiny else 'tiny (random)'}: {len(source)} records x {len(cfg.languages)} "
          f"languages, max {args.max_new_tokens} new tokens, server batch {args.batch_size}, "
          f"concurrency {args.concurrency}")
    print(f"{seconds:.1f} s: {summary.records_written - summary.complete_prompts} translated records written "
          f"({summary.records_per_second:.3f} records/s), {requests} requests ({requests / seconds:.2f}/s, "
          f"{tokens / seconds:.1f} new tokens/s); {sent} items sent, {summary.copied} copied")
    print("first attempt rejected (share of items sent): " + (", ".join(
        f"{r} {s:.1%}" for r, s in sorted(summary.gate_shares().items())) or "none"))
    final: dict[str, int] = {}
    for reasons in summary.rejected.values():
        for reason, n in reasons.items():
            final[reason] = final.get(reason, 0) + n
    print("left out after the retry (share of items sent): " + (", ".join(
        f"{r} {n / sent:.1%}" for r, n in sorted(final.items())) or "none"))
    print(f"prompts complete in every language: {summary.complete_prompts} of {len(source)}; load {load_average()}")
    print(json.dumps({"seconds": round(seconds, 2), "records_per_second": round(summary.records_per_second, 4),
                      "requests_per_second": round(requests / seconds, 3), "first_attempt_rejected_share":
                      summary.to_dict()["first_attempt_rejected_share"], "final_rejected": final}))


if __name__ == "__main__":
    main()

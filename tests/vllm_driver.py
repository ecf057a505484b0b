"""Run in the vLLM environment by tests/test_vllm.py: several models (a base and PEFT adapters of it)
through `VLLMBackend` in ONE process, so they share one engine; one generation file per model.

    python tests/vllm_driver.py SPEC.json

SPEC: {"models": {NAME: MODEL}, "data": PROMPTS.jsonl, "out_dir": DIR, "decoding": {...}, "vllm": {...}}.
Writes DIR/NAME.jsonl (the runner's rows) and DIR/driver.json (engine starts, identities, and a batch
holding a prompt longer than max_model_len, which spec["vllm"] must set).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(spec_path: str) -> None:
    from babeltune.config import from_dict
    from babeltune.data.readers import load_records
    from babeltune.data.records import Message
    from babeltune.generate import DecodingSettings, GenerationRequest, run_generation
    from babeltune.generate.config import VLLMConfig
    from babeltune.generate.vllm import VLLMBackend, engine_starts, release_engines

    spec = json.loads(Path(spec_path).read_text())
    out_dir = Path(spec["out_dir"])
    records = load_records(spec["data"]).records
    settings = from_dict(DecodingSettings, spec["decoding"])
    config = from_dict(VLLMConfig, spec["vllm"])
    report: dict[str, object] = {"identities": {}}
    for name, model in spec["models"].items():
        backend = VLLMBackend.from_pretrained(model, config)
        summary = run_generation(records, backend, settings, out_dir / f"{name}.jsonl")
        report["identities"][name] = backend.identity()  # type: ignore[index]
        print(summary.line(), flush=True)
    # A request the engine refuses (longer than max_model_len) fails alone; the rest of its batch is answered.
    too_long = GenerationRequest("too-long", (Message("user", "word " * (2 * config.max_model_len)),))
    results = backend.generate([too_long, GenerationRequest(records[0].id, records[0].prompt_messages)], settings)
    report["failure_check"] = [[r.id, r.finish_reason, r.error] for r in results]
    report["engine_starts"] = engine_starts()
    release_engines()
    (out_dir / "driver.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":  # the engine's workers start by spawn and re-import this file
    main(sys.argv[1])

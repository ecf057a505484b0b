"""The real stage implementations the experiment runner calls: babeltune's train, generate, evaluate
and judge stages, each through its public API.

The experiment's `train` mapping is an overlay of the training stage's own `TrainConfig` (the runner
sets model, data, output folder and seed) run in this process or through accelerate (`training.py`);
`generate` (`ExperimentGenerateConfig`) picks the backend: babeltune's local engine, an in-process
vLLM engine (one per base model, shared by the grid's adapters), or an OpenAI-compatible endpoint on
which each condition's adapter is loaded by name through the dynamic LoRA routes. Models are held
between a condition's generation splits and released before judging.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from babeltune.data import ChatRecord
from babeltune.experiments.config import Condition, ExperimentConfig, ExperimentGenerateConfig
from babeltune.experiments.results import ResultRow
from babeltune.judge import LLMPairwiseJudge, LLMRubricJudge, PairwiseJudge, ReferenceJudge, RubricJudge
from babeltune.lens.config import SteerConfig

log = logging.getLogger(__name__)


class RealPipeline:
    """Train / generate / evaluate / judge with babeltune's stages (see the module docstring)."""

    def __init__(self) -> None:
        self._backend: Any = None
        self._backend_model: str | None = None
        self._stack = contextlib.ExitStack()
        self._vllm_used = False
        self._judges: dict[str, PairwiseJudge] = {}

    # ---------------------------------------------------------------- train
    def train(self, config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> dict[str, Any]:
        from babeltune.experiments.training import run_training

        return run_training(config, condition, mixture, out_dir)

    def _note_vllm(self, generate: ExperimentGenerateConfig) -> None:
        self._vllm_used = self._vllm_used or generate.backend == "vllm"

    # ---------------------------------------------------------------- generate
    def _generation_backend(self, config: ExperimentConfig, model: str) -> Any:
        """The backend answering for `model` (a tuned model's folder), kept until another model is asked
        for or `release`: an endpoint's adapter stays loaded on the server meanwhile."""
        if self._backend_model != model:
            self._close_backend()
            self._note_vllm(config.generate)
            self._backend = self._stack.enter_context(open_backend(config.generate, model))
            self._backend_model = model
        return self._backend

    def generate(
        self, config: ExperimentConfig, model: str, records: Sequence[ChatRecord], out: Path,
        steer: SteerConfig | None = None,
    ) -> dict[str, Any]:
        from babeltune.generate import run_generation

        backend = self._generation_backend(config, model)
        with contextlib.ExitStack() as stack:
            if steer is not None:  # hooks on the held model for this call only (generation identity names them)
                from babeltune.lens.generation import steer_backend

                backend = steer_backend(stack, backend, steer, {r.id: r.lang for r in records})
            summary = run_generation(records, backend, config.generate.decoding, out, progress=True)
        print(f"      {summary.line()}", flush=True)
        return {"generated": summary.generated, "reused": summary.reused, "failed": summary.failed,
                "new_tokens": summary.new_tokens, "seconds": summary.seconds}

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, config: ExperimentConfig, condition: str, generations: dict[str, Path]) -> list[ResultRow]:
        from babeltune.experiments.evaluation import evaluation_rows

        return evaluation_rows(condition, generations, replace(config.evaluate, seed=config.seed))

    # ---------------------------------------------------------------- probe, lens
    def probe(self, config: ExperimentConfig, out: Path) -> dict[str, Any]:
        from babeltune.experiments.methods import probe_config
        from babeltune.lens.probing import run_probe

        self._close_backend()
        result = run_probe(probe_config(config), out)
        return {"languages": list(result.subspace.languages), "prompt_tokens": result.tokens,
                "seconds": result.seconds}

    def lens_train(self, config: ExperimentConfig, condition: Condition, subspace: Path, out: Path) -> dict[str, Any]:
        from babeltune.experiments.methods import run_lens_stage

        self._close_backend()
        return run_lens_stage(config, condition, subspace, out)

    # ---------------------------------------------------------------- bench
    def bench(self, config: ExperimentConfig, model: str, steer: SteerConfig | None, out_dir: Path) -> dict[str, Any]:
        from dataclasses import replace

        from babeltune.bench.harness import run_bench

        if config.bench is None:
            raise ValueError("the experiment has no bench section")
        self._close_backend()  # the generation model is not needed any more: free its memory first
        result = run_bench(replace(config.bench, model=model, steer=steer), out_dir, steer)
        return {"rows": len(result.rows), "lm_eval_version": result.identity.get("lm_eval_version")}

    # ---------------------------------------------------------------- judge
    def pairwise_judge(self, kind: str, config: ExperimentConfig) -> PairwiseJudge:
        if kind not in self._judges:
            self._judges[kind] = make_pairwise_judge(kind, config)
        return self._judges[kind]

    def rubric_judge(self, config: ExperimentConfig) -> RubricJudge:
        return LLMRubricJudge(llm_backend(config))

    def _close_backend(self) -> None:
        self._stack.close()
        self._backend = None
        self._backend_model = None
        gc.collect()

    def release(self) -> None:
        self._close_backend()
        if self._vllm_used:
            from babeltune.generate.vllm import release_engines

            release_engines()
            self._vllm_used = False


@contextlib.contextmanager
def open_backend(generate: ExperimentGenerateConfig, model: str) -> Iterator[Any]:
    """A generation backend for `model` (a base model or a tuned model's folder) on `generate.backend`:

    - local: babeltune's engine (`LocalBackend`) with `generate.local`;
    - vllm: `VLLMBackend.from_pretrained(model, generate.vllm)`; the vLLM module caches engines by base
      model, so a grid's adapters share one (released by `release_engines`, at `RealPipeline.release`);
    - endpoint: the adapter folder is loaded on the server through its dynamic LoRA routes for as long
      as the block runs (`adapter_endpoint`), and requested by the name it was loaded under.
    """
    if generate.backend == "local":
        from babeltune.generate import LocalBackend

        local = generate.local
        yield LocalBackend.from_pretrained(model, dtype=local.dtype, device=local.device, template=local.template,
                                           batch_size=local.batch_size, trust_remote_code=local.trust_remote_code,
                                           bf16_head=local.bf16_head)
    elif generate.backend == "vllm":
        from babeltune.generate.vllm import VLLMBackend

        yield VLLMBackend.from_pretrained(model, generate.vllm)
    else:
        from babeltune.generate.endpoint import EndpointBackend, adapter_endpoint

        if generate.endpoint is None:
            raise ValueError("generate.backend endpoint needs generate.endpoint.url")
        with adapter_endpoint(generate.endpoint, model) as endpoint:
            yield EndpointBackend(endpoint)


def make_pairwise_judge(kind: str, config: ExperimentConfig) -> PairwiseJudge:
    """The judge named `kind` ("reference" or "llm") with the experiment's judge settings."""
    settings = config.judge
    if kind == "reference":
        return ReferenceJudge(settings.offline)
    if kind == "llm":
        return LLMPairwiseJudge(llm_backend(config))
    raise ValueError(f"unknown judge kind {kind!r}; use reference or llm")


def llm_backend(config: ExperimentConfig) -> Any:
    """The LLM judge's chat backend on judge.llm's backend (local | vllm | endpoint)."""
    from babeltune.judge.backends import judge_chat_backend

    llm = config.judge.llm
    try:
        return judge_chat_backend(llm.backend, model=llm.local_model, endpoint=llm.endpoint, vllm=llm.vllm,
                                  max_new_tokens=llm.max_new_tokens)
    except ValueError as exc:
        raise ValueError(f"judge.llm: {exc}") from exc

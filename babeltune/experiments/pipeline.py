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

import gc
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from babeltune.data import ChatRecord
from babeltune.experiments.config import Condition, ExperimentConfig
from babeltune.experiments.results import ResultRow
from babeltune.judge import LLMPairwiseJudge, LLMRubricJudge, PairwiseJudge, ReferenceJudge, RubricJudge

log = logging.getLogger(__name__)


class RealPipeline:
    """Train / generate / evaluate / judge with babeltune's stages (see the module docstring)."""

    def __init__(self) -> None:
        self._backend: Any = None
        self._backend_model: str | None = None
        self._judges: dict[str, PairwiseJudge] = {}

    # ---------------------------------------------------------------- train
    def train(self, config: ExperimentConfig, condition: Condition, mixture: Path, out_dir: Path) -> dict[str, Any]:
        from babeltune.experiments.training import run_training

        return run_training(config, condition, mixture, out_dir)

    # ---------------------------------------------------------------- generate
    def _local_backend(self, config: ExperimentConfig, model: str) -> Any:
        from babeltune.generate import LocalBackend

        if self._backend_model != model:
            self.release()
            local = config.generate.local
            self._backend = LocalBackend.from_pretrained(model, dtype=local.dtype, device=local.device,
                                                         template=local.template, batch_size=local.batch_size,
                                                         trust_remote_code=local.trust_remote_code)
            self._backend_model = model
        return self._backend

    def generate(
        self, config: ExperimentConfig, model: str, records: Sequence[ChatRecord], out: Path,
    ) -> dict[str, Any]:
        from babeltune.generate import run_generation

        backend = self._local_backend(config, model)
        summary = run_generation(records, backend, config.generate.decoding, out, progress=True)
        print(f"      {summary.line()}", flush=True)
        return {"generated": summary.generated, "reused": summary.reused, "failed": summary.failed,
                "new_tokens": summary.new_tokens, "seconds": summary.seconds}

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, config: ExperimentConfig, condition: str, generations: dict[str, Path]) -> list[ResultRow]:
        from babeltune.experiments.evaluation import evaluation_rows

        return evaluation_rows(condition, generations, seed=config.seed)

    # ---------------------------------------------------------------- judge
    def pairwise_judge(self, kind: str, config: ExperimentConfig) -> PairwiseJudge:
        if kind not in self._judges:
            self._judges[kind] = make_pairwise_judge(kind, config)
        return self._judges[kind]

    def rubric_judge(self, config: ExperimentConfig) -> RubricJudge:
        return LLMRubricJudge(llm_backend(config))

    def release(self) -> None:
        self._backend = None
        self._backend_model = None
        gc.collect()


def make_pairwise_judge(kind: str, config: ExperimentConfig) -> PairwiseJudge:
    """The judge named `kind` ("reference" or "llm") with the experiment's judge settings."""
    settings = config.judge
    if kind == "reference":
        return ReferenceJudge(settings.offline)
    if kind == "llm":
        return LLMPairwiseJudge(llm_backend(config))
    raise ValueError(f"unknown judge kind {kind!r}; use reference or llm")


def llm_backend(config: ExperimentConfig) -> Any:
    from babeltune.judge.backends import endpoint_chat_backend, local_chat_backend

    llm = config.judge.llm
    if llm.endpoint is not None:
        return endpoint_chat_backend(llm.endpoint, max_new_tokens=llm.max_new_tokens)
    if llm.local_model:
        return local_chat_backend(llm.local_model, max_new_tokens=llm.max_new_tokens)
    raise ValueError("the LLM judge needs judge.llm.endpoint.url or judge.llm.local_model")

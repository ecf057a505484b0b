"""Experiments: grids of tuning conditions run end to end (`babeltune run`), and their tidy results table.

    from babeltune.experiments import load_experiment, run_experiment, read_results
    summary = run_experiment(load_experiment("my.yaml"), "runs/my")   # re-running resumes
    run_experiment(config, "runs/my", worker=True)   # one of several processes sharing the grid
    rows, meta = read_results("runs/my")

The stage implementations live behind `runner.Pipeline` (`pipeline.RealPipeline` calls babeltune's
train / generate / evaluate / judge stages); nothing here imports torch until a stage runs.
"""

from babeltune.experiments.claims import ClaimSettings
from babeltune.experiments.config import (
    Condition,
    ConditionSpec,
    DataConfig,
    ExperimentConfig,
    ExperimentGenerateConfig,
    JudgeSettings,
    LaunchSettings,
    LLMJudgeConfig,
    expand_conditions,
    load_experiment,
)
from babeltune.experiments.results import ResultRow, pivot, read_results, write_results
from babeltune.experiments.runner import ExperimentRunner, Pipeline, RunSummary, run_experiment

__all__ = [
    "ClaimSettings",
    "Condition",
    "ConditionSpec",
    "DataConfig",
    "ExperimentConfig",
    "ExperimentGenerateConfig",
    "ExperimentRunner",
    "JudgeSettings",
    "LLMJudgeConfig",
    "LaunchSettings",
    "Pipeline",
    "ResultRow",
    "RunSummary",
    "expand_conditions",
    "load_experiment",
    "pivot",
    "read_results",
    "run_experiment",
    "write_results",
]

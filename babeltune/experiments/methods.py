"""How a condition gets its model (`ConditionSpec.method`): study C's kinds next to instruction tuning.

| method | stages before generation | model generated with and benchmarked |
|---|---|---|
| tune | mixture, train | the tuned model (merged, or the LoRA adapter on its base) |
| base | none | the experiment's model |
| lens | probe, lens | the Lens-trained model (`CONDITION/lens/final`) |
| steer | probe | the experiment's model, steered along the probed subspace (`steer`) |

The probe stage runs `babeltune lens probe` on the base model into `CONDITION/probe/` (the experiment's
`probe` keys over: model = the experiment's, data = [data.train], languages = the experiment's, seed),
or copies another condition's finished probe of the same inputs (its seconds still count as the
condition's compute, `probe_copied_from` in the meta says where it came from);
the lens stage runs `babeltune lens train` into `CONDITION/lens/` (the experiment's `lens` keys, then the
condition's, over: model, subspace = that probe, data = data.train, seed). Keys the runner sets are
refused. Each condition's compute (stage seconds; tokens and FLOPs of the training steps where
training ran) goes into the run meta of results.json (`compute_summary`), the token and FLOP counts
also into its rows (`compute_rows`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babeltune.config import ConfigError, from_dict

if TYPE_CHECKING:
    from babeltune.experiments.config import Condition, ConditionSpec, ExperimentConfig
    from babeltune.lens.config import LensTrainConfig, ProbeConfig, SteerConfig
    from babeltune.tidy import ResultRow

RUNNER_SET = {"probe": ("model",), "lens": ("model", "subspace", "seed"), "steer": ("subspace",)}
"""Keys of the probe, lens and steer sections the runner sets itself."""
MODEL_STAGES = ("mixture", "train", "probe", "lens")
"""Stages that make a condition's model: their seconds are its `model_seconds`."""


def _refuse_runner_keys(section: str, values: dict[str, Any], where: str) -> None:
    clash = [key for key in RUNNER_SET[section] if key in values]
    if clash:
        raise ConfigError(f"{where}: {section}.{clash[0]} is set by the experiment runner; remove it")


def probe_config(config: ExperimentConfig, where: str = "experiment") -> ProbeConfig:
    """The probe stage's settings: the experiment's `probe` keys over its model, data.train, languages, seed."""
    from babeltune.lens.config import ProbeConfig

    _refuse_runner_keys("probe", config.probe, where)
    data = {"data": [config.data.train], "languages": list(config.languages), "seed": config.seed,
            **config.probe, "model": config.model}
    return from_dict(ProbeConfig, data, where=where, prefix="probe.")


def lens_config(config: ExperimentConfig, lens: dict[str, Any], subspace: str | Path,
                where: str = "experiment") -> LensTrainConfig:
    """A lens condition's training settings (its merged `lens` keys over model, subspace, data.train, seed)."""
    from babeltune.lens.config import LensTrainConfig

    _refuse_runner_keys("lens", lens, where)
    data = {"data": config.data.train, **lens, "model": config.model, "subspace": str(subspace), "seed": config.seed}
    return from_dict(LensTrainConfig, data, where=where, prefix="lens.")


def steer_config(steer: dict[str, Any], subspace: str | Path, where: str = "experiment") -> SteerConfig:
    """A steer condition's steering (its merged `steer` keys over the probed subspace)."""
    from babeltune.lens.config import SteerConfig

    _refuse_runner_keys("steer", steer, where)
    return from_dict(SteerConfig, {**steer, "subspace": str(subspace)}, where=where, prefix="steer.")


def check_method_sections(config: ExperimentConfig) -> None:
    """The experiment's own probe, lens and steer sections, checked whenever given (even if no condition
    uses them yet), so a typo there is found at load."""
    if config.probe:
        probe_config(config)
    if config.lens:
        lens_config(config, config.lens, "checked-later")
    if config.steer:
        steer_config(config.steer, "checked-later")


def check_method(config: ExperimentConfig, spec: ConditionSpec, lens: dict[str, Any], steer: dict[str, Any],
                 where: str) -> None:
    """A condition's method and its sections, checked at load: only tune conditions have a mixture or train
    keys, only lens ones lens keys, only steer ones steer keys; the probe, lens and steer settings they use
    are valid; steering runs on the local backend (it edits the model's states)."""
    method = spec.method
    varied = {key.split(".")[0] for key in spec.vary}
    own = {"mixture": bool(spec.mixture) or "mixture" in varied or "budget" in varied,
           "train": bool(spec.train) or "train" in varied,
           "lens": bool(spec.lens) or "lens" in varied, "steer": bool(spec.steer) or "steer" in varied}
    allowed = {"tune": ("mixture", "train"), "base": (), "lens": ("lens",), "steer": ("steer",)}[method]
    wrong = [section for section, given in own.items() if given and section not in allowed]
    if wrong:
        raise ConfigError(f"{where}: method {method} takes no {wrong[0]} settings (mixture and train: method tune; "
                          f"lens: method lens; steer: method steer); remove them or change the method")
    if method in ("lens", "steer"):
        probe_config(config, where)
    if method == "lens":
        lens_config(config, lens, "checked-later", where)
        if config.generate.backend == "endpoint":
            raise ConfigError(f"{where}: method lens trains a full model, but generate.backend endpoint serves LoRA "
                              f"adapters; use generate.backend local or vllm")
    if method == "steer":
        steer_config(steer, "checked-later", where)
        if config.generate.backend != "local":
            raise ConfigError(f"{where}: method steer edits the model's states while it generates, which needs "
                              f"generate.backend local (not {config.generate.backend})")


def run_lens_stage(config: ExperimentConfig, condition: Condition, subspace: Path, out: Path) -> dict[str, Any]:
    """`babeltune lens train` for a lens condition into `out`: an interrupted run of the same numbers is
    resumed, anything else there moved aside first."""
    from babeltune.experiments.layout import move_aside
    from babeltune.lens.manipulate import run_manipulation
    from babeltune.train.runfolder import run_status

    cfg = lens_config(config, condition.lens, subspace, f"condition {condition.name}")
    status = run_status(out, "summary.json")
    resume = status.state == "resumable" and status.same_numbers(cfg.numbers_dict())
    if status.state != "fresh" and not resume:
        move_aside(out, "a Lens run of another configuration")
    summary = run_manipulation(cfg, out, resume=resume)
    return {"model": str(out / "final"), "adapter": None, "steps": summary["steps"], "tokens": summary["tokens"],
            "seconds": summary["seconds"], "last": summary["last"]}


def compute_summary(condition_dir: Path) -> dict[str, Any]:
    """A condition's compute: each finished stage's seconds, and the tokens and FLOPs its training steps
    logged (train/log.jsonl or lens/log.jsonl; FLOPs only where the training loop counts them)."""
    from babeltune.experiments.stages import StageLog
    from babeltune.train.metrics import read_log

    records = StageLog(condition_dir).records
    stages = {name: round(record.seconds, 3) for name, record in records.items()}
    cost = {name: record.info.get("probe_seconds", record.seconds) if name == "probe" else record.seconds
            for name, record in records.items()}  # a copied probe counts what probing took
    out: dict[str, Any] = {"stages": stages,
                           "model_seconds": round(sum(s for n, s in cost.items() if n in MODEL_STAGES), 3)}
    if "probe" in records and "copied_from" in records["probe"].info:
        out["probe_copied_from"] = records["probe"].info["copied_from"]
    for folder in ("train", "lens"):
        log_path = condition_dir / folder / "log.jsonl"
        if log_path.exists():
            steps = read_log(log_path)
            out["train_tokens"] = sum(int(r.get("tokens", 0)) for r in steps)
            if steps and all("flops" in r for r in steps):
                out["train_flops"] = float(sum(float(r["flops"]) for r in steps))
    return out


def compute_rows(condition: str, summary: dict[str, Any]) -> list[ResultRow]:
    """`train_tokens` / `train_flops` where training ran, as rows of lang "all". Seconds stay in the run
    meta (`compute`), so that two runs of the same experiment write the same rows."""
    from babeltune.tidy import ResultRow

    return [ResultRow(condition, "all", key, float(summary[key])) for key in ("train_tokens", "train_flops")
            if key in summary]


def describe_method(condition: Condition) -> str:
    """A short line naming how a non-tune condition got its model (the report's condition list)."""
    if condition.method == "base":
        return "the base model, untuned"
    if condition.method == "lens":
        return "Lens manipulation training" + (f" ({json.dumps(condition.lens)})" if condition.lens else "")
    return "steered base model" + (f" ({json.dumps(condition.steer)})" if condition.steer else "")

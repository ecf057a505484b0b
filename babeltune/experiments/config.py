"""An experiment file: a grid of tuning conditions and what to do with each (`babeltune run EXP.yaml`).

```yaml
name: study-a-pinch
model: gemma-3-270m
budget: 160                      # examples per tuned model (exact)
languages: [ar, zh, cs, en, ...] # the mixture pool
eval_languages: [ar, zh, ...]    # evaluated in these
conditions:
  - name: "pinch-{pinch_percent}"
    mixture: {recipe: pinch}
    vary: {mixture.pinch_percent: [1, 10, 20, 50, 100]}
train: {lr: 1.0e-4, epochs: 2}   # TrainConfig keys (an overlay), plus launcher / accelerate_config / num_processes
generate:                        # ExperimentGenerateConfig
  backend: local                 # local | vllm | endpoint
  decoding: {max_new_tokens: 128}
judge: {kind: reference, reference: "mono-{lang}", reference_run: runs/study-a-monolingual}
```

Every section is checked when the file is loaded, before any compute: `train` (and each condition's
`train` and `vary: {train.X: ...}` values) as an overlay of the training stage's `TrainConfig` (the
keys the runner sets itself, `model`, `data`, `out` and `seed`, are refused), `generate` as
`ExperimentGenerateConfig`; an unknown key or a wrong type names the file and the dotted key.

A condition's `vary` maps dotted keys (`mixture.X`, `train.X`, `budget`) to lists of values; the
condition expands into the cartesian product, named by formatting `name` with the varied values (by
their last key part; lists joined with "-") and `{k}`, the number of tuning languages. The whole grid
is expanded and every condition's configs are built (and validated) before anything runs.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from babeltune.bench.config import BenchConfig
from babeltune.config import ConfigError, from_dict, load_config
from babeltune.data.mixtures import MixtureSpec
from babeltune.evaluate.runner import EvalConfig
from babeltune.generate.config import LocalConfig, VLLMConfig
from babeltune.generate.endpoint import EndpointConfig
from babeltune.generate.settings import DecodingSettings
from babeltune.judge.reference import ReferenceJudgeConfig
from babeltune.languages import STUDY_A_LANGUAGES, parse_language_list

_SOURCE: ContextVar[str] = ContextVar("experiment_source", default="experiment")
"""What errors name as the place of a mistake: the experiment file while `load_experiment` reads it."""


@contextlib.contextmanager
def _source(name: str) -> Iterator[None]:
    token = _SOURCE.set(name)
    try:
        yield
    finally:
        _SOURCE.reset(token)


RUNNER_KEYS = ("data", "model", "out", "seed")
"""TrainConfig keys the runner sets for every condition: the mixture, the experiment's model and seed,
the condition's `train/` folder."""


@dataclass
class LaunchSettings:
    """How a condition's training runs: the keys of an experiment's `train:` section that are not
    TrainConfig fields."""

    launcher: Literal["inprocess", "accelerate"] = "inprocess"
    """inprocess: `babeltune.train.train` in the runner's process. accelerate: a child process
    `accelerate launch [--config_file F] [--num_processes N] -m babeltune.cli train --config
    CONDITION/train.config.yaml` writing the same run folder (so it resumes the same way)."""
    accelerate_config: str | None = None
    """An accelerate config file (`accelerate config`; e.g. examples/accelerate_ddp.yaml) passed as
    --config_file; null: accelerate's default config."""
    num_processes: int | None = None
    """Processes (one per GPU) passed as --num_processes; null: the accelerate config's. The global
    batch is batch_size x grad_accum x processes."""
    accelerate_args: list[str] = field(default_factory=list)
    """Further `accelerate launch` flags, e.g. [--multi_gpu] or [--main_process_port, "0"]."""

    def __post_init__(self) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"train.num_processes must be >= 1 or null, got {self.num_processes}")


LAUNCH_KEYS = ("launcher", "accelerate_config", "num_processes", "accelerate_args")


def split_train_section(train: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig keys, LaunchSettings keys) of an experiment's train mapping."""
    return ({k: v for k, v in train.items() if k not in LAUNCH_KEYS},
            {k: v for k, v in train.items() if k in LAUNCH_KEYS})


def check_train_overlay(train: Any, prefix: str = "train", where: str | None = None) -> LaunchSettings:
    """Check an experiment's `train:` mapping (or a condition's, merged) as an overlay of `TrainConfig`:
    every key a TrainConfig field (or a LaunchSettings one) of the right type, none of RUNNER_KEYS.
    Returns the launch settings."""
    from babeltune.train.config import TrainConfig

    where = where or _SOURCE.get()
    if not isinstance(train, dict):
        raise ConfigError(f"{where}: {prefix} must be a mapping of training options, got {train!r}")
    clash = [k for k in RUNNER_KEYS if k in train]
    if clash:
        raise ConfigError(f"{where}: {prefix}.{clash[0]} is set by the experiment runner (the condition's "
                          f"mixture, the experiment's model and seed, the condition's train/ folder); set "
                          f"{'the top-level ' + clash[0] if clash[0] in ('model', 'seed') else 'data.train'} "
                          f"instead, or remove it")
    options, launch = split_train_section(train)
    settings = from_dict(LaunchSettings, launch, where=where, prefix=f"{prefix}.")
    try:
        from_dict(TrainConfig, {**options, "data": "checked-later"}, where=where, prefix=f"{prefix}.")
    except ConfigError as exc:
        text = str(exc)
        if "unknown key" in text:
            text += f"; or {', '.join(LAUNCH_KEYS)}"
        raise ConfigError(text) from None
    return settings


def merge_train(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`, sections (e.g. lora) merged key by key."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_train(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class ExperimentGenerateConfig:
    """How every condition's responses are generated: the backend and its settings, and decoding."""

    backend: Literal["local", "vllm", "endpoint"] = "local"
    """local: babeltune's own engine in this process (`local`). vllm: an in-process vLLM engine
    (`vllm`); a grid's adapters share one engine per base model. endpoint: an OpenAI-compatible server
    (`endpoint`, e.g. `vllm serve BASE --enable-lora` or `babeltune serve`): each condition's adapter is
    loaded through the server's dynamic LoRA routes and requested by its name."""
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    """Decoding settings (greedy, repetition penalty 1.2, 512 new tokens unless set)."""
    max_new_tokens: int | None = None
    """Shorthand for decoding.max_new_tokens (folded into it on load)."""
    local: LocalConfig = field(default_factory=LocalConfig)
    """The local backend's settings (dtype, device, batch_size, ...)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vLLM backend's engine settings."""
    endpoint: EndpointConfig | None = None
    """The server (url, api_key_env, concurrency, ...) for backend endpoint; its `model` is set per
    condition."""

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None:
            default = DecodingSettings().max_new_tokens
            if self.decoding.max_new_tokens not in (default, self.max_new_tokens):
                raise ConfigError(f"generate.max_new_tokens ({self.max_new_tokens}) and "
                                  f"generate.decoding.max_new_tokens ({self.decoding.max_new_tokens}) disagree; "
                                  f"give one")
            try:
                self.decoding = replace(self.decoding, max_new_tokens=self.max_new_tokens)
            except ValueError as exc:
                raise ConfigError(f"generate.max_new_tokens: {exc}") from None
            self.max_new_tokens = None
        if self.backend == "endpoint" and self.endpoint is None:
            raise ConfigError("generate.backend endpoint needs generate.endpoint.url (an OpenAI-compatible "
                              "server with dynamic LoRA routes, e.g. `vllm serve BASE --enable-lora`)")

    def stage_settings(self) -> dict[str, Any]:
        """What the generation stage's fingerprint covers: the backend, decoding and the chosen
        backend's own settings."""
        from babeltune.config import to_dict

        section = getattr(self, self.backend)
        return {"backend": self.backend, "decoding": to_dict(self.decoding),
                "settings": to_dict(section) if section is not None else None}


ConditionMethod = Literal["tune", "base", "lens", "steer"]
"""How a condition gets its model (see `ConditionSpec.method`)."""


@dataclass
class ConditionSpec:
    """One entry of the grid (it may expand into several conditions through `vary`)."""

    name: str
    """The condition's name, a folder name: letters, digits, '-', '_', '.', and {placeholders} for the
    varied keys (e.g. "mono-{lang}")."""
    method: ConditionMethod = "tune"
    """tune: instruction tuning on the condition's mixture (`train`: LoRA or full; study C's xSFT).
    base: the experiment's model untouched. lens: Lens manipulation training (`lens`) on a subspace
    probed from the base model (`probe`). steer: the base model steered along that subspace (`steer`)
    while it generates and runs the bench tasks. Only tune conditions build a mixture and train."""
    lens: dict[str, Any] = field(default_factory=dict)
    """method lens: `LensTrainConfig` keys over the experiment's `lens`."""
    steer: dict[str, Any] = field(default_factory=dict)
    """method steer: `SteerConfig` keys (mode, coefficient, layers, lang) over the experiment's `steer`."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """`MixtureSpec` fields (recipe, lang, languages, pinch_count, pinch_percent, budget); budget,
    languages, seed and eval languages default to the experiment's."""
    train: dict[str, Any] = field(default_factory=dict)
    """Training config keys for this condition, over the experiment's `train`."""
    vary: dict[str, list[Any]] = field(default_factory=dict)
    """Dotted key -> values: one condition per combination (cartesian product)."""

    def __post_init__(self) -> None:
        for key, values in self.vary.items():
            if key.split(".")[0] not in ("mixture", "train", "budget", "lens", "steer"):
                raise ConfigError(f"condition {self.name!r}: vary key {key!r} must start with mixture., train., "
                                  f"lens., steer. or be budget")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"condition {self.name!r}: vary.{key} must be a non-empty list of values")


@dataclass
class DataConfig:
    """Where the tuning and evaluation prompts come from (any babeltune data source)."""

    train: str = "bundled:train"
    """The parallel source mixtures draw from."""
    eval: str = "bundled:eval"
    """Open prompts: generated, language-checked and judged side by side."""
    modifiers: str | None = "bundled:modifiers"
    """Prompts with a modifier instruction (study B), checked by the evaluation stage; null to skip."""
    eval_per_language: int | None = None
    """Use only the first N eval prompts (by pid order) per language; null = all."""
    modifiers_per_language: int | None = None
    """Use only the first N modifier prompts per language; null = all."""

    def __post_init__(self) -> None:
        for name in ("eval_per_language", "modifiers_per_language"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be >= 1 or null, got {value}")


@dataclass
class LLMJudgeConfig:
    """An LLM judge behind an OpenAI-compatible endpoint, or a model loaded in this process (babeltune's
    engine or vLLM)."""

    backend: Literal["local", "vllm", "endpoint"] | None = None
    """Who runs the judge model, as for generation: `endpoint`, `local` (babeltune's engine) or `vllm`
    (an in-process vLLM engine) on `local_model`; null = the endpoint when one is given, else local."""
    endpoint: EndpointConfig | None = None
    """The generation stage's endpoint settings (url, model, api_key_env, concurrency, timeout,
    retries); null = use `local_model`."""
    local_model: str | None = None
    """A model babeltune loads (folder, hub id) to judge in-process (backend local or vllm)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """The vLLM engine's settings (backend vllm)."""
    max_new_tokens: int = 256
    """Room for the judge's short reasoning and its verdict."""

    @property
    def configured(self) -> bool:
        if self.backend == "endpoint":
            return self.endpoint is not None
        if self.backend in ("local", "vllm"):
            return bool(self.local_model)
        return self.endpoint is not None or bool(self.local_model)


@dataclass
class JudgeSettings:
    """Who judges side by side, against which reference, and whether the rubric runs."""

    kind: Literal["reference", "llm", "none"] = "reference"
    """The primary SxS judge: `reference` (offline), `llm`, or `none` (no SxS scores)."""
    also: list[Literal["reference", "llm"]] = field(default_factory=list)
    """Further judges run on the same pairs; their agreement with the primary one is reported."""
    reference: str = "mono-{lang}"
    """The condition each language is compared against: a name with {lang} (study A: the model tuned
    monolingually on that language) or a plain condition name (one reference for all languages)."""
    reference_per_language: dict[str, str] = field(default_factory=dict)
    """Language -> condition name, overriding `reference` for those languages."""
    reference_run: str | None = None
    """Another experiment's run directory to take the reference conditions from (e.g. the monolingual
    12 x 12 run); null = this run."""
    skip_self: bool = False
    """Do not judge a condition against itself (its score would be 50 by construction)."""
    retries: int = 1
    """Times an unparseable verdict is asked again before it is recorded as invalid."""
    batch_size: int = 32
    """Pairs judged (and cached) per batch."""
    rubric: bool = False
    """Also grade every eval response alone on study B's six criteria (needs the LLM judge)."""
    offline: ReferenceJudgeConfig = field(default_factory=ReferenceJudgeConfig)
    """Settings of the offline reference-based judge."""
    llm: LLMJudgeConfig = field(default_factory=LLMJudgeConfig)
    """Settings of the LLM judge."""

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigError(f"judge.retries must be >= 0, got {self.retries}")
        needs_llm = self.kind == "llm" or "llm" in self.also or self.rubric
        if needs_llm and not self.llm.configured:
            raise ConfigError("the LLM judge needs judge.llm.endpoint.url (an OpenAI-compatible API) or "
                              "judge.llm.local_model (judge.llm.backend local or vllm), as judge.llm.backend "
                              "asks; or use judge.kind=reference (offline)")

    def judges(self) -> list[str]:
        """Every SxS judge to run, primary first."""
        kinds: list[str] = [] if self.kind == "none" else [self.kind]
        return kinds + [str(k) for k in self.also if k not in kinds]

    def reference_for(self, lang: str) -> str:
        return self.reference_per_language.get(lang) or self.reference.replace("{lang}", lang)


@dataclass
class ExperimentConfig:
    """A whole experiment: grid, data, stage settings, judging."""

    name: str
    """Names the run (the default output folder is runs/NAME)."""
    conditions: list[ConditionSpec]
    """The grid (see the module docstring)."""
    model: str = "gemma-3-270m"
    """The base model every condition tunes (alias, folder or hub id)."""
    seed: int = 0
    """Seed for mixtures, training and sampling."""
    budget: int = 160
    """Tuning examples per condition (exact); a condition's mixture.budget overrides it."""
    languages: list[str] = field(default_factory=lambda: list(STUDY_A_LANGUAGES))
    """The mixture language pool (mixture.languages overrides it per condition)."""
    eval_languages: list[str] = field(default_factory=lambda: list(STUDY_A_LANGUAGES))
    """Languages evaluated and judged."""
    data: DataConfig = field(default_factory=DataConfig)
    train: dict[str, Any] = field(default_factory=dict)
    """Training options shared by all conditions: an overlay of the training stage's TrainConfig (any
    field but model, data, out and seed, which the runner sets), plus `launcher`, `accelerate_config`
    and `num_processes` (LaunchSettings)."""
    generate: ExperimentGenerateConfig = field(default_factory=ExperimentGenerateConfig)
    """The generation stage: backend, decoding settings and the backend's own settings."""
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    """The evaluate stage's settings (`babeltune eval`'s): `identifier` (py3langid, or fasttext for the
    Language Confusion Benchmark's LPR/WPR as published), `compare_identifier` (agreement rows), the
    language-ID thresholds and the bootstrap; its seed is the experiment's."""
    baseline: str | None = None
    """The condition every other one is compared with in the paired differences (results.csv, the
    printed summary and the report); null = judge.reference when that names one condition of this run,
    else the first condition."""
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    samples_per_language: int = 3
    """Prompts per language shown side by side in the report."""
    probe: dict[str, Any] = field(default_factory=dict)
    """lens and steer conditions: `ProbeConfig` keys of the probe stage that finds the base model's
    language subspace (the runner sets model; data defaults to [data.train], languages to `languages`)."""
    lens: dict[str, Any] = field(default_factory=dict)
    """lens conditions: `LensTrainConfig` keys shared by all (the runner sets model, subspace and seed;
    data defaults to data.train, languages to `languages`)."""
    steer: dict[str, Any] = field(default_factory=dict)
    """steer conditions: `SteerConfig` keys shared by all (the runner sets subspace)."""
    bench: BenchConfig | None = None
    """lm-evaluation-harness tasks run on every condition's model after its evaluation (`babeltune bench`'s
    settings; the runner sets model and steering per condition); null: no bench stage."""

    def __post_init__(self) -> None:
        if not self.conditions:
            raise ConfigError("an experiment needs at least one condition")
        if self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        self.languages = parse_language_list(self.languages)
        self.eval_languages = parse_language_list(self.eval_languages)
        check_train_overlay(self.train)
        if self.bench is not None:
            from babeltune.experiments.bench import check_bench_section

            check_bench_section(self.bench)
        from babeltune.experiments.methods import check_method_sections

        check_method_sections(self)
        for i, spec in enumerate(self.conditions):
            check_train_overlay(spec.train, prefix=f"conditions[{i}].train")


@dataclass(frozen=True)
class Condition:
    """One expanded, validated condition: the unit the runner trains, generates, evaluates and judges."""

    name: str
    mixture: MixtureSpec
    train: dict[str, Any]
    """The experiment's train keys with the condition's applied (TrainConfig keys and LaunchSettings)."""
    varied: dict[str, Any]
    method: ConditionMethod = "tune"
    lens: dict[str, Any] = field(default_factory=dict)
    """method lens: the experiment's lens keys with the condition's applied."""
    steer: dict[str, Any] = field(default_factory=dict)
    """method steer: the experiment's steer keys with the condition's applied."""

    @property
    def launch(self) -> LaunchSettings:
        return from_dict(LaunchSettings, split_train_section(self.train)[1], where=f"condition {self.name}",
                         prefix="train.")


_DECODING_KEYS = frozenset(DecodingSettings.__dataclass_fields__) - {"max_new_tokens"}


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, check and expand an experiment file: any unknown key or wrong type anywhere (stage
    sections, conditions, their varied values) is a ConfigError naming the file and the dotted key."""
    with _source(str(path)):
        try:
            config = load_config(ExperimentConfig, path, overrides or [])
            expand_conditions(config)
        except ConfigError as exc:
            text = str(exc)
            if not text.startswith(str(path)):
                text = f"{path}: {text}"
            raise ConfigError(text + _decoding_hint(text)) from None
    return config


def _decoding_hint(text: str) -> str:
    """A decoding setting written directly under generate: say where it goes."""
    if "unknown key" not in text:
        return ""
    misplaced = [k for k in _DECODING_KEYS if f"generate.{k}" in text]
    return "".join(f" (decoding settings go under generate.decoding: generate.decoding.{k})" for k in misplaced)


_NAME_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def expand_conditions(config: ExperimentConfig) -> list[Condition]:
    """Every condition of the grid, in file order, with unique names and validated mixtures."""
    out: list[Condition] = []
    for spec in config.conditions:
        keys = list(spec.vary)
        for combo in itertools.product(*(spec.vary[k] for k in keys)) if keys else [()]:
            out.append(_build_condition(config, spec, dict(zip(keys, combo, strict=True))))
    names = [c.name for c in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"condition names must be unique; repeated: {', '.join(duplicates)} (put the varied "
                          f"keys into the name, e.g. 'pinch-{{pinch_percent}}')")
    if config.baseline is not None and config.baseline not in names:
        raise ConfigError(f"baseline {config.baseline!r} is not a condition of this experiment; its conditions: "
                          f"{', '.join(names)}")
    return out


def _build_condition(config: ExperimentConfig, spec: ConditionSpec, varied: dict[str, Any]) -> Condition:
    mixture = copy.deepcopy(spec.mixture)
    train = merge_train(config.train, spec.train)
    sections = {"mixture": mixture, "train": train, "lens": merge_train(config.lens, spec.lens),
                "steer": merge_train(config.steer, spec.steer)}
    budget = mixture.pop("budget", config.budget)
    for key, value in varied.items():
        section, _, rest = key.partition(".")
        if section == "budget":
            budget = value
        else:
            _set_dotted(sections[section], rest, value)
    budget = mixture.pop("budget", budget)
    fields = {"languages": list(config.languages), "seed": config.seed,
              "eval_languages": list(config.eval_languages), **mixture, "budget": budget}
    placeholders = {key.split(".")[-1]: _name_part(v) for key, v in varied.items()}
    langs = fields.get("languages") if fields.get("recipe") in ("languages", "uniform") else None
    placeholders["k"] = str(len(langs)) if langs else "1"
    try:
        name = spec.name.format(**placeholders)
    except (KeyError, IndexError) as exc:
        raise ConfigError(f"condition name {spec.name!r} uses {exc}, which is not a varied key; known: "
                          f"{', '.join(sorted(placeholders))}") from exc
    if not name or set(name) - _NAME_OK:
        raise ConfigError(f"condition name {name!r} must be letters, digits, '-', '_' or '.' (it names a folder)")
    check_train_overlay(train, where=f"{_SOURCE.get()}: condition {name}")
    if config.generate.backend == "endpoint" and train.get("method") == "full":
        raise ConfigError(f"{_SOURCE.get()}: condition {name} trains a full model (train.method full), but "
                          f"generate.backend endpoint serves LoRA adapters on the server's base model; use "
                          f"train.method lora, or generate.backend local or vllm")
    from babeltune.experiments.methods import check_method

    check_method(config, spec, sections["lens"], sections["steer"], f"{_SOURCE.get()}: condition {name}")
    if spec.method != "tune":  # no mixture is built; a placeholder keeps the condition's record uniform
        fields.setdefault("recipe", "uniform")
    try:
        mixture_spec = MixtureSpec(**fields)
    except TypeError as exc:
        raise ConfigError(f"condition {name}: mixture: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"condition {name}: {exc}") from exc
    return Condition(name, mixture_spec, train, varied, spec.method, sections["lens"], sections["steer"])


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _name_part(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "-".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

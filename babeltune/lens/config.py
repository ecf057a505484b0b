"""Typed configs of the lens commands (YAML files map onto them; `key=value` overrides on the CLI)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from babeltune.config import to_dict
from babeltune.languages import parse_language_list
from babeltune.train.runfolder import numbers_fingerprint

SteerMode = Literal["add", "project"]


@dataclass
class ProbeConfig:
    """`babeltune lens probe`: find each layer's language subspace from prompts in several languages."""

    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id."""
    data: list[str] = field(default_factory=list)
    """babeltune data sources (bundled:train, a .jsonl file or folder, hf:...); their prompts are probed."""
    text: list[str] = field(default_factory=list)
    """Plain text files, one sentence per line: PATH=LANG, PATH named by a language code, or a folder of such."""
    parallel_text: bool = False
    """Line n of every text file is the same sentence (FLORES): held-out splits and retrieval use that."""
    languages: list[str] = field(default_factory=list)
    """Languages to probe (default: every language found)."""
    central: str = "en"
    """The central language the directions are measured from (study C: English)."""
    per_language: int = 300
    """At most this many prompts per language for the means (and again for the held-out part)."""
    min_per_language: int = 20
    """Fewer prompts than this for a language's mean is an error: the mean would not be stable."""
    holdout: float = 0.2
    """Fraction of prompts (whole parallel groups) held out for the diagnostics; 0 skips them."""
    rank: int | None = None
    """Dimension of the language-specific subspace (default: number of languages - 1)."""
    pool: Literal["last", "mean"] = "last"
    """The last prompt token's state (study C), or the mean over the prompt's tokens."""
    max_prompt_tokens: int = 64
    """Prompts are cut to this many tokens (template included; study C: 64)."""
    template: Literal["auto", "gemma", "tokenizer", "none"] = "auto"
    """Chat template wrapping each prompt; 'none' probes the raw text."""
    batch_size: int = 16
    """Prompts run through the model together."""
    padding_side: Literal["left", "right"] = "left"
    seed: int = 0
    """Seed of the held-out split and the prompt sample."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Precision the model is loaded in."""
    device: str = "cpu"
    """Device the model runs on (cpu, cuda, cuda:1, ...)."""

    def __post_init__(self) -> None:
        self.languages = parse_language_list(self.languages)
        self.central = parse_language_list([self.central])[0]
        if self.languages and self.central not in self.languages:
            raise ValueError(f"central language {self.central!r} must be one of languages {self.languages}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.min_per_language < 1 or self.per_language < self.min_per_language:
            raise ValueError(f"need 1 <= min_per_language <= per_language, got {self.min_per_language} and "
                             f"{self.per_language}")
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if self.max_prompt_tokens < 4 or self.batch_size < 1:
            raise ValueError("max_prompt_tokens must be >= 4 and batch_size >= 1")


@dataclass
class SteerConfig:
    """Steering at inference: edit the states of chosen layers while the model runs."""

    subspace: str = ""
    """Folder (or .safetensors file) written by `babeltune lens probe`."""
    mode: SteerMode = "add"
    """add: h + coefficient * direction(lang); project: h - coefficient * P_s h (remove the
    language-specific part; negative values amplify it)."""
    coefficient: float = 1.0
    """Scale of the edit; 0 leaves the model exactly as it is."""
    layers: list[int] = field(default_factory=lambda: [-1])
    """Layers whose states are edited (negative counts from the top)."""
    lang: str | None = None
    """add mode: the language to steer toward (default: each prompt's own language)."""
    allow_other_model: bool = False
    """Use a subspace whose model fingerprint differs from the model's (shapes must still match)."""

    def __post_init__(self) -> None:
        if not self.subspace:
            raise ValueError("subspace is required: the folder written by `babeltune lens probe` (--steer)")
        if self.lang is not None:
            self.lang = parse_language_list([self.lang])[0]
        if not self.layers:
            raise ValueError("layers must list at least one layer")


@dataclass
class LensOptim:
    """Optimizer and schedule (the release's values by default)."""

    lr: float = 1e-5
    """Peak learning rate."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after the warm-up."""
    warmup_ratio: float = 0.05
    """Warm-up steps = ceil(ratio x total steps)."""
    weight_decay: float = 0.1
    """AdamW weight decay (none on biases and norm weights)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    """Gradient clipping; None: none."""

    def __post_init__(self) -> None:
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise ValueError("need lr > 0, 0 <= warmup_ratio < 1 and weight_decay >= 0")


@dataclass
class LensTrainConfig:
    """`babeltune lens train`: manipulation training of the top layers with study C's three losses."""

    subspace: str = ""
    """Folder written by `babeltune lens probe` on this model."""
    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id (the model the subspace was probed on)."""
    data: str = "bundled:train"
    """Parallel prompts (records sharing a pid across languages); responses are ignored."""
    languages: list[str] = field(default_factory=list)
    """Training languages (the central one included); default: every language of the subspace."""
    max_groups: int | None = 200
    """At most this many parallel groups (the release: 200); None: all."""
    top_layers: int = 2
    """Number of top decoder layers trained (the release: 2)."""
    max_prompt_tokens: int = 128
    """Prompts are cut to this many tokens, template included (the release: 128)."""
    template: Literal["auto", "gemma", "tokenizer"] = "auto"
    """Chat template wrapping each prompt (auto: the model's own, else gemma's)."""
    retain_pool: Literal["last", "mean"] = "mean"
    """State the retain loss reads: the top layer's state averaged over the prompt's tokens (the
    release), or at the last prompt token."""
    agnostic_pool: Literal["last", "mean"] = "last"
    """State the language-agnostic loss reads: the last prompt token (the release), or the mean."""
    specific_pool: Literal["last", "mean"] = "last"
    """State the language-specific loss reads: the last prompt token (the release), or the mean."""
    retain_weight: float = 1.0
    """Weight of the retain loss (the central language's states stay where they were)."""
    specific_weight: float = 1.0
    """Weight of the language-specific loss."""
    specific_target: float = 1.0
    """w: the target's language-specific projection moves w direction-lengths further from the central language."""
    agnostic_weight: float = 1.0
    """Weight of the language-agnostic loss."""
    optim: LensOptim = field(default_factory=LensOptim)
    """Optimizer and schedule."""
    batch_size: int = 1
    """Parallel groups per micro-batch."""
    grad_accum: int = 8
    """Micro-batches per optimizer step."""
    epochs: int = 1
    max_steps: int | None = None
    """Optimizer steps (None: `epochs` passes over the groups)."""
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    """Autocast of the training forward passes (auto: bf16 where the device supports it)."""
    seed: int = 0
    """Seeds the data order and the random generators."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype the model is loaded in."""
    device: str = "cpu"
    """Device the model trains on (cpu, cuda, ...)."""
    allow_other_model: bool = False
    """Train with a subspace probed on other weights of the same shape."""
    save_model: bool = True
    """Write the trained model to RUN/final (safetensors + tokenizer)."""
    save_every: int = 0
    """Checkpoint (top layers, optimizer, scheduler, RNG) every N steps; also at the end and on
    SIGINT/SIGTERM. `--resume` continues from the latest one. 0: only at the end and on a signal."""
    tensorboard: bool = False
    """Also log to RUN/tb (TensorBoard)."""
    progress: bool = True
    """Show a progress bar."""

    def pools(self) -> list[Literal["last", "mean"]]:
        """The poolings the three losses read, each once (retain, agnostic, specific order)."""
        return list(dict.fromkeys([self.retain_pool, self.agnostic_pool, self.specific_pool]))

    def numbers_fingerprint(self) -> str:
        """Hash of every field that changes the numbers of a run: a resume must match it."""
        return numbers_fingerprint(self.numbers_dict())

    def numbers_dict(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if k not in LENS_RESUME_FREE_FIELDS}

    def __post_init__(self) -> None:
        self.languages = parse_language_list(self.languages)
        if self.top_layers < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ValueError("top_layers, batch_size, grad_accum and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if min(self.retain_weight, self.specific_weight, self.agnostic_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if self.save_every < 0:
            raise ValueError(f"save_every must be >= 0, got {self.save_every}")


LENS_RESUME_FREE_FIELDS = frozenset({"save_model", "save_every", "tensorboard", "progress"})


STEER_FLAGS: dict[str, str] = {
    "steer.subspace": "steer", "steer.mode": "steer_mode", "steer.coefficient": "steer_coefficient",
    "steer.layers": "steer_layers", "steer.lang": "steer_lang", "steer.allow_other_model": "steer_allow_other_model",
}
"""Config key -> flag name of the steering options, the same in every command that steers
(`babeltune generate`, `lens steer`, `lens mc-eval`: each config has a `steer: SteerConfig` field)."""


@dataclass
class SteerRunConfig:
    """`babeltune lens steer`: generate with and without steering, side by side (greedy decoding)."""

    steer: SteerConfig
    """The steering applied to the second generation of each prompt."""
    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id (the model the subspace was probed on)."""
    prompt: list[str] = field(default_factory=list)
    """Prompts and their languages, LANG:TEXT, e.g. 'fi:Mikä on Suomen pääkaupunki?'."""
    data: str | None = None
    """A babeltune source whose prompts are used as well (bundled:eval, FILE.jsonl, hf:...)."""
    per_language: int = 2
    """With data: prompts taken per language."""
    max_new_tokens: int = 48
    """Tokens generated per response."""
    out: str | None = None
    """Write the generations as JSONL here."""

    def __post_init__(self) -> None:
        if self.per_language < 1 or self.max_new_tokens < 1:
            raise ValueError("per_language and max_new_tokens must be at least 1")


@dataclass
class MCEvalConfig:
    """`babeltune lens mc-eval`: multiple-choice accuracy per language, optionally while steering."""

    data: str = ""
    """Multiple-choice JSONL file: {lang, question|premise, choices, label} per line."""
    model: str = "gemma-3-270m"
    """Model alias, local folder or hub id."""
    method: Literal["loglik", "letter"] = "loglik"
    """loglik: the choice the model finds likeliest; letter: the option letter it answers."""
    template: Literal["none", "auto", "gemma", "tokenizer"] = "none"
    """none: raw text (usual for base models); else a user turn in that chat template."""
    languages: list[str] = field(default_factory=list)
    """Only items in these languages (default: all)."""
    batch_size: int = 8
    """Requests (choice continuations) per forward pass."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Precision the model is loaded in."""
    device: str = "cpu"
    """Device the model runs on (cpu, cuda, ...)."""
    out: str | None = None
    """Write per-language results (JSON) here, with bench's tidy rows, model identity and task hashes."""
    tasks_dir: str | None = None
    """Keep the lm-eval tasks written for the items (task YAMLs, JSONL data) and bench's results.csv,
    results.json, samples.jsonl in this folder (default: a temporary folder, deleted afterwards); rerun
    with `babeltune bench --include-path DIR`."""
    steer: SteerConfig | None = None
    """Steering applied while scoring (None: the model as it is)."""

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data is required: the multiple-choice JSONL file (--data)")
        self.languages = parse_language_list(self.languages)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

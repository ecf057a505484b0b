"""`TrainConfig`: every option of `babeltune train`, declared once, with a docstring and validation.

YAML files map onto it one to one (see babeltune/configs/train_*.yaml); `key=value` overrides change
any field from the command line (`lora.r=8`, `lr_sweep=[1e-5,1e-4]`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from babeltune.config import to_dict
from babeltune.train.runfolder import numbers_fingerprint

Method = Literal["lora", "full"]
Schedule = Literal["cosine", "linear", "constant"]
Overflow = Literal["truncate", "drop", "error"]
Precision = Literal["auto", "bf16", "fp32"]
TemplateName = Literal["auto", "gemma", "tokenizer"]
TrainOn = Literal["all_assistant", "last_assistant"]

# Fields that do not change the numbers a run produces: a resume may differ in these.
RESUME_FREE_FIELDS: frozenset[str] = frozenset({
    "out", "save_every", "keep_checkpoints", "log_every", "tensorboard", "progress", "merge",
    "peak_tflops", "lr_sweep",
})


@dataclass
class LoraSettings:
    """LoRA adapter shape (PEFT)."""

    r: int = 16
    """Rank of the low-rank update."""
    alpha: int = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the adapter input (0 keeps runs bit-identical across process counts)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Module names (suffixes such as q_proj, or 'all-linear' for every linear layer but the LM head)."""

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"lora.r must be positive, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be within [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty; name modules (e.g. [q_proj, v_proj]) or use all-linear")


@dataclass
class TrainConfig:
    """One training run (or, with `lr_sweep`, one run per learning rate)."""

    data: str = ""
    """Training data: a mixture file from `babeltune data build`, any .jsonl file/folder, bundled:train,
    or hf:NAME_OR_PATH."""
    model: str = "gemma-3-270m"
    """Base model: the default alias, a local folder, or a Hugging Face id."""
    out: Path = Path("runs/train")
    """Run folder (created). With lr_sweep, one sub-folder per learning rate."""
    method: Method = "lora"
    """lora: train a PEFT LoRA adapter; full: train every parameter."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (used when method is lora)."""

    # data
    source_lang: str | None = None
    """Language of rows that carry no 'lang' column."""
    languages: list[str] | None = None
    """Train only on records in these languages (others are counted, not used). None: all."""
    skip_invalid: bool = False
    """Count and skip invalid rows instead of stopping at the first (reported in data_report.json)."""
    hf_split: str = "train"
    """Split of an hf: source."""
    hf_config: str | None = None
    """Config (subset) of an hf: source."""
    template: TemplateName = "auto"
    """Chat template (the same one generation uses): auto, gemma or tokenizer."""
    train_on: TrainOn = "all_assistant"
    """Which assistant turns the loss covers."""
    max_length: int = 512
    """Longest example in tokens; longer ones follow `overflow`."""
    overflow: Overflow = "truncate"
    """Examples longer than max_length: truncate (cut at max_length), drop, or error. Counted either way."""
    pack: bool = True
    """Pack a micro-batch's examples into as few rows as possible, without attention between them."""
    pack_length: int | None = None
    """Tokens per packed row; None: max(max_length, 512). Longer rows waste less padding but attend
    over more positions (the block-diagonal mask is not skipped by CPU attention kernels)."""
    shuffle: bool = True
    """Shuffle the example order every epoch (a pure function of seed and epoch)."""

    # optimisation
    lr: float = 1e-4
    """Peak learning rate (study B: 1e-4 for LoRA, 1e-5 for full fine-tuning)."""
    lr_sweep: list[float] = field(default_factory=list)
    """If not empty: train one model per learning rate listed (lr is then ignored)."""
    schedule: Schedule = "cosine"
    """Learning-rate decay after warm-up: cosine (to 0), linear (to 0) or constant."""
    warmup_steps: int = 0
    """Linear warm-up from 0 over this many optimizer steps (study B: none)."""
    epochs: int = 1
    """Passes over the data (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (the data repeats in new epochs if needed)."""
    batch_size: int = 4
    """Examples per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step. Global batch = batch_size x grad_accum x processes."""
    weight_decay: float = 0.1
    """AdamW weight decay (not applied to biases and norm weights)."""
    adam_betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (study B's)."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this (None: no clipping; the norm is logged either way)."""
    precision: Precision = "auto"
    """bf16: bf16 autocast, fp32 master weights (frozen LoRA base weights stored in bf16 once).
    fp32: everything in float32. auto: bf16 on GPUs that support it and on CPUs with native bfloat16
    arithmetic (AVX512-BF16 or AMX), else fp32."""
    seed: int = 0
    """Seed for LoRA initialisation, dropout and the data order."""
    compile: bool = False
    """torch.compile each decoder layer (regional, dynamic shapes): fuses the element-wise work that
    dominates CPU steps after the matrix products; the first step pays the compilation (~1-2 min)."""
    logits_chunk: int = 1024
    """Supervised positions per LM-head chunk. The loss walks the vocabulary in tiles, so memory is
    chunk x 16384 floats (plus chunk x vocab logits in the compute dtype when the head is trained)."""

    # run management
    save_every: int = 0
    """Write a checkpoint every N optimizer steps (0: only at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 1
    """How many step checkpoints to keep (older ones are deleted)."""
    log_every: int = 1
    """Log every N steps (JSONL, TensorBoard, progress bar)."""
    tensorboard: bool = True
    """Also log to TensorBoard under RUN/tb (needs the tensorboard package)."""
    progress: bool = True
    """Show a progress bar with ETA on the terminal."""
    merge: bool = False
    """LoRA: also write the adapter merged into the base model (RUN/merged)."""
    peak_tflops: float | None = None
    """Peak bf16 matmul TFLOP/s used for MFU; None: measured on this machine at start-up."""
    trust_remote_code: bool = False
    """Allow model code from the hub (off unless asked for)."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        positive = {"max_length": self.max_length, "epochs": self.epochs, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "log_every": self.log_every,
                    "keep_checkpoints": self.keep_checkpoints, "logits_chunk": self.logits_chunk}
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be positive (or null for epochs), got {self.max_steps}")
        if self.lr <= 0 or any(lr <= 0 for lr in self.lr_sweep):
            raise ValueError("learning rates must be positive")
        if len(set(self.lr_sweep)) != len(self.lr_sweep):
            raise ValueError(f"lr_sweep lists a value twice: {self.lr_sweep}")
        if self.warmup_steps < 0 or self.save_every < 0:
            raise ValueError("warmup_steps and save_every must be >= 0")
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be within [0, 1), got {self.adam_betas}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or null, got {self.max_grad_norm}")
        if self.pack_length is not None and self.pack_length < self.max_length:
            raise ValueError(f"pack_length ({self.pack_length}) must be at least max_length ({self.max_length})")
        if self.max_length < 2:
            raise ValueError("max_length must be at least 2 (one input and one predicted token)")

    @property
    def row_capacity(self) -> int:
        """Tokens per packed row (see pack_length)."""
        return self.pack_length if self.pack_length is not None else max(self.max_length, 512)

    def require_data(self) -> None:
        if not self.data:
            raise ValueError("no training data: set data=SOURCE (a mixture .jsonl, bundled:train, hf:NAME)")

    def numbers_fingerprint(self) -> str:
        """Hash of every field that changes the numbers of a run: a resume must match it."""
        return numbers_fingerprint(self.numbers_dict())

    def numbers_dict(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if k not in RESUME_FREE_FIELDS}


def sweep_dir_name(lr: float) -> str:
    """Run sub-folder of one learning rate of a sweep, e.g. lr-1e-04."""
    return f"lr-{lr:.0e}" if float(f"{lr:.0e}") == lr else f"lr-{lr:g}"

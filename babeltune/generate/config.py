"""Typed configuration of `babeltune generate` and `babeltune serve` (YAML + key=value overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from babeltune.generate.endpoint import EndpointConfig
from babeltune.generate.settings import DecodingSettings
from babeltune.lens.config import SteerConfig

VLLM_FLAGS: dict[str, str] = {f"vllm.{name}": f"vllm_{name}" for name in (
    "dtype", "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization", "max_model_len", "max_lora_rank",
    "max_loras", "max_num_seqs", "enforce_eager", "seed", "template")}
"""Config key -> flag name of the vLLM engine options (`--vllm-dtype`, ...), the same in every command
that runs a vLLM engine (`babeltune generate`, `babeltune data translate`)."""

ENDPOINT_FLAGS: dict[str, str] = {
    "endpoint.url": "endpoint", "endpoint.model": "endpoint_model", "endpoint.api_key_env": "api_key_env",
    "endpoint.concurrency": "concurrency", "endpoint.timeout": "timeout", "endpoint.max_retries": "max_retries",
}
"""Config key -> flag of the endpoint options of every command with an `endpoint: EndpointConfig` section."""


@dataclass(frozen=True)
class LocalConfig:
    """How the local backend loads and batches the model."""

    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights and activations precision. bfloat16 is about twice as fast on CPUs with AVX512-BF16 and
    changes some greedy outputs (see benchmarks/README.md)."""
    device: str = "cpu"
    template: Literal["auto", "gemma", "tokenizer"] = "auto"
    """Chat template (the same one training used: see `babeltune model render`)."""
    batch_size: int = 32
    """Prompts decoded together (sorted by length first). On a CPU larger batches use the arithmetic
    units better (benchmarks/README.md); memory grows with batch x (prompt + max_new_tokens)."""
    bf16_head: Literal["auto", "on", "off"] = "auto"
    """Greedy decoding of a float32 model scores the vocabulary with a bfloat16 LM head and rescores the
    best candidates in float32, falling back to the full float32 head unless the float32 winner is
    certain: same tokens, faster. 'auto': on for CPUs with native bfloat16 (AVX512-BF16/AMX)."""
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class VLLMConfig:
    """How the vLLM backend starts its in-process engine (`vllm.LLM`). One engine serves a base model
    and every PEFT adapter of it (as `LoRARequest`s); a full fine-tune gets an engine of its own."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Engine precision. float32 greedy decoding reproduces the local backend token for token."""
    tensor_parallel_size: int = 1
    """GPUs one engine shards the model over."""
    data_parallel_size: int = 1
    """Engine replicas (vLLM's data parallelism)."""
    gpu_memory_utilization: float = 0.9
    """Share of the accelerator's memory the engine reserves; on the CPU backend the share of RAM
    for the KV cache (0.1-0.2 on a 24 GiB machine)."""
    max_model_len: int | None = None
    """Longest prompt + response in tokens (None: the model's own limit)."""
    max_lora_rank: int = 64
    """Largest LoRA rank the engine accepts (adapters are served with `enable_lora`)."""
    max_loras: int = 4
    """Adapters resident in one batch at once."""
    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower decoding)."""
    seed: int = 0
    """Engine seed (per-prompt sampling seeds come from the decoding settings)."""
    trust_remote_code: bool = False
    max_num_seqs: int | None = None
    """Most sequences the engine decodes at once (None: vLLM's default)."""
    template: Literal["auto", "gemma", "tokenizer"] = "auto"
    """Chat template babeltune renders prompts with (the one training used); not an engine setting."""

    def __post_init__(self) -> None:
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.tensor_parallel_size < 1 or self.data_parallel_size < 1:
            raise ValueError("tensor_parallel_size and data_parallel_size must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.max_lora_rank < 1 or self.max_loras < 1:
            raise ValueError("max_lora_rank and max_loras must be >= 1")


@dataclass(frozen=True)
class GenerateConfig:
    """One `babeltune generate` run."""

    out: str = ""
    """Output JSONL (also the cache: rerunning resumes). FILE.summary.json is written beside it."""
    model: str = "gemma-3-270m"
    """Local and vllm backends: the default alias, a model or PEFT adapter folder, or a hub id."""
    data: str = "bundled:eval"
    """Prompts: bundled:eval|modifiers|train, a .jsonl file or folder, or hf:NAME_OR_PATH."""
    backend: Literal["local", "vllm", "endpoint"] = "local"
    decoding: DecodingSettings = field(default_factory=DecodingSettings)
    local: LocalConfig = field(default_factory=LocalConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    languages: list[str] = field(default_factory=list)
    """Only prompts in these languages (empty = all)."""
    per_language: int | None = None
    """At most this many prompts per language, the first in file order (None, the default: all)."""
    source_lang: str | None = None
    """Language of data rows that carry none (prompt files without a `lang` column)."""
    overwrite: bool = False
    """Start the output file afresh instead of resuming."""
    retry_failed: bool = True
    """On resume, generate again the rows that failed before."""
    steer: SteerConfig | None = None
    """Steering (babeltune lens): edit the model's states while it generates; local backend only."""

    def __post_init__(self) -> None:
        if self.per_language is not None and self.per_language < 1:
            raise ValueError(f"per_language must be at least 1 (omit it for all prompts), got {self.per_language}")
        if not self.out:
            raise ValueError("out is required: the generation file to write (--out FILE.jsonl)")


@dataclass(frozen=True)
class ServeConfig:
    """One `babeltune serve` process."""

    model: str = "gemma-3-270m"
    host: str = "127.0.0.1"
    """Interface to bind. Anything but loopback exposes the model to the network."""
    port: int = 8000
    served_name: str = ""
    """Model id reported by /v1/models and accepted in requests (default: the --model string)."""
    api_key_env: str = ""
    """Environment variable holding a bearer token that clients must send (empty = no token)."""
    default_max_tokens: int = 512
    """max_tokens of requests that give none."""
    read_timeout: float = 30.0
    """Seconds a client connection may take to send a request's headers and body (then 408)."""
    enable_lora: bool = False
    """Serve vLLM's dynamic LoRA routes (`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`):
    whoever can reach the server may then load adapter folders from this machine's disk onto the
    base model. Off by default, as vLLM keeps them off unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is set."""
    local: LocalConfig = field(default_factory=LocalConfig)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if not self.read_timeout > 0:
            raise ValueError(f"read_timeout must be > 0 seconds, got {self.read_timeout}")

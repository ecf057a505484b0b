"""Generation: backends (a local model, an in-process vLLM engine, any OpenAI-compatible endpoint), the
batched decoding engine, the resumable runner whose output file is also its cache, and `babeltune serve`."""

from babeltune.generate.backends import FinishReason, GenerationBackend, GenerationRequest, GenerationResult
from babeltune.generate.config import GenerateConfig, LocalConfig, ServeConfig, VLLMConfig
from babeltune.generate.decoding import GeneratedIds, generate_token_ids
from babeltune.generate.endpoint import (
    EndpointBackend,
    EndpointConfig,
    EndpointError,
    adapter_endpoint,
    adapter_name,
    load_lora_adapter,
    unload_lora_adapter,
)
from babeltune.generate.local import LocalBackend
from babeltune.generate.rows import GenerationFileError, GenerationRow
from babeltune.generate.runner import (
    GenerationSummary,
    generation_key,
    read_generation_lines,
    read_generations,
    run_generation,
)
from babeltune.generate.settings import DecodingSettings, item_seed
from babeltune.generate.vllm import VLLMBackend, release_engines

__all__ = [
    "DecodingSettings",
    "EndpointBackend",
    "EndpointConfig",
    "EndpointError",
    "FinishReason",
    "GenerateConfig",
    "GeneratedIds",
    "GenerationBackend",
    "GenerationFileError",
    "GenerationRequest",
    "GenerationResult",
    "GenerationRow",
    "GenerationSummary",
    "LocalBackend",
    "LocalConfig",
    "ServeConfig",
    "VLLMBackend",
    "VLLMConfig",
    "adapter_endpoint",
    "adapter_name",
    "generate_token_ids",
    "generation_key",
    "item_seed",
    "load_lora_adapter",
    "read_generation_lines",
    "read_generations",
    "release_engines",
    "run_generation",
    "unload_lora_adapter",
]
